"""Learnable per-channel scales: LayerScale on a residual branch, ResScale on the shortcut."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Scale(nn.Module):
    """Multiply the last (channel) dimension by a learnable vector initialised to ``init_value``.

    Args:
        dim: channels (the size of the last dimension of the input).
        init_value: every entry's starting value.
        trainable: learn the vector (else it stays a frozen parameter).
    """

    def __init__(self, dim: int, init_value: float = 1.0, trainable: bool = True):
        super().__init__()
        self.init_value = float(init_value)
        self.scale = nn.Parameter(torch.full((dim,), self.init_value), requires_grad=trainable)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale

    def extra_repr(self) -> str:
        return f"dim={self.scale.numel()}, init_value={self.init_value:g}"


class LayerScale(Scale):
    """Scale of a residual branch (Touvron et al., CaiT): a small init lets deep networks start near identity."""

    def __init__(self, dim: int, init_value: float = 1e-5, trainable: bool = True):
        super().__init__(dim, init_value, trainable)


class ResScale(Scale):
    """Scale of the shortcut (Shleifer et al., NormFormer; used by MetaFormer in its last two stages)."""

    def __init__(self, dim: int, init_value: float = 1.0, trainable: bool = True):
        super().__init__(dim, init_value, trainable)


def make_scale(kind: type[Scale], dim: int, init_value: float | None) -> nn.Module:
    """``kind(dim, init_value)``, or an Identity when ``init_value`` is None (the scale is off)."""
    return nn.Identity() if init_value is None else kind(dim, init_value)
