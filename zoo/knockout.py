"""Residual blocks removed at test time: the branch skipped, the shortcut kept (Veit et al. 2016).

A network trained with stochastic depth has seen its blocks dropped; whether it therefore loses less
accuracy when blocks are removed for good is what ``python -m zoo.train.knockout`` measures with these
two functions. Blocks are named as ``model.named_modules()`` names them (``"stages.1.2"``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

from torch import nn

from .layers import DropPathBlock


def _blocks(model: nn.Module) -> dict[str, DropPathBlock]:
    return {name: m for name, m in model.named_modules() if isinstance(m, DropPathBlock)}


def _changes_shape(block: DropPathBlock) -> bool:
    """A block whose shortcut is not the identity (a CIFAR ResNet block that downsamples or widens):
    without its branch it would be a bare subsample or projection, not a shorter network."""
    shortcut = getattr(block, "shortcut", None)
    return shortcut is not None and not isinstance(shortcut, nn.Identity)


def removable_blocks(model: nn.Module) -> list[str]:
    """The names of the residual blocks of ``model`` that can be removed, in forward order: every
    block whose shortcut keeps the shape (all MetaFormer blocks; ResNet blocks but the first of a
    stage that downsamples or widens)."""
    return [name for name, block in _blocks(model).items() if not _changes_shape(block)]


def remove_blocks(model: nn.Module, names: Iterable[str]) -> nn.Module:
    """A copy of ``model`` in which each named block returns its shortcut alone (its branches are never
    called); ``model`` itself is left as it is. No names: an exact copy.

    Raises:
        ValueError: a name that is not a residual block of ``model``, or one that cannot be removed (its
            shortcut changes the shape); the message lists the blocks that can be.
    """
    names = list(names)
    blocks = _blocks(model)
    allowed = removable_blocks(model)
    for name in names:
        if name not in blocks:
            raise ValueError(
                f"{name!r} is not a residual block of {type(model).__name__}; removable: {', '.join(allowed)}"
            )
        if name not in allowed:
            raise ValueError(
                f"block {name!r} cannot be removed: its shortcut changes the shape (it downsamples or "
                f"widens); removable: {', '.join(allowed)}"
            )
    copied = copy.deepcopy(model)
    copied_blocks = _blocks(copied)
    for name in names:
        copied_blocks[name].removed = True
    return copied
