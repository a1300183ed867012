"""The ABAW challenge metrics (every edition), on numpy arrays gathered at the end of an epoch.

Conventions (``docs/metrics.md`` has the formulas of every edition):

* **CCC** uses population moments (1/N): ``2·cov(x, y) / (var(x) + var(y) + (mean(x) − mean(y))²)``.
* **F1** is ``2·TP / (2·TP + FP + FN)``; a class (or an AU) with no true and no predicted positive
  has F1 = 0. This is scikit-learn's ``f1_score`` with its default ``zero_division`` ("warn",
  which scores 0), the call the organisers' and participants' scripts make.
* **Macro F1** averages over all ``n_classes`` classes, also those absent from both the labels
  and the predictions (they score 0): ``f1_score(average="macro", labels=range(n_classes))``,
  i.e. the official ``ΣF1 / 8``. A bare ``f1_score(average="macro")`` call would average over
  the classes that occur only; on a full validation or test set every class occurs and the two
  agree.
* **Unannotated** entries are excluded from every metric: EXPR ``-1``, AU ``-1`` (per AU),
  VA ``-5`` in either field (the whole frame). An optional boolean ``mask`` (True = use) removes
  more entries on top of that.

Nothing here imports torch: the training loop hands over numpy arrays.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from mmaffect.annotations.spaces import (
    AU_8,
    AU_12,
    AU_UNANNOTATED,
    EXPR_7,
    EXPR_8,
    EXPR_UNANNOTATED,
    VA_UNANNOTATED,
)
from mmaffect.errors import InputError

__all__ = [
    "EDITIONS",
    "AuScores",
    "ExprScores",
    "MtlScores",
    "TrackSpec",
    "VaScores",
    "au_scores",
    "ccc",
    "edition_tracks",
    "expr_scores",
    "mtl_scores",
    "official_score",
    "track_spec",
    "va_scores",
]

# The sentinels and names come from the label readers, so both sides agree by construction.
EXPR_CLASSES_7 = EXPR_7.names
EXPR_CLASSES_8 = EXPR_8.names
AU_NAMES_8 = AU_8.names
AU_NAMES_12 = AU_12.names

TRACKS = ("VA", "EXPR", "AU", "MTL", "LSD")


@dataclass(frozen=True)
class TrackSpec:
    """What one track of one edition scores: label sizes and the weights of its formula."""

    n_classes: int = 0  # EXPR / LSD classes (0 where the track has none)
    n_aus: int = 0  # AU columns
    f1_weight: float = 1.0  # score = f1_weight·F1 + accuracy_weight·accuracy
    accuracy_weight: float = 0.0


_ABAW12_EXPR = TrackSpec(n_classes=7, f1_weight=0.67, accuracy_weight=0.33)
_VA = TrackSpec()
_EXPR8 = TrackSpec(n_classes=8)
_AU12 = TrackSpec(n_aus=12)
_MTL = TrackSpec(n_classes=8, n_aus=12)

#: Tracks of each edition and how each is scored (ABAW_FORMATS.md, "Tracks by edition").
EDITIONS: dict[str, dict[str, TrackSpec]] = {
    "abaw1": {
        "VA": _VA,
        "EXPR": _ABAW12_EXPR,
        "AU": TrackSpec(n_aus=8, f1_weight=0.5, accuracy_weight=0.5),
    },
    "abaw2": {
        "VA": _VA,
        "EXPR": _ABAW12_EXPR,
        "AU": TrackSpec(n_aus=12, f1_weight=0.5, accuracy_weight=0.5),
    },
    "abaw3": {"VA": _VA, "EXPR": _EXPR8, "AU": _AU12, "MTL": _MTL},
    # ABAW4: MTL on s-Aff-Wild2 and learning from synthetic data (6 classes, macro F1).
    "abaw4": {"MTL": _MTL, "LSD": TrackSpec(n_classes=6)},
    "abaw5": {"VA": _VA, "EXPR": _EXPR8, "AU": _AU12},
    "abaw6": {"VA": _VA, "EXPR": _EXPR8, "AU": _AU12},
    "abaw7": {"MTL": _MTL},
    "abaw8": {"VA": _VA, "EXPR": _EXPR8, "AU": _AU12},
}


# --------------------------------------------------------------------------- score containers


@dataclass(frozen=True)
class ExprScores:
    """Expression (or LSD) classification scores; ``score`` is the edition's official value."""

    score: float
    f1_macro: float
    accuracy: float
    per_class_f1: tuple[float, ...]
    class_names: tuple[str, ...]
    n_frames: int
    formula: str

    def to_dict(self) -> dict[str, float]:
        """Flat ``name → float`` (ready for a logger): score, f1_macro, accuracy, f1_<class>."""
        out = {"score": self.score, "f1_macro": self.f1_macro, "accuracy": self.accuracy}
        out.update({f"f1_{n}": f for n, f in zip(self.class_names, self.per_class_f1, strict=True)})
        return out


