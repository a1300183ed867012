"""Name → model class registry: :func:`register_model`, :func:`create_model`,
:func:`available_models`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from mmaffect.errors import InputError

__all__ = ["available_models", "create_model", "model_class", "register_model"]

_MODELS: dict[str, type[nn.Module]] = {}

M = TypeVar("M", bound=type[nn.Module])


def register_model(name: str) -> Callable[[M], M]:
    """Class decorator registering a model under ``name``.

    Parameters
    ----------
    name
        The name :func:`create_model` accepts; must not be taken already.

    Returns
    -------
    Callable
        The decorator (it returns the class unchanged).
    """

    def decorator(cls: M) -> M:
        if name in _MODELS and _MODELS[name] is not cls:
            raise ValueError(f"model name {name!r} is already registered by {_MODELS[name]!r}")
        _MODELS[name] = cls
        return cls

    return decorator


def available_models() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_MODELS)


def model_class(name: str) -> type[nn.Module]:
    """The class registered as ``name``; an unknown name is an :class:`InputError` listing the
    valid ones."""
    cls = _MODELS.get(name)
    if cls is None:
        raise InputError(
            f"unknown model {name!r}", hint=f"valid names: {', '.join(available_models())}"
        )
    return cls


def create_model(name: str, **hparams: Any) -> nn.Module:
    """Build the model registered as ``name``.

    Parameters
    ----------
    name
        A name from :func:`available_models`.
    **hparams
        Keyword arguments of that model's constructor; ``create_model(name, **model.hparams)``
        rebuilds an identical architecture.

    Returns
    -------
    nn.Module
        The freshly initialised model.

    Raises
    ------
    InputError
        ``name`` is not registered (the message lists the valid names).
    """
    return model_class(name)(**hparams)
