"""The model store: named pretrained components, found on disk, checked by sha256."""

from mmaffect.store.lookup import cache_dir, download, locate, resolve, verify
from mmaffect.store.registry import MODELS, ModelSpec, available_models, get_spec

__all__ = [
    "MODELS",
    "ModelSpec",
    "available_models",
    "cache_dir",
    "download",
    "get_spec",
    "locate",
    "resolve",
    "verify",
]
