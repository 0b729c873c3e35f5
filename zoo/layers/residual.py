"""The residual add with a drop path, in the form a block asked for: mask, skip or auto."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from .drop import DropPath, check_drop_prob, residual_add

DROP_PATH_MODES = ("mask", "skip", "auto")

# "auto" skips the dropped samples' branch compute only where that pays: the gather and scatter cost
# a few memory passes over the block's activations, so the branch must be expensive (not a pooling or
# identity mixer: blocks say so with cheap_branch) and the rate high enough. Measured with
# `python benchmarks/drop_path.py --only sweep --threads 1 --clock process --repeats 12` (2-core AMD
# EPYC, shared, batch 128, fwd + bwd; 2026-11-26, after the gather / scatter rework), skip / mask time
# per block:
#                      p = 0.02  0.05  0.1   0.15  0.2   0.3   0.5
#   BasicBlock 16ch 32x32  1.02  0.97  0.91  0.89  0.84  0.74  0.54
#   BasicBlock 64ch  8x8   1.00  1.00  0.91  0.91  0.81  0.73  0.56
#   MLP block 64 tok x 64  1.02  1.02  0.93  0.93  0.84  0.73  0.54
# Skipping breaks even near 0.05 and pays for every block from 0.1, hence the threshold. The rule is
# fixed when the block is built, from its built rate (a training-time schedule that lowers the rate
# later does not switch it back). Measured on CPU: on CUDA every skipping block syncs the device once
# per step (see zoo.layers.drop.drop_path_skip_add), so the break-even there is likely higher.
AUTO_SKIP_MIN_RATE = 0.1


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
    A block calls ``self.residual(shortcut, x, branch_fn)`` for ``shortcut + drop_path(branch_fn(x))``:

    - ``"mask"``: the fused one-pass form (:func:`zoo.layers.drop.drop_path_add`), written into the
      branch output's memory where that is safe; compiles to one graph.
    - ``"skip"``: ``branch_fn`` runs on the kept samples only
      (:func:`zoo.layers.drop.drop_path_skip_add`): same draw and expectation, but BatchNorm inside the
      branch sees (and tracks running stats of) the kept samples only, a fully dropped branch gets no
      gradients (None, so optimizers skip its parameters that step), torch.compile breaks the graph
      at the draw, and on CUDA each block syncs the device once per step.
    - ``"auto"``: "skip" where the block's built rate is at least ``AUTO_SKIP_MIN_RATE`` and its branch
      is not cheap, else "mask".
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

    def residual(
        self,
        shortcut: Tensor,
        x: Tensor,
        branch_fn: Callable[[Tensor], Tensor],
        skip: bool | None = None,
        relu: bool = False,
    ) -> Tensor:
        """``shortcut + drop_path(branch_fn(x))``; ``skip`` overrides the block's form for this residual
        (a block with a cheap and an expensive branch skips only the expensive one). ``relu``: return
        ``relu`` of the sum (post-activation blocks), applied in place on the sum, which is the block's
        own tensor; skip mode fuses it into the scatter, whose backward then owns the gradient."""
        dp = self.drop_path
        active = dp is not None and dp.training and dp.active
        if active and (self.skip if skip is None else skip):
            return dp.skip_add(shortcut, x, branch_fn, relu)  # sums into a tensor of its own
        # The branch output is the block's own, so the sum may be written into it; residual_add and
        # DropPath.add fall back to a new tensor where that would not be safe for autograd.
        inplace = not self._branch_observed()
        add = dp.add if dp is not None else residual_add  # DropPath.add is residual_add when inactive
        out = add(shortcut, branch_fn(x), inplace)
        # the sum is a new tensor or the branch output it was written into, never the shortcut
        return out.relu_() if relu else out

    def _branch_observed(self) -> bool:
        """Whether a forward hook may hold the branch output (feature extraction, activation logging):
        then the sum must not be written into it, or the hook's tensor would silently change."""
        if torch.compiler.is_compiling():
            return False  # compiled code never writes in place here (see can_overwrite)
        if getattr(nn.modules.module, "_global_forward_hooks", None):
            return True
        return any(m._forward_hooks for m in self.modules() if m is not self)


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
