"""The training config: checked before anything runs (one ConfigError that names the key, the value and
what is allowed), and the model it describes."""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Real
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from .._registry import create_model, is_model, unknown_model_message
from ..layers import (
    check_depth_schedule,
    check_drop_path_mode,
    check_drop_prob,
    check_skip_draw,
    check_time_schedule,
)
from .errors import ConfigError

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step")
DEVICES = ("auto", "cpu", "cuda")
DATASETS = ("cifar10", "cifar10_folder")
AUTO_FLAGS = ("auto", True, False)
# Keys that existed once, and what to do instead: the command line refuses them with this advice, and
# a resumed run drops them from the config its checkpoint saved.
REMOVED_KEYS = {
    "retain_freed_memory": "zoo no longer changes malloc's settings; set MALLOC_MMAP_THRESHOLD_ and "
    "MALLOC_TRIM_THRESHOLD_ in the environment for the same effect",
}
COMPILE_MODES = (False, True, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# Top-level keys that are create_model arguments (the model group holds the rest).
DROP_PATH_KEYS = ("drop_path_rate", "drop_path_schedule", "drop_path_mode", "drop_path_skip_draw")


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"model": {"name": "x"}}`` -> ``{"model.name": "x"}`` (plain dicts, as OmegaConf.to_container gives)."""
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: node} if prefix else {}


def _select(cfg: DictConfig, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node.get(part) if node is not None else None
    return node


def _number(cfg: DictConfig, key: str) -> float:
    value = _select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if not math.isfinite(float(value)):
        raise ConfigError(f"{key} must be a finite number, got {value!r}")
    return float(value)


def _integer(cfg: DictConfig, key: str, minimum: int) -> int:
    value = _select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _choice(cfg: DictConfig, key: str, allowed: tuple) -> None:
    value = _select(cfg, key)
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(map(str, allowed))}, got {value!r}")


def _library(check: Callable[..., object], *args: object) -> None:
    """Run one of the library's own checks (their messages name the Hydra key: one name all the way down)."""
    try:
        check(*args)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _check_drop_path(cfg: DictConfig) -> None:
    _library(check_drop_prob, cfg.drop_path_rate, "drop_path_rate")
    _library(check_depth_schedule, cfg.drop_path_schedule)
    _library(check_drop_path_mode, cfg.drop_path_mode)
    _library(check_skip_draw, cfg.drop_path_skip_draw)
    _library(check_time_schedule, cfg.drop_path_time_schedule, cfg.drop_path_time_early_mode)
    if _number(cfg, "drop_path_time_cutoff") < 0:
        raise ConfigError(f"drop_path_time_cutoff must be >= 0 epochs, got {cfg.drop_path_time_cutoff}")


def validate_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first bad value in a composed ``train.yaml`` config."""
    _check_drop_path(cfg)
    name = _select(cfg, "model.name")
    if not isinstance(name, str) or not is_model(name):
        raise ConfigError(f"model.name: {unknown_model_message(name)}")
    _integer(cfg, "epochs", 1)
    _integer(cfg, "batch_size", 1)
    if _number(cfg, "lr") <= 0:
        raise ConfigError(f"lr must be > 0, got {cfg.lr}")
    if _number(cfg, "weight_decay") < 0:
        raise ConfigError(f"weight_decay must be >= 0, got {cfg.weight_decay}")
    smoothing = _number(cfg, "label_smoothing")
    if not 0.0 <= smoothing < 1.0:
        raise ConfigError(f"label_smoothing must be in [0, 1), got {smoothing}")
    _integer(cfg, "seed", 0)
    for key in ("mixup_alpha", "cutmix_alpha", "log_every_s"):
        if _number(cfg, key) < 0:
            raise ConfigError(f"{key} must be >= 0, got {_select(cfg, key)}")
    decay = _number(cfg, "ema_decay")
    if not 0.0 < decay < 1.0:
        raise ConfigError(f"ema_decay must be in (0, 1), got {decay}")
    for key in ("ema", "tensorboard", "deterministic"):
        _choice(cfg, key, (True, False))
    if "augment" in cfg.data:  # a config composed without the data group's file may lack it: then on
        _choice(cfg, "data.augment", (True, False))
    _choice(cfg, "device", DEVICES)
    for key in ("amp", "channels_last"):
        _choice(cfg, key, AUTO_FLAGS)
    _choice(cfg, "compile", COMPILE_MODES)
    _choice(cfg, "optim.name", OPTIMIZERS)
    _choice(cfg, "sched.name", SCHEDULES)
    if _number(cfg, "sched.warmup_epochs") < 0:
        raise ConfigError(f"sched.warmup_epochs must be >= 0, got {cfg.sched.warmup_epochs}")
    _choice(cfg, "data.name", DATASETS)
    for key in ("data.subset", "data.test_subset"):
        if _select(cfg, key) is not None:
            _integer(cfg, key, 0)


def model_args(cfg: DictConfig, num_classes: int = 10) -> dict[str, Any]:
    """The ``create_model`` keyword arguments of ``cfg``'s model: the model group's keys besides its
    name, and the top-level drop path keys. A checkpoint stores them to rebuild the model."""
    group = OmegaConf.to_container(cfg.model, resolve=True)
    group.pop("name")
    return {"num_classes": num_classes, **{k: cfg[k] for k in DROP_PATH_KEYS}, **group}


def build_model(cfg: DictConfig, num_classes: int = 10) -> nn.Module:
    """``zoo.create_model(cfg.model.name, **model_args(cfg))``; the model records its arguments."""
    try:
        return create_model(cfg.model.name, **model_args(cfg, num_classes))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model {cfg.model.name} cannot be built from the config: {e}") from None
