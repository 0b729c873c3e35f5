"""What input a zoo model expects, in timm's ``pretrained_cfg`` fields: CIFAR-10's image size and
normalisation, so that ``timm.data.resolve_data_config(model=model)`` preprocesses as the trainer does."""

from __future__ import annotations

from typing import Any

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# Per-channel mean and standard deviation of CIFAR-10's training images, in [0, 1] (the trainer's too).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def pretrained_cfg(first_conv: str, num_classes: int = 10, in_chans: int = 3, img_size: int = 32) -> dict[str, Any]:
    """timm's pretrained_cfg fields for a model trained on CIFAR-10 images of ``img_size`` pixels.

    ``crop_pct=1.0``: evaluation resizes the shorter side to ``img_size`` and crops the centre square,
    so a 32x32 CIFAR image passes unchanged. zoo ships no weights: no url, file or hub id.
    """
    return dict(
        input_size=(in_chans, img_size, img_size),
        interpolation="bicubic",
        crop_pct=1.0,
        crop_mode="center",
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        num_classes=num_classes,
        first_conv=first_conv,
        classifier="head",
        label_names=CIFAR10_CLASSES if num_classes == len(CIFAR10_CLASSES) else None,
        license="mit",
    )
