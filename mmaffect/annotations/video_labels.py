"""Per-video ABAW label files (``<video>.txt``): read, validate, write.

Line 1 is the header that names the layout (see :mod:`mmaffect.annotations.spaces`); every further
line is one frame: file line ``L`` (1-based, as an editor shows it) holds 0-based frame
``L - 2``, whose organiser crop is ``cropped_aligned/<video>/<NNNNN>.jpg`` with ``NNNNN = L - 1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmaffect.annotations._text import (
    FLOAT_FIELD,
    INT_FIELD,
    error,
    fast_table,
    quote,
    read_lines,
)
from mmaffect.annotations.spaces import (
    LABEL_SPACES,
    VA_UNANNOTATED,
    LabelSpace,
    Track,
    is_mtl_header,
    match_header,
    near_header,
)
from mmaffect.atomic import atomic_write_text
from mmaffect.errors import AnnotationError
from mmaffect.media.frame_folder import split_subject

_EXPECTED_HEADERS = " | ".join(s.header for s in LABEL_SPACES)


@dataclass(frozen=True, eq=False)
class VideoLabels:
    """The labels of one video (one subject of it) for one track.

    Attributes
    ----------
    video_id
        The label file's stem, ``_left``/``_right`` kept (``10-60-1280x720_left``).
    space
        The layout: track and column names (:data:`EXPR_8`, :data:`AU_12`, :data:`VA`, …).
    values
        Row ``i`` is 0-based frame ``i`` (organiser crop ``NNNNN = i + 1``). EXPR: ``(n,)``
        int64 class index; AU: ``(n, k)`` int8 0/1; VA: ``(n, 2)`` float32 valence, arousal.
        Unannotated entries keep the file's sentinel (-1, or -5 for VA).
    mask
        True where annotated: ``(n,)`` for EXPR and VA, ``(n, k)`` for AU (one flag per unit).
        A VA frame is unannotated when either field is -5; both fields are then masked.
    path
        The file it was read from, if any.
    """

    video_id: str
    space: LabelSpace
    values: np.ndarray
    mask: np.ndarray
    path: Path | None = field(default=None)

    @property
    def track(self) -> Track:
        return self.space.track

    @property
    def base_id(self) -> str:
        """The video id without ``_left``/``_right``: the key of its audio and transcript."""
        return split_subject(self.video_id)[0]

    @property
    def subject(self) -> str | None:
        """``"left"``, ``"right"`` or ``None`` for a video with one annotated person."""
        return split_subject(self.video_id)[1]

    @property
    def num_frames(self) -> int:
        return int(self.values.shape[0])

    def __len__(self) -> int:
        return self.num_frames

    def __repr__(self) -> str:
        annotated = int(self.mask.all(axis=1).sum() if self.mask.ndim == 2 else self.mask.sum())
        return (
            f"VideoLabels({self.video_id!r}, {self.space.describe()}, "
            f"{self.num_frames} frames, {annotated} fully annotated)"
        )

    @classmethod
    def from_values(
        cls,
        video_id: str,
        space: LabelSpace,
        values: np.ndarray | list,
        mask: np.ndarray | None = None,
    ) -> VideoLabels:
        """Build labels from values (e.g. an utterance label repeated over its frames).

        Parameters
        ----------
        video_id
            The id the file will be named after.
        space
            The label space; ``values`` must fit it.
        values
            EXPR ``(n,)`` class indices, AU ``(n, k)`` 0/1, VA ``(n, 2)``; sentinels allowed.
        mask
            True where annotated. Default: everything that is not the sentinel. Where ``mask``
            is False the value is ignored (the writer writes the sentinel).

        Returns
        -------
        VideoLabels
        """
        values = np.asarray(values)
        n = values.shape[0] if values.ndim else 0
        shape = (n,) if space.track == "EXPR" else (n, space.size)
        if values.shape != shape:
            raise AnnotationError(
                f"{video_id}: {space.describe()} values need shape "
                f"{_shape_text(space)}, got {values.shape}"
            )
        if space.track != "VA":
            if values.size and not np.all(values == np.round(values)):
                raise AnnotationError(f"{video_id}: {space.track} values must be integers")
            values = values.astype(np.int64)  # checked at this width, stored narrower below
        else:
            values = values.astype(np.float32)
        if mask is None:
            mask = default_mask(space, values)
        else:
            mask = np.asarray(mask, dtype=bool)
            want = shape if space.track == "AU" else (n,)
            if mask.shape != want:
                raise AnnotationError(
                    f"{video_id}: mask needs shape {want} for {space.describe()}, got {mask.shape}"
                )
        _check_labels(cls(video_id, space, values, mask))
        if space.track == "AU":
            values = values.astype(np.int8)
        return cls(video_id, space, values, mask)


def _shape_text(space: LabelSpace) -> str:
    return "(n,)" if space.track == "EXPR" else f"(n, {space.size})"


def default_mask(space: LabelSpace, values: np.ndarray) -> np.ndarray:
    """True where ``values`` is not the unannotated sentinel (VA: a frame with -5 anywhere)."""
    if space.track == "VA":
        return ~np.any(values == VA_UNANNOTATED, axis=1)
    return values != space.sentinel


def _bad_rows(space: LabelSpace, values: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Per-row flag: some value is neither in range nor the sentinel (or masked, if ``mask``)."""
    if space.track == "VA":
        ok = (values >= -1.0) & (values <= 1.0)
        if mask is None:
            ok |= values == VA_UNANNOTATED
        else:
            ok |= ~mask[:, None]
        return ~ok.all(axis=1)
    if space.track == "EXPR":
        ok = (values >= 0) & (values < space.size)
    else:
        ok = (values == 0) | (values == 1)
    ok |= (values == -1) if mask is None else ~mask
    return ~ok if ok.ndim == 1 else ~ok.all(axis=1)


