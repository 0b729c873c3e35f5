"""The timm bridge: every zoo model as ``timm.create_model("zoo_<name>", ...)``.

timm is imported by :func:`register_timm` only: ``import zoo`` needs torch alone.
"""

from __future__ import annotations

import typing
from typing import Any, Callable

from torch import nn

from ._registry import _models, create_model, list_models
from .models._cfg import pretrained_cfg

PREFIX = "zoo_"

# timm's register_model reads the registering module's ``default_cfgs``: with these,
# ``timm.models.get_pretrained_cfg("zoo_resnet20")`` describes the input before a model is built.
default_cfgs: dict[str, dict[str, Any]] = {}


def register_timm() -> list[str]:
    """Register every zoo model in timm's registry as ``zoo_<name>``; returns those names, sorted.

    Then ``timm.create_model("zoo_resnet20", drop_path_rate=0.1, num_classes=100)`` builds
    ``zoo.create_model("resnet20", drop_path_rate=0.1, num_classes=100)`` (zoo's depth schedule and
    every other ``create_model`` argument included), so timm's train.py, benchmark script and
    ``timm.data`` take zoo's models by name. Calling it again registers nothing twice.
    """
    from timm.models import is_model, register_model  # timm is optional: only this function needs it

    names = []
    for name in list_models():
        timm_name = PREFIX + name
        if not is_model(timm_name):
            first_conv = getattr(typing.get_type_hints(_models[name]).get("return"), "first_conv", "stem")
            default_cfgs[timm_name] = dict(pretrained_cfg(first_conv), architecture=timm_name)
            register_model(_entrypoint(name, timm_name))
        names.append(timm_name)
    return names


def _entrypoint(name: str, timm_name: str) -> Callable[..., nn.Module]:
    def build(
        pretrained: bool = False,
        pretrained_cfg: Any = None,
        pretrained_cfg_overlay: dict[str, Any] | None = None,
        cache_dir: Any = None,  # timm's download dir: zoo downloads nothing
        **kwargs: Any,
    ) -> nn.Module:
        if isinstance(pretrained_cfg, str):  # a tag, as in "zoo_resnet20.<tag>"
            raise ValueError(f"zoo models have no pretrained tags, got {timm_name}.{pretrained_cfg}")
        model = create_model(name, pretrained=pretrained, **kwargs)
        model.pretrained_cfg = {**model.pretrained_cfg, "architecture": timm_name, **(pretrained_cfg_overlay or {})}
        return model

    build.__name__ = build.__qualname__ = timm_name
    build.__module__ = __name__  # timm files the entry point under its module ("_timm")
    build.__doc__ = f"zoo's {name} (zoo.create_model({name!r}, **kwargs)) through timm."
    return build


def run_script(argv: list[str]) -> None:
    """``python -m zoo._timm <timm script> [its arguments]``: run a timm script (train.py, validate.py,
    benchmark.py from timm's repository) as ``python <script> ...`` would, with zoo's models registered,
    e.g. ``python -m zoo._timm train.py --model zoo_resnet20 --drop-path 0.1 ...``."""
    import runpy
    import sys

    import zoo

    if not argv:
        raise SystemExit("usage: python -m zoo._timm <timm script.py> [its arguments]")
    zoo.register_timm()
    sys.argv = list(argv)
    runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    import sys

    run_script(sys.argv[1:])
