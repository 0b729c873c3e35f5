"""A trained run back as a model: :func:`load_run` rebuilds it from the config its checkpoint saved.

:func:`model_from_config` is the one place that turns a training config into ``create_model``'s
arguments; the trainer builds its models through it too, so a run loads as it trained.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ._registry import create_model
from ._weights import WHICH, LoadError, load_weights, read_checkpoint

# Top-level training-config keys that are create_model arguments (the model group holds the rest).
DROP_PATH_KEYS = ("drop_path_rate", "drop_path_schedule", "drop_path_mode", "drop_path_skip_draw")
NUM_CLASSES = 10  # CIFAR-10: the trainer's only dataset


def model_from_config(config: Mapping[str, Any], num_classes: int = NUM_CLASSES) -> nn.Module:
    """``create_model(config["model"]["name"], ...)`` with the model group's other keys and the
    top-level drop path keys (``config`` as plain dicts, a resolved training config)."""
    group = dict(config["model"])
    name = group.pop("name")
    drop_path = {k: config[k] for k in DROP_PATH_KEYS if k in config}
    return create_model(name, num_classes=num_classes, **drop_path, **group)


def load_run(
    run_dir_or_checkpoint: str | os.PathLike, device: str | torch.device = "cpu", ema: bool = False,
    which: str = "last",
) -> tuple[nn.Module, dict[str, Any]]:
    """The model a training run saved, rebuilt from its saved config with its weights, in eval mode on
    ``device``; and that config (plain dicts: ``config["model"]["name"]``, ``config["drop_path_rate"]``, ...).

    Args:
        run_dir_or_checkpoint: a run dir (its ``last.pt`` is read) or a training checkpoint file.
        device: where the model goes (the file is read onto the CPU first).
        ema: load the moving average of the weights (a run trained with ``ema=true``) instead of the
            weights themselves.
        which: from a run dir, ``"last"`` (``last.pt``, the last epoch) or ``"best"`` (``best.pt``, the
            epoch of the best validation accuracy, kept by a run trained with ``data.val_size``). A
            checkpoint file is read as it is.

    Raises:
        LoadError: the path is missing or unreadable, holds a plain state dict (it records no config:
            use ``zoo.create_model(name, checkpoint_path=...)``), its config no longer builds a model, or
            ``ema=True`` and the run kept no EMA weights, or ``which="best"`` and the run kept no best.pt.
    """
    if which not in WHICH:
        raise LoadError(f"which must be one of {', '.join(WHICH)}, got {which!r}")
    ckpt = read_checkpoint(run_dir_or_checkpoint, WHICH[which])
    config = ckpt.config
    if config is None or not isinstance(config.get("model"), dict) or "name" not in config["model"]:
        raise LoadError(
            f"{ckpt.path} records no training config (config['model']['name']); for a plain state dict use "
            "zoo.create_model(<name>, checkpoint_path=...)"
        )
    try:
        model = model_from_config(config)
    except (TypeError, ValueError) as e:
        raise LoadError(f"{ckpt.path}: its saved config no longer builds model {config['model']['name']}: {e}") from None
    if ema and ckpt.ema is None:
        raise LoadError(f"{ckpt.path} holds no EMA weights (the run trained with ema=false); load it with ema=False")
    load_weights(model, ckpt.ema if ema else ckpt.state_dict, str(ckpt.path), ckpt.model_name)
    return model.to(device).eval(), config
