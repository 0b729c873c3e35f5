"""DropPath: the functional form and the module, against the rules of issue 2."""

import inspect
import math

import pytest
import torch

from conftest import wake_zero_scales
from zoo.layers import DropPath, drop_path

BAD_RATES = [-0.1, 1.5, float("nan"), float("inf"), "0.1", None, True, [0.1]]


def test_identity_at_rate_zero_and_in_eval():
    x = torch.randn(8, 3, 4, 4)
    assert drop_path(x, 0.0, training=True) is x
    assert drop_path(x, 0.5, training=False) is x
    m = DropPath(0.5).eval()
    assert m(x) is x
    assert DropPath(0.0).train()(x) is x


@pytest.mark.parametrize("ndim", [1, 2, 3, 4, 5])
def test_mask_is_per_sample_and_kept_samples_scaled(ndim):
    torch.manual_seed(0)
    p = 0.3
    x = torch.rand((64,) + (3,) * (ndim - 1)) + 1.0  # no zeros in x
    y = drop_path(x, p, training=True)
    flat_x, flat_y = x.reshape(64, -1), y.reshape(64, -1)
    dropped = (flat_y == 0).all(1)
    kept = ~dropped
    assert ((flat_y == 0).any(1) == dropped).all(), "a sample is either dropped whole or not at all"
    assert 0 < dropped.sum() < 64
    torch.testing.assert_close(flat_y[kept], flat_x[kept] / (1 - p))


def test_dropped_fraction_within_three_sigma():
    torch.manual_seed(1)
    p, n = 0.2, 20000
    y = drop_path(torch.ones(n, 4), p, training=True)
    frac = (y[:, 0] == 0).float().mean().item()
    assert abs(frac - p) < 3 * math.sqrt(p * (1 - p) / n)


def test_mean_preserved():
    torch.manual_seed(2)
    x = torch.ones(50000, 2)
    y = DropPath(0.4).train()(x)
    assert abs(y.mean().item() - 1.0) < 0.02
    y = drop_path(x, 0.4, training=True, scale_by_keep=False)
    assert abs(y.mean().item() - 0.6) < 0.01


def test_dropped_samples_get_zero_gradient():
    torch.manual_seed(3)
    x = torch.randn(32, 5, requires_grad=True)
    y = drop_path(x, 0.5, training=True)
    y.sum().backward()
    dropped = (y == 0).all(1)
    assert dropped.any() and (~dropped).any()
    assert (x.grad[dropped] == 0).all()
    torch.testing.assert_close(x.grad[~dropped], torch.full_like(x.grad[~dropped], 2.0))


def test_batch_mode_drops_whole_batch():
    torch.manual_seed(4)
    x = torch.ones(16, 3)
    outcomes = []
    for _ in range(400):
        y = drop_path(x, 0.5, training=True, mode="batch")
        assert (y == 0).all() or torch.equal(y, 2 * x)
        outcomes.append(bool((y == 0).all()))
    frac = sum(outcomes) / len(outcomes)
    assert abs(frac - 0.5) < 3 * math.sqrt(0.25 / 400)


def test_rate_one_gives_zeros():
    x = torch.randn(10, 3)
    for y in (drop_path(x, 1.0, training=True), DropPath(1.0).train()(x)):
        assert torch.equal(y, torch.zeros_like(x))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_keeps_dtype(dtype):
    torch.manual_seed(5)
    x = torch.ones(256, 8, dtype=dtype)
    y = DropPath(0.5).train()(x)
    assert y.dtype == dtype
    assert set(y[:, 0].float().unique().tolist()) == {0.0, 2.0}


