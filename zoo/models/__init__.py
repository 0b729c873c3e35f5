"""Registered models; importing this package registers them."""

from ._base import ZooModel
from .resnet_cifar import ResNetCifar
from .metaformer import MetaFormer
