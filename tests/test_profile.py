"""Parameter and FLOP counting used for the README's model table."""

from types import SimpleNamespace

import pytest
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


def test_time_train_step_is_the_median_of_the_timed_passes(monkeypatch):
    """Warm-up passes are run but not timed; the result is the median of the timed forward + backward
    passes, read from a fake clock (timings themselves belong in benchmarks, not tests)."""
    from zoo import profile

    model = zoo.create_model("resnet8").eval()
    batches = []
    model.register_forward_hook(lambda m, args, out: batches.append(args[0].shape))
    ticks = iter([0, 100, 103, 200, 201, 300, 302])  # the warm-up pass reads it once; then 3, 1 and 2 seconds
    monkeypatch.setattr(profile, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))  # zoo.profile's clock only
    assert time_train_step(model, batch=4, repeats=3, warmup=1) == 2
    assert batches == [(4, 3, 32, 32)] * 4 and model.training
    assert all(p.grad is not None for p in model.parameters())
