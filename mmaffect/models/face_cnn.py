"""``face_cnn``: a face backbone trained end to end with the task heads, on face crops.

The image model of the toolkit: seed 002's frame branch (a CNN over the face, trained on faces)
and the expression model of the clip branch. It takes uint8 RGB crops, so the same checkpoint
serves training (``mmaffect train`` on class folders, frame folders or video crops), feature
extraction (``extract --frame-model``) and prediction (``predict --checkpoint``).

Its ``hparams`` record everything needed to use it again: the backbone and input side, the
normalisation (from the backbone), the classes, and ``crop``: how a face is cut from a video
frame for it (:mod:`mmaffect.faces.crops`), which ``extract`` and ``predict`` apply.

Augmentation runs on the batch, on the model's device, in training mode only (random
horizontal flip, a small rotation/scale/shift, brightness and contrast); at inference
:meth:`FaceCNN.embed` averages the image and its mirror image (flip averaging).

All of this lives in :class:`FaceImageModel`, the base of every image model (``face_cnn``, and
the seed models ``dan`` and ``hybrid_cnn_transformer``), which differ only in what they build
between the backbone and the heads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmaffect.errors import InputError
from mmaffect.models.common import TaskHeads, normalize_tasks
from mmaffect.models.registry import register_model
from mmaffect.nets.registry import create, spec

__all__ = [
    "DEFAULT_AUGMENT",
    "DEFAULT_CROP",
    "FaceAugment",
    "FaceCNN",
    "FaceImageModel",
    "image_models",
    "probabilities",
]

#: How faces are cut from video frames by default: the detector's box, squared, no margin
#: (tight, like the crops of FER2013, AffectNet and RAF-DB; see mmaffect.faces.crops).
DEFAULT_CROP: dict[str, Any] = {"kind": "box", "scale": 1.0}
#: Augmentation strengths (0 turns one off).
DEFAULT_AUGMENT: dict[str, float] = {
    "flip": 0.5,  # probability of a horizontal flip
    "rotate": 10.0,  # degrees, uniform in ±
    "scale": 0.1,  # relative, uniform in ±
    "shift": 0.08,  # fraction of the side, uniform in ±
    "brightness": 0.2,  # additive, in units of the normalised input
    "contrast": 0.2,  # relative, uniform in ±
}
_LUMA = (0.299, 0.587, 0.114)


class FaceAugment(nn.Module):
    """Random flip, rotation, scale, shift, brightness and contrast of a normalised batch."""

    def __init__(self, **strengths: float) -> None:
        super().__init__()
        unknown = sorted(set(strengths) - set(DEFAULT_AUGMENT))
        if unknown:
            raise InputError(
                f"unknown augmentation {', '.join(unknown)}",
                hint=f"choose among {', '.join(DEFAULT_AUGMENT)}",
            )
        self.s = {**DEFAULT_AUGMENT, **{k: float(v) for k, v in strengths.items()}}

    def forward(self, x: Tensor) -> Tensor:
        n, s = x.shape[0], self.s

        def uniform(width: float) -> Tensor:
            return (torch.rand(n, device=x.device) * 2 - 1) * width

        angle = uniform(s["rotate"]) * math.pi / 180
        scale = 1 + uniform(s["scale"])
        flip = torch.where(torch.rand(n, device=x.device) < s["flip"], -1.0, 1.0)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack(
            [
                torch.stack([cos * flip, -sin, uniform(s["shift"]) * 2], -1),
                torch.stack([sin * flip, cos, uniform(s["shift"]) * 2], -1),
            ],
            1,
        )
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        contrast = (1 + uniform(s["contrast"])).view(n, 1, 1, 1)
        brightness = uniform(s["brightness"]).view(n, 1, 1, 1)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) * contrast + mean + brightness


class FaceImageModel(nn.Module):
    """Base of the image models (``face_cnn``, ``dan``, ``hybrid_cnn_transformer``): a backbone
    from :mod:`mmaffect.nets.registry` over uint8 face crops, task heads over a pooled vector.

    It owns what every image model shares: the crops' preparation (grey if the backbone wants
    grey, resized to ``input_size``, normalised), augmentation in training mode, flip-averaged
    :meth:`embed`, ``crop`` and the common ``hparams``. A subclass builds its own layers between
    the backbone and the heads and implements :meth:`encode` and :attr:`feature_dim`.
    """

    #: registry name, for messages
    model_name = "face_cnn"

    def _setup_image(
        self,
        *,
        backbone: str,
        input_size: int | None,
        tasks: Sequence[str],
        n_expr: int,
        n_au: int,
        dropout: float,
        crop: Mapping[str, Any] | None,
        augment: Mapping[str, Any] | None,
        modalities: Sequence[str],
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """The backbone, augmentation and ``hparams`` (``extra``: the subclass's own options)."""
        if list(modalities) != ["image"]:
            raise InputError(
                f"{self.model_name} reads face images, not {', '.join(modalities)}",
                hint="train it on images (--images, frame folders or video crops)",
            )
        self.spec = spec(backbone)
        self.input_size = int(input_size or self.spec.default_size)
        self.backbone = create(backbone, self.input_size)
        self.tasks = normalize_tasks(tasks)
        self.modalities = ("image",)
        self.dropout = nn.Dropout(dropout)
        aug = dict(augment or {})
        self.augment = None if aug.pop("off", False) else FaceAugment(**aug)
        self.hparams: dict[str, Any] = {
            "backbone": backbone,
            "input_size": self.input_size,
            "tasks": list(self.tasks),
            "n_expr": n_expr,
            "n_au": n_au,
            **dict(extra or {}),
            "dropout": dropout,
            "crop": dict(crop or DEFAULT_CROP),
            "augment": dict(augment or {}),
            "modalities": ["image"],
        }

    def _setup_heads(self, dim: int, head_hidden: int, dropout: float) -> None:
        hp = self.hparams
        self.heads = TaskHeads(dim, self.tasks, hp["n_expr"], hp["n_au"], head_hidden, dropout)

    @property
    def feature_dim(self) -> int:
        """Width of :meth:`features` (what ``extract --frame-model`` stores as ``f_img``)."""
        raise NotImplementedError

    def prepare(self, images: Tensor) -> Tensor:
        """uint8 crops ``(N, H, W, 3)`` (or ``(N, 3, H, W)``) → the backbone's input: grey if it
        wants grey, resized to ``input_size`` (antialiased when shrinking), normalised."""
        x = images if images.shape[1] == 3 and images.ndim == 4 else images.permute(0, 3, 1, 2)
        x = x.float() / 255.0
        if self.spec.in_chans == 1:
            luma = torch.tensor(_LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
            x = (x * luma).sum(1, keepdim=True)
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            size = (self.input_size, self.input_size)
            shrink = x.shape[-1] > self.input_size
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)
        x = (x - self.spec.mean) / self.spec.std
        return x.contiguous(memory_format=torch.channels_last)

    def encode(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Pooled features ``(N, feature_dim)`` of prepared inputs, and the intermediate
        tensors :meth:`auxiliary_losses` needs (in training mode)."""
        raise NotImplementedError

    def features(self, x: Tensor) -> Tensor:
        """Pooled features of prepared inputs."""
        return self.encode(x)[0]

    def forward(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``expr``/``au`` logits and ``va`` (tanh) for ``batch["image"]`` uint8 crops; in
        training mode also the tensors of the model's own loss terms (keys starting with ``_``)."""
        x = self.prepare(batch["image"])
        if self.training and self.augment is not None:
            x = self.augment(x)
        feats, extras = self.encode(x)
        out = self.heads(self.dropout(feats))
        if self.training:
            out.update(extras)
        return out

    def auxiliary_losses(
        self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]
    ) -> dict[str, Tensor]:
        """The model's own loss terms beside the task losses (none here)."""
        return {}

    @torch.inference_mode()
    def embed(self, images: Tensor, flip: bool = True) -> tuple[Tensor, dict[str, Tensor]]:
        """Features ``(N, dim)`` and outputs (``expr``/``au`` probabilities, ``va``) of uint8
        crops, averaged over the image and its mirror image when ``flip``."""
        x = self.prepare(images)
        feats = self.features(x)
        logits = self.heads(feats, va_activation=False)
        if flip:
            mirrored = self.features(torch.flip(x, dims=[-1]))
            feats = (feats + mirrored) / 2
            other = self.heads(mirrored, va_activation=False)
            logits = {k: (v + other[k]) / 2 for k, v in logits.items()}
        return feats.float(), probabilities(logits)


def image_models() -> list[str]:
    """The registered image models (those reading ``batch["image"]``), sorted."""
    from mmaffect.models.registry import available_models, model_class

    return [n for n in available_models() if issubclass(model_class(n), FaceImageModel)]


def probabilities(logits: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Head outputs before their activation → ``expr`` softmax, ``au`` sigmoid, ``va`` tanh."""
    out = {}
    if "expr" in logits:
        out["expr"] = logits["expr"].float().softmax(-1)
    if "au" in logits:
        out["au"] = logits["au"].float().sigmoid()
    if "va" in logits:
        out["va"] = torch.tanh(logits["va"].float())
    return out


@register_model("face_cnn")
class FaceCNN(FaceImageModel):
    """A backbone from :mod:`mmaffect.nets.registry` and task heads over its pooled features.

    Parameters
    ----------
    backbone
        Backbone name (``efficientnet_lite0``, ``resnet18``, ``mini_xception``).
    input_size
        Side the crops are resized to (32-256; default the backbone's).
    tasks, n_expr, n_au
        Heads, as in every registry model.
    head_hidden, dropout
        Hidden width of the heads (0: one linear layer) and the dropout before them.
    crop
        How faces are cut from video frames for this model (see :data:`DEFAULT_CROP`).
    augment
        Augmentation strengths (:data:`DEFAULT_AUGMENT`); ``{"off": True}`` turns it off.
    modalities
        Always ``["image"]``: the model reads ``batch["image"]``.
    """

    model_name = "face_cnn"

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        input_size: int | None = None,
        tasks: Sequence[str] = ("expr",),
        n_expr: int = 8,
        n_au: int = 12,
        head_hidden: int = 0,
        dropout: float = 0.2,
        crop: Mapping[str, Any] | None = None,
        augment: Mapping[str, Any] | None = None,
        modalities: Sequence[str] = ("image",),
    ) -> None:
        super().__init__()
        self._setup_image(
            backbone=backbone, input_size=input_size, tasks=tasks, n_expr=n_expr, n_au=n_au,
            dropout=dropout, crop=crop, augment=augment, modalities=modalities,
            extra={"head_hidden": head_hidden},
        )  # fmt: skip
        self._setup_heads(self.spec.dim, head_hidden, dropout)

    @property
    def feature_dim(self) -> int:
        return self.spec.dim

    def encode(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return self.backbone.forward_features(x), {}
