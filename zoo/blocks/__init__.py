"""Blocks other projects can import directly."""

from .metaformer import MetaFormerBlock
from .resnet import BasicBlock, Bottleneck

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "MetaFormerBlock",
]
