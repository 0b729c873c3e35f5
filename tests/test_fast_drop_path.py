"""The fast residual drop path forms (issue 5): fused ``drop_path_add`` and compute-skipping ``skip``.

Every form must return what the reference ``shortcut + drop_path(branch(x))`` returns for the same
seed (the same kept set), with the same gradients, in row and batch mode.
"""

import math

import pytest
import torch
import torch._dynamo.testing
from torch import Tensor, nn

import zoo
from zoo.layers import (
    DropPath,
    DropPathBlock,
    can_overwrite,
    drop_path,
    drop_path_add,
    drop_path_skip_add,
    resolve_skip,
)
from zoo.layers.residual import AUTO_SKIP_MIN_RATE

FORMS = ("reference", "fused", "inplace", "skip")  # inplace: fused, written into the branch output


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tensors here are tiny: a second intra-op thread only adds wake-ups, which on a loaded
    2-core machine cost tens of ms per op (a 16 x 4 x 5 x 5 conv took 40 ms instead of 0.3 ms)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

DRAWS = ("row", "batch")


def conv_branch() -> nn.Module:
    return nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 1))


def mlp_branch() -> nn.Module:
    return nn.Sequential(nn.LayerNorm(6), nn.Linear(6, 12), nn.GELU(), nn.Linear(12, 6))


BRANCHES = {"conv": (conv_branch, (16, 4, 5, 5)), "mlp": (mlp_branch, (16, 7, 6))}


def residual(form: str, shortcut: Tensor, x: Tensor, branch: nn.Module, dp: DropPath) -> Tensor:
    if form == "reference":
        return shortcut + dp(branch(x))
    if form == "fused":
        return dp.add(shortcut, branch(x))
    if form == "inplace":
        return dp.add(shortcut, branch(x), inplace=True)
    return dp.skip_add(shortcut, x, branch)


