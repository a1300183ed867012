"""``mmaffect plot``: timeline PNGs and overlay videos (image sets: contact sheets and annotated
images) from saved predictions."""

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the ``plot`` command to ``app``."""
    from mmaffect.cli.app import Debug, err

    @app.command("plot")
    def plot_cmd(
        preds: Annotated[
            list[Path],
            typer.Argument(help="Prediction .npz files (OUT/predictions of predict) or folders."),
        ],
        out_dir: Annotated[
            Path, typer.Option("--out", "-o", file_okay=False, help="Output folder.")
        ],
        overlay: Annotated[
            bool,
            typer.Option(
                help="Also render <id>_overlay.mp4 (image sets: <set>/<image>.jpg) with the "
                "predictions drawn on."
            ),
        ] = False,
        videos: Annotated[
            Path | None,
            typer.Option(
                "--videos",
                exists=True,
                file_okay=False,
                help="Folder of source videos found by id, or of an image set's images "
                "(default: the path in the .npz).",
            ),
        ] = None,
        debug: Debug = False,
    ) -> None:
        """Draw a timeline PNG per video (image sets: contact sheets), and with --overlay an
        annotated MP4 (image sets: annotated copies of the images)."""
        from rich.table import Table

        from mmaffect.plots import plot_predictions

        report = plot_predictions(
            preds, out_dir, overlay=overlay, videos=videos, console=err, debug=debug
        )
        if report.ok:
            table = Table(title=f"plots in {out_dir}", title_justify="left")
            table.add_column("prediction", overflow="fold")
            table.add_column("written", overflow="fold")
            table.add_column("seconds", justify="right")
            for r in report.ok:
                table.add_row(r.name, r.message, f"{r.seconds:.1f}")
            err.print(table)
        raise typer.Exit(report.exit_code)
