"""Score a submission-format prediction against ground truth with the official formula.

Predictions may be a folder of per-video files (ABAW1-3), a template-format file (ABAW5/6/8) or
an MTL file (ABAW3/4/7); ground truth a folder of per-video label files or an MTL label file.
Rows are joined on (video, frame). Ground-truth frames holding the unannotated sentinel are left
out by :mod:`mmaffect.metrics`; an annotated frame without a prediction is an error; prediction
frames the ground truth does not have are ignored (and counted).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmaffect.annotations import AU_12, EXPR_8
from mmaffect.annotations._text import read_lines
from mmaffect.annotations.mtl import MtlLabels, read_mtl_file
from mmaffect.annotations.spaces import (
    VA_UNANNOTATED,
    LabelSpace,
    is_mtl_header,
    label_space_for,
)
from mmaffect.annotations.video_labels import read_video_labels
from mmaffect.errors import InputError, InvalidSubmission
from mmaffect.submission.writers import _check_track, edition_number, read_template_submission

__all__ = ["EvaluationReport", "evaluate"]

_SHOWN = 5

# Per video: (0-based frames, values). Uni-task values as the label space holds them; MTL values
# are (n, 15) float64: valence, arousal, expression, 12 AUs.
_Rows = dict[str, tuple[np.ndarray, np.ndarray]]


@dataclass
class EvaluationReport:
    """What :func:`evaluate` found. ``score`` is the edition's official value.

    ``per_class_f1`` / ``per_au_f1`` are empty, and ``ccc_*`` None, for tracks without them;
    ``parts`` holds the three task scores of MTL (``VA``, ``EXPR``, ``AU``).
    """

    track: str
    edition: str
    score: float
    formula: str
    per_class_f1: dict[str, float] = field(default_factory=dict)
    per_au_f1: dict[str, float] = field(default_factory=dict)
    ccc_valence: float | None = None
    ccc_arousal: float | None = None
    f1_macro: float | None = None
    expr_accuracy: float | None = None
    au_f1_mean: float | None = None
    au_accuracy: float | None = None
    parts: dict[str, float] = field(default_factory=dict)
    n_videos: int = 0
    n_gt_frames: int = 0
    n_scored_frames: int = 0
    n_pred_frames: int = 0
    n_ignored_pred_frames: int = 0
    scores: Any = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every field but the raw ``scores`` object."""
        out = {k: v for k, v in self.__dict__.items() if k != "scores"}
        return out


# ------------------------------------------------------------------------------ reading


def _mtl_rows(labels: MtlLabels) -> _Rows:
    out: _Rows = {}
    for vid, part in labels.by_video().items():
        values = np.column_stack([part.va, part.expr, part.au]).astype(np.float64)
        out[vid] = (part.frames, values)
    return out


def _mtl_to_track(rows: _Rows, space: LabelSpace) -> _Rows:
    """MTL values reduced to one track's (EXPR 8 classes, AU 12, VA)."""
    if space.track == "VA":
        return {v: (f, x[:, :2].astype(np.float32)) for v, (f, x) in rows.items()}
    if space.track == "EXPR":
        if space != EXPR_8:
            raise InputError(f"MTL files hold 8 EXPR classes, not {space.describe()}")
        return {v: (f, x[:, 2].astype(np.int64)) for v, (f, x) in rows.items()}
    if space != AU_12:
        raise InputError(f"MTL files hold the 12 AUs of ABAW2+, not {space.describe()}")
    return {v: (f, x[:, 3:].astype(np.int64)) for v, (f, x) in rows.items()}


def _folder_rows(folder: Path, space: LabelSpace, what: str) -> _Rows:
    files = sorted(p for p in folder.glob("*.txt") if not p.name.startswith("."))
    if not files:
        raise InputError(f"{folder}: no <video>.txt {what} file")
    out: _Rows = {}
    for path in files:
        labels = read_video_labels(path)
        if labels.space != space:
            raise InputError(
                f"{path}: {what} file is {labels.space.describe()}, expected {space.describe()}"
            )
        values = labels.values.astype(np.int64) if space.track == "AU" else labels.values
        out[labels.video_id] = (np.arange(labels.num_frames, dtype=np.int64), values)
    return out


def _load(path: Path, track: str, space: LabelSpace | None, what: str) -> _Rows:
    """``{video: (frames, values)}`` from a folder, a template-format file or an MTL file."""
    if path.is_dir():
        if space is None:
            raise InputError(f"{path}: MTL {what} is one file, not a folder")
        return _folder_rows(path, space, what)
    if not path.is_file():
        raise InputError(f"{path}: no such file or folder")
    lines = read_lines(path)
    if lines and is_mtl_header(lines[0]):
        rows = _mtl_rows(read_mtl_file(path))
        return rows if space is None else _mtl_to_track(rows, space)
    if space is None:
        raise InputError(f"{path}: the MTL track needs an MTL file (header image,valence,…)")
    sub = read_template_submission(path)
    if sub.space != space:
        raise InputError(f"{path}: {what} is {sub.space.describe()}, expected {space.describe()}")
    return sub.by_video()


# ------------------------------------------------------------------------------ joining


def _annotated(values: np.ndarray, track: str) -> np.ndarray:
    if track == "VA":
        return ~np.any(values == VA_UNANNOTATED, axis=1)
    if track == "EXPR":
        return values != -1
    if track == "AU":
        return np.any(values != -1, axis=1)
    va = ~np.any(values[:, :2] == VA_UNANNOTATED, axis=1)
    return va | (values[:, 2] != -1) | np.any(values[:, 3:] != -1, axis=1)


