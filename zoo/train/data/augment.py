"""Augmentation policies of the training images: torchvision.transforms.v2's AutoAugment (CIFAR-10 policy),
RandAugment and TrivialAugment, and random erasing, applied to each image of a batch with its own draws.

torchvision draws one operation per call, so a call on a whole batch would give every image the same
operation; here each image is one call under its own seed (drawn with the epoch's plan from (seed, epoch,
step)), so a batch is the same on any number of ranks and after a resume. The policies run after the
crop and flip, as the CIFAR recipes stack them; erasing runs last.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.transforms import v2

from ..errors import ConfigError
from .cifar10 import MEAN

POLICIES = ("autoaugment", "randaugment", "trivialaugment")
AUGMENTS = ("crop_flip", *POLICIES, "none")
MAGNITUDE_BINS = 31  # torchvision's RandAugment default: magnitudes 0 ... 30
# Erased pixels take the data set's mean colour: zero after normalisation, as erasing a normalised tensor with 0.
ERASE_VALUE = [round(m * 255) for m in MEAN]


def resolve_augment(augment: str | bool) -> str:
    """``data.augment`` as one of :data:`AUGMENTS`; ``true`` / ``false`` (its values before the policies)
    are ``crop_flip`` / ``none``."""
    if isinstance(augment, bool):
        return "crop_flip" if augment else "none"
    return augment


def check_augment(augment: str | bool, n: int, m: int, erasing: float) -> None:
    """The data.augment keys, one :class:`ConfigError` line for the first bad value."""
    if resolve_augment(augment) not in AUGMENTS:
        raise ConfigError(f"data.augment must be one of {', '.join(AUGMENTS)}, got {augment!r}")
    if n < 1:
        raise ConfigError(f"data.randaugment_n must be an integer >= 1 (operations per image), got {n!r}")
    if not 0 <= m < MAGNITUDE_BINS:
        raise ConfigError(f"data.randaugment_m must be an integer in [0, {MAGNITUDE_BINS - 1}], got {m!r}")
    if not 0 <= erasing <= 1:
        raise ConfigError(f"data.random_erasing must be a probability in [0, 1], got {erasing!r}")


def build_policy(augment: str | bool, n: int = 2, m: int = 9, erasing: float = 0.0) -> v2.Transform | None:
    """The per-image transform of a config's data keys (on (C, H, W) uint8); None when there is none
    (crop_flip and none alone are batched gathers: :func:`zoo.train.data.batches.crop_flip`)."""
    ops: list[v2.Transform] = []
    policy = resolve_augment(augment)
    if policy == "autoaugment":
        ops.append(v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10))
    elif policy == "randaugment":
        ops.append(v2.RandAugment(num_ops=n, magnitude=m, num_magnitude_bins=MAGNITUDE_BINS))
    elif policy == "trivialaugment":
        ops.append(v2.TrivialAugmentWide())
    if erasing > 0:
        ops.append(v2.RandomErasing(p=erasing, value=ERASE_VALUE))
    return v2.Compose(ops) if ops else None


def apply_per_image(images: Tensor, transform: v2.Transform, seeds: list[int]) -> Tensor:
    """``transform`` on each image of a (B, H, W, C) uint8 batch, image ``i`` drawing from ``seeds[i]``
    (torchvision draws on the CPU's default generator; its state is put back afterwards, so the drop path
    draws that follow do not depend on the policy)."""
    chw = images.permute(0, 3, 1, 2)
    out = torch.empty_like(chw)
    threads = torch.get_num_threads()
    if images.device.type == "cpu":  # one image's ops are too small to split: handing them to threads costs more
        torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            for i, seed in enumerate(seeds):
                torch.default_generator.manual_seed(seed)
                out[i] = transform(chw[i])
    finally:
        torch.set_num_threads(threads)
    return out.permute(0, 2, 3, 1)
