"""One worker of a distributed batch: the local code path, one video at a time.

:class:`VideoWorker` knows nothing of Ray (the Ray backend makes it an actor): it runs
:class:`mmaffect.extraction._ExtractRun` on a single video, reusing the models the previous
video loaded, so a worker loads its models once. Cache entries are written exactly as locally
(temporary folder, then one rename), so a worker killed at any point leaves no entry behind
that a later run would take for a finished one. What the local run would have printed (a
failure, a warning) is captured and sent back with the result for the driver to print.
"""

from __future__ import annotations

import io
import os
import socket
import threading
import time
from concurrent.futures import wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# How long a cancelled worker gets to stop its stages and remove its temporary entries.
CLEANUP_SECONDS = 10.0


@dataclass
class VideoOutcome:
    """What a worker hands back for one video."""

    result: Any  # batch.ItemResult: ok (entries computed), skipped (all cached) or failed
    summary: Any  # extraction.VideoSummary
    stages: dict[str, dict[str, float]] = field(default_factory=dict)  # this video's share
    frames_seen: int = 0  # frames that went through the vision networks
    console: str = ""  # what the local run printed (ANSI), for the driver to print
    worker: str = ""  # host:pid
    interrupted: bool = False


def stage_delta(after: dict, before: dict) -> dict[str, dict[str, float]]:
    """The stage times of ``after`` minus those of ``before`` (:meth:`StageClock.as_dict`)."""
    delta = {}
    for stage, now in after.items():
        then = before.get(stage, {"seconds": 0.0, "items": 0})
        seconds, items = now["seconds"] - then["seconds"], now["items"] - then["items"]
        if seconds > 0 or items:
            delta[stage] = {"seconds": round(seconds, 3), "items": items}
    return delta


class VideoWorker:
    """Extracts one video per :meth:`extract` call into the cache at ``cache_root``.

    ``cwd`` and ``env`` are the driver's working folder and the environment variables that
    choose models and tools (``MMAFFECT_MODELS`` …): relative paths and settings mean on a
    worker what they mean on the driver (on other machines, when they exist there).
    """

    def __init__(self, cache_root: str, options, debug: bool, cwd: str, env: dict[str, str]):
        os.environ.update(env)  # before torch loads (OMP_WAIT_POLICY)
        if os.path.isdir(cwd):
            os.chdir(cwd)
        from mmaffect.features.cache import FeatureCache

        self.store = FeatureCache(cache_root)
        self.options, self.debug = options, debug
        self.previous = None  # the last run: its models, audio side and clock are reused
        self.current = None  # the run in progress
        self.idle = threading.Event()
        self.idle.set()

    def extract(self, source) -> VideoOutcome:
        from rich.console import Console

        from mmaffect.extraction import _ExtractRun, _Progress
        from mmaffect.watchdog import WorkCancelled

        buffer = io.StringIO()
        console = Console(file=buffer, force_terminal=True, color_system="standard", width=10_000)
        run = _ExtractRun(
            self.store, self.options, [source], console, self.debug, None, loaded=self.previous
        )
        before, started = run.clock.as_dict(), time.perf_counter()
        self.idle.clear()
        self.current = run
        try:
            with _Progress(console, False, 1, run.audio_side is not None) as bars:
                run.bars = bars
                run.run()
        except WorkCancelled:  # cancel(): stop, and let the stages remove their temporaries
            run.interrupted = True
            wait([p.audio for p in run.pending if p.audio is not None], CLEANUP_SECONDS)
        finally:
            self.current = None
            self.idle.set()
        self.previous = run
        report = run.report(started)
        return VideoOutcome(
            result=report.batch.results[0] if report.batch.results else None,
            summary=report.videos[source.id],
            stages=stage_delta(run.clock.as_dict(), before),
            frames_seen=self._frames(run)[0],
            console=buffer.getvalue(),
            worker=f"{socket.gethostname()}:{os.getpid()}",
            interrupted=run.interrupted,
        )

    @staticmethod
    def _frames(run) -> tuple[int, int]:
        bars = run.bars
        if bars is None:
            return 0, 0
        task = next(t for t in bars.bar.tasks if t.id == bars.frames)
        return int(task.completed), int(task.total or 0)

    def progress(self) -> tuple[int, int]:
        """(frames through the vision networks, frames) of the video in progress."""
        run = self.current
        return (0, 0) if run is None else self._frames(run)

    def cancel(self) -> bool:
        """Stop the video in progress at its next step; True once the worker is idle (its
        temporary entries removed), False if it did not stop within the cleanup time."""
        run = self.current
        if run is not None:
            for threads in (run.probing, run.vision, run.audio):
                threads.cancel_all()
        return self.idle.wait(CLEANUP_SECONDS)

    def where(self) -> str:
        return f"{socket.gethostname()}:{os.getpid()} in {Path.cwd()}"
