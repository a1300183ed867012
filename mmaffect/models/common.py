"""Pieces shared by the models: input checking, positional encoding, task heads."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mmaffect.errors import InputError

__all__ = [
    "DEFAULT_DIMS",
    "MODALITIES",
    "TASKS",
    "AffectModel",
    "SinusoidalPositionalEncoding",
    "TaskHeads",
    "middle_index",
]

MODALITIES: tuple[str, ...] = ("frame", "clip", "speech", "word")
"""All modalities, in the canonical order (concatenations follow it)."""

DEFAULT_DIMS: dict[str, int] = {"frame": 1280, "clip": 190, "speech": 85, "word": 385}
"""Per-frame feature widths written by ``mmaffect extract`` (``docs/extract.md``)."""

TASKS: tuple[str, ...] = ("expr", "au", "va")


def middle_index(t: int) -> int:
    """Index of the frame a window of ``t`` frames predicts: ``t // 2``."""
    return t // 2


def normalize_modalities(modalities: Iterable[str]) -> tuple[str, ...]:
    """Check ``modalities`` and return them deduplicated, in canonical order."""
    given = list(modalities)
    unknown = [m for m in given if m not in MODALITIES]
    if unknown:
        raise InputError(
            f"unknown modalities {unknown}", hint=f"valid modalities: {', '.join(MODALITIES)}"
        )
    out = tuple(m for m in MODALITIES if m in given)
    if not out:
        raise InputError("a model needs at least one modality", hint=", ".join(MODALITIES))
    return out


def normalize_tasks(tasks: Iterable[str]) -> tuple[str, ...]:
    """Check ``tasks`` (any case) and return them lower-case, in the order expr, au, va."""
    given = [t.lower() for t in tasks]
    unknown = [t for t in given if t not in TASKS]
    if unknown:
        raise InputError(f"unknown tasks {unknown}", hint=f"valid tasks: {', '.join(TASKS)}")
    out = tuple(t for t in TASKS if t in given)
    if not out:
        raise InputError("a model needs at least one task", hint=", ".join(TASKS))
    return out


def normalize_dims(dims: Mapping[str, int] | None) -> dict[str, int]:
    """Feature widths: :data:`DEFAULT_DIMS` overridden by ``dims``."""
    out = dict(DEFAULT_DIMS)
    for k, v in (dims or {}).items():
        if k not in MODALITIES:
            raise InputError(f"unknown modality {k!r} in dims", hint=", ".join(MODALITIES))
        out[k] = int(v)
    return out


