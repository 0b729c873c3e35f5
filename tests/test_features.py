"""The timm feature API on every family: unpooled features and the head, features_only, intermediates,
the classifier, and gradient checkpointing."""

import copy

import pytest
import torch
from torch import Tensor, nn

import zoo
from conftest import TINY, inputs, wake_zero_scales
from zoo.models import MetaFormer

NAMES = sorted(TINY)


def build(name: str, seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    return TINY[name](**kwargs)


def pooled_forward_before_the_split(model: nn.Module, x: Tensor) -> Tensor:
    """``model(x)`` as it was computed before forward_features returned maps: ResNets pooled NCHW maps
    and flattened; MetaFormers pooled their channels-last maps, then normed."""
    maps = model.stages(model.stem(x))
    if isinstance(model, MetaFormer):
        return model.head(model.norm(maps.mean((1, 2))))
    return model.head(torch.flatten(maps.mean((2, 3)), 1))


@pytest.mark.parametrize("name", NAMES)
def test_forward_is_bit_identical_to_the_pooled_formula(name):
    model = build(name, drop_path_rate=0.5)
    wake_zero_scales(model)
    x = inputs(4)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), pooled_forward_before_the_split(model, x))
        model.train()
        for seed in (0, 1):
            torch.manual_seed(seed)
            out = model(x)
            torch.manual_seed(seed)
            assert torch.equal(out, pooled_forward_before_the_split(model, x))


@pytest.mark.parametrize("name", NAMES)
def test_forward_features_is_the_unpooled_nchw_map_and_forward_head_finishes_it(name):
    model = build(name, num_classes=5).eval()
    x = inputs()
    last = model.feature_info[-1]
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, model.num_features, 32 // last["reduction"], 32 // last["reduction"])
        assert last["num_chs"] == model.num_features
        assert torch.equal(model.forward_head(feats), model(x))
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (2, model.num_features)
        assert torch.equal(model.get_classifier()(pre), model(x))
        # the pooled vector is the map's channel means (then MetaFormer's final norm)
        torch.testing.assert_close(pre, model.norm(feats.mean((2, 3))), rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_features_only_returns_one_nchw_map_per_stage_as_feature_info_says(name):
    full = build(name).eval()
    model = build(name, features_only=True).eval()
    # no classifier or final norm weights; every other weight is the full model's, for the same seed
    full_state, state = full.state_dict(), model.state_dict()
    assert set(state) == {k for k in full_state if not k.startswith(("head.", "norm."))}
    assert all(torch.equal(v, full_state[k]) for k, v in state.items())
    assert isinstance(model.get_classifier(), nn.Identity) and isinstance(model.norm, nn.Identity)
    assert model.num_classes == 0
    x = inputs()
    with torch.no_grad():
        maps = model(x)
        expected = full.forward_intermediates(x, intermediates_only=True)
    info = model.feature_info
    assert len(maps) == len(info) == len(full.stages) and info == full.feature_info
    assert info.module_name() == [f"stages.{i}" for i in range(len(maps))]
    assert info.reduction() == sorted(info.reduction()) and info.reduction()[0] == 1
    for m, chs, red, want in zip(maps, info.channels(), info.reduction(), expected):
        assert m.shape == (2, chs, 32 // red, 32 // red) and torch.equal(m, want)


@pytest.mark.parametrize("name", NAMES)
def test_forward_intermediates_returns_the_final_map_and_the_stage_maps(name):
    model = build(name).eval()
    x = inputs()
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x)) and torch.equal(maps[-1], final)
        assert [m.shape[1] for m in maps] == model.feature_info.channels()
        n = len(maps)
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert len(last_two) == 2 and all(torch.equal(a, b) for a, b in zip(last_two, maps[-2:]))
        picked = model.forward_intermediates(x, indices=(-1, 0), intermediates_only=True)  # sorted, stage order
        assert torch.equal(picked[0], maps[0]) and torch.equal(picked[1], maps[n - 1])
        nhwc = model.forward_intermediates(x, output_fmt="NHWC", norm=True, intermediates_only=True)
        assert all(torch.equal(a, b.permute(0, 2, 3, 1)) for a, b in zip(nhwc, maps))
        early_final, early = model.forward_intermediates(x, indices=[0], stop_early=True)
        assert torch.equal(early_final, maps[0]) and len(early) == 1 and torch.equal(early[0], maps[0])


