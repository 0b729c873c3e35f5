"""Parameter and FLOP counting used for the README's model table."""

import pytest
import torch
from torch import nn

import zoo
from zoo.profile import count_flops, count_params, time_train_step


def test_counts_on_a_known_layer():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    assert count_params(model) == 3 * 32 * 32 * 10 + 10
    assert count_flops(model) == 2 * 3 * 32 * 32 * 10  # one multiply-add = 2 FLOPs


def test_resnet20_matches_the_known_cost():
    # ResNet-20 on CIFAR is about 41M multiply-adds.
    model = zoo.create_model("resnet20")
    assert count_flops(model) / 2 == pytest.approx(41e6, rel=0.03)
    assert model.training, "counting must not leave the model in eval mode"


def test_time_train_step_returns_seconds():
    assert 0 < time_train_step(zoo.create_model("resnet8"), batch=4, repeats=2, warmup=1) < 10
