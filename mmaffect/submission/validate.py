"""Check a submission before uploading it: every problem, one line each.

:func:`validate_submission` reads the submission of one track and edition (a folder of per-video
files for ABAW1-3, one template-format file for ABAW5/6/8, one MTL file for ABAW3/4/7) and
checks the header, the number of fields of every line, every value (EXPR an integer class,
AU 0/1, VA a number in [-1, 1]; a -1 or -5 label sentinel and NaN are wrong in a submission),
duplicate rows, and the rows or lines each video needs: those of the organisers' template (or
MTL image list), or the frame count of the test videos. Repeated problems of one kind in one
file are capped (the first few, then "… and N more").
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmaffect.annotations import AU_12, EXPR_8
from mmaffect.annotations._text import FLOAT_FIELD, INT_FIELD, quote, read_lines
from mmaffect.annotations.spaces import (
    MTL_HEADER,
    LabelSpace,
    is_mtl_header,
    label_space_for,
    match_header,
)
from mmaffect.errors import InputError, MmaffectError
from mmaffect.media.frame_folder import split_subject
from mmaffect.submission.writers import (
    MTL_EDITIONS,
    PER_VIDEO_EDITIONS,
    TEMPLATE_IMAGE_COLUMN,
    ImageRows,
    _check_track,
    edition_number,
    read_image_rows,
)

__all__ = ["FRAME_COUNT_CHOICES", "MAX_SHOWN", "Problem", "validate_submission"]

FRAME_COUNT_CHOICES = ("decoded", "opencv+1", "either")
#: Problems of one kind shown per file before "… and N more".
MAX_SHOWN = 5
_SHOWN_VIDEOS = 5


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a submission: where (file, 1-based line or None) and what."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}, line {self.line}" if self.line is not None else self.file
        return f"{where}: {self.message}"


class _FileProblems:
    """Problems of one file, at most :data:`MAX_SHOWN` of each kind kept."""

    _LABELS = {
        "value": "lines with a bad value",
        "fields": "lines with the wrong number of fields",
        "duplicate": "duplicate rows",
        "image": "rows with a bad image name",
        "count": "videos with the wrong number of lines",
        "rows": "videos with missing or extra rows",
    }

    def __init__(self, file: Path | str):
        self.file = str(file)
        self.kept: list[Problem] = []
        self.counts: Counter[str] = Counter()

    def add(self, kind: str, line: int | None, message: str) -> None:
        self.counts[kind] += 1
        if self.counts[kind] <= MAX_SHOWN:
            self.kept.append(Problem(self.file, line, message))

    def done(self) -> list[Problem]:
        out = list(self.kept)
        for kind, n in self.counts.items():
            if n > MAX_SHOWN:
                label = self._LABELS.get(kind, f"{kind} problems")
                out.append(Problem(self.file, None, f"… and {n - MAX_SHOWN} more {label}"))
        return out


# ------------------------------------------------------------------------------ values


@dataclass(frozen=True)
class _Field:
    name: str
    kind: str  # "va", "expr", "au"
    n_classes: int = 0


def _fields_of(space: LabelSpace) -> list[_Field]:
    if space.track == "EXPR":
        return [_Field("expression", "expr", space.size)]
    return [_Field(n, "va" if space.track == "VA" else "au") for n in space.names]


_MTL_FIELDS = [
    _Field("valence", "va"),
    _Field("arousal", "va"),
    _Field("expression", "expr", EXPR_8.size),
    *(_Field(n, "au") for n in AU_12.names),
]


def _fast_ok(rests: list[str], fields: list[_Field]) -> bool:
    """Every line parses with numpy's C reader and every value is in range."""
    import io

    if not rests:
        return True
    dtype = np.dtype([(f"f{i}", "f8" if f.kind == "va" else "i8") for i, f in enumerate(fields)])
    try:
        table = np.loadtxt(
            io.StringIO("\n".join(rests)), delimiter=",", dtype=dtype, comments=None, ndmin=1
        )
    except ValueError:
        return False
    if table.shape != (len(rests),):
        return False
    for i, f in enumerate(fields):
        col = table[f"f{i}"]
        if f.kind == "va":
            ok = np.isfinite(col) & (col >= -1.0) & (col <= 1.0)
        elif f.kind == "expr":
            ok = (col >= 0) & (col < f.n_classes)
        else:
            ok = (col == 0) | (col == 1)
        if not ok.all():
            return False
    return True


