"""``mmaffect extract``: features of every modality for a batch of videos, into the cache.

Concurrency (why the run is faster than the sum of its stages):

* the **audio side** (speech features, ASR, word embeddings) of each video runs in a pool of
  ``workers`` threads beside the **vision side**, which runs in a thread of its own, one video
  at a time, while the calling thread waits for both;
* frames are decoded by ffmpeg in a background thread that runs ahead across videos, so the next
  video is being decoded while the models still work on the current one.

A video fails on its own (one-line reason in the summary); the others go on. A side that makes no
progress for ``stall_seconds`` is given up (:mod:`mmaffect.watchdog`): its video fails with a
message instead of hanging the batch. Entries already in the cache and fresh are reused;
``force`` recomputes them. Interrupting leaves no partial entry.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from mmaffect.batch import BatchReport, ItemResult, print_summary
from mmaffect.errors import InputError, MmaffectError, StageStalled
from mmaffect.features.audio_side import source_timing
from mmaffect.features.cache import FeatureCache
from mmaffect.features.stages import StageClock
from mmaffect.features.vision import (
    ClipConfig,
    FaceConfig,
    FrameConfig,
    Prefetch,
    VisionModels,
    VisionResult,
    run_vision,
    vision_todo,
)
from mmaffect.media import MediaSource, discover, open_source
from mmaffect.media.ffmpeg import ChildProcesses
from mmaffect.watchdog import DEFAULT_STALL_SECONDS, Heartbeat, WatchedThreads

MODALITIES = ("frame", "clip", "speech", "word")
# "faces" alone asks for detection and tracking only (always done for frame and clip).
PRODUCTS = ("faces", *MODALITIES)
VISION = {"faces", "frame", "clip"}
AUDIO = {"speech", "word"}


def parse_modalities(value: str | Sequence[str]) -> tuple[str, ...]:
    names = [m.strip() for m in (value.split(",") if isinstance(value, str) else value)]
    names = [m for m in names if m]
    unknown = sorted(set(names) - set(PRODUCTS))
    if unknown or not names:
        raise InputError(
            f"unknown modalities {', '.join(unknown)}" if unknown else "no modality given",
            hint="choose among " + ",".join(PRODUCTS),
        )
    return tuple(m for m in PRODUCTS if m in names)


@dataclass(frozen=True)
class ExtractOptions:
    modalities: tuple[str, ...] = MODALITIES
    device: str = "cpu"  # "cpu" or "cuda" (vision networks and the encoders; ASR too)
    batch_size: int = 16  # frames per chunk through the vision networks
    workers: int = 1  # audio-side threads beside the vision side
    # Decode the next frames while the networks run, and run the audio side (ASR, speech,
    # words) in its own thread beside the vision side. False runs each step after the other
    # (the same features; only for measuring what the overlap saves).
    overlap: bool = True
    models_dir: Path | None = None
    force: bool = False
    face: FaceConfig = field(default_factory=FaceConfig)
    frame: FrameConfig = field(default_factory=FrameConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    speech: Any = None  # SpeechConfig (default when None)
    words: Any = None  # WordConfig (default when None)
    transcripts: Path | None = None  # folder of the user's own transcripts (instead of ASR)
    # A video whose vision or audio side makes no progress for this long is given up (fails
    # with a message; the batch goes on). 0: wait for ever.
    stall_seconds: float = DEFAULT_STALL_SECONDS


@dataclass
class VideoSummary:
    id: str
    frames: int = 0
    faces_found: int = 0
    words: int = 0
    computed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class ExtractReport:
    batch: BatchReport
    videos: dict[str, VideoSummary]
    stages: dict[str, dict[str, float]]
    seconds: float
    workers: int = 1  # processes whose stage times are summed in ``stages`` (Ray backend)

    @property
    def exit_code(self) -> int:
        return self.batch.exit_code

    def totals(self) -> dict[str, Any]:
        frames = sum(v.frames for v in self.videos.values())
        faces = sum(v.faces_found for v in self.videos.values())
        return {
            "videos": len(self.batch.results),
            "ok": len(self.batch.ok) + len(self.batch.skipped),
            "failed": len(self.batch.failed),
            "frames": frames,
            "faces_found_pct": round(100 * faces / frames, 1) if frames else None,
            "words": sum(v.words for v in self.videos.values()),
            "seconds": round(self.seconds, 2),
        }


class _Progress:
    """Rich progress bars: overall videos, the current video's frames, audio jobs."""

    def __init__(self, console: Console, enabled: bool, n_videos: int, audio: bool):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.enabled = enabled
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=not enabled,
            transient=False,
        )
        self.videos = self.bar.add_task("videos", total=n_videos)
        self.frames = self.bar.add_task("vision", total=None, visible=False)
        self.audio = self.bar.add_task("audio side", total=n_videos, visible=audio)
        self._lock = threading.Lock()

    def start_video(self, name: str, frames: int) -> None:
        self.bar.reset(self.frames, total=frames, description=f"vision {name}", visible=True)

    def advance(self, task, n: int = 1) -> None:
        with self._lock:
            self.bar.advance(task, n)

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        self.bar.__exit__(*exc)