@dataclass(frozen=True)
class AuScores:
    """Action-unit detection scores; ``score`` is the edition's official value.

    ``accuracy`` is over every annotated (frame, AU) entry together, as in the ABAW1/2 formula;
    ``per_au_accuracy`` keeps each AU's own.
    """

    score: float
    f1_mean: float
    accuracy: float
    per_au_f1: tuple[float, ...]
    per_au_accuracy: tuple[float, ...]
    au_names: tuple[str, ...]
    n_frames: int
    formula: str

    def to_dict(self) -> dict[str, float]:
        """Flat ``name → float``: score, f1_mean, accuracy, f1_<AU>."""
        out = {"score": self.score, "f1_mean": self.f1_mean, "accuracy": self.accuracy}
        out.update({f"f1_{n}": f for n, f in zip(self.au_names, self.per_au_f1, strict=True)})
        return out


@dataclass(frozen=True)
class VaScores:
    """Valence-arousal scores; ``score`` = (CCC_valence + CCC_arousal) / 2 in every edition."""

    score: float
    ccc_valence: float
    ccc_arousal: float
    n_valence: int
    n_arousal: int
    formula: str = "(ccc_valence + ccc_arousal) / 2"

    def to_dict(self) -> dict[str, float]:
        """Flat ``name → float``: score, ccc_valence, ccc_arousal."""
        return {
            "score": self.score,
            "ccc_valence": self.ccc_valence,
            "ccc_arousal": self.ccc_arousal,
        }


@dataclass(frozen=True)
class MtlScores:
    """Multi-task scores: ``score`` = P_VA + P_EXPR + P_AU (range 0–3)."""

    score: float
    va: VaScores
    expr: ExprScores
    au: AuScores
    formula: str = "va.score + expr.score + au.score"

    def to_dict(self) -> dict[str, float]:
        """Flat ``name → float``: score, then ``va/…``, ``expr/…``, ``au/…``."""
        out = {"score": self.score}
        for prefix, part in (("va", self.va), ("expr", self.expr), ("au", self.au)):
            out.update({f"{prefix}/{k}": v for k, v in part.to_dict().items()})
        return out


Scores = ExprScores | AuScores | VaScores | MtlScores


# --------------------------------------------------------------------------- CCC


