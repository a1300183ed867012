"""Reading label files as lines, the number grammar, and errors that name file and line."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np

from mmaffect.errors import AnnotationError, InputError

# What a value field may hold once surrounding whitespace is stripped. Python's int()/float()
# alone would also take "1_000", Unicode digits, "nan" and "inf", none of which belongs in a
# label file.
INT_FIELD = re.compile(r"[+-]?[0-9]+")
FLOAT_FIELD = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")

_SHOWN = 60  # characters of an offending text quoted in a message


def quote(text: str) -> str:
    """``text`` in double quotes for a message, shortened when long."""
    text = text.strip()
    if len(text) > _SHOWN:
        text = text[: _SHOWN - 1] + "…"
    return f'"{text}"'


def error(path: Path, line: int | None, message: str, hint: str | None = None) -> AnnotationError:
    """``<path>, line <n>: <message>`` (or ``<path>: <message>`` without a line)."""
    where = f"{path}, line {line}" if line is not None else f"{path}"
    return AnnotationError(f"{where}: {message}", hint=hint, path=str(path), line=line)


def read_lines(path: Path) -> list[str]:
    """The file's lines without line ends; a BOM and trailing blank lines are dropped.

    ``lines[i]`` is line ``i + 1`` of the file, so messages can quote editor line numbers.
    Lines are split on ``\\n`` only (a ``\\r`` before it is dropped), never on the other
    characters ``str.splitlines`` treats as line breaks, which would shift the frames.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a folder, not a label file") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from e
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise error(path, None, "file is UTF-16 text", hint="save it as UTF-8 or ASCII")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise error(path, line, f"not UTF-8 text (byte 0x{data[e.start]:02x})") from None
    lines = text.split("\n")
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def fast_table(lines: list[str], columns: int, dtype: type) -> np.ndarray | None:
    """Parse comma-separated numeric lines with numpy's C reader, or ``None`` if anything is off.

    ``None`` sends the caller to its line-by-line parser, which finds and names the first bad
    line. Blank lines make the row count differ (numpy skips them), so they fall back too.
    """
    if not lines:
        return np.empty((0, columns), dtype)
    try:
        table = np.loadtxt(
            io.StringIO("\n".join(lines)),
            delimiter=",",
            dtype=dtype,
            comments=None,
            ndmin=2,
        )
    except ValueError:
        return None
    if table.shape != (len(lines), columns):
        return None
    return table
