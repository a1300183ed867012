"""Work that must not hang a batch: each video's stages run in a watched thread.

A unit of work (probing a video, its vision side, its audio side) runs in a thread of
:class:`WatchedThreads` with a :class:`Heartbeat`. Code anywhere below it reports progress with
:func:`beat` (every chunk of frames, every ffmpeg progress line, every ASR segment) and
registers what must be undone if the unit is given up with :func:`on_abandon` (kill its ffmpeg,
forget a MediaPipe task stuck in native code); both are no-ops outside watched work. The thread
that waits for the unit (:meth:`WatchedThreads.result`) gives it up when no beat came for
``stall_seconds``: it raises :class:`~mmaffect.errors.StageStalled`, which fails that video
with a message, and runs the abandon hooks. The stuck thread is a daemon that nobody joins, so
it can neither block the rest of the batch nor the interpreter's exit.

Ctrl-C reaches the waiting (main) thread at once; the worker is asked to stop at its next beat
(:class:`WorkCancelled`) and given a few seconds to remove its temporary files.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextvars import ContextVar
from typing import Any

from mmaffect.errors import StageStalled

__all__ = [
    "DEFAULT_STALL_SECONDS",
    "Heartbeat",
    "WatchedThreads",
    "WorkCancelled",
    "beat",
    "on_abandon",
]

#: Seconds without progress after which a video is given up. The slowest single step between
#: two beats is loading the models or one ASR segment: seconds, not minutes.
DEFAULT_STALL_SECONDS = 300.0
# How long a cancelled worker gets to clean up (temporary cache folders) after Ctrl-C.
_CLEANUP_SECONDS = 10.0


class WorkCancelled(BaseException):
    """Raised inside a worker at its next beat once its waiter gave it up (Ctrl-C or stall).

    A ``BaseException``, like ``KeyboardInterrupt``, so that ``except Exception`` clauses in the
    stages let it through.
    """


class Heartbeat:
    """Progress of one unit of work (one video's vision or audio side)."""

    def __init__(self, stage: str = "start") -> None:
        self.stage = stage
        self._last = time.monotonic()
        self._cancelled = threading.Event()
        self._hooks: list[Callable[[], None]] = []

    def beat(self, stage: str | None = None) -> None:
        """Record progress (and the stage now running); raise :class:`WorkCancelled` when the
        waiter has given this work up."""
        if self._cancelled.is_set():
            raise WorkCancelled(self.stage)
        self._last = time.monotonic()
        if stage is not None:
            self.stage = stage

    def idle(self) -> float:
        """Seconds since the last beat."""
        return time.monotonic() - self._last

    def on_abandon(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` if this work is given up (it must not wait on the stuck work)."""
        self._hooks.append(hook)

    def cancel(self) -> None:
        """Ask the worker to stop at its next beat."""
        self._cancelled.set()

    def abandon(self) -> None:
        """Cancel and run the abandon hooks (e.g. kill the ffmpeg the work reads from)."""
        self.cancel()
        for hook in self._hooks:
            with contextlib.suppress(Exception):
                hook()

    @contextlib.contextmanager
    def active(self) -> Iterator[Heartbeat]:
        """Make this the heartbeat that :func:`beat` and :func:`on_abandon` reach in this
        thread (``WatchedThreads`` does it for its units)."""
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)


# The heartbeat of the watched unit running in this thread (threads start without one).
_ACTIVE: ContextVar[Heartbeat | None] = ContextVar("mmaffect_heartbeat", default=None)


def beat(stage: str | None = None) -> None:
    """Report progress of the watched unit running in this thread (nothing outside one).

    Raises :class:`WorkCancelled` once the unit has been given up.
    """
    heartbeat = _ACTIVE.get()
    if heartbeat is not None:
        heartbeat.beat(stage)


def on_abandon(hook: Callable[[], None]) -> None:
    """Run ``hook`` if the watched unit running in this thread is given up (nothing outside
    one). The hook runs in the waiting thread and must not wait on the stuck work."""
    heartbeat = _ACTIVE.get()
    if heartbeat is not None:
        heartbeat.on_abandon(hook)


class WatchedThreads:
    """Runs units of work in daemon threads, at most ``limit`` at a time, and waits for them
    with a stall limit. A stuck unit gives its slot back when it is abandoned."""

    def __init__(
        self, limit: int = 1, *, stall_seconds: float = DEFAULT_STALL_SECONDS, name="work"
    ):
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.stall_seconds = float(stall_seconds)
        self.name = name
        self._slots = threading.Semaphore(limit)
        self._jobs: dict[Future, tuple[Heartbeat, threading.Thread, _Slot]] = {}
        self._abandoned: list[threading.Thread] = []

    def submit(self, fn: Callable[..., Any], *args: Any, heartbeat: Heartbeat) -> Future:
        """Start ``fn(*args)`` in a new daemon thread once a slot is free (the wait for the slot
        happens in that thread: ``submit`` never blocks)."""
        future: Future = Future()
        slot = _Slot(self._slots)

        def run() -> None:
            try:
                slot.take(heartbeat)
                heartbeat.beat()  # idle time counts from the start, not from the submit
                with heartbeat.active():
                    future.set_result(fn(*args))
            except BaseException as e:  # noqa: BLE001 - handed to the waiter
                future.set_exception(e)
            finally:
                slot.give_back()

        thread = threading.Thread(target=run, daemon=True, name=self.name)
        self._jobs[future] = (heartbeat, thread, slot)
        thread.start()
        return future

    def poll(self, future: Future) -> bool:
        """Whether the unit has ended; raises :class:`StageStalled` (after abandoning it) when
        it has not beaten for ``stall_seconds``."""
        if future.done():
            self._jobs.pop(future, None)
            return True
        heartbeat, thread, slot = self._jobs[future]
        if self.stall_seconds and heartbeat.idle() > self.stall_seconds:
            heartbeat.abandon()
            slot.give_back()
            self._abandoned.append(thread)
            raise StageStalled(
                f"no progress for {self.stall_seconds:g} s in stage '{heartbeat.stage}'; "
                "this input was given up",
                hint="re-run to retry it; --stall-timeout sets the limit",
            )
        return False

    def result(self, future: Future) -> Any:
        """The unit's result (or its exception); :class:`StageStalled` when it stops beating.

        On ``KeyboardInterrupt`` the unit is cancelled and given a few seconds to clean up.
        """
        heartbeat, thread, _ = self._jobs.get(future, (None, None, None))
        try:
            while not self.poll(future):
                with contextlib.suppress(FutureTimeout):
                    future.result(timeout=0.5)
        except KeyboardInterrupt:
            if heartbeat is not None:
                heartbeat.cancel()
                thread.join(_CLEANUP_SECONDS)
            raise
        return future.result()

    def settle(self, timeout: float = _CLEANUP_SECONDS) -> bool:
        """Wait up to ``timeout`` seconds in all for the units given up to unwind (their hooks
        killed what they waited on; unwinding discards their temporary cache folders). Called
        once the batch is done, so a stall never holds up the next video. Whether they all
        ended (a call that never returns is left behind)."""
        deadline = time.monotonic() + timeout
        for thread in self._abandoned:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._abandoned = [t for t in self._abandoned if t.is_alive()]
        return not self._abandoned

    def cancel_all(self) -> None:
        """Ask every unit still running to stop (Ctrl-C): they stop at their next beat."""
        for heartbeat, _, _ in self._jobs.values():
            heartbeat.cancel()


class _Slot:
    """One unit's claim on a :class:`WatchedThreads` slot, given back exactly once (by the unit
    when it ends, or by the waiter when it abandons the unit)."""

    def __init__(self, slots: threading.Semaphore) -> None:
        self._slots = slots
        self._lock = threading.Lock()
        self._held = False

    def take(self, heartbeat: Heartbeat) -> None:
        while not self._slots.acquire(timeout=0.5):
            heartbeat.beat()  # waiting for a slot is not a stall (raises once cancelled)
        with self._lock:
            self._held = True

    def give_back(self) -> None:
        with self._lock:
            if self._held:
                self._held = False
                self._slots.release()
