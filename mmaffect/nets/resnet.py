"""A ResNet-18-style network for face crops, in plain PyTorch (trained from scratch).

The layout of ResNet-18 (He et al., 2016): four stages of two basic blocks (3x3 + 3x3 with an
identity or 1x1 projection shortcut), 64-128-256-512 channels, global average pooling. The stem
adapts to the input size, as small-image ResNets do: at 96 px and below a 3x3 stride-1
convolution (a 48x48 FER2013 face keeps its detail: 48 → 6 after the three strided stages);
above, the ImageNet stem (7x7 stride 2 and a 3x3 stride-2 max-pool). There are no pretrained
weights: torchvision cannot be installed beside the CPU torch wheel this project uses.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FEATURE_DIM", "ResNet18"]

#: Width of the pooled features.
FEATURE_DIM = 512
#: Largest input side that gets the small-image stem.
SMALL_INPUT = 96


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 layout with a stem for ``input_size`` (see the module docstring).

    Parameters
    ----------
    input_size
        The side the network is trained at (chooses the stem).
    in_chans
        3 for RGB, 1 for grey.
    """

    def __init__(self, input_size: int = 48, in_chans: int = 3) -> None:
        super().__init__()
        if input_size <= SMALL_INPUT:
            self.stem = nn.Sequential(
                nn.Conv2d(in_chans, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU()
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False),
                nn.BatchNorm2d(64),
                nn.ReLU(),
                nn.MaxPool2d(3, 2, 1),
            )
        blocks, cin = [], 64
        for cout, stride in ((64, 1), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1)):
            blocks.append(BasicBlock(cin, cout, stride))
            cin = cout
        blocks += [BasicBlock(256, FEATURE_DIM, 2), BasicBlock(FEATURE_DIM, FEATURE_DIM, 1)]
        self.blocks = nn.Sequential(*blocks)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for block in self.blocks:  # zero-init the last BN of each block: starts as identity
            nn.init.zeros_(block.bn2.weight)

    def feature_map(self, x: Tensor) -> Tensor:
        """``(N, 512, h, w)`` before pooling."""
        return self.blocks(self.stem(x))

    def forward_features(self, x: Tensor) -> Tensor:
        """``(N, 512)`` globally average-pooled features."""
        return self.feature_map(x).mean(dim=(2, 3))
