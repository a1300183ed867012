"""``temporal_ensemble``: the ABAW2 spatial-temporal ensemble over per-frame features.

Up to three members share one per-frame embedding (over the per-frame features of the CNN, e.g.
a face model's as the frame branch, ``extract --frame-model``): a frame-only MLP on the middle
frame, a 2-layer GRU and a Transformer encoder with sinusoidal positions. Their task outputs
are combined by a weighted sum. ``members`` chooses which are built: one member alone is how
the paper trains them (each on its own, the GRU many-to-many), to be combined afterwards by
``mmaffect ensemble`` with weights fitted on the validation split. See
``docs/models_architectures.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from mmaffect.errors import InputError
from mmaffect.models.common import (
    AffectModel,
    SinusoidalPositionalEncoding,
    TaskHeads,
    middle_index,
)
from mmaffect.models.registry import register_model

__all__ = ["TemporalEnsembleModel"]

MEMBERS = ("frame", "gru", "transformer")


@register_model("temporal_ensemble")
class TemporalEnsembleModel(AffectModel):
    """Frame MLP + GRU + Transformer heads, weighted-sum ensemble (ABAW2).

    Parameters
    ----------
    modalities
        Any non-empty subset of ``frame, clip, speech, word`` (default ``frame, clip``, the
        visual features of the paper).
    tasks
        Any non-empty subset of ``expr, au, va``.
    dims
        Feature widths per modality.
    n_expr, n_au
        EXPR classes and AUs.
    d_model
        Width of the shared per-frame embedding, the GRU hidden size and the Transformer width.
    gru_layers
        GRU depth (2 as in the paper).
    num_heads, num_layers
        Transformer encoder shape (feed-forward ``4·d_model``).
    head_hidden
        Hidden width of each task MLP (0: a single linear layer).
    dropout
        Dropout in the embedding, encoder and heads.
    ensemble_weights
        Initial (or fixed) weight of each member (one per member).
    learn_weights
        True: the weights are learned, as ``softmax(logits)`` initialised from
        ``ensemble_weights``; False: fixed, normalised to sum 1.
    members
        Which members are built, among ``frame``, ``gru``, ``transformer`` (default all three,
        in that order); one alone is a member trained on its own.

    Notes
    -----
    Per-frame embedding: each modality ``Linear → ReLU`` to ``d_model``, features of masked
    frames replaced by a learned per-modality "missing" vector, the modalities concatenated
    and mapped by ``Linear → ReLU`` to ``d_model``. The GRU and Transformer see every frame
    (a masked frame is its "missing" embedding, so all-masked windows stay finite). The members'
    EXPR/AU logits and pre-tanh VA are combined with convex weights; VA is then tanh-ed.
    """

    def __init__(
        self,
        modalities: Sequence[str] = ("frame", "clip"),
        tasks: Sequence[str] = ("expr", "au", "va"),
        dims: Mapping[str, int] | None = None,
        n_expr: int = 8,
        n_au: int = 12,
        d_model: int = 256,
        gru_layers: int = 2,
        num_heads: int = 4,
        num_layers: int = 2,
        head_hidden: int = 256,
        dropout: float = 0.1,
        ensemble_weights: Sequence[float] | None = None,
        learn_weights: bool = True,
        members: Sequence[str] = MEMBERS,
    ):
        super().__init__()
        unknown = [m for m in members if m not in MEMBERS]
        self.members = tuple(m for m in MEMBERS if m in members)
        if unknown or not self.members:
            raise InputError(
                f"unknown or no temporal_ensemble members {list(members)}",
                hint=f"choose among {', '.join(MEMBERS)}",
            )
        n = len(self.members)
        weights = [float(w) for w in (ensemble_weights or [1.0] * n)]
        if len(weights) != n or min(weights) <= 0:
            raise InputError(
                f"ensemble_weights must be {n} positive numbers, got {weights}",
                hint=f"one weight per member ({', '.join(self.members)})",
            )
        self._setup(
            dict(
                n_expr=n_expr,
                n_au=n_au,
                d_model=d_model,
                gru_layers=gru_layers,
                num_heads=num_heads,
                num_layers=num_layers,
                head_hidden=head_hidden,
                dropout=dropout,
                ensemble_weights=weights,
                learn_weights=learn_weights,
                members=list(self.members),
            ),
            modalities,
            tasks,
            dims,
        )
        self.embed = nn.ModuleDict(
            {m: nn.Sequential(nn.Linear(self.dims[m], d_model), nn.ReLU()) for m in self.modalities}
        )
        self.missing = nn.Parameter(torch.zeros(len(self.modalities), d_model))
        self.fuse = nn.Sequential(
            nn.Linear(d_model * len(self.modalities), d_model), nn.ReLU(), nn.Dropout(dropout)
        )
        if "gru" in self.members:
            self.gru = nn.GRU(
                d_model,
                d_model,
                num_layers=gru_layers,
                batch_first=True,
                dropout=dropout if gru_layers > 1 else 0.0,
            )
        if "transformer" in self.members:
            self.pos = SinusoidalPositionalEncoding(d_model)
            layer = nn.TransformerEncoderLayer(
                d_model, num_heads, dim_feedforward=4 * d_model, dropout=dropout, batch_first=True
            )
            self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.member_heads = nn.ModuleDict(
            {
                k: TaskHeads(d_model, self.tasks, n_expr, n_au, head_hidden, dropout)
                for k in self.members
            }
        )
        log_w = torch.log(torch.tensor(weights) / sum(weights))
        if learn_weights:
            self.weight_logits = nn.Parameter(log_w)
        else:
            self.register_buffer("weight_logits", log_w)

    def ensemble_weights(self) -> Tensor:
        """Current weights of the members (``members`` order), summing to 1."""
        return torch.softmax(self.weight_logits, dim=0)

    def embed_frames(self, batch: Mapping[str, Tensor]) -> Tensor:
        """The shared per-frame embedding ``(B, T, d_model)``."""
        inputs = self.read_inputs(batch)
        parts = []
        for i, m in enumerate(self.modalities):
            x, mask = inputs[m]
            parts.append(torch.where(mask[..., None], self.embed[m](x), self.missing[i]))
        return self.fuse(torch.cat(parts, dim=-1))

    def member_outputs(
        self, batch: Mapping[str, Tensor], many_to_many: bool = False
    ) -> dict[str, dict[str, Tensor]]:
        """Each member's raw outputs (logits, VA before tanh).

        Parameters
        ----------
        batch
            As for :meth:`forward`.
        many_to_many
            False: ``(B, C)`` at the middle frame. True: ``(B, T, C)`` for every frame from
            the frame and GRU members (the GRU's many-to-many training of the paper) and the
            Transformer member.

        Returns
        -------
        dict
            ``{member: {task: tensor}}`` for each of ``members``.
        """
        h = self.embed_frames(batch)
        mid = middle_index(h.shape[1])
        seqs = {"frame": h}
        if "gru" in self.members:
            seqs["gru"] = self.gru(h)[0]
        if "transformer" in self.members:
            seqs["transformer"] = self.encoder(self.pos(h))
        out = {}
        for k in self.members:
            s = seqs[k]
            out[k] = self.member_heads[k](s if many_to_many else s[:, mid], va_activation=False)
        return out

    def forward(self, batch: Mapping[str, Tensor], many_to_many: bool = False) -> dict[str, Tensor]:
        """Weighted-sum ensemble prediction.

        Parameters
        ----------
        batch
            ``{m: (B, T, D_m), "mask_<m>": (B, T) bool}`` for each enabled modality ``m``.
        many_to_many
            False (inference): predict the middle frame, ``(B, C)``. True: every frame,
            ``(B, T, C)``.

        Returns
        -------
        dict
            ``expr`` logits, ``au`` logits, ``va`` in [-1, 1]; only the configured tasks.
        """
        members = self.member_outputs(batch, many_to_many)
        w = self.ensemble_weights()
        out = {}
        for task in self.tasks:
            out[task] = sum(w[i] * members[k][task] for i, k in enumerate(self.members))
        if "va" in out:
            out["va"] = torch.tanh(out["va"])
        return out