def _value_problem(f: _Field, text: str) -> str | None:
    if f.kind == "expr":
        if INT_FIELD.fullmatch(text) and 0 <= int(text) < f.n_classes:
            return None
        if INT_FIELD.fullmatch(text) and int(text) == -1:
            return (
                f"{f.name} is -1, the unannotated marker of label files; a submission needs a "
                f"class 0..{f.n_classes - 1} on every line"
            )
        return f"expected an integer class 0..{f.n_classes - 1} for {f.name}, got {quote(text)}"
    if f.kind == "au":
        if INT_FIELD.fullmatch(text) and int(text) in (0, 1):
            return None
        if INT_FIELD.fullmatch(text) and int(text) == -1:
            return (
                f"{f.name} is -1, the unannotated marker of label files; a submission needs 0 or 1"
            )
        return f"expected 0 or 1 for {f.name}, got {quote(text)}"
    if text.strip().lower() in ("nan", "+nan", "-nan"):
        return f"{f.name} is NaN; a submission needs a number in [-1, 1]"
    if not FLOAT_FIELD.fullmatch(text):
        return f"expected a number in [-1, 1] for {f.name}, got {quote(text)}"
    v = float(text)
    if v == -5.0:
        return f"{f.name} is -5, the unannotated marker of label files; predict a value in [-1, 1]"
    if not -1.0 <= v <= 1.0:
        return f"{f.name} {text} is outside [-1, 1]"
    return None


def _check_values(
    probs: _FileProblems, rests: list[str], fields: list[_Field], first_line: int, what: str
) -> None:
    if _fast_ok(rests, fields):
        return
    k = len(fields)
    names = ",".join(f.name for f in fields) if k <= 3 else f"{fields[0].name},…,{fields[-1].name}"
    for offset, text in enumerate(rests):
        line = first_line + offset
        parts = [p.strip() for p in text.split(",")] if text.strip() else []
        if len(parts) != k:
            probs.add(
                "fields",
                line,
                f"expected {k} value{'s' if k > 1 else ''} {what}({names}), got {len(parts)}: "
                f"{quote(text)}",
            )
            continue
        for f, part in zip(fields, parts, strict=True):
            message = _value_problem(f, part)
            if message is not None:
                probs.add("value", line, message)
                break


# ------------------------------------------------------------------------------ expected counts


@dataclass(frozen=True)
class _Expected:
    counts: frozenset[int]  # accepted line counts (empty: only at_least applies)
    at_least: int  # frame folders: the highest image number
    how: str  # for messages
    whole_video: bool  # a video file: its _left/_right subjects share the count

    def accepts(self, n: int) -> bool:
        return n in self.counts if self.counts else n >= self.at_least


def _video_counts(path: Path, rule: str) -> tuple[frozenset[int], str]:
    from mmaffect.media.probe import opencv_frame_count, probe

    counts: dict[int, list[str]] = {}
    if rule in ("decoded", "either"):
        info = probe(path, count="decode").video
        if info is None:
            raise InputError(f"{path}: no video stream")
        counts.setdefault(info.frames, []).append("decoded frames")
    if rule in ("opencv+1", "either"):
        counts.setdefault(opencv_frame_count(path) + 1, []).append("OpenCV count + 1")
    how = " or ".join(f"{n} ({' = '.join(w)})" for n, w in sorted(counts.items()))
    return frozenset(counts), how


def _expected_counts(videos: Path, rule: str) -> dict[str, _Expected]:
    from mmaffect.media.frame_folder import frame_files
    from mmaffect.media.inputs import VIDEO_EXTENSIONS, discover

    out: dict[str, _Expected] = {}
    for src in discover([videos]):
        if src.kind == "video":
            counts, how = _video_counts(src.path, rule)
            out[src.id] = _Expected(counts, 0, how, True)
        elif src.kind == "frames":
            audio = src.audio_path
            if audio is not None and audio.suffix.lower() in VIDEO_EXTENSIONS:
                counts, how = _video_counts(audio, rule)
                out[src.id] = _Expected(counts, 0, how, False)
            else:
                top = max(frame_files(src.path)) + 1
                out[src.id] = _Expected(frozenset(), top, f"at least {top} (frame folder)", False)
    if not out:
        raise InputError(f"{videos}: no video or frame folder found")
    return out


