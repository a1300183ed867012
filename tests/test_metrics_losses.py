"""The ABAW metrics (against scikit-learn and a direct numpy CCC) and the training losses
(against direct loops), with the unannotated sentinels, masks and all-masked batches.
"""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score

from mmaffect import losses as L
from mmaffect.errors import InputError
from mmaffect.metrics import (
    EDITIONS,
    AuScores,
    ExprScores,
    MtlScores,
    VaScores,
    au_scores,
    ccc,
    edition_tracks,
    expr_scores,
    official_score,
    va_scores,
)

torch.set_num_threads(2)
SEEDS = range(20)


def np_ccc(x: np.ndarray, y: np.ndarray, eps: float = 0.0) -> float:
    """CCC straight from the definition, population moments."""
    cov = np.cov(x, y, bias=True)[0, 1]
    return 2 * cov / (np.var(x) + np.var(y) + (x.mean() - y.mean()) ** 2 + eps)


# ------------------------------------------------------------------------------------------
# CCC


@pytest.mark.parametrize("seed", SEEDS)
def test_ccc_matches_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 500))
    x = rng.uniform(-1, 1, n)
    y = 0.6 * x + rng.normal(0.1 * seed % 0.5, 0.4, n)
    assert ccc(x, y) == pytest.approx(np_ccc(x, y), abs=1e-12)
    assert ccc(x, y) == pytest.approx(ccc(y, x), abs=1e-15)
    assert -1.0 <= ccc(x, y) <= 1.0


def test_ccc_special_cases() -> None:
    x = np.array([0.1, -0.3, 0.7, 0.2])
    assert ccc(x, x) == pytest.approx(1.0)
    assert ccc(x, -x) == pytest.approx(np_ccc(x, -x))
    assert ccc(np.full(10, 0.1), np.full(10, 0.1)) == 1.0  # identical constants: the 0/0 case
    assert ccc(np.full(5, 0.3), np.full(5, -0.2)) == 0.0  # both constant, means differ
    assert ccc(np.full(4, 0.3), x) == 0.0  # one constant: cov = 0
    assert ccc([0.0, 1.0], [1.0, 2.0]) == pytest.approx(1 / 3)  # 2·0.25 / (0.25+0.25+1)


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        ([], [], "empty"),
        ([1.0, 2.0], [1.0], "equal lengths"),
        ([1.0, np.nan], [1.0, 2.0], "non-finite"),
    ],
)
def test_ccc_rejects(x: list, y: list, message: str) -> None:
    with pytest.raises(InputError, match=message):
        ccc(x, y)


# ------------------------------------------------------------------------------------------
# EXPR


def _sk_macro(t: np.ndarray, p: np.ndarray, n: int) -> float:
    return f1_score(t, p, average="macro", labels=list(range(n)), zero_division=0)


@pytest.mark.parametrize("seed", SEEDS)
def test_expr_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_classes = int(rng.choice([6, 7, 8]))
    n = int(rng.integers(5, 400))
    # Labels miss some classes; predictions miss others (some classes then occur nowhere).
    t_classes = rng.choice(n_classes, size=int(rng.integers(1, n_classes + 1)), replace=False)
    p_classes = rng.choice(n_classes, size=int(rng.integers(1, n_classes + 1)), replace=False)
    true = rng.choice(t_classes, n)
    pred = np.where(rng.random(n) < 0.4, true, rng.choice(p_classes, n))
    pred = np.where(np.isin(pred, p_classes), pred, p_classes[0])
    true[rng.random(n) < 0.1] = -1  # unannotated frames
    true[0] = t_classes[0]
    mask = rng.random(n) < 0.9
    mask[0] = True

    got = expr_scores(pred, true, n_classes, mask)
    keep = mask & (true != -1)
    t, p = true[keep], pred[keep]
    assert got.f1_macro == pytest.approx(_sk_macro(t, p, n_classes), abs=1e-12)
    per_class = f1_score(t, p, average=None, labels=list(range(n_classes)), zero_division=0)
    np.testing.assert_allclose(got.per_class_f1, per_class, atol=1e-12)
    assert got.accuracy == pytest.approx(accuracy_score(t, p), abs=1e-12)
    assert got.n_frames == keep.sum()
    assert got.score == got.f1_macro
    # scikit-learn's default zero_division ("warn") scores the same 0 as zero_division=0.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        default = f1_score(t, p, average="macro", labels=list(range(n_classes)))
    assert got.f1_macro == pytest.approx(default, abs=1e-12)


