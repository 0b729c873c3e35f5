"""The residual drop path forms: fused ``drop_path_add`` and compute-skipping ``skip`` (both draws).

Every form must return what the reference ``shortcut + drop_path(branch(x))`` returns: for the same
seed and the same kept samples (mask, fused, skip with the Bernoulli draw), or in expectation (skip
with the fixed draw). Tests that can run on CUDA do, when it is present (the ``device`` fixture).
"""

import math

import pytest
import torch
from torch import Tensor, nn

from zoo.layers import DropPath, DropPathArgs, DropPathBlock, drop_path, drop_path_add, drop_path_skip_add, resolve_skip
from zoo.layers.drop import resolve_draw
from zoo.layers.residual import AUTO_SKIP_MIN_RATE

FORMS = ("reference", "fused", "skip")  # skip: the Bernoulli draw, the same samples as the mask
DRAWS = ("row", "batch")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tensors here are tiny: a second intra-op thread only adds wake-ups, which on a loaded
    2-core machine cost tens of ms per op."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def conv_branch() -> nn.Module:
    return nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 1))


def mlp_branch() -> nn.Module:
    return nn.Sequential(nn.LayerNorm(6), nn.Linear(6, 12), nn.GELU(), nn.Linear(12, 6))


BRANCHES = {"conv": (conv_branch, (16, 4, 5, 5)), "mlp": (mlp_branch, (16, 7, 6))}


def residual(form: str, shortcut: Tensor, x: Tensor, branch, dp: DropPath) -> Tensor:
    if form == "reference":
        return shortcut + dp(branch(x))
    if form == "fused":
        return dp.add(shortcut, branch(x))
    return dp.skip_add(shortcut, x, branch)


def run_form(form: str, make, shape, p: float, mode: str, seed: int, device: str, draw: str = "bernoulli"):
    """Output and gradients (input, branch params) of one form for one seed."""
    torch.manual_seed(0)
    branch = make().to(device)
    x = torch.randn(shape, device=device).requires_grad_()
    dp = DropPath(p, mode=mode, skip_draw=draw).train().to(device)
    torch.manual_seed(seed)
    out = residual(form, 2 * x, x, branch, dp)
    (out * torch.linspace(-1, 1, out.numel(), device=device).view(out.shape)).sum().backward()
    # a branch skip mode did not run at all has no gradients (None), where the reference has zeros
    grads = [torch.zeros_like(q) if q.grad is None else q.grad for q in branch.parameters()]
    return out.detach(), x.grad, grads


@pytest.mark.parametrize("branch", BRANCHES)
@pytest.mark.parametrize("mode", DRAWS)
@pytest.mark.parametrize("p", [0.3, 0.7])
def test_forms_agree_with_reference_for_same_seed(branch, mode, p, device, exact_fp32):
    make, shape = BRANCHES[branch]
    kept_counts = set()
    for seed in range(6):
        ref_out, ref_gx, ref_gp = run_form("reference", make, shape, p, mode, seed, device)
        for form in FORMS[1:]:
            out, gx, gp = run_form(form, make, shape, p, mode, seed, device)
            torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(gx, ref_gx, rtol=1e-5, atol=1e-5)
            for a, b in zip(gp, ref_gp):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        torch.manual_seed(seed)  # the same draw again, to see what the seeds exercised
        kept_counts.add(int(DropPath(p, mode=mode).train().to(device)(torch.ones(shape[0], device=device)).ne(0).sum()))
    if mode == "row":
        assert any(0 < k < shape[0] for k in kept_counts), kept_counts
    else:
        assert kept_counts == {0, shape[0]}, "the seeds must drop the batch in one step, keep it in another"


