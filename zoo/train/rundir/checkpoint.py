"""Training checkpoints: written atomically, read back with an error that says what is wrong.

A checkpoint is a dict of plain values and tensors (it loads with ``weights_only=True``):
``model``, ``optimizer``, ``scheduler`` (its step), ``epoch`` (epochs finished), ``step`` (steps
finished in the epoch under way), ``global_step``, ``rng`` (torch RNG states), ``meter`` (the
running sums of the epoch under way), ``history`` (the metrics.jsonl lines so far), ``config``
(the resolved training config), ``model_name`` and ``model_args`` (the ``create_model`` name and
keyword arguments that rebuild the model: :func:`zoo.load_run`) and ``versions``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ..._weights import CHECKPOINT_NAME, LoadError, checkpoint_file, load_file, load_weights, read_checkpoint  # noqa: F401 (CHECKPOINT_NAME: re-exported)
from ..config.overrides import ENVIRONMENT_KEYS, flatten, is_environment_key, override_key
from ..config.schema import REMOVED_KEYS
from ..errors import CheckpointError
from .atomic import save_atomic

REQUIRED_KEYS = ("model", "optimizer", "epoch", "step", "global_step", "config", "model_name", "history")


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` through a temporary file and a rename, so a kill mid-save leaves the previous file whole."""
    path = Path(path)
    save_atomic(state, path)
    return path


def training_state(
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    config: dict[str, Any],
    epoch: int,
    step: int,
    steps_per_epoch: int,
    meter: Any,
    history: list[dict[str, Any]],
) -> dict[str, Any]:
    """Everything a run needs to continue from step ``step`` of epoch ``epoch`` (0-based, steps finished)."""
    from .runlog import versions

    global_step = epoch * steps_per_epoch + step
    return {
        "model": net.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": {"name": config["sched"]["name"], "step": global_step},  # the lr is a pure function of it
        "epoch": epoch,
        "step": step,
        "global_step": global_step,
        "meter": meter.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        },
        "history": list(history),
        "config": config,
        "model_name": config["model"]["name"],
        "model_args": net.model_args,  # recorded by zoo.create_model
        "versions": versions(),
    }


def resolve_checkpoint(resume: str | os.PathLike, key: str = "resume") -> Path:
    """The checkpoint file ``resume`` names: the file itself, or ``last.pt`` inside a run dir (an error
    names ``key``)."""
    try:
        return checkpoint_file(resume)
    except LoadError as e:
        raise CheckpointError(f"{key}={e}") from None


def load_checkpoint(resume: str | os.PathLike, model_name: str | None = None) -> dict[str, Any]:
    """Read a training checkpoint, checking that it is whole and (when ``model_name`` is given) for that model.

    Raises:
        CheckpointError: the path is missing, the file is corrupt or truncated, it is not a zoo training
            checkpoint, or it belongs to another model.
    """
    path = resolve_checkpoint(resume)
    try:
        state = load_file(path)
    except LoadError as e:
        raise CheckpointError(str(e)) from None
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED_KEYS):
        missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
        raise CheckpointError(f"{path} is not a zoo training checkpoint (missing {', '.join(missing)})")
    if model_name is not None and state["model_name"] != model_name:
        raise CheckpointError(f"{path} holds a {state['model_name']} model, not {model_name}")
    state["path"] = str(path)
    return state


def load_model_state(model: torch.nn.Module, state: dict[str, Any]) -> None:
    """Load the checkpoint's weights into ``model``; a shape or key mismatch is a CheckpointError that
    names the checkpoint's model and ``model``'s, and the first keys that differ (the library's message)."""
    try:
        load_weights(model, state["model"], str(state.get("path", "checkpoint")), state.get("model_name"))
    except LoadError as e:
        raise CheckpointError(str(e)) from None


def resumed_config(cfg: DictConfig, state: dict[str, Any], overrides: Sequence[str] = ()) -> DictConfig:
    """The config a resumed run continues with: the checkpoint's own, plus the command line's
    ``ENVIRONMENT_KEYS``. Any other override that changes the saved config is a CheckpointError
    (a different model, epochs or lr would silently make another run). Keys the project added after
    the run was saved take today's value: they did not exist, so the run never chose one; keys it
    saved that were removed since (``REMOVED_KEYS``) are dropped."""
    old = {k: v for k, v in state["config"].items() if k not in REMOVED_KEYS}
    if state["config"].get("tensorboard") and not old.get("logger"):  # saved before logger= existed
        old["logger"] = {"tensorboard": {}}
    saved = OmegaConf.merge(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), old)
    keys = [override_key(o) for o in overrides]
    for key in keys:
        if is_environment_key(key):
            # merge=False: a new logger= replaces the saved loggers instead of joining them
            OmegaConf.update(saved, key, OmegaConf.select(cfg, key), merge=False, force_add=True)
    checked = [k for k in keys if not is_environment_key(k)]
    if checked:
        now = flatten(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
        then = flatten(OmegaConf.to_container(saved, resolve=True))
        # An experiment may set any key, so it is checked against the whole config; other overrides
        # only against the keys they name (``model=x`` names every model.* key).
        everything = "experiment" in checked

        def named(k: str) -> bool:
            return everything or any(k == c or k.startswith(c + ".") for c in checked)

        changed = [
            k
            for k in sorted(set(now) | set(then))
            if not is_environment_key(k) and named(k) and now.get(k) != then.get(k)
        ]
        if changed:
            diffs = ", ".join(f"{k}={now.get(k)!r} (saved {then.get(k)!r})" for k in changed[:5])
            raise CheckpointError(
                f"resume={cfg.resume} continues {state['path']} with its saved config, but the command line changes "
                f"{diffs}; drop those overrides (only {', '.join(ENVIRONMENT_KEYS[1:])} may change) or start a new run"
            )
    saved.resume = cfg.resume
    return saved


def init_weights(net: torch.nn.Module, source: str | os.PathLike) -> list[str]:
    """Load the weights of ``source`` (a run dir's last.pt, a training checkpoint or a state dict) into a
    new run's ``net``, as timm's ``--initial-checkpoint``; a classifier (``head.*``) of another size, or
    none, keeps ``net``'s fresh initialisation. Returns the re-initialised keys; any other mismatch is a
    :class:`CheckpointError` naming both models and the keys."""
    try:
        ckpt = read_checkpoint(source)
    except LoadError as e:
        raise CheckpointError(f"init_from={e}") from None
    own = net.state_dict()
    state = {k: v for k, v in ckpt.state_dict.items() if k in own or not k.startswith("head.")}
    fresh = [k for k in own if k.startswith("head.") and (k not in state or state[k].shape != own[k].shape)]
    state.update({k: own[k] for k in fresh})
    try:
        load_weights(net, state, f"init_from={ckpt.path}", ckpt.model_name)
    except LoadError as e:
        raise CheckpointError(str(e)) from None
    return fresh