def test_expr_class_absent_everywhere_scores_zero() -> None:
    true = np.array([0, 0, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, 0])
    got = expr_scores(pred, true, 8)
    assert got.per_class_f1[3:] == (0.0,) * 5
    assert got.f1_macro == pytest.approx((0.5 + 0.8 + 0.0) / 8)
    # A bare f1_score(average="macro") averages over the classes that occur only.
    assert f1_score(true, pred, average="macro") == pytest.approx(1.3 / 3)


def test_expr_scores_take_logits_and_honour_masks() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 8))
    true = rng.integers(0, 8, 50)
    a = expr_scores(logits, true, 8)
    b = expr_scores(logits.argmax(1), true, 8)
    assert a == b
    mask = rng.random(50) < 0.5
    changed = logits.argmax(1).copy()
    changed[~mask] = (changed[~mask] + 1) % 8  # predictions on masked frames do not count
    assert expr_scores(changed, true, 8, mask) == expr_scores(logits.argmax(1), true, 8, mask)
    assert expr_scores(changed, true, 8, mask) == expr_scores(changed[mask], true[mask], 8)


def test_expr_rejects_bad_input() -> None:
    with pytest.raises(InputError, match="outside 0…6"):
        expr_scores([0, 1], [0, 7], 7)
    with pytest.raises(InputError, match="predictions outside"):
        expr_scores([0, 9], [0, 1], 8)
    with pytest.raises(InputError, match="no annotated EXPR frame"):
        expr_scores([0, 1], [-1, -1], 8)
    with pytest.raises(InputError, match="differ in length"):
        expr_scores([0, 1, 2], [0, 1], 8)


# ------------------------------------------------------------------------------------------
# AU


@pytest.mark.parametrize("seed", SEEDS)
def test_au_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, c = int(rng.integers(10, 300)), 12
    true = (rng.random((n, c)) < rng.uniform(0.02, 0.5, c)).astype(int)
    pred = np.where(rng.random((n, c)) < 0.7, true, rng.integers(0, 2, (n, c)))
    pred[:, 0] = 0  # an AU never predicted
    true[:, 1] = 0  # an AU never present
    pred[:, 2], true[:, 2] = 0, 0  # an AU absent from both: F1 = 0
    true[rng.random((n, c)) < 0.1] = -1  # per-AU unannotated entries
    true[0] = np.where(true[0] == -1, 0, true[0])
    mask = rng.random((n, c)) < 0.9
    mask[0] = True

    got = au_scores(pred, true, mask)
    keep = mask & (true != -1)
    f1s = [f1_score(true[keep[:, j], j], pred[keep[:, j], j], zero_division=0) for j in range(c)]
    np.testing.assert_allclose(got.per_au_f1, f1s, atol=1e-12)
    assert got.f1_mean == pytest.approx(np.mean(f1s), abs=1e-12)
    assert got.per_au_f1[2] == 0.0
    # ABAW1/2 accuracy: every annotated (frame, AU) entry together.
    assert got.accuracy == pytest.approx(accuracy_score(true[keep], pred[keep]), abs=1e-12)
    accs = [accuracy_score(true[keep[:, j], j], pred[keep[:, j], j]) for j in range(c)]
    np.testing.assert_allclose(got.per_au_accuracy, accs, atol=1e-12)


def test_au_frame_mask_accuracy_equals_mean_per_au() -> None:
    rng = np.random.default_rng(3)
    true = rng.integers(0, 2, (80, 12))
    pred = rng.integers(0, 2, (80, 12))
    true[::7] = -1  # whole unannotated frames, as in the ABAW label files
    frame_mask = rng.random(80) < 0.8
    got = au_scores(pred, true, frame_mask)
    assert got.accuracy == pytest.approx(np.mean(got.per_au_accuracy), abs=1e-12)
    keep = frame_mask & (true[:, 0] != -1)
    assert got == au_scores(pred[keep], true[keep])
    assert got.n_frames == keep.sum()


def test_au_rejects_probabilities() -> None:
    with pytest.raises(InputError, match=r"AU predictions must be 0/1 \(threshold"):
        au_scores(np.full((3, 12), 0.7), np.zeros((3, 12), int))
    with pytest.raises(InputError, match="no annotated frame for AU column"):
        au_scores(np.zeros((3, 12), int), np.full((3, 12), -1))


