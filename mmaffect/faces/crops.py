"""How a face is cut from a video frame for a face model (:class:`FaceCrop`).

Each face model is used on the crop it was trained with, recorded in its checkpoint:

* ``box``: the detector's box made square around its centre, its side ``scale`` times the box's
  longer side, resized to the model's input (parts outside the frame are black). With scale 1
  this is a tight face crop, the framing of FER2013, AffectNet and RAF-DB images.
* ``template``: the 5-point similarity alignment to the ArcFace template
  (:func:`mmaffect.faces.align.align_faces`), zoomed by ``scale`` about the crop centre; scale 1
  is the face-recognition crop (whole head and some background), the framing of the Aff-Wild2
  organisers' ``cropped_aligned`` images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mmaffect.errors import InputError

__all__ = ["CROP_KINDS", "FaceCrop", "box_crops"]

CROP_KINDS = ("box", "template")


def box_crops(
    images: np.ndarray,
    boxes: np.ndarray,
    frame_index: np.ndarray,
    size: int,
    scale: float,
    antialias: bool = False,
    natives: dict[int, np.ndarray] | None = None,
) -> np.ndarray:
    """Square crops of side ``scale`` × the longer box side around each box's centre, resized
    to ``size`` (zero-padded at the frame border): ``(k, size, size, 3)`` uint8. ``antialias``
    averages pixels when shrinking (else bilinear sampling). ``natives`` keeps the
    full-resolution crops of an antialiased cut by face, so that a second cut of the same
    faces and scale at another size reuses them (the same pixels, one warp fewer)."""
    import cv2

    out = np.zeros((len(boxes), size, size, 3), np.uint8)
    for k, (box, fi) in enumerate(zip(boxes, frame_index, strict=True)):
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        side = scale * max(box[2] - box[0], box[3] - box[1])
        zoom = size / max(side, 1.0)
        # crop pixel = zoom * (frame pixel - top-left corner)
        if antialias and zoom < 1:  # cut at full resolution, then average down (warpAffine
            # has no area interpolation); round(side) >= size here, whatever the size
            whole = natives.get(k) if natives is not None else None
            if whole is None:
                native = int(round(side))
                m = np.array([[1, 0, native / 2 - cx], [0, 1, native / 2 - cy]], np.float64)
                whole = cv2.warpAffine(images[fi], m, (native, native), flags=cv2.INTER_LINEAR)
                if natives is not None:
                    natives[k] = whole
            out[k] = cv2.resize(whole, (size, size), interpolation=cv2.INTER_AREA)
            continue
        m = np.array([[zoom, 0, size / 2 - zoom * cx], [0, zoom, size / 2 - zoom * cy]])
        out[k] = cv2.warpAffine(
            images[fi], m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
        )
    return out


@dataclass(frozen=True)
class FaceCrop:
    """A crop rule (see the module docstring)."""

    kind: str = "box"
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in CROP_KINDS:
            raise InputError(f"unknown crop kind {self.kind!r}", hint=" or ".join(CROP_KINDS))
        if not 0.5 <= float(self.scale) <= 3.0:
            raise InputError(f"crop scale {self.scale} is outside 0.5-3", hint="e.g. 1.0 or 1.3")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> FaceCrop:
        data = dict(data or {})
        unknown = sorted(set(data) - {"kind", "scale"})
        if unknown:
            raise InputError(f"unknown crop setting(s) {', '.join(unknown)}", hint="kind, scale")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def cut(
        self,
        images: np.ndarray,
        boxes: np.ndarray,
        landmarks: np.ndarray,
        frame_index: np.ndarray,
        size: int,
        natives: dict[float, dict[int, np.ndarray]] | None = None,
    ) -> np.ndarray:
        """The crops of faces (frame pixels ``boxes`` (k, 4), ``landmarks`` (k, 5, 2)) in
        ``images[frame_index]``: ``(k, size, size, 3)`` uint8. ``natives`` (by scale, see
        :func:`box_crops`) lets several networks' box crops of the same faces share work."""
        if self.kind == "box":
            memo = natives.setdefault(float(self.scale), {}) if natives is not None else None
            return box_crops(images, np.asarray(boxes), frame_index, size, self.scale, True, memo)
        from mmaffect.faces.align import align_faces

        return align_faces(
            images, np.asarray(landmarks), size, frame_index=frame_index, zoom=self.scale
        )
