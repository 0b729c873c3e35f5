"""Mixup and CutMix on the device, batched: ``torchvision.transforms.v2``'s, one of them per batch when
both are on (as timm switches between them). Off unless an alpha is above 0."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

Mixing = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def build_mixing(mixup_alpha: float, cutmix_alpha: float, num_classes: int = 10) -> Mixing | None:
    """``(images, labels) -> (mixed images, soft targets (B, num_classes))``, or None when both are off.
    The mixing weights are drawn from torch's global generator, which the loop seeds every step."""
    from torchvision.transforms import v2

    ops = []
    if mixup_alpha > 0:
        ops.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
    if cutmix_alpha > 0:
        ops.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
    if not ops:
        return None
    return ops[0] if len(ops) == 1 else v2.RandomChoice(ops)
