"""Challenge submission files and the plain per-frame table, written from :class:`VideoPrediction`.

One writer class per format (``docs/submission.md`` shows each file's first lines):

* :class:`PerVideoWriter` — ABAW1, ABAW2, ABAW3 uni-task tracks: ``<out>/<video_id>.txt`` each.
* :class:`TemplateWriter` — ABAW5, ABAW6, ABAW8 uni-task tracks: one file built row by row from
  the organisers' template.
* :class:`MtlWriter` — ABAW3, ABAW4, ABAW7 multi-task: one file for the images of the organisers'
  image list.
* :class:`TableWriter` — not a challenge format: every head of the prediction, frame by frame,
  as CSV (or Parquet with pyarrow); :func:`read_table` reads it back.

Label mapping rules (the same in every challenge writer):

* EXPR is the argmax over the classes the edition scores, picked by class name: an 8-class
  prediction written for ABAW1/2 (7 classes) takes the argmax over the 7 classes without
  ``Other``; a 7-class prediction written for 8 classes never predicts ``Other``.
* AU columns are picked by AU name and thresholded at :data:`AU_THRESHOLD` (0/1 ints); an AU the
  edition needs but the prediction lacks is an :class:`InputError` naming it.
* VA is clipped to [-1, 1] and written as the shortest decimal (``%.8g``, ``%.9g`` where needed)
  that reads back as the same float32. A NaN prediction is refused.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmaffect.annotations import AU_12, EXPR_8
from mmaffect.annotations._text import error, fast_table, quote, read_lines
from mmaffect.annotations.spaces import (
    MTL_HEADER,
    LabelSpace,
    header_fields,
    label_space_for,
    match_header,
    parse_track,
)
from mmaffect.annotations.video_labels import VideoLabels, write_video_labels
from mmaffect.atomic import atomic_path, atomic_write_text
from mmaffect.errors import AnnotationError, InputError
from mmaffect.predict.result import AU_THRESHOLD, VideoPrediction

__all__ = [
    "PER_VIDEO_EDITIONS",
    "MTL_EDITIONS",
    "TEMPLATE_EDITIONS",
    "TABLE_FORMATS",
    "WRITERS",
    "ImageRows",
    "MtlWriter",
    "PerVideoWriter",
    "TableWriter",
    "TemplateSubmission",
    "TemplateWriter",
    "au_values",
    "edition_number",
    "expr_values",
    "format_floats",
    "get_writer",
    "read_image_rows",
    "read_table",
    "read_template_submission",
    "template_track",
    "va_values",
    "writer_for",
]

PER_VIDEO_EDITIONS = (1, 2, 3)
TEMPLATE_EDITIONS = (5, 6, 8)
MTL_EDITIONS = (3, 4, 7)
TABLE_FORMATS = ("csv", "parquet")
TEMPLATE_IMAGE_COLUMN = "image_location"
_SHOWN_VIDEOS = 5  # videos named in a "missing" message before "…"
_IMAGE_TAIL = re.compile(r"([^/\n]*)/([0-9]+)\.(?:jpg|jpeg|png)$", re.M | re.I)
_IMAGE_FULL = re.compile(r"(?:.*/)?([^/\n]+)/([0-9]+)\.(?:jpg|jpeg|png)", re.I)


# ------------------------------------------------------------------------------ editions


def edition_number(edition: int | str) -> int:
    """``3``, ``"3"``, ``"abaw3"``, ``"ABAW-3"`` → 3; anything else raises :class:`InputError`."""
    text = str(edition).strip().lower().replace("-", "").replace("_", "")
    text = text.removeprefix("abaw")
    if text.isdigit() and 1 <= int(text) <= 8:
        return int(text)
    raise InputError(f"unknown ABAW edition {edition!r}", hint="choose among abaw1 … abaw8")


def _check_track(track: str, edition: int) -> str:
    from mmaffect.metrics import track_spec

    name = str(track).strip().upper()
    track_spec(name, f"abaw{edition}")  # raises for a track the edition did not run
    if name not in ("VA", "EXPR", "AU", "MTL"):
        raise InputError(f"mmaffect writes no {name} submission (VA, EXPR, AU and MTL only)")
    return name


# ------------------------------------------------------------------------------ label mapping


def expr_values(pred: VideoPrediction, space: LabelSpace) -> np.ndarray:
    """``(n,)`` int64 class index in ``space``: argmax over the classes both sides name."""
    if pred.expr_probs is None:
        raise InputError(f"{pred.video_id}: the prediction has no expression head")
    cols = [j for j, name in enumerate(pred.expr_names) if name in space.names]
    if not cols:
        raise InputError(
            f"{pred.video_id}: no expression class of the prediction ({', '.join(pred.expr_names)})"
            f" is one of {space.header}"
        )
    to_space = np.array([space.names.index(pred.expr_names[j]) for j in cols], dtype=np.int64)
    probs = np.asarray(pred.expr_probs)[:, cols]
    if np.isnan(probs).any():
        raise InputError(f"{pred.video_id}: expression probabilities contain NaN")
    return to_space[probs.argmax(axis=1)] if len(pred) else np.empty(0, np.int64)


def au_values(pred: VideoPrediction, space: LabelSpace) -> np.ndarray:
    """``(n, K)`` int64 0/1 for the AUs of ``space``, chosen by name."""
    if pred.au_probs is None:
        raise InputError(f"{pred.video_id}: the prediction has no action-unit head")
    missing = [n for n in space.names if n not in pred.au_names]
    if missing:
        raise InputError(
            f"{pred.video_id}: the prediction lacks {', '.join(missing)}, needed by "
            f"{space.describe()}",
            hint=f"the prediction has {', '.join(pred.au_names)}",
        )
    cols = [pred.au_names.index(n) for n in space.names]
    probs = np.asarray(pred.au_probs)[:, cols]
    if np.isnan(probs).any():
        raise InputError(f"{pred.video_id}: action-unit probabilities contain NaN")
    return (probs >= AU_THRESHOLD).astype(np.int64)


def va_values(pred: VideoPrediction) -> np.ndarray:
    """``(n, 2)`` float32 valence, arousal clipped to [-1, 1]."""
    if pred.va is None:
        raise InputError(f"{pred.video_id}: the prediction has no valence-arousal head")
    va = np.asarray(pred.va, dtype=np.float32)
    if np.isnan(va).any():
        raise InputError(f"{pred.video_id}: valence/arousal contain NaN")
    return np.clip(va, -1.0, 1.0)


def _track_values(pred: VideoPrediction, space: LabelSpace) -> np.ndarray:
    if space.track == "EXPR":
        return expr_values(pred, space)
    if space.track == "AU":
        return au_values(pred, space)
    return va_values(pred)


def format_floats(values: np.ndarray) -> list[str]:
    """Shortest-ish decimal text of float32 values that reads back as the same float32.

    ``%.8g`` first (it already drops trailing zeros: 0.1 → ``0.1``), ``%.9g`` for the few that
    need it (9 significant digits always round-trip a float32). NaN gives ``""``.
    """
    x = np.asarray(values, dtype=np.float32).reshape(-1)
    as_list = x.tolist()
    texts = [format(v, ".8g") for v in as_list]
    back = np.array(texts, dtype=np.float32) if texts else x
    for i in np.flatnonzero((back != x) & ~np.isnan(x)).tolist():
        texts[i] = format(as_list[i], ".9g")
    for i in np.flatnonzero(np.isnan(x)).tolist():
        texts[i] = ""
    return texts


def _value_texts(space: LabelSpace, values: np.ndarray) -> list[str]:
    """The value part of each row (``"3"``, ``"0,1,…"``, ``"0.5,-0.25"``)."""
    if space.track == "EXPR":
        names = [str(i) for i in range(space.size)]
        return [names[i] for i in values.tolist()]
    if space.track == "AU":
        # At most 2**12 distinct rows: format each distinct row once.
        codes = values.astype(np.int64) @ (1 << np.arange(values.shape[1], dtype=np.int64))
        distinct, inverse = np.unique(codes, return_inverse=True)
        texts = [
            ",".join("1" if (int(c) >> j) & 1 else "0" for j in range(values.shape[1]))
            for c in distinct
        ]
        return [texts[i] for i in inverse.reshape(-1).tolist()]
    flat = format_floats(values)
    return [a + "," + b for a, b in zip(flat[0::2], flat[1::2], strict=True)]


# ------------------------------------------------------------------------------ image rows


@dataclass(frozen=True, eq=False)
class ImageRows:
    """The rows of a file keyed by organiser image names (template, image list, submission).

    Attributes
    ----------
    path
        The file read.
    header
        The header line, or None when the first line already is a row.
    images
        ``<video>/<NNNNN>.jpg`` of each row as the file writes it (no value, no trailing comma).
    videos
        Distinct video ids in order of first appearance.
    video_index
        ``(n,)`` int64 position of each row's video in ``videos``.
    frames
        ``(n,)`` int64 0-based frame (``NNNNN - 1``).
    rests
        What follows the image name on each row (values), without the leading comma.
    first_line
        1-based file line of ``images[0]``.
    """

    path: Path
    header: str | None
    images: list[str]
    videos: list[str]
    video_index: np.ndarray
    frames: np.ndarray
    rests: list[str]
    first_line: int

    def __len__(self) -> int:
        return len(self.images)

    def video_ids(self) -> np.ndarray:
        """``(n,)`` str video id of each row."""
        return np.array(self.videos, dtype=str)[self.video_index] if self.videos else np.array([])

    def rows_per_video(self) -> dict[str, int]:
        counts = np.bincount(self.video_index, minlength=len(self.videos))
        return dict(zip(self.videos, counts.tolist(), strict=True))


def _is_header(line: str) -> bool:
    first = line.partition(",")[0].strip().lstrip("\ufeff")
    return "/" not in first


def read_image_rows(path: str | Path, *, trailing_comma: bool = True) -> ImageRows:
    """Read a file whose rows start with an organiser image name, fast (no per-row objects).

    A first line that is no image name is taken as the header. Rows may carry values after the
    image name (kept in ``rests``) and, with ``trailing_comma``, one trailing comma (dropped).

    Raises
    ------
    AnnotationError
        A row whose first field is not ``<video>/<NNNNN>.jpg`` (the message names its line).
    """
    path = Path(path)
    lines = read_lines(path)
    header = None
    first_line = 1
    if lines and _is_header(lines[0]):
        header, lines, first_line = lines[0], lines[1:], 2
    if trailing_comma:
        lines = [ln[:-1] if ln.endswith(",") else ln for ln in (s.rstrip() for s in lines)]
    heads, rests = [], []
    for ln in lines:
        head, _, rest = ln.partition(",")
        heads.append(head.strip())
        rests.append(rest)
    found = _IMAGE_TAIL.findall("\n".join(heads))
    if len(found) != len(heads):
        _raise_bad_image(path, heads, first_line)
    videos_col = [v for v, _ in found]
    order = {v: i for i, v in enumerate(dict.fromkeys(videos_col))}
    if "" in order:
        _raise_bad_image(path, heads, first_line)
    video_index = np.fromiter(map(order.__getitem__, videos_col), np.int64, len(videos_col))
    frames = np.fromiter((int(n) for _, n in found), np.int64, len(found)) - 1
    if frames.size and frames.min() < 0:
        bad = int(np.argmax(frames < 0))
        raise error(path, first_line + bad, f"image {quote(heads[bad])}: frames start at 00001")
    return ImageRows(path, header, heads, list(order), video_index, frames, rests, first_line)


def _raise_bad_image(path: Path, heads: list[str], first_line: int) -> None:
    for i, head in enumerate(heads):
        if _IMAGE_FULL.fullmatch(head) is None:
            raise error(
                path, first_line + i, f"expected <video>/<NNNNN>.jpg first, got {quote(head)}"
            )
    raise error(path, None, "unreadable image names")  # pragma: no cover - defensive


def template_track(path: str | Path) -> str:
    """The track (``"VA"``, ``"EXPR"``, ``"AU"``) of an organiser template, from its header.

    The header is ``image_location,<track header>``; a template whose header names no track
    is recognised from its file name (``…EXPR…``, ``…VA…``, ``…AU…``).
    """
    path = Path(path)
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        first = f.readline()
    fields = header_fields(first)
    if fields and fields[-1] == "":
        fields = fields[:-1]
    if fields and fields[0].lower() == TEMPLATE_IMAGE_COLUMN:
        space = match_header(",".join(fields[1:]))
        if space is not None:
            return space.track
    stem = path.stem.upper()
    found = [t for t in ("EXPR", "AU", "VA") if re.search(rf"(^|[^A-Z]){t}([^A-Z]|$)", stem)]
    if len(found) == 1:
        return found[0]
    raise InputError(
        f"{path}: cannot tell the track of this template (header {quote(first)})",
        hint=f"its header should be {TEMPLATE_IMAGE_COLUMN},<track header>",
    )


def _gather(
    preds: Mapping[str, VideoPrediction],
    rows: ImageRows,
    per_video_values,
    what: str,
) -> tuple[np.ndarray, dict[str, int]]:
    """Values at every row (held at the last frame past a prediction's end) and held counts."""
    missing = [v for v in rows.videos if v not in preds]
    if missing:
        shown = ", ".join(missing[:_SHOWN_VIDEOS]) + (", …" if len(missing) > _SHOWN_VIDEOS else "")
        raise InputError(
            f"{rows.path}: {len(missing)} of the {len(rows.videos)} videos the {what} lists have "
            f"no prediction: {shown}"
        )
    parts, lengths = [], []
    for vid in rows.videos:
        values = per_video_values(preds[vid])
        if len(values) == 0:
            raise InputError(f"{vid}: the prediction has no frame")
        parts.append(values)
        lengths.append(len(values))
    lengths_a = np.array(lengths, dtype=np.int64)
    offsets = np.r_[0, np.cumsum(lengths_a)[:-1]]
    limit = lengths_a[rows.video_index]
    beyond = rows.frames >= limit
    index = offsets[rows.video_index] + np.minimum(rows.frames, limit - 1)
    held_counts = np.bincount(rows.video_index[beyond], minlength=len(rows.videos))
    held = {v: int(c) for v, c in zip(rows.videos, held_counts.tolist(), strict=True) if c}
    return np.concatenate(parts)[index], held


# ------------------------------------------------------------------------------ writers


class PerVideoWriter:
    """ABAW1-3 uni-task submissions: ``<out>/<video_id>.txt``, the label files' own layout.

    The organisers scored these exactly like their label files, so each file carries the
    edition's label header and one line per frame of the video, frames without a face included.
    The caller applies the frame-count rule first; this writes ``len(pred)`` lines.
    """

    name = "per-video"
    per_video = True

    def __init__(self, track: str, edition: int | str):
        self.edition = edition_number(edition)
        self.track = _check_track(track, self.edition)
        if self.edition not in PER_VIDEO_EDITIONS or self.track == "MTL":
            raise InputError(
                f"ABAW{self.edition} {self.track} submissions are not per-video files",
                hint="per-video files are ABAW1-3 VA, EXPR and AU",
            )
        self.space = label_space_for(self.track, self.edition)

    def labels(self, pred: VideoPrediction) -> VideoLabels:
        """The prediction as labels of this edition's layout (the mapping rules applied)."""
        return VideoLabels.from_values(pred.video_id, self.space, _track_values(pred, self.space))

    def write_video(self, pred: VideoPrediction, out_dir: str | Path) -> Path:
        """Write ``<out_dir>/<video_id>.txt`` atomically; returns its path."""
        if len(pred) == 0:
            raise InputError(f"{pred.video_id}: no frame to write")
        return write_video_labels(Path(out_dir) / f"{pred.video_id}.txt", self.labels(pred))

    def write_all(self, preds: Mapping[str, VideoPrediction], out_dir: str | Path) -> Path:
        """Every video, one file each; returns the folder."""
        for pred in preds.values():
            self.write_video(pred, out_dir)
        return Path(out_dir)


class TemplateWriter:
    """ABAW5/6/8 uni-task submissions: ONE file whose rows are exactly the template's rows.

    The organisers published a template listing every image they score (about a million rows),
    so the file is driven by it: same rows, same order, header ``image_location,<track
    header>``, each row ``<video>/<NNNNN>.jpg,<prediction>``. A row past the end of a video's
    prediction holds its last prediction (counted in :attr:`held_rows`); a template video with
    no prediction is an error.
    """

    name = "template"
    per_video = False

    def __init__(self, template: str | Path, track: str | None = None, edition: int | str = 8):
        self.template = Path(template)
        self.edition = edition_number(edition)
        found = template_track(self.template)
        if track is not None and parse_track(track) != found:
            raise InputError(f"{self.template} is a {found} template, not a {track.upper()} one")
        self.track = _check_track(found, self.edition)
        if self.edition not in TEMPLATE_EDITIONS:
            raise InputError(
                f"ABAW{self.edition} submissions are not built from a template",
                hint="templates are ABAW5, ABAW6 and ABAW8",
            )
        self.space = label_space_for(self.track, self.edition)
        self.held_rows: dict[str, int] = {}

    @property
    def header(self) -> str:
        return f"{TEMPLATE_IMAGE_COLUMN},{self.space.header}"

    def write_all(self, preds: Mapping[str, VideoPrediction], path: str | Path) -> Path:
        """Write the submission file for ``preds`` (keyed by video id) atomically."""
        rows = read_image_rows(self.template)
        values, self.held_rows = _gather(
            preds, rows, lambda p: _track_values(p, self.space), "template"
        )
        body = _value_texts(self.space, values)
        _write_rows(path, self.header, rows.images, body)
        return Path(path)


class MtlWriter:
    """ABAW3/4/7 multi-task submissions: ONE file for the images of the organisers' list.

    Header ``image,valence,arousal,expression,aus`` (the MTL label files' own), then 16 fields per
    row: image, valence, arousal, expression (8 classes), the 12 AUs. Only the listed images get
    a row, in the list's order; a listed frame past a prediction's end holds its last prediction
    (counted in :attr:`held_rows`).
    """

    name = "mtl"
    per_video = False

    def __init__(self, image_list: str | Path, edition: int | str = 7):
        self.image_list = Path(image_list)
        self.edition = edition_number(edition)
        _check_track("MTL", self.edition)
        self.held_rows: dict[str, int] = {}

    header = ",".join(MTL_HEADER)

    @staticmethod
    def row_values(pred: VideoPrediction) -> np.ndarray:
        """``(n, 15)`` float64: valence, arousal, expression, 12 AUs."""
        return np.column_stack(
            [va_values(pred), expr_values(pred, EXPR_8), au_values(pred, AU_12)]
        ).astype(np.float64)

    def write_all(self, preds: Mapping[str, VideoPrediction], path: str | Path) -> Path:
        rows = read_image_rows(self.image_list)
        values, self.held_rows = _gather(preds, rows, self.row_values, "image list")
        va = format_floats(values[:, :2].astype(np.float32))
        labels = _value_texts(AU_12, values[:, 3:].astype(np.int64))
        exprs = [str(int(e)) for e in values[:, 2].tolist()]
        body = [
            f"{v},{a},{e},{u}" for v, a, e, u in zip(va[0::2], va[1::2], exprs, labels, strict=True)
        ]
        _write_rows(path, self.header, rows.images, body)
        return Path(path)


def _write_rows(path: str | Path, header: str, images: list[str], body: list[str]) -> None:
    text = "\n".join([header, *(i + "," + b for i, b in zip(images, body, strict=True))]) + "\n"
    atomic_write_text(path, text)


# ------------------------------------------------------------------------------ reading


@dataclass(frozen=True, eq=False)
class TemplateSubmission:
    """A template-format (ABAW5/6/8) file read back: one entry per row.

    ``values`` is EXPR ``(n,)`` int64, AU ``(n, K)`` int64, VA ``(n, 2)`` float32.
    """

    rows: ImageRows
    space: LabelSpace
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    def by_video(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{video: (frames, values)}`` in row order."""
        out = {}
        order = np.argsort(self.rows.video_index, kind="stable")
        bounds = np.searchsorted(self.rows.video_index[order], np.arange(len(self.rows.videos) + 1))
        for i, vid in enumerate(self.rows.videos):
            sel = order[bounds[i] : bounds[i + 1]]
            out[vid] = (self.rows.frames[sel], self.values[sel])
        return out


def _template_header_space(path: Path, header: str | None) -> LabelSpace:
    fields = header_fields(header or "")
    if fields and fields[0] == TEMPLATE_IMAGE_COLUMN:
        space = match_header(",".join(fields[1:]))
        if space is not None:
            return space
    raise error(
        path,
        1,
        f"header {quote(header or '')} is not {TEMPLATE_IMAGE_COLUMN},<track header>",
    )


def read_template_submission(path: str | Path) -> TemplateSubmission:
    """Read a file written by :class:`TemplateWriter` (or any ABAW5/6/8 submission).

    Raises
    ------
    AnnotationError
        Wrong header, a row with the wrong number of values, or a value out of range (use
        :func:`~mmaffect.submission.validate_submission` to list every problem).
    """
    path = Path(path)
    rows = read_image_rows(path, trailing_comma=False)
    space = _template_header_space(path, rows.header)
    dtype = np.float64 if space.track == "VA" else np.int64
    table = fast_table(rows.rests, space.fields_per_line, dtype)
    if table is None:
        raise AnnotationError(
            f"{path}: rows are not {space.fields_per_line} numbers after the image name",
            hint="run mmaffect validate on it for the lines at fault",
        )
    if space.track == "EXPR":
        values = table[:, 0].astype(np.int64)
    elif space.track == "AU":
        values = table.astype(np.int64)
    else:
        values = table.astype(np.float32)
    return TemplateSubmission(rows, space, values)


# ------------------------------------------------------------------------------ the table


class TableWriter:
    """Every head of a prediction frame by frame: ``<out>/<video_id>.csv`` (or ``.parquet``).

    Not a challenge format: the file to open in a spreadsheet or pandas. Columns (those of a
    head the prediction lacks are left out): ``video_id, frame, image, time_s, filled,
    face_found, face_score, face_x1, face_y1, face_x2, face_y2, expression, expression_index,
    p_<class>…, valence, arousal, <AU>…, p_<AU>…, yaw, pitch, roll, word, predictor``. An empty
    cell (a null in Parquet) is a NaN. Floats read back as the same float32 (times: float64).
    An image set (``meta["images"]``) has a row per image: ``video_id`` is the image's file
    stem, ``image`` its file name, and an ``image_set`` column after ``video_id`` names the set
    (the file is ``<out>/<set>.csv``).
    """

    name = "table"
    per_video = True

    def __init__(self, format: str = "csv"):
        fmt = str(format).strip().lower()
        if fmt not in TABLE_FORMATS:
            raise InputError(
                f"unknown table format {format!r}", hint=f"choose among {', '.join(TABLE_FORMATS)}"
            )
        if fmt == "parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise InputError(
                    "the parquet table format needs pyarrow", hint="pip install pyarrow, or use csv"
                ) from None
        self.format = fmt

    @property
    def extension(self) -> str:
        return "." + self.format

    def write_video(self, pred: VideoPrediction, out_dir: str | Path) -> Path:
        """Write ``<out_dir>/<video_id>.csv`` (or ``.parquet``) atomically; returns its path."""
        path = Path(out_dir) / f"{pred.video_id}{self.extension}"
        columns = table_columns(pred)
        if self.format == "csv":
            atomic_write_text(path, _csv_text(columns))
        else:
            _write_parquet(path, columns)
        return path

    def write_all(self, preds: Mapping[str, VideoPrediction], out_dir: str | Path) -> Path:
        for pred in preds.values():
            self.write_video(pred, out_dir)
        return Path(out_dir)


def table_columns(pred: VideoPrediction) -> dict[str, list | np.ndarray]:
    """The table's columns in order: numpy arrays for numbers, lists for text."""
    n = len(pred)
    images = pred.meta.get("images")
    cols: dict[str, list | np.ndarray] = {"video_id": [pred.video_id] * n}
    if images is not None:  # an image set: each row is an image, named by its file
        cols = {"video_id": [Path(f).stem for f in images], "image_set": [pred.video_id] * n}
    cols |= {
        "frame": np.arange(n, dtype=np.int64),
        "image": [str(f) for f in images] if images else [f"{i + 1:05d}.jpg" for i in range(n)],
        "time_s": pred.times.astype(np.float64),
        "filled": pred.filled.astype(np.int64),
        "face_found": pred.face_found.astype(np.int64),
        "face_score": np.asarray(pred.face_score, dtype=np.float32),
    }
    box = np.asarray(pred.face_box, dtype=np.float32).reshape(n, 4)
    for j, name in enumerate(("face_x1", "face_y1", "face_x2", "face_y2")):
        cols[name] = box[:, j]
    if pred.expr_probs is not None:
        probs = np.asarray(pred.expr_probs, dtype=np.float32)
        index = pred.expr_labels
        cols["expression"] = [pred.expr_names[i] for i in index.tolist()]
        cols["expression_index"] = index
        for j, name in enumerate(pred.expr_names):
            cols[f"p_{name}"] = probs[:, j]
    if pred.va is not None:
        va = np.asarray(pred.va, dtype=np.float32)
        cols["valence"], cols["arousal"] = va[:, 0], va[:, 1]
    if pred.au_probs is not None:
        probs = np.asarray(pred.au_probs, dtype=np.float32)
        labels = pred.au_labels
        for j, name in enumerate(pred.au_names):
            cols[name] = labels[:, j]
        for j, name in enumerate(pred.au_names):
            cols[f"p_{name}"] = probs[:, j]
    if pred.head_pose is not None:
        pose = np.asarray(pred.head_pose, dtype=np.float32)
        for j, name in enumerate(("yaw", "pitch", "roll")):
            cols[name] = pose[:, j]
    cols["word"] = list(pred.words)
    cols["predictor"] = [pred.predictor] * n
    return cols


def _cell_texts(values: list | np.ndarray) -> list[str]:
    if isinstance(values, list):
        return [str(v) for v in values]
    if values.dtype == np.float64:
        return ["" if math.isnan(v) else repr(v) for v in values.tolist()]
    if values.dtype == np.float32:
        return format_floats(values)
    return [str(v) for v in values.tolist()]


def _csv_text(columns: dict[str, list | np.ndarray]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(list(columns))
    writer.writerows(zip(*(_cell_texts(v) for v in columns.values()), strict=True))
    return buf.getvalue()


def _write_parquet(path: Path, columns: dict[str, list | np.ndarray]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = {}
    for name, values in columns.items():
        if isinstance(values, np.ndarray) and values.dtype.kind == "f":
            arrays[name] = pa.array(values, mask=np.isnan(values))
        else:
            arrays[name] = pa.array(values)
    with atomic_path(path) as tmp:
        pq.write_table(pa.table(arrays), tmp)


def _read_columns(path: Path) -> dict[str, list]:
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise InputError(f"{path}: reading parquet needs pyarrow") from None
        data = pq.read_table(path).to_pydict()
        return {k: ["" if v is None else v for v in col] for k, col in data.items()}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from e
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        raise InputError(f"{path}: empty table")
    header, body = rows[0], rows[1:]
    if any(len(r) != len(header) for r in body):
        raise InputError(f"{path}: rows do not all have {len(header)} cells")
    return {name: [r[j] for r in body] for j, name in enumerate(header)}


def _floats(cells: list, dtype=np.float32) -> np.ndarray:
    return np.array([math.nan if c == "" else float(c) for c in cells], dtype=dtype)


def read_table(path: str | Path) -> VideoPrediction:
    """Read a table written by :class:`TableWriter` back into a :class:`VideoPrediction`.

    The frame rate is 1 / the median step of ``time_s``; ``meta`` is not kept in a table,
    except an image set's id and the image of each row (``meta["image_set"]``,
    ``meta["images"]``).
    """
    path = Path(path)
    cols = _read_columns(path)
    need = ("video_id", "frame", "time_s", "filled", "face_found", "face_score", "word")
    lacking = [c for c in need if c not in cols]
    if lacking:
        raise InputError(f"{path}: not a mmaffect table (no {', '.join(lacking)} column)")
    names = list(cols)
    n = len(cols["frame"])
    times = _floats(cols["time_s"], np.float64)
    steps = np.diff(times)
    fps = float(1.0 / np.median(steps)) if steps.size and np.median(steps) > 0 else 0.0
    expr_names: tuple[str, ...] = ()
    expr_probs = None
    if "expression_index" in cols:
        start = names.index("expression_index") + 1
        stop = start
        while stop < len(names) and names[stop].startswith("p_") and names[stop][2:] not in cols:
            stop += 1
        expr_names = tuple(c[2:] for c in names[start:stop])
        expr_probs = np.column_stack([_floats(cols[c]) for c in names[start:stop]])
    au_names = tuple(c[2:] for c in names if c.startswith("p_") and c[2:] in cols)
    au_probs = np.column_stack([_floats(cols[f"p_{a}"]) for a in au_names]) if au_names else None
    va = None
    if "valence" in cols:
        va = np.column_stack([_floats(cols["valence"]), _floats(cols["arousal"])])
    pose = None
    if "yaw" in cols:
        pose = np.column_stack([_floats(cols[c]) for c in ("yaw", "pitch", "roll")])
    boxes = ("face_x1", "face_y1", "face_x2", "face_y2")
    extra: dict[str, Any] = {}
    if "image_set" in cols and n:  # an image set: its id, and the image of each row
        extra["meta"] = {"image_set": str(cols["image_set"][0]), "images": list(cols["image"])}
    if expr_names:
        extra["expr_names"] = expr_names
    if au_names:
        extra["au_names"] = au_names
    set_id = extra.get("meta", {}).get("image_set")
    return VideoPrediction(
        video_id=set_id or (str(cols["video_id"][0]) if n else path.stem),
        fps=fps,
        times=times,
        expr_probs=expr_probs,
        va=va,
        au_probs=au_probs,
        face_found=np.array([int(c) for c in cols["face_found"]], dtype=bool),
        face_score=_floats(cols["face_score"]),
        face_box=np.column_stack([_floats(cols[c]) for c in boxes]).reshape(n, 4),
        head_pose=pose,
        words=[str(w) for w in cols["word"]],
        filled=np.array([int(c) for c in cols["filled"]], dtype=bool),
        predictor=str(cols["predictor"][0]) if n and "predictor" in cols else "baseline",
        **extra,
    )


# ------------------------------------------------------------------------------ registry

WRITERS: dict[str, type] = {
    "per-video": PerVideoWriter,
    "template": TemplateWriter,
    "mtl": MtlWriter,
    "table": TableWriter,
}


def get_writer(name: str, **kwargs):
    """The writer registered as ``name`` built with ``kwargs``; an unknown name lists them."""
    cls = WRITERS.get(str(name).strip().lower())
    if cls is None:
        raise InputError(f"unknown writer {name!r}", hint=f"choose among {', '.join(WRITERS)}")
    return cls(**kwargs)


def writer_for(
    track: str,
    edition: int | str,
    template: str | Path | None = None,
    image_list: str | Path | None = None,
) -> PerVideoWriter | TemplateWriter | MtlWriter | None:
    """The challenge writer of ``track`` in ``edition``.

    ABAW1-3 VA/EXPR/AU → :class:`PerVideoWriter`; ABAW5/6/8 VA/EXPR/AU → :class:`TemplateWriter`
    (``template`` needed); MTL in ABAW3/4/7 → :class:`MtlWriter` (``image_list`` needed).

    Returns
    -------
    writer or None
        None when the format needs a template or an image list that was not given (the caller
        says so and writes only the table).

    Raises
    ------
    InputError
        Unknown edition or track, or a track the edition did not run.
    """
    number = edition_number(edition)
    name = _check_track(track, number)
    if name == "MTL":
        return MtlWriter(image_list, number) if image_list is not None else None
    if number in PER_VIDEO_EDITIONS:
        return PerVideoWriter(name, number)
    return TemplateWriter(template, name, number) if template is not None else None
