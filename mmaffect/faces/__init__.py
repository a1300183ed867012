"""Faces: detection (RetinaFace), 5-point alignment, subject tracking, MediaPipe landmarker.

Submodules are imported on demand so that ``import mmaffect.faces`` stays cheap:
``mmaffect.faces.retinaface`` (detector), ``mmaffect.faces.align`` (alignment),
``mmaffect.faces.tracking`` (one subject across frames) and ``mmaffect.faces.landmarker``
(52 blendshapes and head pose).
"""