# ------------------------------------------------------------------------------------------
# VA


@pytest.mark.parametrize("seed", SEEDS)
def test_va_matches_definition_with_sentinels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    true = rng.uniform(-1, 1, (n, 2))
    pred = np.clip(true * 0.5 + rng.normal(0, 0.3, (n, 2)), -1, 1)
    true[rng.random(n) < 0.1, int(rng.integers(0, 2))] = -5  # -5 in either field
    true[:2] = [[0.1, 0.2], [-0.3, 0.4]]
    mask = rng.random((n, 2)) < 0.9
    mask[:2] = True

    got = va_scores(pred, true, mask)
    frame_ok = (true != -5).all(axis=1)
    kv, ka = mask[:, 0] & frame_ok, mask[:, 1] & frame_ok
    assert got.ccc_valence == pytest.approx(np_ccc(pred[kv, 0], true[kv, 0]), abs=1e-12)
    assert got.ccc_arousal == pytest.approx(np_ccc(pred[ka, 1], true[ka, 1]), abs=1e-12)
    assert got.score == pytest.approx((got.ccc_valence + got.ccc_arousal) / 2)
    assert (got.n_valence, got.n_arousal) == (kv.sum(), ka.sum())


# ------------------------------------------------------------------------------------------
# Edition formulas on hand-computed examples

# EXPR: class 0 F1 = 2·1/(2+2) = 0.5, class 1 = 2·2/(3+2) = 0.8, class 2 = 2·1/(1+2) = 2/3,
# classes 3–6 = 1; accuracy 8/10.
EXPR_TRUE = np.array([0, 0, 1, 1, 2, 2, 3, 4, 5, 6])
EXPR_PRED = np.array([0, 1, 1, 1, 2, 0, 3, 4, 5, 6])
EXPR_F1_SUM = 0.5 + 0.8 + 2 / 3 + 4

# AU: 4 frames, each AU positive on frames 0 and 1; AU1 has one false positive (F1 0.8),
# AU2 one miss (F1 2/3), the 10 others are perfect. 46 of 48 entries are right.
AU_TRUE = np.zeros((4, 12), int)
AU_TRUE[:2] = 1
AU_PRED = AU_TRUE.copy()
AU_PRED[2, 0] = 1
AU_PRED[1, 1] = 0
AU_F1 = (0.8 + 2 / 3 + 10) / 12
AU_ACC = 46 / 48

# VA: valence [0, 1] vs [1, 2] → 1/3; arousal perfect → 1. Unannotated frames are dropped.
VA_TRUE = np.array([[1.0, 0.2], [2.0, 0.4], [-5.0, -5.0]])
VA_PRED = np.array([[0.0, 0.2], [1.0, 0.4], [0.9, -0.9]])
VA_SCORE = (1 / 3 + 1) / 2


@pytest.mark.parametrize("edition", ["abaw1", "abaw2"])
def test_abaw12_expr_formula(edition: str) -> None:
    got = official_score("EXPR", edition, EXPR_PRED, EXPR_TRUE)
    assert isinstance(got, ExprScores)
    assert got.f1_macro == pytest.approx(EXPR_F1_SUM / 7)
    assert got.accuracy == pytest.approx(0.8)
    assert got.score == pytest.approx(0.67 * EXPR_F1_SUM / 7 + 0.33 * 0.8)  # 0.835095…
    assert got.formula == "0.67*f1_macro + 0.33*accuracy"


@pytest.mark.parametrize("edition", ["abaw3", "abaw5", "abaw6", "abaw8"])
def test_abaw3plus_expr_formula(edition: str) -> None:
    got = official_score("expr", edition.upper(), EXPR_PRED, EXPR_TRUE)
    assert got.score == pytest.approx(EXPR_F1_SUM / 8)  # class 7 (Other) absent: F1 0
    assert got.to_dict()["f1_Other"] == 0.0