def _match_expected(ids: list[str], expected: dict[str, _Expected]):
    """``{submission id: expected}``, extra ids, and expected videos no id covers."""
    matched: dict[str, _Expected] = {}
    extra: list[str] = []
    covered: set[str] = set()
    for vid in ids:
        base = split_subject(vid)[0]
        if vid in expected:
            matched[vid] = expected[vid]
            covered.add(vid)
        elif base in expected and expected[base].whole_video:
            matched[vid] = expected[base]
            covered.add(base)
        else:
            extra.append(vid)
    missing = [v for v in expected if v not in covered]
    return matched, extra, missing


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN_VIDEOS])
    return shown + (", …" if len(names) > _SHOWN_VIDEOS else "")


# ------------------------------------------------------------------------------ per-video files


def _check_per_video(
    folder: Path, space: LabelSpace, edition: int, expected: dict[str, _Expected] | None
) -> list[Problem]:
    problems: list[Problem] = []
    if not folder.is_dir():
        return [
            Problem(
                str(folder),
                None,
                f"ABAW{edition} {space.track} submissions are a folder of <video>.txt files",
            )
        ]
    files = sorted(p for p in folder.iterdir() if p.suffix == ".txt" and not p.name.startswith("."))
    if not files:
        return [Problem(str(folder), None, "no <video>.txt file in the folder")]
    rows: dict[str, int] = {}
    by_id: dict[str, Path] = {}
    for path in files:
        probs = _FileProblems(path)
        try:
            lines = read_lines(path)
        except MmaffectError as e:
            problems.append(Problem(str(path), None, e.one_line()))
            continue
        if not lines:
            problems.append(Problem(str(path), None, "file is empty"))
            continue
        _check_header_line(probs, lines[0], space, edition)
        _check_values(probs, lines[1:], _fields_of(space), 2, "")
        rows[path.stem] = len(lines) - 1
        by_id[path.stem] = path
        problems += probs.done()
    if expected is not None:
        matched, extra, missing = _match_expected(list(rows), expected)
        for vid in extra:
            problems.append(Problem(str(by_id[vid]), None, f"extra video {vid}: not a test video"))
        if missing:
            problems.append(
                Problem(
                    str(folder),
                    None,
                    f"{len(missing)} test videos have no file: {_listed(missing)}",
                )
            )
        for vid, exp in matched.items():
            if not exp.accepts(rows[vid]):
                problems.append(
                    Problem(
                        str(by_id[vid]),
                        None,
                        f"{rows[vid]} frame lines, expected {exp.how}",
                    )
                )
    return problems


def _check_header_line(probs: _FileProblems, line: str, space: LabelSpace, edition: int) -> None:
    found = match_header(line)
    if found == space:
        return
    if found is not None:
        probs.add(
            "header",
            1,
            f"header {quote(line)} is the {found.describe()} header; ABAW{edition} "
            f"{space.track} needs {quote(space.header)}",
        )
    else:
        probs.add("header", 1, f"header {quote(line)} is not {quote(space.header)}")


# ------------------------------------------------------------------------------ single files


def _rows_or_problem(path: Path, trailing_comma: bool) -> ImageRows | Problem:
    if not path.is_file():
        what = "a folder" if path.is_dir() else "missing"
        return Problem(str(path), None, f"expected one submission file, this is {what}")
    try:
        return read_image_rows(path, trailing_comma=trailing_comma)
    except MmaffectError as e:
        line = getattr(e, "line", None)
        message = re.sub(rf"^{re.escape(str(path))}(, line \d+)?: ", "", e.one_line())
        return Problem(str(path), line, message)


