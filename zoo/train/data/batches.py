"""Batches on the training device: the epoch's order, batched crops and flips, normalisation.

Every random number here comes from a CPU ``torch.Generator`` seeded from (seed, what, epoch, step),
so a batch depends only on where it sits in training: a resumed run, or a run on another device or
number of ranks, draws exactly the same images, crops and flips.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms import v2

from .augment import apply_per_image
from .cifar10 import MEAN, STD, Split


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any tuple of values: the same parts always give the same seed."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def generator(*parts: object) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*parts))


@dataclass
class EpochPlan:
    """An epoch's image order and every step's crops and flips, on the training device: made once per
    epoch, so a step copies nothing from the host (on a GPU a blocking copy per step would be a sync;
    the plan's own two copies do not block)."""

    order: Tensor  # (N,) int64: the epoch's permutation of the training images
    params: Tensor  # (3, steps * batch_size): :func:`augment_params` of every step, side by side
    batch_size: int
    augment: bool = True  # False: no crop and flip (they are drawn all the same)
    policy: v2.Transform | None = None  # per-image policy / erasing after the crop and flip (zoo.train.data.augment)
    seeds: Tensor | None = None  # (steps * batch_size,) int64 on the CPU: each image's seed for ``policy``

    @property
    def steps(self) -> int:
        return max(1, len(self.order) // self.batch_size)


def epoch_plan(
    n: int,
    batch_size: int,
    seed: int,
    epoch: int,
    device: torch.device | str = "cpu",
    augment: bool = True,
    policy: v2.Transform | None = None,
) -> EpochPlan:
    """The plan of ``epoch``: its permutation of ``n`` images (full batches only, at least one) and each
    step's augmentation, drawn from (seed, epoch) and (seed, epoch, step) on the CPU (with a ``policy``,
    one seed per image too, from (seed, epoch, step))."""
    order = torch.randperm(n, generator=generator(seed, "perm", epoch))
    steps = max(1, n // batch_size)
    sizes = [len(order[step * batch_size : (step + 1) * batch_size]) for step in range(steps)]
    params = torch.cat([augment_params(k, generator(seed, "aug", epoch, step)) for step, k in enumerate(sizes)], dim=1)
    seeds = None
    if policy is not None:
        seeds = torch.cat(
            [
                torch.randint(1 << 62, (k,), generator=generator(seed, "policy", epoch, step))
                for step, k in enumerate(sizes)
            ]
        )
    return EpochPlan(to_device(order, device), to_device(params, device), batch_size, augment, policy, seeds)


def to_device(t: Tensor, device: torch.device | str) -> Tensor:
    """``t`` on ``device``; to a GPU from pinned memory without waiting (a copy from pageable memory
    blocks the host until the device has caught up: a sync)."""
    if torch.device(device).type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)  # torch reuses the pinned block only after the copy


def train_batch(
    data: Split, plan: EpochPlan, step: int, rank: int, world: int, channels_last: bool
) -> tuple[Tensor, Tensor]:
    """This rank's share of global batch ``step``: indices and augmentation drawn for the whole batch, so
    one process or N processes see the same images and the same crops."""
    span = slice(step * plan.batch_size, (step + 1) * plan.batch_size)
    idx, params = plan.order[span][rank::world], plan.params[:, span][:, rank::world]
    images = crop_flip(data.images[idx], params) if plan.augment else data.images[idx]
    if plan.policy is not None and plan.seeds is not None:
        images = apply_per_image(images, plan.policy, plan.seeds[span][rank::world].tolist())
    return normalize(images, channels_last), data.labels[idx]


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
