"""s-Aff-Wild2 multi-task (MTL) split files: one file per split, one row per sampled frame.

Header ``image,valence,arousal,expression,aus``; every row nevertheless has 16 fields,
``<video>/<NNNNN>.jpg,valence,arousal,expression,AU1,…,AU26`` (8-class EXPR, 12 AUs). The ABAW7
files end each row with a comma, which is accepted (one trailing comma per row).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmaffect.annotations._text import FLOAT_FIELD, INT_FIELD, error, quote, read_lines
from mmaffect.annotations.spaces import (
    AU_12,
    EXPR_8,
    MTL_HEADER,
    VA_UNANNOTATED,
    LabelSpace,
    is_mtl_header,
    match_header,
)
from mmaffect.annotations.video_labels import VideoLabels
from mmaffect.errors import InputError
from mmaffect.media.frame_folder import split_subject

#: File names of the MTL splits: ABAW3, then ABAW4 and ABAW7.
MTL_FILE_NAMES: dict[str, tuple[str, ...]] = {
    "train": ("train_set.txt", "training_set_annotations.txt"),
    "validation": ("validation_set.txt", "validation_set_annotations.txt"),
}

MTL_FIELDS = 16
_VA_NAMES = ("valence", "arousal")
_COLUMNS = "image,valence,arousal,expression,AU1,…,AU26"
IMAGE_FIELD = re.compile(r"(?:.*/)?(?P<video>[^/]+)/(?P<number>[0-9]+)\.(?:jpg|jpeg|png)", re.I)
_ROW_DTYPE = np.dtype([("va", "f8", (2,)), ("expr", "i8"), ("au", "i8", (AU_12.size,))])


@dataclass(frozen=True, eq=False)
class MtlLabels:
    """Rows of an MTL split file (or of one video of it, see :meth:`by_video`).

    Attributes
    ----------
    video_ids
        ``(n,)`` str: the folder part of the image name (``_left``/``_right`` kept).
    frames
        ``(n,)`` int64 0-based frame index: ``NNNNN - 1``.
    va, va_mask
        ``(n, 2)`` float32 valence, arousal; ``(n,)`` False where either is -5.
    expr, expr_mask
        ``(n,)`` int64 class index in :data:`EXPR_8`; False where -1.
    au, au_mask
        ``(n, 12)`` int8 0/1 in :data:`AU_12` order; False where -1 (per unit).
    path
        The file read, if any.
    """

    video_ids: np.ndarray
    frames: np.ndarray
    va: np.ndarray
    va_mask: np.ndarray
    expr: np.ndarray
    expr_mask: np.ndarray
    au: np.ndarray
    au_mask: np.ndarray
    path: Path | None = field(default=None)

    expr_space: LabelSpace = field(default=EXPR_8, init=False, repr=False)
    au_space: LabelSpace = field(default=AU_12, init=False, repr=False)

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def __repr__(self) -> str:
        return f"MtlLabels({len(self)} rows, {len(self.videos)} videos, path={self.path})"

    @property
    def frame_numbers(self) -> np.ndarray:
        """The 1-based ``NNNNN`` of each row's organiser crop."""
        return self.frames + 1

    @property
    def videos(self) -> list[str]:
        """Distinct video ids in order of first appearance."""
        return list(dict.fromkeys(self.video_ids.tolist()))

    @property
    def base_ids(self) -> np.ndarray:
        """``(n,)`` video ids without ``_left``/``_right`` (the key of audio and words)."""
        bases = {v: split_subject(v)[0] for v in self.videos}
        return np.array([bases[v] for v in self.video_ids.tolist()], dtype=str)

    def image_names(self) -> list[str]:
        """``<video>/<NNNNN>.jpg`` for each row, as the file names them."""
        return [
            f"{v}/{n:05d}.jpg"
            for v, n in zip(self.video_ids.tolist(), self.frame_numbers, strict=True)
        ]

    def subset(self, rows: np.ndarray | slice) -> MtlLabels:
        """The given rows (index array, boolean mask or slice), in that order."""
        return MtlLabels(
            self.video_ids[rows],
            self.frames[rows],
            self.va[rows],
            self.va_mask[rows],
            self.expr[rows],
            self.expr_mask[rows],
            self.au[rows],
            self.au_mask[rows],
            self.path,
        )

    def by_video(self) -> dict[str, MtlLabels]:
        """Rows grouped by video id, videos in order of first appearance, rows in file order."""
        if len(self) == 0:
            return {}
        order = np.argsort(self.video_ids, kind="stable")
        ids = self.video_ids[order]
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        groups = {
            str(ids[s]): order[s:e] for s, e in zip(starts, [*starts[1:], len(ids)], strict=True)
        }
        return {v: self.subset(groups[v]) for v in self.videos}