@pytest.mark.parametrize("name", ["resnet8", "caformer_tiny"])
def test_out_indices_pick_stages_and_prune_the_ones_after(name):
    full = build(name, drop_path_rate=0.3)
    model = build(name, drop_path_rate=0.3, features_only=True, out_indices=(0, 1))
    assert len(model.stages) == 2 and model.depths == full.depths[:2] and model.out_indices == (0, 1)
    assert model.feature_info == full.feature_info[:2] and model.num_features == full.feature_info[1]["num_chs"]
    assert model.drop_path_rates() == full.drop_path_rates()[: sum(model.depths)]  # the full model's ramp
    maps = model(inputs())
    assert [m.shape[1] for m in maps] == model.feature_info.channels()
    last = build(name, features_only=True, out_indices=1)  # an int: the last n stages
    assert [m.shape[1] for m in last(inputs())] == full.feature_info.channels()[-1:] and last.out_indices == (
        len(full.stages) - 1,
    )


def test_a_pruned_model_keeps_the_rate_it_was_built_with():
    model = build("resnet8", drop_path_rate=0.3, features_only=True, out_indices=(1,))
    rates = model.drop_path_rates()
    assert model.drop_path_rate == 0.3 and rates == build("resnet8", drop_path_rate=0.3).drop_path_rates()[:2]
    model.drop_path_rate = model.drop_path_rate  # spread over the full depths again: nothing changes
    assert model.drop_path_rates() == rates and model.model_args["drop_path_rate"] == 0.3
    model.drop_path_rate = 0.6
    assert model.drop_path_rate == 0.6 and model.drop_path_rates() == [2 * r for r in rates]


@pytest.mark.filterwarnings("ignore:The nodes obtained by tracing")  # training adds the drop path's nodes
@pytest.mark.parametrize("name", NAMES)
def test_torchvisions_feature_extractor_traces_the_model_in_training_and_in_eval(name):
    """torch.fx traces every family in mask mode (create_feature_extractor traces both modes); for one
    seed the traced model computes what the model does, drop path included."""
    from torchvision.models.feature_extraction import create_feature_extractor

    model = build(name, drop_path_rate=0.5)
    wake_zero_scales(model)
    traced = create_feature_extractor(model, return_nodes={"head": "logits"})
    x = inputs(8)
    for training in (True, False):
        torch.manual_seed(0)
        expected = model.train(training)(x)
        torch.manual_seed(0)
        assert torch.equal(traced.train(training)(x)["logits"], expected), training


@pytest.mark.parametrize("name", NAMES)
def test_torch_export_gives_the_eval_models_outputs(name):
    """torch.export (TorchScript's successor; DropPath is not scriptable) captures every family for
    inference, drop path included as the identity it is in eval; the program computes the model's outputs."""
    model = build(name, drop_path_rate=0.5).eval()
    wake_zero_scales(model)
    program = torch.export.export(model, (inputs(),))
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))  # not the traced example
    with torch.no_grad():
        assert torch.allclose(program.module()(x), model(x), atol=1e-6)


def test_bad_feature_arguments_name_the_value_and_what_is_allowed():
    with pytest.raises(ValueError, match=r"out_indices=\(0, 3\) is out of range; allowed: .* stage indices in -3..2"):
        zoo.create_model("resnet8", features_only=True, out_indices=(0, 3))
    with pytest.raises(ValueError, match=r"out_indices=0 is out of range; allowed: None, an int in 1..4"):
        zoo.create_model("poolformer_tiny", features_only=True, out_indices=0)
    with pytest.raises(ValueError, match=r"out_indices=\(0,\) needs features_only=True"):
        zoo.create_model("resnet8", out_indices=(0,))
    model = zoo.create_model("resnet8")
    with pytest.raises(ValueError, match="indices='last' is not stage indices"):
        model.forward_intermediates(inputs(), indices="last")
    with pytest.raises(ValueError, match="output_fmt must be one of NCHW, NHWC, got 'NLC'"):
        model.forward_intermediates(inputs(), output_fmt="NLC")
    with pytest.raises(ValueError, match=r"reset_classifier\(10\): a features_only model has no classifier"):
        zoo.create_model("resnet8", features_only=True).reset_classifier(10)


