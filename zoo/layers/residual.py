"""The base of every zoo block: a residual with a drop path, in the form the block was asked for."""

from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

from .drop import DropPath, check_drop_prob, check_skip_draw

DROP_PATH_MODES = ("mask", "skip", "auto")

# "auto" skips the dropped samples' branch compute where that is known to pay: the gather and the
# scatter cost a pass or two over the block's activations, so the rate must be high enough and the
# branch expensive (not a pooling or identity mixer: blocks say so with ``cheap_branch``). 0.1 is
# where DINOv2 starts using it and where timm's maintainer put the break-even (REFERENCES.md); the
# per-block sweep of ``benchmarks/drop_path.py --only sweep`` measures it on your machine.
AUTO_SKIP_MIN_RATE = 0.1


def check_drop_path_mode(mode: str) -> str:
    if mode not in DROP_PATH_MODES:
        raise ValueError(f"drop_path_mode must be one of {', '.join(DROP_PATH_MODES)}, got {mode!r}")
    return mode


def resolve_skip(drop_path_mode: str, drop_prob: float, cheap_branch: bool = False) -> bool:
    """Whether a block with this rate and branch runs its branch on kept samples only (``drop_path_mode``
    already checked)."""
    if drop_path_mode == "auto":
        return not cheap_branch and drop_prob >= AUTO_SKIP_MIN_RATE
    return drop_path_mode == "skip"


class DropPathBlock(nn.Module):
    """Base of every zoo block with a residual drop path.

    Holds ``self.drop_path`` (a DropPath when ``drop_path > 0``, else None). A block calls
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
        drop_path: this block's drop path rate, in [0, 1].
        drop_path_mode: "mask", "skip" or "auto".
        cheap_branch: the branch costs less than skipping saves ("auto" then keeps mask).
        drop_path_skip_draw: how skip mode picks the kept samples: "auto", "bernoulli" or "fixed"
            (see :func:`zoo.layers.drop_path_skip_add`).
    """

    removed: bool = False  # set on a copy by zoo.remove_blocks: every residual is its shortcut alone

    def __init__(
        self,
        drop_path: float = 0.0,
        drop_path_mode: str = "mask",
        cheap_branch: bool = False,
        drop_path_skip_draw: str = "auto",
    ):
        super().__init__()
        self.base_drop_path = check_drop_prob(drop_path, "drop_path")  # set_drop_path_factor scales this
        self.drop_path_mode = check_drop_path_mode(drop_path_mode)
        check_skip_draw(drop_path_skip_draw)
        self.drop_path = DropPath(self.base_drop_path, skip_draw=drop_path_skip_draw) if drop_path > 0 else None
        self.skip = resolve_skip(drop_path_mode, self.base_drop_path, cheap_branch)

    @property
    def drop_path_rate(self) -> float:
        """The rate installed now (0.0 when the block holds no DropPath)."""
        return self.drop_path.drop_prob if self.drop_path is not None else 0.0

    def set_drop_path_factor(self, factor: float) -> None:
        """Install ``factor`` times the rate the block was built with (factor in [0, 1])."""
        if self.drop_path is not None:
            self.drop_path.drop_prob = self.base_drop_path * factor

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
