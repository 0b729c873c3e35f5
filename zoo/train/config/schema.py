"""The run config's schema, and the model a config describes.

The dataclasses are the schema of configs/train.yaml and its groups (the YAML files hold the values): Hydra
refuses a wrong type, an unknown key or a bad choice as it composes, :func:`validate_config` merges any config
(a resumed one too) into the schema and checks the ranges (one ``check`` per class), and every refusal is one
:class:`ConfigError` line. Every registered model is a ``model=`` choice, its ``create_model`` arguments its keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import typing
from collections.abc import Iterator
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any, Optional, Union

import torch
from hydra.core.config_store import ConfigStore
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError
from torch import nn

from ..._registry import create_model, is_model, list_models, model_arguments, unknown_model_message
from ...layers import (
    DEPTH_SCHEDULES,
    DROP_PATH_KWARGS,
    DROP_PATH_MODES,
    EARLY_MODES,
    SKIP_DRAWS,
    TIME_SCHEDULES,
    check_drop_prob,
)
from ...models._base import check_global_pool
from ..data.augment import check_augment
from ..data.cifar10 import check_val_size
from ..errors import ConfigError
from ..rundir.loggers import check_installed
from ..rundir.placement import register_resolvers

# Keys that existed once, and what to do instead: the command line refuses them with this advice, and
# a resumed run drops them from the config its checkpoint saved.
REMOVED_KEYS = {
    "tensorboard": "TensorBoard is a logger now: logger=tensorboard (or a list, logger=[csv,tensorboard])",
    "retain_freed_memory": "zoo no longer changes malloc's settings; set MALLOC_MMAP_THRESHOLD_ and "
    "MALLOC_TRIM_THRESHOLD_ in the environment for the same effect",
}
AUTO_FLAGS = ("auto", True, False)
COMPILE_MODES = (False, True, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# Top-level keys that are create_model arguments (the model group holds the rest).
DROP_PATH_KEYS = (*DROP_PATH_KWARGS, "drop_path_schedule")


class Choice(str, Enum):
    """One of a few strings; it compares, prints and saves as the string itself."""

    def __str__(self) -> str:
        return self.value


def _choice(name: str, values: tuple[str, ...]) -> type[Choice]:
    return Choice(name, [(v, v) for v in values], module=__name__, qualname=name)  # type: ignore[return-value]


DepthSchedule = _choice("DepthSchedule", DEPTH_SCHEDULES)
DropPathMode = _choice("DropPathMode", DROP_PATH_MODES)
SkipDraw = _choice("SkipDraw", SKIP_DRAWS)
TimeSchedule = _choice("TimeSchedule", TIME_SCHEDULES)
EarlyMode = _choice("EarlyMode", EARLY_MODES)
Device = _choice("Device", ("auto", "cpu", "cuda"))
Dataset = _choice("Dataset", ("cifar10", "cifar10_folder"))
ClipMode = _choice("ClipMode", ("norm", "value"))
WandbMode = _choice("WandbMode", ("online", "offline", "disabled"))


def _need(ok: bool, key: str, what: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key} must be {what}, got {value!r}")


@dataclass
class DataConfig:
    name: Dataset
    root: str
    path: Optional[str]
    subset: Optional[int]
    test_subset: Optional[int]
    cache_dir: Optional[str]
    val_size: int = 0  # absent from configs saved before it existed: off
    # Any: OmegaConf 2.3 fails on a Union node inside a group; check_augment allows AUGMENTS, true, false
    augment: Any = "crop_flip"
    randaugment_n: int = 2  # the keys below are absent from configs saved before they existed: their defaults
    randaugment_m: int = 9
    random_erasing: float = 0.0

    @staticmethod
    def check(c: DictConfig) -> None:
        for key in ("subset", "test_subset", "val_size"):
            _need(c[key] is None or c[key] >= 0, f"data.{key}", "an integer >= 0", c[key])
        if c.path is not None and c.name != "cifar10_folder":
            raise ConfigError(f"data.path={c.path} is read from a folder data source only: add data=cifar10_folder")
        check_val_size(c.val_size, c.subset)
        check_augment(c.augment, c.randaugment_n, c.randaugment_m, c.random_erasing)


@dataclass
class SGDConfig:
    name: str  # a key of GROUP_SCHEMAS["optim"]
    momentum: float
    nesterov: bool

    @staticmethod
    def check(c: DictConfig) -> None:
        _need(0 <= c.momentum < 1, "optim.momentum", "in [0, 1)", c.momentum)


@dataclass
class AdamWConfig:
    name: str  # a key of GROUP_SCHEMAS["optim"]
    betas: tuple[float, float]
    eps: float

    @staticmethod
    def check(c: DictConfig) -> None:
        for i, beta in enumerate(c.betas):
            _need(0 <= beta < 1, f"optim.betas[{i}]", "in [0, 1)", beta)
        _need(c.eps > 0, "optim.eps", "> 0", c.eps)


@dataclass
class SchedConfig:
    name: str  # a key of GROUP_SCHEMAS["sched"]
    warmup_epochs: float

    @staticmethod
    def check(c: DictConfig) -> None:
        _need(c.warmup_epochs >= 0, "sched.warmup_epochs", ">= 0", c.warmup_epochs)


@dataclass
class CosineConfig(SchedConfig):
    min_lr_ratio: float

    @staticmethod
    def check(c: DictConfig) -> None:
        SchedConfig.check(c)
        _need(0 <= c.min_lr_ratio <= 1, "sched.min_lr_ratio", "in [0, 1] (a fraction of lr)", c.min_lr_ratio)


@dataclass
class StepConfig(SchedConfig):
    milestones: list[float]
    gamma: float

    @staticmethod
    def check(c: DictConfig) -> None:
        SchedConfig.check(c)
        for i, m in enumerate(c.milestones):
            _need(0 <= m <= 1, f"sched.milestones[{i}]", "in [0, 1] (a fraction of training)", m)
        _need(0 < c.gamma <= 1, "sched.gamma", "in (0, 1] (the lr's factor at each milestone)", c.gamma)


@dataclass
class CSVLoggerConfig:
    pass


@dataclass
class TensorBoardLoggerConfig:
    pass


@dataclass
class WandbLoggerConfig:
    project: str
    mode: WandbMode
    entity: Optional[str]
    name: Optional[str]


@dataclass
class MLflowLoggerConfig:
    tracking_uri: Optional[str]  # null: a SQLite store in the run dir
    experiment_name: str
    run_name: Optional[str]  # null: the run dir's name


LOGGER_SCHEMAS: dict[str, type] = {
    "csv": CSVLoggerConfig,
    "tensorboard": TensorBoardLoggerConfig,
    "wandb": WandbLoggerConfig,
    "mlflow": MLflowLoggerConfig,
}

# The optim and sched nodes take the schema of the choice their name names.
GROUP_SCHEMAS: dict[str, dict[str, type]] = {
    "optim": {"sgd": SGDConfig, "adamw": AdamWConfig},
    "sched": {"cosine": CosineConfig, "step": StepConfig},
}


@dataclass
class TrainConfig:
    model: Any  # {"name": <registered model>, <create_model argument>: value, ...}: checked by check_model
    data: DataConfig
    optim: Any  # one of GROUP_SCHEMAS["optim"], by its name
    sched: Any  # one of GROUP_SCHEMAS["sched"], by its name
    drop_path_rate: float
    drop_path_schedule: DepthSchedule
    drop_path_mode: DropPathMode
    drop_path_skip_draw: SkipDraw
    drop_path_time_schedule: TimeSchedule
    drop_path_time_cutoff: float
    drop_path_time_early_mode: EarlyMode
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    label_smoothing: float
    mixup_alpha: float
    cutmix_alpha: float
    ema: bool
    ema_decay: float
    seed: int
    device: Device
    amp: Union[bool, str]  # one of AUTO_FLAGS
    channels_last: Union[bool, str]  # one of AUTO_FLAGS
    compile: Union[bool, str]  # one of COMPILE_MODES
    deterministic: bool
    resume: Optional[str]
    log_every_s: float
    logger: Optional[dict[str, Any]] = None  # the logger= choices: name -> options (LOGGER_SCHEMAS)
    # Absent from configs saved before they existed: their defaults (off).
    clip_grad: Optional[float] = None
    clip_mode: ClipMode = ClipMode("norm")  # type: ignore[assignment]
    accum_steps: int = 1
    init_from: Optional[str] = None
    overwrite: bool = False  # absent from configs saved before it existed
    drop_path_rates: Optional[list[float]] = None  # absent from configs saved before it existed: off
    test_every: int = 1  # absent from configs saved before it existed: every epoch

    @staticmethod
    def check(c: DictConfig) -> None:
        try:
            check_drop_prob(c.drop_path_rate, "drop_path_rate")
            for i, rate in enumerate(c.drop_path_rates or ()):
                check_drop_prob(rate, f"drop_path_rates[{i}]")
        except ValueError as e:
            raise ConfigError(str(e)) from None
        _need(c.drop_path_time_cutoff >= 0, "drop_path_time_cutoff", ">= 0 epochs", c.drop_path_time_cutoff)
        for key, least in (("epochs", 1), ("batch_size", 1), ("seed", 0), ("test_every", 0)):
            _need(c[key] >= least, key, f"an integer >= {least}", c[key])
        _need(c.lr > 0, "lr", "> 0", c.lr)
        for key in ("weight_decay", "mixup_alpha", "cutmix_alpha", "log_every_s"):
            _need(c[key] >= 0, key, ">= 0", c[key])
        _need(0 <= c.label_smoothing < 1, "label_smoothing", "in [0, 1)", c.label_smoothing)
        _need(0 < c.ema_decay < 1, "ema_decay", "in (0, 1)", c.ema_decay)
        # The groups' own checks ran first (validate_config checks this node last), so the value is finite.
        _need(c.sched.warmup_epochs <= c.epochs, "sched.warmup_epochs", f"<= epochs={c.epochs}", c.sched.warmup_epochs)
        _need(c.clip_grad is None or c.clip_grad > 0, "clip_grad", "> 0 (null: no clipping)", c.clip_grad)
        _need(c.accum_steps >= 1, "accum_steps", "an integer >= 1", c.accum_steps)
        if c.batch_size % c.accum_steps:
            raise ConfigError(
                f"accum_steps={c.accum_steps} does not divide batch_size={c.batch_size}: batch_size is "
                f"the global batch of one optimizer step, split into accum_steps equal micro-batches"
            )
        for key, allowed in (("amp", AUTO_FLAGS), ("channels_last", AUTO_FLAGS), ("compile", COMPILE_MODES)):
            _need(c[key] in allowed, key, f"one of {', '.join(map(str, allowed))}", c[key])


def _check_finite(key: str, value: Any) -> None:
    """A float, or each float of a list, is finite (nan and inf pass every range comparison's negation)."""
    if isinstance(value, float):
        _need(math.isfinite(value), key, "a finite number", value)
    elif isinstance(value, ListConfig):
        for i, v in enumerate(value):
            _check_finite(f"{key}[{i}]", v)


def check_model(c: DictConfig) -> None:
    """``model.name`` is registered and every other ``model.<key>`` is one of its ``create_model`` arguments
    (but those the trainer sets: num_classes and the drop path keys, which it hands over as drop_path)."""
    if not isinstance(c.get("name"), str) or not is_model(c.name):
        raise ConfigError(f"model.name: {unknown_model_message(c.get('name'))}")
    allowed = [
        k for k in model_arguments(c.name) if k not in ("num_classes", "drop_path", "drop_path_rates", *DROP_PATH_KEYS)
    ]
    for key in c:
        if key != "name" and key not in allowed:
            raise ConfigError(
                f"unknown key 'model.{key}'{_hint(str(key), allowed, 'model.')} ({c.name}'s keys: {', '.join(allowed)})"
            )
        _check_finite(f"model.{key}", c[key])
    try:  # the head's keys every model has, checked by the library's own checks
        if "drop_rate" in c:
            check_drop_prob(c.drop_rate, "model.drop_rate")
        if "global_pool" in c:
            check_global_pool(c.global_pool)
    except ValueError as e:
        raise ConfigError(str(e).replace("global_pool", "model.global_pool", 1)) from None


def validate_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` checked against the schema (types, keys, choices, then ranges), as a plain config whose
    choices are strings. Raises :class:`ConfigError` for the first bad value."""
    schema = OmegaConf.structured(TrainConfig)
    nodes: list[tuple[str, type]] = [("data", DataConfig)]
    for group, options in GROUP_SCHEMAS.items():
        name = OmegaConf.select(cfg, f"{group}.name")
        _need(name in options, f"{group}.name", f"one of {', '.join(options)}", name)
        schema[group] = OmegaConf.structured(options[name])
        nodes.append((group, options[name]))
    for name in OmegaConf.select(cfg, "logger") or {}:
        _need(name in LOGGER_SCHEMAS, "logger", f"one of {', '.join(LOGGER_SCHEMAS)}", str(name))
        schema.logger = schema.logger or {}  # Any in TrainConfig: each choice gets its own schema here
        schema.logger[name] = OmegaConf.structured(LOGGER_SCHEMAS[name])
        nodes.append((f"logger.{name}", LOGGER_SCHEMAS[name]))
    nodes.append(("", TrainConfig))  # last: its check compares across groups (warmup_epochs against epochs)
    try:
        typed = OmegaConf.merge(
            schema, OmegaConf.to_container(cfg, enum_to_str=True)
        )  # a plain copy: no key passes unchecked
        for path, kind in nodes:
            node = OmegaConf.select(typed, path) if path else typed
            for f in fields(kind):
                _check_finite(f"{path}.{f.name}" if path else f.name, node[f.name])
            getattr(kind, "check", lambda c: None)(node)
    except (ValidationError, ConfigKeyError, ConfigAttributeError) as e:
        raise _explain(e) from None
    check_model(typed.model)
    check_installed(list(typed.logger or ()))
    plain = OmegaConf.create(OmegaConf.to_container(typed, enum_to_str=True))
    if plain.drop_path_rates is not None:
        with torch.device("meta"):  # the block count is the model's: build it, with no memory or init cost
            build_model(plain)
    return plain


def compose_config(config_dir: str | os.PathLike, overrides: list[str], hydra: bool = False) -> DictConfig:
    """configs/train.yaml composed with ``overrides`` as Hydra composes a run (Hydra's own config too with
    ``hydra=True``); a wrong type, an unknown key or a missing config file raises :class:`ConfigError`."""
    return next(compose_configs(config_dir, [overrides], hydra))


def compose_configs(config_dir: str | os.PathLike, jobs: list[list[str]], hydra: bool = False) -> Iterator[DictConfig]:
    """:func:`compose_config` for each job's overrides, Hydra initialized once."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(os.path.abspath(config_dir)), version_base="1.3"):
        for overrides in jobs:
            try:
                yield compose("train", overrides=list(overrides), return_hydra_config=hydra)
            except MissingConfigException as e:
                group, _, name = (e.missing_cfg_file or "").rpartition("/")
                if not group or e.options is None:
                    raise
                raise ConfigError(
                    f"{group}={name}: there is no {group} {name!r}{_hint(name, e.options)} "
                    f"(choices: {', '.join(e.options)})"
                ) from None
            except ConfigCompositionException as e:
                if not isinstance(e.__cause__, (ValidationError, ConfigKeyError, ConfigAttributeError)):
                    raise
                raise _explain(e.__cause__) from None


def _explain(e: ValidationError | ConfigKeyError | ConfigAttributeError) -> ConfigError:
    """OmegaConf's refusal as one line: the key, the value, and what the schema allows there."""
    key = str(e.full_key)
    head = key.partition(".")[0]
    if head in REMOVED_KEYS:
        return ConfigError(f"{head} was removed: {REMOVED_KEYS[head]}")
    if not isinstance(e, ValidationError):
        known = [str(k) for k in e.parent_node] if isinstance(e.parent_node, DictConfig) else []
        group = key.rpartition(".")[0]
        keys = f" ({group}'s keys: {', '.join(known)})" if group and known else ""
        return ConfigError(f"unknown key {key!r}{_hint(str(e.key), known, group + '.' if group else '')}{keys}")
    schema = e.object_type if dataclasses.is_dataclass(e.object_type) else None
    kind = typing.get_type_hints(schema).get(str(e.key)) if schema else None
    kind = next((t for t in typing.get_args(kind) if t is not type(None)), kind)  # Optional[int] -> int
    if isinstance(kind, type) and issubclass(kind, Enum):
        what = f"one of {', '.join(m.value for m in kind)}"
    else:
        what = {bool: "one of True, False", int: "an integer", float: "a number"}.get(kind, f"of type {kind}")
    return ConfigError(f"{key} must be {what}, got {e.value!r}")


def _hint(name: str, options: typing.Iterable[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(name, sorted(options), n=3, cutoff=0.6)
    return f"; did you mean {', '.join(prefix + c for c in close)}?" if close else ""


def model_args(cfg: DictConfig, num_classes: int = 10) -> dict[str, Any]:
    """The ``create_model`` keyword arguments of ``cfg``'s model: the model group's keys besides its
    name, and the top-level drop path keys (``drop_path_rates``, when set, instead of the rate and the
    schedule). A checkpoint stores them to rebuild the model."""
    group = OmegaConf.to_container(cfg.model, resolve=True)
    group.pop("name")
    keys = DROP_PATH_KEYS
    rates = cfg.get("drop_path_rates")
    if rates is not None:
        keys = tuple(k for k in DROP_PATH_KEYS if k not in ("drop_path_rate", "drop_path_schedule"))
        group = {"drop_path_rates": [float(r) for r in rates], **group}
    return {"num_classes": num_classes, **{k: cfg[k] for k in keys}, **group}


def build_model(cfg: DictConfig, num_classes: int = 10) -> nn.Module:
    """``zoo.create_model(cfg.model.name, **model_args(cfg))``; the model records its arguments."""
    try:
        return create_model(cfg.model.name, **model_args(cfg, num_classes))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model {cfg.model.name} cannot be built from the config: {e}") from None


def _register() -> None:
    """The schema and one ``model=`` choice per registered model into Hydra's ConfigStore, and the ``zoo.*``
    resolvers configs/train.yaml's hydra node uses (:func:`~zoo.train.rundir.placement.register_resolvers`)."""
    register_resolvers()
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    for name in list_models():  # not struct: any create_model argument may be added; check_model checks them
        store.store(group="model", name=name, node=OmegaConf.create({"name": name}, flags={"struct": False}))


_register()