def test_get_classifier_follows_reset_classifier():
    model = zoo.create_model("convformer_tiny", num_classes=5)
    assert model.get_classifier() is model.head and model.get_classifier().out_features == 5
    model.reset_classifier(3)
    assert model.get_classifier().out_features == 3 and model(inputs()).shape == (2, 3)
    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), nn.Identity) and model(inputs()).shape == (2, model.num_features)


def train_step(model: nn.Module, x: Tensor, seed: int) -> tuple[Tensor, dict, dict, Tensor, int]:
    """One forward and backward from ``seed``: the output, the gradients, the buffers, the next random
    number, and how many tensors autograd kept outside checkpointed blocks."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = model(x)
    out.square().mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    return out.detach(), grads, buffers, torch.rand(1), len(saved)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("rate, mode", [(0.0, "mask"), (0.5, "mask"), (0.5, "skip")])
def test_grad_checkpointing_gives_the_same_outputs_gradients_and_statistics(name, rate, mode):
    """Drop path draws are replayed in the recomputation, so even at rate 0.5 every result is bit-equal;
    BatchNorm running statistics count each batch once."""
    model = build(name, drop_path_rate=rate, drop_path_mode=mode).train()
    wake_zero_scales(model)
    checkpointed = copy.deepcopy(model)
    checkpointed.set_grad_checkpointing()
    assert checkpointed.grad_checkpointing and all(s.grad_checkpointing for s in checkpointed.stages)
    x = inputs(4)
    for seed in (0, 1):  # two steps: the second starts from the statistics the first left
        out, grads, buffers, after, n_saved = train_step(model, x, seed)
        c_out, c_grads, c_buffers, c_after, c_saved = train_step(checkpointed, x, seed)
        assert torch.equal(out, c_out) and torch.equal(after, c_after)
        assert grads.keys() == c_grads.keys()
        for k, g in grads.items():
            assert (g is None and c_grads[k] is None) or torch.equal(g, c_grads[k]), k
        assert all(torch.equal(b, c_buffers[k]) for k, b in buffers.items())
        assert c_saved < n_saved / 2, "the blocks' activations were kept"
    checkpointed.set_grad_checkpointing(False)
    assert train_step(checkpointed, x, 1)[4] == n_saved  # seed 1 again: skip mode saves per kept sample


def test_grad_checkpointing_applies_to_training_forwards_only():
    model = zoo.create_model("resnet8")
    plain = copy.deepcopy(model)
    model.set_grad_checkpointing()

    def kept_for_backward(m: nn.Module) -> int:
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            m(inputs())
        return len(saved)

    assert kept_for_backward(model.eval()) == kept_for_backward(plain.eval())
    assert kept_for_backward(model.train()) < kept_for_backward(plain.train())


def test_grad_checkpointing_under_compile_matches_eager(fresh_dynamo):
    """Dynamo takes the checkpoint without the eager path's context manager; the compiled graph still
    updates BatchNorm statistics once."""
    model = build("resnet8", drop_path_rate=0.5).train()
    wake_zero_scales(model)
    checkpointed = copy.deepcopy(model)
    checkpointed.set_grad_checkpointing()
    compiled = torch.compile(checkpointed, backend="aot_eager", fullgraph=True, dynamic=False)
    x = inputs(4)
    out, grads, buffers, after, _ = train_step(model, x, 0)
    c_out, c_grads, c_buffers, c_after, _ = train_step(compiled, x, 0)
    c_grads, c_buffers = ({k.removeprefix("_orig_mod."): v for k, v in d.items()} for d in (c_grads, c_buffers))
    assert c_grads.keys() == grads.keys() and c_buffers.keys() == buffers.keys()
    torch.testing.assert_close(c_out, out)
    assert torch.equal(after, c_after)
    for k, g in grads.items():
        torch.testing.assert_close(c_grads[k], g, msg=k)
    for k, b in buffers.items():
        torch.testing.assert_close(c_buffers[k], b, msg=k)
