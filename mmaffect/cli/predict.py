"""``mmaffect predict``: per-frame predictions, challenge files, tables and plots."""

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the ``predict`` command to ``app``."""
    from mmaffect.cli.app import (
        AudioDirs,
        BackendName,
        Debug,
        DetectEvery,
        Fps,
        Inputs,
        ModelsDir,
        RayAddress,
        RayWorkers,
        StallTimeout,
        WorkerCpus,
        WorkerGpus,
        err,
    )
    from mmaffect.faces import DEFAULT_DETECT_EVERY
    from mmaffect.watchdog import DEFAULT_STALL_SECONDS

    @app.command("predict")
    def predict_cmd(
        inputs: Inputs,
        out_dir: Annotated[
            Path, typer.Option("--out", "-o", file_okay=False, help="Output folder.")
        ],
        checkpoint: Annotated[
            Path | None,
            typer.Option(
                "--checkpoint",
                dir_okay=False,
                help="A .ckpt from mmaffect train; without it the baseline predictor is used.",
            ),
        ] = None,
        task: Annotated[
            str | None,
            typer.Option(
                "--task",
                help="Comma-separated expr,va,au,mtl (default: the checkpoint's task; "
                "baseline: expr,va,au).",
            ),
        ] = None,
        edition: Annotated[
            str, typer.Option("--edition", help="ABAW edition of the challenge files.")
        ] = "abaw3",
        modalities: Annotated[
            str | None,
            typer.Option("--modalities", help="Branches to use (default: the checkpoint's)."),
        ] = None,
        template: Annotated[
            list[Path] | None,
            typer.Option(
                "--template",
                exists=True,
                dir_okay=False,
                help="Organiser template (ABAW5/6/8), one per track; repeatable.",
            ),
        ] = None,  # fmt: skip
        image_list: Annotated[
            Path | None,
            typer.Option(
                "--image-list",
                exists=True,
                dir_okay=False,
                help="Organisers' MTL test image list (ABAW3/4/7 MTL file).",
            ),
        ] = None,  # fmt: skip
        fill: Annotated[
            str,
            typer.Option(help="Frames without a face: auto, interpolate, hold or model."),
        ] = "auto",
        smooth: Annotated[
            float, typer.Option(min=0.0, help="Centred moving average over this many seconds.")
        ] = 0.0,
        frame_count: Annotated[
            str,
            typer.Option(
                "--frame-count",
                help="Lines per video: decoded (frames the decoder yields) or opencv+1 "
                "(OpenCV's count + 1, as ABAW3 participants wrote).",
            ),
        ] = "decoded",
        table_format: Annotated[
            str, typer.Option("--table-format", help="csv or parquet (needs pyarrow).")
        ] = "csv",
        words: Annotated[
            bool, typer.Option(help="Transcribe speech for the table's word column.")
        ] = True,
        plots: Annotated[bool, typer.Option(help="Write a PNG timeline per video.")] = False,
        overlay: Annotated[
            bool, typer.Option(help="Also render an MP4 with the predictions drawn on.")
        ] = False,
        cache: Annotated[
            Path | None,
            typer.Option("--cache", file_okay=False, help="Feature cache (default OUT/cache)."),
        ] = None,
        device: Annotated[
            str, typer.Option(help="auto (cuda when available), cpu, cuda or cuda:N.")
        ] = "auto",
        stall_timeout: StallTimeout = DEFAULT_STALL_SECONDS,
        batch_size: Annotated[int, typer.Option(min=1, help="Frames per batch (vision).")] = 16,
        detect_size: Annotated[
            int, typer.Option(min=64, help="Longest side frames are scaled to for detection.")
        ] = 640,
        detect_every: DetectEvery = DEFAULT_DETECT_EVERY,
        subject: Annotated[str, typer.Option(help="main, left or right.")] = "main",
        force: Annotated[bool, typer.Option(help="Recompute predictions already written.")] = False,
        progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
        backend: BackendName = "local",
        address: RayAddress = None,
        ray_workers: RayWorkers = None,
        worker_cpus: WorkerCpus = 1.0,
        worker_gpus: WorkerGpus = 0.25,
        models_dir: ModelsDir = None,
        audio_dir: AudioDirs = None,
        fps: Fps = None,
        debug: Debug = False,
    ) -> None:
        """Predict EXPR, VA and AUs for every frame; write challenge files, a table, plots."""
        from mmaffect.cli.app import _backend, _discover
        from mmaffect.errors import MmaffectError
        from mmaffect.extraction import ExtractOptions, parse_modalities
        from mmaffect.faces.tracking import TrackerConfig
        from mmaffect.features.vision import FaceConfig
        from mmaffect.predict.run import PredictOptions, predict

        try:
            if subject not in ("main", "left", "right"):
                raise ValueError(f"--subject must be main, left or right, not {subject!r}")
            opts = PredictOptions(
                checkpoint=checkpoint,
                tasks=tuple(t for t in (task or "").replace(" ", "").split(",") if t) or None,
                edition=edition.lower(),
                modalities=parse_modalities(modalities) if modalities else None,
                templates=tuple(template or ()),
                image_list=image_list,
                fill=fill,
                smooth=smooth,
                frame_count=frame_count,
                table_format=table_format,
                words=words,
                plots=plots,
                overlay=overlay,
                force=force,
                device=device,
                batch_size=batch_size,
                cache=cache,
                backend=_backend(backend, address, ray_workers, worker_cpus, worker_gpus),
                extract=ExtractOptions(
                    models_dir=models_dir,
                    face=FaceConfig(
                        max_side=detect_size,
                        detect_every=detect_every,
                        tracker=TrackerConfig(subject=subject),
                    ),
                    stall_seconds=stall_timeout,
                ),
            )
            report = predict(
                None,
                out_dir,
                opts,
                sources=_discover(inputs, audio_dir, fps),
                console=err,
                progress=progress,
                debug=debug,
            )
        except (MmaffectError, ValueError) as e:
            if debug:
                raise
            from rich.markup import escape  # a message may hold brackets: mmaffect[ray]

            msg = e.one_line() if isinstance(e, MmaffectError) else str(e)
            err.print(f"[red]error:[/] {escape(msg)}", highlight=False)
            raise typer.Exit(2) from None
        raise typer.Exit(report.exit_code)
