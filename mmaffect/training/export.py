"""A trained checkpoint made small enough to share or ship: the weights and the settings that
rebuild the model, without the optimiser and scheduler state, in float16 on request.

``mmaffect models export CKPT OUT [--half]`` calls :func:`export_checkpoint`. The result loads
wherever the original does (``extract --frame-model``, ``predict --checkpoint``); a model is
rebuilt in float32 and the float16 weights are widened into it.
"""

from __future__ import annotations

from pathlib import Path

from mmaffect.errors import InputError

__all__ = ["export_checkpoint"]

#: What a checkpoint keeps: the settings that rebuild the model and its weights.
KEPT = ("hyper_parameters", "state_dict", "pytorch-lightning_version", "epoch", "global_step")


def export_checkpoint(checkpoint: str | Path, out: str | Path, *, half: bool = False) -> Path:
    """Write ``checkpoint`` without its training state to ``out`` (atomically).

    Parameters
    ----------
    checkpoint
        A ``.ckpt`` of ``mmaffect train``.
    out
        The file to write.
    half
        Store floating-point weights as float16 (half the size; a trained face model's outputs
        change in the 4th decimal).

    Returns
    -------
    Path
        ``out``.
    """
    import torch

    from mmaffect.atomic import atomic_path

    try:
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
        hp, state = ckpt["hyper_parameters"], ckpt["state_dict"]
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise InputError(
            f"{checkpoint}: not a checkpoint written by mmaffect train ({e})"
        ) from None
    if "model_name" not in hp:
        raise InputError(f"{checkpoint}: not a checkpoint written by mmaffect train")
    small = {k: ckpt[k] for k in KEPT if k in ckpt}
    if half:
        small["state_dict"] = {
            k: v.half() if v.is_floating_point() else v for k, v in state.items()
        }
    with atomic_path(out) as tmp:
        torch.save(small, tmp)
    return Path(out)
