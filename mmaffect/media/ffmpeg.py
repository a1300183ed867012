"""Finding and running the ffmpeg binary.

The system ``ffmpeg`` is used when it is on ``PATH``; otherwise the static build shipped in the
``imageio-ffmpeg`` wheel (a runtime dependency, so a fresh ``pip install`` always has one).
``MMAFFECT_FFMPEG`` names a binary explicitly. Command lines are built with ffmpeg-python.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import subprocess
import threading
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
    # Drop blank lines and `-progress` key=value lines (values may hold spaces: "speed= 110x").
    lines = [
        ln.strip()
        for ln in stderr.splitlines()
        if ln.strip() and not re.fullmatch(r"\w+=.*", ln.strip())
    ]
    # ffmpeg ends with generic lines ("Conversion failed!"); the cause is usually just before.
    generic = ("conversion failed", "error opening output", "nothing was written", "frame=")
    for line in reversed(lines):
        text = line.split("] ", 1)[-1] if line.startswith("[") else line
        if not text.lower().startswith(generic):
            return text
    return lines[-1] if lines else "no error message"


def run(args: list[str], *, media: Path | str) -> str:
    """Run ffmpeg with ``args`` (without the binary; its stdout is discarded), return stderr;
    raise :class:`MediaError`.

    The error names the media file and carries ffmpeg's stderr as detail. Each ``-progress``
    block ffmpeg writes to stderr is a beat of the watched work this runs in.
    """
    from mmaffect.watchdog import beat

    cmd = [ffmpeg_binary(), "-hide_banner", "-nostdin", *args]
    try:
        proc = popen(cmd, stdout=subprocess.DEVNULL)
    except FileNotFoundError as e:  # binary vanished between lookup and use
        ffmpeg_binary.cache_clear()
        raise FFmpegNotFound(f"ffmpeg binary {cmd[0]} cannot be run", hint=FFMPEG_HINT) from e
    lines: list[str] = []
    try:
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace")
            lines.append(line)
            if line.startswith("progress="):
                beat()
        returncode = proc.wait()
    finally:
        if proc.poll() is None:  # interrupted or given up: stop ffmpeg
            proc.kill()
            proc.wait()
        proc.stderr.close()
    stderr = "".join(lines)
    if returncode != 0:
        raise MediaError(
            f"ffmpeg failed on {Path(media).name}: {stderr_reason(stderr)}", detail=stderr
        )
    return stderr


def compile_args(stream) -> list[str]:
    """Arguments of an ffmpeg-python stream graph, without the binary name."""
    return stream.compile(cmd=ffmpeg_binary())[1:]


class ChildProcesses:
    """The ffmpeg processes started for one unit of work (one video), so that a watchdog that
    gives the video up can end them (:meth:`kill`) instead of leaving them blocked on a pipe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: list[subprocess.Popen] = []
        self._killed = False

    def add(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs = [p for p in self._procs if p.poll() is None]
            self._procs.append(proc)
            killed = self._killed
        if killed:  # started after the unit was given up
            proc.kill()

    def kill(self) -> None:
        """Kill and reap every process still running (later ones are killed as they start)."""
        with self._lock:
            self._killed = True
            procs = list(self._procs)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)


def popen(
    args: list[str], children: ChildProcesses | None = None, *, stdout=subprocess.PIPE
) -> subprocess.Popen:
    """Start a command line (:func:`quiet_command`) with stderr (and ``stdout``) piped.

    The process is killed if the watched work that starts it is given up
    (:func:`mmaffect.watchdog.on_abandon`), and by ``children.kill()``.
    """
    from mmaffect.watchdog import on_abandon

    proc = subprocess.Popen(args, stdout=stdout, stderr=subprocess.PIPE)
    on_abandon(proc.kill)
    if children is not None:
        children.add(proc)
    return proc
