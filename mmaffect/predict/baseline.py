"""The ``baseline`` predictor: ABAW outputs from the pretrained components alone, no training.

- **EXPR** from the face model this project trained on FER2013 and ships
  (``fer2013_face_expression``, run as the frame branch on the detector's box; FER2013 has no
  "Other", so it is ~0). :func:`baseline_outputs` without it maps the ``clip`` entry's
  probabilities: FER2013 mini-Xception's by :data:`FER_TO_EXPR`, or the ABAW classes of a
  trained face model (``extract --expression-model``).
- **AU** from the MediaPipe blendshapes through :data:`AU_FROM_BLENDSHAPES`: an AU's score is
  the mean of its blendshapes, and its probability a logistic of that score centred at
  :data:`AU_ONSET` (per AU) with slope :data:`AU_SLOPE`.
- **VA** from the expression probabilities: ``Σ p_c · (v_c, a_c)`` with the circumplex
  coordinates of :data:`CIRCUMPLEX`.

None of this was fitted on Aff-Wild2; it is a starting point that needs no training data, not a
challenge-grade system (see ``docs/predict.md``). Every output says ``predictor: baseline``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mmaffect.annotations import AU_12, EXPR_8

__all__ = [
    "AU_FROM_BLENDSHAPES",
    "AU_ONSET",
    "AU_SLOPE",
    "BASELINE_AU_NAMES",
    "CIRCUMPLEX",
    "FER_TO_EXPR",
    "baseline_outputs",
]

#: FER2013 output (column ``p_<name>`` of the clip entry) → ABAW EXPR class.
FER_TO_EXPR: dict[str, str] = {
    "neutral": "Neutral",
    "angry": "Anger",
    "disgust": "Disgust",
    "fear": "Fear",
    "happy": "Happiness",
    "sad": "Sadness",
    "surprise": "Surprise",
}

#: (valence, arousal) of each EXPR class: pleasure and arousal of the emotion terms in Russell &
#: Mehrabian (1977), "Evidence for a three-factor theory of emotions", J. Res. Personality 11,
#: table 3 (angry, disgusted, afraid, happy, sad, surprised), Neutral at the origin. "Other" is
#: never predicted by the baseline and sits at the origin.
CIRCUMPLEX: dict[str, tuple[float, float]] = {
    "Neutral": (0.0, 0.0),
    "Anger": (-0.51, 0.59),
    "Disgust": (-0.60, 0.35),
    "Fear": (-0.64, 0.60),
    "Happiness": (0.81, 0.51),
    "Sadness": (-0.63, -0.27),
    "Surprise": (0.40, 0.67),
    "Other": (0.0, 0.0),
}

#: ABAW AU → MediaPipe blendshapes (ARKit names) whose mean is its score. AU20 is included for
#: ABAW1's 8-AU track. Approximate correspondences are marked in ``docs/predict.md``.
AU_FROM_BLENDSHAPES: dict[str, tuple[str, ...]] = {
    "AU1": ("browInnerUp",),  # inner brow raiser
    "AU2": ("browOuterUpLeft", "browOuterUpRight"),  # outer brow raiser
    "AU4": ("browDownLeft", "browDownRight"),  # brow lowerer
    "AU6": ("cheekSquintLeft", "cheekSquintRight"),  # cheek raiser
    "AU7": ("eyeSquintLeft", "eyeSquintRight"),  # lid tightener
    "AU10": ("mouthUpperUpLeft", "mouthUpperUpRight"),  # upper lip raiser
    "AU12": ("mouthSmileLeft", "mouthSmileRight"),  # lip corner puller
    "AU15": ("mouthFrownLeft", "mouthFrownRight"),  # lip corner depressor
    "AU23": ("mouthRollLower", "mouthRollUpper"),  # lip tightener (approximate)
    "AU24": ("mouthPressLeft", "mouthPressRight"),  # lip pressor
    "AU25": ("jawOpen",),  # lips part (approximate: jaw opening parts the lips)
    "AU26": ("jawOpen",),  # jaw drop
    "AU20": ("mouthStretchLeft", "mouthStretchRight"),  # lip stretcher (ABAW1)
}

#: AU order of the baseline's outputs: the 12 of ABAW2+, then AU20.
BASELINE_AU_NAMES: tuple[str, ...] = (*(str(n) for n in AU_12.names), "AU20")

#: Blendshape score at which an AU's probability is 0.5. Blendshape scores are not
#: probabilities and their ranges differ per shape. These onsets were set by looking at the
#: 90th percentile of each score on the 14 RAVDESS clips of ``../shared/data`` (the neutral clip
#: against the happy, sad and surprised ones; e.g. eye squint sits at 0.5 on a neutral face, a
#: smile at 0.0 neutral and 0.84 happy), not fitted to AU labels; lips part (AU25) earlier than
#: the jaw visibly drops (AU26). See ``docs/predict.md``.
AU_ONSET: dict[str, float] = {
    "AU1": 0.30,
    "AU2": 0.30,
    "AU4": 0.25,
    "AU6": 0.30,
    "AU7": 0.60,
    "AU10": 0.30,
    "AU12": 0.40,
    "AU15": 0.20,
    "AU23": 0.30,
    "AU24": 0.30,
    "AU25": 0.10,
    "AU26": 0.30,
    "AU20": 0.20,
}

#: Width of the logistic around the onset (score units).
AU_SLOPE = 0.05


def _column_index(columns: list[str]) -> dict[str, int]:
    return {c: i for i, c in enumerate(columns)}


def baseline_outputs(
    clip_values: np.ndarray, columns: list[str], expr: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """EXPR probabilities, VA and AU probabilities from rows of the ``clip`` entry.

    Parameters
    ----------
    clip_values
        ``(n, 190)`` rows of the clip entry (zeros where no face).
    columns
        The entry's column names (``p_angry`` …, ``bs_<name>`` …).
    expr
        ``(n, 8)`` ABAW expression probabilities of a face model (the shipped
        :data:`~mmaffect.store.registry.FACE_EXPRESSION_MODEL`); without them, the clip
        entry's expression probabilities.

    Returns
    -------
    dict
        ``expr`` ``(n, 8)`` over :data:`EXPR_8` (``Other`` 0), ``va`` ``(n, 2)``, ``au``
        ``(n, 13)`` in :data:`BASELINE_AU_NAMES` order; float32.
    """
    col = _column_index(columns)
    x = np.asarray(clip_values, dtype=np.float32)
    n = x.shape[0]
    names = [str(c) for c in EXPR_8.names]
    if expr is None:
        expr = _clip_expression(x, col, names)
    total = expr.sum(axis=1, keepdims=True)
    expr = np.where(total > 0, expr / np.where(total > 0, total, 1), 0).astype(np.float32)
    coords = np.array([CIRCUMPLEX[c] for c in names], np.float32)
    va = (expr @ coords).astype(np.float32)
    au = np.zeros((n, len(BASELINE_AU_NAMES)), np.float32)
    for j, name in enumerate(BASELINE_AU_NAMES):
        shapes = AU_FROM_BLENDSHAPES[name]
        score = np.mean([x[:, col[f"bs_{s}"]] for s in shapes], axis=0)
        au[:, j] = 1.0 / (1.0 + np.exp(-(score - AU_ONSET[name]) / AU_SLOPE))
    return {"expr": expr, "va": np.clip(va, -1, 1), "au": au}


def _clip_expression(x: np.ndarray, col: dict[str, int], names: list[str]) -> np.ndarray:
    """The clip entry's expression probabilities over the ABAW classes."""
    expr = np.zeros((x.shape[0], len(names)), np.float32)
    for fer, abaw in FER_TO_EXPR.items():
        # mini-Xception's columns are FER2013 names; a trained face model's are ABAW names
        name = f"p_{abaw}" if f"p_{abaw}" in col else f"p_{fer}"
        expr[:, names.index(abaw)] = x[:, col[name]]
    if "p_Other" in col:
        expr[:, names.index("Other")] = x[:, col["p_Other"]]
    return expr


def describe() -> Mapping[str, object]:
    """The baseline's mappings, for the sidecar metadata of its outputs."""
    return {
        "expr": "fer2013_face_expression: EfficientNet-Lite0 trained by mmaffect on FER2013 "
        "(the frame branch's outputs; FER2013 has no Other)",
        "va": "expectation of Russell & Mehrabian (1977) circumplex coordinates",
        "au": "MediaPipe blendshapes, logistic around per-AU onsets",
        "fer_to_expr": FER_TO_EXPR,
        "circumplex": {k: list(v) for k, v in CIRCUMPLEX.items()},
        "au_from_blendshapes": {k: list(v) for k, v in AU_FROM_BLENDSHAPES.items()},
        "au_onset": AU_ONSET,
        "au_slope": AU_SLOPE,
    }
