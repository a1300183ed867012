"""Atomic writes: write to a temporary name beside the target, then rename.

A crash, a full disk or Ctrl-C leaves either the old file or the new one, never half of one.
Temporary names are ``.<target name>.<pid>.<random>.tmp``: hidden, easy to recognise, and
tied to the process writing them, so that a later run can tell an abandoned one (its process is
gone) from one being written right now.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    # Read it without os.umask(), which would change it process-wide for a moment.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary file path; on success it replaces ``target`` in one rename."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temporary folder; on success it becomes ``target`` (an old one is replaced)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(
        tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent)
    )
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old.tmp")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_dead_temps(folder: str | Path) -> int:
    """Remove temporaries that interrupted runs left in ``folder`` (not recursive), and only
    those: a temporary is removed when the process named in it (``.<name>.<pid>.<random>.tmp``)
    no longer exists, so other threads and processes writing there keep theirs. Returns how many
    were removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for p in folder.glob(".*.tmp"):
        parts = p.name.split(".")
        if len(parts) < 4 or not parts[-3].isdigit() or _pid_alive(int(parts[-3])):
            continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed += 1
    return removed


def writable_dir(path: str | Path, option: str) -> Path:
    """``path`` as a folder this process can write into (created if needed).

    Raises
    ------
    InputError
        It cannot be created or written (``option`` names the flag to change).
    """
    from mmaffect.errors import InputError

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=f".write-check.{os.getpid()}."):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise InputError(
            f"cannot write to {path}: {reason}", hint=f"choose a writable folder with {option}"
        ) from None
    return path