def run_form(form: str, make, shape, p: float, mode: str, seed: int):
    """Output and gradients (input, branch params) of one form for one seed."""
    torch.manual_seed(0)
    branch = make()
    x = torch.randn(shape).requires_grad_()
    dp = DropPath(p, mode=mode).train()
    torch.manual_seed(seed)
    out = residual(form, 2 * x, x, branch, dp)
    (out * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
    # a branch skip mode did not run at all has no gradients (None), where the reference has zeros
    grads = [torch.zeros_like(q) if q.grad is None else q.grad for q in branch.parameters()]
    return out.detach(), x.grad, grads


@pytest.mark.parametrize("branch", BRANCHES)
@pytest.mark.parametrize("mode", DRAWS)
@pytest.mark.parametrize("p", [0.3, 0.7])
def test_forms_agree_with_reference_for_same_seed(branch, mode, p):
    make, shape = BRANCHES[branch]
    kept_counts = set()
    for seed in range(6):
        ref_out, ref_gx, ref_gp = run_form("reference", make, shape, p, mode, seed)
        for form in FORMS[1:]:
            out, gx, gp = run_form(form, make, shape, p, mode, seed)
            torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(gx, ref_gx, rtol=1e-5, atol=1e-5)
            for a, b in zip(gp, ref_gp):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        torch.manual_seed(seed)  # the same draw again, to see what the seeds exercised
        kept_counts.add(int(DropPath(p, mode=mode).train()(torch.ones(shape[0])).ne(0).sum()))
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
            elif form in ("fused", "inplace"):
                outs.append(drop_path_add(x, branch(x), 0.4, training=True, mode=mode, inplace=form == "inplace"))
            else:
                outs.append(drop_path_skip_add(x, x, branch, 0.4, training=True, mode=mode))
        for out in outs[1:]:
            torch.testing.assert_close(out, outs[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mode", DRAWS)
def test_float_rate_draws_and_scales_as_the_module_buffer(mode, dtype):
    """A float rate reaches the ops as a cached 0-dim tensor: the same draw, comparison and factor as
    DropPath's buffer rate, bit for bit, and the cache answers each rate with its own tensors. 0.0012
    and 0.15 are rates whose inverse keep rounds differently in float64 than in float32 arithmetic."""
    x = torch.rand(64, 3, 4, dtype=dtype) + 1.0  # no zeros: a zero output row means dropped
    dp = DropPath(0.3, mode=mode).train()
    dropped_counts = set()
    for p in (0.3, 0.7, 0.0012, 0.15, 0.3):
        dp.drop_prob = p
        for seed in range(4):
            torch.manual_seed(seed)
            functional = drop_path(x, p, training=True, mode=mode)
            torch.manual_seed(seed)
            assert torch.equal(functional, dp(x))
            dropped_counts.add(int((functional == 0).flatten(1).all(1).sum()))
    # row: several dropped counts; batch: the whole batch kept in some draws and dropped in others
    assert dropped_counts == {0, 64} if mode == "batch" else len(dropped_counts) > 2


@pytest.mark.parametrize("mode", DRAWS)
def test_compile_fullgraph_functional_float_rate(fresh_dynamo, mode):
    """Under torch.compile the functional form with a float rate traces to one graph (no cached
    tensors there) and matches eager."""

    class Functional(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return drop_path_add(x, x.sin(), 0.4, training=True, mode=mode)

    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled_matches_eager(Functional(), torch.randn(8, 3, 5), fullgraph=True, backend=counter)
    assert counter.frame_count == 1


@pytest.mark.parametrize("form", FORMS[1:])
def test_expectation_over_draws_is_shortcut_plus_branch(form):
    torch.manual_seed(0)
    p, n = 0.3, 4000
    branch = nn.Linear(3, 3)
    x = torch.randn(n, 3)
    dp = DropPath(p).train()
    with torch.no_grad():
        out = residual(form, x, x, branch, dp)
        expected = x + branch(x)
        # one draw per sample, so the n rows are n independent draws of the same kind
        dev = (out - x) / (x + branch(x) - x)  # 0 or 1 / (1 - p) per sample
    mean, sigma = dev.mean(0), math.sqrt(p / (1 - p) / n)  # std of a scaled Bernoulli mean
    assert torch.all((mean - 1).abs() < 4 * sigma), (mean, sigma)
    assert not torch.allclose(out, expected), "a draw at p = 0.3 must drop something"


def test_expectation_batch_mode_over_many_calls():
    torch.manual_seed(1)
    p, calls = 0.5, 400
    x, b = torch.ones(4, 2), torch.full((4, 2), 3.0)
    dp = DropPath(p, mode="batch").train()
    mean = sum(dp.skip_add(x, b, lambda t: t) for _ in range(calls)) / calls
    sigma = 3.0 * math.sqrt(p / (1 - p) / calls)
    assert ((mean - 4.0).abs() < 4 * sigma).all()


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


# branch makers whose output may be overwritten: a conv's, and a bias-free Linear's on 3-D input
# (MetaFormer MLPs have no bias; with a bias, F.linear returns a view there, and views fall back)
INPLACE_BRANCHES = {"conv": BRANCHES["conv"], "linear": (lambda: nn.Linear(6, 6, bias=False), (16, 7, 6))}


@pytest.mark.parametrize("branch", INPLACE_BRANCHES)
@pytest.mark.parametrize("rate", [0.5, 0.0])
def test_inplace_writes_the_sum_into_the_branch_output(branch, rate):
    """The block-private branch output becomes the result: no new tensor. Values and gradients
    match the other forms (test_forms_agree_with_reference_for_same_seed)."""
    make, shape = INPLACE_BRANCHES[branch]
    torch.manual_seed(0)
    net, x = make(), torch.randn(shape, requires_grad=True)
    b = net(x)
    torch.manual_seed(1)
    expected = drop_path_add(x, b, rate, training=True)
    torch.manual_seed(1)
    out = drop_path_add(x, b, rate, training=True, inplace=True)
    assert out.data_ptr() == b.data_ptr() and can_overwrite(net(x), x)
    torch.testing.assert_close(out, expected)
    out.sum().backward()  # backward does not need the overwritten values
    assert torch.isfinite(x.grad).all()


class _SavesOutput(torch.autograd.Function):
    """A custom Function keeping its own output for backward, as some user layers do."""

    @staticmethod
    def forward(ctx, t: Tensor) -> Tensor:
        out = t.exp()
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (out,) = ctx.saved_tensors
        return grad * out


# branch outputs that must not be overwritten: f(x, linear) -> (shortcut, branch)
UNSAFE_BRANCHES = {
    "leaf that requires grad": lambda x, lin: (x, torch.randn(x.shape, requires_grad=True)),
    "relu output (saved by relu)": lambda x, lin: (x, lin(x).relu()),
    "sigmoid output (saved)": lambda x, lin: (x, lin(x).sigmoid()),
    "custom Function output": lambda x, lin: (x, _SavesOutput.apply(lin(x))),
    "a view": lambda x, lin: (x, lin(x).transpose(0, 1).transpose(0, 1)),
    "Linear with bias on 3-D input (a view)": lambda x, lin: (x.view(2, 4, 6), lin(x.view(2, 4, 6))),
    "the shortcut itself": lambda x, lin: ((y := lin(x)), y),
    "broadcast shape": lambda x, lin: (x, lin(x)[:1].clone()),
    "another dtype": lambda x, lin: (x, lin(x).double()),
}


@pytest.mark.parametrize("case", UNSAFE_BRANCHES)
def test_inplace_falls_back_where_overwriting_is_unsafe(case):
    """Where writing into the branch would corrupt autograd or another tensor, ``inplace=True``
    returns a new tensor, the branch keeps its values, and backward matches the out-of-place form."""
    results = []
    for inplace in (False, True):
        torch.manual_seed(0)
        lin, x = nn.Linear(6, 6), torch.randn(8, 6, requires_grad=True)
        shortcut, b = UNSAFE_BRANCHES[case](x, lin)
        before = b.detach().clone()
        torch.manual_seed(1)
        out = drop_path_add(shortcut, b, 0.5, training=True, inplace=inplace)
        assert out.data_ptr() != b.data_ptr() and torch.equal(b.detach(), before)
        out.pow(2).sum().backward()
        results.append((out.detach(), x.grad, lin.weight.grad))
    for a, e in zip(results[1], results[0]):
        torch.testing.assert_close(a, e)


def test_blocks_write_their_residual_in_place(monkeypatch):
    """Every residual of a ResNet and a ConvFormer, with or without a drop path, in training and in
    eval, goes into the branch output's memory (the fallback never triggers in zoo's own blocks)."""
    from zoo.layers import drop

    answers = []

    def spy(branch, shortcut):
        answers.append(can_overwrite(branch, shortcut))
        return answers[-1]

    monkeypatch.setattr(drop, "can_overwrite", spy)
    for name, rate in (("resnet8", 0.3), ("resnet8", 0.0), ("convformer_tiny", 0.3)):
        torch.manual_seed(0)
        model = zoo.create_model(name, drop_path_rate=rate)
        model(torch.randn(2, 3, 32, 32)).sum().backward()
        with torch.no_grad():
            model.eval()(torch.randn(2, 3, 32, 32))
    assert answers and all(answers), answers


@pytest.mark.parametrize("rate", [0.0, 0.5])
def test_forward_hooks_see_the_branch_output_not_the_sum(rate):
    """A hook that keeps a block's last BatchNorm output (feature extraction) must still hold that
    output after the block has added its residual: hooked blocks sum out of place."""
    from zoo.blocks.resnet import BasicBlock

    torch.manual_seed(0)
    block = BasicBlock(4, 4, 1, drop_path=rate)
    last_bn = block.conv_bn2[-1]
    nn.init.ones_(last_bn.weight)  # zero_init_last would make the branch output all zeros
    block.eval()
    kept = []
    handle = last_bn.register_forward_hook(lambda module, args, out: kept.append(out))
    x = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        out = block(x)
        expected = block.branch(x)
    handle.remove()
    torch.testing.assert_close(kept[0], expected)
    torch.testing.assert_close(out, torch.relu(x + expected))


def test_skip_runs_branch_on_kept_samples_only():
    torch.manual_seed(3)
    seen = []
    dp = DropPath(0.5).train()
    x = torch.randn(64, 3)
    out = dp.skip_add(x, x, lambda t: seen.append(t.shape[0]) or t)
    kept = (out != x).any(1)
    assert seen == [int(kept.sum())] and 0 < seen[0] < 64


@pytest.mark.parametrize("mode", DRAWS)
@pytest.mark.parametrize("form", FORMS[1:])
def test_bf16_matches_reference(mode, form):
    torch.manual_seed(0)
    branch = mlp_branch().to(torch.bfloat16)
    x = torch.randn(16, 7, 6, dtype=torch.bfloat16)
    dp = DropPath(0.4, mode=mode).train()
    with torch.no_grad():
        torch.manual_seed(5)
        ref = residual("reference", x, x, branch, dp)
        torch.manual_seed(5)
        out = residual(form, x, x, branch, dp)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-2)


def test_skip_keeps_channels_last():
    torch.manual_seed(0)
    branch = conv_branch().to(memory_format=torch.channels_last)
    x = torch.randn(16, 4, 5, 5).to(memory_format=torch.channels_last).requires_grad_()
    dp = DropPath(0.5).train()
    torch.manual_seed(2)
    ref = residual("reference", x, x, branch, dp)
    torch.manual_seed(2)
    out = dp.skip_add(x, x, branch)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    (g,) = torch.autograd.grad(out.sum(), x)
    (g_ref,) = torch.autograd.grad(ref.sum(), x)
    torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("branch", BRANCHES)
@pytest.mark.parametrize("leaf", [True, False])
def test_skip_with_identity_shortcut_gives_a_dense_input_gradient(branch, leaf):
    """With ``shortcut is x`` the kept rows' input gradient goes back as sparse rows that autograd
    adds to the shortcut's dense gradient: x (a leaf, or a tensor with a hook) must still see one dense
    gradient equal to the reference's."""
    make, shape = BRANCHES[branch]
    for seed in range(3):
        grads = {}
        for form in ("reference", "skip"):
            torch.manual_seed(0)
            net = make()
            w = torch.randn(shape).requires_grad_()
            x = w if leaf else w * 1.5
            seen = []
            if not leaf:
                x.register_hook(lambda g: seen.append(g.layout))
            dp = DropPath(0.4).train()
            torch.manual_seed(seed)
            out = residual(form, x, x, net, dp)
            (out * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
            assert w.grad.layout == torch.strided and seen == ([] if leaf else [torch.strided])
            grads[form] = (out.detach(), w.grad)
        torch.testing.assert_close(grads["skip"][0], grads["reference"][0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(grads["skip"][1], grads["reference"][1], rtol=1e-5, atol=1e-5)


# (3, 100, 100): cut into 2 parts; 16411 (prime): uncut; (2, 5): short; (4, 100, 100): over the gather's
# grain size, so gathered through the (1, B, N) view
@pytest.mark.parametrize("row", [(3, 100, 100), (16411,), (2, 5), (4, 100, 100)])
def test_skip_scatter_of_long_rows(row):
    """Rows longer than the add chunk are cut into equal parts before the scatter-add, and rows over
    ATen's grain size are gathered serially: both give the reference's values and gradients."""
    torch.manual_seed(0)
    x = torch.randn((6,) + row, dtype=torch.float64, requires_grad=True)
    shortcut = torch.randn_like(x)
    dp = DropPath(0.5).train()
    outs = []
    for form in ("reference", "skip"):
        torch.manual_seed(1)
        out = residual(form, shortcut, x, lambda t: t.sin(), dp)
        (g,) = torch.autograd.grad(out.square().sum(), x)
        outs.append((out, g))
    torch.testing.assert_close(outs[1], outs[0])
    assert 0 < int((outs[0][0] != shortcut).flatten(1).any(1).sum()) < 6  # some rows kept, some dropped


class PostReluBlock(DropPathBlock):
    """``relu(x + drop_path(branch(x)))``, as the ResNet blocks write it (``relu=True``)."""

    def __init__(self, drop_path: float, drop_path_mode: str, mode: str = "row"):
        super().__init__(drop_path, drop_path_mode)
        self.branch = conv_branch()
        if self.drop_path is not None:
            self.drop_path.mode = mode

    def forward(self, x: Tensor) -> Tensor:
        return self.residual(x, x, self.branch, relu=True)


@pytest.mark.parametrize("mode", DRAWS)
@pytest.mark.parametrize("drop_path_mode", ["mask", "skip"])
@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_post_relu_residual_matches_reference(drop_path_mode, mode, p):
    """The fused ReLU (in place on the block's sum; in skip mode inside the scatter, whose backward
    hands the shortcut's gradient to the gather's) against ``relu(x + drop_path(branch(x)))``: the
    input gradient (as a hook on it sees it, and the leaf below) and the parameter gradients, with
    backward run twice on one graph (the link is filled again by each)."""
    for seed in range(3):
        results = []
        for form in ("reference", drop_path_mode):
            torch.manual_seed(0)
            block = PostReluBlock(p, "mask" if form == "reference" else form, mode).train()
            w = torch.randn(16, 4, 5, 5).requires_grad_()
            x = w * 1.0
            seen = []
            x.register_hook(lambda g: seen.append(g.clone()))
            torch.manual_seed(seed)
            if form == "reference":
                dp = block.drop_path
                out = torch.relu(x + (dp(block.branch(x)) if dp is not None else block.branch(x)))
            else:
                out = block(x)
            loss = (out * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum()
            loss.backward(retain_graph=True)
            loss.backward()
            grads = [torch.zeros_like(q) if q.grad is None else q.grad for q in block.parameters()]
            results.append((out.detach(), w.grad, seen[0], *grads))
        for a, b in zip(results[1], results[0]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------ blocks and BN


class ConvBlock(DropPathBlock):
    def __init__(self, drop_path: float, drop_path_mode: str = "mask", bn: bool = False):
        super().__init__(drop_path, drop_path_mode)
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4) if bn else nn.Identity()

    def branch(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.residual(x, x, self.branch))


class MlpBlock(DropPathBlock):
    def __init__(self, drop_path: float, drop_path_mode: str = "mask"):
        super().__init__(drop_path, drop_path_mode)
        self.mlp = mlp_branch()

    def forward(self, x: Tensor) -> Tensor:
        return self.residual(x, x, self.mlp)


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
    expected_mean = m * feats.mean((0, 2, 3))
    expected_var = (1 - m) + m * feats.var((0, 2, 3), unbiased=True)
    torch.testing.assert_close(block.bn.running_mean, expected_mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(block.bn.running_var, expected_var, rtol=1e-4, atol=1e-5)
    # mask mode, same draw: stats from the whole batch, so they differ
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


# --------------------------------------------------------------------------------- torch.compile


def compiled_matches_eager(block: nn.Module, x: Tensor, fullgraph: bool, backend="aot_eager") -> None:
    compiled = torch.compile(block, backend=backend, fullgraph=fullgraph, dynamic=False)
    for seed in (0, 1):
        torch.manual_seed(seed)
        ref = block(x)
        torch.manual_seed(seed)
        out = compiled(x)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.fixture(autouse=False)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("drop_path_mode", ["mask", "fused"])
@pytest.mark.parametrize("kind", ["conv", "mlp"])
def test_compile_fullgraph_mask_and_fused(fresh_dynamo, drop_path_mode, kind):
    """mask and fused forms trace to one graph; in blocks the mask mode *is* the fused form."""
    torch.manual_seed(0)
    block = (ConvBlock(0.5) if kind == "conv" else MlpBlock(0.5)).train()
    x = torch.randn(8, 4, 5, 5) if kind == "conv" else torch.randn(8, 7, 6)
    if drop_path_mode == "mask":  # the unfused reference inside a block: shortcut + DropPath(branch)
        block.residual = lambda shortcut, t, fn: shortcut + block.drop_path(fn(t))
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled_matches_eager(block, x, fullgraph=True, backend=counter)
    block.drop_path.drop_prob = 0.2  # a new rate is a buffer write: no recompile, still one graph
    compiled_matches_eager(block, x, fullgraph=True, backend=counter)
    assert counter.frame_count == 1


def test_compile_skip_mode_breaks_graph(fresh_dynamo):
    """skip mode: ``nonzero`` has a data-dependent shape, so fullgraph=True raises; with graph breaks
    allowed it compiles and matches eager for the same seed."""
    torch.manual_seed(0)
    block = ConvBlock(0.5, "skip").train()
    x = torch.randn(8, 4, 5, 5)
    with pytest.raises(Exception, match="(?i)data.dependent"):
        torch.compile(block, backend="eager", fullgraph=True)(x)
    torch._dynamo.reset()
    compiled_matches_eager(block, x, fullgraph=False)


# blocks whose skip mode returns the input gradient's kept rows linked (post-ReLU) or sparse (MLP)
SKIP_GRAD_BLOCKS = {"post_relu": (PostReluBlock, (16, 4, 5, 5)), "mlp": (MlpBlock, (16, 7, 6))}
GRAD_SEED = 3  # draws 16 samples at p = 0.5 with some kept and some dropped (checked below)


def test_grad_seed_keeps_some_samples_and_drops_others():
    torch.manual_seed(GRAD_SEED)
    kept = int(DropPath(0.5).train()(torch.ones(16)).ne(0).sum())
    assert 0 < kept < 16, kept


@pytest.mark.parametrize("block", SKIP_GRAD_BLOCKS)
def test_skip_supports_double_backward(block):
    """A gradient penalty (create_graph=True) through skip mode's sparse input gradient (MLP block,
    identity shortcut) and its linked in-place one (post-ReLU block) matches mask mode."""
    cls, shape = SKIP_GRAD_BLOCKS[block]
    results = {}
    for mode in ("mask", "skip"):
        torch.manual_seed(0)
        blk = cls(0.5, mode).train()
        x = torch.randn(shape, requires_grad=True)
        torch.manual_seed(GRAD_SEED)
        (gx,) = torch.autograd.grad(blk(x).square().sum(), x, create_graph=True)
        gx.square().sum().backward()
        results[mode] = (gx.detach(), x.grad)
    torch.testing.assert_close(results["skip"], results["mask"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("block", SKIP_GRAD_BLOCKS)
def test_skip_backward_in_half_precision(block, dtype):
    """bf16 / fp16 through skip mode's gather and its sparse or linked input gradient: outputs and
    input gradients must match mask mode."""
    cls, shape = SKIP_GRAD_BLOCKS[block]
    results = {}
    for mode in ("mask", "skip"):
        torch.manual_seed(0)
        blk = cls(0.5, mode).train().to(dtype)
        x = torch.randn(shape, dtype=dtype, requires_grad=True)
        torch.manual_seed(GRAD_SEED)
        out = blk(x)
        out.float().square().sum().backward()
        assert x.grad.dtype == dtype and x.grad.layout == torch.strided
        results[mode] = (out.detach().float(), x.grad.float())
    torch.testing.assert_close(results["skip"], results["mask"], rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize("rate", [0.0, 0.5])
def test_compile_fullgraph_resnet_block_with_fused_relu(fresh_dynamo, rate):
    """The ResNet block's ReLU, applied in place on its own sum, traces to one graph in mask mode, and
    its gradients match eager."""
    from zoo.blocks.resnet import BasicBlock

    torch.manual_seed(0)
    block = BasicBlock(4, 4, drop_path=rate).train()
    x = torch.randn(8, 4, 5, 5)
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled_matches_eager(block, x, fullgraph=True, backend=counter)
    assert counter.frame_count == 1
    compiled = torch.compile(block, backend=counter, fullgraph=True, dynamic=False)
    grads = []
    for fn in (block, compiled):
        xg = x.clone().requires_grad_()
        torch.manual_seed(3)
        fn(xg).square().sum().backward()
        grads.append(xg.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-5)
