"""The per-frame expression embedding of the clip branch: FER2013 mini-Xception.

Input: the 112x112 aligned face crop, converted to grey (ITU-R 601 luma) and resized to 64x64
(bilinear), scaled to [-1, 1], as the model was trained. Output per face: the 128-d penultimate
features (last residual module, globally average-pooled) and the 7 class probabilities in
FER2013 order: angry, disgust, fear, happy, sad, surprise, neutral.
"""

from __future__ import annotations

import numpy as np

FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FEATURE_DIM = 128


class ExpressionNet:
    def __init__(self, weights_path, device: str = "cpu"):
        import torch

        from mmaffect.nets.mini_xception import load_mini_xception

        self.device = torch.device(device)
        self.net = load_mini_xception(weights_path, device=self.device)

    def __call__(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, S, S, 3) uint8 RGB aligned crops → features (n, 128), probabilities (n, 7)."""
        import torch
        import torch.nn.functional as F

        if len(crops) == 0:
            return np.zeros((0, FEATURE_DIM), np.float32), np.zeros((0, 7), np.float32)
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(crops)).to(self.device).float()
            luma = torch.tensor([0.299, 0.587, 0.114], device=self.device)
            grey = (x @ luma)[:, None]  # (n, 1, S, S)
            grey = F.interpolate(grey, size=(64, 64), mode="bilinear", align_corners=False)
            logits, feats = self.net.forward_with_features(grey / 127.5 - 1.0)
            probs = logits.softmax(-1)
        return feats.float().cpu().numpy(), probs.float().cpu().numpy()
