"""``ensemble``: trained models combined by a weighted sum of their outputs, one model.

The members are registry models, each rebuilt from the ``model`` name and ``hparams`` it was
trained with (its weights come with the ensemble's state dict), so an ensemble checkpoint is
self-describing like any other: ``mmaffect ensemble`` writes it, and ``predict --checkpoint``
and ``extract --frame-model`` use it as they use one model.

Per task ``t``, with weights ``w_{t,k} ≥ 0`` summing to 1 (chosen on the validation split, or
equal: soft voting), the ensemble's output is the weighted sum of the members' own outputs:
``Σ_k w_{t,k}·p_k`` of the expression probabilities (softmax), of the AU probabilities
(sigmoid) and of valence-arousal (after tanh). :meth:`EnsembleModel.forward` returns it in the
form every model returns (``expr`` as log-probabilities, ``au`` as logits, so softmax, sigmoid
and arg-max give back the combined probabilities; ``va`` as it is).

Two kinds, never mixed:

* **image members** (``face_cnn``, ``dan``, ``hybrid_cnn_transformer``: DAN's bagging, the
  hybrid's two-backbone ensemble): they must cut faces alike (the same ``crop``); each resizes
  the crop to its own input side; :meth:`~EnsembleModel.embed` concatenates their features and
  combines their flip-averaged outputs;
* **window members** (models over cached features, e.g. seed 004's frame, GRU and Transformer
  members): each reads its own modalities over the centred part of the window it was trained
  with; the ensemble's window is the longest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mmaffect.errors import InputError
from mmaffect.models.common import MODALITIES, normalize_tasks
from mmaffect.models.registry import create_model, register_model

__all__ = ["EnsembleModel", "combine", "member_probabilities"]

_EPS = 1e-7


def member_probabilities(outputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A model's ``forward`` outputs → ``expr``/``au`` probabilities and ``va`` (as given)."""
    out = {}
    if "expr" in outputs:
        out["expr"] = outputs["expr"].float().softmax(-1)
    if "au" in outputs:
        out["au"] = outputs["au"].float().sigmoid()
    if "va" in outputs:
        out["va"] = outputs["va"].float()
    return out


def combine(
    parts: Sequence[Mapping[str, Tensor]], weights: Mapping[str, Sequence[float]]
) -> dict[str, Tensor]:
    """``Σ_k w_{t,k}·parts[k][t]`` for each task ``t`` of ``weights``."""
    return {
        task: sum(float(w) * p[task] for w, p in zip(ws, parts, strict=True))
        for task, ws in weights.items()
    }