def _check_duplicates(probs: _FileProblems, rows: ImageRows) -> None:
    if len(rows) < 2:
        return
    keys = rows.video_index * (int(rows.frames.max()) + 2) + rows.frames
    order = np.argsort(keys, kind="stable")
    ks = keys[order]
    repeat = np.flatnonzero(ks[1:] == ks[:-1]) + 1  # positions (sorted) of later copies
    if not repeat.size:
        return
    starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
    first = order[starts[np.searchsorted(starts, repeat, side="right") - 1]]
    later = order[repeat]
    for k in np.argsort(later, kind="stable").tolist():
        dup, orig = int(later[k]), int(first[k])
        probs.add(
            "duplicate",
            rows.first_line + dup,
            f"image {rows.images[dup]} repeats line {rows.first_line + orig}",
        )


def _per_video_firsts(rows: ImageRows, flags: np.ndarray) -> list[tuple[str, int, int]]:
    """``(video, rows flagged, first flagged row)`` for each video with a flagged row."""
    idx = np.flatnonzero(flags)
    if not idx.size:
        return []
    vids, first, counts = np.unique(rows.video_index[idx], return_index=True, return_counts=True)
    found = [(int(v), int(idx[f]), int(c)) for v, f, c in zip(vids, first, counts, strict=True)]
    found.sort(key=lambda t: t[1])
    return [(rows.videos[v], c, f) for v, f, c in found]


def _row_keys(rows: ImageRows, names: dict[str, int]) -> np.ndarray:
    ids = np.array([names[v] for v in rows.videos], dtype=np.int64)
    return ids[rows.video_index] * (1 << 32) + rows.frames


def _check_against_list(
    probs: _FileProblems, rows: ImageRows, reference: ImageRows, what: str
) -> list[Problem]:
    """Rows vs the organisers' template/image list: videos, rows, order."""
    problems: list[Problem] = []
    sub_videos, ref_videos = set(rows.videos), set(reference.videos)
    missing = [v for v in reference.videos if v not in sub_videos]
    extra = [v for v in rows.videos if v not in ref_videos]
    if missing:
        problems.append(
            Problem(
                probs.file,
                None,
                f"{len(missing)} videos of the {what} are missing: {_listed(missing)}",
            )
        )
    if extra:
        problems.append(
            Problem(
                probs.file, None, f"{len(extra)} extra videos not in the {what}: {_listed(extra)}"
            )
        )
    names = {v: i for i, v in enumerate(dict.fromkeys([*reference.videos, *rows.videos]))}
    sub_keys, ref_keys = _row_keys(rows, names), _row_keys(reference, names)
    lacking = ~np.isin(ref_keys, sub_keys)
    surplus = ~np.isin(sub_keys, ref_keys)
    for vid, count, row in _per_video_firsts(reference, lacking):
        if vid in sub_videos:
            probs.add(
                "rows",
                None,
                f"{vid}: {count} rows of the {what} are missing (first: {reference.images[row]})",
            )
    for vid, count, row in _per_video_firsts(rows, surplus):
        if vid in ref_videos:
            probs.add(
                "rows",
                rows.first_line + row,
                f"{vid}: {count} rows not in the {what} (first: {rows.images[row]})",
            )
    if not lacking.any() and not surplus.any() and sub_keys.shape == ref_keys.shape:
        differ = np.flatnonzero(sub_keys != ref_keys)
        if differ.size:
            i = int(differ[0])
            probs.add(
                "order",
                rows.first_line + i,
                f"rows are not in the {what}'s order: {rows.images[i]} where the {what} has "
                f"{reference.images[i]}",
            )
    return problems


def _check_counts(
    probs: _FileProblems, rows: ImageRows, expected: dict[str, _Expected]
) -> list[Problem]:
    per_video = rows.rows_per_video()
    matched, extra, missing = _match_expected(list(per_video), expected)
    problems = []
    if extra:
        problems.append(
            Problem(
                probs.file, None, f"{len(extra)} extra videos, not test videos: {_listed(extra)}"
            )
        )
    if missing:
        problems.append(
            Problem(probs.file, None, f"{len(missing)} test videos have no row: {_listed(missing)}")
        )
    for vid, exp in matched.items():
        if not exp.accepts(per_video[vid]):
            probs.add("count", None, f"{vid}: {per_video[vid]} rows, expected {exp.how}")
    return problems


