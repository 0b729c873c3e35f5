"""Blocks other projects can import directly."""

from .resnet import BasicBlock, Bottleneck
