"""The model registry: one dict from name to builder."""

from __future__ import annotations

import difflib
import fnmatch
from typing import Callable, TypeVar

from torch import nn

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


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching an fnmatch ``pattern`` (``"*former*"``), sorted."""
    return sorted(n for n in _models if fnmatch.fnmatchcase(n, pattern))


def unknown_model_message(name: str) -> str:
    close = difflib.get_close_matches(str(name), list(_models), n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"unknown model {name!r}{hint} (zoo.list_models() lists all {len(_models)})"


def create_model(name: str, **kwargs) -> nn.Module:
    """Build the registered model ``name`` with ``kwargs`` (num_classes, drop_path_rate, ...)."""
    if name not in _models:
        raise ValueError(unknown_model_message(name))
    return _models[name](**kwargs)