def test_abaw2_au_formula_and_abaw1_aus() -> None:
    got = official_score("AU", "abaw2", AU_PRED, AU_TRUE)
    assert isinstance(got, AuScores)
    assert got.f1_mean == pytest.approx(AU_F1)
    assert got.accuracy == pytest.approx(AU_ACC)
    assert got.score == pytest.approx(0.5 * AU_F1 + 0.5 * AU_ACC)  # 0.956944…
    abaw1 = official_score("AU", "abaw1", AU_PRED[:, :8], AU_TRUE[:, :8])
    assert abaw1.f1_mean == pytest.approx((0.8 + 2 / 3 + 6) / 8)
    assert abaw1.score == pytest.approx(0.5 * abaw1.f1_mean + 0.5 * 30 / 32)
    assert list(abaw1.to_dict())[3:] == [f"f1_AU{i}" for i in (1, 2, 4, 6, 12, 15, 20, 25)]


def test_abaw3plus_au_and_va_formulas() -> None:
    assert official_score("AU", "abaw8", AU_PRED, AU_TRUE).score == pytest.approx(AU_F1)
    for edition in ("abaw1", "abaw2", "abaw3", "abaw5", "abaw6", "abaw8"):
        got = official_score("VA", edition, VA_PRED, VA_TRUE)
        assert isinstance(got, VaScores)
        assert got.score == pytest.approx(VA_SCORE)


@pytest.mark.parametrize("edition", ["abaw3", "abaw4", "abaw7"])
def test_mtl_formula(edition: str) -> None:
    # MTL rows: each task scored on its own annotated rows (-5 VA, -1 EXPR, -1 AU dropped).
    n = 10
    va_true = np.full((n, 2), -5.0)
    va_pred = np.zeros((n, 2))
    va_true[:3], va_pred[:3] = VA_TRUE, VA_PRED
    au_true = np.full((n, 12), -1)
    au_pred = np.zeros((n, 12), int)
    au_true[5:9], au_pred[5:9] = AU_TRUE, AU_PRED
    pred = {"VA": va_pred, "EXPR": EXPR_PRED, "AU": au_pred}
    true = {"va": va_true, "expr": EXPR_TRUE, "au": au_true}
    got = official_score("MTL", edition, pred, true)
    assert isinstance(got, MtlScores)
    assert got.va.score == pytest.approx(VA_SCORE)
    assert got.expr.score == pytest.approx(EXPR_F1_SUM / 8)
    assert got.au.score == pytest.approx(AU_F1)
    assert got.score == pytest.approx(VA_SCORE + EXPR_F1_SUM / 8 + AU_F1)  # 2.3681
    d = got.to_dict()
    assert d["score"] == got.score and d["va/ccc_valence"] == pytest.approx(1 / 3)
    # ABAW_FORMATS's example: the MTL score is the plain sum of the three.
    example = MtlScores(
        score=0.49 + 0.33 + 0.43,
        va=VaScores(0.49, 0.4, 0.58, 1, 1),
        expr=got.expr,
        au=got.au,
    )
    assert example.score == pytest.approx(1.25)


def test_lsd_track_is_six_class_macro_f1() -> None:
    got = official_score("LSD", "abaw4", EXPR_PRED % 6, EXPR_TRUE % 6)
    assert got.score == got.f1_macro
    assert len(got.per_class_f1) == 6


