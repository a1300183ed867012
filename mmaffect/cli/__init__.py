"""The ``mmaffect`` command line (Typer). Command bodies stay short and call the library."""

from __future__ import annotations

import sys

from mmaffect.cli.app import app


def main() -> None:
    """Console-script entry point."""
    app(prog_name="mmaffect")


__all__ = ["app", "main"]

if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(0)