def test_rate_follows_a_model_cast_like_any_buffer():
    """The rate is a buffer, so a bf16 cast of the model casts it (0.25 is exact in bf16); the module
    still drops whole samples at that rate and scales the kept ones by its inverse keep."""
    m = torch.nn.Sequential(DropPath(0.25)).to(torch.bfloat16).train()
    assert m[0].rate.dtype == torch.bfloat16 and m[0].rate.item() == 0.25
    torch.manual_seed(0)
    y = m(torch.ones(20000, 2, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16
    assert set(y[:, 0].float().unique().tolist()) == {0.0, torch.tensor(1 / 0.75, dtype=torch.bfloat16).item()}
    dropped = (y[:, 0] == 0).float().mean().item()
    assert abs(dropped - 0.25) < 4 * math.sqrt(0.25 * 0.75 / 20000)


@pytest.mark.parametrize("bad", BAD_RATES)
def test_bad_rates_raise(bad):
    with pytest.raises(ValueError, match=r"\[0, 1\]") as err:
        drop_path(torch.ones(2, 2), bad, training=True)
    assert repr(bad) in str(err.value)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        DropPath(bad)
    m = DropPath(0.1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        m.drop_prob = bad
    assert m.drop_prob == 0.1, "a rejected rate leaves the old one in place"


def test_bad_mode_raises():
    with pytest.raises(ValueError, match="row, batch"):
        DropPath(0.1, mode="sample")


def test_live_rate_change():
    m = DropPath(0.1).train()
    m.drop_prob = 1.0
    assert torch.equal(m(torch.ones(4, 2)), torch.zeros(4, 2))
    m.drop_prob = 0.0
    x = torch.ones(4, 2)
    assert m(x) is x
    assert "drop_prob=0.000" in repr(m)
    m.drop_prob = 0.25
    assert "drop_prob=0.250" in repr(m) and m.rate.item() == 0.25


def test_rate_is_not_saved_in_state_dict():
    # The rate is construction data (from the model's depth schedule), not a learned value.
    assert DropPath(0.3).state_dict() == {}


def test_a_model_built_on_the_meta_device_then_loaded_drops_as_one_built_on_the_cpu():
    """The rate buffers are not in the state dict: after to_empty() they are refilled from the rate."""
    import zoo

    torch.manual_seed(0)
    built = zoo.create_model("convformer_tiny", drop_path_rate=0.3).train()
    with torch.device("meta"):
        empty = zoo.create_model("convformer_tiny", drop_path_rate=0.3)
    empty.to_empty(device="cpu").load_state_dict(built.state_dict())
    rates = [(m.rate.item(), m.inv_keep.item()) for m in empty.modules() if isinstance(m, DropPath)]
    assert rates == [(m.rate.item(), m.inv_keep.item()) for m in built.modules() if isinstance(m, DropPath)]
    x = torch.randn(8, 3, 32, 32)
    torch.manual_seed(1)
    expected = built(x)
    torch.manual_seed(1)
    assert torch.equal(empty.train()(x), expected)


def test_repr_is_timms_at_the_defaults_and_names_what_differs():
    assert repr(DropPath(0.1)) == "DropPath(drop_prob=0.100)"
    assert repr(DropPath(0.25, scale_by_keep=False, mode="batch")) == (
        "DropPath(drop_prob=0.250, mode='batch', scale_by_keep=False)"
    )
    timm_layers = pytest.importorskip("timm.layers")
    assert repr(DropPath(0.1)) == repr(timm_layers.DropPath(0.1))


def test_same_signature_as_timm():
    timm_layers = pytest.importorskip("timm.layers")
    ours = inspect.signature(drop_path).parameters
    theirs = inspect.signature(timm_layers.drop_path).parameters
    assert list(theirs) == list(ours)[: len(theirs)]
    assert [ours[k].default for k in theirs] == [theirs[k].default for k in theirs]
    ours = inspect.signature(DropPath.__init__).parameters
    theirs = inspect.signature(timm_layers.DropPath.__init__).parameters
    assert list(theirs) == list(ours)[: len(theirs)]


def test_drop_in_inside_a_timm_model():
    """Ours in place of every timm DropPath: eval is bit-equal to the unmodified timm model; in training,
    for one seed, the timm model given the samples ours kept (applied with timm's own formula, each
    kept branch divided by its keep probability) computes the same output."""
    import copy

    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    theirs = timm.create_model("resnet10t", num_classes=3, drop_path_rate=0.5)
    wake_zero_scales(theirs)  # zero-initialised last BNs make every branch 0, dropped or not: give them values
    ours = copy.deepcopy(theirs)
    swapped = []
    for mod in list(ours.modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, timm.layers.DropPath):
                setattr(mod, child_name, DropPath(child.drop_prob, child.scale_by_keep))
                swapped.append(getattr(mod, child_name))
    originals = [m for m in theirs.modules() if isinstance(m, timm.layers.DropPath)]
    assert len(swapped) == len(originals) > 0 and len({m.drop_prob for m in swapped}) > 1
    x = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(ours.eval()(x), theirs.eval()(x))

    kept = []  # per DropPath call, which samples ours kept (a dropped sample's output is zero)
    for m in swapped:
        m.register_forward_hook(lambda m, args, out: kept.append(out.flatten(1).ne(0).any(1)))
    torch.manual_seed(1)
    with torch.no_grad():
        out = ours.train()(x)
    assert all(0 < k.sum() < 16 for k in kept), "each DropPath (rates 1/6, 1/3, 1/2) kept some samples and dropped some"
    draws = iter(kept)

    def replay(m, args, _):  # timm's drop_path with our draw: x * bernoulli(keep) / keep
        keep_prob = 1 - m.drop_prob
        mask = next(draws).to(args[0].dtype).view(-1, *[1] * (args[0].ndim - 1))
        return args[0] * mask.div_(keep_prob)

    for m in originals:
        m.register_forward_hook(replay)
    with torch.no_grad():
        torch.testing.assert_close(theirs.train()(x), out, rtol=1e-5, atol=1e-6)
