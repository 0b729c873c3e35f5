"""DropPath (stochastic depth): the functional form, the module, and the two fast residual forms.

Three ways to apply a drop path to a residual branch, all drawing the same random numbers so that,
for one seed, they keep the same samples and return the same values:

- ``shortcut + drop_path(branch)``: the reference (what timm blocks write);
- ``drop_path_add(shortcut, branch, ...)``: the same sum in one fused pass (``torch.addcmul``), and
  with ``inplace=True`` written into the branch output's memory (what every zoo block does);
- ``drop_path_skip_add(shortcut, x, branch_fn, ...)``: runs ``branch_fn`` on the kept samples only and
  scatters the result back, so dropped samples cost no branch compute.
"""

from __future__ import annotations

import functools
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


def _inv_keep(drop_prob: Tensor) -> Tensor:
    """``1 / (1 - drop_prob)`` in float32 arithmetic: the one formula behind every form's factor, so a
    float rate, a tensor rate and DropPath's buffer scale kept samples by the same float32 number."""
    return 1.0 / (1.0 - drop_prob.float()).clamp_min(_EPS)


def _rate_pair(drop_prob: float) -> tuple[Tensor, Tensor]:
    """A float rate and its inverse keep as 0-dim float32 CPU tensors (CUDA ops accept them)."""
    rate = torch.tensor(drop_prob, dtype=torch.float32)
    return rate, _inv_keep(rate)


# Ops take a 0-dim tensor operand in about a third of the time they take to wrap a Python number (1
# against 2.6 us here), so the functional forms reuse one pair per rate. Never written into.
_rate_tensors = functools.lru_cache(maxsize=64)(_rate_pair)


def _keep_scale(
    x: Tensor, drop_prob: float | Tensor, scale_by_keep: bool, mode: str, inv_keep: float | Tensor | None = None
) -> Tensor:
    """Per-sample factor in x's dtype, shaped (B, 1, ..., 1): 0 for dropped, 1/keep_prob for kept.

    The draw and the comparison are keep_mask's, done in place on the float draw (``ge_`` writes 1.0
    or 0.0), which saves a few small kernels per call: at batch 128 the factor's own ops, not the
    residual's memory passes, were a third of the fused form's fixed cost. ``inv_keep``, when given,
    is ``_inv_keep(drop_prob)`` computed ahead (DropPath keeps it in a buffer)."""
    ones = (1,) * (x.ndim - 1)
    if not isinstance(drop_prob, Tensor):  # compiled code makes the pair in its graph instead
        drop_prob, inv_keep = (_rate_pair if torch.compiler.is_compiling() else _rate_tensors)(float(drop_prob))
    scale = torch.rand((x.shape[0] if mode == "row" else 1,) + ones, device=x.device, dtype=torch.float32)
    scale.ge_(drop_prob)
    if scale_by_keep:
        scale.mul_(_inv_keep(drop_prob) if inv_keep is None else inv_keep)
    if mode != "row":
        scale = scale.expand((x.shape[0],) + ones)
    return scale if x.dtype == torch.float32 else scale.to(x.dtype)


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
    inplace: bool = False,
) -> Tensor:
    """``shortcut + drop_path(branch, ...)`` in one pass, for the same random draw.

    The reference form reads and writes the branch twice (a mask multiply, then the add); a fused
    ``addcmul`` touches each element once, forward and backward.

    ``inplace=True`` writes the sum into ``branch``'s memory and returns it, which saves allocating
    (and, on CPU, page-faulting in) a new tensor and one write pass. Pass it only for a branch output
    nothing else reads, as a block's own branch is; it is ignored (an out-of-place sum is returned)
    where overwriting would be unsafe or impossible: see :func:`can_overwrite`.
    """
    check_draw_mode(mode)
    if _is_off(drop_prob, training):
        return residual_add(shortcut, branch, inplace)
    return _scaled_add(shortcut, branch, _keep_scale(branch, drop_prob, scale_by_keep, mode), inplace)


def residual_add(shortcut: Tensor, branch: Tensor, inplace: bool = False) -> Tensor:
    """``shortcut + branch``; with ``inplace`` (and :func:`can_overwrite`) written into ``branch``."""
    if inplace and can_overwrite(branch, shortcut):
        return branch.add_(shortcut)
    return shortcut + branch


def _scaled_add(shortcut: Tensor, branch: Tensor, scale: Tensor, inplace: bool) -> Tensor:
    if inplace and can_overwrite(branch, shortcut):
        return _AddScaledInto.apply(shortcut, branch, scale)
    return torch.addcmul(shortcut, branch, scale)


