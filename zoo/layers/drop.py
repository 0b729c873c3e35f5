"""DropPath (stochastic depth): the functional form, the module, and the two fast residual forms.

Three ways to apply a drop path to a residual branch, all drawing the same random numbers so that,
for one seed, they keep the same samples and return the same values:

- ``shortcut + drop_path(branch)``: the reference (what timm blocks write);
- ``drop_path_add(shortcut, branch, ...)``: the same sum in one fused pass (``torch.addcmul``);
- ``drop_path_skip_add(shortcut, x, branch_fn, ...)``: runs ``branch_fn`` on the kept samples only and
  scatters the result back, so dropped samples cost no branch compute.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Callable

import torch
from torch import Tensor, nn

DRAW_MODES = ("row", "batch")  # "row": one draw per sample; "batch": one draw for the whole batch
_EPS = 1e-12  # keeps 1 / keep_prob finite at rate 1.0 (every sample is dropped, so it multiplies 0)


def check_drop_prob(value: object, name: str = "drop_prob") -> float:
    """Return ``value`` as a float in [0, 1]; raise ValueError naming the value and the range."""
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, Real) or math.isnan(float(value)):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)


def check_draw_mode(mode: str) -> str:
    if mode not in DRAW_MODES:
        raise ValueError(f"drop path mode must be one of {', '.join(DRAW_MODES)}, got {mode!r}")
    return mode


def keep_mask(x: Tensor, drop_prob: float | Tensor, mode: str = "row") -> Tensor:
    """Draw which samples of ``x`` keep their branch: a bool tensor of shape (B,).

    One uniform number per sample ("row") or one for the batch ("batch"), drawn in float32 on
    ``x``'s device, so the draw does not depend on ``x``'s dtype and every residual form agrees.
    """
    n = x.shape[0] if mode == "row" else 1
    keep = torch.rand(n, device=x.device, dtype=torch.float32) >= drop_prob
    return keep.expand(x.shape[0])


def _inv_keep(drop_prob: float | Tensor, scale_by_keep: bool) -> float | Tensor:
    if not scale_by_keep:
        return 1.0
    if isinstance(drop_prob, Tensor):
        return 1.0 / (1.0 - drop_prob.float()).clamp_min(_EPS)
    return 1.0 / max(1.0 - drop_prob, _EPS)


def _keep_scale(x: Tensor, drop_prob: float | Tensor, scale_by_keep: bool, mode: str) -> Tensor:
    """Per-sample factor in x's dtype, shaped (B, 1, ..., 1): 0 for dropped, 1/keep_prob for kept."""
    keep = keep_mask(x, drop_prob, mode)
    scale = keep.to(torch.float32) * _inv_keep(drop_prob, scale_by_keep)
    return scale.to(x.dtype).view((x.shape[0],) + (1,) * (x.ndim - 1))


def _is_off(drop_prob: float | Tensor, training: bool) -> bool:
    # A tensor rate (a DropPath's buffer) is never read back here: that would sync the device and
    # break a compiled graph. The module checks its own Python-side flag instead.
    return not training or (not isinstance(drop_prob, Tensor) and check_drop_prob(drop_prob) == 0.0)


def drop_path(
    x: Tensor,
    drop_prob: float | Tensor = 0.0,
    training: bool = False,
    scale_by_keep: bool = True,
    mode: str = "row",
) -> Tensor:
    """Zero whole samples (``mode="row"``) or the whole batch (``"batch"``) with probability ``drop_prob``.

    Same signature and meaning as ``timm.layers.drop_path``: identity when not training or at rate 0;
    kept samples are divided by ``1 - drop_prob`` when ``scale_by_keep``, so the expectation is ``x``.
    Rate 1.0 returns zeros. Works for any ``x.ndim >= 1`` and keeps ``x``'s dtype.
    """
    check_draw_mode(mode)
    if _is_off(drop_prob, training):
        return x
    return x * _keep_scale(x, drop_prob, scale_by_keep, mode)


