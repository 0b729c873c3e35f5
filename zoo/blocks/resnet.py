"""Residual blocks of the CIFAR ResNets (He et al. 2016) with a residual drop path (Huang et al. 2016).

Post-activation, as in both papers: ``out = relu(shortcut(x) + drop_path(branch(x)))``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import DropPathArgs, DropPathBlock

SHORTCUTS = ("A", "B")  # A: parameter-free (subsample + zero-pad channels), B: 1x1 conv + BN


class PadShortcut(nn.Module):
    """Option A: subsample by ``stride`` and zero-pad the new channels (no parameters)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int):
        super().__init__()
        if out_chs < in_chs:
            raise ValueError(f"a padding shortcut cannot reduce channels ({in_chs} -> {out_chs})")
        self.stride, self.pad = stride, out_chs - in_chs

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            # pad the channel dim (dim 1): F.pad takes (W_lo, W_hi, H_lo, H_hi, C_lo, C_hi)
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x


def make_shortcut(in_chs: int, out_chs: int, stride: int, kind: str) -> nn.Module:
    if kind not in SHORTCUTS:
        raise ValueError(f"shortcut must be one of {', '.join(SHORTCUTS)}, got {kind!r}")
    if in_chs == out_chs and stride == 1:
        return nn.Identity()
    if kind == "A":
        return PadShortcut(in_chs, out_chs, stride)
    return nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, stride, bias=False), nn.BatchNorm2d(out_chs))


def conv_bn(in_chs: int, out_chs: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding=kernel_size // 2, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(out_chs))


class _ResidualConvBlock(DropPathBlock):
    """``relu(shortcut(x) + drop_path(branch(x)))``; subclasses build ``shortcut`` and ``branch``."""

    shortcut: nn.Module

    def branch(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.residual(self.shortcut(x), x, self.branch))


class BasicBlock(_ResidualConvBlock):
    """Two 3x3 convolutions; ``out_chs`` output channels.

    Args:
        in_chs: input channels.
        out_chs: output channels (the branch width).
        stride: stride of the first convolution (2 where a stage starts).
        drop_path: this block's drop path rate, or its :class:`zoo.layers.DropPathArgs` (rate, mode
            "mask" / "skip" (branch on kept samples only) / "auto", and skip mode's draw).
        shortcut: "A" (zero-pad, the CIFAR ResNets') or "B" (1x1 conv) where the shape changes.
    """

    expansion = 1

    def __init__(
        self, in_chs: int, out_chs: int, *, stride: int = 1, drop_path: float | DropPathArgs = 0.0, shortcut: str = "A"
    ):
        super().__init__(drop_path)
        self.conv_bn1 = conv_bn(in_chs, out_chs, 3, stride)
        self.conv_bn2 = conv_bn(out_chs, out_chs, 3)
        self.shortcut = make_shortcut(in_chs, out_chs, stride, shortcut)

    def branch(self, x: Tensor) -> Tensor:
        return self.conv_bn2(torch.relu(self.conv_bn1(x)))


class Bottleneck(_ResidualConvBlock):
    """1x1 reduce, 3x3, 1x1 expand to ``4 * width`` channels (the CIFAR ResNet-164 block).

    Args:
        in_chs: input channels.
        width: the inner width; the block outputs ``width * 4`` channels.
        stride, drop_path, shortcut: as in :class:`BasicBlock`.
    """

    expansion = 4

    def __init__(
        self, in_chs: int, width: int, *, stride: int = 1, drop_path: float | DropPathArgs = 0.0, shortcut: str = "B"
    ):
        super().__init__(drop_path)
        out_chs = width * self.expansion
        self.conv_bn1 = conv_bn(in_chs, width, 1)
        self.conv_bn2 = conv_bn(width, width, 3, stride)
        self.conv_bn3 = conv_bn(width, out_chs, 1)
        self.shortcut = make_shortcut(in_chs, out_chs, stride, shortcut)

    def branch(self, x: Tensor) -> Tensor:
        return self.conv_bn3(torch.relu(self.conv_bn2(torch.relu(self.conv_bn1(x)))))
