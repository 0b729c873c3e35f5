"""Training-time drop schedules: the factor per epoch for each schedule, and changing a live model's
rates without torch.compile recompiling."""

import pytest
import torch
from torch import nn

import zoo
from zoo.layers import (
    EARLY_MODES,
    TIME_SCHEDULES,
    DropPath,
    DropPathBlock,
    block_drop_path_rates,
    set_drop_path_factor,
    time_factor,
)

CUTOFF = 4.0
EPOCHS = range(8)


@pytest.mark.parametrize(
    "schedule,early_mode,expected",
    [
        ("constant", "constant", [1, 1, 1, 1, 1, 1, 1, 1]),
        ("early", "constant", [1, 1, 1, 1, 0, 0, 0, 0]),
        ("early", "linear", [1, 0.75, 0.5, 0.25, 0, 0, 0, 0]),
        ("late", "constant", [0, 0, 0, 0, 1, 1, 1, 1]),
        ("ramp", "constant", [0, 0.25, 0.5, 0.75, 1, 1, 1, 1]),
    ],
)
def test_factor_per_epoch(schedule, early_mode, expected):
    assert [time_factor(schedule, e, CUTOFF, early_mode) for e in EPOCHS] == pytest.approx(expected, abs=0)


@pytest.mark.parametrize(
    "schedule,early_mode,epoch,expected",
    [
        ("early", "linear", 1.5, 0.625),
        ("ramp", "constant", 2.5, 0.625),
        ("early", "constant", 3.99, 1.0),
        ("late", "constant", 3.99, 0.0),
        ("late", "constant", 4.0, 1.0),
    ],
)
def test_fractional_epochs(schedule, early_mode, epoch, expected):
    # train.py passes step / steps_per_epoch, so the factor moves within an epoch.
    assert time_factor(schedule, epoch, CUTOFF, early_mode) == pytest.approx(expected, abs=1e-12)


def test_early_mode_only_matters_for_early():
    for schedule in ("constant", "late", "ramp"):
        assert [time_factor(schedule, e, CUTOFF, "linear") for e in EPOCHS] == [
            time_factor(schedule, e, CUTOFF, "constant") for e in EPOCHS
        ]


def test_zero_cutoff():
    assert time_factor("early", 0, 0) == 0.0
    assert time_factor("early", 0, 0, "linear") == 0.0
    assert time_factor("late", 0, 0) == 1.0
    assert time_factor("ramp", 0, 0) == 1.0


def test_factor_stays_in_unit_interval():
    for schedule in TIME_SCHEDULES:
        for mode in EARLY_MODES:
            for step in range(200):
                assert 0.0 <= time_factor(schedule, step / 10, 7.3, mode) <= 1.0


@pytest.mark.parametrize(
    "args,words",
    [
        (("sometimes", 0, 1), ["drop_path_time_schedule", "'sometimes'", "constant, early, late, ramp"]),
        (("early", 0, 1, "cubic"), ["drop_path_time_early_mode", "'cubic'", "constant, linear"]),
        (("late", 0, -1), ["drop_path_time_cutoff", "-1"]),
    ],
)
def test_bad_values_are_named(args, words):
    with pytest.raises(ValueError) as info:
        time_factor(*args)
    for word in words:
        assert word in str(info.value)


# ---------------------------------------------------------------- no recompilation on a rate change


class TinyBlock(DropPathBlock):
    def __init__(self, drop_path: float):
        super().__init__(drop_path)
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return self.residual(x, x, self.fc)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(TinyBlock(0.1), TinyBlock(0.2))
        self.drop = DropPath(0.3)

    def forward(self, x):
        return self.drop(self.blocks(x))


class CountingBackend:
    """A torch.compile backend that counts the graphs it is asked to compile and runs them eagerly."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return gm.forward


def test_rate_change_does_not_recompile(fresh_dynamo):
    torch.manual_seed(0)
    model = Tiny().train()
    backend = CountingBackend()
    compiled = torch.compile(model, backend=backend)
    x = torch.randn(16, 8)
    compiled(x)
    graphs = backend.graphs
    assert graphs >= 1
    for step, factor in enumerate([0.9, 0.5, 0.25, 0.01, 0.7]):  # what a time schedule does each step
        set_drop_path_factor(model, factor)
        model.drop.drop_prob = 0.3 * factor
        compiled(x)
        assert block_drop_path_rates(model) == pytest.approx([0.1 * factor, 0.2 * factor])
    assert backend.graphs == graphs, "changing drop path rates recompiled the model"

    # The compiled graph reads the new rate rather than a constant baked in at the first call:
    # at rate 1 every branch and the outer DropPath drop everything.
    for block in model.blocks:
        block.drop_path.drop_prob = 1.0
    model.drop.drop_prob = 1.0
    assert torch.equal(compiled(x), torch.zeros_like(x))
    model.drop.drop_prob = 1e-7  # keeps (almost) surely, scale 1 / (1 - 1e-7)
    assert torch.allclose(compiled(x), x, atol=1e-5)
    assert backend.graphs == graphs


def test_the_model_owns_its_factor():
    """set_drop_path_factor scales the rates the model was built with (not the ones installed now),
    so factors do not compound and 1.0 restores the built rates; a bad factor is refused."""
    model = zoo.create_model("resnet8", drop_path_rate=0.3)
    built = model.drop_path_rates()
    assert built == pytest.approx([0.0, 0.15, 0.3])
    model.set_drop_path_factor(0.5)
    model.set_drop_path_factor(0.5)
    assert model.drop_path_rates() == pytest.approx([0.0, 0.075, 0.15]) and model.drop_path_factor == 0.5
    model.set_drop_path_factor(0.0)
    assert model.drop_path_rates() == [0.0, 0.0, 0.0]
    model.set_drop_path_factor(1.0)
    assert model.drop_path_rates() == pytest.approx(built)
    with pytest.raises(ValueError, match=r"drop_path_factor must be in \[0, 1\], got 1.5"):
        model.set_drop_path_factor(1.5)
    assert model.drop_path_rates() == pytest.approx(built)


@pytest.mark.parametrize("first, then", [("function", "method"), ("method", "function")])
def test_the_function_and_the_method_share_one_installed_factor(first, then):
    """zoo.layers.set_drop_path_factor and model.set_drop_path_factor install the same factor, so either
    one undoes the other, in both orders."""
    set_factor = {"function": lambda m, f: set_drop_path_factor(m, f), "method": lambda m, f: m.set_drop_path_factor(f)}
    model = zoo.create_model("resnet8", drop_path_rate=0.3)
    set_factor[first](model, 0.5)
    assert model.drop_path_rates() == pytest.approx([0.0, 0.075, 0.15]) and model.drop_path_factor == 0.5
    set_factor[then](model, 1.0)
    assert model.drop_path_rates() == pytest.approx([0.0, 0.15, 0.3]) and model.drop_path_factor == 1.0
    set_factor[first](model, 0.5)
    set_factor[then](model, 0.5)  # asked again: nothing changes
    assert model.drop_path_rates() == pytest.approx([0.0, 0.075, 0.15])
