"""``mmaffect extract``: features of every modality for a batch of videos, into the cache.

Concurrency (why the run is faster than the sum of its stages):

* the **audio side** (speech features, ASR, word embeddings) of each video runs in a thread pool
  (``workers`` threads) beside the **vision side**, which runs in the calling thread;
* frames are decoded by ffmpeg in a background thread that runs ahead across videos, so the next
  video is being decoded while the models still work on the current one.

A video fails on its own (one-line reason in the summary); the others go on. Entries already in
the cache and fresh are reused; ``force`` recomputes them. Interrupting leaves no partial entry.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from mmaffect.batch import BatchReport, ItemResult, print_summary
from mmaffect.errors import InputError, MmaffectError
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
    prefetch,
    run_vision,
    vision_todo,
)
from mmaffect.media import MediaSource, discover, open_source

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


def _open_ahead(sources: Sequence[MediaSource]) -> Iterator[tuple[MediaSource, Any]]:
    """Probe each source (a probe error travels in place of the opened source)."""
    for src in sources:
        try:
            yield src, open_source(src)
        except MmaffectError as e:
            yield src, e


def _with_next_started(items: Iterator, start) -> Iterator[tuple[Any, Any]]:
    """Yield ``(item, started)`` pairs, calling ``start`` on the *next* item before the current
    one is handed out: the next video is decoding while the current one is processed, and at
    most two videos are being decoded at any time."""
    nxt = next(items, None)
    started = start(nxt) if nxt is not None else None
    while nxt is not None:
        current, current_started = nxt, started
        nxt = next(items, None)
        started = start(nxt) if nxt is not None else None
        yield current, current_started


def _run_now(fn, *args) -> Future:
    """``fn(*args)`` run here, its result or exception in a completed future."""
    fut: Future = Future()
    try:
        fut.set_result(fn(*args))
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: BLE001 - reported with the video, as from the pool
        fut.set_exception(e)
    return fut


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

    Returns
    -------
    ExtractReport
        Per-video results, stage timings and totals; ``exit_code`` is non-zero if any failed.
    """
    from dataclasses import replace

    options = options or ExtractOptions()
    if "modalities" in overrides:
        overrides["modalities"] = parse_modalities(overrides["modalities"])
    options = replace(options, **overrides)
    wanted = set(options.modalities)
    console = console or Console(stderr=True)
    if sources is None:
        sources = discover(inputs or [], audio_dirs=audio_dirs, fps=fps)
    store = FeatureCache(cache)
    clock = StageClock()
    started = time.perf_counter()
    models = VisionModels(
        models_dir=options.models_dir,
        device=options.device,
        face=options.face,
        frame=options.frame,
        clip=options.clip,
        clock=clock,
    )
    audio_side = None
    if wanted & AUDIO:
        from mmaffect.features.audio_side import AudioSide

        audio_side = AudioSide(store, options, clock)
    summaries: dict[str, VideoSummary] = {s.id: VideoSummary(s.id) for s in sources}
    failures: dict[str, str] = {}
    audio_futures: dict[str, Future] = {}
    interrupted = False

    def fail(src: MediaSource, error: BaseException) -> None:
        if isinstance(error, MmaffectError):
            msg = error.one_line()
            if debug and error.detail:
                console.print(error.detail, markup=False, highlight=False)
        else:
            msg = f"{type(error).__name__}: {error} (unexpected error; --debug shows the traceback)"
            if debug:
                import traceback

                console.print("".join(traceback.format_exception(error)), markup=False)
        failures.setdefault(src.id, msg)
        console.print(f"[red]✗[/] {src.id}: {msg}", highlight=False)

    pool = ThreadPoolExecutor(max_workers=max(1, options.workers), thread_name_prefix="audio")
    with _Progress(console, progress, len(sources), audio_side is not None) as bars:
        try:

            def start_decoding(item):
                _, opened = item
                if isinstance(opened, BaseException) or not (
                    wanted & VISION and opened.source.has_video
                ):
                    return None
                todo, _, _ = vision_todo(opened, store, models, wanted, options.force)
                if not todo:
                    return None
                frames = opened.frames(chunk_size=options.batch_size)
                return Prefetch(frames, depth=1) if options.overlap else frames

            probed = prefetch(_open_ahead(sources), depth=1)
            for (src, opened), chunks in _with_next_started(probed, start_decoding):
                if isinstance(opened, BaseException):
                    fail(src, opened)
                    bars.advance(bars.videos)
                    if audio_side:
                        bars.advance(bars.audio)
                    continue
                if audio_side and options.overlap:
                    fut = pool.submit(audio_side.run, opened)
                    fut.add_done_callback(lambda _f: bars.advance(bars.audio))
                    audio_futures[src.id] = fut
                summary = summaries[src.id]
                summary.frames = source_timing(opened).n_frames
                if wanted & VISION and src.has_video:
                    try:
                        bars.start_video(src.id, summary.frames)
                        res: VisionResult = run_vision(
                            opened,
                            cache=store,
                            models=models,
                            wanted=wanted,
                            force=options.force,
                            batch_size=options.batch_size,
                            chunks=iter(chunks) if chunks is not None else None,
                            on_frames=lambda n: bars.advance(bars.frames, n),
                        )
                        summary.faces_found = res.faces_found
                        summary.computed += res.computed
                        summary.reused += res.reused
                    except KeyboardInterrupt:
                        raise
                    except Exception as e:  # noqa: BLE001 - one bad video must not stop the batch
                        fail(src, e)
                    finally:
                        if chunks is not None:
                            chunks.close()
                elif wanted & VISION:
                    summary.notes.append("audio only: no vision features")
                if audio_side and not options.overlap:
                    audio_futures[src.id] = _run_now(audio_side.run, opened)
                    bars.advance(bars.audio)
                bars.advance(bars.videos)
            for vid, fut in audio_futures.items():
                src = next(s for s in sources if s.id == vid)
                try:
                    res = fut.result()
                    summaries[vid].computed += res.computed
                    summaries[vid].reused += res.reused
                    summaries[vid].words = res.words
                    summaries[vid].notes += res.notes
                except Exception as e:  # noqa: BLE001
                    fail(src, e)
        except KeyboardInterrupt:
            interrupted = True
            console.print("[yellow]interrupted[/]: finished entries are kept; re-run to resume")
            for fut in audio_futures.values():
                fut.cancel()
        finally:
            pool.shutdown(wait=not interrupted, cancel_futures=interrupted)

    batch = BatchReport(interrupted=interrupted)
    for src in sources:
        s = summaries[src.id]
        if src.id in failures:
            batch.results.append(ItemResult(src.id, "failed", failures[src.id]))
        elif s.computed:
            batch.results.append(ItemResult(src.id, "ok", ", ".join(s.computed)))
        elif not interrupted:
            batch.results.append(ItemResult(src.id, "skipped", "all features cached"))
    report = ExtractReport(
        batch=batch, videos=summaries, stages=clock.as_dict(), seconds=time.perf_counter() - started
    )
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
        table = Table(title="time per stage", title_justify="left")
        for col in ("stage", "seconds", "items", "items/s"):
            table.add_column(col, justify="left" if col == "stage" else "right")
        for stage, v in sorted(report.stages.items(), key=lambda kv: -kv[1]["seconds"]):
            rate = f"{v['items'] / v['seconds']:.1f}" if v["items"] and v["seconds"] else "-"
            table.add_row(stage, f"{v['seconds']:.2f}", str(v["items"] or "-"), rate)
        console.print(table)
    print_summary(report.batch, console, title="extract")
