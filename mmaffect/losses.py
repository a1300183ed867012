"""Training losses for the ABAW tasks (torch); ``docs/metrics.md`` writes out every formula.

Only training code imports this module (``import mmaffect`` does not).

Shared conventions:

* Targets carry the ABAW sentinels, which always mark an entry as unannotated: EXPR ``-1``,
  AU ``-1`` (per AU), VA ``-5`` in either field (the whole frame). An optional boolean ``mask``
  (True = use) removes more entries: ``(...)`` per sample, or for AU/VA also ``(..., D)`` per entry.
* Unannotated entries contribute nothing: they are replaced before any arithmetic (so no NaN can
  leak through their gradient) and left out of every mean.
* A batch with nothing annotated gives a loss of exactly 0 that is still connected to the
  predictions (``backward`` works, gradients are 0, DDP sees every head used).
* Leading dimensions are free: ``(B, C)`` or ``(B, T, C)`` for many-to-many windows.
* Half-precision inputs are computed in float32.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mmaffect.annotations.spaces import AU_UNANNOTATED, EXPR_UNANNOTATED, VA_UNANNOTATED

__all__ = [
    "DEFAULT_TASK_LOSSES",
    "affinity_loss",
    "asymmetric_loss",
    "au_inverse_frequency_weights",
    "au_pos_weight",
    "batch_ccc",
    "bce_loss",
    "ccc_loss",
    "circle_bce_loss",
    "focal_loss",
    "label_smoothing_epsilon",
    "mse_ccc_loss",
    "mtl_loss",
    "mtl_loss_terms",
    "multilabel_circle_loss",
    "partition_loss",
    "smooth_targets",
    "smoothed_cross_entropy",
    "soft_cross_entropy",
]

TASKS = ("VA", "EXPR", "AU")


# --------------------------------------------------------------------------- helpers


def _float(x: Tensor) -> Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _valid(mask: Tensor | None, annotated: Tensor, *, per_entry: bool) -> Tensor:
    """``annotated`` (sentinel rule) AND the user's mask, broadcast to ``annotated.shape``.

    With ``per_entry`` the last dimension holds the entries of one sample (AUs, V/A) and a mask
    may be given per sample (``annotated.shape[:-1]``) or per entry.
    """
    if mask is None:
        return annotated
    m = torch.as_tensor(mask, device=annotated.device).to(torch.bool)
    if m.shape == annotated.shape:
        return annotated & m
    if per_entry and m.shape == annotated.shape[:-1]:
        return annotated & m.unsqueeze(-1)
    raise ValueError(f"mask shape {tuple(m.shape)} does not fit targets {tuple(annotated.shape)}")


def _masked_mean(values: Tensor, valid: Tensor) -> Tensor:
    """Mean of ``values`` over ``valid``; 0 (still in the graph) when nothing is valid."""
    total = torch.where(valid, values, torch.zeros_like(values)).sum()
    return total / valid.sum().clamp(min=1).to(values.dtype)


def _check_same_shape(pred: Tensor, target: Tensor, what: str) -> None:
    if pred.shape != target.shape:
        raise ValueError(
            f"{what}: predictions {tuple(pred.shape)} vs targets {tuple(target.shape)}"
        )


# --------------------------------------------------------------------------- VA


def _va_inputs(
    pred: Tensor, target: Tensor, mask: Tensor | None, what: str
) -> tuple[Tensor, Tensor, Tensor]:
    """``(N, D)`` predictions, sanitised targets and validity, leading dimensions flattened."""
    _check_same_shape(pred, target, what)
    p = _float(pred)
    t = target.to(device=p.device, dtype=p.dtype)
    frame_ok = ~(t == VA_UNANNOTATED).any(dim=-1, keepdim=True)
    valid = _valid(mask, frame_ok.expand_as(t), per_entry=True)
    t = torch.where(valid, t, torch.zeros_like(t))
    d = p.shape[-1]
    return p.reshape(-1, d), t.reshape(-1, d), valid.reshape(-1, d)


def _ccc_columns(p: Tensor, t: Tensor, valid: Tensor, eps: float) -> Tensor:
    zero = torch.zeros_like(p)
    n = valid.sum(dim=0).clamp(min=1).to(p.dtype)
    mp = torch.where(valid, p, zero).sum(dim=0) / n
    mt = t.sum(dim=0) / n  # t is already 0 where invalid
    dp = torch.where(valid, p - mp, zero)
    dt = torch.where(valid, t - mt, zero)
    var_p = (dp * dp).sum(dim=0) / n
    var_t = (dt * dt).sum(dim=0) / n
    cov = (dp * dt).sum(dim=0) / n
    return 2.0 * cov / (var_p + var_t + (mp - mt) ** 2 + eps)


def batch_ccc(
    pred: Tensor, target: Tensor, mask: Tensor | None = None, eps: float = 1e-8
) -> tuple[Tensor, Tensor]:
    """Differentiable CCC of each output dimension over the annotated entries of a batch.

    Parameters
    ----------
    pred, target
        ``(..., D)``; the statistics run over all leading dimensions. A target with ``-5`` in
        any dimension marks that frame unannotated.
    mask
        Optional booleans ``(...)`` or ``(..., D)``, True = use.
    eps
        Added to the denominator (keeps a constant batch finite).

    Returns
    -------
    ccc, has_data
        ``(D,)`` CCC per dimension with population moments (1/N),
        ``2·cov / (var_p + var_t + (mean_p − mean_t)² + eps)``; ``(D,)`` booleans telling which
        dimensions had at least one annotated entry (the CCC of the others is 0).
    """
    p, t, valid = _va_inputs(pred, target, mask, "batch_ccc")
    return _ccc_columns(p, t, valid, eps), valid.any(dim=0)


def ccc_loss(pred: Tensor, target: Tensor, mask: Tensor | None = None, eps: float = 1e-8) -> Tensor:
    """VA loss of the fusion model: ``Σ_d (1 − CCC_d)``, i.e. ``2 − (CCC_v + CCC_a)``.

    CCC over the batch as in :func:`batch_ccc`. A dimension without any annotated entry adds 0,
    so an all-unannotated batch gives 0.

    Parameters
    ----------
    pred, target
        ``(..., 2)`` valence, arousal (any ``D`` works).
    mask
        Optional booleans ``(...)`` or ``(..., 2)``, True = use.
    eps
        Added to the CCC denominator.

    Returns
    -------
    Tensor
        Scalar in [0, 4] for two dimensions.
    """
    p, t, valid = _va_inputs(pred, target, mask, "ccc_loss")
    ccc = _ccc_columns(p, t, valid, eps)
    return torch.where(valid.any(dim=0), 1.0 - ccc, torch.zeros_like(ccc)).sum()


def mse_ccc_loss(
    pred: Tensor, target: Tensor, mask: Tensor | None = None, eps: float = 1e-8
) -> Tensor:
    """VA loss of the affine-module model: ``Σ_d [MSE_d + (1 − CCC_d)]``.

    ``MSE_d`` is the mean of ``(pred_d − target_d)²`` over dimension d's annotated entries and
    ``CCC_d`` is as in :func:`batch_ccc`; a dimension without annotated entries adds 0.

    Parameters
    ----------
    pred, target
        ``(..., 2)`` valence, arousal.
    mask
        Optional booleans ``(...)`` or ``(..., 2)``, True = use.
    eps
        Added to the CCC denominator.

    Returns
    -------
    Tensor
        Scalar.
    """
    p, t, valid = _va_inputs(pred, target, mask, "mse_ccc_loss")
    ccc = _ccc_columns(p, t, valid, eps)
    sq = torch.where(valid, (p - t) ** 2, torch.zeros_like(p))
    mse = sq.sum(dim=0) / valid.sum(dim=0).clamp(min=1).to(p.dtype)
    return torch.where(valid.any(dim=0), mse + 1.0 - ccc, torch.zeros_like(ccc)).sum()


# --------------------------------------------------------------------------- EXPR


def _expr_inputs(
    logits: Tensor, target: Tensor, mask: Tensor | None, what: str
) -> tuple[Tensor, Tensor, Tensor]:
    if logits.shape[:-1] != target.shape:
        raise ValueError(
            f"{what}: logits {tuple(logits.shape)} need targets of shape {tuple(logits.shape[:-1])}"
            f", got {tuple(target.shape)}"
        )
    z = _float(logits)
    t = target.to(device=z.device).long()
    valid = _valid(mask, t != EXPR_UNANNOTATED, per_entry=False) & (t >= 0)
    return z, torch.where(valid, t, torch.zeros_like(t)), valid


def label_smoothing_epsilon(confidence: float, n_classes: int) -> float:
    """torch's ``label_smoothing`` ε that gives the true class ``confidence``.

    ``F.cross_entropy(label_smoothing=ε)`` targets ``(1 − ε)·onehot + ε/C``; solving
    ``1 − ε + ε/C = confidence`` gives ``ε = (1 − confidence)·C / (C − 1)``, and then every other
    class gets ``ε/C = (1 − confidence)/(C − 1)``, the same distribution as
    :func:`smooth_targets`. For the design's 0.9 and 8 classes, ε = 0.8/7 ≈ 0.1143.
    """
    return (1.0 - confidence) * n_classes / (n_classes - 1)


def smooth_targets(
    target: Tensor, n_classes: int, confidence: float = 0.9, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Label-smoothed target distributions: the true class gets ``confidence``, each of the other
    ``C − 1`` classes ``(1 − confidence)/(C − 1)``.

    Parameters
    ----------
    target
        ``(...)`` class indices (negative entries, the unannotated ones, get class 0's row;
        the losses mask them out).
    n_classes
        ``C``.
    confidence
        The design's "label smoothing λ = 0.9"; 1.0 gives one-hot targets.

    Returns
    -------
    Tensor
        ``(..., C)`` rows summing to 1.
    """
    if not 0.0 < confidence <= 1.0:
        raise ValueError(f"confidence must be in (0, 1], got {confidence}")
    if n_classes < 2:
        raise ValueError(f"n_classes must be at least 2, got {n_classes}")
    off = (1.0 - confidence) / (n_classes - 1)
    onehot = F.one_hot(target.long().clamp(min=0), n_classes).to(dtype)
    return onehot * (confidence - off) + off


