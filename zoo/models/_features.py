"""Plumbing of the feature API every zoo model shares: which stages to return, what they hold, and
per-block gradient checkpointing."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

OUTPUT_FMTS = ("NCHW", "NHWC")


class FeatureInfo(list):
    """One dict per returned stage, timm's layout: ``num_chs`` (channels), ``reduction`` (input size
    over map size) and ``module`` (the stage's name in the model, ``"stages.<i>"``)."""

    def channels(self) -> list[int]:
        return [info["num_chs"] for info in self]

    def reduction(self) -> list[int]:
        return [info["reduction"] for info in self]

    def module_name(self) -> list[str]:
        return [info["module"] for info in self]


def take_indices(num_stages: int, indices: int | Sequence[int] | None, name: str = "indices") -> list[int]:
    """The stages to return, sorted, as timm's ``feature_take_indices`` reads ``indices``: None for every
    stage, an int n for the last n, a sequence for those stages (negative ones count from the end)."""
    n = num_stages
    allowed = f"allowed: None, an int in 1..{n} (the last n stages), or stage indices in {-n}..{n - 1}"
    if indices is None:
        return list(range(n))
    if isinstance(indices, int) and not isinstance(indices, bool):
        if not 0 < indices <= n:
            raise ValueError(f"{name}={indices!r} is out of range; {allowed}")
        return list(range(n - indices, n))
    if isinstance(indices, str) or not isinstance(indices, Iterable):
        raise ValueError(f"{name}={indices!r} is not stage indices; {allowed}")
    indices = tuple(indices)
    if not indices or any(isinstance(i, bool) or not isinstance(i, int) or not -n <= i < n for i in indices):
        raise ValueError(f"{name}={indices!r} is out of range; {allowed}")
    return sorted({i % n for i in indices})


def check_output_fmt(output_fmt: str) -> str:
    if output_fmt not in OUTPUT_FMTS:
        raise ValueError(f"output_fmt must be one of {', '.join(OUTPUT_FMTS)}, got {output_fmt!r}")
    return output_fmt


@contextlib.contextmanager
def running_stats_kept(module: nn.Module) -> Iterator[None]:
    """Whatever the forward inside does to the running statistics of ``module``'s BatchNorms (and any
    layer that tracks them) is undone on exit. A checkpointed block runs its forward twice; without
    this its BatchNorms would count every batch twice. (Turning ``track_running_stats`` off for the
    recomputation instead would change what BatchNorm saves for backward, which checkpoint refuses.)"""
    norms = [m for m in module.modules() if m.training and getattr(m, "track_running_stats", False)]
    saved = [[b.clone() for b in m.buffers(recurse=False)] for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, values in zip(norms, saved):
                for b, v in zip(m.buffers(recurse=False), values):
                    b.copy_(v)


def run_blocks(blocks: Iterable[nn.Module], x: Tensor, grad_checkpointing: bool) -> Tensor:
    """``x`` through ``blocks`` in order. With ``grad_checkpointing`` (and in a training forward that
    records gradients) each block keeps only its input and recomputes its activations in backward.
    The recomputation replays the forward's random state (torch's default), so drop path drops the
    same samples, and it does not update BatchNorm running statistics a second time."""
    checkpointing = grad_checkpointing and torch.is_grad_enabled()
    for block in blocks:
        if checkpointing and block.training:
            x = _checkpoint(block, x)
        else:
            x = block(x)
    return x


def _checkpoint(block: nn.Module, x: Tensor) -> Tensor:
    if torch.compiler.is_compiling():
        # Dynamo takes no custom context_fn; AOT autograd applies a graph's buffer updates once
        # anyway (tests/test_features.py checks the statistics under compile)
        return checkpoint(block, x, use_reentrant=False)
    recompute_contexts = lambda: (contextlib.nullcontext(), running_stats_kept(block))  # noqa: E731
    return checkpoint(block, x, use_reentrant=False, context_fn=recompute_contexts)
