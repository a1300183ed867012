"""Finding and running the ffmpeg binary.

The system ``ffmpeg`` is used when it is on ``PATH``; otherwise the static build shipped in the
``imageio-ffmpeg`` wheel (a runtime dependency, so a fresh ``pip install`` always has one).
``MMAFFECT_FFMPEG`` names a binary explicitly. Command lines are built with ffmpeg-python.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

from mmaffect.errors import FFmpegNotFound, MediaError

FFMPEG_HINT = (
    "install ffmpeg (apt-get install ffmpeg, conda install ffmpeg) or "
    "`pip install imageio-ffmpeg`, or set MMAFFECT_FFMPEG to the binary"
)


@functools.lru_cache(maxsize=1)
def ffmpeg_binary() -> str:
    """Path of the ffmpeg binary to use; raises :class:`FFmpegNotFound` with a fix-it hint."""
    explicit = os.environ.get("MMAFFECT_FFMPEG")
    if explicit:
        if shutil.which(explicit) or Path(explicit).is_file():
            return explicit
        raise FFmpegNotFound(f"MMAFFECT_FFMPEG={explicit} is not an executable", hint=FFMPEG_HINT)
    system = shutil.which("ffmpeg")
    if system:
        return system
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as e:
        raise FFmpegNotFound("no ffmpeg binary found", hint=FFMPEG_HINT) from e


def quiet_command(*args: str) -> list[str]:
    """``[ffmpeg, -hide_banner, -nostdin, -loglevel, error, *args]``: a pipe's command line."""
    return [ffmpeg_binary(), "-hide_banner", "-nostdin", "-loglevel", "error", *args]


def stderr_reason(stderr: str) -> str:
    """The most informative line of ffmpeg's stderr, for one-line error messages."""
    # Drop blank lines and `-progress` key=value lines.
    lines = [
        ln.strip()
        for ln in stderr.splitlines()
        if ln.strip() and not re.fullmatch(r"\w+=\S*", ln.strip())
    ]
    # ffmpeg ends with generic lines ("Conversion failed!"); the cause is usually just before.
    generic = ("conversion failed", "error opening output", "nothing was written", "frame=")
    for line in reversed(lines):
        text = line.split("] ", 1)[-1] if line.startswith("[") else line
        if not text.lower().startswith(generic):
            return text
    return lines[-1] if lines else "no error message"


def run(args: list[str], *, media: Path | str, timeout: float | None = None) -> str:
    """Run ffmpeg with ``args`` (without the binary), return stderr; raise :class:`MediaError`.

    The error names the media file and carries ffmpeg's stderr as detail.
    """
    cmd = [ffmpeg_binary(), "-hide_banner", "-nostdin", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as e:  # binary vanished between lookup and use
        ffmpeg_binary.cache_clear()
        raise FFmpegNotFound(f"ffmpeg binary {cmd[0]} cannot be run", hint=FFMPEG_HINT) from e
    if proc.returncode != 0:
        raise MediaError(
            f"ffmpeg failed on {Path(media).name}: {stderr_reason(proc.stderr)}",
            detail=proc.stderr,
        )
    return proc.stderr


def compile_args(stream) -> list[str]:
    """Arguments of an ffmpeg-python stream graph, without the binary name."""
    return stream.compile(cmd=ffmpeg_binary())[1:]