def soft_cross_entropy(logits: Tensor, target_probs: Tensor, mask: Tensor | None = None) -> Tensor:
    """Cross-entropy against target distributions: mean of ``−Σ_c q_c·log softmax(z)_c``.

    The mean runs over the samples kept by ``mask``.

    Parameters
    ----------
    logits
        ``(..., C)``.
    target_probs
        ``(..., C)`` distributions.
    mask
        Optional booleans ``(...)``, True = use the sample.
    """
    _check_same_shape(logits, target_probs, "soft_cross_entropy")
    z = _float(logits)
    q = target_probs.to(device=z.device, dtype=z.dtype)
    valid = _valid(
        mask, torch.ones(z.shape[:-1], dtype=torch.bool, device=z.device), per_entry=False
    )
    q = torch.where(valid.unsqueeze(-1), q, torch.zeros_like(q))
    per_sample = -(q * F.log_softmax(z, dim=-1)).sum(dim=-1)
    return _masked_mean(per_sample, valid)


def smoothed_cross_entropy(
    logits: Tensor, target: Tensor, mask: Tensor | None = None, confidence: float = 0.9
) -> Tensor:
    """EXPR loss of the fusion model: soft cross-entropy against :func:`smooth_targets`.

    ``L = mean over annotated samples of −Σ_c q_c·log softmax(z)_c`` with ``q_y = confidence``
    and ``q_c = (1 − confidence)/(C − 1)`` for ``c ≠ y``. Equal to
    ``F.cross_entropy(z, y, label_smoothing=label_smoothing_epsilon(confidence, C))`` on the
    annotated samples; ``confidence=1`` is plain cross-entropy (the affine-module model's loss).

    Parameters
    ----------
    logits
        ``(..., C)``.
    target
        ``(...)`` class indices, ``-1`` = unannotated.
    mask
        Optional booleans ``(...)``, True = use.
    confidence
        Probability given to the true class (the design's λ = 0.9).
    """
    z, t, valid = _expr_inputs(logits, target, mask, "smoothed_cross_entropy")
    return soft_cross_entropy(z, smooth_targets(t, z.shape[-1], confidence, z.dtype), valid)


