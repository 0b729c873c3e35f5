"""MetaFormer layers, block and models: mixers at any token count, scales, StarReLU, drop path per block."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import zoo
from zoo.blocks import MetaFormerBlock
from zoo.layers import (
    TOKEN_MIXERS,
    Attention,
    DropPathArgs,
    LayerNorm,
    LayerNorm2d,
    LayerScale,
    Mlp,
    Pooling,
    RandomMixing,
    ResScale,
    SepConv,
    StarReLU,
    create_token_mixer,
    drop_path_rates,
    make_scale,
)
from zoo.models.metaformer import FAMILY_MIXERS, VARIANTS, MetaFormer


def maps(b=2, h=4, w=4, c=16, seed=0, dtype=torch.float32):
    return torch.randn(b, h, w, c, generator=torch.Generator().manual_seed(seed)).to(dtype)


# ---- token mixers -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(TOKEN_MIXERS))
@pytest.mark.parametrize("hw", [(1, 1), (4, 4), (7, 5), (8, 8)])
def test_every_mixer_keeps_the_shape(name, hw):
    h, w = hw
    mixer = create_token_mixer(name, 32, num_tokens=h * w)
    x = maps(h=h, w=w, c=32)
    out = mixer(x)
    assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("hw", [(1, 1), (2, 2), (4, 4), (7, 7), (8, 8), (14, 14), (32, 32)])
def test_random_mixing_works_at_any_token_count(hw):
    h, w = hw
    mixer = RandomMixing(8, num_tokens=h * w)
    assert mixer.mixing.shape == (h * w, h * w)
    torch.testing.assert_close(mixer.mixing.sum(-1), torch.ones(h * w))  # softmax rows
    x = maps(h=h, w=w, c=8)
    expected = torch.einsum("mn,bnc->bmc", mixer.mixing, x.reshape(2, h * w, 8)).reshape(x.shape)
    torch.testing.assert_close(mixer(x), expected)


def test_random_mixing_is_frozen_saved_and_checks_its_token_count():
    mixer = RandomMixing(8, num_tokens=16)
    assert list(mixer.parameters()) == [] and "mixing" in mixer.state_dict()
    with pytest.raises(ValueError, match=r"built for 16 tokens.*8x8 map \(64 tokens\)"):
        mixer(maps(h=8, w=8, c=8))
    from torchvision.models.feature_extraction import create_feature_extractor

    traced = create_feature_extractor(mixer, return_nodes={"reshape_1": "out"})  # the check survives tracing
    with pytest.raises(ValueError, match=r"built for 16 tokens.*8x8 map \(64 tokens\)"):
        traced(maps(h=8, w=8, c=8))
    with pytest.raises(ValueError, match="num_tokens"):
        create_token_mixer("random", 8)
    with pytest.raises(ValueError, match="num_tokens"):
        RandomMixing(8, num_tokens=0)


def test_pooling_is_average_minus_identity_and_zero_on_constant_maps():
    pool = Pooling(4)
    x = maps(c=4)
    ref = F.avg_pool2d(x.permute(0, 3, 1, 2), 3, 1, 1, count_include_pad=False).permute(0, 2, 3, 1) - x
    torch.testing.assert_close(pool(x), ref)
    # Padding is not counted, so even border tokens of a constant map average to themselves.
    assert pool(torch.full((1, 5, 5, 4), 3.0)).abs().max() < 1e-6


def test_attention_is_permutation_equivariant_over_tokens():
    attn = Attention(64, head_dim=32)
    assert attn.num_heads == 2
    x = maps(h=1, w=9, c=64)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(attn(x[:, :, perm]), attn(x)[:, :, perm])
    with pytest.raises(ValueError, match="divisible"):
        Attention(100, head_dim=32)  # 3 heads do not divide 100


def test_sepconv_is_local_with_a_7x7_reach():
    conv = SepConv(8)
    x = maps(b=1, h=12, w=12, c=8)
    y = x.clone()
    y[0, 0, 0] += 1.0  # perturb one corner token
    changed = (conv(y) - conv(x)).abs().sum(-1)[0] > 0
    assert changed[:4, :4].all() and not changed[4:].any() and not changed[:, 4:].any()


def test_sepconv_depthwise_runs_in_the_parameters_precision_under_cpu_autocast():
    conv = SepConv(8)
    seen = []
    conv.dwconv.register_forward_hook(lambda m, i, o: seen.append((i[0].dtype, o.dtype)))
    x = maps(c=8).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    assert seen == [(torch.float32, torch.float32)]  # the pointwise layers around it stay bf16
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in conv.parameters())
    torch.testing.assert_close(y.float(), conv(x), atol=0.05, rtol=0.05)
    half = SepConv(8).to(torch.bfloat16)  # bf16 parameters: the input follows them, not fp32
    assert half(x.detach().to(torch.bfloat16)).dtype == torch.bfloat16
    conv.cpu_depthwise_fp32 = False  # left to autocast
    with torch.autocast("cpu", dtype=torch.bfloat16):
        conv(x)
    assert seen[-1] == (torch.bfloat16, torch.bfloat16)


def test_unknown_mixer_lists_the_valid_names():
    with pytest.raises(ValueError, match="identity, random, pooling, sepconv, attention.*'conv'"):
        create_token_mixer("conv", 8)


# ---- MLP, norms, scales ---------------------------------------------------------------------------


def test_starrelu_formula_and_gradients():
    act = StarReLU(scale_value=0.8944, bias_value=-0.4472)
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0], requires_grad=True)
    y = act(x)
    torch.testing.assert_close(y, 0.8944 * torch.relu(x) ** 2 - 0.4472)
    y.sum().backward()
    torch.testing.assert_close(x.grad, 2 * 0.8944 * torch.relu(x.detach()))
    torch.testing.assert_close(act.scale.grad, (torch.relu(x) ** 2).sum())
    torch.testing.assert_close(act.bias.grad, torch.tensor(5.0))


def test_starrelu_backward_passes_gradcheck_and_keeps_bfloat16():
    x = torch.randn(3, 4, 5, dtype=torch.double, requires_grad=True)
    scale, bias = (torch.tensor(v, dtype=torch.double, requires_grad=True) for v in (0.7, -0.2))
    assert torch.autograd.gradcheck(lambda x, s, b: StarReLU.function(x, s, b), (x, scale, bias))
    act = StarReLU().to(torch.bfloat16)
    xb = torch.randn(2, 4, 4, 8, dtype=torch.bfloat16, requires_grad=True)
    act(xb).sum().backward()
    assert act(xb).dtype == xb.grad.dtype == act.scale.grad.dtype == torch.bfloat16


def test_mlp_has_no_bias_by_default_and_builds_each_activation():
    mlp = Mlp(8)
    assert mlp.fc1.out_features == 32 and mlp.fc1.bias is None and mlp.fc2.bias is None
    built = {name: type(Mlp(8, act_layer=name).act) for name in ("starrelu", "gelu", "relu", "silu")}
    assert built == {"starrelu": StarReLU, "gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}
    assert isinstance(Mlp(8, act_layer=nn.Hardswish).act, nn.Hardswish)  # a factory is called
    assert Mlp(8, 16, bias=True).fc1.bias is not None
    with pytest.raises(ValueError, match="starrelu, gelu.*'swish'"):
        Mlp(8, act_layer="swish")


def test_layernorm_has_no_bias_and_the_2d_form_matches_channels_last():
    norm = LayerNorm(16)
    assert norm.bias is None and norm.eps == 1e-6
    norm2d = LayerNorm2d(16)
    with torch.no_grad():
        norm2d.weight.copy_(torch.linspace(0.5, 2, 16))
        norm.weight.copy_(norm2d.weight)
    x = maps(c=16)
    torch.testing.assert_close(norm2d(x.permute(0, 3, 1, 2)), norm(x).permute(0, 3, 1, 2))


def test_scales_multiply_the_channels_and_none_turns_them_off():
    assert isinstance(make_scale(LayerScale, 8, None), nn.Identity)
    ls, rs = make_scale(LayerScale, 8, 1e-5), ResScale(8)
    torch.testing.assert_close(ls.scale, torch.full((8,), 1e-5))
    torch.testing.assert_close(rs.scale, torch.ones(8))
    x = maps(c=8)
    torch.testing.assert_close(ls(x), x * 1e-5)


# ---- the block ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(TOKEN_MIXERS))
def test_block_shape_and_gradients_for_every_mixer(name):
    block = MetaFormerBlock(
        32, name, num_tokens=16, drop_path=0.1, layer_scale_init_value=1e-5, res_scale_init_value=1.0
    )
    x = maps(c=32).requires_grad_()
    out = block(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.square().sum().backward()
    assert x.grad is not None
    assert all(p.grad is not None for p in block.parameters() if p.requires_grad)


def test_zero_layer_scale_makes_the_block_its_res_scaled_shortcut():
    x = maps(c=16)
    block = MetaFormerBlock(16, "sepconv", layer_scale_init_value=0.0)
    torch.testing.assert_close(block(x), x)
    block = MetaFormerBlock(16, "sepconv", layer_scale_init_value=0.0, res_scale_init_value=2.0)
    torch.testing.assert_close(block(x), 4 * x)  # both residuals scale the shortcut by 2
    block = MetaFormerBlock(16, "sepconv")
    assert isinstance(block.layer_scale1, nn.Identity) and isinstance(block.res_scale2, nn.Identity)
    assert not torch.allclose(block(x), x)


def test_block_is_usable_standalone_inside_an_nchw_network_with_a_custom_mixer():
    class ToChannelsLast(nn.Module):
        def forward(self, x):
            return x.permute(0, 2, 3, 1)

    class ToChannelsFirst(nn.Module):
        def forward(self, x):
            return x.permute(0, 3, 1, 2)

    net = nn.Sequential(
        nn.Conv2d(3, 24, 3, padding=1),
        ToChannelsLast(),
        MetaFormerBlock(24, token_mixer=lambda dim: Pooling(dim, pool_size=5), mlp_act="gelu"),
        ToChannelsFirst(),
        nn.AdaptiveAvgPool2d(1),
    )
    assert isinstance(net[2].token_mixer, Pooling) and isinstance(net[2].mlp.act, nn.GELU)
    out = net(torch.randn(2, 3, 10, 10))
    assert out.shape == (2, 24, 1, 1)


@pytest.mark.parametrize("mode", ["mask", "skip", "auto"])
def test_drop_path_one_drops_both_branches_in_training_only(mode):
    block = MetaFormerBlock(16, "sepconv", drop_path=DropPathArgs(1.0, mode=mode)).train()
    x = maps(c=16)
    torch.testing.assert_close(block(x), x)  # mixer and MLP residuals both dropped
    assert not torch.allclose(block.eval()(x), x)


@pytest.mark.parametrize("mixer, mixer_skip", [("pooling", False), ("identity", False), ("sepconv", True)])
def test_auto_mode_skips_only_expensive_branches_and_matches_mask_mode(mixer, mixer_skip):
    x = maps(b=8, c=16)
    torch.manual_seed(0)
    auto = MetaFormerBlock(16, mixer, drop_path=DropPathArgs(0.5, mode="auto")).train()
    assert auto.skip and auto.mixer_skip == mixer_skip
    mask = MetaFormerBlock(16, mixer, drop_path=DropPathArgs(0.5, mode="mask")).train()
    mask.load_state_dict(auto.state_dict())
    assert not mask.skip and not mask.mixer_skip
    torch.manual_seed(1)
    out_auto = auto(x)
    torch.manual_seed(1)
    out_mask = mask(x)
    torch.testing.assert_close(out_auto, out_mask)  # same draws, same kept samples, same values
    assert not torch.allclose(out_mask, mask.eval()(x))  # something was dropped


def test_block_holds_a_drop_path_only_above_rate_zero():
    block = MetaFormerBlock(16, "pooling")
    assert block.drop_path is None and block.drop_path_rate == 0.0
    x = maps(c=16)
    block = MetaFormerBlock(16, "pooling", drop_path=0.3).eval()
    assert block.drop_path_rate == pytest.approx(0.3)
    torch.testing.assert_close(block(x), block(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="drop_path"):
        MetaFormerBlock(16, drop_path=1.5)


def test_block_runs_in_bfloat16():
    block = MetaFormerBlock(32, "attention", drop_path=0.2, res_scale_init_value=1.0).to(torch.bfloat16).train()
    out = block(maps(c=32, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


# ---- models ----------------------------------------------------------------------------------------


def test_every_family_has_a_tiny_variant_and_two_sizes_and_metaformer_is_registered():
    for family in FAMILY_MIXERS:
        names = zoo.list_models(f"{family}_*")
        assert f"{family}_tiny" in names and len(names) >= 3, names
    assert zoo.is_model("metaformer")
    assert all(zoo.is_model(name) for name in VARIANTS)


def test_rates_are_installed_one_per_block_in_forward_order():
    model = MetaFormer(
        depths=(1, 2, 3), dims=(8, 16, 32), token_mixers="pooling", drop_path=0.25, res_scale_init_values=None
    )
    blocks = [b for stage in model.stages for b in stage.blocks]
    expected = [r for stage in drop_path_rates(0.25, (1, 2, 3)) for r in stage]
    assert [b.drop_path_rate for b in blocks] == expected == model.drop_path_rates()
    assert blocks[0].drop_path is None and blocks[-1].drop_path_rate == 0.25


def test_per_stage_arguments_broadcast_and_mixers_follow_the_family():
    model = zoo.create_model("caformer_tiny")
    kinds = [type(stage.blocks[0].token_mixer).__name__ for stage in model.stages]
    assert kinds == ["SepConv", "SepConv", "Attention", "Attention"]
    res = [isinstance(stage.blocks[0].res_scale1, ResScale) for stage in model.stages]
    assert res == [False, False, True, True]
    model = zoo.create_model("poolformer_tiny", layer_scale_init_values=1e-5, mlp_ratios=(1, 2, 3, 4))
    assert all(isinstance(s.blocks[0].layer_scale2, LayerScale) for s in model.stages)
    assert [s.blocks[0].mlp.fc1.out_features for s in model.stages] == [16, 64, 192, 512]


def test_hydra_list_configs_are_per_stage_values():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(
        {
            "depths": [1, 1],
            "dims": [8, 16],
            "token_mixers": ["pooling", "attention"],
            "res_scale_init_values": [None, 1.0],
        }
    )
    model = MetaFormer(**cfg)
    assert [type(s.blocks[0].token_mixer).__name__ for s in model.stages] == ["Pooling", "Attention"]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize(
    "img_size, stem_stride, tokens",
    [(32, 1, [1024, 256, 64, 16]), (32, 2, [256, 64, 16, 4]), (24, 1, [576, 144, 36, 9])],
)
def test_randformer_builds_its_mixing_for_the_actual_resolution(img_size, stem_stride, tokens):
    model = zoo.create_model(
        "randformer_tiny", img_size=img_size, stem_stride=stem_stride, token_mixers="random"
    ).eval()
    assert [stage.blocks[0].token_mixer.num_tokens for stage in model.stages] == tokens
    assert model(torch.randn(2, 3, img_size, img_size)).shape == (2, 10)


def test_tiny_model_runs_in_bfloat16_and_any_batch_size():
    model = zoo.create_model("caformer_tiny", drop_path_rate=0.2).train()
    for batch in (1, 3):
        assert model(torch.randn(batch, 3, 32, 32)).shape == (batch, 10)
    out = model.to(torch.bfloat16)(torch.randn(2, 3, 32, 32, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_bad_model_arguments_name_the_value_and_what_is_allowed():
    with pytest.raises(
        ValueError, match="token_mixers must be one of identity, random, pooling, sepconv, attention.*'conv'"
    ):
        zoo.create_model("metaformer", token_mixers="conv")
    with pytest.raises(ValueError, match=r"token_mixers needs one value or 4 \(one per stage.*got 2"):
        zoo.create_model("metaformer", token_mixers=("pooling", "sepconv"))
    with pytest.raises(ValueError, match=r"res_scale_init_values needs one value or 3"):
        MetaFormer(depths=(1, 1, 1), dims=(8, 16, 32))
    with pytest.raises(ValueError, match=r"dims needs one value or 4"):
        MetaFormer(depths=(1, 1, 1, 1), dims=(8, 16))
    with pytest.raises(ValueError, match="depths must be a non-empty tuple of positive ints"):
        MetaFormer(depths=(1, 0, 1, 1))
    with pytest.raises(ValueError, match="mlp_act must be one of starrelu, gelu"):
        zoo.create_model("poolformer_tiny", mlp_act="swish")
    with pytest.raises(ValueError, match="mask, skip, auto"):
        zoo.create_model("poolformer_tiny", drop_path_mode="fast")
    with pytest.raises(ValueError, match="stem_stride"):
        zoo.create_model("poolformer_tiny", stem_stride=0)