def _join(pred: _Rows, gt: _Rows, track: str) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    preds, trues = [], []
    missing: list[tuple[str, int, int]] = []  # video, count, first frame
    n_gt = n_scored = matched = 0
    for vid, (frames, true) in gt.items():
        annotated = _annotated(true, track)
        n_gt += len(frames)
        n_scored += int(annotated.sum())
        p_frames, p_values = pred.get(vid, (np.empty(0, np.int64), None))
        top = int(max(frames.max(initial=-1), p_frames.max(initial=-1))) + 1
        where = np.full(top, -1, dtype=np.int64)
        where[p_frames] = np.arange(len(p_frames))
        row = where[frames]
        lacking = annotated & (row < 0)
        if lacking.any():
            missing.append((vid, int(lacking.sum()), int(frames[np.argmax(lacking)])))
            continue
        if p_values is None:
            continue  # nothing annotated and nothing predicted
        keep = row >= 0
        matched += int(keep.sum())
        values = np.zeros((len(frames), *p_values.shape[1:]), dtype=p_values.dtype)
        values[keep] = p_values[row[keep]]
        preds.append(values)
        trues.append(true)
    if missing:
        total = sum(c for _, c, _ in missing)
        shown = ", ".join(f"{v} frame {f} ({f + 1:05d}.jpg)" for v, _, f in missing[:_SHOWN])
        raise InputError(
            f"{total} annotated ground-truth frames in {len(missing)} videos have no prediction"
            f" (first: {shown}{', …' if len(missing) > _SHOWN else ''})"
        )
    if not trues:
        raise InputError("no ground-truth frame to score")
    n_pred = sum(len(f) for f, _ in pred.values())
    counts = {
        "n_videos": len(gt),
        "n_gt_frames": n_gt,
        "n_scored_frames": n_scored,
        "n_pred_frames": n_pred,
        "n_ignored_pred_frames": n_pred - matched,
    }
    return np.concatenate(preds), np.concatenate(trues), counts


# ------------------------------------------------------------------------------ entry point


def evaluate(pred: str | Path, gt: str | Path, track: str, edition: int | str) -> EvaluationReport:
    """Score ``pred`` against ``gt`` with the official formula of ``track`` in ``edition``.

    Parameters
    ----------
    pred
        A folder of per-video submission files, a template-format file or an MTL file.
    gt
        A folder of per-video label files, or an MTL label file.
    track, edition
        ``"EXPR"``, ``"AU"``, ``"VA"`` or ``"MTL"``; ``3`` or ``"abaw3"``.

    Returns
    -------
    EvaluationReport

    Raises
    ------
    InvalidSubmission
        ``pred`` fails the checks of :func:`~mmaffect.submission.validate_submission`
        (its ``problems`` lists them).
    InputError
        A layout that does not fit the track and edition, or annotated ground-truth frames
        without a prediction (the message counts them and names the first).
    AnnotationError
        A file that does not parse.
    """
    from mmaffect.metrics import official_score

    number = edition_number(edition)
    name = _check_track(track, number)
    _check_prediction(Path(pred), name, number)
    space = None if name == "MTL" else label_space_for(name, number)
    p_rows = _load(Path(pred), name, space, "prediction")
    g_rows = _load(Path(gt), name, space, "ground-truth")
    p, t, counts = _join(p_rows, g_rows, name)
    ed = f"abaw{number}"
    if name == "MTL":
        p_map = {"VA": p[:, :2], "EXPR": p[:, 2].astype(np.int64), "AU": p[:, 3:].astype(np.int64)}
        t_map = {"VA": t[:, :2], "EXPR": t[:, 2].astype(np.int64), "AU": t[:, 3:].astype(np.int64)}
        scores = official_score(name, ed, p_map, t_map)
        report = EvaluationReport(
            name,
            ed,
            scores.score,
            "P_VA + P_EXPR + P_AU, with P_VA = (ccc_valence + ccc_arousal) / 2, "
            f"P_EXPR = {scores.expr.formula}, P_AU = {scores.au.formula}",
            parts={"VA": scores.va.score, "EXPR": scores.expr.score, "AU": scores.au.score},
            scores=scores,
            **counts,
        )
        _fill(report, scores.va)
        _fill(report, scores.expr)
        _fill(report, scores.au)
        return report
    scores = official_score(name, ed, p, t)
    report = EvaluationReport(name, ed, scores.score, scores.formula, scores=scores, **counts)
    _fill(report, scores)
    return report


def _check_prediction(pred: Path, track: str, edition: int) -> None:
    """A prediction is scored only if ``mmaffect validate`` accepts it: a value the readers
    take for "unannotated" (VA -5, EXPR/AU -1) would otherwise be scored as a prediction."""
    from mmaffect.submission.validate import validate_submission

    problems = validate_submission(pred, track, edition)
    if problems:
        raise InvalidSubmission(
            f"{pred} is not a valid ABAW{edition} {track} submission ({len(problems)} problem "
            f"line(s), first: {problems[0]}); it was not scored",
            hint=f"mmaffect validate {pred} --track {track} --edition abaw{edition}",
            problems=problems,
        )


def _fill(report: EvaluationReport, scores: Any) -> None:
    from mmaffect.metrics import AuScores, ExprScores, VaScores

    if isinstance(scores, ExprScores):
        report.per_class_f1 = dict(zip(scores.class_names, scores.per_class_f1, strict=True))
        report.f1_macro, report.expr_accuracy = scores.f1_macro, scores.accuracy
    elif isinstance(scores, AuScores):
        report.per_au_f1 = dict(zip(scores.au_names, scores.per_au_f1, strict=True))
        report.au_f1_mean, report.au_accuracy = scores.f1_mean, scores.accuracy
    elif isinstance(scores, VaScores):
        report.ccc_valence, report.ccc_arousal = scores.ccc_valence, scores.ccc_arousal
