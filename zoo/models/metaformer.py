"""MetaFormer baselines (Yu et al., "MetaFormer Baselines for Vision") adapted to 32x32 inputs.

The ImageNet models patchify with a 7x7 stride-4 stem and halve the resolution three times, which at
32x32 leaves 8, 4, 2 and 1 pixel maps: the last stages would mix a single token. Here the stem is one
3x3 convolution (stride ``stem_stride``, 1 by default) followed by a LayerNorm, and each later stage
starts with the paper's downsampling (LayerNorm, then a 3x3 stride-2 convolution). With the default
stride 1 the four stages run at 32, 16, 8 and 4 pixels (1024, 256, 64, 16 tokens), like a CIFAR
ResNet's 32/16/8; ``stem_stride=2`` gives 16/8/4/2 at a quarter of the compute.

From the paper: LayerNorm without bias, StarReLU MLPs without bias, ResScale in stages 3-4, no
LayerScale, a global average pool and a LayerNorm before the classifier. Two simplifications: every
family normalises each token over its channels (the paper's IdentityFormer, RandFormer and PoolFormerV2
normalise over channels and space, a one-group GroupNorm), and the classifier is one linear layer (the
paper's ConvFormer and CAFormer have a two-layer MLP head). Families differ only in their token mixers:
IdentityFormer (identity), RandFormer (identity in stages 1-2, frozen random mixing in 3-4), PoolFormer
(pooling), ConvFormer (separable convolutions) and CAFormer (separable convolutions in stages 1-2,
attention in 3-4, where maps are 8x8 and 4x4).

Sizes: the paper's depths at four times its token counts, with narrower stages than its s-models'
(64, 128, 320, 512): ``tiny`` (1, 1, 1, 1) x (16, 32, 64, 128) for tests; ``s12`` (2, 2, 6, 2) and
``s18`` (3, 3, 9, 3), both at widths (32, 64, 128, 256) as the paper's s12 and s18 share theirs.
"metaformer", the recommended default, is convformer_s12: 3.4M parameters, 0.36 GFLOPs per 32x32
image (matmuls and convolutions, torch.utils.flop_counter), 1.4x a CIFAR ResNet-56 (0.25 GFLOPs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable

from torch import Tensor, nn

from .._registry import register_model
from ..blocks.metaformer import MetaFormerBlock
from ..layers import DropPathArgs, LayerNorm, as_drop_path, drop_path_from_kwargs
from ..layers.mixers import TokenMixer, check_token_mixer
from ..layers.mlp import check_act_layer
from ._base import ZooModel, stage_drop_path_rates
from ._cfg import pretrained_cfg
from ._features import FeatureInfo, run_blocks


def per_stage(value: Any, num_stages: int, name: str) -> tuple:
    """``value`` once per stage: a sequence (tuple, list, Hydra ListConfig; not a string) must have one
    entry per stage, anything else is repeated."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != num_stages:
            raise ValueError(
                f"{name} needs one value or {num_stages} (one per stage, as in depths), got {len(value)}: {tuple(value)!r}"
            )
        return tuple(value)
    return (value,) * num_stages


def conv_out_size(size: int, stride: int) -> int:
    """Output size of a 3x3 convolution with padding 1."""
    return (size - 1) // stride + 1


def positive_ints(value: Sequence[int], name: str) -> tuple[int, ...]:
    value = tuple(value)
    if not value or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
        raise ValueError(f"{name} must be a non-empty tuple of positive ints, got {value!r}")
    return value


def stage_sizes(img_size: int, stem_stride: int, num_stages: int) -> list[int]:
    """The map size of every stage: the stem's output, then halved by each downsampling."""
    for name, value in (("img_size", img_size), ("stem_stride", stem_stride)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    sizes = [conv_out_size(img_size, stem_stride)]
    for _ in range(num_stages - 1):
        sizes.append(conv_out_size(sizes[-1], 2))
    return sizes


class Stem(nn.Module):
    """3x3 convolution and a LayerNorm; NCHW images in, channels-last maps (B, H, W, C) out."""

    def __init__(self, in_chans: int, dim: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, dim, 3, stride=stride, padding=1)
        self.norm = LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(x).permute(0, 2, 3, 1))


