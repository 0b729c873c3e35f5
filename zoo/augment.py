"""Batched CIFAR augmentation and normalization on the training device (no per-image Python).

The random numbers come from a CPU ``torch.Generator`` the caller seeds per step, so a batch's
augmentation depends only on (seed, epoch, step): a resumed run, or a run on another device or
number of ranks, draws exactly the same crops and flips.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from .data import MEAN, STD


def augment_params(n: int, generator: torch.Generator, pad: int = 4) -> Tensor:
    """A (3, n) int64 tensor: row offset, column offset (each in [0, 2 * pad]) and flip (0 or 1) per image."""
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=generator)
    flips = torch.randint(0, 2, (1, n), generator=generator)
    return torch.cat([offsets, flips])


def crop_flip(images: Tensor, params: Tensor, pad: int = 4) -> Tensor:
    """Random crop with ``pad`` zero pixels on each side, then horizontal flip, as one gather.

    Args:
        images: (B, H, W, C) uint8 on any device.
        params: (3, B) from :func:`augment_params`, on the same device.
    """
    b, h, w, _ = images.shape
    padded = F.pad(images, (0, 0, pad, pad, pad, pad))  # zero border, as torchvision's RandomCrop(padding=4)
    dy, dx, flip = params[0], params[1], params[2].bool()
    ar_h = torch.arange(h, device=images.device)
    ar_w = torch.arange(w, device=images.device)
    rows = dy[:, None] + ar_h  # (B, H)
    cols = dx[:, None] + torch.where(flip[:, None], w - 1 - ar_w, ar_w)  # (B, W), reversed when flipped
    return padded[torch.arange(b, device=images.device)[:, None, None], rows[:, :, None], cols[:, None, :]]


@functools.lru_cache(maxsize=8)
def _mean_std(device: torch.device) -> tuple[Tensor, Tensor]:
    """On the device once, not copied there every step."""
    return torch.tensor(MEAN, device=device) * 255, torch.tensor(STD, device=device) * 255


def normalize(images: Tensor, channels_last: bool = False) -> Tensor:
    """(B, H, W, C) uint8 -> (B, C, H, W) float32, standardized with the CIFAR-10 mean and std.

    Permuting HWC gives a channels_last-strided tensor for free; ``contiguous()`` is only paid when
    the model wants the NCHW layout.
    """
    mean, std = _mean_std(images.device)
    x = ((images.float() - mean) / std).permute(0, 3, 1, 2)
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
