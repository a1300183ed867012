"""Face detection on key frames, with the frames between them filled in.

Face detection is a large share of the per-frame cost. Faces in video move little from one
frame to the next, so with ``detect_every = N`` the detector runs on every N-th frame (and on
the last frame of each chunk, so that a chunk never waits for the next one; the video's first
frame too). Between two key frames ``a`` and ``b`` the faces are interpolated linearly (box,
five landmarks; score the lower of the two) when the two key frames agree:

* the same number of faces, each face of ``a`` overlapping its own face of ``b`` by an IoU of
  at least :data:`MIN_IOU`, so nobody entered, left or jumped (a scene cut);
* every face at least :data:`MIN_SCORE` sure in both, so an uncertain face is not carried
  over.

Where they disagree, every frame in between is detected. The subject tracker then runs over
every frame as before, on real or interpolated detections alike.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mmaffect.faces.retinaface import Detections
from mmaffect.faces.tracking import iou_matrix

MIN_IOU = 0.5  # key frames whose faces overlap less than this are re-detected in between
MIN_SCORE = 0.8  # a face less sure than this at either key frame: re-detect in between


def key_rows(indices: np.ndarray, every: int, previous: bool) -> np.ndarray:
    """Positions in a chunk (of frame ``indices``) that are key frames: the frames that close
    a run of ``every`` (``(index + 1) % every == 0``), the chunk's last frame, and its first
    when there is no ``previous`` key frame to start from (the video's first chunk)."""
    n = len(indices)
    if not n:
        return np.zeros(0, int)
    keys = np.flatnonzero((np.asarray(indices) + 1) % every == 0)
    edges = [n - 1] if previous else [0, n - 1]
    return np.unique(np.concatenate([keys, edges])).astype(int)


def _match(a: Detections, b: Detections) -> np.ndarray | None:
    """For each face of ``a`` its face in ``b``, or None where the two do not agree."""
    if len(a) != len(b):
        return None
    if len(a) == 0:
        return np.zeros(0, int)
    if min(a.scores.min(), b.scores.min()) < MIN_SCORE:
        return None
    ious = iou_matrix(a.boxes, b.boxes)
    match = ious.argmax(axis=1)
    if len(set(match.tolist())) != len(a) or ious[np.arange(len(a)), match].min() < MIN_IOU:
        return None
    return match


def _between(a: Detections, b: Detections, match: np.ndarray, t: float) -> Detections:
    """The faces a fraction ``t`` of the way from key frame ``a`` to key frame ``b``."""
    nb = Detections(b.boxes[match], b.scores[match], b.landmarks[match])
    return Detections(
        boxes=((1 - t) * a.boxes + t * nb.boxes).astype(np.float32),
        scores=np.minimum(a.scores, nb.scores).astype(np.float32),
        landmarks=((1 - t) * a.landmarks + t * nb.landmarks).astype(np.float32),
    )


class KeyframeDetector:
    """Detections for every frame of a video's chunks, in order, running ``detect`` on the
    key frames and on the frames between key frames that disagree. The last frame of each
    chunk is a key frame, and starts the next chunk's first gap.

    ``detected`` counts the frames the detector saw (the rest were interpolated).
    """

    def __init__(self, detect: Callable[[np.ndarray], list[Detections]], every: int):
        self.detect, self.every = detect, max(int(every), 1)
        self.previous: Detections | None = None  # the last frame of the previous chunk
        self.detected = 0

    def __call__(self, images: np.ndarray, indices: np.ndarray) -> list[Detections]:
        if self.every == 1:
            self.detected += len(images)
            return self.detect(images)
        keys = key_rows(indices, self.every, self.previous is not None)
        found: dict[int, Detections] = dict(zip(keys.tolist(), self.detect(images[keys]),
                                                strict=True))  # fmt: skip
        if self.previous is not None:
            found[-1] = self.previous
        anchors = [-1, *keys] if self.previous is not None else list(keys)
        redo, fill = [], []
        for a, b in zip(anchors[:-1], anchors[1:], strict=True):
            match = _match(found[a], found[b])
            if match is None:
                redo.extend(range(a + 1, b))
            else:
                fill.append((a, b, match))
        if redo:
            found.update(zip(redo, self.detect(images[redo]), strict=True))
        for a, b, match in fill:
            for row in range(a + 1, b):
                found[row] = _between(found[a], found[b], match, (row - a) / (b - a))
        self.detected += len(keys) + len(redo)
        self.previous = found[len(images) - 1] if len(images) else self.previous
        return [found[row] for row in range(len(images))]
