"""The MetaFormer block (Yu et al., "MetaFormer Baselines for Vision") with a residual drop path.

    x = res_scale1(x) + layer_scale1(drop_path(token_mixer(norm1(x))))
    x = res_scale2(x) + layer_scale2(drop_path(mlp(norm2(x))))

on channels-last maps (B, H, W, C). One drop path rate per block: both residuals use the block's
one DropPath, each with its own random draw (as timm's two DropPath modules of equal rate would).
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

from ..layers import DropPathArgs, DropPathBlock, LayerNorm, LayerScale, Mlp, ResScale, make_scale, resolve_skip
from ..layers.mixers import TokenMixer, create_token_mixer


class MetaFormerBlock(DropPathBlock):
    """A token mixer and a channel MLP, each in a pre-norm residual with drop path.

    Input and output: channels-last maps (B, H, W, C) with C = ``dim``. To use it inside an NCHW
    network, wrap it as ``block(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)``.

    Args:
        dim: channels.
        token_mixer: "identity", "random", "pooling", "sepconv", "attention", or a callable
            ``dim -> module`` mapping (B, H, W, C) to the same shape.
        mlp_ratio: MLP hidden width over ``dim``.
        mlp_act: MLP activation: "starrelu" (MetaFormer's), "gelu", "relu", "silu" or a factory.
        drop_path: this block's drop path rate, shared by both residuals, or its
            :class:`zoo.layers.DropPathArgs`, whose mode is "mask", "skip" (branches run on kept
            samples only) or "auto" (skip where it pays: never for the cheap identity and pooling mixers).
        layer_scale_init_value: LayerScale on both branches with this init; None: off.
        res_scale_init_value: ResScale on both shortcuts with this init; None: off.
        num_tokens: H * W of the input maps; needed by the "random" mixer only.
        norm_eps: LayerNorm epsilon.
    """

    def __init__(
        self,
        dim: int,
        token_mixer: TokenMixer = "pooling",
        *,
        mlp_ratio: float = 4.0,
        mlp_act: str | Callable[[], nn.Module] = "starrelu",
        drop_path: float | DropPathArgs = 0.0,
        layer_scale_init_value: float | None = None,
        res_scale_init_value: float | None = None,
        num_tokens: int | None = None,
        norm_eps: float = 1e-6,
    ):
        super().__init__(drop_path)  # the MLP is never cheap
        self.norm1 = LayerNorm(dim, eps=norm_eps)
        self.token_mixer = create_token_mixer(token_mixer, dim, num_tokens)
        self.layer_scale1 = make_scale(LayerScale, dim, layer_scale_init_value)
        self.res_scale1 = make_scale(ResScale, dim, res_scale_init_value)
        self.norm2 = LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(mlp_ratio * dim), act_layer=mlp_act)
        self.layer_scale2 = make_scale(LayerScale, dim, layer_scale_init_value)
        self.res_scale2 = make_scale(ResScale, dim, res_scale_init_value)
        # "auto" may pick skip for the MLP but not for a mixer too cheap to repay the gather and scatter.
        self.cheap_mixer = bool(getattr(self.token_mixer, "cheap", False))
        self.mixer_skip = resolve_skip(self.drop_path_mode, self.base_drop_path, cheap_branch=self.cheap_mixer)

    def set_base_drop_path(self, rate: float) -> None:
        super().set_base_drop_path(rate)
        self.mixer_skip = resolve_skip(self.drop_path_mode, self.base_drop_path, cheap_branch=self.cheap_mixer)

    def mixer_branch(self, x: Tensor) -> Tensor:
        return self.layer_scale1(self.token_mixer(self.norm1(x)))

    def mlp_branch(self, x: Tensor) -> Tensor:
        return self.layer_scale2(self.mlp(self.norm2(x)))

    def forward(self, x: Tensor) -> Tensor:
        x = self.residual(self.res_scale1(x), x, self.mixer_branch, skip=self.mixer_skip)
        return self.residual(self.res_scale2(x), x, self.mlp_branch)
