"""Faces: detection (RetinaFace), 5-point alignment, subject tracking, MediaPipe landmarker.

Submodules are imported on demand so that ``import mmaffect.faces`` stays cheap:
``mmaffect.faces.retinaface`` (detector), ``mmaffect.faces.align`` (alignment),
``mmaffect.faces.tracking`` (one subject across frames) and ``mmaffect.faces.landmarker``
(52 blendshapes and head pose).
"""

#: Face detection runs on every this-many-th frame by default (``FaceConfig.detect_every``;
#: the frames between are interpolated, see ``mmaffect.faces.keyframes``). Measured by
#: ``benchmarks/face_levers.py`` (docs/benchmarks.md).
DEFAULT_DETECT_EVERY = 4
