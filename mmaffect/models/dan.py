"""``dan``: the multi-head cross attention network (DAN) of seed 003, an image model.

Wen et al., "Distract Your Attention: Multi-head Cross Attention Network for Facial Expression
Recognition" (2021), used for EXPR and VA by the ABAW3 seed paper (focal loss for EXPR, CCC
for VA, bagging of several trained models by soft voting: ``mmaffect ensemble``). Three parts:

* **feature clustering network** (FCN): a backbone from :mod:`mmaffect.nets.registry`; its
  pooled features are pulled towards learned class centres by the affinity loss
  (:func:`mmaffect.losses.affinity_loss`);
* **multi-head cross attention network** (MAN): ``num_heads`` heads over the backbone's feature
  map, each a spatial attention unit (1x1 reduction, then 3x3 + 1x3 + 3x1 convolutions summed,
  ReLU, summed over channels: one weight per position, multiplied into the map) followed by a
  channel attention unit (global average pool, ``Linear → norm → ReLU → Linear → sigmoid``
  weights multiplied into the pooled vector);
* **attention fusion network** (AFN): the heads' vectors are scaled by a log-softmax across the
  heads and summed; the partition loss (:func:`mmaffect.losses.partition_loss`) pushes the
  heads apart, to different parts of the face.

Crops, preparation, augmentation, flip averaging and ``crop`` are those of every image model
(:class:`~mmaffect.models.face_cnn.FaceImageModel`). See ``docs/models_architectures.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmaffect.models.face_cnn import FaceImageModel
from mmaffect.models.registry import register_model

__all__ = ["DAN", "ChannelAttention", "CrossAttentionHead", "LogitNorm", "SpatialAttention"]


def _conv_bn(c_in: int, c_out: int, kernel: tuple[int, int]) -> nn.Sequential:
    padding = (kernel[0] // 2, kernel[1] // 2)
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, padding=padding), nn.BatchNorm2d(c_out))


class SpatialAttention(nn.Module):
    """One weight per position of the feature map, from 3x3, 1x3 and 3x1 convolutions."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.reduce = _conv_bn(channels, reduced, (1, 1))
        self.square = _conv_bn(reduced, channels, (3, 3))
        self.row = _conv_bn(reduced, channels, (1, 3))
        self.column = _conv_bn(reduced, channels, (3, 1))

    def forward(self, x: Tensor) -> Tensor:
        y = self.reduce(x)
        y = F.relu(self.square(y) + self.row(y) + self.column(y))
        return x * y.sum(dim=1, keepdim=True)


class ChannelAttention(nn.Module):
    """Channel weights of the pooled map: ``Linear → LayerNorm → ReLU → Linear → sigmoid``."""

    def __init__(self, channels: int, hidden: int = 32) -> None:
        super().__init__()
        self.weights = nn.Sequential(
            nn.Linear(channels, hidden),
            nn.LayerNorm(hidden),
            nn.ReLU(),
            nn.Linear(hidden, channels),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        pooled = x.mean(dim=(2, 3))
        return pooled * self.weights(pooled)


class LogitNorm(nn.BatchNorm1d):
    """The authors' ``BatchNorm1d`` after the expression layer. It keeps the logits' scale in
    hand whatever the fused vector's (summed log-softmax values reach tens): without it the
    focal loss starts near 30 and SGD at the recipe's lr 0.1 diverges within a few steps. A
    training batch of one face is normalised with the running statistics."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


class CrossAttentionHead(nn.Module):
    """Spatial then channel attention: a ``(N, C)`` vector per face."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.spatial = SpatialAttention(channels, reduced)
        self.channel = ChannelAttention(channels)
        for m in self.modules():  # the initialisation of the authors' code
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.001)
                nn.init.zeros_(m.bias)

    def forward(self, fmap: Tensor) -> Tensor:
        return self.channel(self.spatial(fmap))


