"""Every registered model: shapes, gradients, determinism, how often each block keeps its branch,
and the installed drop path rates. Weights are computed on the tiny variants (one per family); the
full-size models are built on the meta device where only their structure is read."""

import math

import pytest
import torch

import zoo
from conftest import inputs, wake_zero_scales
from zoo.layers import DEPTH_SCHEDULES, drop_path_rates
from zoo.layers.residual import drop_path_blocks

MODELS = zoo.list_models()
TINY = [*zoo.list_models("*_tiny"), "resnet8"]


def on_meta(name: str, **kwargs) -> zoo.models.ZooModel:
    """The model's structure without its weights' memory or initialisation."""
    with torch.device("meta"):
        return zoo.create_model(name, **kwargs)


@pytest.mark.parametrize("name", TINY)
def test_output_shape_and_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    model = zoo.create_model(name, num_classes=7).train()
    out = model(inputs())
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.square().sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient reached {missing[:5]}"


@pytest.mark.parametrize("name", MODELS)
def test_every_registered_model_builds_with_its_head_and_blocks(name):
    model = on_meta(name, num_classes=7, drop_path_rate=0.3)
    assert model.num_classes == 7 and model.get_classifier().out_features == 7
    assert len(drop_path_blocks(model)) == sum(model.depths) == len(model.drop_path_rates())


@pytest.mark.parametrize("name", TINY)
def test_eval_is_deterministic_and_each_block_keeps_its_branch_at_one_minus_its_rate(name):
    """In training each block keeps a sample's branch with probability 1 - its installed rate: counted
    over 256 draws per residual (a dropped sample's output is its shortcut exactly), within 4 sigma."""
    torch.manual_seed(0)
    model = zoo.create_model(name, drop_path_rate=0.5)
    x = inputs(64)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
    # Zero-initialised scales (a ResNet branch's last BN) make every branch 0 at init, and a
    # dropped 0 is still 0: give them values first, as training would.
    wake_zero_scales(model)
    blocks = drop_path_blocks(model)
    kept: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(blocks))}
    for i, block in enumerate(blocks):

        def counted(shortcut, x, branch_fn, skip=None, i=i, real=block.residual):
            out = real(shortcut, x, branch_fn, skip)
            kept[i].append(out.ne(shortcut).flatten(1).any(1))
            return out

        block.residual = counted
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(x)
    for i, (block, rate) in enumerate(zip(blocks, model.drop_path_rates())):
        draws = torch.cat(kept[i])
        assert len(draws) % 256 == 0, "a block's residual ran once per forward (or once per residual it has)"
        sigma = math.sqrt(max(rate * (1 - rate), 0.01) / len(draws))
        assert abs(draws.float().mean().item() - (1 - rate)) < 4 * sigma, (i, rate, draws.float().mean().item())
    assert max(model.drop_path_rates()) == pytest.approx(0.5)


@pytest.mark.parametrize("name", MODELS)
def test_installed_rates_follow_the_linear_schedule(name):
    model = on_meta(name, drop_path_rate=0.3)
    expected = [r for stage in drop_path_rates(0.3, model.depths, "linear") for r in stage]
    assert model.drop_path_rates() == expected and len(expected) == sum(model.depths)


@pytest.mark.parametrize("name", [*TINY, "resnet110"])
@pytest.mark.parametrize("schedule", DEPTH_SCHEDULES)
def test_installed_rates_follow_the_schedule(name, schedule):
    model = on_meta(name, drop_path_rate=0.3, drop_path_schedule=schedule)
    expected = [r for stage in drop_path_rates(0.3, model.depths, schedule) for r in stage]
    assert model.drop_path_rates() == expected
    assert len(expected) == sum(model.depths)


@pytest.mark.parametrize("name", TINY)
def test_classifier_api(name):
    model = zoo.create_model(name, num_classes=5).eval()
    x = inputs()
    with torch.no_grad():
        feats = model.forward_features(x)  # the unpooled final map, NCHW
        assert feats.ndim == 4 and feats.shape[:2] == (2, model.num_features)
        assert torch.equal(model.forward_head(feats), model(x))
        pre_logits = model.forward_head(feats, pre_logits=True)
        assert pre_logits.shape == (2, model.num_features)
        assert torch.equal(model.get_classifier()(pre_logits), model(x))
        model.reset_classifier(3)
        assert model(x).shape == (2, 3) and model.num_classes == 3
        model.reset_classifier(0)
        assert model(x).shape == (2, model.num_features)


def test_bad_constructor_arguments_name_the_value():
    with pytest.raises(ValueError, match="drop_path_rate"):
        zoo.create_model("resnet8", drop_path_rate=1.5)
    with pytest.raises(ValueError, match="'cosine'"):
        zoo.create_model("resnet8", drop_path_schedule="cosine")
    with pytest.raises(ValueError, match="mask, skip, auto"):
        zoo.create_model("resnet8", drop_path_rate=0.1, drop_path_mode="fast")


def test_resnet_zero_init_last():
    model = zoo.create_model("resnet8", zero_init_last=True)
    assert all((b.conv_bn2[1].weight == 0).all() for b in model.stages.modules() if hasattr(b, "conv_bn2"))
    model = zoo.create_model("resnet8", zero_init_last=False)
    assert all((b.conv_bn2[1].weight == 1).all() for b in model.stages.modules() if hasattr(b, "conv_bn2"))


def test_resnet_sizes_match_the_paper():
    # He et al. 2016, Table 6: 0.27M, 0.46M, 0.66M, 0.85M, 1.7M, 19.4M parameters.
    expected = {
        "resnet20": 0.27,
        "resnet32": 0.46,
        "resnet44": 0.66,
        "resnet56": 0.85,
        "resnet110": 1.7,
        "resnet1202": 19.4,
    }
    for name, millions in expected.items():
        n = sum(p.numel() for p in on_meta(name).parameters()) / 1e6
        assert n == pytest.approx(millions, rel=0.03), name
    assert len(on_meta("resnet110").drop_path_rates()) == 54