class Downsample(nn.Module):
    """The paper's downsampling on channels-last maps: LayerNorm, then a 3x3 stride-2 convolution."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.norm = LayerNorm(in_dim)
        self.conv = nn.Conv2d(in_dim, dim, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.norm(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class MetaFormerStage(nn.Module):
    """An optional downsampling, then one MetaFormerBlock per entry of ``drop_paths``; channels-last
    maps (B, H, W, C) in and out."""

    grad_checkpointing: bool = False  # set by MetaFormer.set_grad_checkpointing

    def __init__(
        self,
        in_dim: int,
        dim: int,
        *,
        drop_paths: Sequence[DropPathArgs],
        token_mixer: TokenMixer,
        downsample: bool,
        num_tokens: int,
        mlp_ratio: float = 4.0,
        mlp_act: str | Callable[[], nn.Module] = "starrelu",
        layer_scale_init_value: float | None = None,
        res_scale_init_value: float | None = None,
    ):
        super().__init__()
        self.downsample = Downsample(in_dim, dim) if downsample else nn.Identity()
        self.blocks = nn.Sequential(
            *(
                MetaFormerBlock(
                    dim,
                    token_mixer,
                    mlp_ratio=mlp_ratio,
                    mlp_act=mlp_act,
                    drop_path=drop_path,
                    layer_scale_init_value=layer_scale_init_value,
                    res_scale_init_value=res_scale_init_value,
                    num_tokens=num_tokens,
                )
                for drop_path in drop_paths
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return run_blocks(self.blocks, self.downsample(x), self.grad_checkpointing)


def stage_arguments(
    n: int,
    dims: Sequence[int],
    token_mixers: TokenMixer | Sequence[TokenMixer],
    mlp_ratios: float | Sequence[float],
    mlp_act: str | Callable[[], nn.Module],
    layer_scales: float | None | Sequence[float | None],
    res_scales: float | None | Sequence[float | None],
) -> list[dict[str, Any]]:
    """Each of ``n`` stages' :class:`MetaFormerStage` arguments but its drop paths and token count: every
    per-stage value checked and broadcast to one a stage (a bad one raises, naming its argument)."""
    dims = per_stage(positive_ints(dims, "dims"), n, "dims")
    mixers = per_stage(token_mixers, n, "token_mixers")
    for mixer in mixers:
        check_token_mixer(mixer, "token_mixers")
    ratios = per_stage(mlp_ratios, n, "mlp_ratios")
    layer = per_stage(layer_scales, n, "layer_scale_init_values")
    res = per_stage(res_scales, n, "res_scale_init_values")
    check_act_layer(mlp_act, "mlp_act")
    return [
        dict(
            in_dim=dims[max(i - 1, 0)],
            dim=dims[i],
            token_mixer=mixers[i],
            downsample=i > 0,
            mlp_ratio=ratios[i],
            mlp_act=mlp_act,
            layer_scale_init_value=layer[i],
            res_scale_init_value=res[i],
        )
        for i in range(n)
    ]


class MetaFormer(ZooModel):
    """A MetaFormer for small images. Per-stage arguments take one value (used by every stage) or a tuple
    with one value per stage.

    Layout: the stages run channels-last, (B, H, W, C), inside; every map the model returns
    (:meth:`forward_features`, ``features_only``, :meth:`forward_intermediates`) is NCHW,
    (B, C, H, W), as timm's MetaFormer returns and as zoo's ResNets run: a permuted view of the
    channels-last map (its memory stays channels-last; ``.contiguous()`` copies it to NCHW memory).
    Stage i runs at ``1 / (stem_stride * 2**i)`` of the input size (``feature_info`` reductions).

    Args:
        depths: blocks per stage.
        dims: channels per stage.
        token_mixers: mixer name(s) ("identity", "random", "pooling", "sepconv", "attention") or
            callable(s) ``dim -> module``.
        mlp_ratios: MLP hidden width over the stage width.
        mlp_act: MLP activation: "starrelu", "gelu", "relu", "silu" or a factory.
        num_classes: classifier outputs (0: no head, ``forward`` returns pooled features).
        in_chans: input channels.
        features_only: build a feature extractor: ``forward`` returns a list of stage maps (NCHW),
            with no final norm and no classifier (see :meth:`ZooModel.init_features`).
        out_indices: with ``features_only``, the stages returned (None: all).
        img_size: input height and width; sets the token count of "random" mixers.
        stem_stride: stride of the stem (1: stages at 32/16/8/4 for 32x32 inputs; 2: 16/8/4/2).
        drop_path, drop_path_schedule, drop_path_rates: the drop path, as every zoo model takes it
            (:class:`zoo.models.ZooModel`).
        drop_rate: dropout before the classifier, after the head's norm (timm's ``drop_rate``).
        global_pool: how the head pools the last map: "avg", "max" or "avgmax" (their average).
        layer_scale_init_values: LayerScale init per stage; None turns it off.
        res_scale_init_values: ResScale init per stage; None turns it off (the paper: stages 3-4).
    """

    first_conv = "stem.conv"  # timm's pretrained_cfg names it

    def __init__(
        self,
        depths: Sequence[int] = (2, 2, 6, 2),
        dims: Sequence[int] = (32, 64, 128, 256),
        *,
        token_mixers: TokenMixer | Sequence[TokenMixer] = "sepconv",
        mlp_ratios: float | Sequence[float] = 4.0,
        mlp_act: str | Callable[[], nn.Module] = "starrelu",
        num_classes: int = 10,
        in_chans: int = 3,
        features_only: bool = False,
        out_indices: int | Sequence[int] | None = None,
        img_size: int = 32,
        stem_stride: int = 1,
        drop_path: float | DropPathArgs = 0.0,
        drop_path_schedule: str = "linear",
        drop_path_rates: Sequence[float] | None = None,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
        layer_scale_init_values: float | None | Sequence[float | None] = None,
        res_scale_init_values: float | None | Sequence[float | None] = (None, None, 1.0, 1.0),
    ):
        super().__init__()
        # Check and broadcast everything first, so a bad argument fails before anything is built.
        depths = positive_ints(depths, "depths")
        stages = stage_arguments(
            len(depths), dims, token_mixers, mlp_ratios, mlp_act, layer_scale_init_values, res_scale_init_values
        )
        dims = [s["dim"] for s in stages]
        drop_path = as_drop_path(drop_path)
        sizes = stage_sizes(img_size, stem_stride, len(depths))
        rates = stage_drop_path_rates(drop_path.rate, drop_path_rates, depths, drop_path_schedule)

        self.depths = self.drop_path_depths = depths
        self.drop_path_schedule = drop_path_schedule if drop_path_rates is None else None
        self.stem = Stem(in_chans, dims[0], stem_stride)
        self.stages = nn.Sequential(
            *(
                MetaFormerStage(drop_paths=[drop_path.with_rate(r) for r in rates[i]], num_tokens=sizes[i] ** 2, **s)
                for i, s in enumerate(stages)
            )
        )
        self.feature_info = FeatureInfo(
            dict(num_chs=d, reduction=stem_stride * 2**i, module=f"stages.{i}") for i, d in enumerate(dims)
        )
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)  # the head's norm keeps its bias, as in the paper
        self.num_features = dims[-1]
        self.init_head(num_classes, global_pool, drop_rate)
        self.pretrained_cfg = pretrained_cfg(self.first_conv, num_classes, in_chans, img_size)
        self.apply(self._init_weights)
        self.init_features(features_only, out_indices)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def to_nchw(self, x: Tensor) -> Tensor:
        """A stage's channels-last (B, H, W, C) map as NCHW (B, C, H, W): a view, no copy."""
        return x.permute(0, 3, 1, 2)