@register_model("dan")
class DAN(FaceImageModel):
    """DAN: backbone (FCN) → cross attention heads (MAN) → attention fusion (AFN) → task heads.

    Parameters
    ----------
    backbone, input_size
        The feature clustering network (``resnet18``: ResNet-18 as in the paper) and its input
        side.
    tasks, n_expr, n_au
        Heads, as in every registry model.
    num_heads
        Cross attention heads (4 in the authors' code).
    attention_dim
        Channels of the spatial attention's 1x1 reduction (256 in the authors' code).
    head_hidden, dropout
        Hidden width of the task heads (0: one linear layer) and the dropout before them.
    affinity_weight, partition_weight
        Weights of the affinity and partition losses beside the task losses (1 and 1 in the
        authors' code). The affinity loss needs expression labels: it is left out of batches
        (and tasks) without them.
    crop, augment, modalities
        As for ``face_cnn``.

    Notes
    -----
    In training mode the outputs also hold ``_pooled`` (the backbone's pooled features) and
    ``_heads`` (``(N, K, C)``, after the log-softmax) for :meth:`auxiliary_losses`. The
    authors' code normalises the channel attention with ``BatchNorm1d`` and the logits with a
    ``BatchNorm1d`` after one linear layer. Here the channel attention has a ``LayerNorm`` (any
    batch size, also 1) and the expression head of the task heads (one linear layer, or the
    ``head_hidden`` MLP) ends in the same ``BatchNorm1d`` (:class:`LogitNorm`); the AU and VA
    heads, which the authors' code does not have, have none.
    """

    model_name = "dan"

    def __init__(
        self,
        backbone: str = "resnet18",
        input_size: int | None = None,
        tasks: Sequence[str] = ("expr",),
        n_expr: int = 8,
        n_au: int = 12,
        num_heads: int = 4,
        attention_dim: int = 256,
        head_hidden: int = 0,
        dropout: float = 0.0,
        affinity_weight: float = 1.0,
        partition_weight: float = 1.0,
        crop: Mapping[str, Any] | None = None,
        augment: Mapping[str, Any] | None = None,
        modalities: Sequence[str] = ("image",),
    ) -> None:
        super().__init__()
        extra = dict(
            num_heads=int(num_heads), attention_dim=int(attention_dim), head_hidden=head_hidden,
            affinity_weight=float(affinity_weight), partition_weight=float(partition_weight),
        )  # fmt: skip
        self._setup_image(
            backbone=backbone, input_size=input_size, tasks=tasks, n_expr=n_expr, n_au=n_au,
            dropout=dropout, crop=crop, augment=augment, modalities=modalities, extra=extra,
        )  # fmt: skip
        channels = self.spec.dim
        self.attention = nn.ModuleList(
            CrossAttentionHead(channels, int(attention_dim)) for _ in range(int(num_heads))
        )
        # the class centres of the affinity loss (an EXPR model only)
        self.centers = nn.Parameter(torch.randn(n_expr, channels)) if "expr" in self.tasks else None
        self._setup_heads(channels, head_hidden, dropout)
        if "expr" in self.tasks:  # the authors' BatchNorm1d on the expression logits
            expr = self.heads.heads["expr"]
            self.heads.heads["expr"] = nn.Sequential(expr, LogitNorm(int(n_expr)))

    @property
    def feature_dim(self) -> int:
        return self.spec.dim

    def encode(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        fmap = self.backbone.feature_map(x)
        heads = torch.stack([head(fmap) for head in self.attention], dim=1)  # (N, K, C)
        if heads.shape[1] > 1:
            heads = F.log_softmax(heads, dim=1)
        return heads.sum(dim=1), {"_pooled": fmap.mean(dim=(2, 3)), "_heads": heads}

    def auxiliary_losses(
        self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]
    ) -> dict[str, Tensor]:
        """``partition`` and (with expression labels) ``affinity``, weighted; none outside
        training mode (the outputs then hold no ``_heads``)."""
        from mmaffect.losses import affinity_loss, partition_loss

        if "_heads" not in outputs:
            return {}
        hp = self.hparams
        out = {"partition": hp["partition_weight"] * partition_loss(outputs["_heads"])}
        if self.centers is not None and targets.get("expr") is not None:
            affinity = affinity_loss(outputs["_pooled"], targets["expr"], self.centers)
            out["affinity"] = hp["affinity_weight"] * affinity
        return out
