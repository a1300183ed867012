"""``mmaffect validate`` and ``mmaffect evaluate``: check and score challenge submissions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

Track = Annotated[str, typer.Option("--track", help="EXPR, AU, VA or MTL.")]
Edition = Annotated[str, typer.Option("--edition", help="abaw1 … abaw8 (or 1 … 8).")]


def register(app: typer.Typer) -> None:
    """Add the ``validate`` and ``evaluate`` commands to ``app``."""
    from mmaffect.cli.app import err, out

    @app.command("validate")
    def validate_cmd(
        submission: Annotated[
            Path, typer.Argument(exists=True, help="Submission folder (ABAW1-3) or file.")
        ],
        track: Track,
        edition: Edition,
        template: Annotated[
            Path | None,
            typer.Option(
                "--template",
                exists=True,
                dir_okay=False,
                help="Organisers' template (ABAW5/6/8) or MTL image list: rows must match it.",
            ),
        ] = None,
        videos: Annotated[
            Path | None,
            typer.Option(
                "--videos",
                exists=True,
                file_okay=False,
                help="Folder of the test videos: each needs its lines (frame-count rule).",
            ),
        ] = None,
        frame_count: Annotated[
            str,
            typer.Option("--frame-count", help="Lines per video: decoded, opencv+1 or either."),
        ] = "either",
    ) -> None:
        """Check a submission's header, lines, values, rows and videos; exit 1 on any problem."""
        from mmaffect.errors import MmaffectError
        from mmaffect.submission import validate_submission

        try:
            problems = validate_submission(
                submission,
                track,
                edition,
                template=template,
                videos=videos,
                frame_count=frame_count,
            )
        except MmaffectError as e:
            err.print(f"[red]error:[/] {e.one_line()}", highlight=False)
            raise typer.Exit(2) from None
        for problem in problems:
            typer.echo(str(problem))
        if problems:
            typer.echo(f"{len(problems)} problem lines in {submission}")
            raise typer.Exit(1)
        typer.echo(f"ok: {submission} is a valid {track.upper()} submission for {edition}")

    @app.command("evaluate")
    def evaluate_cmd(
        pred: Annotated[
            Path, typer.Option("--pred", exists=True, help="Submission folder or file.")
        ],
        gt: Annotated[
            Path,
            typer.Option("--gt", exists=True, help="Label folder (per-video) or MTL label file."),
        ],
        track: Track,
        edition: Edition,
        json_path: Annotated[
            Path | None, typer.Option("--json", dir_okay=False, help="Also write the report.")
        ] = None,
    ) -> None:
        """Score a submission against ground truth with the edition's official formula."""
        from mmaffect.atomic import atomic_write_text
        from mmaffect.errors import InvalidSubmission, MmaffectError
        from mmaffect.submission import evaluate

        try:
            report = evaluate(pred, gt, track, edition)
        except InvalidSubmission as e:  # the prediction's fault, as in validate: exit 1
            for problem in e.problems:
                typer.echo(str(problem))
            err.print(f"[red]error:[/] {e.one_line()}", highlight=False)
            raise typer.Exit(1) from None
        except MmaffectError as e:
            err.print(f"[red]error:[/] {e.one_line()}", highlight=False)
            raise typer.Exit(2) from None
        out.print(_report_table(report))
        if json_path is not None:
            atomic_write_text(json_path, json.dumps(report.to_dict(), indent=2) + "\n")
            out.print(f"report written to {json_path}", highlight=False)


def _report_table(report):
    from rich.table import Table

    table = Table(title=f"{report.edition.upper()} {report.track}", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("[bold]official score[/]", f"[bold]{report.score:.4f}[/]")
    table.add_row("formula", report.formula)
    for name, value in report.parts.items():
        table.add_row(f"P_{name}", f"{value:.4f}")
    if report.f1_macro is not None:
        table.add_row("EXPR macro F1", f"{report.f1_macro:.4f}")
        table.add_row("EXPR accuracy", f"{report.expr_accuracy:.4f}")
    for name, value in report.per_class_f1.items():
        table.add_row(f"  F1 {name}", f"{value:.4f}")
    if report.au_f1_mean is not None:
        table.add_row("AU mean F1", f"{report.au_f1_mean:.4f}")
        table.add_row("AU accuracy", f"{report.au_accuracy:.4f}")
    for name, value in report.per_au_f1.items():
        table.add_row(f"  F1 {name}", f"{value:.4f}")
    if report.ccc_valence is not None:
        table.add_row("CCC valence", f"{report.ccc_valence:.4f}")
        table.add_row("CCC arousal", f"{report.ccc_arousal:.4f}")
    table.add_row(
        "frames",
        f"{report.n_scored_frames} scored of {report.n_gt_frames} ({report.n_videos} videos); "
        f"{report.n_ignored_pred_frames} predicted frames ignored",
    )
    return table
