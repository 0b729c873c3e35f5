"""DropPath (stochastic depth): drop a residual branch for whole samples.

The rule is timm's: in training each sample keeps its branch with probability ``1 - p`` and a kept
branch is scaled by ``1 / (1 - p)``, so the expectation is unchanged and eval is the identity.
Three forms of ``shortcut + drop_path(branch)``:

- :func:`drop_path` / :class:`DropPath`: the mask itself, a drop-in for timm's.
- :func:`drop_path_add`: the residual add fused with the mask (one ``torch.addcmul``): each tensor
  is read and written once instead of twice (timed against timm's ``x + DropPath(p)(b)`` in
  docs/benchmarks.md).
- :func:`drop_path_skip_add`: the branch runs on the kept samples only, so dropped samples cost no
  branch compute (what that saves a training step: docs/benchmarks.md). Two draws: ``"bernoulli"`` (the
  same per-sample draw as the mask, which reads the kept count back to the host) and ``"fixed"``
  (exactly ``k`` samples: no host sync, and one compiled graph per kept count).
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Callable

import torch
from torch import Tensor, nn

# The fixed draw's keep fraction, 1 - rate, is held as an int count of 2**-24 (finer than any batch's
# kept count can tell): torch.compile specialises a module's int attribute at once, where a float
# that changes is first tried as a dynamic value, one wasted compile.
KEEP_UNITS = 2**24
DRAW_MODES = ("row", "batch")  # "row": one draw per sample; "batch": one draw for the whole batch
SKIP_DRAWS = ("auto", "bernoulli", "fixed")


def check_drop_prob(value: object, name: str = "drop_prob") -> float:
    """Return ``value`` as a float in [0, 1]; raise ValueError naming the value and the range.

    The one check of a drop path rate: every entry point (DropPath, the functions, the blocks, the
    schedules, the trainer's config) calls it.
    """
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{name} must be a number, got {value!r}; allowed: [0, 1]")
    if math.isnan(float(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}; allowed: [0, 1]")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)


def check_draw_mode(mode: str) -> str:
    if mode not in DRAW_MODES:
        raise ValueError(f"drop path mode must be one of {', '.join(DRAW_MODES)}, got {mode!r}")
    return mode


def check_skip_draw(draw: str, mode: str = "row") -> str:
    if draw not in SKIP_DRAWS:
        raise ValueError(f"drop_path_skip_draw must be one of {', '.join(SKIP_DRAWS)}, got {draw!r}")
    if draw == "fixed" and mode == "batch":
        raise ValueError(
            "drop_path_skip_draw='fixed' keeps a count of samples, mode='batch' drops whole batches: "
            "use 'bernoulli' or 'auto' with batch mode"
        )
    return draw


def _check_input(x: Tensor) -> None:
    """A drop path scales kept samples by ``1 / (1 - p)``: in an integer tensor that factor would be
    truncated (a wrong result, not an error), so only floating-point inputs are taken."""
    if not x.is_floating_point():
        raise TypeError(f"drop path needs a floating-point tensor, got {x.dtype} (convert it with .float())")


def _check_rate(drop_prob: float | Tensor) -> None:
    """The rate a drop path function was given. A one-element tensor rate is read only where that costs no
    device sync (a CPU tensor, outside torch.compile): a GPU rate is the caller's to check, as DropPath
    checks its own when it is set."""
    if not isinstance(drop_prob, Tensor):
        check_drop_prob(drop_prob)
    elif drop_prob.numel() != 1 or not drop_prob.is_floating_point():
        raise ValueError(
            f"drop_prob must be a number or a one-element float tensor, got a {drop_prob.dtype} "
            f"tensor of shape {tuple(drop_prob.shape)}"
        )
    elif drop_prob.device.type == "cpu" and not torch.compiler.is_compiling():
        check_drop_prob(drop_prob)


def _inv_keep(drop_prob: float | Tensor) -> float | Tensor:
    """``1 / (1 - drop_prob)``, the kept samples' factor; 0 at rate 1, where no sample is kept (1 / 0
    would turn the dropped samples' 0 into NaN)."""
    if isinstance(drop_prob, Tensor):
        return torch.where(drop_prob < 1, 1 / (1 - drop_prob), 0.0)
    return 1.0 / (1.0 - drop_prob) if drop_prob < 1 else 0.0


def keep_mask(x: Tensor, drop_prob: float | Tensor, mode: str = "row") -> Tensor:
    """Which samples of ``x`` keep their branch: a bool tensor of shape (B,).

    One uniform number per sample ("row") or one for the batch ("batch"), drawn in float32 on
    ``x``'s device, so every form and every dtype keeps the same samples for the same seed.
    """
    n = x.shape[0] if mode == "row" else 1
    return (torch.rand(n, device=x.device) >= drop_prob).expand(x.shape[0])


@torch.fx.wrap  # traced as one call: a traced tensor cannot answer its dtype check
def _keep_scale(
    x: Tensor, drop_prob: float | Tensor, scale_by_keep: bool, mode: str, factor: Tensor | None = None
) -> Tensor:
    """Per-sample factor in x's dtype, shaped (B, 1, ..., 1) (or (1, ...) in batch mode): 0 for a
    dropped sample, ``1 / (1 - p)`` for a kept one. The draw is :func:`keep_mask`'s; ``factor`` is
    DropPath's ``inv_keep`` buffer."""
    _check_input(x)
    shape = (x.shape[0] if mode == "row" else 1,) + (1,) * (x.ndim - 1)
    keep = torch.rand(shape, device=x.device) >= drop_prob
    if not scale_by_keep:
        return keep.to(x.dtype)
    return (keep * (_inv_keep(drop_prob) if factor is None else factor)).to(x.dtype)


def _is_off(drop_prob: float | Tensor, training: bool) -> bool:
    # A tensor rate is never read back here: that would sync the device and break a compiled graph.
    return not training or (not isinstance(drop_prob, Tensor) and check_drop_prob(drop_prob) == 0.0)


def drop_path(
    x: Tensor, drop_prob: float | Tensor = 0.0, training: bool = False, scale_by_keep: bool = True, mode: str = "row"
) -> Tensor:
    """Zero whole samples (``mode="row"``) or the whole batch (``"batch"``) with probability ``drop_prob``.

    Same signature and meaning as ``timm.layers.drop_path``: identity when not training or at rate 0;
    kept samples are divided by ``1 - drop_prob`` when ``scale_by_keep``, so the expectation is ``x``.
    Rate 1.0 returns zeros. Works for any ``x.ndim >= 1`` and keeps ``x``'s dtype.
    """
    check_draw_mode(mode)
    _check_rate(drop_prob)
    if _is_off(drop_prob, training):
        return x
    return x * _keep_scale(x, drop_prob, scale_by_keep, mode)


def drop_path_add(
    shortcut: Tensor,
    branch: Tensor,
    drop_prob: float | Tensor = 0.0,
    training: bool = False,
    *,
    scale_by_keep: bool = True,
    mode: str = "row",
) -> Tensor:
    """``shortcut + drop_path(branch, ...)`` as one ``torch.addcmul``, for the same random draw.

    The two-step form reads and writes the branch twice (the mask multiply, then the add); the fused
    one touches each tensor once, forward and backward.
    """
    check_draw_mode(mode)
    _check_rate(drop_prob)
    if _is_off(drop_prob, training):
        return shortcut + branch
    return torch.addcmul(shortcut, branch, _keep_scale(branch, drop_prob, scale_by_keep, mode))


def drop_path_skip_add(
    shortcut: Tensor,
    x: Tensor,
    branch_fn: Callable[[Tensor], Tensor],
    drop_prob: float | Tensor = 0.0,
    training: bool = False,
    *,
    scale_by_keep: bool = True,
    mode: str = "row",
    skip_draw: str = "auto",
) -> Tensor:
    """``shortcut + drop_path(branch_fn(x), ...)``, running ``branch_fn`` on the kept samples only.

    The same expectation and eval behaviour as the mask forms; dropped samples cost no branch compute,
    forward or backward. Layers inside ``branch_fn`` see a smaller batch: BatchNorm normalises with,
    and updates its running statistics from, the kept samples only.

    Args:
        skip_draw: how the kept samples are chosen.
            ``"bernoulli"``: each sample independently, the same draw as :func:`drop_path` (for one
            seed the same samples and the same result). The kept count is read back to the host
            (``nonzero``): one device sync per call on a GPU, and a graph break under torch.compile.
            ``"fixed"``: exactly ``k = max(1, round(B * (1 - p)))`` samples, uniformly without
            replacement, scaled by ``B / k`` (DINOv2's draw): every sample's expectation is the same,
            there is no sync, and one rate compiles to one graph. Row mode only; rate 1 keeps no sample.
            ``k`` is a shape: under torch.compile every kept count is a graph of its own, so a
            rate that moves compiles again (a model's blocks round their time factor for this
            count, which bounds the graphs: :class:`zoo.layers.DropPathBlock`).
            ``"auto"`` (default): ``"fixed"`` on a GPU and under torch.compile, ``"bernoulli"`` on
            the CPU and in batch mode.
    """
    check_draw_mode(mode)
    if _is_off(drop_prob, training):
        return shortcut + branch_fn(x)
    _check_rate(drop_prob)
    _check_input(x)
    host_rate = check_drop_prob(drop_prob)  # a tensor rate is read back: the count and scale live on the host
    check_skip_draw(skip_draw, mode)
    if resolve_draw(skip_draw, mode, x.device) == "fixed":
        return _fixed_skip_add(shortcut, x, branch_fn, _keep_units(host_rate), scale_by_keep)
    return _bernoulli_skip_add(shortcut, x, branch_fn, drop_prob, host_rate, scale_by_keep, mode)


def resolve_draw(draw: str, mode: str, device: torch.device) -> str:
    """The draw ``"auto"`` stands for here: fixed where a sync or a data-dependent shape hurts."""
    if draw != "auto":
        return draw
    if mode == "row" and (device.type != "cpu" or torch.compiler.is_compiling()):
        return "fixed"
    return "bernoulli"


def _keep_units(rate: float) -> int:
    return round((1 - rate) * KEEP_UNITS)


def _fixed_skip_add(
    shortcut: Tensor, x: Tensor, branch_fn: Callable[[Tensor], Tensor], keep_units: int, scale_by_keep: bool
) -> Tensor:
    # The count and the scale come from a Python number, so neither reads the device.
    b = x.shape[0]
    k = 0 if keep_units == 0 else max(1, round(b * keep_units / KEEP_UNITS))
    if k == 0:
        return shortcut
    if k == b:
        return shortcut + branch_fn(x)
    idx = torch.randperm(b, device=x.device)[:k]
    return _scatter_branch(shortcut, x, branch_fn, idx, b / k if scale_by_keep else 1.0)


def _bernoulli_skip_add(
    shortcut: Tensor,
    x: Tensor,
    branch_fn: Callable[[Tensor], Tensor],
    rate: float | Tensor,
    host_rate: float,
    scale_by_keep: bool,
    mode: str,
) -> Tensor:
    # ``rate`` draws (a DropPath's buffer, as the mask forms draw); ``host_rate`` is the same rate as
    # a Python number, for the scale.
    idx = keep_mask(x, rate, mode).nonzero().squeeze(1)  # the host sync of this draw
    if idx.numel() == 0:
        return shortcut
    return _scatter_branch(shortcut, x, branch_fn, idx, _inv_keep(host_rate) if scale_by_keep else 1.0)


def _scatter_branch(
    shortcut: Tensor, x: Tensor, branch_fn: Callable[[Tensor], Tensor], idx: Tensor, scale: float
) -> Tensor:
    """``shortcut`` plus ``scale`` times the branch of the rows ``idx``, added into those rows."""
    branch = branch_fn(_rows(x, idx))
    out = shortcut.to(torch.promote_types(shortcut.dtype, branch.dtype), copy=True)  # keeps its memory format
    return out.index_add_(0, idx, branch.to(out.dtype), alpha=scale)


def _rows(x: Tensor, idx: Tensor) -> Tensor:
    """``x[idx]`` along dim 0 in ``x``'s memory format. ``index_select`` returns a contiguous tensor,
    so a channels_last map is gathered as the rows of its NHWC view and permuted back."""
    if x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(0, 2, 3, 1).index_select(0, idx).permute(0, 3, 1, 2)
    return x.index_select(0, idx)


class DropPath(nn.Module):
    """Drop paths (stochastic depth) per sample; a drop-in for ``timm.layers.DropPath``.

    The rate lives in a (non-persistent) buffer and ``forward`` reads only that tensor and a bool,
    so setting ``m.drop_prob`` on a live module (a training-time schedule does it) does not make
    torch.compile recompile ``forward`` or :meth:`add`; only switching between zero and non-zero
    does. :meth:`skip_add`'s fixed draw is the exception: its kept count is a shape, so each count
    is a graph (see :attr:`count_drop_prob`). Like every buffer, the
    rate follows ``model.to(dtype)``: a bf16 model draws against 0.1 rounded to bf16 (0.1001).

    Args:
        drop_prob: the rate p in [0, 1].
        scale_by_keep: divide kept samples by ``1 - p`` (timm's default).
        mode: "row" (one draw per sample) or "batch" (one draw for the whole batch).
        skip_draw: the draw of :meth:`skip_add` (see :func:`drop_path_skip_add`).
    """

    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True, mode: str = "row", skip_draw: str = "auto"):
        super().__init__()
        self.scale_by_keep = scale_by_keep
        self.mode = check_draw_mode(mode)
        self.skip_draw = check_skip_draw(skip_draw, mode)
        self.register_buffer("rate", torch.zeros(()), persistent=False)
        # 1 / (1 - rate), set with the rate from the same float64 quotient a float rate's functional
        # form multiplies by, so module and function scale kept samples by the same float32 number
        self.register_buffer("inv_keep", torch.ones(()), persistent=False)
        self.drop_prob = drop_prob

    @property
    def drop_prob(self) -> float:
        return self._drop_prob

    @drop_prob.setter
    def drop_prob(self, value: float) -> None:
        value = check_drop_prob(value)
        self._drop_prob = value
        self.count_drop_prob = value
        self.active = value > 0.0
        self._fill_buffers()

    def _fill_buffers(self) -> None:
        if self.rate.device.type != "meta":
            with torch.no_grad():
                self.rate.fill_(self._drop_prob)
                self.inv_keep.fill_(_inv_keep(self._drop_prob))

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> DropPath:
        # The buffers are the float's copies, and no state_dict restores them: after to_empty() (a model
        # built on the meta device) they would hold garbage, so every move or cast refills them.
        super()._apply(fn, recurse)
        self._fill_buffers()
        return self

    @property
    def count_drop_prob(self) -> float:
        """The rate :meth:`skip_add`'s fixed draw keeps its count for: ``drop_prob``, unless a block
        rounds it (:meth:`zoo.layers.DropPathBlock.set_drop_path_factor`) to bound the graphs
        torch.compile makes."""
        return 1 - self.keep_units / KEEP_UNITS

    @count_drop_prob.setter
    def count_drop_prob(self, value: float) -> None:
        self.keep_units = _keep_units(check_drop_prob(value, "count_drop_prob"))

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and self.active):
            return x
        return x * _keep_scale(x, self.rate, self.scale_by_keep, self.mode, self.inv_keep)

    def add(self, shortcut: Tensor, branch: Tensor) -> Tensor:
        """``shortcut + self(branch)``, fused as in :func:`drop_path_add`."""
        if not (self.training and self.active):
            return shortcut + branch
        return torch.addcmul(
            shortcut, branch, _keep_scale(branch, self.rate, self.scale_by_keep, self.mode, self.inv_keep)
        )

    def skip_add(self, shortcut: Tensor, x: Tensor, branch_fn: Callable[[Tensor], Tensor]) -> Tensor:
        """``shortcut + self(branch_fn(x))``, computing the branch for kept samples only (see
        :func:`drop_path_skip_add`). The Bernoulli draw is made against the buffer, as the mask forms
        make it; the fixed draw keeps its count for ``count_drop_prob``."""
        if not (self.training and self.active):
            return shortcut + branch_fn(x)
        _check_input(x)
        if resolve_draw(self.skip_draw, self.mode, x.device) == "fixed":
            return _fixed_skip_add(shortcut, x, branch_fn, self.keep_units, self.scale_by_keep)
        return _bernoulli_skip_add(shortcut, x, branch_fn, self.rate, self._drop_prob, self.scale_by_keep, self.mode)

    def extra_repr(self) -> str:
        """timm's ``drop_prob=0.100``, then the settings that differ from their defaults."""
        others = {"mode": "row", "scale_by_keep": True, "skip_draw": "auto"}
        changed = "".join(f", {k}={getattr(self, k)!r}" for k, default in others.items() if getattr(self, k) != default)
        return f"drop_prob={self.drop_prob:.3f}{changed}"
