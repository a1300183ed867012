"""``hybrid_cnn_transformer``: the hybrid CNN-Transformer of seed 000, an image model.

Wang, Li and Liu, "Hybrid CNN-Transformer Model For Facial Affect Recognition In the ABAW4
Challenge" (ECCVW 2022): a CNN feature extractor, and Transformer encoder layers over its
spatial feature map for spatial attention; the AU head is trained with BCE weighted by the
label frequencies (``--loss au=weighted_bce``); two such models with different pretrained CNNs
are combined (``mmaffect ensemble``).

Here: the backbone's feature map ``(N, C, h, w)`` → a 1x1 convolution to ``d_model`` → one token
per position (``h·w`` tokens) with 2-D sinusoidal positions (half the channels encode the row,
half the column) → ``num_layers`` Transformer encoder layers → the mean of the tokens → task
heads. Crops, preparation, augmentation, flip averaging and ``crop`` are those of every image
model (:class:`~mmaffect.models.face_cnn.FaceImageModel`). See ``docs/models_architectures.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mmaffect.errors import InputError
from mmaffect.models.common import SinusoidalPositionalEncoding
from mmaffect.models.face_cnn import FaceImageModel
from mmaffect.models.registry import register_model

__all__ = ["HybridCNNTransformer"]


@register_model("hybrid_cnn_transformer")
class HybridCNNTransformer(FaceImageModel):
    """CNN feature map → Transformer encoder over its positions → mean token → task heads.

    Parameters
    ----------
    backbone, input_size
        The CNN and its input side.
    tasks, n_expr, n_au
        Heads, as in every registry model (the paper's model is multi-task).
    d_model, num_heads, num_layers, ff_dim
        Token width, attention heads, encoder layers (2 in the paper) and feed-forward width
        (0: ``4·d_model``).
    head_hidden, dropout
        Hidden width of the task heads (0: one linear layer); dropout in the encoder and before
        the heads.
    crop, augment, modalities
        As for ``face_cnn``.
    """

    model_name = "hybrid_cnn_transformer"

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        input_size: int | None = None,
        tasks: Sequence[str] = ("expr", "au", "va"),
        n_expr: int = 8,
        n_au: int = 12,
        d_model: int = 256,
        num_heads: int = 4,
        num_layers: int = 2,
        ff_dim: int = 0,
        head_hidden: int = 0,
        dropout: float = 0.1,
        crop: Mapping[str, Any] | None = None,
        augment: Mapping[str, Any] | None = None,
        modalities: Sequence[str] = ("image",),
    ) -> None:
        super().__init__()
        if d_model % 2 or d_model % num_heads:
            raise InputError(
                f"d_model {d_model} must be even and divisible by num_heads {num_heads}",
                hint="e.g. d_model 256 with 4 or 8 heads",
            )
        extra = dict(
            d_model=int(d_model), num_heads=int(num_heads), num_layers=int(num_layers),
            ff_dim=int(ff_dim), head_hidden=head_hidden,
        )  # fmt: skip
        self._setup_image(
            backbone=backbone, input_size=input_size, tasks=tasks, n_expr=n_expr, n_au=n_au,
            dropout=dropout, crop=crop, augment=augment, modalities=modalities, extra=extra,
        )  # fmt: skip
        self.project = nn.Conv2d(self.spec.dim, d_model, kernel_size=1)
        self.positions = SinusoidalPositionalEncoding(d_model // 2)
        layer = nn.TransformerEncoderLayer(
            d_model,
            num_heads,
            dim_feedforward=ff_dim or 4 * d_model,
            dropout=dropout,
            batch_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self._setup_heads(d_model, head_hidden, dropout)

    @property
    def feature_dim(self) -> int:
        return int(self.hparams["d_model"])

    def position_codes(self, h: int, w: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """``(h·w, d_model)``: the row's code in the first half, the column's in the second."""
        rows = self.positions.encoding(h, device, dtype)[:, None, :].expand(h, w, -1)
        cols = self.positions.encoding(w, device, dtype)[None, :, :].expand(h, w, -1)
        return torch.cat([rows, cols], dim=-1).reshape(h * w, -1)

    def encode(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        fmap = self.project(self.backbone.feature_map(x))  # (N, d, h, w)
        n, d, h, w = fmap.shape
        tokens = fmap.flatten(2).transpose(1, 2)  # (N, h·w, d)
        tokens = tokens + self.position_codes(h, w, tokens.device, tokens.dtype)
        return self.norm(self.encoder(tokens).mean(dim=1)), {}
