"""The residual add with a drop path, in the form a block asked for: mask, skip or auto."""

from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

from .drop import DropPath, check_drop_prob

DROP_PATH_MODES = ("mask", "skip", "auto")

# "auto" skips the dropped samples' branch compute only where that pays: the gather and scatter cost
# several mask multiplies, so the branch must be expensive (not a pooling or identity mixer) and the
# rate high enough. The threshold comes from benchmarks/drop_path.py on a 2-core CPU.
AUTO_SKIP_MIN_RATE = 0.2


def check_drop_path_mode(mode: str) -> str:
    if mode not in DROP_PATH_MODES:
        raise ValueError(f"drop_path_mode must be one of {', '.join(DROP_PATH_MODES)}, got {mode!r}")
    return mode


def resolve_skip(drop_path_mode: str, drop_prob: float, cheap_branch: bool = False) -> bool:
    """Whether a block with this rate and branch runs its branch on kept samples only."""
    check_drop_path_mode(drop_path_mode)
    if drop_path_mode == "auto":
        return not cheap_branch and drop_prob >= AUTO_SKIP_MIN_RATE
    return drop_path_mode == "skip"


class DropPathBlock(nn.Module):
    """Base of every zoo block with a residual drop path.

    Holds ``self.drop_path`` (a DropPath when ``drop_path > 0``, else None) and the residual forms.
    A block calls ``self.residual(shortcut, x, branch_fn)`` for ``shortcut + drop_path(branch_fn(x))``;
    with ``drop_path_mode="skip"`` the branch runs on the kept samples only.
    """

    def __init__(self, drop_path: float = 0.0, drop_path_mode: str = "mask", cheap_branch: bool = False):
        super().__init__()
        drop_path = check_drop_prob(drop_path, "drop_path")
        self.drop_path = DropPath(drop_path) if drop_path > 0 else None
        self.drop_path_mode = check_drop_path_mode(drop_path_mode)
        self.skip = resolve_skip(drop_path_mode, drop_path, cheap_branch)

    @property
    def drop_path_rate(self) -> float:
        """The rate installed now (0.0 when the block holds no DropPath)."""
        return self.drop_path.drop_prob if self.drop_path is not None else 0.0

    def residual(self, shortcut: Tensor, x: Tensor, branch_fn: Callable[[Tensor], Tensor]) -> Tensor:
        if self.drop_path is None:
            return shortcut + branch_fn(x)
        if self.skip:
            return self.drop_path.skip_add(shortcut, x, branch_fn)
        return self.drop_path.add(shortcut, branch_fn(x))


def block_drop_path_rates(model: nn.Module) -> list[float]:
    """The rate of every DropPathBlock in ``model``, in forward (registration) order."""
    return [m.drop_path_rate for m in model.modules() if isinstance(m, DropPathBlock)]


def set_block_drop_path_rates(model: nn.Module, rates: list[float]) -> None:
    """Install one rate per DropPathBlock (forward order). A block built at rate 0 holds no DropPath
    and only accepts 0; training-time schedules scale the built rates, so they never ask for more."""
    blocks = [m for m in model.modules() if isinstance(m, DropPathBlock)]
    if len(rates) != len(blocks):
        raise ValueError(f"got {len(rates)} rates for {len(blocks)} blocks")
    for i, (block, rate) in enumerate(zip(blocks, rates)):
        if block.drop_path is not None:
            block.drop_path.drop_prob = rate
        elif check_drop_prob(rate) != 0.0:
            raise ValueError(f"block {i} was built with drop path rate 0 and holds no DropPath, got {rate}")