def _check_labels(labels: VideoLabels, target: Path | None = None) -> None:
    """Refuse to write (or build) labels whose annotated values are out of range."""
    space = labels.space
    bad = _bad_rows(space, labels.values, labels.mask)
    if bad.any():
        i = int(np.argmax(bad))
        shown = ",".join(_format_value(space, v) for v in np.atleast_1d(labels.values[i]))
        where = f"cannot write {target}: " if target else f"{labels.video_id}: "
        raise AnnotationError(
            f"{where}frame {i} is annotated with {space.track} value {shown}, "
            f"outside {_annotated_range(space)}"
        )


def _annotated_range(space: LabelSpace) -> str:
    if space.track == "EXPR":
        return f"0..{space.size - 1}"
    if space.track == "AU":
        return "0 or 1"
    return "[-1, 1]"


# --- reading -------------------------------------------------------------------------------


def read_video_labels(path: str | Path, *, allow_empty: bool = False) -> VideoLabels:
    """Read one per-video ABAW label file, any edition, any track.

    Parameters
    ----------
    path
        ``<video>.txt``; the stem is the video id (``_left``/``_right`` kept).
    allow_empty
        Accept a file with a header and no frame lines (0 frames). By default that is an
        error: every released label file has frames, so an empty one is a truncated copy.

    Returns
    -------
    VideoLabels

    Raises
    ------
    AnnotationError
        Empty file, unknown header, a line with the wrong number of fields or a value out of
        range; the message names the file, the line and what was expected there.
    InputError
        The file does not exist or cannot be read.
    """
    path = Path(path)
    lines = read_lines(path)
    if not lines:
        raise error(
            path,
            None,
            "file is empty",
            hint=f"an ABAW label file starts with a header line, one of: {_EXPECTED_HEADERS}",
        )
    space = _header_space(path, lines[0])
    body = lines[1:]
    if not body and not allow_empty:
        raise error(
            path,
            1,
            "header only, no frame lines",
            hint="each line after the header is one frame; pass allow_empty=True to accept this",
        )
    values = _parse_body(path, space, body)
    return VideoLabels(path.stem, space, values, default_mask(space, values), path)


def _header_space(path: Path, line: str) -> LabelSpace:
    space = match_header(line)
    if space is not None:
        return space
    shown = quote(line.lstrip("\ufeff"))
    near = near_header(line)
    if near is not None:
        hint = f'write it exactly as the organisers do: "{near.header}"'
        raise error(path, 1, f"header {shown} differs from {near.describe()} in letter case", hint)
    if is_mtl_header(line):
        hint = "this is an MTL split file: read it with read_mtl_file"
        raise error(path, 1, f"header {shown} is the MTL header, not a per-video one", hint)
    raise error(
        path,
        1,
        f"header {shown} matches no ABAW layout",
        hint=f"expected one of: {_EXPECTED_HEADERS}",
    )


def _parse_body(path: Path, space: LabelSpace, body: list[str]) -> np.ndarray:
    dtype = np.float64 if space.track == "VA" else np.int64
    table = fast_table(body, space.fields_per_line, dtype)
    if table is None or _bad_rows(space, table, None).any():
        table = _parse_body_slowly(path, space, body)
    if space.track == "EXPR":
        return table[:, 0].astype(np.int64)
    return table.astype(np.float32 if space.track == "VA" else np.int8)


