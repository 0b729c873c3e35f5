"""Registered models; importing this package registers them."""

from ._base import ZooModel
from .metaformer import MetaFormer
from .resnet_cifar import ResNetCifar

__all__ = [
    "ZooModel",
    "ResNetCifar",
    "MetaFormer",
]