def ccc(x: ArrayLike, y: ArrayLike) -> float:
    """Concordance correlation coefficient of two 1-D series.

    ``2·cov(x, y) / (var(x) + var(y) + (mean(x) − mean(y))²)`` with population moments (1/N),
    computed in float64. Symmetric in ``x`` and ``y``.

    Parameters
    ----------
    x, y
        Equal-length 1-D sequences of finite numbers (predictions and labels, either order).

    Returns
    -------
    float
        In [-1, 1]. Constant inputs: when both are constant the value is 1.0 if they are equal
        (perfect agreement, the only 0/0 case) and 0.0 otherwise; when one is constant the
        covariance is 0, so the value is 0.0.

    Raises
    ------
    InputError
        Different lengths, empty input, or a non-finite value.
    """
    xa = np.asarray(x, dtype=np.float64).reshape(-1)
    ya = np.asarray(y, dtype=np.float64).reshape(-1)
    if xa.shape != ya.shape:
        raise InputError(f"ccc needs equal lengths, got {xa.size} and {ya.size}")
    if xa.size == 0:
        raise InputError("ccc of an empty series (no annotated frame)")
    if not (np.isfinite(xa).all() and np.isfinite(ya).all()):
        raise InputError("ccc got a non-finite value (NaN or inf)")
    x_const = bool(np.all(xa == xa[0]))
    y_const = bool(np.all(ya == ya[0]))
    if x_const and y_const:
        return 1.0 if xa[0] == ya[0] else 0.0
    if x_const or y_const:
        # cov is exactly 0; computing it would leave rounding noise of the mean behind.
        return 0.0
    mx, my = xa.mean(), ya.mean()
    dx, dy = xa - mx, ya - my
    cov = np.mean(dx * dy)
    return float(2.0 * cov / (np.mean(dx * dx) + np.mean(dy * dy) + (mx - my) ** 2))


# --------------------------------------------------------------------------- input handling


def _mask_1d(mask: ArrayLike | None, n: int, what: str) -> np.ndarray:
    if mask is None:
        return np.ones(n, dtype=bool)
    m = np.asarray(mask)
    if m.dtype != bool:
        raise InputError(f"{what} mask must be boolean (True = annotated), got {m.dtype}")
    if m.shape != (n,):
        raise InputError(f"{what} mask has shape {m.shape}, expected ({n},)")
    return m


def _mask_2d(mask: ArrayLike | None, shape: tuple[int, int], what: str) -> np.ndarray:
    if mask is None:
        return np.ones(shape, dtype=bool)
    m = np.asarray(mask)
    if m.dtype != bool:
        raise InputError(f"{what} mask must be boolean (True = annotated), got {m.dtype}")
    if m.shape == (shape[0],):
        return np.repeat(m[:, None], shape[1], axis=1)
    if m.shape != shape:
        raise InputError(f"{what} mask has shape {m.shape}, expected ({shape[0]},) or {shape}")
    return m


def _as_int_labels(a: np.ndarray, what: str) -> np.ndarray:
    if a.dtype == bool:
        return a.astype(np.int64)
    if np.issubdtype(a.dtype, np.integer):
        return a.astype(np.int64)
    if not np.isfinite(a).all() or not np.all(a == np.round(a)):
        raise InputError(f"{what} must be integer labels, got non-integer values")
    return a.astype(np.int64)


def _formula(f1_name: str, f1_weight: float, accuracy_weight: float) -> str:
    if accuracy_weight == 0.0 and f1_weight == 1.0:
        return f1_name
    return f"{f1_weight:g}*{f1_name} + {accuracy_weight:g}*accuracy"


def _binary_f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denom = 2 * tp + fp + fn
    # 0 where there is no true and no predicted positive (scikit-learn's zero_division default).
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


# --------------------------------------------------------------------------- per track


