"""Training data: windows of cached features around labelled frames (``docs/training_dataset.md``).

Nothing heavy is imported here; import :mod:`mmaffect.training.dataset` (it needs torch).
"""