@pytest.mark.parametrize(
    ("track", "edition", "message"),
    [
        ("MTL", "abaw1", r"ABAW1 has no MTL track \(its tracks: VA, EXPR, AU\) "
         r"\(MTL was run in ABAW3, ABAW4, ABAW7\)"),
        ("VA", "abaw7", r"ABAW7 has no VA track \(its tracks: MTL\)"),
        ("EXPR", "abaw4", r"ABAW4 has no EXPR track \(its tracks: MTL, LSD\)"),
        ("LSD", "abaw8", r"ABAW8 has no LSD track .* \(LSD was run in ABAW4\)"),
        ("VA", "abaw9", r"unknown ABAW edition 'abaw9' \(choose among abaw1, .*abaw8\)"),
        ("CE", "abaw6", r"unknown track 'CE' \(choose among VA, EXPR, AU, MTL, LSD\)"),
    ],
)  # fmt: skip
def test_wrong_edition_track_combination(track: str, edition: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        official_score(track, edition, VA_PRED, VA_TRUE)


def test_edition_table() -> None:
    assert edition_tracks("ABAW3") == ("VA", "EXPR", "AU", "MTL")
    assert edition_tracks("abaw7") == ("MTL",)
    assert [e for e in EDITIONS if "MTL" in EDITIONS[e]] == ["abaw3", "abaw4", "abaw7"]


def test_label_size_must_match_edition() -> None:
    with pytest.raises(InputError, match="ABAW2 AU labels have 12 columns"):
        official_score("AU", "abaw2", AU_PRED[:, :8], AU_TRUE[:, :8])
    with pytest.raises(InputError, match="EXPR labels outside 0…6"):
        official_score("EXPR", "abaw2", [7, 0], [7, 0])  # "Other" does not exist before ABAW3


def test_metrics_import_no_torch() -> None:
    code = "import sys, mmaffect, mmaffect.metrics; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ------------------------------------------------------------------------------------------
# Losses: VA


def _va_batch(seed: int, n: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(n, 2, generator=g) * 2 - 1
    pred = (0.5 * target + 0.3 * torch.randn(n, 2, generator=g)).requires_grad_()
    target[torch.rand(n, generator=g) < 0.1, seed % 2] = -5.0
    mask = torch.rand(n, 2, generator=g) < 0.85
    return pred, target, mask


def _va_keep(target: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    return (mask & ~(target == -5).any(dim=1, keepdim=True)).numpy()


@pytest.mark.parametrize("seed", range(8))
def test_ccc_loss_matches_direct(seed: int) -> None:
    pred, target, mask = _va_batch(seed)
    keep = _va_keep(target, mask)
    p, t = pred.detach().double().numpy(), target.double().numpy()
    cccs = [np_ccc(p[keep[:, d], d], t[keep[:, d], d], eps=1e-8) for d in range(2)]
    loss = L.ccc_loss(pred, target, mask)
    assert loss.item() == pytest.approx(2 - sum(cccs), abs=1e-5)
    mse = [np.mean((p[keep[:, d], d] - t[keep[:, d], d]) ** 2) for d in range(2)]
    both = L.mse_ccc_loss(pred, target, mask)
    assert both.item() == pytest.approx(sum(mse) + 2 - sum(cccs), abs=1e-5)
    loss.backward()
    assert torch.isfinite(pred.grad).all()
    assert (pred.grad[~torch.from_numpy(keep)] == 0).all()  # unannotated entries get nothing


def test_ccc_loss_many_to_many_and_frame_mask() -> None:
    pred, target, _ = _va_batch(1, 60)
    frame_mask = torch.arange(60) % 3 != 0
    flat = L.ccc_loss(pred, target, frame_mask)
    windowed = L.ccc_loss(
        pred.reshape(6, 10, 2), target.reshape(6, 10, 2), frame_mask.reshape(6, 10)
    )
    assert windowed.item() == pytest.approx(flat.item(), abs=1e-6)
    full = frame_mask.unsqueeze(1).expand(60, 2)
    assert L.ccc_loss(pred, target, full).item() == pytest.approx(flat.item(), abs=1e-6)


def test_ccc_loss_one_dimension_unannotated() -> None:
    pred, target, _ = _va_batch(2)
    mask = torch.zeros(64, 2, dtype=torch.bool)
    mask[:, 0] = True  # arousal fully masked: adds 0, valence alone remains
    keep = _va_keep(target, mask)
    p, t = pred.detach().double().numpy(), target.double().numpy()
    expected = 1 - np_ccc(p[keep[:, 0], 0], t[keep[:, 0], 0], eps=1e-8)
    assert L.ccc_loss(pred, target, mask).item() == pytest.approx(expected, abs=1e-5)


# ------------------------------------------------------------------------------------------
# Losses: EXPR


def test_smoothed_targets_are_the_documented_distribution() -> None:
    q = L.smooth_targets(torch.tensor([2, 0, 7]), 8, 0.9)
    assert q.shape == (3, 8)
    for row, cls in zip(q, (2, 0, 7), strict=True):
        assert row[cls].item() == pytest.approx(0.9)
        others = torch.cat([row[:cls], row[cls + 1 :]])
        torch.testing.assert_close(others, torch.full((7,), 0.1 / 7))
    torch.testing.assert_close(q.sum(1), torch.ones(3))
    eps = L.label_smoothing_epsilon(0.9, 8)
    assert eps == pytest.approx(0.8 / 7)
    assert (1 - eps) + eps / 8 == pytest.approx(0.9)


@pytest.mark.parametrize("seed", range(8))
def test_smoothed_cross_entropy_matches_direct(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(40, 8, generator=g, dtype=torch.float64)).requires_grad_()
    target = torch.randint(0, 8, (40,), generator=g)
    target[torch.rand(40, generator=g) < 0.2] = -1
    mask = torch.rand(40, generator=g) < 0.8
    keep = mask & (target != -1)

    total, count = 0.0, 0
    for z, y, k in zip(logits.detach().tolist(), target.tolist(), keep.tolist(), strict=True):
        if not k:
            continue
        log_z = math.log(sum(math.exp(v) for v in z))
        q = [0.9 if c == y else 0.1 / 7 for c in range(8)]
        total -= sum(qc * (zc - log_z) for qc, zc in zip(q, z, strict=True))
        count += 1
    loss = L.smoothed_cross_entropy(logits, target, mask, confidence=0.9)
    assert loss.item() == pytest.approx(total / count, abs=1e-10)
    ref = F.cross_entropy(
        logits[keep], target[keep], label_smoothing=L.label_smoothing_epsilon(0.9, 8)
    )
    assert loss.item() == pytest.approx(ref.item(), abs=1e-10)
    plain = L.smoothed_cross_entropy(logits, target, mask, confidence=1.0)
    assert plain.item() == pytest.approx(F.cross_entropy(logits[keep], target[keep]).item())
    loss.backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad[~keep] == 0).all()


@pytest.mark.parametrize("seed", range(8))
def test_focal_loss_matches_direct(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = (2 * torch.randn(30, 8, generator=g, dtype=torch.float64)).requires_grad_()
    target = torch.randint(-1, 8, (30,), generator=g)
    alpha = torch.rand(8, generator=g, dtype=torch.float64) + 0.5
    keep = target != -1

    total, count = 0.0, 0
    for z, y in zip(logits.detach().tolist(), target.tolist(), strict=True):
        if y < 0:
            continue
        p_y = math.exp(z[y]) / sum(math.exp(v) for v in z)
        total += -alpha[y].item() * (1 - p_y) ** 2 * math.log(p_y)
        count += 1
    loss = L.focal_loss(logits, target, gamma=2.0, alpha=alpha)
    assert loss.item() == pytest.approx(total / count, abs=1e-10)
    ce = L.focal_loss(logits, target, gamma=0.0)
    assert ce.item() == pytest.approx(F.cross_entropy(logits[keep], target[keep]).item())
    loss.backward()
    assert torch.isfinite(logits.grad).all()


# ------------------------------------------------------------------------------------------
# Losses: AU


def _au_batch(seed: int, n: int = 24, c: int = 12):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(n, c, generator=g, dtype=torch.float64)).requires_grad_()
    target = (torch.rand(n, c, generator=g) < 0.3).long()
    target[torch.rand(n, c, generator=g) < 0.1] = -1
    target[0] = -1  # a sample without any annotated AU
    mask = torch.rand(n, c, generator=g) < 0.9
    return logits, target, mask


@pytest.mark.parametrize("seed", range(8))
def test_circle_loss_matches_direct(seed: int) -> None:
    logits, target, mask = _au_batch(seed)
    keep = mask & (target != -1)
    total, count = 0.0, 0
    for s, y, k in zip(logits.detach().tolist(), target.tolist(), keep.tolist(), strict=True):
        if not any(k):
            continue
        neg = sum(math.exp(sj) for sj, yj, kj in zip(s, y, k, strict=True) if kj and yj == 0)
        pos = sum(math.exp(-si) for si, yi, ki in zip(s, y, k, strict=True) if ki and yi == 1)
        total += math.log(1 + neg) + math.log(1 + pos)
        count += 1
    loss = L.multilabel_circle_loss(logits, target, mask)
    assert loss.item() == pytest.approx(total / count, abs=1e-10)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad[~keep] == 0).all()


def test_circle_loss_decreases_when_positive_logits_rise() -> None:
    logits, target, _ = _au_batch(5)
    logits = logits.detach()
    base = L.multilabel_circle_loss(logits, target).item()
    up = logits + 1.0 * (target == 1)
    assert L.multilabel_circle_loss(up, target).item() < base
    neg_up = logits + 1.0 * (target == 0)
    assert L.multilabel_circle_loss(neg_up, target).item() > base
    # Gradient descent direction: raising positives lowers the loss.
    x = logits.clone().requires_grad_()
    L.multilabel_circle_loss(x, target).backward()
    assert (x.grad[target == 1] < 0).all() and (x.grad[target == 0] > 0).all()


@pytest.mark.parametrize("seed", range(8))
def test_bce_and_pos_weight_match_direct(seed: int) -> None:
    logits, target, mask = _au_batch(seed)
    pw = L.au_pos_weight(target, mask)
    keep = mask & (target != -1)
    for j in range(12):
        col = target[:, j][keep[:, j]]
        n_pos, n_neg = (col == 1).sum().item(), (col == 0).sum().item()
        expected = n_neg / n_pos if n_pos and n_neg else 1.0
        assert pw[j].item() == pytest.approx(expected)
    total, count = 0.0, 0
    for s, y, k in zip(logits.detach().tolist(), target.tolist(), keep.tolist(), strict=True):
        for j, (sj, yj, kj) in enumerate(zip(s, y, k, strict=True)):
            if kj:
                p = 1 / (1 + math.exp(-sj))
                total -= pw[j].item() * yj * math.log(p) + (1 - yj) * math.log(1 - p)
                count += 1
    loss = L.bce_loss(logits, target, mask, pos_weight=pw)
    assert loss.item() == pytest.approx(total / count, abs=1e-6)
    both = L.circle_bce_loss(logits, target, mask)
    expected = L.multilabel_circle_loss(logits, target, mask) + L.bce_loss(logits, target, mask)
    assert both.item() == pytest.approx(expected.item())


def test_au_pos_weight_from_numpy_with_frame_mask() -> None:
    labels = np.array([[1, 0, -1], [0, 0, 1], [0, 1, 1], [1, 1, -1]])
    w = L.au_pos_weight(labels, np.array([True, True, True, False]))
    torch.testing.assert_close(w, torch.tensor([2.0, 2.0, 1.0]))  # AU3: no negative → 1


@pytest.mark.parametrize("seed", range(8))
def test_asymmetric_loss_matches_direct(seed: int) -> None:
    logits, target, mask = _au_batch(seed)
    weight = L.au_inverse_frequency_weights(target, mask).double()
    assert weight.mean().item() == pytest.approx(1.0)
    keep = mask & (target != -1)
    total, count = 0.0, 0
    for s, y, k in zip(logits.detach().tolist(), target.tolist(), keep.tolist(), strict=True):
        for j, (sj, yj, kj) in enumerate(zip(s, y, k, strict=True)):
            if not kj:
                continue
            p = 1 / (1 + math.exp(-sj))
            p_m = max(p - 0.05, 0.0)
            term = math.log(p) if yj == 1 else p_m**4 * math.log(1 - p_m)
            total -= weight[j].item() * term
            count += 1
    loss = L.asymmetric_loss(logits, target, mask, weight=weight)
    assert loss.item() == pytest.approx(total / count, abs=1e-9)
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    plain = L.asymmetric_loss(logits, target, mask, gamma_pos=0, gamma_neg=0, clip=0)
    assert plain.item() == pytest.approx(L.bce_loss(logits, target, mask).item(), abs=1e-10)


# ------------------------------------------------------------------------------------------
# Losses: masks, extremes, MTL


def _all_losses():
    return [
        ("ccc", L.ccc_loss, (2,), "va"),
        ("mse_ccc", L.mse_ccc_loss, (2,), "va"),
        ("smoothed_ce", L.smoothed_cross_entropy, (8,), "expr"),
        ("focal", L.focal_loss, (8,), "expr"),
        ("circle", L.multilabel_circle_loss, (12,), "au"),
        ("bce", L.bce_loss, (12,), "au"),
        ("circle_bce", L.circle_bce_loss, (12,), "au"),
        ("asl", L.asymmetric_loss, (12,), "au"),
    ]


def _targets(kind: str, n: int, sentinel: bool) -> torch.Tensor:
    if kind == "va":
        return torch.full((n, 2), -5.0) if sentinel else torch.rand(n, 2) * 2 - 1
    if kind == "expr":
        return torch.full((n,), -1) if sentinel else torch.randint(0, 8, (n,))
    return torch.full((n, 12), -1) if sentinel else torch.randint(0, 2, (n, 12))


@pytest.mark.parametrize(("name", "fn", "dims", "kind"), _all_losses())
def test_all_masked_batch_is_zero_with_grad(name, fn, dims, kind) -> None:
    pred = torch.randn(6, *dims, requires_grad=True)
    for target, mask in (
        (_targets(kind, 6, sentinel=True), None),  # every entry carries the sentinel
        (_targets(kind, 6, sentinel=False), torch.zeros(6, dtype=torch.bool)),  # all masked
    ):
        loss = fn(pred, target, mask)
        assert loss.item() == 0.0, name
        loss.backward()
        assert pred.grad is not None and (pred.grad == 0).all(), name
        pred.grad = None


@pytest.mark.parametrize(("name", "fn", "dims", "kind"), _all_losses())
def test_gradients_finite_on_extreme_inputs(name, fn, dims, kind) -> None:
    torch.manual_seed(0)
    scale = 1.0 if kind == "va" else 60.0  # saturated logits
    pred = (scale * torch.randn(16, *dims)).requires_grad_()
    target = _targets(kind, 16, sentinel=False)
    loss = fn(pred, target, None)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all(), name
    const = torch.zeros(16, *dims, requires_grad=True)  # a constant prediction
    fn(const, target, None).backward()
    assert torch.isfinite(const.grad).all(), name


def test_half_precision_inputs_are_computed_in_float32() -> None:
    logits = torch.randn(8, 12, dtype=torch.bfloat16, requires_grad=True)
    target = torch.randint(0, 2, (8, 12))
    loss = L.circle_bce_loss(logits, target)
    assert loss.dtype == torch.float32
    loss.backward()
    assert logits.grad.dtype == torch.bfloat16


def test_mtl_loss_weights_and_absent_tasks() -> None:
    torch.manual_seed(0)
    out = {
        "VA": torch.randn(10, 2, requires_grad=True),
        "EXPR": torch.randn(10, 8, requires_grad=True),
        "AU": torch.randn(10, 12, requires_grad=True),
    }
    tgt = {"VA": _targets("va", 10, False), "EXPR": _targets("expr", 10, False)}
    tgt["AU"] = _targets("au", 10, False)
    lam = {"VA": 1.0, "EXPR": 0.5, "AU": 2.0}
    total = L.mtl_loss(out, tgt, weights=lam)
    expected = (
        L.ccc_loss(out["VA"], tgt["VA"])
        + 0.5 * L.smoothed_cross_entropy(out["EXPR"], tgt["EXPR"])
        + 2.0 * L.circle_bce_loss(out["AU"], tgt["AU"])
    )
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)

    # EXPR absent from the batch, AU entirely unannotated: only VA remains, no NaN.
    partial = {"va": tgt["VA"], "au": _targets("au", 10, sentinel=True)}
    terms = L.mtl_loss_terms(out, partial, weights=lam)
    assert terms["EXPR"].item() == 0.0 and terms["AU"].item() == 0.0
    loss = L.mtl_loss(out, partial, weights=lam)
    assert loss.item() == pytest.approx(L.ccc_loss(out["VA"], tgt["VA"]).item())
    loss.backward()
    assert all(torch.isfinite(o.grad).all() for o in out.values())
    assert (out["EXPR"].grad == 0).all() and (out["AU"].grad == 0).all()

    # A learned task weight (a tensor) stays in the graph.
    lam_va = torch.tensor(0.5, requires_grad=True)
    L.mtl_loss(out, tgt, weights={"VA": lam_va}).backward()
    assert lam_va.grad is not None and lam_va.grad.item() == pytest.approx(
        L.ccc_loss(out["VA"], tgt["VA"]).item()
    )

    # Nothing labelled at all: exactly 0, backward still works.
    empty = L.mtl_loss(out, {})
    assert empty.item() == 0.0 and empty.requires_grad


def test_mtl_loss_per_task_masks_and_custom_losses() -> None:
    out = {"VA": torch.randn(10, 2), "AU": torch.randn(10, 12)}
    tgt = {"VA": _targets("va", 10, False), "AU": _targets("au", 10, False)}
    masks = {"AU": torch.arange(10) < 5}
    got = L.mtl_loss(out, tgt, masks, losses={"VA": L.mse_ccc_loss, "AU": L.asymmetric_loss})
    expected = L.mse_ccc_loss(out["VA"], tgt["VA"]) + L.asymmetric_loss(
        out["AU"], tgt["AU"], masks["AU"]
    )
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="unknown task"):
        L.mtl_loss({"valence": torch.zeros(3, 2)}, {})


def test_losses_module_not_imported_by_package() -> None:
    code = "import sys, mmaffect; sys.exit('mmaffect.losses' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
