"""Frame branch (``f_img``): an image backbone over the aligned face crop, by name.

A backbone is a class registered with :func:`register_frame_backbone`; ``--frame-backbone NAME``
picks it. To add one, subclass :class:`FrameBackbone`, set ``name``, ``dim``, ``crop_size`` and
``model`` (a model-store name), and implement :meth:`FrameBackbone.build` and
:meth:`FrameBackbone.embed`.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from mmaffect.errors import InputError
from mmaffect.faces.crops import FaceCrop

FRAME_BACKBONES: dict[str, type[FrameBackbone]] = {}


def register_frame_backbone(cls: type[FrameBackbone]) -> type[FrameBackbone]:
    FRAME_BACKBONES[cls.name] = cls
    return cls


def get_frame_backbone(name: str) -> type[FrameBackbone]:
    try:
        return FRAME_BACKBONES[name]
    except KeyError:
        raise InputError(
            f"unknown frame backbone {name!r}", hint="known: " + ", ".join(sorted(FRAME_BACKBONES))
        ) from None


class FrameBackbone:
    """Turns aligned RGB face crops into one feature vector each.

    Like a trained face model (:class:`~mmaffect.features.face_model.FaceModel`), it says how
    faces are cut for it (``crop``, ``size``) and is called on the crops; it has no outputs of
    its own (``heads`` is empty).
    """

    name: ClassVar[str]
    dim: ClassVar[int]  # feature size
    crop_size: ClassVar[int]  # aligned crop side the backbone takes by default (112 or 224)
    model: ClassVar[str]  # model-store name of its weights
    crop = FaceCrop("template", 1.0)  # the face-recognition alignment
    heads: tuple[str, ...] = ()
    expr_names: tuple[str, ...] = ()
    au_names: tuple[str, ...] = ()

    def __init__(self, net, device, crop_size: int | None = None):
        self.net, self.device = net, device
        self.size = int(crop_size or self.crop_size)

    @classmethod
    def build(cls, weights_path, device: str = "cpu", crop_size: int | None = None):
        raise NotImplementedError

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """(n, size, size, 3) uint8 RGB → (n, dim) float32."""
        raise NotImplementedError

    def __call__(self, crops: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return self.embed(crops), {}


@register_frame_backbone
class EfficientNetLite0(FrameBackbone):
    """EfficientNet-Lite0 (ImageNet), 1280-d globally pooled head features of the 224 crop.

    Input scaled to [-1, 1] (mean = std = 0.5), the normalisation these weights were trained with.
    """

    name = "efficientnet_lite0"
    dim = 1280
    crop_size = 224
    model = "efficientnet_lite0"

    @classmethod
    def build(cls, weights_path, device: str = "cpu", crop_size: int | None = None):
        import torch

        from mmaffect.nets.efficientnet_lite import load_efficientnet_lite0

        net = load_efficientnet_lite0(weights_path, device=device)
        net = net.to(memory_format=torch.channels_last)
        return cls(net, torch.device(device), crop_size)

    def embed(self, crops: np.ndarray) -> np.ndarray:
        import torch

        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32)
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(crops)).to(self.device)
            x = x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
            x = x.contiguous(memory_format=torch.channels_last)
            return self.net.forward_features(x).float().cpu().numpy()
