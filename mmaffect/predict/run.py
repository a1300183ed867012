"""``mmaffect predict``: from videos to per-frame predictions, challenge files, tables and plots.

Steps, each resumable:

1. extract the features the predictor needs into the feature cache (``mmaffect extract``);
2. per video: outputs for every frame (:mod:`mmaffect.predict.compute`), the fill rule for
   frames without a face, optional smoothing, the frame-count rule; saved as
   ``OUT/predictions/<video>.npz`` (a video whose file is there and newer than its features is
   not recomputed);
3. per video: the plain table ``OUT/table/<video>.csv`` and, for ABAW1-3, the per-video challenge
   files ``OUT/<edition>/<TRACK>/<video>.txt``;
4. at the end: the single-file formats (ABAW5/6/8 template files, the MTL file) from every
   video's predictions, ``OUT/run.json``, and plots when asked.

See ``docs/predict.md``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from mmaffect.batch import BatchReport, Skip, UpToDate, print_summary
from mmaffect.errors import InputError, MmaffectError
from mmaffect.features.cache import FeatureCache
from mmaffect.features.stages import StageClock
from mmaffect.predict.result import VideoPrediction, load_prediction, save_prediction

__all__ = ["FRAME_COUNT_RULES", "PredictOptions", "PredictReport", "predict"]

FRAME_COUNT_RULES = ("decoded", "opencv+1")
TASK_TRACKS = {"expr": ("EXPR",), "va": ("VA",), "au": ("AU",), "mtl": ("MTL",)}
RUN_FILE = "run.json"


@dataclass
class PredictOptions:
    """Settings of one ``predict`` run (the CLI's options)."""

    checkpoint: Path | None = None
    tasks: tuple[str, ...] | None = None  # expr, va, au, mtl; default: the predictor's
    edition: str = "abaw3"
    modalities: tuple[str, ...] | None = None
    templates: tuple[Path, ...] = ()
    image_list: Path | None = None
    fill: str = "auto"
    smooth: float = 0.0
    frame_count: str = "decoded"
    table_format: str = "csv"
    words: bool = True
    plots: bool = False
    overlay: bool = False
    force: bool = False
    device: str = "auto"  # auto: cuda when available, else cpu
    batch_size: int = 16
    cache: Path | None = None
    extract: Any = None  # ExtractOptions for the feature extraction (models dir, face config…)
    # mmaffect.backends.Backend: where the extraction runs (default local). With Ray, ``device``
    # is the workers'; the model step runs here on this machine's CUDA device or its CPU.
    backend: Any = None


@dataclass
class PredictReport:
    batch: BatchReport
    out: Path
    predictor: str
    videos: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0
    extract_seconds: float = 0.0
    # seconds and items per step after extraction: "model" (frames), "write" (files)
    stages: dict[str, dict[str, float]] = field(default_factory=dict)
    # what the user should know about this run's outputs (also in run.json)
    warnings: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return self.batch.exit_code


def _tracks(tasks: Sequence[str], heads: Sequence[str]) -> list[str]:
    tracks: list[str] = []
    for t in tasks:
        if t not in TASK_TRACKS:
            raise InputError(f"unknown task {t!r}", hint="expr, va, au or mtl")
        tracks += TASK_TRACKS[t]
    need = {"EXPR": "expr", "VA": "va", "AU": "au"}
    for track in tracks:
        heads_needed = ["expr", "va", "au"] if track == "MTL" else [need[track]]
        missing = [h for h in heads_needed if h not in heads]
        if missing:
            raise InputError(
                f"the predictor has no {'/'.join(missing)} output for the {track} track",
                hint=f"its outputs: {', '.join(heads)}",
            )
    return tracks


def _make_predictor(opts: PredictOptions):
    from mmaffect.features.face_model import is_face_model_checkpoint
    from mmaffect.predict.compute import (
        BaselinePredictor,
        CheckpointPredictor,
        FaceModelPredictor,
    )

    if opts.checkpoint is None:
        if opts.modalities and set(opts.modalities) - {"frame", "clip"}:
            raise InputError(
                "the baseline predictor uses the frame and clip branches only (the FER2013 "
                "face model's expressions and MediaPipe blendshapes)",
                hint="pass --checkpoint to use other modalities",
            )
        return BaselinePredictor()
    if not Path(opts.checkpoint).is_file():
        raise InputError(f"{opts.checkpoint}: no such checkpoint file")
    if is_face_model_checkpoint(opts.checkpoint):  # an image model: it reads the faces itself
        if opts.modalities and set(opts.modalities) - {"frame"}:
            raise InputError(
                "a face model checkpoint predicts from the face alone",
                hint="leave --modalities out",
            )
        return FaceModelPredictor(opts.checkpoint, device=opts.device)
    return CheckpointPredictor(opts.checkpoint, opts.modalities, device=opts.device)


def _has_audio(source) -> bool:
    if source.audio_path is None:
        return False
    from mmaffect.media.probe import probe

    return probe(source.audio_path, count="header").has_audio


def _frame_count(source, rule: str, decoded: int) -> tuple[int, str]:
    if source.kind == "images" and rule in FRAME_COUNT_RULES:
        return decoded, f"images ({decoded})"  # a row per readable image, whatever the rule
    if rule == "decoded":
        return decoded, f"decoded frames ({decoded})"
    if rule == "opencv+1":
        if source.kind != "video":
            return decoded, f"decoded frames ({decoded}; OpenCV counts only video files)"
        from mmaffect.media.probe import opencv_frame_count

        n = opencv_frame_count(source.path) + 1
        return n, f"OpenCV count + 1 ({n}; {decoded} decoded)"
    raise InputError(f"unknown frame-count rule {rule!r}", hint=" or ".join(FRAME_COUNT_RULES))


def _fresh(npz: Path, cache: FeatureCache, video_id: str, signature: dict[str, Any]) -> bool:
    """An earlier prediction with the same settings, newer than every feature entry used."""
    if not npz.is_file():
        return False
    try:
        old = load_prediction(npz)
    except MmaffectError:
        return False
    if old.meta.get("signature") != signature:
        return False
    newest = max(
        (p.stat().st_mtime for p in cache.entries(video_id) if (p / "meta.json").is_file()),
        default=0.0,
    )
    return npz.stat().st_mtime >= newest


def _checked(opts: PredictOptions) -> PredictOptions:
    """The options with the device resolved; every value checked before any work starts."""
    from dataclasses import replace

    from mmaffect.backends import as_backend, driver_device
    from mmaffect.predict.compute import FILL_RULES
    from mmaffect.submission import TableWriter

    choices = {
        "fill": (opts.fill, FILL_RULES),
        "frame-count": (opts.frame_count, FRAME_COUNT_RULES),
    }
    for option, (value, allowed) in choices.items():
        if value not in allowed:
            raise InputError(f"unknown --{option} {value!r}", hint=f"choose {', '.join(allowed)}")
    TableWriter(opts.table_format)  # an unknown format, or parquet without pyarrow, is an error
    backend = as_backend(opts.backend)
    return replace(opts, device=driver_device(opts.device, backend), backend=backend)


def predict(
    inputs: Sequence[str | Path] | None,
    out: str | Path,
    options: PredictOptions | None = None,
    *,
    sources: Sequence[Any] | None = None,
    console: Console | None = None,
    progress: bool = True,
    debug: bool = False,
) -> PredictReport:
    """Predict every frame of every input and write the outputs under ``out``.

    Each video's predictions, table and per-video challenge files are written as soon as its
    features are extracted; the single-file challenge formats, plots and ``run.json`` once the
    batch is done (not after Ctrl-C: the finished videos' files are kept, a re-run resumes).

    Returns
    -------
    PredictReport
        Per-video results (frames, faces, filled frames, frame-count rule, files) and
        ``exit_code`` (1 when any video failed, 130 when interrupted).

    Raises
    ------
    InputError
        A bad option, checkpoint or output folder, found before any work starts.
    """
    from dataclasses import replace

    from mmaffect.atomic import writable_dir
    from mmaffect.backends import extract_device
    from mmaffect.extraction import extract as run_extract
    from mmaffect.media import discover

    opts = _checked(options or PredictOptions())
    console = console or Console(stderr=True)
    started = time.perf_counter()
    out = writable_dir(out, "--out")
    predictor = _make_predictor(opts)
    tasks = opts.tasks or (
        ("expr", "va", "au") if predictor.name == "baseline" else (predictor.task,)
    )
    tracks = _tracks(tasks, predictor.heads)
    plan = _writer_plan(tracks, opts)
    if sources is None:
        sources = discover(inputs or [], fps=None)
    run = _PredictRun(opts, predictor, tracks, plan, out, console, debug)
    run.note_image_sets(sources)
    ext = run.extract_options()  # the checkpoint's extractor settings (an error comes now)
    if opts.backend.name != "local":  # the workers' device, resolved against the cluster
        ext = replace(
            ext, device=extract_device((options or PredictOptions()).device, opts.backend)
        )
    run.announce(len(sources))
    extraction = run_extract(
        sources=sources, cache=run.cache.root, options=ext, console=console,
        progress=progress, debug=debug, on_video=run.video_done, backend=opts.backend,
    )  # fmt: skip
    run.report.extract_seconds = extraction.seconds
    run.finish(interrupted=extraction.batch.interrupted, started=started)
    return run.report


class _PredictRun:
    """One ``predict`` batch: the per-video step runs as each video's features are ready."""

    def __init__(self, opts, predictor, tracks, plan: _Plan, out: Path, console, debug):
        from mmaffect.batch import Batch

        self.opts, self.predictor, self.tracks, self.plan = opts, predictor, tracks, plan
        self.out, self.console, self.debug = out, console, debug
        self.cache = FeatureCache(opts.cache or out / "cache")
        self.pred_dir = out / "predictions"
        self.clock = StageClock()
        self.batch = Batch(console, debug=debug)
        self.report = PredictReport(self.batch.report, out, predictor.describe()["predictor"])
        self.report.warnings = list(plan.notes) + _dropped_branches_warning(predictor)
        self.image_sets: set[str] = set()
        self.signature = {
            "predictor": predictor.describe(),
            "fill": opts.fill,
            "smooth": opts.smooth,
            "frame_count": opts.frame_count,
            "words": opts.words,
        }

    def extract_options(self):
        """What ``extract`` must make for the predictor: its branches, with the extractor
        settings a checkpoint was trained on (they win over the command line's)."""
        from dataclasses import replace

        from mmaffect.extraction import ExtractOptions

        needed = set(self.predictor.modalities) | {"faces"}
        if self.opts.words:
            needed.add("word")
        base = replace(
            self.opts.extract or ExtractOptions(),
            modalities=tuple(
                m for m in ("faces", "frame", "clip", "speech", "word") if m in needed
            ),
            device=self.opts.device,
            batch_size=self.opts.batch_size,
        )
        return self.predictor.extract_options(base)

    def note_image_sets(self, sources) -> None:
        """Image sets (photos) get the table and ``.npz`` only; said once, when it matters."""
        self.image_sets = {s.id for s in sources if s.kind == "images"}
        if self.image_sets and (self.plan.per_video or self.plan.single or self.opts.smooth):
            self.report.warnings.append(
                f"image set(s) {', '.join(sorted(self.image_sets))}: one table row per image "
                "and the .npz, no ABAW challenge files (they are per video), and every image "
                "predicted on its own (no fill or smoothing across images)"
            )

    def announce(self, n_sources: int) -> None:
        console, predictor = self.console, self.predictor
        console.print(
            f"predict: {n_sources} input(s), predictor [bold]"
            f"{predictor.describe()['predictor']}[/], tracks {', '.join(self.tracks)} "
            f"({self.opts.edition.upper()}), features → {self.cache.root}",
            highlight=False,
        )
        if predictor.name == "baseline":
            console.print(
                "[yellow]baseline predictor[/]: components that need no ABAW labels (a FER2013 "
                "expression model, MediaPipe blendshapes), not trained on Aff-Wild2; "
                "challenge-grade results need a trained checkpoint (--checkpoint).",
                highlight=False,
            )
        for warning in self.report.warnings:
            console.print(f"[yellow]warning[/]: {warning}", highlight=False)

    def video_done(self, source, extraction_error: str | None) -> None:
        """Predict and write one video (called by ``extract`` when its features are ready)."""
        self.batch.run(source.id, lambda: self.predict_video(source, extraction_error))

    def predict_video(self, source, extraction_error: str | None) -> str:
        from mmaffect.predict.compute import build_prediction

        vid, opts, predictor = source.id, self.opts, self.predictor
        if extraction_error is not None:
            raise InputError(f"feature extraction failed: {extraction_error}")
        if predictor.name == "baseline" and source.kind == "audio":
            raise Skip("audio only: the baseline needs faces (a speech/word checkpoint does not)")
        if predictor.uses_audio and not _has_audio(source):
            used = [m for m in predictor.modalities if m in ("speech", "word")]
            raise InputError(
                f"{vid} has no audio track but the checkpoint uses {','.join(used)}",
                hint="leave those branches out with --modalities "
                + ",".join(m for m in predictor.modalities if m not in used),
            )
        npz = self.pred_dir / f"{vid}.npz"
        if not opts.force and _fresh(npz, self.cache, vid, self.signature):
            pred = load_prediction(npz)
            _write_video_files(pred, self.out, self.plan, opts)
            self.report.videos[vid] = _video_summary(pred)
            self.report.warnings += _unreadable_warnings(pred)
            raise UpToDate("predictions up to date")
        images = source.kind == "images"
        with self.clock("model"):
            pred = build_prediction(
                predictor, self.cache, vid, fill=opts.fill, smooth_seconds=opts.smooth,
                independent=images,
            )  # fmt: skip
            if images:
                pred = _image_set_rows(pred, self.cache)
                self.report.warnings += _unreadable_warnings(pred)
        self.clock.count("model", len(pred))
        n, rule_text = _frame_count(source, opts.frame_count, len(pred))
        pred = pred.with_length(n)
        pred.meta.update(
            {
                "frame_count_rule": opts.frame_count,
                "frame_count": rule_text,
                "source": str(source.path),
                "signature": self.signature,
                "edition": opts.edition,
            }
        )
        with self.clock("write"):
            save_prediction(pred, npz)
            files = _write_video_files(pred, self.out, self.plan, opts)
        self.clock.count("write", 1 + len(files))
        self.report.videos[vid] = _video_summary(pred)
        self.report.files += [str(f) for f in files]
        return f"{len(pred)} lines ({rule_text}), {int(pred.filled.sum())} filled"

    def finish(self, *, interrupted: bool, started: float) -> None:
        """After the batch: single-file formats, plots, ``run.json`` and the closing lines."""
        report, console = self.report, self.console
        report.batch.interrupted = report.batch.interrupted or interrupted
        if not report.batch.interrupted:
            done = list(report.videos)
            self.write_single_files([v for v in done if v not in self.image_sets])
            if self.opts.plots or self.opts.overlay:
                _plots(done, self.pred_dir, self.out, self.opts, report, console, self.debug)
        report.seconds = time.perf_counter() - started
        report.stages = self.clock.as_dict()
        if report.batch.interrupted:
            console.print(
                f"[yellow]interrupted[/]: the outputs of {len(report.videos)} finished video(s) "
                "are kept; run.json and the single-file challenge formats are written when a "
                "run completes; re-run to resume",
                highlight=False,
            )
        else:
            _write_run_file(report, self.opts, self.predictor, self.tracks)
        print_summary(report.batch, console, title="predict summary")
        _print_closing(report, console, self.predictor.name == "baseline")

    def write_single_files(self, done: list[str]) -> None:
        try:
            with self.clock("write"):
                single = _write_single_files(done, self.pred_dir, self.out, self.plan, self.opts)
            self.clock.count("write", len(single))
            self.report.files += [str(f) for f in single]
        except MmaffectError as e:
            self.console.print(f"[red]✗[/] challenge file: {e.one_line()}", highlight=False)
            self.report.batch.results.append(_failed_item("challenge file", e.one_line()))
        for warning in _held_rows_warnings(self.plan):
            self.report.warnings.append(warning)
            self.console.print(f"[yellow]warning[/]: {warning}", highlight=False)


def _dropped_branches_warning(predictor) -> list[str]:
    dropped = list(getattr(predictor, "dropped", ()))
    if not dropped:
        return []
    return [
        f"the checkpoint was trained with {','.join(predictor.trained_modalities)}; "
        f"--modalities leaves out {','.join(dropped)}, whose inputs are replaced by zeros: "
        "expect lower accuracy than the checkpoint's validation score"
    ]


def _held_rows_warnings(plan: _Plan) -> list[str]:
    """Rows of a template or image list past the decoded frames of a video (they hold the
    video's last prediction)."""
    warnings = []
    for name, writer in plan.single:
        held = getattr(writer, "held_rows", {})
        if held:
            shown = ", ".join(f"{v} ({n})" for v, n in list(held.items())[:5])
            more = ", …" if len(held) > 5 else ""
            warnings.append(
                f"{name}: {sum(held.values())} row(s) of {len(held)} video(s) lie past the "
                f"decoded frames and hold each video's last prediction: {shown}{more}"
            )
    return warnings


def _image_set_rows(pred: VideoPrediction, cache: FeatureCache) -> VideoPrediction:
    """An image set's prediction with each row's image (from its faces entry, which lists
    them) and face boxes in pixels of the upright original images."""
    from dataclasses import replace

    from mmaffect.media.image_set import to_image_pixels
    from mmaffect.training.dataset import find_entries

    folder = find_entries(cache, pred.video_id, ["faces"])["faces"]
    listing = json.loads((folder / "meta.json").read_text()).get("image_set")
    if not listing or len(listing["files"]) != len(pred):
        raise InputError(
            f"{pred.video_id}: its faces entry {folder} does not list the set's images",
            hint="extract it again (--force)",
        )
    meta = {
        **pred.meta,
        "image_set": pred.video_id,
        "images": listing["files"],
        "unreadable": listing["unreadable"],
    }
    return replace(pred, face_box=to_image_pixels(pred.face_box, listing), meta=meta)


def _unreadable_warnings(pred: VideoPrediction) -> list[str]:
    return [
        f"{pred.video_id}: {name} is not a readable image ({reason}): left out"
        for name, reason in pred.meta.get("unreadable", [])
    ]


def _failed_item(name: str, message: str):
    from mmaffect.batch import ItemResult

    return ItemResult(name, "failed", message)


def _count_words(words: list[str]) -> int:
    """Spoken words: runs of frames with the same non-empty word."""
    return sum(1 for i, w in enumerate(words) if w and (i == 0 or words[i - 1] != w))


def _video_summary(pred: VideoPrediction) -> dict[str, Any]:
    return {
        "frames": len(pred),
        "decoded_frames": int(pred.meta.get("decoded_frames", len(pred))),
        "faces_found": int(pred.face_found.sum()),
        "filled": int(pred.filled.sum()),
        "frame_count": pred.meta.get("frame_count", ""),
        "fill": pred.meta.get("fill", ""),
        "words": sum(
            1 for i, w in enumerate(pred.words) if w and (i == 0 or pred.words[i - 1] != w)
        ),
    }


# ------------------------------------------------------------------------------------ writers


@dataclass
class _Plan:
    per_video: list[tuple[str, Any]]  # (folder name, writer)
    single: list[tuple[str, Any]]  # (file name, writer)
    notes: list[str]


def _writer_plan(tracks: Sequence[str], opts: PredictOptions) -> _Plan:
    """Which challenge writers this run uses, from the tracks, the edition and the templates."""
    from mmaffect import metrics
    from mmaffect.submission import template_track, writer_for

    edition = opts.edition.lower()
    templates: dict[str, Path] = {}
    for t in opts.templates:
        track = template_track(t)
        if track in templates:
            raise InputError(f"two --template files for the {track} track")
        templates[track] = Path(t)
    plan = _Plan([], [], [])
    for track, path in templates.items():
        if track not in tracks:
            plan.notes.append(
                f"--template {path} is for the {track} track, which this run does not predict "
                f"(tracks: {', '.join(tracks)}); it is not used"
            )
    for track in tracks:
        metrics.track_spec(track, edition)  # the edition must have run this track
        writer = writer_for(
            track, edition, template=templates.get(track), image_list=opts.image_list
        )
        if writer is None:
            plan.notes.append(
                f"{track}: {edition.upper()} submissions are built from the organisers' "
                + ("image list (--image-list)" if track == "MTL" else "template (--template)")
                + "; none given, so no challenge file (the table has every prediction)"
            )
            continue
        if getattr(writer, "per_video", False):
            plan.per_video.append((f"{edition}/{track}", writer))
        else:
            plan.single.append((f"{edition}/{track}.txt", writer))
    return plan


def _write_video_files(pred: VideoPrediction, out: Path, plan: _Plan, opts: PredictOptions):
    from mmaffect.submission import TableWriter

    files = [TableWriter(opts.table_format).write_video(pred, out / "table")]
    if "image_set" in pred.meta:  # photos: the table only (the challenge files are per video)
        return files
    for folder, writer in plan.per_video:
        files.append(writer.write_video(pred, out / folder))
    return files


def _write_single_files(done, pred_dir, out, plan: _Plan, opts) -> list[Path]:
    if not plan.single:
        return []
    preds = {vid: load_prediction(pred_dir / f"{vid}.npz") for vid in done}
    return [writer.write_all(preds, out / name) for name, writer in plan.single]


def _plots(done, pred_dir, out, opts, report, console, debug) -> None:
    from mmaffect.plots import plot_predictions

    paths = [pred_dir / f"{vid}.npz" for vid in done]
    sub = plot_predictions(paths, out / "plots", overlay=opts.overlay, console=console, debug=debug)
    for r in sub.failed:
        report.batch.results.append(_failed_item(f"plot {r.name}", r.message))


def _write_run_file(report: PredictReport, opts: PredictOptions, predictor, tracks) -> None:
    from mmaffect import __version__
    from mmaffect.atomic import atomic_write_text

    info = {
        "mmaffect": __version__,
        "predictor": predictor.describe(),
        "baseline": predictor.name == "baseline",
        "tracks": list(tracks),
        "edition": opts.edition,
        "fill": opts.fill,
        "smooth_seconds": opts.smooth,
        "frame_count_rule": opts.frame_count,
        "videos": report.videos,
        "failed": {r.name: r.message for r in report.batch.failed},
        "skipped": {r.name: r.message for r in report.batch.skipped if not r.up_to_date},
        "warnings": report.warnings,
        "seconds": round(report.seconds, 2),
        "extract_seconds": round(report.extract_seconds, 2),
        "stages": report.stages,
    }
    atomic_write_text(report.out / RUN_FILE, json.dumps(info, indent=2, default=str) + "\n")


def _print_closing(report: PredictReport, console: Console, baseline: bool) -> None:
    from rich.table import Table

    if report.videos:
        table = Table(title="predictions", title_justify="left")
        for col in ("video", "frames", "faces", "filled", "frame count", "words"):
            table.add_column(col, justify="left" if col in ("video", "frame count") else "right")
        for vid, v in report.videos.items():
            pct = 100 * v["faces_found"] / max(1, v["decoded_frames"])
            table.add_row(
                vid, str(v["frames"]), f"{pct:.0f}%", str(v["filled"]), v["frame_count"],
                str(v["words"]),
            )  # fmt: skip
        console.print(table)
    who = "the BASELINE predictor (not a trained model)" if baseline else report.predictor
    console.print(f"predictions by {who} in {report.out} ({report.seconds:.1f} s)", highlight=False)
