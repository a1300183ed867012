"""The per-frame expression embedding of the clip branch: FER2013 mini-Xception.

Input: a face crop (by default the detector's box made square, the framing of FER2013's faces;
``ClipConfig.expression_crop``), converted to grey (ITU-R 601 luma) at 64x64, scaled to
[-1, 1], as the model was trained. Output per face: the 128-d penultimate features (last
residual module, globally average-pooled) and the 7 class probabilities in FER2013 order:
angry, disgust, fear, happy, sad, surprise, neutral; with ``flip`` (default) each is the mean
over the face and its mirror image.

A trained face model (:class:`~mmaffect.features.face_model.FaceModel`) can take this place
(``extract --expression-model CKPT``); both are called the same way.
"""

from __future__ import annotations

import numpy as np

from mmaffect.faces.crops import FaceCrop

FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FEATURE_DIM = 128


class ExpressionNet:
    """mini-Xception on face crops (see the module docstring)."""

    name = "mini-Xception"
    size = 64  # the crop side it reads
    dim = FEATURE_DIM
    heads = ("expr",)
    expr_names = FER_CLASSES
    au_names: tuple[str, ...] = ()

    def __init__(self, weights_path, device: str = "cpu", crop: FaceCrop | None = None, flip=True):
        import torch

        from mmaffect.nets.mini_xception import load_mini_xception

        self.device = torch.device(device)
        self.net = load_mini_xception(weights_path, device=self.device)
        self.crop = crop or FaceCrop("box", 1.0)
        self.flip = bool(flip)

    def __call__(self, crops: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(n, S, S, 3) uint8 RGB crops → features (n, 128), {"expr": probabilities (n, 7)}."""
        import torch
        import torch.nn.functional as F

        if len(crops) == 0:
            return np.zeros((0, FEATURE_DIM), np.float32), {"expr": np.zeros((0, 7), np.float32)}
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(crops)).to(self.device).float()
            luma = torch.tensor([0.299, 0.587, 0.114], device=self.device)
            grey = (x @ luma)[:, None]  # (n, 1, S, S)
            if grey.shape[-1] != self.size:
                grey = F.interpolate(grey, size=(64, 64), mode="bilinear", align_corners=False)
            grey = grey / 127.5 - 1.0
            logits, feats = self.net.forward_with_features(grey)
            if self.flip:
                logits_m, feats_m = self.net.forward_with_features(torch.flip(grey, dims=[-1]))
                logits, feats = (logits + logits_m) / 2, (feats + feats_m) / 2
            probs = logits.softmax(-1)
        return feats.float().cpu().numpy(), {"expr": probs.float().cpu().numpy()}