def find_mtl_files(folder: str | Path) -> dict[str, Path]:
    """The MTL split files in ``folder`` by their release names.

    ``train_set.txt``/``validation_set.txt`` (ABAW3) and ``training_set_annotations.txt``/
    ``validation_set_annotations.txt`` (ABAW4, ABAW7).

    Returns
    -------
    dict of str to Path
        ``{"train": …, "validation": …}`` with the files found (at least one).

    Raises
    ------
    InputError
        None found, or two files for one split.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    found: dict[str, Path] = {}
    for split, names in MTL_FILE_NAMES.items():
        present = [folder / n for n in names if (folder / n).is_file()]
        if len(present) > 1:
            raise InputError(
                f"{folder}: two {split} MTL files: {present[0].name} and {present[1].name}",
                hint="keep one",
            )
        if present:
            found[split] = present[0]
    if not found:
        names = ", ".join(n for ns in MTL_FILE_NAMES.values() for n in ns)
        raise InputError(f"{folder}: no MTL split file", hint=f"looked for {names}")
    return found


def read_mtl_file(path: str | Path, *, allow_empty: bool = False) -> MtlLabels:
    """Read an s-Aff-Wild2 MTL split file (ABAW3, ABAW4 or ABAW7 naming and layout).

    Parameters
    ----------
    path
        ``train_set.txt``, ``validation_set.txt``, ``training_set_annotations.txt``,
        ``validation_set_annotations.txt`` or any other name with the same content.
    allow_empty
        Accept a header with no rows.

    Returns
    -------
    MtlLabels
        One entry per row, in file order; masks False at the sentinels (VA -5 in either field,
        expression -1, AU -1).

    Raises
    ------
    AnnotationError
        Wrong header, a row without 16 fields, a bad image name, a value out of range or an
        image listed twice; the message names the file and the line.
    """
    path = Path(path)
    lines = read_lines(path)
    if not lines:
        raise error(
            path, None, "file is empty", hint=f'expected the header "{",".join(MTL_HEADER)}"'
        )
    _check_header(path, lines[0])
    rows = lines[1:]
    if not rows and not allow_empty:
        raise error(path, 1, "header only, no rows", hint="pass allow_empty=True to accept this")
    parsed = _parse_fast(rows)
    if parsed is None:
        parsed = _parse_slowly(path, rows)
    videos, numbers, table = parsed
    _check_duplicates(path, videos, numbers)
    va = table["va"].astype(np.float32)
    expr = table["expr"].astype(np.int64)
    au = table["au"].astype(np.int8)
    return MtlLabels(
        video_ids=np.array(videos, dtype=str),
        frames=np.asarray(numbers, dtype=np.int64) - 1,
        va=va,
        va_mask=~np.any(va == VA_UNANNOTATED, axis=1),
        expr=expr,
        expr_mask=expr != -1,
        au=au,
        au_mask=au != -1,
        path=path,
    )


def _check_header(path: Path, line: str) -> None:
    if is_mtl_header(line):
        return
    shown = quote(line.lstrip("\ufeff"))
    space = match_header(line)
    if space is not None:
        raise error(
            path,
            1,
            f"header {shown} is a per-video {space.describe()} header, not the MTL header",
            hint="read it with read_video_labels",
        )
    raise error(path, 1, f'header {shown} is not the MTL header "{",".join(MTL_HEADER)}"')


def _strip_row(text: str) -> str:
    text = text.strip()
    if text.endswith(","):  # ABAW7 rows end with a comma
        text = text[:-1].rstrip()
    return text


def _parse_fast(rows: list[str]) -> tuple[list[str], list[int], np.ndarray] | None:
    """Structure in Python, numbers with numpy's C reader; ``None`` at the first doubt."""
    videos: list[str] = []
    numbers: list[int] = []
    rests: list[str] = []
    for text in rows:
        image, _, rest = _strip_row(text).partition(",")
        m = IMAGE_FIELD.fullmatch(image.strip())
        if m is None or rest.count(",") != MTL_FIELDS - 2:
            return None
        videos.append(m["video"])
        numbers.append(int(m["number"]))
        rests.append(rest)
    if not rows:
        return videos, numbers, np.empty(0, _ROW_DTYPE)
    try:
        table = np.loadtxt(
            io.StringIO("\n".join(rests)), delimiter=",", dtype=_ROW_DTYPE, comments=None, ndmin=1
        )
    except ValueError:
        return None
    if table.shape != (len(rows),) or min(numbers) < 1:
        return None
    va, expr, au = table["va"], table["expr"], table["au"]
    va_ok = ((va >= -1.0) & (va <= 1.0)) | (va == VA_UNANNOTATED)
    expr_ok = (expr >= -1) & (expr < EXPR_8.size)
    au_ok = (au >= -1) & (au <= 1)
    if not (va_ok.all() and expr_ok.all() and au_ok.all()):
        return None
    return videos, numbers, table