def _check_single_file(
    path: Path,
    header: str,
    fields: list[_Field],
    trailing_comma: bool,
    reference: Path | None,
    expected: dict[str, _Expected] | None,
    header_ok,
) -> list[Problem]:
    got = _rows_or_problem(path, trailing_comma)
    if isinstance(got, Problem):
        return [got]
    rows = got
    probs = _FileProblems(path)
    extra: list[Problem] = []
    if rows.header is None:
        probs.add("header", 1, f"no header line; expected {quote(header)}")
    elif not header_ok(rows.header):
        probs.add("header", 1, f"header {quote(rows.header)} is not {quote(header)}")
    if len(rows) == 0:
        probs.add("rows", None, "no rows after the header")
    _check_values(probs, rows.rests, fields, rows.first_line, "after the image name ")
    _check_duplicates(probs, rows)
    if reference is not None:
        ref = read_image_rows(reference)
        extra = _check_against_list(probs, rows, ref, "template")
    elif expected is not None:
        extra = _check_counts(probs, rows, expected)
    return probs.done() + extra


# ------------------------------------------------------------------------------ entry point


def validate_submission(
    path: str | Path,
    track: str,
    edition: int | str,
    *,
    template: str | Path | None = None,
    videos: str | Path | None = None,
    frame_count: str = "either",
) -> list[Problem]:
    """Every problem of a submission, one :class:`Problem` each (an empty list: all good).

    Parameters
    ----------
    path
        ABAW1-3 VA/EXPR/AU: the folder of ``<video>.txt`` files; ABAW5/6/8: the one file;
        MTL (ABAW3/4/7): the one MTL file.
    track, edition
        ``"EXPR"``, ``"AU"``, ``"VA"`` or ``"MTL"``; ``3`` or ``"abaw3"``.
    template
        The organisers' template (ABAW5/6/8) or MTL image list: the submission must have
        exactly its rows, in its order.
    videos
        A folder of the test videos (or frame folders): each needs a file (ABAW1-3) or rows
        (ABAW5/6/8), with as many lines as the frame-count rule says. Not used for MTL.
    frame_count
        ``"decoded"`` (frames the decoder yields), ``"opencv+1"`` (OpenCV's count + 1, as ABAW3
        participants wrote) or ``"either"``.

    Returns
    -------
    list of Problem

    Raises
    ------
    InputError
        Unknown track or edition, a track the edition did not run, a bad ``frame_count``, or
        ``template``/``videos`` that cannot be read.
    """
    number = edition_number(edition)
    name = _check_track(track, number)
    if frame_count not in FRAME_COUNT_CHOICES:
        raise InputError(
            f"unknown frame-count rule {frame_count!r}",
            hint=f"choose among {', '.join(FRAME_COUNT_CHOICES)}",
        )
    if template is not None and videos is not None:
        raise InputError("give either a template or a videos folder, not both")
    path = Path(path)
    expected = _expected_counts(Path(videos), frame_count) if videos is not None else None
    reference = Path(template) if template is not None else None
    if reference is not None and not reference.is_file():
        raise InputError(f"{reference}: no such template file")
    if name == "MTL":
        if number not in MTL_EDITIONS:
            raise InputError(f"ABAW{number} has no MTL track")  # pragma: no cover - checked above
        return _check_single_file(
            path,
            ",".join(MTL_HEADER),
            _MTL_FIELDS,
            True,
            reference,
            None,
            is_mtl_header,
        )
    space = label_space_for(name, number)
    if number in PER_VIDEO_EDITIONS:
        if reference is not None:
            expected = {
                v: _Expected(frozenset([n]), 0, f"{n} (template rows)", False)
                for v, n in read_image_rows(reference).rows_per_video().items()
            }
        return _check_per_video(path, space, number, expected)
    header = f"{TEMPLATE_IMAGE_COLUMN},{space.header}"
    return _check_single_file(
        path,
        header,
        _fields_of(space),
        False,
        reference,
        expected,
        lambda line: line.lstrip("\ufeff").strip() == header,
    )
