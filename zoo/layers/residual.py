"""The base of every zoo block: a residual with a drop path, in the form the block was asked for."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .drop import DropPath, check_drop_prob, check_skip_draw, resolve_draw

DROP_PATH_MODES = ("mask", "skip", "auto")

# "auto" skips the dropped samples' branch compute where that is known to pay: the gather and the
# scatter cost a pass or two over the block's activations, so the rate must be high enough and the
# branch expensive (not a pooling or identity mixer: blocks say so with ``cheap_branch``). 0.1 is
# where DINOv2 starts using it (layers/block.py) and where timm's maintainer put the break-even (timm
# issue #1836); the per-block sweep of ``benchmarks/drop_path.py --only sweep`` measures it on your machine.
AUTO_SKIP_MIN_RATE = 0.1

# Skip mode's fixed draw keeps ``round(B * (1 - rate))`` samples: a shape, so torch.compile makes a
# graph per kept count. The kept count therefore follows the time factor rounded to the nearest
# 1/FIXED_DRAW_FACTOR_STEPS, which bounds a compiled run to FIXED_DRAW_FACTOR_STEPS + 2 graphs per
# input shape whatever its schedule (one per rounded factor, 0 to 1, and one for factor 0 itself,
# where the drop path is off), under torch._dynamo's default recompile limit of 8.
FIXED_DRAW_FACTOR_STEPS = 4


def check_drop_path_mode(mode: str) -> str:
    if mode not in DROP_PATH_MODES:
        raise ValueError(f"drop_path_mode must be one of {', '.join(DROP_PATH_MODES)}, got {mode!r}")
    return mode


@dataclass(frozen=True)
class DropPathArgs:
    """A drop path, described once and handed down a model's constructors as one argument.

    For a block, ``rate`` is its own rate; for a model, the largest per-block rate, which the model
    spreads over depth with its ``drop_path_schedule`` (each block gets a copy with its own rate).
    The values are checked here, once.

    Args:
        rate: in [0, 1].
        mode: "mask" (the fused mask), "skip" (the branch runs on kept samples only) or "auto" (skip
            where it pays: see :class:`DropPathBlock`).
        skip_draw: how skip mode picks the kept samples: "auto", "bernoulli" or "fixed" (see
            :func:`zoo.layers.drop_path_skip_add`).
    """

    rate: float = 0.0
    mode: str = "mask"
    skip_draw: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate", check_drop_prob(self.rate, "drop_path"))
        check_drop_path_mode(self.mode)
        check_skip_draw(self.skip_draw)

    def with_rate(self, rate: float) -> DropPathArgs:
        return replace(self, rate=rate)

    def can_drop_whole_batch(self, device: torch.device, compiled: bool = False) -> bool:
        """Whether a block with this drop path can drop every sample of a batch, so that its branch gets no
        gradients that step (DistributedDataParallel must then look for unused parameters each step, a
        cost): skip mode's Bernoulli draw can, and any draw at rate 1; the fixed draw keeps at least one
        sample below that, and the mask form always runs the branch."""
        if self.mode == "mask":
            return False
        draw = self.skip_draw
        fixed = resolve_draw(draw, "row", device) == "fixed" or (draw == "auto" and compiled)
        return not fixed or self.rate >= 1


# The keywords create_model takes for a DropPathArgs (timm's drop_path_rate and zoo's two), by field.
DROP_PATH_KWARGS = {"drop_path_rate": "rate", "drop_path_mode": "mode", "drop_path_skip_draw": "skip_draw"}


def drop_path_from_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with the keys of :data:`DROP_PATH_KWARGS` (the names zoo's registered builders take
    through ``create_model``) turned into one ``drop_path``: :class:`DropPathArgs`; other keys as given."""
    names = DROP_PATH_KWARGS
    given = {names[k]: v for k, v in kwargs.items() if k in names}
    if not given:
        return kwargs
    if "drop_path" in kwargs:
        raise ValueError(f"give drop_path or {', '.join(names)}, not both (got drop_path and {', '.join(given)})")
    if "rate" in given:  # named as the caller wrote it
        given["rate"] = check_drop_prob(given["rate"], "drop_path_rate")
    return {**{k: v for k, v in kwargs.items() if k not in names}, "drop_path": DropPathArgs(**given)}


def drop_path_kwargs(args: DropPathArgs) -> dict[str, Any]:
    """``args`` as ``create_model``'s keywords (the inverse of :func:`drop_path_from_kwargs`)."""
    return {key: getattr(args, name) for key, name in DROP_PATH_KWARGS.items()}


def as_drop_path(drop_path: float | DropPathArgs) -> DropPathArgs:
    """A rate alone (timm's ``drop_path: float``) as the mask form's description."""
    return drop_path if isinstance(drop_path, DropPathArgs) else DropPathArgs(drop_path)


def resolve_skip(drop_path_mode: str, drop_prob: float, cheap_branch: bool = False) -> bool:
    """Whether a block with this rate and branch runs its branch on kept samples only (``drop_path_mode``
    already checked)."""
    if drop_path_mode == "auto":
        return not cheap_branch and drop_prob >= AUTO_SKIP_MIN_RATE
    return drop_path_mode == "skip"