def _with_next_started(items: Iterator, start) -> Iterator[tuple[Any, Any]]:
    """Yield ``(item, started)`` pairs, calling ``start`` on the *next* item before the current
    one is handed out: the next video is decoding while the current one is processed, and at
    most two videos are being decoded at any time. Closing the generator closes what was
    started ahead and not handed out."""
    nxt = next(items, None)
    started = start(nxt) if nxt is not None else None
    try:
        while nxt is not None:
            current, current_started = nxt, started
            nxt, started = next(items, None), None
            started = start(nxt) if nxt is not None else None
            yield current, current_started
    finally:
        if started is not None:
            started.close()


@dataclass
class _Decoding:
    """A video's frames being decoded ahead, and the ffmpeg processes doing it."""

    chunks: Any
    children: ChildProcesses

    def close(self) -> None:
        if hasattr(self.chunks, "close"):
            self.chunks.close()
        self.children.kill()


@dataclass
class _Pending:
    """A video whose features are not all finished (its audio side may still be running)."""

    source: MediaSource
    audio: Future | None = None


class _ExtractRun:
    """One ``extract`` over a batch: the vision side of each video in a watched thread, the
    audio sides in a pool of watched threads beside it, and ``on_video`` called (in the
    caller's thread, in input order) as soon as each video is finished or has failed.
    ``loaded``: an earlier run with the same options whose models (and clock) this one reuses
    (a Ray worker runs one video at a time, loading its models once)."""

    def __init__(
        self, store, options: ExtractOptions, sources, console, debug, on_video, loaded=None
    ):
        self.store, self.options, self.sources = store, options, list(sources)
        self.console, self.debug, self.on_video = console, debug, on_video
        self.wanted = set(options.modalities)
        self.clock = loaded.clock if loaded else StageClock()
        self.models = loaded.models if loaded else self._vision_models()
        self.audio_side = loaded.audio_side if loaded else None
        if self.audio_side is None and self.wanted & AUDIO:
            from mmaffect.features.audio_side import AudioSide

            self.audio_side = AudioSide(store, options, self.clock)
        stall = options.stall_seconds
        self.probing = WatchedThreads(1, stall_seconds=stall, name="probe")
        self.vision = WatchedThreads(1, stall_seconds=stall, name="vision")
        self.audio = WatchedThreads(max(1, options.workers), stall_seconds=stall, name="audio")
        self.summaries = {s.id: VideoSummary(s.id) for s in self.sources}
        self.failures: dict[str, str] = {}
        self.pending: list[_Pending] = []
        self.finished: set[str] = set()  # videos handed out (finished or failed)
        self.interrupted = False
        self.bars: _Progress | None = None

    def _vision_models(self) -> VisionModels:
        o = self.options
        return VisionModels(
            models_dir=o.models_dir, device=o.device, face=o.face, frame=o.frame, clip=o.clip,
            clock=self.clock,
        )  # fmt: skip

    def fail(self, src: MediaSource, error: BaseException) -> None:
        if isinstance(error, MmaffectError):
            msg = error.one_line()
            if self.debug and error.detail:
                self.console.print(error.detail, markup=False, highlight=False)
        else:
            msg = f"{type(error).__name__}: {error} (unexpected error; --debug shows the traceback)"
            if self.debug:
                import traceback

                self.console.print("".join(traceback.format_exception(error)), markup=False)
        self.failures.setdefault(src.id, msg)
        self.console.print(f"[red]✗[/] {src.id}: {msg}", highlight=False)

    def start_decoding(self, item) -> _Decoding | None:
        _, opened = item
        if isinstance(opened, BaseException) or not (
            self.wanted & VISION and opened.source.has_video
        ):
            return None
        todo, _, _ = vision_todo(opened, self.store, self.models, self.wanted, self.options.force)
        if not todo:
            return None
        children = ChildProcesses()
        frames = opened.frames(chunk_size=self.options.batch_size, children=children)
        return _Decoding(Prefetch(frames, depth=1) if self.options.overlap else frames, children)

    def run(self) -> None:
        """Every video of the batch; Ctrl-C stops it, keeping what is finished."""
        try:
            items = _with_next_started(self.probed(), self.start_decoding)
            with contextlib.closing(items):  # closing ends the decoding started ahead
                for (src, opened), decoding in items:
                    self.one(src, opened, decoding)
                    self.finish_ready(wait=False)
            self.finish_ready(wait=True)
            for threads in (self.probing, self.vision, self.audio):
                threads.settle()  # videos given up discard their temporary entries
        except KeyboardInterrupt:
            self.interrupted = True
            for threads in (self.probing, self.vision, self.audio):
                threads.cancel_all()
            self.console.print(
                "[yellow]interrupted[/]: finished entries are kept; re-run to resume"
            )

    def probed(self) -> Iterator[tuple[MediaSource, Any]]:
        """``(source, opened source or the error that probing it raised)``, each probed in a
        watched thread while the one before is processed."""
        ahead: collections.deque = collections.deque()
        for src in self.sources:
            ahead.append((src, self.probing.submit(open_source, src, heartbeat=Heartbeat("probe"))))
            if len(ahead) > 1:
                yield self._probe_result(*ahead.popleft())
        while ahead:
            yield self._probe_result(*ahead.popleft())

    def _probe_result(self, src: MediaSource, future: Future) -> tuple[MediaSource, Any]:
        try:
            return src, self.probing.result(future)
        except Exception as e:  # noqa: BLE001 - reported with the video
            return src, e

    def one(self, src: MediaSource, opened, decoding: _Decoding | None) -> None:
        bars = self.bars
        if isinstance(opened, BaseException):
            self.fail(src, opened)
            self.pending.append(_Pending(src))
            bars.advance(bars.videos)
            if self.audio_side:
                bars.advance(bars.audio)
            return
        pending = _Pending(src)
        self.pending.append(pending)
        self.summaries[src.id].frames = source_timing(opened).n_frames
        audio_side = self.audio_side if src.kind != "images" else None  # photos: no soundtrack
        if src.kind == "images":
            self.image_set_notes(src, opened)
        if audio_side and self.options.overlap:
            pending.audio = self.submit_audio(opened)
        if self.wanted & VISION and src.has_video:
            self.vision_side(src, opened, decoding)
        elif self.wanted & VISION:
            self.summaries[src.id].notes.append("audio only: no vision features")
        if audio_side and not self.options.overlap:
            pending.audio = self.submit_audio(opened)
            self.finish_ready(wait=True)
        bars.advance(bars.videos)

    def image_set_notes(self, src: MediaSource, opened) -> None:
        """An image set: each unreadable image named on the console (it is left out of the
        set), and no audio side (photos have no soundtrack)."""
        from rich.markup import escape

        notes = self.summaries[src.id].notes
        for name, reason in opened.info.unreadable:
            notes.append(f"{name} is not a readable image ({reason}): left out")
            line = escape(f"{src.id}: {notes[-1]}")
            self.console.print(f"[yellow]warning[/]: {line}", highlight=False, soft_wrap=True)
        if self.audio_side:
            notes.append("an image set has no soundtrack: no speech or word features")
            self.bars.advance(self.bars.audio)

    def submit_audio(self, opened) -> Future:
        heartbeat = Heartbeat("audio")
        future = self.audio.submit(self.audio_side.run, opened, heartbeat=heartbeat)
        future.add_done_callback(lambda _f: self.bars.advance(self.bars.audio))
        return future

    def vision_side(self, src: MediaSource, opened, decoding: _Decoding | None) -> None:
        heartbeat = Heartbeat("vision")
        if decoding is not None:
            heartbeat.on_abandon(decoding.children.kill)
        bars = self.bars
        work = functools.partial(
            run_vision, opened, cache=self.store, models=self.models, wanted=self.wanted,
            force=self.options.force, batch_size=self.options.batch_size,
            chunks=iter(decoding.chunks) if decoding is not None else None,
            on_frames=lambda n: bars.advance(bars.frames, n),
        )  # fmt: skip
        try:
            bars.start_video(src.id, self.summaries[src.id].frames)
            res: VisionResult = self.vision.result(self.vision.submit(work, heartbeat=heartbeat))
            summary = self.summaries[src.id]
            summary.faces_found = res.faces_found
            summary.computed += res.computed
            summary.reused += res.reused
        except StageStalled as e:
            self.fail(src, e)
            self.models = self._vision_models()  # the stuck thread may still hold the old ones
        except Exception as e:  # noqa: BLE001 - one bad video must not stop the batch
            self.fail(src, e)
        finally:
            if decoding is not None:
                decoding.close()

    def finish_ready(self, *, wait: bool) -> None:
        """Hand out the videos that are finished, in input order (waiting for them when
        ``wait``); a stalled audio side fails its video."""
        while self.pending:
            pending = self.pending[0]
            if pending.audio is not None:
                try:
                    if not wait and not self.audio.poll(pending.audio):
                        return
                    res = self.audio.result(pending.audio)
                    summary = self.summaries[pending.source.id]
                    summary.computed += res.computed
                    summary.reused += res.reused
                    summary.words = res.words
                    summary.notes += res.notes
                except Exception as e:  # noqa: BLE001 - one bad video must not stop the batch
                    self.fail(pending.source, e)
            self.pending.pop(0)
            self.finished.add(pending.source.id)
            if self.on_video is not None:
                self.on_video(pending.source, self.failures.get(pending.source.id))

    def report(self, started: float) -> ExtractReport:
        batch = BatchReport(interrupted=self.interrupted)
        for src in self.sources:
            s = self.summaries[src.id]
            if src.id in self.failures:
                batch.results.append(ItemResult(src.id, "failed", self.failures[src.id]))
            elif s.computed:
                batch.results.append(ItemResult(src.id, "ok", ", ".join(s.computed)))
            elif src.id in self.finished:
                batch.results.append(
                    ItemResult(src.id, "skipped", "all features cached", up_to_date=True)
                )
        return ExtractReport(
            batch=batch,
            videos=self.summaries,
            stages=self.clock.as_dict(),
            seconds=time.perf_counter() - started,
        )