def _parse_slowly(path: Path, rows: list[str]) -> tuple[list[str], list[int], np.ndarray]:
    """Row by row: the reference grammar; raises at the first bad row."""
    videos: list[str] = []
    numbers: list[int] = []
    table = np.empty(len(rows), _ROW_DTYPE)
    for offset, text in enumerate(rows):
        line_no = offset + 2
        stripped = _strip_row(text)
        if not stripped:
            raise error(path, line_no, "empty line (each line after the header is one image)")
        fields = [f.strip() for f in stripped.split(",")]
        if len(fields) != MTL_FIELDS:
            raise error(
                path,
                line_no,
                f"expected {MTL_FIELDS} comma-separated fields ({_COLUMNS}), got {len(fields)}",
            )
        m = IMAGE_FIELD.fullmatch(fields[0])
        if m is None:
            raise error(path, line_no, f"expected <video>/<NNNNN>.jpg, got {quote(fields[0])}")
        if int(m["number"]) < 1:
            raise error(path, line_no, f"image {quote(fields[0])}: frame numbers start at 00001")
        videos.append(m["video"])
        numbers.append(int(m["number"]))
        table["va"][offset] = [
            _va(path, line_no, n, f) for n, f in zip(_VA_NAMES, fields[1:3], strict=True)
        ]
        table["expr"][offset] = _expr(path, line_no, fields[3])
        table["au"][offset] = [
            _au(path, line_no, n, f) for n, f in zip(AU_12.names, fields[4:], strict=True)
        ]
    return videos, numbers, table


def _va(path: Path, line_no: int, name: str, text: str) -> float:
    if FLOAT_FIELD.fullmatch(text):
        v = float(text)
        if -1.0 <= v <= 1.0 or v == VA_UNANNOTATED:
            return v
    raise error(path, line_no, f"expected a number in [-1, 1] or -5 for {name}, got {quote(text)}")


def _expr(path: Path, line_no: int, text: str) -> int:
    if INT_FIELD.fullmatch(text) and -1 <= int(text) < EXPR_8.size:
        return int(text)
    raise error(
        path,
        line_no,
        f"expected an integer in 0..{EXPR_8.size - 1} or -1 for expression, got {quote(text)}",
    )