def expr_scores(
    pred: ArrayLike,
    true: ArrayLike,
    n_classes: int,
    mask: ArrayLike | None = None,
    *,
    f1_weight: float = 1.0,
    accuracy_weight: float = 0.0,
    class_names: tuple[str, ...] | None = None,
) -> ExprScores:
    """Expression classification: macro F1, accuracy and per-class F1.

    Parameters
    ----------
    pred
        ``(N,)`` predicted class indices, or ``(N, n_classes)`` scores (argmax is taken).
    true
        ``(N,)`` labels in ``0 … n_classes-1``; ``-1`` marks an unannotated frame (excluded).
    n_classes
        Number of classes the macro F1 averages over (7 for ABAW1/2, 8 from ABAW3).
    mask
        Optional ``(N,)`` booleans, True = use the frame (applied on top of the ``-1`` rule).
    f1_weight, accuracy_weight
        ``score = f1_weight·f1_macro + accuracy_weight·accuracy``; the defaults give the ABAW3+
        score, ``official_score`` sets 0.67/0.33 for ABAW1/2.
    class_names
        Names for ``per_class_f1`` in ``to_dict``; default: the ABAW names for 7 or 8 classes,
        else ``class0 …``.

    Returns
    -------
    ExprScores
        ``f1_macro`` equals ``sklearn.metrics.f1_score(true, pred, average="macro",
        labels=range(n_classes), zero_division=0)`` over the annotated frames.

    Raises
    ------
    InputError
        Mismatched shapes, labels out of range, or no annotated frame.
    """
    if n_classes < 2:
        raise InputError(f"n_classes must be at least 2, got {n_classes}")
    p = np.asarray(pred)
    t = np.asarray(true)
    if t.ndim == 2 and t.shape[1] == 1:
        t = t.reshape(-1)
    t = _as_int_labels(t, "EXPR labels")
    if t.ndim != 1:
        raise InputError(f"EXPR labels must be 1-D class indices, got shape {t.shape}")
    if p.ndim == 2 and p.shape[1] == n_classes:
        p = np.argmax(p, axis=1)
    elif p.ndim == 2 and p.shape[1] == 1:
        p = p.reshape(-1)
    if p.ndim != 1:
        raise InputError(
            f"EXPR predictions have shape {p.shape}; expected ({t.size},) class indices "
            f"or ({t.size}, {n_classes}) scores"
        )
    p = _as_int_labels(p, "EXPR predictions")
    if p.shape != t.shape:
        raise InputError(f"EXPR predictions ({p.size}) and labels ({t.size}) differ in length")
    keep = _mask_1d(mask, t.size, "EXPR") & (t != EXPR_UNANNOTATED)
    p, t = p[keep], t[keep]
    if t.size == 0:
        raise InputError("no annotated EXPR frame to score")
    if t.min() < 0 or t.max() >= n_classes:
        raise InputError(f"EXPR labels outside 0…{n_classes - 1} (and -1 for unannotated)")
    if p.min() < 0 or p.max() >= n_classes:
        raise InputError(f"EXPR predictions outside 0…{n_classes - 1}")

    tp = np.bincount(t[p == t], minlength=n_classes).astype(np.float64)
    n_true = np.bincount(t, minlength=n_classes).astype(np.float64)
    n_pred = np.bincount(p, minlength=n_classes).astype(np.float64)
    per_class = _binary_f1(tp, n_pred - tp, n_true - tp)
    f1 = float(per_class.mean())
    acc = float(tp.sum() / t.size)
    if class_names is None:
        class_names = {7: EXPR_CLASSES_7, 8: EXPR_CLASSES_8}.get(
            n_classes, tuple(f"class{i}" for i in range(n_classes))
        )
    if len(class_names) != n_classes:
        raise InputError(f"{len(class_names)} class names for {n_classes} classes")
    return ExprScores(
        score=f1_weight * f1 + accuracy_weight * acc,
        f1_macro=f1,
        accuracy=acc,
        per_class_f1=tuple(float(v) for v in per_class),
        class_names=tuple(class_names),
        n_frames=int(t.size),
        formula=_formula("f1_macro", f1_weight, accuracy_weight),
    )


