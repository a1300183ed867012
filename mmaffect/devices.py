"""The ``--device`` option: one spelling for every command, checked before any work starts."""

from __future__ import annotations

import re

from mmaffect.errors import InputError

__all__ = ["DEVICE_CHOICES", "resolve_device"]

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def resolve_device(name: str) -> str:
    """``"cpu"``, ``"cuda"`` or ``"cuda:N"`` for a ``--device`` value.

    ``auto`` picks CUDA when torch sees a CUDA device, else the CPU.

    Raises
    ------
    InputError
        An unknown name, or a CUDA device this machine does not have.
    """
    text = str(name).strip().lower()
    if text == "cpu":
        return "cpu"
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if text != "auto" and match is None:
        raise InputError(f"unknown device {name!r}", hint=f"choose {DEVICE_CHOICES}")
    import torch

    available = torch.cuda.is_available()
    if text == "auto":
        return "cuda" if available else "cpu"
    if not available:
        raise InputError(
            f"device {name!r} asked for, but torch {torch.__version__} sees no CUDA device",
            hint="use --device cpu (or auto), or install a CUDA build of torch",
        )
    index = match.group(1)
    if index is not None and int(index) >= torch.cuda.device_count():
        raise InputError(
            f"device {name!r} asked for, but there are {torch.cuda.device_count()} CUDA devices",
            hint=f"cuda:0 … cuda:{torch.cuda.device_count() - 1}",
        )
    return text
