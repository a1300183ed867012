"""Prediction internals: fill rule, smoothing, the baseline's mappings, the frame-count rule."""

from __future__ import annotations

import numpy as np
import pytest

from mmaffect.errors import InputError
from mmaffect.predict.baseline import (
    AU_FROM_BLENDSHAPES,
    BASELINE_AU_NAMES,
    CIRCUMPLEX,
    FER_TO_EXPR,
    baseline_outputs,
)
from mmaffect.predict.compute import fill_missing, smooth
from mmaffect.predict.result import VideoPrediction, load_prediction, save_prediction

FER = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
BLENDSHAPES = sorted({s for shapes in AU_FROM_BLENDSHAPES.values() for s in shapes})
COLUMNS = [f"expr_feat_{i}" for i in range(3)] + [f"p_{c}" for c in FER]
COLUMNS += [f"bs_{b}" for b in BLENDSHAPES] + ["yaw", "pitch", "roll"]


def clip_rows(n: int) -> np.ndarray:
    return np.zeros((n, len(COLUMNS)), np.float32)


def test_fill_interpolate_hold_model():
    expr = np.array([[1, 0], [0, 0], [0, 0], [0, 1], [0, 0]], np.float32)
    va = np.array([[0.0, 0], [9, 9], [9, 9], [0.6, -0.3], [9, 9]], np.float32)
    face = np.array([True, False, False, True, False])
    out, filled = fill_missing({"expr": expr, "va": va}, face, "interpolate")
    np.testing.assert_array_equal(filled, ~face)
    np.testing.assert_allclose(out["expr"][1], [2 / 3, 1 / 3], atol=1e-6)
    np.testing.assert_allclose(out["va"][2], [0.4, -0.2], atol=1e-6)
    np.testing.assert_allclose(out["va"][4], [0.6, -0.3])  # held after the last face
    np.testing.assert_allclose(out["expr"].sum(1), 1.0, atol=1e-6)  # still distributions
    held, _ = fill_missing({"va": va}, face, "hold")
    np.testing.assert_allclose(held["va"][[1, 2, 4]], [[0, 0], [0, 0], [0.6, -0.3]])
    first_missing = np.array([False, True, True, True, True])
    held, _ = fill_missing({"va": va}, first_missing, "hold")
    np.testing.assert_allclose(held["va"][0], va[1])  # before the first face: the first face
    kept, filled = fill_missing({"va": va}, face, "model")
    assert kept["va"] is va and not filled.any()
    with pytest.raises(InputError, match="unknown fill rule"):
        fill_missing({"va": va}, face, "nearest")


def test_fill_without_any_face_is_the_neutral_prior():
    out, filled = fill_missing(
        {"expr": np.full((3, 8), 0.125, np.float32), "va": np.ones((3, 2), np.float32),
         "au": np.ones((3, 12), np.float32)},
        np.zeros(3, bool), "interpolate",
    )  # fmt: skip
    assert filled.all()
    assert (out["expr"][:, 0] == 1).all() and out["expr"][:, 1:].sum() == 0
    assert not out["va"].any() and not out["au"].any()


def test_smooth_moving_average():
    va = np.zeros((7, 2), np.float32)
    va[3] = [0.9, -0.6]
    out = smooth({"va": va}, 3)
    np.testing.assert_allclose(out["va"][2:5], [[0.3, -0.2]] * 3, atol=1e-6)
    assert out["va"][0].tolist() == [0, 0] and out["va"][6].tolist() == [0, 0]
    expr = np.random.default_rng(0).dirichlet(np.ones(8), size=20).astype(np.float32)
    e = smooth({"expr": expr}, 5)["expr"]
    np.testing.assert_allclose(e.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(e[10], expr[8:13].mean(0), atol=1e-5)
    assert smooth({"va": va}, 1)["va"] is va


def test_baseline_expression_va_and_aus():
    x = clip_rows(3)
    col = {c: i for i, c in enumerate(COLUMNS)}
    x[0, col["p_happy"]] = 1.0
    x[1, col["p_sad"]], x[1, col["p_neutral"]] = 0.5, 0.5
    x[0, col["bs_mouthSmileLeft"]] = x[0, col["bs_mouthSmileRight"]] = 0.9
    x[0, col["bs_jawOpen"]] = 0.5
    out = baseline_outputs(x, COLUMNS)
    names = ["Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Other"]
    assert out["expr"].shape == (3, 8) and out["au"].shape == (3, len(BASELINE_AU_NAMES))
    assert out["expr"][0, names.index("Happiness")] == pytest.approx(1.0)
    assert out["expr"][:, names.index("Other")].max() == 0  # FER2013 has no Other
    np.testing.assert_allclose(out["va"][0], CIRCUMPLEX["Happiness"], atol=1e-6)
    sad, neutral = np.array(CIRCUMPLEX["Sadness"]), np.array(CIRCUMPLEX["Neutral"])
    np.testing.assert_allclose(out["va"][1], 0.5 * sad + 0.5 * neutral, atol=1e-6)
    au = dict(zip(BASELINE_AU_NAMES, out["au"][0], strict=True))
    assert au["AU12"] > 0.99 and au["AU26"] > 0.95 and au["AU25"] > 0.99
    assert au["AU4"] < 0.01 and out["au"][2].max() < 0.15  # a face at rest (AU25 onset 0.1)
    assert out["expr"][2].sum() == 0  # no face: nothing (the fill rule decides)


def test_baseline_tables_cover_their_spaces():
    assert set(FER_TO_EXPR) == set(FER)
    assert set(CIRCUMPLEX) >= set(FER_TO_EXPR.values())
    assert set(BASELINE_AU_NAMES) == set(AU_FROM_BLENDSHAPES)
    from mmaffect.faces.landmarker import BLENDSHAPE_NAMES

    assert set(BLENDSHAPES) <= set(BLENDSHAPE_NAMES)


def _prediction(n: int = 6) -> VideoPrediction:
    rng = np.random.default_rng(1)
    return VideoPrediction(
        "v", 25.0, np.arange(n) / 25.0,
        expr_probs=rng.dirichlet(np.ones(8), size=n).astype(np.float32),
        va=rng.uniform(-1, 1, (n, 2)).astype(np.float32),
        au_probs=rng.uniform(0, 1, (n, 12)).astype(np.float32),
        face_found=np.array([True] * (n - 1) + [False]),
        words=["hi"] * n,
    )  # fmt: skip


def test_with_length_holds_last_row_and_marks_it(tmp_path):
    p = _prediction()
    q = p.with_length(8)
    assert len(q) == 8 and q.filled.tolist() == [False] * 6 + [True] * 2
    np.testing.assert_array_equal(q.va[6], p.va[5])
    assert q.words[6:] == ["", ""] and not q.face_found[6:].any()
    np.testing.assert_allclose(np.diff(q.times), 1 / 25.0)
    assert len(p.with_length(4)) == 4
    save_prediction(q, tmp_path / "v.npz")
    r = load_prediction(tmp_path / "v.npz")
    np.testing.assert_array_equal(r.au_probs, q.au_probs)
    assert r.words == q.words and r.filled.tolist() == q.filled.tolist()
    with pytest.raises(InputError, match="has 3 rows for 6 frames"):
        VideoPrediction("v", 25.0, np.arange(6) / 25.0, va=np.zeros((3, 2), np.float32))
