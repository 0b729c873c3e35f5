"""torch.compile: every model in every drop path mode compiles (to one graph where the mode promises
it), forward and backward, and a rate change does not recompile the mask forms.

Most of these trace with the ``aot_eager`` backend: it runs Dynamo and AOT autograd (where graph
breaks, data-dependent shapes and autograd tracing fail) without the minutes Inductor's C++ code
generation takes on a 2-core CPU. The ``slow`` tests compile with Inductor itself.
"""

import pytest
import torch
import torch._dynamo.testing
from torch import Tensor, nn

import zoo
from conftest import TINY
from zoo.layers import (
    FIXED_DRAW_FACTOR_STEPS,
    DropPath,
    drop_path_add,
    drop_path_blocks,
    drop_path_skip_add,
    time_factor,
)

MODES = ("mask", "skip", "auto")

pytestmark = pytest.mark.usefixtures("fresh_dynamo")  # every test here compiles


def forward_backward(model: nn.Module, x: Tensor, seed: int) -> tuple[Tensor, dict[str, Tensor]]:
    """The output and every gradient by parameter name (a compiled model's names lose ``_orig_mod.``)."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    out = model(x)
    out.square().mean().backward()
    return out.detach(), {
        n.removeprefix("_orig_mod."): p.grad for n, p in model.named_parameters() if p.grad is not None
    }


def assert_same_gradients(grads: dict[str, Tensor], ref: dict[str, Tensor]) -> None:
    assert grads.keys() == ref.keys(), sorted(grads.keys() ^ ref.keys())
    for name in ref:
        torch.testing.assert_close(
            grads[name], ref[name], rtol=1e-3, atol=1e-4, msg=lambda m, name=name: f"{name}: {m}"
        )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(TINY))
def test_every_model_compiles_to_one_graph_in_every_mode(name, mode):
    """Under compile, skip and auto use the fixed draw (static shapes, no sync): one graph, forward and
    backward. For mask and skip with the fixed draw the compiled model matches eager for the same seed."""
    torch.manual_seed(0)
    model = TINY[name](drop_path_rate=0.5, drop_path_mode=mode, drop_path_skip_draw="fixed").train()
    x = torch.randn(8, 3, 32, 32)
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=counter, fullgraph=True, dynamic=False)
    for seed in (0, 1):
        out, grads = forward_backward(compiled, x, seed)
        ref, ref_grads = forward_backward(model, x, seed)
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
        assert_same_gradients(grads, ref_grads)
    assert counter.frame_count == 1


def test_bernoulli_skip_compiles_with_a_graph_break():
    """The Bernoulli draw's kept count is data dependent: fullgraph=True refuses it, and with graph
    breaks allowed it compiles and matches eager for the same seed."""
    torch.manual_seed(0)
    model = zoo.create_model("resnet8", drop_path_rate=0.5, drop_path_mode="skip", drop_path_skip_draw="bernoulli")
    x = torch.randn(8, 3, 32, 32)
    with pytest.raises(Exception, match="(?i)data.dependent|nonzero"):
        torch.compile(model, backend="aot_eager", fullgraph=True)(x)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager")
    out, grads = forward_backward(compiled, x, 3)
    ref, ref_grads = forward_backward(model, x, 3)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    assert_same_gradients(grads, ref_grads)


@pytest.mark.parametrize("form", ["mask", "fused", "skip"])
def test_functional_forms_with_a_float_rate_trace_to_one_graph(form):
    class Functional(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            if form == "mask":
                return x + zoo.layers.drop_path(x.sin(), 0.4, training=True)
            if form == "fused":
                return drop_path_add(x, x.sin(), 0.4, training=True)
            return drop_path_skip_add(x, x, torch.sin, 0.4, training=True)

    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(Functional(), backend=counter, fullgraph=True)
    x = torch.randn(8, 3, 5)
    for seed in (0, 1):
        torch.manual_seed(seed)
        out = compiled(x)
        torch.manual_seed(seed)
        ref = (
            Functional()(x)
            if form != "skip"
            else drop_path_skip_add(x, x, torch.sin, 0.4, training=True, skip_draw="fixed")
        )
        torch.testing.assert_close(out, ref)
    assert counter.frame_count == 1


def test_a_new_rate_in_the_fixed_draw_is_a_new_graph_but_a_new_mask_rate_is_not():
    """What the DropPath docstring promises, under AOT autograd (which specialises as Inductor does):
    the mask reads its rate from a buffer; the fixed draw's kept count is a shape, so a rate that
    changes it compiles again."""
    dp = DropPath(0.5, skip_draw="fixed").train()
    x = torch.randn(8, 3, requires_grad=True)
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    mask = torch.compile(lambda t: dp.add(t, t.sin()), backend=counter, fullgraph=True)
    for p in (0.5, 0.3, 0.2):
        dp.drop_prob = p
        mask(x)
    assert counter.frame_count == 1
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    skip = torch.compile(lambda t: dp.skip_add(t, t, torch.sin), backend=counter, fullgraph=True)
    for p in (0.5, 0.5, 0.25):  # kept counts 4, 4, 6
        dp.drop_prob = p
        skip(x)
    assert counter.frame_count == 2


def ramp_graphs(mode: str) -> tuple[int, set, set]:
    """resnet8 (rates 0, 0.25, 0.5) compiled with AOT autograd, trained 13 steps of a ``ramp`` time
    schedule (factor 0, 1/12, ..., 1): the graphs compiled, and the distinct rate tuples (over blocks)
    the fixed draw kept its count for and the blocks installed."""
    torch.manual_seed(0)
    model = zoo.create_model("resnet8", drop_path_rate=0.5, drop_path_mode=mode, drop_path_skip_draw="fixed").train()
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    x, steps, counted, installed = torch.randn(32, 3, 32, 32), 12, set(), set()
    for step in range(steps + 1):
        model.set_drop_path_factor(time_factor("ramp", step / steps, cutoff=1.0))
        counted.add(tuple(b.drop_path.count_drop_prob for b in drop_path_blocks(model) if b.drop_path))
        installed.add(tuple(model.drop_path_rates()))
        compiled(x).square().mean().backward()
    return counter.frame_count, counted, installed


def test_a_ramp_compiles_a_bounded_number_of_graphs_in_skip_mode():
    """Skip mode's fixed draw keeps its count for the time factor rounded to quarters: under a ramp
    over 13 distinct rates a compiled model makes one graph per rounded factor (0 to 1) and one
    where the factor is 0 (drop path off): at most FIXED_DRAW_FACTOR_STEPS + 2, within Dynamo's
    recompile limit. Mask mode (rate in a buffer) makes 2: off at factor 0, on after."""
    graphs, counted, installed = ramp_graphs("skip")
    assert len(installed) == 13 and len(counted) == FIXED_DRAW_FACTOR_STEPS + 1  # rates 0 (off) .. 1
    assert graphs == FIXED_DRAW_FACTOR_STEPS + 2 == 6 < torch._dynamo.config.recompile_limit
    assert ramp_graphs("mask")[0] == 2


@pytest.mark.slow
@pytest.mark.parametrize("name, mode", [("resnet8", "skip"), ("convformer_tiny", "auto")])
def test_inductor_compiles_training_steps(name, mode, device):
    """The real compiler, forward and backward, fullgraph: a few training steps lower the loss."""
    torch.manual_seed(0)
    model = zoo.create_model(name, drop_path_rate=0.3, drop_path_mode=mode).train().to(device)
    compiled = torch.compile(model, fullgraph=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = torch.randn(16, 3, 32, 32, device=device), torch.randint(0, 10, (16,), device=device)
    losses = []
    for _ in range(6):
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(compiled(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
