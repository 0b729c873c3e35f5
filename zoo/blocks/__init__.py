"""Blocks other projects can import directly."""

from .resnet import BasicBlock, Bottleneck
from .metaformer import MetaFormerBlock