class _AddScaledInto(torch.autograd.Function):
    """``branch <- shortcut + scale * branch`` in ``branch``'s memory (``addcmul`` with ``out=branch``).

    Autograd's own ``addcmul`` has no in-place form with this shape of arguments, and ``mul_`` then
    ``add_`` would be two passes. Backward needs only ``scale``: the shortcut's gradient passes
    through, the branch's is ``scale * grad``.
    """

    @staticmethod
    def forward(ctx, shortcut: Tensor, branch: Tensor, scale: Tensor) -> Tensor:
        ctx.save_for_backward(scale)
        ctx.mark_dirty(branch)
        return torch.addcmul(shortcut, branch, scale, out=branch)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        (scale,) = ctx.saved_tensors
        grad_shortcut = grad if ctx.needs_input_grad[0] else None
        grad_branch = grad * scale if ctx.needs_input_grad[1] else None
        return grad_shortcut, grad_branch, None


_SAVES_OUTPUT: dict[tuple[type, int], bool] = {}  # (autograd node type, output number) -> saves it


def _saves_output(node: object, output_nr: int) -> bool:
    """Whether autograd ``node`` keeps its output ``output_nr`` for backward (ReLU, sigmoid, exp,
    softmax do): overwriting that output would make backward raise. A custom Function may save
    anything, so it counts as saving."""
    key = (type(node), output_nr)
    if key not in _SAVES_OUTPUT:
        names = set(dir(node))
        saved = {f"_saved_result{output_nr}"} | ({"_saved_result"} if output_nr == 0 else set())
        _SAVES_OUTPUT[key] = isinstance(node, torch.autograd.function.BackwardCFunction) or bool(names & saved)
    return _SAVES_OUTPUT[key]


def can_overwrite(branch: Tensor, shortcut: Tensor) -> bool:
    """Whether ``shortcut + branch`` may be written into ``branch``'s memory.

    It may when ``branch`` is a plain dense tensor of the result's shape and dtype, not a view, not a
    leaf that requires grad, not sharing memory with ``shortcut``, and not kept by the op that made it
    for its own backward (ReLU's output is; a conv's, a norm's or a Linear's is not, though a Linear
    with a bias on 3-D or larger input returns a view). Under torch.compile the answer is no: the
    compiler fuses the add itself.
    What this cannot see is a caller who reads ``branch`` afterwards; that is what ``inplace=True``
    promises does not happen.
    """
    if type(branch) is not Tensor or type(shortcut) is not Tensor or torch.compiler.is_compiling():
        return False  # subclasses (FakeTensor, DTensor, ...) and traced code keep the plain form
    if branch.shape != shortcut.shape or branch.dtype != shortcut.dtype or branch.device != shortcut.device:
        return False
    if branch._is_view() or not (branch.is_contiguous() or branch.is_contiguous(memory_format=torch.channels_last)):
        return False
    if branch.untyped_storage().data_ptr() == shortcut.untyped_storage().data_ptr():
        return False
    if branch.requires_grad and (branch.grad_fn is None or _saves_output(branch.grad_fn, branch.output_nr)):
        return False
    return True


_NHWC = (0, 2, 3, 1)


def _batch_first(x: Tensor) -> tuple[Tensor, tuple[int, ...] | None]:
    """``x`` made contiguous in its per-sample memory order, batch first, and the permutation that
    got it there: NHWC for a channels_last 4-D tensor, else None (no permute: a no-op copy for the
    usual layouts, and any other layout is copied to contiguous)."""
    if x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(_NHWC), _NHWC
    return x.contiguous(), None


def _in_order(rows: Tensor, order: tuple[int, ...] | None) -> Tensor:
    """``rows`` contiguous in the per-sample order ``_batch_first`` gave another tensor."""
    return (rows if order is None else rows.permute(order)).contiguous()


def _undo(rows: Tensor, order: tuple[int, ...] | None) -> Tensor:
    return rows if order is None else rows.permute(tuple(order.index(d) for d in range(rows.ndim)))


# ATen's index_select on dim 0 copies rows shorter than its grain size (32768 elements) in one parallel
# loop; a longer row gets a parallel region of its own, and on a loaded 2-core machine each region can
# wait a scheduler tick (a (128, 64, 32, 32) gather took 750 ms instead of 2). Measured on the CIFAR
# ResNet shapes (fp32, 2 cores, about 94 of 128 rows, caches flushed first, median ms):
#   rows of   16384: dim 0 0.45, (1, B, N) view 0.55, embedding_bag 0.59
#              8192: 0.25, 0.31, 0.32;    4096: 0.12, 0.16, 0.32
# and scaled (x[idx] * alpha): dim 0 then mul_ 0.68 / 0.41 / 0.24 against embedding_bag's per-sample
# weights 0.83 / 0.49 / 0.31.
_GRAIN = 32768