def au_scores(
    pred: ArrayLike,
    true: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    f1_weight: float = 1.0,
    accuracy_weight: float = 0.0,
    au_names: tuple[str, ...] | None = None,
) -> AuScores:
    """Action-unit detection: per-AU binary F1, their mean, and accuracy.

    Parameters
    ----------
    pred
        ``(N, n_aus)`` binary predictions (0/1 or booleans). Threshold probabilities first,
        e.g. ``prob >= 0.5``.
    true
        ``(N, n_aus)`` labels 0/1; ``-1`` marks an unannotated entry (excluded for that AU).
    mask
        Optional booleans, ``(N,)`` per frame or ``(N, n_aus)`` per entry, True = use.
    f1_weight, accuracy_weight
        ``score = f1_weight·f1_mean + accuracy_weight·accuracy``; defaults: the ABAW3+ score;
        ``official_score`` sets 0.5/0.5 for ABAW1/2.
    au_names
        Names for ``per_au_f1`` in ``to_dict``; default: the ABAW names for 12 or 8 AUs.

    Returns
    -------
    AuScores
        ``per_au_f1[j]`` equals ``sklearn.metrics.f1_score(true[:, j], pred[:, j])`` over AU j's
        annotated frames (0 when AU j has no true and no predicted positive). ``accuracy`` is
        the fraction of correct entries over all annotated (frame, AU) entries together, as in
        the ABAW1/2 evaluation code (``accuracy(x.reshape(-1), y.reshape(-1))``); when every AU
        is annotated on the same frames it equals the mean of ``per_au_accuracy``.

    Raises
    ------
    InputError
        Mismatched shapes, values other than 0/1, or an AU with no annotated frame.
    """
    t = _as_int_labels(np.asarray(true), "AU labels")
    p = np.asarray(pred)
    if t.ndim != 2:
        raise InputError(f"AU labels must be (frames, AUs), got shape {t.shape}")
    if p.shape != t.shape:
        raise InputError(f"AU predictions have shape {p.shape}, labels {t.shape}")
    if p.dtype != bool and not np.isin(p, (0, 1)).all():
        raise InputError(
            "AU predictions must be 0/1", hint="threshold the probabilities first, e.g. p >= 0.5"
        )
    p = p.astype(np.int64)
    keep = _mask_2d(mask, t.shape, "AU") & (t != AU_UNANNOTATED)
    if not np.isin(t[keep], (0, 1)).all():
        raise InputError("AU labels must be 0/1 (and -1 for unannotated)")
    n_aus = t.shape[1]
    counts = keep.sum(axis=0)
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        raise InputError(f"no annotated frame for AU column(s) {', '.join(map(str, empty))}")

    pos_t, pos_p = (t == 1) & keep, (p == 1) & keep
    tp = (pos_t & pos_p).sum(axis=0).astype(np.float64)
    fp = (~pos_t & pos_p).sum(axis=0).astype(np.float64)
    fn = (pos_t & ~pos_p).sum(axis=0).astype(np.float64)
    per_au = _binary_f1(tp, fp, fn)
    correct = ((p == t) & keep).sum(axis=0)
    per_au_acc = correct / counts
    f1 = float(per_au.mean())
    acc = float(correct.sum() / counts.sum())
    if au_names is None:
        au_names = {12: AU_NAMES_12, 8: AU_NAMES_8}.get(
            n_aus, tuple(f"au{i}" for i in range(n_aus))
        )
    if len(au_names) != n_aus:
        raise InputError(f"{len(au_names)} AU names for {n_aus} AU columns")
    return AuScores(
        score=f1_weight * f1 + accuracy_weight * acc,
        f1_mean=f1,
        accuracy=acc,
        per_au_f1=tuple(float(v) for v in per_au),
        per_au_accuracy=tuple(float(v) for v in per_au_acc),
        au_names=tuple(au_names),
        n_frames=int(keep.any(axis=1).sum()),
        formula=_formula("f1_mean", f1_weight, accuracy_weight),
    )