def _as_outputs(probs: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Combined probabilities in the form of a model's outputs (log-probabilities, logits)."""
    out = {}
    if "expr" in probs:
        out["expr"] = probs["expr"].clamp(min=_EPS).log()
    if "au" in probs:
        p = probs["au"].clamp(_EPS, 1 - _EPS)
        out["au"] = p.log() - (-p).log1p()
    if "va" in probs:
        out["va"] = probs["va"]
    return out


def _normalised(weights: Mapping[str, Sequence[float]] | None, tasks, k: int) -> dict:
    out = {}
    for task in tasks:
        ws = [float(w) for w in (weights or {}).get(task, [1.0] * k)]
        if len(ws) != k or min(ws) < 0 or sum(ws) <= 0:
            raise InputError(
                f"ensemble weights of {task} must be {k} non-negative numbers, got {ws}",
                hint="one weight per member, not all 0",
            )
        out[task] = [w / sum(ws) for w in ws]
    return out


def _same(values: list[Any], what: str) -> Any:
    if any(v != values[0] for v in values[1:]):
        raise InputError(
            f"the members differ in {what}: {', '.join(map(str, values))}",
            hint=f"combine members with the same {what}",
        )
    return values[0]


@register_model("ensemble")
class EnsembleModel(nn.Module):
    """A weighted sum of the outputs of trained members.

    Parameters
    ----------
    members
        One mapping per member: ``model`` (registry name), ``hparams`` (its full ``hparams``),
        ``window`` (window models: the window it was trained with) and any information to
        keep (e.g. ``checkpoint``, where it came from).
    weights
        ``{task: [w_1 … w_K]}`` (normalised to sum 1); equal weights where not given.
    tasks
        Tasks of the ensemble; every member must have them.
    modalities
        ``["image"]`` for image members, else the union of the members' modalities (checked).
    n_expr, n_au
        Checked against the members when given.
    fitted
        What chose the weights (validation scores…), kept as information.
    **derived
        What ``hparams`` also records, derived from the members (image members: ``crop``,
        ``input_size``; window members: ``window``, ``dims``); checked when given.
    """

    def __init__(
        self,
        members: Sequence[Mapping[str, Any]],
        weights: Mapping[str, Sequence[float]] | None = None,
        tasks: Sequence[str] | None = None,
        modalities: Sequence[str] | None = None,
        n_expr: int | None = None,
        n_au: int | None = None,
        fitted: Mapping[str, Any] | None = None,
        **derived: Any,
    ) -> None:
        super().__init__()
        if len(members) < 2:
            raise InputError("an ensemble needs at least 2 members", hint="give 2 or more")
        specs = [dict(m) for m in members]
        self.members = nn.ModuleList(create_model(m["model"], **m["hparams"]) for m in specs)
        own = [set(getattr(m, "tasks", m.hparams.get("tasks", ()))) for m in self.members]
        common = [t for t in ("expr", "au", "va") if all(t in o for o in own)]
        self.tasks = normalize_tasks(tasks or common)
        missing = [t for t in self.tasks if t not in common]
        if missing:
            raise InputError(f"not every member has the {', '.join(missing)} head(s)")
        for key, given in (("n_expr", n_expr), ("n_au", n_au)):
            sizes = [int(m.hparams.get(key, 0)) for m in self.members]
            if (key == "n_expr" and "expr" in self.tasks) or (key == "n_au" and "au" in self.tasks):
                size = _same(sizes, key)
                if given is not None and int(given) != size:
                    raise InputError(f"{key} {given} does not match the members' {size}")
        kinds = {list(m.hparams.get("modalities", [])) == ["image"] for m in self.members}
        if len(kinds) > 1:
            raise InputError(
                "an ensemble combines image models or models over cached features, not both"
            )
        self.image = kinds.pop()
        self.weights = _normalised(weights, self.tasks, len(self.members))
        self._setup_kind(specs, modalities)
        self.hparams: dict[str, Any] = {
            "members": specs,
            "weights": self.weights,
            "tasks": list(self.tasks),
            "modalities": list(self.modalities),
            "fitted": dict(fitted or {}),
            **self._kind_hparams,
        }
        for key, value in derived.items():
            if key not in self._kind_hparams or value != self._kind_hparams[key]:
                raise InputError(
                    f"ensemble: {key}={value!r} does not fit its members "
                    f"({self._kind_hparams.get(key, 'not a setting of this ensemble')})"
                )

    def _setup_kind(self, specs: list[dict], modalities: Sequence[str] | None) -> None:
        if self.image:
            self.modalities: tuple[str, ...] = ("image",)
            crop = _same([dict(m.hparams.get("crop") or {}) for m in self.members], "crop")
            self.input_size = max(int(m.input_size) for m in self.members)
            self.windows = [1] * len(specs)
            self._kind_hparams = {"crop": crop, "input_size": self.input_size}
        else:
            used = {x for m in self.members for x in m.modalities}
            self.modalities = tuple(x for x in MODALITIES if x in used)
            self.windows = [int(s.get("window", 1)) for s in specs]
            dims: dict[str, int] = {}
            for m in self.members:
                for x, d in m.hparams.get("dims", {}).items():
                    dims[x] = _same([dims.get(x, int(d)), int(d)], f"the width of {x}")
            self._kind_hparams = {"window": max(self.windows), "dims": dims}
        if modalities is not None and list(modalities) != list(self.modalities):
            raise InputError(
                f"the members read {', '.join(self.modalities)}, not {', '.join(modalities)}"
            )

    @property
    def feature_dim(self) -> int:
        """Width of the image members' features, concatenated."""
        return sum(int(m.feature_dim) for m in self.members)

    def member_probabilities(self, batch: Mapping[str, Tensor]) -> list[dict[str, Tensor]]:
        """Each member's own outputs for ``batch`` (probabilities, VA), its part of the window."""
        parts = []
        for member, window in zip(self.members, self.windows, strict=True):
            sub = batch if self.image else self._sub_window(batch, member, window)
            parts.append(member_probabilities(member(sub)))
        return parts

    def _sub_window(self, batch: Mapping[str, Tensor], member: nn.Module, window: int) -> dict:
        t = int(batch[member.modalities[0]].shape[1])
        start = t // 2 - window // 2
        if start < 0 or start + window > t:
            raise InputError(f"a member reads {window}-frame windows; the batch has {t} frames")
        out = {}
        for x in member.modalities:
            out[x] = batch[x][:, start : start + window]
            if f"mask_{x}" in batch:
                out[f"mask_{x}"] = batch[f"mask_{x}"][:, start : start + window]
        return out

    def forward(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The combined outputs (``expr`` log-probabilities, ``au`` logits, ``va``)."""
        return _as_outputs(combine(self.member_probabilities(batch), self.weights))

    @torch.inference_mode()
    def embed(self, images: Tensor, flip: bool = True) -> tuple[Tensor, dict[str, Tensor]]:
        """Image members: their features concatenated and the weighted sum of their own
        (flip-averaged) ``embed`` outputs."""
        if not self.image:
            raise InputError("embed takes face images: this ensemble's members read features")
        parts = [member.embed(images, flip=flip) for member in self.members]
        feats = torch.cat([f for f, _ in parts], dim=-1)
        return feats, combine([p for _, p in parts], self.weights)
