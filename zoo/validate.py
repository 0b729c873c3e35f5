"""Check a training config before anything runs: one ConfigError that names the key, the value and what is allowed."""

from __future__ import annotations

import math
from numbers import Real

from omegaconf import DictConfig

from ._registry import is_model, unknown_model_message
from .errors import ConfigError
from .layers import DEPTH_SCHEDULES, DROP_PATH_MODES
from .time_schedules import EARLY_MODES, TIME_SCHEDULES

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step")
DEVICES = ("auto", "cpu", "cuda")
DATASETS = ("cifar10", "cifar10_folder")
AUTO_FLAGS = ("auto", True, False)


def _number(cfg: DictConfig, key: str) -> float:
    value = _select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if not math.isfinite(float(value)):
        raise ConfigError(f"{key} must be a finite number, got {value!r}")
    return float(value)


def _select(cfg: DictConfig, key: str):
    node = cfg
    for part in key.split("."):
        node = node.get(part) if node is not None else None
    return node


def _integer(cfg: DictConfig, key: str, minimum: int) -> int:
    value = _select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _choice(cfg: DictConfig, key: str, allowed: tuple) -> None:
    value = _select(cfg, key)
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(map(str, allowed))}, got {value!r}")


def validate_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first bad value in a composed ``train.yaml`` config."""
    rate = _number(cfg, "drop_path_rate")
    if not 0.0 <= rate <= 1.0:
        raise ConfigError(f"drop_path_rate must be in [0, 1], got {rate}")
    _choice(cfg, "drop_path_schedule", DEPTH_SCHEDULES)
    _choice(cfg, "drop_path_mode", DROP_PATH_MODES)
    _choice(cfg, "drop_path_time_schedule", TIME_SCHEDULES)
    _choice(cfg, "drop_path_time_early_mode", EARLY_MODES)
    if _number(cfg, "drop_path_time_cutoff") < 0:
        raise ConfigError(f"drop_path_time_cutoff must be >= 0 epochs, got {cfg.drop_path_time_cutoff}")
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
    _choice(cfg, "device", DEVICES)
    for key in ("amp", "channels_last"):
        _choice(cfg, key, AUTO_FLAGS)
    _choice(cfg, "compile", (True, False))
    _choice(cfg, "retain_freed_memory", (True, False))
    _choice(cfg, "optim.name", OPTIMIZERS)
    _choice(cfg, "sched.name", SCHEDULES)
    if _number(cfg, "sched.warmup_epochs") < 0:
        raise ConfigError(f"sched.warmup_epochs must be >= 0, got {cfg.sched.warmup_epochs}")
    _choice(cfg, "data.name", DATASETS)
    for key in ("data.subset", "data.test_subset"):
        if _select(cfg, key) is not None:
            _integer(cfg, key, 0)
