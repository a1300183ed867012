"""The frame grid every per-frame feature is aligned to."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FrameTiming:
    """Frame ``i`` of a video sits at ``start + i / fps`` seconds; there are ``n_frames`` frames.

    Every cached feature array has exactly ``n_frames`` rows, row ``i`` belonging to frame ``i``.
    """

    fps: float
    n_frames: int
    start: float = 0.0

    def times(self) -> np.ndarray:
        """(n_frames,) float64 seconds of each frame."""
        return self.start + np.arange(self.n_frames, dtype=np.float64) / self.fps

    def frame_edges(self) -> np.ndarray:
        """(n_frames + 1,) seconds: frame ``i`` covers ``[edges[i], edges[i + 1])``, centred on
        its time (half a frame either side)."""
        return self.start + (np.arange(self.n_frames + 1, dtype=np.float64) - 0.5) / self.fps

    def to_dict(self) -> dict:
        return {"fps": self.fps, "n_frames": self.n_frames, "start": self.start}
