"""``affine_transformer``: the ABAW7 affine module + Transformer encoder model (seed 001).

Each input's per-frame features (a modality, or a named feature set: several visual feature
sets may come from one branch) go through an affine map to a common width, get sinusoidal
positions and a learned input embedding; all inputs' tokens are concatenated along time and
encoded jointly. See ``docs/models_architectures.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from mmaffect.models.common import (
    MODALITIES,
    AffectModel,
    SinusoidalPositionalEncoding,
    TaskHeads,
    middle_index,
)
from mmaffect.models.registry import register_model

__all__ = ["AffineTransformerModel"]


@register_model("affine_transformer")
class AffineTransformerModel(AffectModel):
    """Affine module per modality → joint Transformer encoder → middle-frame pooling → heads.

    Parameters
    ----------
    modalities
        Any non-empty subset of ``frame, clip, speech, word``, or feature set names
        (:data:`mmaffect.training.feature_sets.FEATURE_SETS`, e.g. ``face_cnn, imagenet,
        blendshapes``: seed 001's several visual feature sets), each with its width in ``dims``.
    tasks
        Any non-empty subset of ``expr, au, va``.
    dims
        Feature widths per modality (defaults: frame 1280, clip 190, speech 85, word 385).
    n_expr, n_au
        EXPR classes and AUs.
    d_model
        Common width of the tokens.
    num_heads, num_layers, ff_dim
        Transformer encoder shape (``ff_dim=0``: ``4·d_model``).
    head_hidden
        Hidden width of each task MLP (0: a single linear layer).
    dropout
        Dropout in the encoder and heads.

    Notes
    -----
    Token sequence: ``[summary] + tokens(m_1) + … + tokens(m_k)`` (``k·T + 1`` tokens), where
    token ``(m, t) = LayerNorm(A_m x_{m,t} + b_m) + PE(t) + E_m`` (``E_m`` a learned modality
    embedding, so the same time step of different modalities shares its position). Masked
    frames are key-padded. The learned summary token is never masked, so windows with every
    frame masked still give finite outputs. Pooled vector: ``[summary output, mean over the
    modalities whose middle frame (index T // 2) is valid of that token's output]`` (zeros
    when none is valid), ``2·d_model`` wide.
    """

    def __init__(
        self,
        modalities: Sequence[str] = MODALITIES,
        tasks: Sequence[str] = ("expr", "au", "va"),
        dims: Mapping[str, int] | None = None,
        n_expr: int = 8,
        n_au: int = 12,
        d_model: int = 256,
        num_heads: int = 4,
        num_layers: int = 2,
        ff_dim: int = 0,
        head_hidden: int = 256,
        dropout: float = 0.1,
    ):
        super().__init__()
        self._setup(
            dict(
                n_expr=n_expr,
                n_au=n_au,
                d_model=d_model,
                num_heads=num_heads,
                num_layers=num_layers,
                ff_dim=ff_dim,
                head_hidden=head_hidden,
                dropout=dropout,
            ),
            modalities,
            tasks,
            dims,
            # several feature sets of one branch (seed 001): any names, widths in dims
            named_inputs=any(m not in MODALITIES for m in modalities),
        )
        self.affine = nn.ModuleDict(
            {
                m: nn.Sequential(nn.Linear(self.dims[m], d_model), nn.LayerNorm(d_model))
                for m in self.modalities
            }
        )
        self.modality_embedding = nn.Parameter(torch.randn(len(self.modalities), d_model) * 0.02)
        self.summary = nn.Parameter(torch.randn(1, 1, d_model) * 0.02)
        self.pos = SinusoidalPositionalEncoding(d_model)
        layer = nn.TransformerEncoderLayer(
            d_model,
            num_heads,
            dim_feedforward=ff_dim or 4 * d_model,
            dropout=dropout,
            batch_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.heads = TaskHeads(2 * d_model, self.tasks, n_expr, n_au, head_hidden, dropout)

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
        tokens: list[Tensor] = []
        masks: list[Tensor] = []
        for i, m in enumerate(self.modalities):
            x, mask = inputs[m]
            tokens.append(self.pos(self.affine[m](x)) + self.modality_embedding[i])
            masks.append(mask)
        b, t = masks[0].shape
        valid = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=masks[0].device), *masks], 1)
        seq = torch.cat([self.summary.expand(b, -1, -1), *tokens], dim=1)
        enc = self.encoder(seq, src_key_padding_mask=~valid)
        mid = middle_index(t)
        idx = [1 + i * t + mid for i in range(len(self.modalities))]
        mid_out = enc[:, idx]  # (B, k, d)
        mid_valid = torch.stack([mk[:, mid] for mk in masks], dim=1).to(enc.dtype)  # (B, k)
        pooled_mid = (mid_out * mid_valid[..., None]).sum(1) / mid_valid.sum(1, keepdim=True).clamp(
            min=1.0
        )
        return self.heads(torch.cat([enc[:, 0], pooled_mid], dim=-1))