def _parse_body_slowly(path: Path, space: LabelSpace, body: list[str]) -> np.ndarray:
    """Line by line: the reference grammar; raises at the first bad line."""
    k = space.fields_per_line
    rows = []
    for offset, text in enumerate(body):
        line_no = offset + 2
        if not text.strip():
            raise error(path, line_no, "empty line (each line after the header is one frame)")
        fields = [f.strip() for f in text.split(",")]
        if space.track == "EXPR":
            rows.append([_expr_value(path, line_no, space, fields, text)])
            continue
        if len(fields) != k:
            raise error(
                path,
                line_no,
                f"expected {k} comma-separated values ({_columns(space)}), "
                f"got {len(fields)}: {quote(text)}",
            )
        if space.track == "AU":
            rows.append([_au_value(path, line_no, space, j, f) for j, f in enumerate(fields)])
        else:
            rows.append([_va_value(path, line_no, space.names[j], f) for j, f in enumerate(fields)])
    return np.array(rows, dtype=np.float64 if space.track == "VA" else np.int64).reshape(-1, k)


def _columns(space: LabelSpace) -> str:
    if space.size <= 2:
        return space.header
    return f"{space.names[0]},…,{space.names[-1]}"


def _expr_value(path: Path, line_no: int, space: LabelSpace, fields: list[str], text: str) -> int:
    if len(fields) == 1 and INT_FIELD.fullmatch(fields[0]):
        v = int(fields[0])
        if v == -1 or 0 <= v < space.size:
            return v
    raise error(
        path, line_no, f"expected one integer in 0..{space.size - 1} or -1, got {quote(text)}"
    )


def _au_value(path: Path, line_no: int, space: LabelSpace, j: int, text: str) -> int:
    if INT_FIELD.fullmatch(text) and int(text) in (0, 1, -1):
        return int(text)
    raise error(
        path,
        line_no,
        f"expected 0, 1 or -1 for {space.names[j]} (value {j + 1} of {space.size}), "
        f"got {quote(text)}",
    )


def _va_value(path: Path, line_no: int, name: str, text: str) -> float:
    if FLOAT_FIELD.fullmatch(text):
        v = float(text)
        if -1.0 <= v <= 1.0 or v == VA_UNANNOTATED:
            return v
    raise error(path, line_no, f"expected a number in [-1, 1] or -5 for {name}, got {quote(text)}")


# --- writing -------------------------------------------------------------------------------


def _format_value(space: LabelSpace, v: np.generic | float | int) -> str:
    if space.track == "VA":
        # Shortest text that reads back to the same float32: "0.1", "-5", "0.25".
        return np.format_float_positional(np.float32(v), unique=True, trim="-")
    return str(int(v))


def format_video_labels(labels: VideoLabels) -> str:
    """The text of an ABAW label file for ``labels``: header, then one line per frame.

    Masked entries are written as the sentinel (-1; VA: ``-5,-5`` unless the frame already
    holds a -5, which is kept as it is so that reading the file back gives the same values).
    """
    space = labels.space
    values = labels.values
    mask = labels.mask
    if space.track == "EXPR":
        out = np.where(mask, values, -1)
        body = [str(int(v)) for v in out]
    elif space.track == "AU":
        out = np.where(mask, values, -1)
        body = [",".join(str(int(v)) for v in row) for row in out]
    else:
        had_sentinel = np.any(values == VA_UNANNOTATED, axis=1)
        out = values.copy()
        out[~mask & ~had_sentinel] = VA_UNANNOTATED
        # Annotations repeat a few thousand distinct values: format each one once.
        distinct, index = np.unique(out, return_inverse=True)
        texts = [_format_value(space, v) for v in distinct]
        body = [f"{texts[v]},{texts[a]}" for v, a in index.reshape(-1, 2).tolist()]
    return "\n".join([space.header, *body]) + "\n"


def write_video_labels(path: str | Path, labels: VideoLabels) -> Path:
    """Write ``labels`` as an ABAW label file, atomically.

    The file gets the organisers' header for the label space, ``\\n`` line ends and one line per
    frame: EXPR and AU as integers, VA as the shortest decimal that reads back to the same
    float32 (``0.1``, ``-0.25``, ``-5``), so write → read gives identical values and masks.

    Parameters
    ----------
    path
        Target ``<video_id>.txt``: the file name must be the labels' video id, since readers
        take the id from it. Parent folders are created.
    labels
        What to write; it needs at least one frame.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    if path.stem != labels.video_id:
        raise AnnotationError(
            f"cannot write labels of video {labels.video_id} to {path}: "
            f"the file name is the video id (use {labels.video_id}.txt)"
        )
    if labels.num_frames == 0:
        raise AnnotationError(f"cannot write {path}: no frames to write")
    _check_labels(labels, path)
    atomic_write_text(path, format_video_labels(labels))
    return path
