"""Following one subject's face across frames.

Per-frame "largest face" flips between people whenever someone else comes closer to the camera.
The tracker instead follows one face: in each frame it keeps the detection that overlaps the
tracked box best (IoU), or failing that is close to it with a similar size. When the subject is
lost for more than ``max_gap`` frames, it is acquired again with the selection rule:

* ``main``: the detection with the largest area × score;
* ``left`` / ``right``: among the detections at least ``min_relative_area`` of the largest one's
  area, the one whose centre is furthest to the image left / right (two-person ABAW videos).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from mmaffect.faces.retinaface import Detections

Subject = Literal["main", "left", "right"]


@dataclass(frozen=True)
class TrackerConfig:
    subject: Subject = "main"
    iou_threshold: float = 0.3  # a detection overlapping the last box this much is the subject
    max_centre_shift: float = 0.5  # else: centre within this × box width, and size ratio < 2
    max_gap: int = 15  # frames the subject may be missing before it is acquired anew
    min_relative_area: float = 0.3  # left/right: ignore faces smaller than this × the largest


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``(x1, y1, x2, y2)`` boxes: (A, 4) x (B, 4) -> (A, B)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=-1)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    return iou_matrix(np.asarray(box)[None], np.asarray(boxes))[0]


class SubjectTracker:
    """Online single-subject tracker over per-frame :class:`Detections`."""

    def __init__(self, config: TrackerConfig = TrackerConfig()):
        self.config = config
        self.box: np.ndarray | None = None
        self.missing = 0

    def _acquire(self, dets: Detections) -> int:
        boxes = dets.boxes
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        if self.config.subject == "main":
            return int(np.argmax(areas * dets.scores))
        keep = np.flatnonzero(areas >= self.config.min_relative_area * areas.max())
        centres = (boxes[keep, 0] + boxes[keep, 2]) / 2
        pick = np.argmin(centres) if self.config.subject == "left" else np.argmax(centres)
        return int(keep[pick])

    def _follow(self, dets: Detections) -> int | None:
        assert self.box is not None
        ious = _iou(self.box, dets.boxes)
        best = int(np.argmax(ious))
        if ious[best] >= self.config.iou_threshold:
            return best
        width = self.box[2] - self.box[0]
        centre = (self.box[:2] + self.box[2:]) / 2
        centres = (dets.boxes[:, :2] + dets.boxes[:, 2:]) / 2
        dist = np.linalg.norm(centres - centre, axis=1) / max(width, 1e-6)
        widths = dets.boxes[:, 2] - dets.boxes[:, 0]
        ratio = np.maximum(widths / width, width / np.maximum(widths, 1e-6))
        ok = np.flatnonzero((dist <= self.config.max_centre_shift) & (ratio < 2))
        return int(ok[np.argmin(dist[ok])]) if len(ok) else None

    def update(self, dets: Detections) -> int | None:
        """Index of the subject's detection in this frame, or ``None`` (not visible)."""
        if len(dets) == 0:
            self.missing += 1
            return None
        if self.box is None or self.missing > self.config.max_gap:
            chosen = self._acquire(dets)
        else:
            chosen = self._follow(dets)
        if chosen is None:
            self.missing += 1
            return None
        self.box = dets.boxes[chosen].astype(np.float64)
        self.missing = 0
        return chosen