def test_functional_forms_agree_with_float_rate():
    torch.manual_seed(0)
    branch = conv_branch()
    x = torch.randn(12, 4, 5, 5)
    for mode in DRAWS:
        outs = []
        for form in FORMS:
            torch.manual_seed(7)
            if form == "reference":
                outs.append(x + drop_path(branch(x), 0.4, training=True, mode=mode))
            elif form == "fused":
                outs.append(drop_path_add(x, branch(x), 0.4, training=True, mode=mode))
            else:
                outs.append(drop_path_skip_add(x, x, branch, 0.4, training=True, mode=mode, skip_draw="bernoulli"))
        for out in outs[1:]:
            torch.testing.assert_close(out, outs[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mode", DRAWS)
def test_float_rate_draws_and_scales_as_the_module_buffer(mode, dtype):
    """A float rate and DropPath's buffer rate give the same draw and the same factor, bit for bit.
    0.0012 and 0.15 are rates whose inverse keep rounds differently in float64 and float32 arithmetic."""
    x = torch.rand(64, 3, 4, dtype=dtype) + 1.0  # no zeros: a zero output row means dropped
    dp = DropPath(0.3, mode=mode).train()
    dropped_counts = set()
    for p in (0.3, 0.7, 0.0012, 0.15):
        dp.drop_prob = p
        for seed in range(4):
            torch.manual_seed(seed)
            functional = drop_path(x, p, training=True, mode=mode)
            torch.manual_seed(seed)
            assert torch.equal(functional, dp(x))
            dropped_counts.add(int((functional == 0).flatten(1).all(1).sum()))
    assert dropped_counts == {0, 64} if mode == "batch" else len(dropped_counts) > 2


# --------------------------------------------------------------------------- expectations


@pytest.mark.parametrize("form", ["fused", "bernoulli", "fixed"])
def test_expectation_over_draws_is_shortcut_plus_branch(form, device):
    """Each sample's mean over many draws is shortcut + branch (a 4-sigma band)."""
    torch.manual_seed(0)
    p, b, calls = 0.3, 16, 3000
    x, s = torch.randn(b, 3, device=device), torch.randn(b, 3, device=device)
    dp = DropPath(p, skip_draw="fixed" if form == "fixed" else "bernoulli").train().to(device)
    total = torch.zeros_like(x)
    for _ in range(calls):
        total += dp.add(s, x) if form == "fused" else dp.skip_add(s, x, lambda t: t)
    # kept with probability q = 1 - p (fixed: k / b), scaled by 1 / q: per-sample variance (1 - q) / q
    q = 1 - p if form != "fixed" else round(b * (1 - p)) / b
    sigma = math.sqrt((1 - q) / q / calls) * x.abs()
    assert ((total / calls - (s + x)).abs() <= 4 * sigma + 1e-5).all()


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.9, 0.99])
def test_fixed_draw_keeps_exactly_k_samples_scaled_by_b_over_k(p, device):
    b = 20
    k = max(1, round(b * (1 - p)))
    seen = []
    x = torch.rand(b, 3, device=device) + 1.0
    dp = DropPath(p, skip_draw="fixed").train().to(device)
    for seed in range(5):
        torch.manual_seed(seed)
        out = dp.skip_add(torch.zeros_like(x), x, lambda t: seen.append(t.shape[0]) or t)
        kept = out.ne(0).all(1)
        assert int(kept.sum()) == k and (out[~kept] == 0).all()
        torch.testing.assert_close(out[kept], x[kept] * (b / k))
    assert seen == [k] * 5 if k < b else seen == [b] * 5  # k == b: no gather, the whole batch runs


@pytest.mark.parametrize("branch", BRANCHES)
def test_fixed_draw_gradients_match_a_mask_built_from_the_same_kept_samples(branch, device):
    """Skip mode's fixed draw (the default on a GPU and under compile) against an independent reference:
    ``shortcut + branch(x) * m`` with m = b / k on the samples the draw kept (read off the rows its
    branch was given) and 0 elsewhere. Output, input gradient and parameter gradients agree."""
    make, shape = BRANCHES[branch]
    b, p = shape[0], 0.3
    k = round(b * (1 - p))
    for seed in range(3):
        torch.manual_seed(0)
        net = make().to(device)
        x = torch.randn(shape, device=device).requires_grad_()
        weights = torch.linspace(-1, 1, x.numel(), device=device).view(shape)
        given = []

        def recorded(t: Tensor) -> Tensor:
            given.append(t.detach())
            return net(t)

        torch.manual_seed(seed)
        out = DropPath(p, skip_draw="fixed").train().skip_add(2 * x, x, recorded)
        (out * weights).sum().backward()
        grads = [q.grad.clone() for q in net.parameters()]
        (rows,) = given
        idx = (rows.flatten(1)[:, None] == x.detach().flatten(1)[None]).all(-1).nonzero()[:, 1]
        assert len(idx) == k == len(set(idx.tolist())), "each kept row is one distinct sample of x"

        x_ref = x.detach().clone().requires_grad_()
        net.zero_grad(set_to_none=True)
        mask = torch.zeros(b, device=device).index_fill_(0, idx, b / k).view(-1, *[1] * (x.ndim - 1))
        ref = 2 * x_ref + net(x_ref) * mask
        (ref * weights).sum().backward()
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-5)
        for got, want in zip(grads, (q.grad for q in net.parameters())):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("draw", ["fused", "bernoulli", "fixed"])