def focal_loss(
    logits: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    gamma: float = 2.0,
    alpha: Tensor | None = None,
) -> Tensor:
    """EXPR loss of DAN (``mmaffect.models.dan``): focal loss (Lin et al., "Focal Loss for
    Dense Object Detection", ICCV 2017).

    ``L = mean over annotated samples of −α_y·(1 − p_y)^γ·log p_y`` with ``p = softmax(z)``
    (a plain mean, not normalised by the α of the batch; α_y = 1 without ``alpha``).

    Parameters
    ----------
    logits
        ``(..., C)``.
    target
        ``(...)`` class indices, ``-1`` = unannotated.
    mask
        Optional booleans ``(...)``, True = use.
    gamma
        Focusing exponent (2 in the focal-loss paper and for DAN); 0 gives (weighted)
        cross-entropy.
    alpha
        Optional ``(C,)`` class weights.
    """
    z, t, valid = _expr_inputs(logits, target, mask, "focal_loss")
    log_p = F.log_softmax(z, dim=-1).gather(-1, t.unsqueeze(-1)).squeeze(-1)
    per_sample = -log_p
    if gamma != 0:
        per_sample = per_sample * (1.0 - log_p.exp()).clamp(min=0) ** gamma
    if alpha is not None:
        a = torch.as_tensor(alpha, device=z.device, dtype=z.dtype)
        if a.shape != (z.shape[-1],):
            raise ValueError(f"alpha must have shape ({z.shape[-1]},), got {tuple(a.shape)}")
        per_sample = per_sample * a[t]
    return _masked_mean(per_sample, valid)


