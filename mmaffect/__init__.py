"""mmaffect: multimodal affect analysis of videos (ABAW expression, valence-arousal, AUs).

Importing the package is cheap: models, transformers, the ASR engine and MediaPipe are imported
only by the functions that use them.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "extract"]


def __getattr__(name: str):
    # The Python API, imported on first use so that `import mmaffect` stays cheap.
    if name == "extract":
        from mmaffect.extraction import extract

        return extract
    raise AttributeError(f"module 'mmaffect' has no attribute {name!r}")