def test_scale_by_keep_false_leaves_kept_branches_unscaled(draw):
    """Without the 1 / keep scale, a kept sample is shortcut + branch and a dropped one the shortcut,
    in the fused and skip forms as in the mask; for one seed the fused and Bernoulli forms keep the
    mask's samples; functional form and module agree."""
    x, s = torch.rand(64, 3) + 1.0, torch.randn(64, 3)
    for seed in range(3):
        torch.manual_seed(seed)
        mask = s + drop_path(x, 0.4, training=True, scale_by_keep=False)
        dp = DropPath(0.4, scale_by_keep=False, skip_draw="bernoulli" if draw == "fused" else draw).train()
        outs = []
        for call in ("function", "module"):
            torch.manual_seed(seed)
            if draw == "fused":
                outs.append(
                    drop_path_add(s, x, 0.4, training=True, scale_by_keep=False) if call == "function" else dp.add(s, x)
                )
            else:
                outs.append(
                    drop_path_skip_add(s, x, lambda t: t, 0.4, training=True, scale_by_keep=False, skip_draw=draw)
                    if call == "function"
                    else dp.skip_add(s, x, lambda t: t)
                )
        assert torch.equal(outs[0], outs[1])
        kept = outs[0].ne(s).any(1)
        assert 0 < kept.sum() < 64
        torch.testing.assert_close(outs[0][kept], s[kept] + x[kept], rtol=0, atol=1e-6)
        assert torch.equal(outs[0][~kept], s[~kept])
        if draw == "fixed":
            assert kept.sum() == round(64 * 0.6)
        else:
            torch.testing.assert_close(outs[0], mask, rtol=0, atol=1e-6)


def test_fixed_draw_at_rate_one_keeps_nothing_and_bernoulli_batch_only():
    x = torch.randn(8, 3)
    assert torch.equal(drop_path_skip_add(x, x, lambda t: t * 5, 1.0, training=True, skip_draw="fixed"), x)
    with pytest.raises(ValueError, match="batch"):
        drop_path_skip_add(x, x, lambda t: t, 0.5, training=True, mode="batch", skip_draw="fixed")
    with pytest.raises(ValueError, match="batch"):
        DropPath(0.5, mode="batch", skip_draw="fixed")
    with pytest.raises(ValueError, match="drop_path_skip_draw must be one of auto, bernoulli, fixed, got 'exact'"):
        DropPath(0.5, skip_draw="exact")


