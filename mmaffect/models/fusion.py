"""``fusion``: the ABAW3 transformer-based multimodal information fusion model.

Zhang et al., "Transformer-based Multimodal Information Fusion for Facial Expression Analysis"
(CVPRW 2022). See ``docs/models_architectures.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from mmaffect.errors import InputError
from mmaffect.models.common import MODALITIES, AffectModel, TaskHeads, middle_index
from mmaffect.models.registry import register_model

__all__ = ["CrossAttentionBlock", "FusionModel", "GRUBranch"]

CLIP_BRANCHES = ("clip", "speech", "word")


class GRUBranch(nn.Module):
    """Clip branch: ``Linear → ReLU`` input projection, then stacked bidirectional GRUs.

    Output ``(B, T, 2·hidden)``.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int,
        num_layers: int = 2,
        dropout: float = 0.0,
        input_norm: bool = False,
    ):
        super().__init__()
        # Per-column standardisation learnt from the training batches (running mean and
        # variance, kept in the checkpoint): feature sets of very different scales side by
        # side (MFCC in dB beside Whisper states) then weigh alike in the projection.
        self.norm = nn.BatchNorm1d(in_dim) if input_norm else None
        self.proj = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU())
        self.gru = nn.GRU(
            hidden,
            hidden,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.norm is not None:
            x = self.norm(x.reshape(-1, x.shape[-1])).reshape(x.shape)
        out, _ = self.gru(self.proj(x))
        return out


class CrossAttentionBlock(nn.Module):
    """Multi-head cross attention of one query vector over one branch's GRU states.

    A learned "null" key/value is appended to every sequence and never masked, so a window
    whose frames are all masked attends to it alone: no softmax over an empty set, no NaN.
    Output: ``LayerNorm(query + attention)``, ``(B, d_model)``.
    """

    def __init__(self, d_model: int, kv_dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.attn = nn.MultiheadAttention(
            d_model, num_heads, dropout=dropout, kdim=kv_dim, vdim=kv_dim, batch_first=True
        )
        self.null_kv = nn.Parameter(torch.zeros(1, 1, kv_dim))
        nn.init.normal_(self.null_kv, std=0.02)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, query: Tensor, states: Tensor, mask: Tensor) -> Tensor:
        b = states.shape[0]
        kv = torch.cat([states, self.null_kv.expand(b, 1, -1)], dim=1)
        valid = torch.cat([mask, torch.ones(b, 1, dtype=torch.bool, device=mask.device)], dim=1)
        attended, _ = self.attn(
            query[:, None, :], kv, kv, key_padding_mask=~valid, need_weights=False
        )
        return self.norm(query + attended[:, 0])


POOLINGS = ("attention", "mean_std")


def masked_mean_std(states: Tensor, mask: Tensor) -> Tensor:
    """``(B, 2·D)``: mean and standard deviation over the valid steps of ``states`` ``(B, T, D)``
    (a window without a valid step gives zeros)."""
    w = mask.to(states.dtype)[..., None]
    n = w.sum(dim=1).clamp(min=1.0)
    mean = (states * w).sum(dim=1) / n
    var = (((states - mean[:, None]) ** 2) * w).sum(dim=1) / n
    return torch.cat([mean, var.clamp(min=1e-8).sqrt()], dim=-1)


@register_model("fusion")
class FusionModel(AffectModel):
    """Frame branch + GRU clip branches + cross attention + MLP task heads (ABAW3).

    Parameters
    ----------
    modalities
        Any non-empty subset of ``frame, clip, speech, word``.
    tasks
        Any non-empty subset of ``expr, au, va``.
    dims
        Feature widths per modality (defaults: frame 1280, clip 190, speech 85, word 385).
    n_expr, n_au
        Classes of the EXPR head (8; 7 for older editions) and AUs (12; 8 for some editions).
    d_model
        Width of ``f_img``, of the query and of each attended vector.
    gru_hidden
        Hidden size of each GRU direction; GRU states are ``2·gru_hidden`` wide.
    gru_layers
        Stacked bidirectional GRU layers per clip branch (2 as in the authors' code).
    num_heads
        Attention heads (must divide ``d_model``).
    head_hidden
        Hidden width of each task MLP (0: a single linear layer).
    dropout
        Dropout in the heads, the attention and between GRU layers.
    pooling
        How each clip branch sums up its window: ``attention`` (the paper's cross attention
        with the frame feature, or a learned query, as the query) or ``mean_std`` (the mean and
        standard deviation of the GRU states over the window's valid frames, projected to
        ``d_model``: segment statistics, for labels that hold for a whole utterance).
    input_norm
        Standardise each clip branch's input columns (batch normalisation: running mean and
        variance learnt in training, kept in the checkpoint) before its projection.

    Notes
    -----
    Without ``frame`` each branch's query is a learned vector plus a linear projection of the
    branch's own middle-frame GRU state (zero at initialisation), so the heads can both pool
    the window and single out the frame being predicted; nothing extra is concatenated into
    the heads' input. With ``frame`` only, the heads see ``f_img`` alone. If
    the middle frame has no valid frame feature, ``f_img`` is a learned "missing face" vector.
    """

    def __init__(
        self,
        modalities: Sequence[str] = MODALITIES,
        tasks: Sequence[str] = ("expr", "au", "va"),
        dims: Mapping[str, int] | None = None,
        n_expr: int = 8,
        n_au: int = 12,
        d_model: int = 256,
        gru_hidden: int = 128,
        gru_layers: int = 2,
        num_heads: int = 4,
        head_hidden: int = 256,
        dropout: float = 0.1,
        pooling: str = "attention",
        input_norm: bool = False,
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise InputError(f"unknown pooling {pooling!r}", hint=f"choose {', '.join(POOLINGS)}")
        self._setup(
            dict(
                n_expr=n_expr,
                n_au=n_au,
                d_model=d_model,
                gru_hidden=gru_hidden,
                gru_layers=gru_layers,
                num_heads=num_heads,
                head_hidden=head_hidden,
                dropout=dropout,
                pooling=pooling,
                input_norm=input_norm,
            ),
            modalities,
            tasks,
            dims,
        )
        self.branches = [m for m in CLIP_BRANCHES if m in self.modalities]
        if "frame" in self.modalities:
            self.frame_proj = nn.Sequential(nn.Linear(self.dims["frame"], d_model), nn.ReLU())
            self.missing_frame = nn.Parameter(torch.zeros(d_model))
        elif pooling == "attention":
            self.query = nn.Parameter(torch.randn(d_model) * 0.02)
            self.query_proj = nn.ModuleDict(
                {m: nn.Linear(2 * gru_hidden, d_model) for m in self.branches}
            )
            for proj in self.query_proj.values():  # start as the shared query, learn the rest
                nn.init.zeros_(proj.weight)
                nn.init.zeros_(proj.bias)
        self.grus = nn.ModuleDict(
            {
                m: GRUBranch(self.dims[m], gru_hidden, gru_layers, dropout, input_norm)
                for m in self.branches
            }
        )
        self.pooling = pooling
        if pooling == "mean_std":
            self.pool = nn.ModuleDict(
                {
                    m: nn.Sequential(nn.Linear(4 * gru_hidden, d_model), nn.LayerNorm(d_model))
                    for m in self.branches
                }
            )
        else:
            self.cross = nn.ModuleDict(
                {
                    m: CrossAttentionBlock(d_model, 2 * gru_hidden, num_heads, dropout)
                    for m in self.branches
                }
            )
        n_vectors = len(self.branches) + (1 if "frame" in self.modalities else 0)
        self.heads = TaskHeads(d_model * n_vectors, self.tasks, n_expr, n_au, head_hidden, dropout)

    def forward(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Predict the middle frame of each window.

        Parameters
        ----------
        batch
            ``{m: (B, T, D_m), "mask_<m>": (B, T) bool}`` for each enabled modality ``m``.

        Returns
        -------
        dict
            ``expr`` ``(B, n_expr)`` logits, ``au`` ``(B, n_au)`` logits, ``va`` ``(B, 2)`` in
            [-1, 1]; only the configured tasks.
        """
        inputs = self.read_inputs(batch)
        any_x = next(iter(inputs.values()))[0]
        b = any_x.shape[0]
        vectors: list[Tensor] = []
        if "frame" in inputs:
            x, mask = inputs["frame"]
            mid = middle_index(x.shape[1])
            f_img = torch.where(
                mask[:, mid, None], self.frame_proj(x[:, mid]), self.missing_frame.expand(b, -1)
            )
            vectors.append(f_img)
        for m in self.branches:
            x, mask = inputs[m]
            states = self.grus[m](x)
            if self.pooling == "mean_std":
                vectors.append(self.pool[m](masked_mean_std(states, mask)))
                continue
            if "frame" in inputs:
                query = vectors[0]
            else:
                query = self.query + self.query_proj[m](states[:, middle_index(x.shape[1])])
            vectors.append(self.cross[m](query, states, mask))
        return self.heads(torch.cat(vectors, dim=-1))