def va_scores(pred: ArrayLike, true: ArrayLike, mask: ArrayLike | None = None) -> VaScores:
    """Valence-arousal: CCC of each dimension and their mean (the official score).

    Parameters
    ----------
    pred
        ``(N, 2)`` predicted valence, arousal.
    true
        ``(N, 2)`` labels; a frame with ``-5`` in either field is unannotated and excluded from
        both dimensions.
    mask
        Optional booleans, ``(N,)`` per frame or ``(N, 2)`` per dimension, True = use.

    Returns
    -------
    VaScores
        ``score = (ccc_valence + ccc_arousal) / 2``; CCC as in :func:`ccc`.

    Raises
    ------
    InputError
        Mismatched shapes, a non-finite value on a kept frame, or no annotated frame.
    """
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    if t.ndim != 2 or t.shape[1] != 2:
        raise InputError(f"VA labels must be (frames, 2), got shape {t.shape}")
    if p.shape != t.shape:
        raise InputError(f"VA predictions have shape {p.shape}, labels {t.shape}")
    annotated = ~(t == VA_UNANNOTATED).any(axis=1)
    keep = _mask_2d(mask, t.shape, "VA") & annotated[:, None]
    values = []
    for d, name in enumerate(("valence", "arousal")):
        k = keep[:, d]
        if not k.any():
            raise InputError(f"no annotated {name} frame to score")
        try:
            values.append(ccc(p[k, d], t[k, d]))
        except InputError as e:
            raise InputError(f"{name}: {e.message}") from e
    return VaScores(
        score=(values[0] + values[1]) / 2.0,
        ccc_valence=values[0],
        ccc_arousal=values[1],
        n_valence=int(keep[:, 0].sum()),
        n_arousal=int(keep[:, 1].sum()),
    )


# --------------------------------------------------------------------------- editions


def _edition(edition: str) -> tuple[str, dict[str, TrackSpec]]:
    key = str(edition).strip().lower().replace("-", "").replace("_", "")
    if key not in EDITIONS:
        raise InputError(
            f"unknown ABAW edition {edition!r}", hint="choose among " + ", ".join(EDITIONS)
        )
    return key, EDITIONS[key]


def edition_tracks(edition: str) -> tuple[str, ...]:
    """The tracks of an edition, e.g. ``("VA", "EXPR", "AU", "MTL")`` for ``"abaw3"``."""
    return tuple(_edition(edition)[1])


def track_spec(track: str, edition: str) -> TrackSpec:
    """How ``track`` is scored in ``edition``; a track the edition does not have raises.

    Raises
    ------
    InputError
        Unknown edition, unknown track, or a track the edition did not run.
    """
    key, tracks = _edition(edition)
    name = str(track).strip().upper()
    if name not in TRACKS:
        raise InputError(f"unknown track {track!r}", hint="choose among " + ", ".join(TRACKS))
    if name not in tracks:
        has = [e.upper() for e, t in EDITIONS.items() if name in t]
        raise InputError(
            f"{key.upper()} has no {name} track (its tracks: {', '.join(tracks)})",
            hint=f"{name} was run in {', '.join(has)}",
        )
    return tracks[name]


def _mtl_part(values: Mapping[str, Any] | None, task: str, what: str) -> Any:
    if values is None:
        return None
    found = {str(k).upper(): v for k, v in values.items()}
    unknown = set(found) - {"VA", "EXPR", "AU"}
    if unknown:
        raise InputError(f"unknown MTL task(s) {', '.join(sorted(unknown))} in {what}")
    if task not in found and what != "mask":
        raise InputError(f"MTL {what} lacks the {task} entry (needs VA, EXPR and AU)")
    return found.get(task)


def mtl_scores(
    pred: Mapping[str, ArrayLike],
    true: Mapping[str, ArrayLike],
    mask: Mapping[str, ArrayLike] | None = None,
    *,
    n_classes: int = 8,
) -> MtlScores:
    """Multi-task score on s-Aff-Wild2 rows: P_VA + P_EXPR + P_AU.

    Parameters
    ----------
    pred, true
        Mappings with keys ``"VA"``, ``"EXPR"``, ``"AU"`` (any case) holding what
        :func:`va_scores`, :func:`expr_scores` and :func:`au_scores` take. Each task is scored
        on its own annotated rows (``-5`` VA, ``-1`` EXPR, ``-1`` AU are excluded).
    mask
        Optional mapping of the same keys to extra masks (a missing key means no extra mask).
    n_classes
        Expression classes (8 in every MTL edition).

    Returns
    -------
    MtlScores
        The three track scores (ABAW3+ formulas) and their sum.
    """
    va = va_scores(
        _mtl_part(pred, "VA", "predictions"),
        _mtl_part(true, "VA", "labels"),
        _mtl_part(mask, "VA", "mask"),
    )
    expr = expr_scores(
        _mtl_part(pred, "EXPR", "predictions"),
        _mtl_part(true, "EXPR", "labels"),
        n_classes,
        _mtl_part(mask, "EXPR", "mask"),
    )
    au = au_scores(
        _mtl_part(pred, "AU", "predictions"),
        _mtl_part(true, "AU", "labels"),
        _mtl_part(mask, "AU", "mask"),
    )
    return MtlScores(score=va.score + expr.score + au.score, va=va, expr=expr, au=au)