class DropPathBlock(nn.Module):
    """Base of every zoo block with a residual drop path.

    Holds ``self.drop_path`` (a DropPath when the rate is above 0, else None). A block calls
    ``self.residual(shortcut, x, branch_fn)`` for ``shortcut + drop_path(branch_fn(x))``:

    - ``"mask"``: the fused form (:meth:`DropPath.add`); compiles to one graph.
    - ``"skip"``: ``branch_fn`` runs on the kept samples only (:func:`zoo.layers.drop_path_skip_add`):
      the same expectation, but BatchNorm inside the branch sees (and tracks running statistics of)
      the kept samples only, and a branch dropped for the whole batch gets no gradients (None).
    - ``"auto"``: "skip" where the block's built rate is at least ``AUTO_SKIP_MIN_RATE`` and its
      branch is not cheap, else "mask".

    A block with ``removed`` set (:func:`zoo.remove_blocks`) returns the shortcut alone: its branches
    are not called.

    Args:
        drop_path: this block's rate (the mask form), or its :class:`DropPathArgs`.
        cheap_branch: the branch costs less than skipping saves ("auto" then keeps mask).
    """

    removed: bool = False  # set on a copy by zoo.remove_blocks: every residual is its shortcut alone

    def __init__(self, drop_path: float | DropPathArgs = 0.0, *, cheap_branch: bool = False):
        super().__init__()
        args = as_drop_path(drop_path)
        self.base_drop_path = args.rate  # set_drop_path_factor scales this
        self.drop_path_factor = 1.0  # the factor installed now: the one record of it
        self.drop_path_mode = args.mode
        self.drop_path_skip_draw = args.skip_draw
        self.cheap_branch = cheap_branch
        self.drop_path = DropPath(args.rate, skip_draw=args.skip_draw) if args.rate > 0 else None
        self.skip = resolve_skip(args.mode, args.rate, cheap_branch)

    @property
    def drop_path_rate(self) -> float:
        """The rate installed now (0.0 when the block holds no DropPath)."""
        return self.drop_path.drop_prob if self.drop_path is not None else 0.0

    def set_drop_path_factor(self, factor: float) -> None:
        """Install ``factor`` times the rate the block was built with (factor in [0, 1]). Skip mode's
        fixed draw keeps a count of samples for the factor rounded to the nearest
        1 / ``FIXED_DRAW_FACTOR_STEPS`` (a bounded number of compiled graphs; unbiased either way)."""
        if factor == self.drop_path_factor:  # a schedule asks every step; the buffers change when it moves
            return
        self.drop_path_factor = factor
        self._install_rate()

    def set_base_drop_path(self, rate: float) -> None:
        """Change the rate the block was built with to ``rate`` (in [0, 1]), as if built with it: a
        DropPath is added (on the block's device and dtype) or removed, "auto" mode decides skip or
        mask again, and the installed factor applies on top."""
        self.base_drop_path = check_drop_prob(rate, "drop_path")
        if rate == 0:
            self.drop_path = None
        elif self.drop_path is None:
            place = next(self.parameters(), None)
            self.drop_path = DropPath(rate, skip_draw=self.drop_path_skip_draw)
            if place is not None:
                self.drop_path.to(device=place.device, dtype=place.dtype)
        self.skip = resolve_skip(self.drop_path_mode, self.base_drop_path, self.cheap_branch)
        self._install_rate()

    def _install_rate(self) -> None:
        """Put ``drop_path_factor`` times the built rate into the DropPath."""
        if self.drop_path is not None:
            self.drop_path.drop_prob = self.base_drop_path * self.drop_path_factor
            steps = FIXED_DRAW_FACTOR_STEPS
            self.drop_path.count_drop_prob = self.base_drop_path * round(self.drop_path_factor * steps) / steps

    def residual(
        self, shortcut: Tensor, x: Tensor, branch_fn: Callable[[Tensor], Tensor], skip: bool | None = None
    ) -> Tensor:
        """``shortcut + drop_path(branch_fn(x))``; ``skip`` overrides the block's form for this residual
        (a block with a cheap and an expensive branch skips only the expensive one)."""
        if self.removed:
            return shortcut
        dp = self.drop_path
        if dp is None:
            return shortcut + branch_fn(x)
        if self.skip if skip is None else skip:
            return dp.skip_add(shortcut, x, branch_fn)
        return dp.add(shortcut, branch_fn(x))


def drop_path_blocks(model: nn.Module) -> list[DropPathBlock]:
    """Every DropPathBlock in ``model``, in forward (registration) order."""
    return [m for m in model.modules() if isinstance(m, DropPathBlock)]


def block_drop_path_rates(model: nn.Module) -> list[float]:
    """The rate of every DropPathBlock in ``model``, in forward order."""
    return [block.drop_path_rate for block in drop_path_blocks(model)]


def set_drop_path_factor(model: nn.Module, factor: float) -> None:
    """Scale every block's rate to ``factor`` times the rate it was built with: the training-time
    schedules (:func:`zoo.layers.time_factor`) move all rates together, keeping the depth profile."""
    factor = check_drop_prob(factor, "drop_path_factor")
    for block in drop_path_blocks(model):
        block.set_drop_path_factor(factor)
