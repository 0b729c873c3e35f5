"""A trained run back as a model: :func:`load_run` rebuilds it from the name and the ``create_model``
arguments its checkpoint saved."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from ._registry import create_model
from ._weights import WHICH, LoadError, load_weights, read_checkpoint


def load_run(
    run_dir_or_checkpoint: str | os.PathLike,
    device: str | torch.device = "cpu",
    ema: bool = False,
    which: str = "last",
) -> tuple[nn.Module, dict[str, Any]]:
    """The model a training run saved, rebuilt with ``create_model`` from the name and arguments its
    checkpoint recorded, with its weights, in eval mode on ``device``; and the run's training config
    (plain dicts, as the trainer saved it; empty when the checkpoint holds none).

    Args:
        run_dir_or_checkpoint: a run dir (its ``last.pt`` is read) or a training checkpoint file.
        device: where the model goes (the file is read onto the CPU first).
        ema: load the moving average of the weights (a run trained with ``ema=true``) instead of the
            weights themselves.
        which: from a run dir, ``"last"`` (``last.pt``, the last epoch) or ``"best"`` (``best.pt``, the
            epoch of the best validation accuracy, kept by a run trained with ``data.val_size``). A
            checkpoint file is read as it is.

    Raises:
        LoadError: the path is missing or unreadable, holds a plain state dict (it records no model:
            use ``zoo.create_model(name, checkpoint_path=...)``), its arguments no longer build a model,
            ``ema=True`` and the run kept no EMA weights, or ``which="best"`` and the run kept no best.pt.
    """
    if which not in WHICH:
        raise LoadError(f"which must be one of {', '.join(WHICH)}, got {which!r}")
    ckpt = read_checkpoint(run_dir_or_checkpoint, WHICH[which])
    if ckpt.model_name is None or ckpt.model_args is None:
        raise LoadError(
            f"{ckpt.path} records no model (model_name and model_args); for a plain state dict use "
            "zoo.create_model(<name>, checkpoint_path=...)"
        )
    try:
        model = create_model(ckpt.model_name, **ckpt.model_args)
    except (TypeError, ValueError) as e:
        raise LoadError(f"{ckpt.path}: its saved arguments no longer build model {ckpt.model_name}: {e}") from None
    if ema and ckpt.ema is None:
        raise LoadError(f"{ckpt.path} holds no EMA weights (the run trained with ema=false); load it with ema=False")
    load_weights(model, ckpt.ema if ema else ckpt.state_dict, str(ckpt.path), ckpt.model_name)
    return model.to(device).eval(), ckpt.config or {}
