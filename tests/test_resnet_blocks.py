"""The residual blocks on their own, as another network would use them."""

import pytest
import torch

from zoo.blocks import BasicBlock, Bottleneck
from zoo.layers import DropPath


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_basic_block_shapes_and_shortcuts(shortcut):
    block = BasicBlock(16, 32, stride=2, drop_path=0.2, shortcut=shortcut)
    assert isinstance(block.drop_path, DropPath) and block.drop_path_rate == 0.2
    assert block(torch.randn(2, 16, 8, 8)).shape == (2, 32, 4, 4)
    # A pads channels and subsamples (no parameters); B projects with a strided 1x1 convolution and BN.
    projection = [(type(m), tuple(m.weight.shape)) for m in block.shortcut.modules() if hasattr(m, "weight")]
    assert projection == ([] if shortcut == "A" else [(torch.nn.Conv2d, (32, 16, 1, 1)), (torch.nn.BatchNorm2d, (32,))])
    assert BasicBlock(8, 8).drop_path is None


def test_padding_shortcut_keeps_the_input_in_the_middle_channels():
    block = BasicBlock(4, 8, stride=2, shortcut="A")
    x = torch.randn(1, 4, 4, 4)
    y = block.shortcut(x)
    assert y.shape == (1, 8, 2, 2)
    assert torch.equal(y[:, 2:6], x[:, :, ::2, ::2]) and (y[:, :2] == 0).all() and (y[:, 6:] == 0).all()


def test_bottleneck_expands_by_four():
    block = Bottleneck(64, 16, stride=1, drop_path=0.1)
    assert block(torch.randn(2, 64, 4, 4)).shape == (2, 64, 4, 4)
    assert Bottleneck(16, 16, stride=2)(torch.randn(2, 16, 8, 8)).shape == (2, 64, 4, 4)


def test_dropped_block_is_its_shortcut():
    torch.manual_seed(0)
    block = BasicBlock(8, 8, drop_path=1.0).train()
    x = torch.randn(3, 8, 4, 4)
    assert torch.equal(block(x), torch.relu(x))


def test_bad_block_arguments():
    with pytest.raises(ValueError, match="'C'"):
        BasicBlock(8, 16, stride=2, shortcut="C")
    with pytest.raises(ValueError, match="drop_path"):
        BasicBlock(8, 8, drop_path=-0.5)
