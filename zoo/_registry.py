"""The model registry: one dict from name to builder."""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import os
import typing
from typing import Callable, TypeVar

from torch import nn

from ._weights import load_weights, read_checkpoint

_models: dict[str, Callable[..., nn.Module]] = {}

F = TypeVar("F", bound=Callable[..., nn.Module])


def register_model(fn: F | None = None, *, name: str | None = None) -> F | Callable[[F], F]:
    """Register a model builder under ``name`` (default: the function's name). A duplicate raises.

    Use as ``@register_model`` or ``@register_model(name="alias")``.
    """

    def add(f: F) -> F:
        key = name or f.__name__
        if key in _models:
            raise ValueError(f"a model named {key!r} is already registered")
        _models[key] = f
        return f

    return add(fn) if fn is not None else add


def is_model(name: str) -> bool:
    return name in _models


def list_models(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """Registered model names matching an fnmatch ``pattern`` (``"*former*"``), sorted.

    ``pretrained=True`` lists those with downloadable weights, as in timm: none, zoo ships no weights.
    """
    if pretrained:
        return []
    return sorted(n for n in _models if fnmatch.fnmatchcase(n, pattern))


def model_arguments(name: str) -> list[str]:
    """The keyword arguments ``create_model(name, ...)`` accepts: those of the class its builder returns."""
    cls = typing.get_type_hints(_models[name]).get("return")
    params = inspect.signature(cls).parameters.values() if isinstance(cls, type) else ()
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def unknown_model_message(name: str) -> str:
    close = difflib.get_close_matches(str(name), list(_models), n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"unknown model {name!r}{hint} (zoo.list_models() lists all {len(_models)})"


def no_pretrained_message(name: str) -> str:
    return (
        f"zoo ships no pretrained weights (asked for {name!r} with pretrained=True): train one "
        f"(python train.py model={name}) and load it with zoo.create_model({name!r}, "
        "checkpoint_path=<run dir, last.pt or state-dict file>) or zoo.load_run(<run dir>)"
    )


def create_model(
    name: str, pretrained: bool = False, *, checkpoint_path: str | os.PathLike | None = None, **kwargs
) -> nn.Module:
    """Build the registered model ``name`` with ``kwargs`` (num_classes, drop_path_rate, ...).

    The model records its name and ``kwargs`` (``model.model_name``, ``model.model_args``): what a
    checkpoint stores to rebuild it.

    Args:
        name: a registered name (:func:`list_models`).
        pretrained: accepted as in timm; True raises, since zoo ships no weights.
        checkpoint_path: a run dir (its last.pt), a training checkpoint or a plain state-dict file whose
            weights are loaded. A training checkpoint of model ``name`` also gives the arguments it was
            built with; ``kwargs`` override them. Weights that do not fit raise :class:`zoo.LoadError`
            naming both models and the keys.
    """
    if name not in _models:
        raise ValueError(unknown_model_message(name))
    if pretrained:
        raise ValueError(no_pretrained_message(name))
    ckpt = read_checkpoint(checkpoint_path) if checkpoint_path not in (None, "") else None  # timm's default is ""
    if ckpt is not None and ckpt.model_name == name and ckpt.model_args is not None:
        kwargs = {**ckpt.model_args, **kwargs}
    model = _models[name](**kwargs)
    model.model_name = name  # names the target in a load error
    model.model_args = dict(kwargs)
    if ckpt is not None:
        # A feature extractor takes a classifier's checkpoint: the keys of the parts it pruned (the head,
        # later stages) are ignored, as timm ignores them.
        pruned = getattr(model, "pruned_keys", frozenset())
        load_weights(
            model, {k: v for k, v in ckpt.state_dict.items() if k not in pruned}, str(ckpt.path), ckpt.model_name
        )
    return model