def _take_rows(x: Tensor, idx: Tensor, alpha: float | None = None) -> Tensor:
    """``x[idx]`` along dim 0 (times ``alpha`` if given), keeping ``x``'s memory format.

    ``index_select(0, ...)`` for rows under ATen's grain size, one parallel loop over the rows; longer
    rows go through ``index_select`` on dim 1 of a (1, B, N) view, one serial memcpy loop, because
    dim 0 would start a parallel region per row (see ``_GRAIN``).
    """
    xp, order = _batch_first(x)
    flat, k = xp.view(x.shape[0], -1), idx.numel()
    if flat.shape[1] < _GRAIN:
        rows = flat.index_select(0, idx)
    else:
        rows = flat.unsqueeze(0).index_select(1, idx).squeeze(0)
    if alpha is not None:
        rows = rows.mul_(alpha)
    return _undo(rows.view((k,) + xp.shape[1:]), order)


_ADD_CHUNK = 16384  # elements per row add in _add_rows_: under _GRAIN, so one serial loop


def _add_rows_(out: Tensor, idx: Tensor, src: Tensor, alpha: float) -> Tensor:
    """``out[idx] += alpha * src`` along dim 0, in place; both batch-first contiguous.

    ``index_add_`` adds row by row, and a row over ATen's grain size starts a parallel region of its
    own (see :func:`_take_rows`); long rows are cut into equal parts under that size first.
    """
    if alpha == 1.0 and out.device.type == "cpu":
        # scatter_add_ runs in parallel over the row (1.5x index_add_'s serial row adds at 16k elements);
        # it has no alpha, hence only for the unscaled add
        flat, rows = out.view(out.shape[0], -1), src.reshape(src.shape[0], -1)
        flat.scatter_add_(0, idx.view(-1, 1).expand(rows.shape), rows)
        return out
    n = math.prod(out.shape[1:])
    parts = next((q for q in range(-(-n // _ADD_CHUNK), -(-n // _ADD_CHUNK) + 8) if n % q == 0), 1)
    if parts > 1:
        idx = (idx.unsqueeze(1) * parts + torch.arange(parts, device=idx.device)).view(-1)
    cut = (-1, n // parts)
    out.view(cut).index_add_(0, idx, src.reshape(cut), alpha=alpha)
    return out


class _GradLink:
    """Carries the shortcut's gradient from an ``_AddRows`` backward to the ``_TakeRows`` backward
    of the same ``x``, which adds the kept rows' gradient into it in place and returns the sum.

    Only where ``_AddRows`` made that gradient itself (the fused ReLU's backward), so nothing else
    holds it; and only where the shortcut is ``x``. That saves the copy that adding sparse rows out
    of place costs. The block's branch must depend on its input, as every branch here does:
    ``_TakeRows`` is the node that hands ``x`` the shortcut's share.
    """

    __slots__ = ("grad",)

    def __init__(self) -> None:
        self.grad: Tensor | None = None


class _TakeRows(torch.autograd.Function):
    """``x[idx]`` for unique sorted ``idx`` (kept samples).

    Backward: ``x``'s gradient is the rows put back, zeros elsewhere. When the caller says the same
    ``x`` also gets a dense gradient (the shortcut: ``sparse_grad``), the rows go back as a sparse
    tensor instead, which autograd adds to that dense gradient in one out-of-place pass (a copy plus
    the kept rows) instead of filling zeros, copying the rows in and adding a whole dense tensor.
    With a ``link`` holding the shortcut's gradient, the rows are added into that one in place.
    """

    @staticmethod
    def forward(ctx, x: Tensor, idx: Tensor, sparse_grad: bool, link: _GradLink | None) -> Tensor:
        ctx.save_for_backward(idx)
        # CPU only: dense + sparse rows is the one sparse op this relies on, and it is tested here
        ctx.shape, ctx.sparse_grad = x.shape, sparse_grad and x.layout == torch.strided and x.device.type == "cpu"
        ctx.link = link
        return _take_rows(x, idx)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:
        (idx,) = ctx.saved_tensors
        if ctx.link is not None and ctx.link.grad is not None:
            full, ctx.link.grad = ctx.link.grad, None
            fp, order = _batch_first(full)
            return _undo(_add_rows_(fp, idx, _in_order(grad, order), 1.0), order), None, None, None
        if ctx.sparse_grad:
            rows = torch.sparse_coo_tensor(
                idx.unsqueeze(0), grad, ctx.shape, is_coalesced=True, check_invariants=False
            )
            return rows, None, None, None
        gp, order = _batch_first(grad)
        full = gp.new_zeros((ctx.shape[0],) + gp.shape[1:])
        return _undo(full.index_copy_(0, idx, gp), order), None, None, None


class _AddRows(torch.autograd.Function):
    """``shortcut`` plus ``alpha * src`` on rows ``idx`` (unique), out of place: a copy of the
    shortcut with the rows added in (two passes plus the kept rows); with ``relu``, ReLU applied in
    place on that copy. Backward: the shortcut's gradient passes through (through the ReLU's mask),
    or goes by ``link`` (see :class:`_GradLink`); ``src`` gets ``alpha * grad[idx]``.
    """

    @staticmethod
    def forward(
        ctx, shortcut: Tensor, idx: Tensor, src: Tensor, alpha: float, relu: bool, link: _GradLink | None
    ) -> Tensor:
        ctx.alpha, ctx.dtypes, ctx.relu, ctx.link = alpha, (shortcut.dtype, src.dtype), relu, link
        dtype = torch.promote_types(shortcut.dtype, src.dtype)  # as addcmul(shortcut, src, scale)
        out, order = _batch_first(shortcut.to(dtype))
        if out.data_ptr() == shortcut.data_ptr():
            out = out.clone()  # ours to write into: the shortcut itself is left alone
        out = _undo(_add_rows_(out, idx, _in_order(src.to(dtype), order), alpha), order)  # shortcut's order
        if relu:
            out.relu_()
            ctx.save_for_backward(idx, out)
        else:
            ctx.save_for_backward(idx)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, None, Tensor, None, None, None]:
        idx = ctx.saved_tensors[0]
        shortcut_dtype, src_dtype = ctx.dtypes
        if ctx.relu:
            grad = torch.ops.aten.threshold_backward(grad, ctx.saved_tensors[1], 0)  # a new tensor: ours
        grad_src = _take_rows(grad, idx, ctx.alpha).to(src_dtype)
        if ctx.link is not None and grad.dtype == shortcut_dtype:  # a link comes only with relu
            ctx.link.grad = grad
            return None, None, grad_src, None, None, None
        return grad.to(shortcut_dtype), None, grad_src, None, None, None


def _host_inv_keep(drop_prob: float | Tensor, scale_by_keep: bool, dtype: torch.dtype) -> float:
    """The kept samples' factor as a Python number, rounded as the mask forms round it (float32,
    then ``dtype``). A float rate needs no device sync; a tensor one is read back."""
    if not scale_by_keep:
        return 1.0
    if isinstance(drop_prob, Tensor):
        drop_prob = drop_prob.item()  # a float32 value, exactly
    scale_of = _host_scale.__wrapped__ if torch.compiler.is_compiling() else _host_scale
    return scale_of(float(drop_prob), dtype)


@functools.lru_cache(maxsize=256)
def _host_scale(drop_prob: float, dtype: torch.dtype) -> float:
    # once per rate and dtype: working it out took about 20 us a call, and skip mode asks every block
    return _rate_pair(drop_prob)[1].to(dtype).item()


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

    Same draw, same expectation and same eval behaviour as the mask forms; dropped samples cost no
    branch compute, forward or backward. What differs, and why a block must opt in:

    - Layers inside ``branch_fn`` see a smaller batch. BatchNorm normalises with, and updates its
      running mean and variance from, the kept samples only (an unbiased estimate of the same
      statistics, from fewer samples). In "batch" mode a dropped branch is not run at all, so its
      BatchNorm running stats are not updated in that step.
    - The kept count is data dependent: ``nonzero`` has an output shape known only after the draw,
      so under torch.compile this form breaks the graph (``fullgraph=True`` raises); the mask forms
      compile to one graph.
    - Device sync. The kept indices are read back to the host (``nonzero``), so on CUDA each block
      syncs once per step and the host cannot
      queue kernels ahead. That is the price of a smaller batch: it pays where the branch is large
      enough to hide the stall (wide convolutions, MLPs at batch 128+), and costs where the GPU is
      launch bound (small models, CUDA graphs), where mask mode is the better choice. A sync-free
      variant would need a kept count fixed in advance (DINOv2 keeps exactly ``int(B * (1 - p))``),
      which is a different draw, so it is not offered here. The scale factor is computed on the host
      when ``drop_prob`` is a float (a tensor rate is read back once).
    - Where every sample is dropped the result is ``shortcut`` itself, not a copy.
    """
    check_draw_mode(mode)
    if _is_off(drop_prob, training):
        return shortcut + branch_fn(x)
    scale = functools.partial(_host_inv_keep, drop_prob, scale_by_keep)
    return _skip_add(shortcut, x, branch_fn, drop_prob, scale, mode)


def _skip_add(
    shortcut: Tensor,
    x: Tensor,
    branch_fn: Callable[[Tensor], Tensor],
    drop_prob: float | Tensor,
    host_scale: Callable[[torch.dtype], float],
    mode: str,
    relu: bool = False,
) -> Tensor:
    # drop_prob draws (the same comparison as the mask forms); host_scale(dtype) is the kept samples'
    # factor as a Python number, rounded to the branch output's dtype as _keep_scale rounds it.
    # relu: return relu(...) of the sum, fused where the sum is a tensor of our own.
    idx = keep_mask(x, drop_prob, mode).nonzero().squeeze(1)  # "batch": every sample or none
    if idx.numel() == 0:
        return torch.relu(shortcut) if relu else shortcut
    if idx.numel() == x.shape[0]:  # nothing dropped: no gather or scatter
        branch = branch_fn(x)
        out = torch.add(shortcut, branch, alpha=host_scale(branch.dtype))
        return out.relu_() if relu else out
    # x's gradient may go back as sparse rows only where a dense one (the identity shortcut's) meets it
    identity = shortcut is x and x.requires_grad
    link = _GradLink() if identity and relu else None
    branch = branch_fn(_TakeRows.apply(x, idx, identity, link))
    return _AddRows.apply(shortcut, idx, branch, host_scale(branch.dtype), relu, link)


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
        # 1 / (1 - rate), set with the rate rather than worked out in three small kernels per call
        self.register_buffer("inv_keep", torch.ones((), dtype=torch.float32), persistent=False)
        self.drop_prob = drop_prob

    @property
    def drop_prob(self) -> float:
        return self._drop_prob

    @drop_prob.setter
    def drop_prob(self, value: float) -> None:
        value = check_drop_prob(value)
        self._drop_prob = value
        self.active = value > 0.0
        # a schedule sets the rate every step: one fill per buffer, from the host pair of this rate
        rate, inv_keep = _rate_tensors(value)
        with torch.no_grad():
            self.rate.fill_(rate)
            self.inv_keep.fill_(inv_keep)

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and self.active):
            return x
        return x * _keep_scale(x, self.rate, self.scale_by_keep, self.mode, self.inv_keep)

    def add(self, shortcut: Tensor, branch: Tensor, inplace: bool = False) -> Tensor:
        """``shortcut + self(branch)``, fused; ``inplace`` as in :func:`drop_path_add`."""
        if not (self.training and self.active):
            return residual_add(shortcut, branch, inplace)
        scale = _keep_scale(branch, self.rate, self.scale_by_keep, self.mode, self.inv_keep)
        return _scaled_add(shortcut, branch, scale, inplace)

    def skip_add(
        self, shortcut: Tensor, x: Tensor, branch_fn: Callable[[Tensor], Tensor], relu: bool = False
    ) -> Tensor:
        """``shortcut + self(branch_fn(x))``, computing the branch for kept samples only; with
        ``relu``, ``relu`` of that sum, fused into the scatter (``branch_fn`` must depend on its
        input, see :class:`_GradLink`)."""
        if not (self.training and self.active):
            out = shortcut + branch_fn(x)
            return out.relu_() if relu else out
        # draw against the buffer (as the mask forms do); scale from the host value of the rate (no sync)
        scale = functools.partial(_host_inv_keep, self._drop_prob, self.scale_by_keep)
        return _skip_add(shortcut, x, branch_fn, self.rate, scale, self.mode, relu)

    def _apply(self, fn, recurse=True):
        # model.half() / .to(bfloat16) would round the rate (0.1 -> 0.1001 in bf16): keep it float32.
        super()._apply(fn, recurse)
        if self.rate.dtype != torch.float32:
            rate, inv_keep = _rate_tensors(self._drop_prob)  # copies: the cached pair is never written
            self.rate = rate.to(self.rate.device, copy=True)
            self.inv_keep = inv_keep.to(self.rate.device, copy=True)
        return self

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}, mode={self.mode!r}, scale_by_keep={self.scale_by_keep}"