class SinusoidalPositionalEncoding(nn.Module):
    """Fixed sine/cosine positions (Vaswani et al.), added to ``(B, T, d)`` inputs.

    Positions are computed on the fly, so any ``T`` works.
    """

    def __init__(self, d_model: int):
        super().__init__()
        self.d_model = d_model

    def encoding(self, t: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """The ``(t, d_model)`` encoding."""
        pos = torch.arange(t, device=device, dtype=torch.float32)[:, None]
        i = torch.arange(0, self.d_model, 2, device=device, dtype=torch.float32)
        freq = torch.exp(-math.log(10000.0) * i / self.d_model)
        pe = torch.zeros(t, self.d_model, device=device)
        pe[:, 0::2] = torch.sin(pos * freq)
        pe[:, 1::2] = torch.cos(pos * freq)[:, : self.d_model // 2]
        return pe.to(dtype)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.encoding(x.shape[1], x.device, x.dtype)


class TaskHeads(nn.Module):
    """One MLP per task: ``Linear → ReLU → Dropout → Linear`` (``hidden=0``: one ``Linear``).

    Outputs ``expr`` logits ``(..., n_expr)``, ``au`` logits ``(..., n_au)``, ``va`` ``(..., 2)``
    through tanh (``va_activation=False`` returns VA before tanh, for ensembles).
    """

    def __init__(
        self,
        in_dim: int,
        tasks: Sequence[str],
        n_expr: int = 8,
        n_au: int = 12,
        hidden: int = 256,
        dropout: float = 0.1,
    ):
        super().__init__()
        sizes = {"expr": n_expr, "au": n_au, "va": 2}
        self.heads = nn.ModuleDict()
        for task in tasks:
            if hidden > 0:
                self.heads[task] = nn.Sequential(
                    nn.Linear(in_dim, hidden),
                    nn.ReLU(),
                    nn.Dropout(dropout),
                    nn.Linear(hidden, sizes[task]),
                )
            else:
                self.heads[task] = nn.Linear(in_dim, sizes[task])

    def forward(self, x: Tensor, va_activation: bool = True) -> dict[str, Tensor]:
        out = {task: head(x) for task, head in self.heads.items()}
        if va_activation and "va" in out:
            out["va"] = torch.tanh(out["va"])
        return out


class AffectModel(nn.Module):
    """Base class: keeps ``hparams``, ``modalities``, ``tasks``; reads and checks batches."""

    hparams: dict[str, Any]
    modalities: tuple[str, ...]
    tasks: tuple[str, ...]
    dims: dict[str, int]

    def _setup(
        self,
        hparams: dict[str, Any],
        modalities: Iterable[str],
        tasks: Iterable[str],
        dims: Mapping[str, int] | None,
        named_inputs: bool = False,
    ) -> None:
        """``named_inputs``: the inputs may be any names (e.g. feature sets, ``imagenet``,
        ``face_cnn``, ``blendshapes``) in the given order, each with its width in ``dims``
        (the modalities' default widths otherwise)."""
        self.tasks = normalize_tasks(tasks)
        if named_inputs:
            self.modalities = tuple(dict.fromkeys(str(m) for m in modalities))
            given = {**DEFAULT_DIMS, **{k: int(v) for k, v in (dims or {}).items()}}
            missing = [m for m in self.modalities if m not in given]
            if missing or not self.modalities:
                raise InputError(
                    f"no width for the inputs {', '.join(missing) or '(none given)'}",
                    hint="give dims: {name: width} for each",
                )
            self.dims = {m: given[m] for m in self.modalities}
        else:
            self.modalities = normalize_modalities(modalities)
            self.dims = normalize_dims(dims)
        hp = dict(hparams)
        hp["modalities"] = list(self.modalities)
        hp["tasks"] = list(self.tasks)
        hp["dims"] = {m: self.dims[m] for m in self.modalities}
        self.hparams = hp

    def read_inputs(self, batch: Mapping[str, Tensor]) -> dict[str, tuple[Tensor, Tensor]]:
        """``{modality: (features (B, T, D) float, mask (B, T) bool)}`` for the enabled ones.

        Missing ``mask_<m>`` means all frames valid. Features of masked frames are replaced by
        0 (so NaN or garbage there cannot leak into the outputs). All enabled modalities must
        share ``B`` and ``T``.
        """
        out: dict[str, tuple[Tensor, Tensor]] = {}
        shape: tuple[int, int] | None = None
        for m in self.modalities:
            x = batch.get(m)
            if x is None:
                raise InputError(
                    f"batch has no {m!r} features",
                    hint=f"this model uses {', '.join(self.modalities)}",
                )
            if x.ndim != 3 or x.shape[-1] != self.dims[m]:
                raise InputError(
                    f"{m!r} features must be (B, T, {self.dims[m]}), got {tuple(x.shape)}"
                )
            b, t = int(x.shape[0]), int(x.shape[1])
            if shape is None:
                shape = (b, t)
            elif shape != (b, t):
                raise InputError(f"{m!r} features are {(b, t)} (B, T), other modalities {shape}")
            mask = batch.get(f"mask_{m}")
            if mask is None:
                mask = torch.ones(b, t, dtype=torch.bool, device=x.device)
            elif tuple(mask.shape) != (b, t):
                raise InputError(f"mask_{m} must be {(b, t)}, got {tuple(mask.shape)}")
            mask = mask.to(torch.bool)
            x = torch.where(mask[..., None], x.float(), torch.zeros((), device=x.device))
            out[m] = (x, mask)
        return out
