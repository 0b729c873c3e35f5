"""Weights back into a model: a run dir, a training checkpoint or a plain state dict, read with
``weights_only=True`` and loaded with one error that names both models and the keys that differ.

The trainer (``zoo.train.rundir.checkpoint``) reuses :func:`load_weights`, so ``create_model(checkpoint_path=...)``,
:func:`zoo.load_run` and a resumed run word a mismatch the same way.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .layers import DROP_PATH_KWARGS

CHECKPOINT_NAME = "last.pt"  # what a run dir holds
BEST_NAME = "best.pt"  # the weights of the best validation epoch, in a run trained with data.val_size
WHICH = {"last": CHECKPOINT_NAME, "best": BEST_NAME}  # load_run(which=...): the file read from a run dir
SHOW_KEYS = 3  # keys named per kind of mismatch; the rest are counted


class LoadError(ValueError):
    """A checkpoint cannot be read, or its weights do not fit the model; the message names the file,
    both models and the first keys that differ."""


@dataclass
class Checkpoint:
    """What a checkpoint file holds: the weights, and what a training checkpoint adds."""

    path: Path
    state_dict: dict[str, Tensor]
    model_name: str | None = None  # None: a plain state dict, which does not record its model
    model_args: dict[str, Any] | None = None  # the create_model keyword arguments that rebuild it
    config: dict[str, Any] | None = None  # the resolved training config (training checkpoints only)
    ema: dict[str, Tensor] | None = None  # the weights' moving average, from a run trained with ema=true


def checkpoint_file(path: str | os.PathLike, name: str = CHECKPOINT_NAME) -> Path:
    """The file ``path`` names: the file itself, or the run dir's ``name`` (``last.pt``)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise LoadError(f"{str(path)!r}: no such run dir or checkpoint file")
    if p.is_dir():
        if not (p / name).is_file():
            why = (
                "the run kept no best epoch: it trained without data.val_size"
                if name == BEST_NAME
                else "did the run save one?"
            )
            raise LoadError(f"{str(path)!r}: the run dir holds no {name} ({why})")
        p = p / name
    return p.resolve()


def one_line(e: BaseException, limit: int = 200) -> str:
    """An error in one line: its type and its first sentence (torch.load's run on with advice)."""
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {re.split(r'(?<=[.!?]) ', text, maxsplit=1)[0][:limit]}"


def load_file(file: Path) -> Any:
    """``torch.load(file)`` onto the CPU, tensors and plain values only (``weights_only``); a file that
    does not load is a :class:`LoadError` that says so in one line."""
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:
        raise LoadError(
            f"{file} is not a readable checkpoint (corrupt, truncated, or not a torch.save file): {one_line(e)}"
        ) from None


def read_checkpoint(path: str | os.PathLike, name: str = CHECKPOINT_NAME) -> Checkpoint:
    """Read a run dir (its file ``name``), a training checkpoint (``{"model": state_dict, "model_name": ...,
    "model_args": ..., "config": ...}``) or a plain state dict (``{"stem.0.weight": tensor, ...}``) onto the CPU."""
    file = checkpoint_file(path, name)
    obj = load_file(file)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        config = obj.get("config") if isinstance(obj.get("config"), dict) else None
        model_args = obj.get("model_args") if isinstance(obj.get("model_args"), dict) else _legacy_model_args(config)
        # The trainer saves torch.optim.swa_utils.AveragedModel's state: the model's keys behind "module.".
        ema = (
            {k.removeprefix("module."): v for k, v in obj["ema"].items() if k.startswith("module.")}
            if isinstance(obj.get("ema"), dict)
            else None
        )
        return Checkpoint(file, obj["model"], obj.get("model_name"), model_args, config, ema)
    if isinstance(obj, dict) and obj and all(isinstance(v, Tensor) for v in obj.values()):
        return Checkpoint(file, obj)
    kind = f"a dict with keys {', '.join(map(str, list(obj)[:5]))}" if isinstance(obj, dict) else type(obj).__name__
    raise LoadError(
        f"{file} holds {kind}: neither a zoo training checkpoint (with 'model') nor a state dict of tensors"
    )


def _legacy_model_args(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """The ``create_model`` arguments of a checkpoint written before checkpoints stored them, read from
    the training config it saved as it was laid out then (frozen here: later layouts store
    ``model_args``): the model group's keys besides its name, the top-level drop path keys (named as
    ``create_model`` takes them: :data:`zoo.layers.DROP_PATH_KWARGS` and ``drop_path_schedule``, public
    keywords that keep their names), and CIFAR-10's 10 classes, the trainer's only dataset then."""
    if config is None or not isinstance(config.get("model"), dict) or "name" not in config["model"]:
        return None
    drop_path = (*DROP_PATH_KWARGS, "drop_path_schedule")
    group = {k: v for k, v in config["model"].items() if k != "name"}
    return {"num_classes": 10, **{k: config[k] for k in drop_path if k in config}, **group}


def state_dict_mismatch(model: nn.Module, state_dict: Mapping[str, Tensor]) -> tuple[list[str], list[str], list[str]]:
    """(missing keys, unexpected keys, shape mismatches as ``"key <checkpoint's> vs <model's>"``), in order."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k} {_shape(v)} vs {_shape(own[k])}"
        for k, v in state_dict.items()
        if k in own and isinstance(v, Tensor) and v.shape != own[k].shape
    ]
    return missing, unexpected, shapes


def _shape(t: Tensor) -> str:
    return "x".join(map(str, t.shape)) or "scalar"


def _some(one: str, many: str, items: Sequence[str]) -> str:
    more = f", ... {len(items) - SHOW_KEYS} more" if len(items) > SHOW_KEYS else ""
    return f"{len(items)} {one if len(items) == 1 else many} ({', '.join(items[:SHOW_KEYS])}{more})"


def model_label(model: nn.Module) -> str:
    """The name ``create_model`` built ``model`` under, else its class name."""
    return getattr(model, "model_name", None) or type(model).__name__


def mismatch_message(
    source: str,
    checkpoint_model: str | None,
    target_model: str,
    missing: Sequence[str],
    unexpected: Sequence[str],
    shapes: Sequence[str],
) -> str:
    """One line: ``<file> (<its model> weights) does not fit model <target>: 2 missing keys (...); ...``."""
    held = f"{checkpoint_model} weights" if checkpoint_model else "a state dict that does not record its model"
    kinds = (
        ("missing key", "missing keys", missing),
        ("unexpected key", "unexpected keys", unexpected),
        ("shape mismatch, checkpoint vs model", "shape mismatches, checkpoint vs model", shapes),
    )
    parts = [_some(one, many, items) for one, many, items in kinds if items]
    return f"{source} ({held}) does not fit model {target_model}: {'; '.join(parts)}"


def load_weights(
    model: nn.Module, state_dict: Mapping[str, Tensor], source: str = "state dict", checkpoint_model: str | None = None
) -> None:
    """``model.load_state_dict(state_dict)`` (strict), or a :class:`LoadError` from :func:`mismatch_message`."""
    missing, unexpected, shapes = state_dict_mismatch(model, state_dict)
    if missing or unexpected or shapes:
        raise LoadError(mismatch_message(source, checkpoint_model, model_label(model), missing, unexpected, shapes))
    model.load_state_dict(state_dict)
