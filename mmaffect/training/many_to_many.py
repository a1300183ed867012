"""Windows whose every frame carries its targets: many-to-many training (seed 004's GRU).

:class:`FrameTargetWindows` is a :class:`~mmaffect.training.dataset.WindowDataset` (same
samples, same features and middle-frame targets) whose items also hold the targets of every
frame of the window, so a model can be trained on all of them at once (``many_to_many: true``
in a training config) and still be validated, and used, on the middle frame.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mmaffect.training.dataset import AU_ABSENT, EXPR_ABSENT, VA_ABSENT, WindowDataset

__all__ = ["FrameTargetWindows"]


class FrameTargetWindows(WindowDataset):
    """A :class:`WindowDataset` with per-frame targets of the whole window.

    Items also hold ``expr_seq`` ``(T,)`` int64, ``au_seq`` ``(T, n_au)`` and ``va_seq``
    ``(T, 2)`` float32: the labels of frames ``f - T//2 … f - T//2 + T - 1``, with the
    sentinels (-1, -1, -5) where a frame has no label or lies outside the video (the losses
    leave those entries out). Every labelled frame of a video counts as a target, also those
    that ``stride`` leaves out as window centres. Arguments are those of
    :class:`WindowDataset`.
    """

    def __init__(self, *args: Any, stride: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, stride=1, **kwargs)
        self._targets = [self._dense(vi) for vi in range(len(self.videos))]
        if stride > 1:  # every stride-th sample of each video as a window centre
            per_video = [np.flatnonzero(self._video_index == v) for v in range(len(self.videos))]
            keep = np.sort(np.concatenate([r[::stride] for r in per_video] or [np.zeros(0, int)]))
            self._video_index, self.frames = self._video_index[keep], self.frames[keep]
            self.expr, self.au, self.va = self.expr[keep], self.au[keep], self.va[keep]
        self.stride = int(stride)

    def _dense(self, vi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Targets of every frame of video ``vi`` (sentinels where it has none)."""
        n = self.videos[vi].n_frames
        rows = self._video_index == vi
        frames = self.frames[rows]
        expr = np.full(n, EXPR_ABSENT, np.int64)
        au = np.full((n, self.n_au), AU_ABSENT, np.float32)
        va = np.full((n, 2), VA_ABSENT, np.float32)
        expr[frames], au[frames], va[frames] = self.expr[rows], self.au[rows], self.va[rows]
        return expr, au, va

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = super().__getitem__(i)
        vi, f = int(self._video_index[i]), int(self.frames[i])
        idx, real = self.window_indices(f, self.videos[vi].n_frames)
        expr, au, va = self._targets[vi]
        item["expr_seq"] = torch.from_numpy(np.where(real, expr[idx], EXPR_ABSENT))
        item["au_seq"] = torch.from_numpy(np.where(real[:, None], au[idx], AU_ABSENT))
        item["va_seq"] = torch.from_numpy(np.where(real[:, None], va[idx], VA_ABSENT))
        return item