def extract(
    inputs: Sequence[str | Path] | None = None,
    *,
    cache: str | Path,
    sources: Sequence[MediaSource] | None = None,
    options: ExtractOptions | None = None,
    audio_dirs: Sequence[str | Path] = (),
    fps: float | None = None,
    console: Console | None = None,
    progress: bool = True,
    debug: bool = False,
    on_video: Callable[[MediaSource, str | None], None] | None = None,
    backend: Any = None,
    **overrides: Any,
) -> ExtractReport:
    """Extract the features of ``inputs`` into the feature cache ``cache``.

    Parameters
    ----------
    inputs
        Files and folders (see :func:`mmaffect.media.discover`), or pass ``sources``.
    cache
        Cache folder; created if needed.
    options
        :class:`ExtractOptions`; keyword ``overrides`` replace single fields
        (``modalities="speech,word"``, ``device="cuda"``, ``force=True`` …).
    on_video
        Called as ``on_video(source, error)`` in this thread as soon as a video's features
        are all finished (``error`` is ``None``) or it failed (``error`` is the reason), in
        input order; ``predict`` writes each video's outputs from it.
    backend
        :class:`mmaffect.backends.Backend`: where the videos run (default: this process;
        ``Backend("ray", …)``: a Ray cluster, ``docs/scale.md``).

    Returns
    -------
    ExtractReport
        Per-video results, stage timings and totals; ``exit_code`` is non-zero if any failed,
        130 when interrupted.
    """
    from dataclasses import replace

    options = options or ExtractOptions()
    if "modalities" in overrides:
        overrides["modalities"] = parse_modalities(overrides["modalities"])
    options = replace(options, **overrides)
    console = console or Console(stderr=True)
    if sources is None:
        sources = discover(inputs or [], audio_dirs=audio_dirs, fps=fps)
    from mmaffect.backends import Backend, run_extract

    report = run_extract(
        backend or Backend(), store=FeatureCache(cache), options=options, sources=sources,
        console=console, progress=progress, debug=debug, on_video=on_video,
    )  # fmt: skip
    print_extract_summary(report, console)
    return report


def print_extract_summary(report: ExtractReport, console: Console) -> None:
    from rich.table import Table

    t = report.totals()
    faces = f"{t['faces_found_pct']}%" if t["faces_found_pct"] is not None else "-"
    console.print(
        f"[bold]extract[/]: {t['videos']} video(s), {t['frames']} frames, faces found in "
        f"{faces} of frames, {t['words']} words, {t['seconds']:.1f} s",
        highlight=False,
    )
    if report.stages:
        summed = f" (summed over {report.workers} workers)" if report.workers > 1 else ""
        table = Table(title="time per stage" + summed, title_justify="left")
        for col in ("stage", "seconds", "items", "items/s"):
            table.add_column(col, justify="left" if col == "stage" else "right")
        for stage, v in sorted(report.stages.items(), key=lambda kv: -kv[1]["seconds"]):
            rate = f"{v['items'] / v['seconds']:.1f}" if v["items"] and v["seconds"] else "-"
            table.add_row(stage, f"{v['seconds']:.2f}", str(v["items"] or "-"), rate)
        console.print(table)
    print_summary(report.batch, console, title="extract")
