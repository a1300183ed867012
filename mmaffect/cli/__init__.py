"""The ``mmaffect`` command line (Typer). Command bodies stay short and call the library."""

from __future__ import annotations

import os
import sys

from mmaffect.cli.app import app


def main() -> None:
    """Console-script entry point."""
    # PyTorch's OpenMP threads spin while waiting; beside the audio-side threads, MediaPipe and
    # ffmpeg on a small machine that steals cores from the work (extract measured 7.3 -> 9.0
    # frames/s on 2 cores). Must be set before torch loads; a value the user set wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    app(prog_name="mmaffect")


__all__ = ["app", "main"]

if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(0)