def official_score(
    track: str,
    edition: str,
    pred: Any,
    true: Any,
    mask: Any = None,
) -> Scores:
    """Score predictions with the official formula of ``track`` in ``edition``.

    ============  ==================================  ==============================
    track         ABAW1 / ABAW2                       ABAW3 onwards
    ============  ==================================  ==============================
    EXPR          0.67·macro-F1 + 0.33·accuracy (7)   macro F1 over 8 classes
    AU            0.5·mean F1 + 0.5·accuracy          mean F1 over 12 AUs
    VA            (CCC_v + CCC_a) / 2                 (CCC_v + CCC_a) / 2
    MTL           —                                   P_VA + P_EXPR + P_AU (ABAW3, 4, 7)
    LSD           —                                   macro F1 over 6 classes (ABAW4)
    ============  ==================================  ==============================

    ABAW1 has 8 AUs, later editions 12.

    Parameters
    ----------
    track
        ``"VA"``, ``"EXPR"``, ``"AU"``, ``"MTL"`` or ``"LSD"`` (any case).
    edition
        ``"abaw1"`` … ``"abaw8"`` (any case).
    pred, true, mask
        As for :func:`va_scores`, :func:`expr_scores` (also LSD), :func:`au_scores`; for MTL,
        mappings keyed ``"VA"``, ``"EXPR"``, ``"AU"`` as for :func:`mtl_scores`.

    Returns
    -------
    VaScores | ExprScores | AuScores | MtlScores
        Its ``score`` field is the official value.

    Raises
    ------
    InputError
        Unknown edition or track, a track the edition did not run, or labels whose size does
        not match the edition (e.g. 8 AU columns for ABAW2).
    """
    spec = track_spec(track, edition)
    name = str(track).strip().upper()
    if name == "VA":
        return va_scores(pred, true, mask)
    if name in ("EXPR", "LSD"):
        return expr_scores(
            pred,
            true,
            spec.n_classes,
            mask,
            f1_weight=spec.f1_weight,
            accuracy_weight=spec.accuracy_weight,
        )
    if name == "AU":
        n_cols = np.shape(true)[1] if np.ndim(true) == 2 else None
        if n_cols != spec.n_aus:
            raise InputError(
                f"{str(edition).upper()} AU labels have {spec.n_aus} columns, got shape "
                f"{np.shape(true)}"
            )
        return au_scores(
            pred, true, mask, f1_weight=spec.f1_weight, accuracy_weight=spec.accuracy_weight
        )
    # MTL: the only remaining track.
    if not isinstance(pred, Mapping) or not isinstance(true, Mapping):
        raise InputError("MTL predictions and labels must be mappings keyed VA, EXPR, AU")
    if mask is not None and not isinstance(mask, Mapping):
        raise InputError("an MTL mask must be a mapping keyed VA, EXPR, AU")
    au_true = _mtl_part(true, "AU", "labels")
    if np.ndim(au_true) != 2 or np.shape(au_true)[1] != spec.n_aus:
        raise InputError(f"MTL AU labels have {spec.n_aus} columns, got {np.shape(au_true)}")
    return mtl_scores(pred, true, mask, n_classes=spec.n_classes)
