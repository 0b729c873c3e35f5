"""LayerNorm as the MetaFormer baselines use it: no bias by default, over channels-last or channels-first maps."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class LayerNorm(nn.LayerNorm):
    """LayerNorm over the last dimension (channels-last maps (B, H, W, C) or tokens (B, N, C)).

    Args:
        dim: the normalized (channel) size.
        eps: added to the variance; 1e-6 as in the MetaFormer baselines.
        bias: learn a shift as well as a scale. Off by default: MetaFormer found the bias unnecessary.
    """

    def __init__(self, dim: int, eps: float = 1e-6, bias: bool = False):
        super().__init__(dim, eps=eps, elementwise_affine=True, bias=bias)


class LayerNorm2d(LayerNorm):
    """LayerNorm over the channels of a channels-first map (B, C, H, W), for use inside NCHW networks."""

    def forward(self, x: Tensor) -> Tensor:
        # Permuting to channels-last and back costs no copy when x is already in channels_last memory.
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)
