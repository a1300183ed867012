"""Per-frame predictions of one video: what every writer, plot and check reads.

:class:`VideoPrediction` holds one row per frame of the video (frame ``i`` is the organisers'
``NNNNN = i + 1``), whichever predictor produced it (a trained checkpoint or the
``baseline``), with the face evidence beside it. Writers turn it into challenge files
(:mod:`mmaffect.submission`), plots into pictures (:mod:`mmaffect.plots`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mmaffect.annotations import AU_12, EXPR_8
from mmaffect.errors import InputError

__all__ = ["AU_THRESHOLD", "VideoPrediction", "load_prediction", "save_prediction"]

#: Probability at or above which an AU counts as active in 0/1 outputs.
AU_THRESHOLD = 0.5

_ARRAYS = (
    "times",
    "expr_probs",
    "va",
    "au_probs",
    "face_found",
    "face_score",
    "face_box",
    "head_pose",
    "filled",
)


@dataclass(eq=False)
class VideoPrediction:
    """Predictions for every frame of one video (one subject: ``_left``/``_right`` kept).

    Attributes
    ----------
    video_id
        The id the challenge files use (file stem, ``_left``/``_right`` kept).
    fps
        Frame rate of the frame grid.
    times
        ``(n,)`` float64 seconds of each frame.
    expr_probs
        ``(n, C)`` float32 class probabilities (rows sum to 1) or None; ``expr_names`` the
        classes in ABAW order (:data:`~mmaffect.annotations.EXPR_8` names, or the 7 of ABAW1/2).
    va
        ``(n, 2)`` float32 valence, arousal in [-1, 1], or None.
    au_probs
        ``(n, K)`` float32 activation probabilities or None; ``au_names`` like ``"AU1"``.
    face_found, face_score, face_box
        ``(n,)`` bool; ``(n,)`` float32 detector score (0 without a face); ``(n, 4)`` float32
        ``x1, y1, x2, y2`` in pixels of the original frame, NaN without a face.
    head_pose
        ``(n, 3)`` float32 yaw, pitch, roll in degrees (NaN without a face) or None.
    words
        ``n`` strings: the word being spoken at each frame, ``""`` when none.
    filled
        ``(n,)`` bool: True where the predictions were not computed from a face but filled by
        the fill rule (interpolated or held) or added by the frame-count rule.
    predictor
        ``"baseline"`` or the checkpoint's path.
    meta
        Anything else worth keeping (edition, frame-count rule, fill rule, smoothing,
        feature config hashes); JSON-serialisable.
    """

    video_id: str
    fps: float
    times: np.ndarray
    expr_probs: np.ndarray | None = None
    expr_names: tuple[str, ...] = tuple(str(n) for n in EXPR_8.names)
    va: np.ndarray | None = None
    au_probs: np.ndarray | None = None
    au_names: tuple[str, ...] = tuple(str(n) for n in AU_12.names)
    face_found: np.ndarray | None = None
    face_score: np.ndarray | None = None
    face_box: np.ndarray | None = None
    head_pose: np.ndarray | None = None
    words: list[str] = field(default_factory=list)
    filled: np.ndarray | None = None
    predictor: str = "baseline"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = int(np.asarray(self.times).shape[0])
        self.times = np.asarray(self.times, dtype=np.float64)
        if self.face_found is None:
            self.face_found = np.zeros(n, dtype=bool)
        if self.face_score is None:
            self.face_score = np.zeros(n, dtype=np.float32)
        if self.face_box is None:
            self.face_box = np.full((n, 4), np.nan, dtype=np.float32)
        if self.filled is None:
            self.filled = np.zeros(n, dtype=bool)
        if not self.words:
            self.words = [""] * n
        self.expr_names = tuple(str(x) for x in self.expr_names)
        self.au_names = tuple(str(x) for x in self.au_names)
        for name in _ARRAYS:
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise InputError(f"{self.video_id}: {name} has {len(value)} rows for {n} frames")
        if len(self.words) != n:
            raise InputError(f"{self.video_id}: words has {len(self.words)} rows for {n} frames")
        if self.expr_probs is not None and self.expr_probs.shape[1] != len(self.expr_names):
            raise InputError(f"{self.video_id}: expr_probs columns do not match expr_names")
        if self.au_probs is not None and self.au_probs.shape[1] != len(self.au_names):
            raise InputError(f"{self.video_id}: au_probs columns do not match au_names")

    def __len__(self) -> int:
        return int(self.times.shape[0])

    @property
    def num_frames(self) -> int:
        return len(self)

    @property
    def expr_labels(self) -> np.ndarray | None:
        """``(n,)`` int64 argmax class index, or None."""
        return None if self.expr_probs is None else self.expr_probs.argmax(axis=1).astype(np.int64)

    @property
    def au_labels(self) -> np.ndarray | None:
        """``(n, K)`` int64 0/1 at :data:`AU_THRESHOLD`, or None."""
        if self.au_probs is None:
            return None
        return (self.au_probs >= AU_THRESHOLD).astype(np.int64)

    @property
    def is_baseline(self) -> bool:
        return self.predictor == "baseline"

    def with_length(self, n: int) -> VideoPrediction:
        """The prediction cut or extended to ``n`` frames (extra frames hold the last row).

        Used by the frame-count rule (e.g. the OpenCV count + 1 of ABAW3 participants); the
        added rows are marked ``filled``, have no face and no word.
        """
        have = len(self)
        if n == have:
            return self
        if have == 0:
            raise InputError(f"{self.video_id}: no frame to extend to {n} frames")
        idx = np.minimum(np.arange(n), have - 1)
        extra = np.arange(n) >= have

        def take(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[idx]

        times = self.times[idx].copy()
        if n > have:
            times[have:] = self.times[-1] + np.arange(1, n - have + 1) / self.fps
        face_found = self.face_found[idx] & ~extra
        face_score = np.where(extra, 0.0, self.face_score[idx]).astype(np.float32)
        face_box = np.where(extra[:, None], np.nan, self.face_box[idx]).astype(np.float32)
        head_pose = take(self.head_pose)
        if head_pose is not None:
            head_pose = np.where(extra[:, None], np.nan, head_pose).astype(np.float32)
        words = [self.words[i] if not extra[j] else "" for j, i in enumerate(idx)]
        return replace(
            self,
            times=times,
            expr_probs=take(self.expr_probs),
            va=take(self.va),
            au_probs=take(self.au_probs),
            face_found=face_found,
            face_score=face_score,
            face_box=face_box,
            head_pose=head_pose,
            words=words,
            filled=self.filled[idx] | extra,
            meta=dict(self.meta),
        )


def save_prediction(pred: VideoPrediction, path: str | Path) -> Path:
    """Write ``pred`` to one ``.npz`` file (atomically); :func:`load_prediction` reads it."""
    from mmaffect.atomic import atomic_path

    path = Path(path)
    arrays: dict[str, np.ndarray] = {
        k: getattr(pred, k) for k in _ARRAYS if getattr(pred, k) is not None
    }
    arrays["words"] = np.array(pred.words, dtype=str)
    header = {
        "video_id": pred.video_id,
        "fps": pred.fps,
        "expr_names": list(pred.expr_names),
        "au_names": list(pred.au_names),
        "predictor": pred.predictor,
        "meta": pred.meta,
    }
    arrays["header"] = np.array(json.dumps(header))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return path


def load_prediction(path: str | Path) -> VideoPrediction:
    """Read a file written by :func:`save_prediction`."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(str(z["header"]))
            arrays = {k: z[k] for k in _ARRAYS if k in z.files}
            words = [str(w) for w in z["words"]]
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"{path}: not a mmaffect prediction file ({e})") from e
    return VideoPrediction(
        video_id=header["video_id"],
        fps=float(header["fps"]),
        expr_names=tuple(header["expr_names"]),
        au_names=tuple(header["au_names"]),
        predictor=header["predictor"],
        meta=header.get("meta", {}),
        words=words,
        **arrays,
    )
