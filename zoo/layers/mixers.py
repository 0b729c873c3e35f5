"""Token mixers of the MetaFormer baselines (Yu et al.), on channels-last maps (B, H, W, C).

identity (IdentityFormer), random (RandFormer), pooling (PoolFormer), sepconv (ConvFormer) and
attention (CAFormer's last stages). Every mixer is built as ``Mixer(dim, ...)`` and maps
(B, H, W, C) to the same shape. ``cheap = True`` marks mixers whose compute is less than what
running the branch on a subset of the batch would save (see ``DropPathBlock(cheap_branch=...)``).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .mlp import create_act_layer


class IdentityMixer(nn.Module):
    """No token mixing: the IdentityFormer baseline (only norms, MLPs and downsampling mix)."""

    cheap = True

    def __init__(self, dim: int):
        super().__init__()

    def forward(self, x: Tensor) -> Tensor:
        return x


class RandomMixing(nn.Module):
    """Mix tokens with a frozen random matrix: ``softmax(R) @ tokens``, R uniform in [0, 1)^(N x N).

    Built for the token count it will see (``num_tokens = H * W`` of its stage), so it works at any
    resolution; the matrix is a buffer, saved in checkpoints and never trained.

    Args:
        dim: channels (unused: the same mixing is applied to every channel).
        num_tokens: H * W of the maps this mixer receives.
    """

    def __init__(self, dim: int, num_tokens: int):
        super().__init__()
        if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 1:
            raise ValueError(f"RandomMixing needs num_tokens = H * W >= 1, got {num_tokens!r}")
        self.num_tokens = num_tokens
        self.register_buffer("mixing", torch.softmax(torch.rand(num_tokens, num_tokens), dim=-1))

    def forward(self, x: Tensor) -> Tensor:
        x = _check_num_tokens(x, self.num_tokens)  # its result used: a traced graph keeps the check
        b, h, w, c = x.shape
        return torch.matmul(self.mixing.to(x.dtype), x.reshape(b, h * w, c)).reshape(b, h, w, c)

    def extra_repr(self) -> str:
        return f"num_tokens={self.num_tokens}"


@torch.fx.wrap  # traced as one call: a traced shape cannot be compared
def _check_num_tokens(x: Tensor, num_tokens: int) -> Tensor:
    h, w = x.shape[1:3]
    if h * w != num_tokens:
        raise ValueError(
            f"RandomMixing was built for {num_tokens} tokens, got a {h}x{w} map ({h * w} tokens); "
            f"build it with num_tokens={h * w}"
        )
    return x


class Pooling(nn.Module):
    """PoolFormer's mixer: ``avgpool(x) - x`` (the block's shortcut adds x back).

    Padding is excluded from the average, so border tokens are not pulled towards zero.
    """

    cheap = True

    def __init__(self, dim: int, pool_size: int = 3):
        super().__init__()
        self.pool = nn.AvgPool2d(pool_size, stride=1, padding=pool_size // 2, count_include_pad=False)

    def forward(self, x: Tensor) -> Tensor:
        y = x.permute(0, 3, 1, 2)  # a view: pooling runs on channels_last memory
        return (self.pool(y) - y).permute(0, 2, 3, 1)


class SepConv(nn.Module):
    """ConvFormer's inverted separable convolution: pointwise expand, act, depthwise k x k, pointwise project.

    Args:
        dim: input and output channels.
        expansion_ratio: inner width over ``dim``.
        kernel_size: depthwise kernel (7 as in ConvFormer; at 4x4 maps it sees the whole map).
        act_layer: activation after the expansion.

    Under CPU autocast the depthwise convolution keeps the parameters' precision, because oneDNN trains it
    faster in fp32 than in bf16 on the CPUs measured (docs/benchmarks.md); ``cpu_depthwise_fp32 = False``
    (on the class or one module) leaves it to autocast.
    """

    cpu_depthwise_fp32: bool = True

    def __init__(
        self,
        dim: int,
        expansion_ratio: float = 2.0,
        kernel_size: int = 7,
        act_layer: str | Callable[[], nn.Module] = "starrelu",
    ):
        super().__init__()
        hidden = int(expansion_ratio * dim)
        self.pwconv1 = nn.Linear(dim, hidden, bias=False)
        self.act = create_act_layer(act_layer)
        self.dwconv = nn.Conv2d(hidden, hidden, kernel_size, padding=kernel_size // 2, groups=hidden, bias=False)
        self.pwconv2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.pwconv1(x)).permute(0, 3, 1, 2)
        # switched off, the convolution stays a module call: a traced graph (FX quantization) sees it
        x = _depthwise(self.dwconv, x) if self.cpu_depthwise_fp32 else self.dwconv(x)
        return self.pwconv2(x.permute(0, 2, 3, 1))


@torch.fx.wrap  # traced as one call: a traced tensor has no device to branch on
def _depthwise(conv: nn.Conv2d, x: Tensor) -> Tensor:
    if x.device.type == "cpu":
        # oneDNN's bf16 depthwise backward (its weight gradient above all) is slower than its fp32 one
        with torch.autocast("cpu", enabled=False):
            return conv(x.to(conv.weight.dtype))
    return conv(x)


class Attention(nn.Module):
    """Multi-head self-attention over the H * W tokens of a map (no positional embedding: CAFormer's
    earlier conv stages supply position).

    Args:
        dim: channels.
        head_dim: the target channels per head: ``max(1, dim // head_dim)`` heads, which must divide ``dim``.
        qkv_bias: give the query/key/value projection a bias.
        proj_bias: give the output projection a bias.
    """

    def __init__(self, dim: int, head_dim: int = 32, qkv_bias: bool = False, proj_bias: bool = False):
        super().__init__()
        self.num_heads = max(1, dim // head_dim)
        if dim % self.num_heads:
            raise ValueError(f"Attention needs dim divisible by its {self.num_heads} heads, got dim={dim}")
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, c = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, heads, N, head_dim)
        return self.proj(x.transpose(1, 2).reshape(b, h, w, c))

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}"


TOKEN_MIXERS: dict[str, type[nn.Module]] = {
    "identity": IdentityMixer,
    "random": RandomMixing,
    "pooling": Pooling,
    "sepconv": SepConv,
    "attention": Attention,
}

TokenMixer = str | Callable[[int], nn.Module]


def check_token_mixer(mixer: TokenMixer, name: str = "token_mixer") -> TokenMixer:
    """Return ``mixer`` if it is a known mixer name or a callable ``dim -> module``; raise ValueError otherwise."""
    if isinstance(mixer, str) and mixer in TOKEN_MIXERS or not isinstance(mixer, str) and callable(mixer):
        return mixer
    raise ValueError(f"{name} must be one of {', '.join(TOKEN_MIXERS)} or a callable dim -> module, got {mixer!r}")


def create_token_mixer(mixer: TokenMixer, dim: int, num_tokens: int | None = None) -> nn.Module:
    """Build a token mixer from its name, or call ``mixer(dim)``.

    Args:
        mixer: a name in TOKEN_MIXERS, or a callable taking ``dim`` and returning a module.
        dim: channels of the maps it mixes.
        num_tokens: H * W of those maps; required by "random" only.
    """
    mixer = check_token_mixer(mixer)
    if not isinstance(mixer, str):
        return mixer(dim)
    if mixer == "random":
        if num_tokens is None:
            raise ValueError("token_mixer 'random' needs num_tokens (H * W of the maps it mixes)")
        return RandomMixing(dim, num_tokens)
    return TOKEN_MIXERS[mixer](dim)