def test_auto_draw_is_fixed_on_a_gpu_and_under_compile_bernoulli_on_the_cpu(monkeypatch, fresh_dynamo):
    assert resolve_draw("auto", "row", torch.device("cpu")) == "bernoulli"
    assert resolve_draw("auto", "row", torch.device("cuda", 0)) == "fixed"
    assert resolve_draw("auto", "batch", torch.device("cuda", 0)) == "bernoulli"
    assert resolve_draw("bernoulli", "row", torch.device("cuda", 0)) == "bernoulli"
    seen = []

    def spy(draw, mode, device):
        seen.append(resolve_draw(draw, mode, device))
        return seen[-1]

    class Skip(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return drop_path_skip_add(x, x, torch.sin, 0.3, training=True)

    from zoo.layers import drop

    monkeypatch.setattr(drop, "resolve_draw", spy)
    torch.compile(Skip(), backend="eager", fullgraph=True)(torch.randn(8, 3))
    assert seen == ["fixed"]


@pytest.mark.parametrize("form", FORMS)
def test_eval_and_rate_zero_are_plain_residual(form):
    torch.manual_seed(0)
    branch = conv_branch()
    x = torch.randn(6, 4, 5, 5)
    with torch.no_grad():
        expected = x + branch(x)
        for dp in (DropPath(0.5).eval(), DropPath(0.0).train()):
            torch.testing.assert_close(residual(form, x, x, branch, dp), expected)
        assert torch.equal(drop_path_add(x, branch(x), 0.5, training=False), expected)
        assert torch.equal(drop_path_skip_add(x, x, branch, 0.0, training=True), expected)


@pytest.mark.parametrize("mode", DRAWS)
def test_rate_one_gives_the_shortcut_and_skips_the_branch(mode):
    x = torch.randn(8, 3)
    calls = []

    def branch(t: Tensor) -> Tensor:
        calls.append(t.shape[0])
        return t * 5

    dp = DropPath(1.0, mode=mode).train()
    assert torch.equal(dp.add(x, branch(x)), x)
    assert torch.equal(drop_path_add(x, x * 5, 1.0, training=True, mode=mode), x)
    calls.clear()
    assert torch.equal(dp.skip_add(x, x, branch), x)
    assert calls == [], "skip mode must not run a branch every sample of which is dropped"


# -------------------------------------------------------------------- dtypes and memory formats


@pytest.mark.parametrize("mode", DRAWS)
@pytest.mark.parametrize("form", FORMS[1:])
def test_bf16_matches_reference(mode, form):
    torch.manual_seed(0)
    branch = mlp_branch().to(torch.bfloat16)
    x = torch.randn(16, 7, 6, dtype=torch.bfloat16)
    dp = DropPath(0.4, mode=mode, skip_draw="bernoulli").train()
    with torch.no_grad():
        torch.manual_seed(5)
        ref = residual("reference", x, x, branch, dp)
        torch.manual_seed(5)
        out = residual(form, x, x, branch, dp)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-2)


def test_autocast_mixed_dtypes_promote_as_addcmul():
    """Under autocast a shortcut can be float32 (a LayerNorm's output) and the branch bf16 (a Linear's):
    every form returns the promoted dtype, float32."""
    torch.manual_seed(0)
    s, b = torch.randn(8, 6), torch.randn(8, 6, dtype=torch.bfloat16)
    dp = DropPath(0.5, skip_draw="fixed").train()
    assert dp.add(s, b).dtype == torch.float32
    assert dp.skip_add(s, b, lambda t: t).dtype == torch.float32


@pytest.mark.parametrize("draw", ["bernoulli", "fixed"])
def test_skip_keeps_channels_last(draw, device, exact_fp32):
    """The gathered rows, the sum and the input gradient stay channels_last, as the convolutions want."""
    torch.manual_seed(0)
    seen = []
    conv = conv_branch().to(device, memory_format=torch.channels_last)

    def branch(t: Tensor) -> Tensor:
        seen.append(t.is_contiguous(memory_format=torch.channels_last))
        return conv(t)

    x = torch.randn(16, 4, 5, 5, device=device).to(memory_format=torch.channels_last).requires_grad_()
    dp = DropPath(0.5, skip_draw=draw).train()
    torch.manual_seed(1)
    out = dp.skip_add(x, x, branch)
    (g,) = torch.autograd.grad(out.square().sum(), x)
    assert seen == [True] and out.is_contiguous(memory_format=torch.channels_last)
    if draw == "bernoulli":  # same draw: same values as the reference
        torch.manual_seed(1)
        ref = residual("reference", x, x, conv, dp)
        (g_ref,) = torch.autograd.grad(ref.square().sum(), x)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("branch", BRANCHES)
def test_skip_backward_in_half_precision(branch, dtype):
    make, shape = BRANCHES[branch]
    results = {}
    for form in ("reference", "skip"):
        torch.manual_seed(0)
        net = make().to(dtype)
        x = torch.randn(shape, dtype=dtype, requires_grad=True)
        dp = DropPath(0.5, skip_draw="bernoulli").train()
        torch.manual_seed(3)
        out = residual(form, x, x, net, dp)
        out.float().square().sum().backward()
        assert x.grad.dtype == dtype
        results[form] = (out.detach().float(), x.grad.float())
    torch.testing.assert_close(results["skip"], results["reference"], rtol=3e-2, atol=3e-2)


