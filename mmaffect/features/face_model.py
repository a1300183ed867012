"""A trained image model used on video faces: a checkpoint of ``mmaffect train`` of an image
model (``face_cnn``, ``dan``, ``hybrid_cnn_transformer``) or an ``mmaffect ensemble`` of them.

It serves as the frame branch (``extract --frame-model CKPT``: its features are ``f_img``), as
the clip branch's expression model (``extract --expression-model CKPT``) and as a predictor
(``predict --checkpoint CKPT``). Faces are cut with the crop the model was trained with and
resized to its input side; the outputs average each face and its mirror image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mmaffect.errors import InputError

__all__ = ["FaceModel", "is_face_model_checkpoint"]


def _read(path: Path, device: str = "cpu") -> dict[str, Any]:
    import torch

    try:
        return torch.load(path, map_location=device, weights_only=False)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise InputError(f"{path}: not a checkpoint written by mmaffect train ({e})") from None


def _is_face_model(ckpt: dict[str, Any]) -> bool:
    hp = ckpt.get("hyper_parameters") or {}
    return list(hp.get("modalities") or []) == ["image"]


def is_face_model_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a checkpoint of an image model: one that reads face crops
    (``modalities == ["image"]``: ``face_cnn``, ``dan``, ``hybrid_cnn_transformer``, an ensemble
    of them)."""
    return _is_face_model(_read(Path(path)))


def _build_net(ckpt: dict[str, Any], device: str) -> Any:
    """The checkpoint's network (eval mode, on ``device``), built as ``AffectModule`` builds
    it but without importing Lightning (seconds saved per run)."""
    from mmaffect.models import create_model

    hp = ckpt["hyper_parameters"]
    net = create_model(hp["model_name"], **hp["model_hparams"])
    state = {k[len("model.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    net.load_state_dict(state)
    return net.to(device).eval()


class FaceModel:
    """An image model checkpoint, ready to run on uint8 face crops.

    Attributes
    ----------
    crop, size
        How faces are cut for it (:class:`~mmaffect.faces.crops.FaceCrop`) and the crop side.
    dim
        Width of its features.
    heads, expr_names, au_names
        Its outputs and the class / AU names of their columns.
    """

    def __init__(self, checkpoint: str | Path, device: str = "cpu") -> None:
        import torch

        from mmaffect.faces.crops import FaceCrop

        self.checkpoint = Path(checkpoint)
        self.name = f"face model {self.checkpoint.name}"
        if not self.checkpoint.is_file():
            raise InputError(f"{self.checkpoint}: no such checkpoint file")
        ckpt = _read(self.checkpoint, device)
        if not _is_face_model(ckpt):
            raise InputError(
                f"{self.checkpoint} is not a face model checkpoint (an image model, modalities "
                "image)",
                hint="train one with mmaffect train --model face_cnn|dan|hybrid_cnn_transformer "
                "--modalities image (docs/training.md)",
            )
        self.net, hp = _build_net(ckpt, device), dict(ckpt["hyper_parameters"])
        self.device = torch.device(device)
        self.crop = FaceCrop.from_dict(self.net.hparams.get("crop"))
        self.size = int(self.net.input_size)
        self.dim = int(self.net.feature_dim)
        self.model_name = str(hp["model_name"])
        self.heads = tuple(self.net.tasks)
        names = hp.get("label_names") or {}
        self.expr_names = tuple(names.get("expr", ())) if "expr" in self.heads else ()
        self.au_names = tuple(names.get("au", ())) if "au" in self.heads else ()

    def __call__(self, crops: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``(n, size, size, 3)`` uint8 crops → features ``(n, dim)`` and outputs (``expr``
        and ``au`` probabilities, ``va``), flip-averaged, float32."""
        import torch

        if len(crops) == 0:
            outputs = {"expr": len(self.expr_names), "au": len(self.au_names), "va": 2}
            return np.zeros((0, self.dim), np.float32), {
                h: np.zeros((0, outputs[h]), np.float32) for h in self.heads
            }
        x = torch.from_numpy(np.ascontiguousarray(crops)).to(self.device)
        feats, out = self.net.embed(x, flip=True)
        return feats.cpu().numpy(), {k: v.cpu().numpy() for k, v in out.items()}
