"""Time spent per pipeline stage, shared by the vision and audio threads."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict
from collections.abc import Iterator


class StageClock:
    """Accumulates wall time and item counts per stage name (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seconds: dict[str, float] = defaultdict(float)
        self.items: dict[str, int] = defaultdict(int)

    @contextlib.contextmanager
    def __call__(self, stage: str, items: int = 0) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            with self._lock:
                self.seconds[stage] += elapsed
                self.items[stage] += items

    def count(self, stage: str, items: int) -> None:
        """Add ``items`` to ``stage`` (when they are known only after its time was taken)."""
        with self._lock:
            self.items[stage] += items

    def as_dict(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {
                s: {"seconds": round(self.seconds[s], 3), "items": self.items[s]}
                for s in self.seconds
            }