def _au(path: Path, line_no: int, name: str, text: str) -> int:
    if INT_FIELD.fullmatch(text) and int(text) in (0, 1, -1):
        return int(text)
    raise error(path, line_no, f"expected 0, 1 or -1 for {name}, got {quote(text)}")


def _check_duplicates(path: Path, videos: list[str], numbers: list[int]) -> None:
    seen: dict[tuple[str, int], int] = {}
    for offset, key in enumerate(zip(videos, numbers, strict=True)):
        earlier = seen.setdefault(key, offset)
        if earlier != offset:
            raise error(
                path,
                offset + 2,
                f"image {key[0]}/{key[1]:05d}.jpg repeats line {earlier + 2}",
            )


def mtl_from_tracks(tracks: dict[str, dict[str, VideoLabels]]) -> MtlLabels:
    """Join per-video uni-task labels of one split into MTL rows (the frames any track labels).

    A frame gets a row when at least one track annotates it; the tracks that do not are
    masked (sentinels), exactly as in the organisers' MTL files. 7-class EXPR keeps its
    indices (``Other`` is never used). AU files must hold the 12 AUs of ABAW2+ (ABAW1's 8 AUs
    include AU20, which MTL rows have no column for).

    Parameters
    ----------
    tracks
        ``{"EXPR": {video: VideoLabels}, "AU": {...}, "VA": {...}}``; any track may be absent.

    Returns
    -------
    MtlLabels
        Rows ordered by video id, then frame.
    """
    videos = sorted({v for labels in tracks.values() for v in labels})
    parts: list[MtlLabels] = []
    au_names = [str(n) for n in AU_12.names]
    for vid in videos:
        per = {t: labels[vid] for t, labels in tracks.items() if vid in labels}
        n = max(lab.num_frames for lab in per.values())
        va = np.full((n, 2), VA_UNANNOTATED, dtype=np.float32)
        va_mask = np.zeros(n, dtype=bool)
        expr = np.full(n, -1, dtype=np.int64)
        au = np.full((n, AU_12.size), -1, dtype=np.int8)
        if (lab := per.get("VA")) is not None:
            k = lab.num_frames
            va[:k], va_mask[:k] = lab.values, lab.mask
            va[:k][~lab.mask] = VA_UNANNOTATED
        if (lab := per.get("EXPR")) is not None:
            k = lab.num_frames
            expr[:k] = np.where(lab.mask, lab.values, -1)
        if (lab := per.get("AU")) is not None:
            k = lab.num_frames
            if lab.space != AU_12:
                raise InputError(
                    f"{lab.path or vid}: {lab.space.describe()} cannot join MTL rows, which hold "
                    f"the 12 AUs of ABAW2+ ({', '.join(au_names)})",
                    hint="train the AU track on its own (--task au --edition abaw1)",
                )
            au[:k] = np.where(lab.mask, lab.values, -1)
        au_mask = au != -1
        keep = va_mask | (expr != -1) | au_mask.any(axis=1)
        rows = np.flatnonzero(keep)
        parts.append(
            MtlLabels(
                video_ids=np.full(rows.size, vid, dtype=object).astype(str),
                frames=rows.astype(np.int64),
                va=va[rows],
                va_mask=va_mask[rows],
                expr=expr[rows],
                expr_mask=expr[rows] != -1,
                au=au[rows],
                au_mask=au_mask[rows],
            )
        )
    if not parts:
        raise InputError("no uni-task labels to join into MTL rows")
    return MtlLabels(
        video_ids=np.concatenate([p.video_ids for p in parts]).astype(str),
        frames=np.concatenate([p.frames for p in parts]),
        va=np.concatenate([p.va for p in parts]),
        va_mask=np.concatenate([p.va_mask for p in parts]),
        expr=np.concatenate([p.expr for p in parts]),
        expr_mask=np.concatenate([p.expr_mask for p in parts]),
        au=np.concatenate([p.au for p in parts]),
        au_mask=np.concatenate([p.au_mask for p in parts]),
    )