SIZES: dict[str, dict[str, tuple[int, ...]]] = {
    "tiny": dict(depths=(1, 1, 1, 1), dims=(16, 32, 64, 128)),  # for tests
    "s12": dict(depths=(2, 2, 6, 2), dims=(32, 64, 128, 256)),
    "s18": dict(depths=(3, 3, 9, 3), dims=(32, 64, 128, 256)),
}

FAMILY_MIXERS: dict[str, str | tuple[str, ...]] = {
    "identityformer": "identity",
    "randformer": ("identity", "identity", "random", "random"),
    "poolformer": "pooling",
    "convformer": "sepconv",
    "caformer": ("sepconv", "sepconv", "attention", "attention"),
}

# Every registered MetaFormer: name -> MetaFormer arguments. Keyword arguments to create_model override them.
VARIANTS: dict[str, dict[str, Any]] = {
    f"{family}_{size}": dict(SIZES[size], token_mixers=mixers)
    for family, mixers in FAMILY_MIXERS.items()
    for size in SIZES
}
VARIANTS["metaformer"] = VARIANTS["convformer_s12"]  # the recommended default


def _register(name: str, config: dict[str, Any]) -> None:
    def build(**kwargs: Any) -> MetaFormer:
        return MetaFormer(**{**config, **drop_path_from_kwargs(kwargs)})

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"MetaFormer for 32x32 inputs: {config}."
    register_model(build)


for _name, _config in VARIANTS.items():
    _register(_name, _config)