def drop_path_add(
    shortcut: Tensor,
    branch: Tensor,
    drop_prob: float | Tensor = 0.0,
    training: bool = False,
    scale_by_keep: bool = True,
    mode: str = "row",
) -> Tensor:
    """``shortcut + drop_path(branch, ...)`` in one pass, for the same random draw.

    The reference form reads and writes the branch twice (a mask multiply, then the add); a fused
    ``addcmul`` touches each element once, forward and backward.
    """
    check_draw_mode(mode)
    if _is_off(drop_prob, training):
        return shortcut + branch
    return torch.addcmul(shortcut, branch, _keep_scale(branch, drop_prob, scale_by_keep, mode))


def drop_path_skip_add(
    shortcut: Tensor,
    x: Tensor,
    branch_fn: Callable[[Tensor], Tensor],
    drop_prob: float | Tensor = 0.0,
    training: bool = False,
    scale_by_keep: bool = True,
    mode: str = "row",
) -> Tensor:
    """``shortcut + drop_path(branch_fn(x), ...)``, running ``branch_fn`` on the kept samples only.

    Same draw, same expectation and same eval behaviour as the mask forms. What differs: layers inside
    ``branch_fn`` see a smaller batch, so BatchNorm statistics (and its running averages) are computed
    over the kept samples only. In "batch" mode a dropped branch is not run at all. The kept count is
    data dependent, so under torch.compile this form breaks the graph (the mask forms do not).
    """
    check_draw_mode(mode)
    if _is_off(drop_prob, training):
        return shortcut + branch_fn(x)
    inv_keep = _inv_keep(drop_prob, scale_by_keep)
    if mode == "batch":
        if bool(keep_mask(x, drop_prob, mode)[0]):
            return torch.add(shortcut, branch_fn(x) * inv_keep)
        return shortcut
    idx = keep_mask(x, drop_prob, mode).nonzero().squeeze(1)
    if idx.numel() == x.shape[0]:  # nothing dropped: skip the gather and scatter
        return torch.add(shortcut, branch_fn(x) * inv_keep)
    if idx.numel() == 0:
        return shortcut
    out = branch_fn(x.index_select(0, idx)) * inv_keep
    return shortcut.index_add(0, idx, out.to(shortcut.dtype))


class DropPath(nn.Module):
    """Drop paths (stochastic depth) per sample; a drop-in for ``timm.layers.DropPath``.

    The rate lives in a (non-persistent) buffer, and ``forward`` reads only that tensor and a bool,
    so setting ``m.drop_prob`` on a live module (a training-time schedule does it every step) does not
    make torch.compile recompile; only switching between zero and non-zero does.
    """

    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True, mode: str = "row"):
        super().__init__()
        self.scale_by_keep = scale_by_keep
        self.mode = check_draw_mode(mode)
        self.register_buffer("rate", torch.zeros((), dtype=torch.float32), persistent=False)
        self.drop_prob = drop_prob

    @property
    def drop_prob(self) -> float:
        return self._drop_prob

    @drop_prob.setter
    def drop_prob(self, value: float) -> None:
        value = check_drop_prob(value)
        self._drop_prob = value
        self.active = value > 0.0
        with torch.no_grad():
            self.rate.fill_(value)

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and self.active):
            return x
        return x * _keep_scale(x, self.rate, self.scale_by_keep, self.mode)

    def add(self, shortcut: Tensor, branch: Tensor) -> Tensor:
        """``shortcut + self(branch)``, fused (see :func:`drop_path_add`)."""
        if not (self.training and self.active):
            return shortcut + branch
        return torch.addcmul(shortcut, branch, _keep_scale(branch, self.rate, self.scale_by_keep, self.mode))

    def skip_add(self, shortcut: Tensor, x: Tensor, branch_fn: Callable[[Tensor], Tensor]) -> Tensor:
        """``shortcut + self(branch_fn(x))``, computing the branch for kept samples only."""
        if not (self.training and self.active):
            return shortcut + branch_fn(x)
        return drop_path_skip_add(shortcut, x, branch_fn, self.rate, True, self.scale_by_keep, self.mode)

    def _apply(self, fn, recurse=True):
        # model.half() / .to(bfloat16) would round the rate (0.1 -> 0.1001 in bf16): keep it float32.
        super()._apply(fn, recurse)
        if self.rate.dtype != torch.float32:
            self.rate = torch.full((), self._drop_prob, dtype=torch.float32, device=self.rate.device)
        return self

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}, mode={self.mode!r}, scale_by_keep={self.scale_by_keep}"