def test_skip_supports_double_backward():
    """A gradient penalty (create_graph=True) through skip mode matches the reference."""
    results = {}
    for form in ("reference", "skip"):
        torch.manual_seed(0)
        net = mlp_branch()
        x = torch.randn(16, 7, 6, requires_grad=True)
        dp = DropPath(0.5, skip_draw="bernoulli").train()
        torch.manual_seed(3)
        (gx,) = torch.autograd.grad(residual(form, x, x, net, dp).square().sum(), x, create_graph=True)
        gx.square().sum().backward()
        results[form] = (gx.detach(), x.grad)
    torch.testing.assert_close(results["skip"], results["reference"], rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------ blocks and BN


class ConvBlock(DropPathBlock):
    def __init__(self, drop_path: float, drop_path_mode: str = "mask", bn: bool = False, draw: str = "bernoulli"):
        super().__init__(DropPathArgs(drop_path, drop_path_mode, draw))
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4) if bn else nn.Identity()

    def branch(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.residual(x, x, self.branch))


def test_batchnorm_in_skip_mode_uses_kept_samples_only():
    """Skip mode: BN normalises with, and updates its running stats from, the kept samples only."""
    torch.manual_seed(0)
    block = ConvBlock(0.5, "skip", bn=True).train()
    x = torch.randn(32, 4, 5, 5)
    x[:16] += 10.0  # the first half has a very different mean: which half is kept shows in the stats
    torch.manual_seed(4)
    keep = torch.rand(32) >= 0.5  # the draw the block will make
    assert 0 < keep.sum() < 32
    torch.manual_seed(4)
    block(x)
    with torch.no_grad():
        feats = block.conv(x[keep])
    m = block.bn.momentum
    torch.testing.assert_close(block.bn.running_mean, m * feats.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        block.bn.running_var, (1 - m) + m * feats.var((0, 2, 3), unbiased=True), rtol=1e-4, atol=1e-5
    )
    torch.manual_seed(0)
    masked = ConvBlock(0.5, "mask", bn=True).train()
    torch.manual_seed(4)
    masked(x)
    assert not torch.allclose(masked.bn.running_mean, block.bn.running_mean, atol=1e-3)


def test_dropped_batch_in_skip_mode_leaves_branch_untouched():
    """A branch that is not run updates no BN stats and gets no gradients (None, not zeros)."""
    torch.manual_seed(0)
    block = ConvBlock(1.0, "skip", bn=True).train()
    block.drop_path.mode = "batch"
    x = torch.randn(8, 4, 5, 5, requires_grad=True)
    block(x).sum().backward()
    assert torch.equal(block.bn.running_mean, torch.zeros(4))
    assert int(block.bn.num_batches_tracked) == 0
    assert all(q.grad is None for q in block.parameters())
    assert x.grad is not None


def test_auto_rule():
    assert not resolve_skip("auto", AUTO_SKIP_MIN_RATE / 2)
    assert resolve_skip("auto", AUTO_SKIP_MIN_RATE)
    assert not resolve_skip("auto", 0.5, cheap_branch=True)
    assert resolve_skip("skip", 0.01) and not resolve_skip("mask", 0.9)
    assert ConvBlock(0.5, "auto").skip and not ConvBlock(0.01, "auto").skip


@pytest.mark.parametrize("rate", [0.0, 0.5])
def test_forward_hooks_see_the_branch_output_not_the_sum(rate):
    """Every residual sum is a new tensor: a hook that keeps a block's last BatchNorm output (feature
    extraction) still holds that output after the block has added its residual."""
    from zoo.blocks.resnet import BasicBlock

    torch.manual_seed(0)
    block = BasicBlock(4, 4, drop_path=rate)
    nn.init.ones_(block.conv_bn2[-1].weight)  # zero_init_last would make the branch output all zeros
    block.eval()
    kept = []
    handle = block.conv_bn2[-1].register_forward_hook(lambda module, args, out: kept.append(out))
    x = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        out = block(x)
        expected = block.branch(x)
    handle.remove()
    torch.testing.assert_close(kept[0], expected)
    torch.testing.assert_close(out, torch.relu(x + expected))
