"""Face detection (RetinaFace) and 5-point alignment.

Submodules are imported on demand so that ``import mmaffect.faces`` stays cheap:
``mmaffect.faces.retinaface`` (detector) and ``mmaffect.faces.align`` (alignment).
"""