# --------------------------------------------------------------------------- AU


def _au_inputs(
    logits: Tensor, target: Tensor, mask: Tensor | None, what: str
) -> tuple[Tensor, Tensor, Tensor]:
    _check_same_shape(logits, target, what)
    z = _float(logits)
    t = target.to(device=z.device)
    valid = _valid(mask, t != AU_UNANNOTATED, per_entry=True)
    t = torch.where(valid, t, torch.zeros_like(t)).to(z.dtype)
    return z, t, valid


def multilabel_circle_loss(logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Multi-label circle loss (the ZLPR form) over AU logits.

    Per sample, with ``P`` its annotated positive AUs and ``N`` its annotated negative ones:
    ``log(1 + Σ_{j∈N} e^{s_j}) + log(1 + Σ_{i∈P} e^{−s_i})``; averaged over the samples with at
    least one annotated AU. Its decision threshold is ``s = 0`` (sigmoid 0.5), as for BCE.

    Parameters
    ----------
    logits
        ``(..., C)`` raw scores ``s``.
    target
        ``(..., C)`` 0/1, ``-1`` = unannotated.
    mask
        Optional booleans ``(...)`` or ``(..., C)``, True = use.
    """
    z, t, valid = _au_inputs(logits, target, mask, "multilabel_circle_loss")
    pos = valid & (t > 0.5)
    neg = valid & (t < 0.5)
    # log(1 + Σ e^a) = logsumexp([0, a...]); entries outside the set become −inf (weight 0).
    zero = torch.zeros_like(z[..., :1])
    s_neg = torch.cat([zero, z.masked_fill(~neg, float("-inf"))], dim=-1)
    s_pos = torch.cat([zero, (-z).masked_fill(~pos, float("-inf"))], dim=-1)
    per_sample = torch.logsumexp(s_neg, dim=-1) + torch.logsumexp(s_pos, dim=-1)
    return _masked_mean(per_sample, valid.any(dim=-1))


def bce_loss(
    logits: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    pos_weight: Tensor | None = None,
) -> Tensor:
    """Binary cross-entropy with logits, averaged over the annotated (sample, AU) entries.

    ``−[w_c·y·log σ(s) + (1 − y)·log(1 − σ(s))]`` with ``w_c = pos_weight[c]`` (1 without it):
    the hybrid CNN-Transformer's weighted BCE with :func:`au_pos_weight`.

    Parameters
    ----------
    logits
        ``(..., C)``.
    target
        ``(..., C)`` 0/1, ``-1`` = unannotated.
    mask
        Optional booleans ``(...)`` or ``(..., C)``, True = use.
    pos_weight
        Optional ``(C,)`` weights of the positive term.
    """
    z, t, valid = _au_inputs(logits, target, mask, "bce_loss")
    pw = None if pos_weight is None else torch.as_tensor(pos_weight, device=z.device, dtype=z.dtype)
    per_entry = F.binary_cross_entropy_with_logits(z, t, pos_weight=pw, reduction="none")
    return _masked_mean(per_entry, valid)


def circle_bce_loss(
    logits: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    circle_weight: float = 1.0,
    bce_weight: float = 1.0,
) -> Tensor:
    """AU loss of the fusion model: ``circle_weight·circle + bce_weight·BCE``.

    See :func:`multilabel_circle_loss` and :func:`bce_loss`.
    """
    return circle_weight * multilabel_circle_loss(logits, target, mask) + bce_weight * bce_loss(
        logits, target, mask
    )


def _label_counts(
    labels: np.ndarray | Tensor, mask: np.ndarray | Tensor | None
) -> tuple[np.ndarray, np.ndarray]:
    y = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if y.ndim != 2:
        raise ValueError(f"labels must be (frames, AUs), got shape {y.shape}")
    valid = y != AU_UNANNOTATED
    if mask is not None:
        m = mask.detach().cpu().numpy() if isinstance(mask, Tensor) else np.asarray(mask)
        m = m.astype(bool)
        valid &= m[:, None] if m.shape == (y.shape[0],) else m
    n_pos = ((y == 1) & valid).sum(axis=0).astype(np.float64)
    n_neg = ((y == 0) & valid).sum(axis=0).astype(np.float64)
    return n_pos, n_neg


def au_pos_weight(labels: np.ndarray | Tensor, mask: np.ndarray | Tensor | None = None) -> Tensor:
    """Positive weights for :func:`bce_loss` from label frequencies: ``n_neg / n_pos`` per AU.

    Parameters
    ----------
    labels
        ``(N, C)`` 0/1 training labels, ``-1`` = unannotated (not counted).
    mask
        Optional booleans ``(N,)`` or ``(N, C)``, True = count.

    Returns
    -------
    Tensor
        ``(C,)`` float32; 1.0 for an AU without annotated positives or negatives.
    """
    n_pos, n_neg = _label_counts(labels, mask)
    ok = (n_pos > 0) & (n_neg > 0)
    w = np.where(ok, n_neg / np.maximum(n_pos, 1), 1.0)
    return torch.as_tensor(w, dtype=torch.float32)


def au_inverse_frequency_weights(
    labels: np.ndarray | Tensor, mask: np.ndarray | Tensor | None = None
) -> Tensor:
    """Per-AU weights ``∝ 1 / positive rate``, scaled to mean 1 (for :func:`asymmetric_loss`).

    The weighting of the "weighted asymmetric loss" used for AUs since ME-GraphAU. An AU with
    no annotated positive counts as if it had one (its rate is ``1 / n_annotated``).

    Parameters
    ----------
    labels
        ``(N, C)`` 0/1 training labels, ``-1`` = unannotated.
    mask
        Optional booleans ``(N,)`` or ``(N, C)``, True = count.

    Returns
    -------
    Tensor
        ``(C,)`` float32 with mean 1.
    """
    n_pos, n_neg = _label_counts(labels, mask)
    n = np.maximum(n_pos + n_neg, 1)
    inv = n / np.maximum(n_pos, 1)
    return torch.as_tensor(inv / inv.mean(), dtype=torch.float32)


def asymmetric_loss(
    logits: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    gamma_pos: float = 0.0,
    gamma_neg: float = 4.0,
    clip: float = 0.05,
    weight: Tensor | None = None,
    detach_focusing: bool = False,
) -> Tensor:
    """Weighted asymmetric loss (ASL; Ridnik et al., "Asymmetric Loss For Multi-Label
    Classification", ICCV 2021), the AU loss of the affine-module model.

    With ``p = σ(s)`` and the shifted probability ``p_m = max(p − clip, 0)``, per entry:
    ``L = −w_c·[y·(1 − p)^γ+·log p + (1 − y)·p_m^γ−·log(1 − p_m)]``,
    averaged over the annotated entries (the paper sums; multiply by their count for that).
    Defaults: γ+ = 0, γ− = 4, clip = 0.05; ``clip=0, γ±=0`` is plain BCE.

    Parameters
    ----------
    logits
        ``(..., C)``.
    target
        ``(..., C)`` 0/1, ``-1`` = unannotated.
    mask
        Optional booleans ``(...)`` or ``(..., C)``, True = use.
    gamma_pos, gamma_neg
        Focusing exponents of positives and negatives.
    clip
        Probability margin ``m`` that discards easy negatives (``p < m`` costs nothing).
    weight
        Optional ``(C,)`` per-AU weights ``w_c`` (e.g. :func:`au_inverse_frequency_weights`).
    detach_focusing
        Treat the focusing factors as constants in the backward pass (as some ASL code does).
    """
    z, t, valid = _au_inputs(logits, target, mask, "asymmetric_loss")
    p = torch.sigmoid(z)
    log_p = F.logsigmoid(z)
    if clip > 0:
        p_m = (p - clip).clamp(min=0)
        log_1m = torch.log((1.0 - p + clip).clamp(max=1.0))  # log(1 − p_m), ≥ log(clip)
    else:
        p_m = p
        log_1m = F.logsigmoid(-z)
    loss_pos = log_p
    loss_neg = log_1m
    if gamma_pos != 0:
        f = (1.0 - p) ** gamma_pos
        loss_pos = loss_pos * (f.detach() if detach_focusing else f)
    if gamma_neg != 0:
        f = p_m**gamma_neg
        loss_neg = loss_neg * (f.detach() if detach_focusing else f)
    per_entry = -(t * loss_pos + (1.0 - t) * loss_neg)
    if weight is not None:
        w = torch.as_tensor(weight, device=z.device, dtype=z.dtype)
        if w.shape != (z.shape[-1],):
            raise ValueError(f"weight must have shape ({z.shape[-1]},), got {tuple(w.shape)}")
        per_entry = per_entry * w
    return _masked_mean(per_entry, valid)


# --------------------------------------------------------------------------- DAN


def affinity_loss(
    features: Tensor, target: Tensor, centers: Tensor, mask: Tensor | None = None
) -> Tensor:
    """DAN's affinity loss (Wen et al., "Distract Your Attention", 2021): features close to
    their class centre, centres spread apart.

    ``L = mean over annotated samples of ‖f_i − c_{y_i}‖² / Σ_d Var_c(c_{c,d})``: the squared
    distance to the sample's class centre over the total variance of the centres (unbiased,
    over the classes, summed over the feature dimensions), as the authors' code computes it.

    Parameters
    ----------
    features
        ``(N, D)`` pooled backbone features.
    target
        ``(N,)`` class indices, ``-1`` = unannotated (left out).
    centers
        ``(C, D)`` learned class centres.
    mask
        Optional booleans ``(N,)``, True = use.
    """
    f = _float(features)
    c = centers.to(f.dtype)
    t = target.to(device=f.device).long()
    valid = _valid(mask, t != EXPR_UNANNOTATED, per_entry=False) & (t >= 0)
    t = torch.where(valid, t, torch.zeros_like(t))
    dist = ((f - c[t]) ** 2).sum(dim=-1)
    return _masked_mean(dist / c.var(dim=0).sum().clamp(min=1e-12), valid)


def partition_loss(heads: Tensor) -> Tensor:
    """DAN's partition loss: the attention heads are pushed apart (to different face parts).

    ``L = log(1 + K / σ²)`` with ``σ²`` the variance over the ``K`` heads (unbiased), averaged
    over the samples and channels, as the authors' code computes it (the paper writes the mean
    of ``log(1 + K / σ²_ij)`` per sample and channel, which explodes where a channel is
    constant across heads). 0 (still in the graph) with a single head.

    Parameters
    ----------
    heads
        ``(N, K, C)`` the heads' attention vectors.
    """
    h = _float(heads)
    k = h.shape[1]
    if k < 2:
        return h.sum() * 0.0
    return torch.log1p(k / h.var(dim=1).mean().clamp(min=1e-12))


# --------------------------------------------------------------------------- MTL

TaskLoss = Callable[[Tensor, Tensor, Tensor | None], Tensor]

#: The fusion model's loss of each task (DESIGN.md, "The model").
DEFAULT_TASK_LOSSES: dict[str, TaskLoss] = {
    "VA": ccc_loss,
    "EXPR": smoothed_cross_entropy,
    "AU": circle_bce_loss,
}


def _by_task(values: Mapping[str, object] | None, what: str) -> dict[str, object]:
    if values is None:
        return {}
    out = {str(k).upper(): v for k, v in values.items()}
    unknown = sorted(set(out) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown task(s) {', '.join(unknown)} in {what}; tasks: VA, EXPR, AU")
    return out


def mtl_loss_terms(
    outputs: Mapping[str, Tensor],
    targets: Mapping[str, Tensor],
    masks: Mapping[str, Tensor | None] | None = None,
    weights: Mapping[str, float | Tensor] | None = None,
    losses: Mapping[str, TaskLoss] | None = None,
) -> dict[str, Tensor]:
    """The weighted term ``λ_t·L_t`` of each task in ``outputs`` (see :func:`mtl_loss`)."""
    outs = _by_task(outputs, "outputs")
    if not outs:
        raise ValueError("mtl_loss needs at least one task output")
    tgts = _by_task(targets, "targets")
    msks = _by_task(masks, "masks")
    lams = _by_task(weights, "weights")
    fns = {**DEFAULT_TASK_LOSSES, **_by_task(losses, "losses")}
    terms: dict[str, Tensor] = {}
    for task, out in outs.items():
        target = tgts.get(task)
        if target is None:
            # No label of this task in the batch: 0, still connected to the head.
            terms[task] = out.sum() * 0.0
            continue
        # λ may be a tensor (e.g. learned task weights); it is not cast to float.
        terms[task] = lams.get(task, 1.0) * fns[task](out, target, msks.get(task))
    return terms


def mtl_loss(
    outputs: Mapping[str, Tensor],
    targets: Mapping[str, Tensor],
    masks: Mapping[str, Tensor | None] | None = None,
    weights: Mapping[str, float | Tensor] | None = None,
    losses: Mapping[str, TaskLoss] | None = None,
) -> Tensor:
    """Multi-task loss ``Σ_t λ_t·L_t`` over the tasks the model outputs.

    Each ``L_t`` is averaged over task t's own annotated entries, so λ_t acts only where t's
    labels exist: a task with no label in the batch (absent from ``targets``, all sentinels, or
    all masked) contributes exactly 0, never NaN.

    Parameters
    ----------
    outputs
        Head outputs keyed ``"VA"``, ``"EXPR"``, ``"AU"`` (any case; any subset).
    targets
        Targets with the same keys (sentinels mark unannotated entries); a missing key means
        the task has no label in this batch.
    masks
        Optional extra masks per task (True = use).
    weights
        ``λ_t`` per task; 1.0 where not given.
    losses
        Replacements for the per-task losses, each ``fn(output, target, mask)``; defaults
        :data:`DEFAULT_TASK_LOSSES` (CCC, label-smoothed CE, circle + BCE).

    Returns
    -------
    Tensor
        Scalar.
    """
    terms = mtl_loss_terms(outputs, targets, masks, weights, losses)
    return torch.stack(list(terms.values())).sum()
