"""Pretrained networks ported to plain PyTorch.

* :mod:`mmaffect.nets.efficientnet_lite`: EfficientNet-Lite0, ImageNet-1k, 1280-d features.
* :mod:`mmaffect.nets.mini_xception`: FER2013 mini-Xception, 7 expressions, 128-d features.

Importing this package is cheap: the submodules (and torch) load on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "EfficientNetLite": "efficientnet_lite",
    "load_efficientnet_lite0": "efficientnet_lite",
    "preprocess_rgb": "efficientnet_lite",
    "FER2013_CLASSES": "mini_xception",
    "MiniXception": "mini_xception",
    "load_mini_xception": "mini_xception",
    "preprocess_faces": "mini_xception",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
