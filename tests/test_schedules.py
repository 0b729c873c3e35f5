"""Depth schedules: exact values, one block, bad input."""

import pytest
import torch

from zoo.layers import DEPTH_SCHEDULES, drop_path_rates

DEPTHS = [2, 2, 6, 2]


def approx_stages(rates, expected):
    assert [len(s) for s in rates] == [len(s) for s in expected]
    for got, want in zip(rates, expected):
        assert got == pytest.approx(want, abs=1e-7)


def split(flat, depths=DEPTHS):
    out, i = [], 0
    for d in depths:
        out.append(flat[i : i + d])
        i += d
    return out


def test_linear_is_linspace_from_zero_to_rate():
    rates = drop_path_rates(0.1, DEPTHS)
    approx_stages(rates, split(torch.linspace(0, 0.1, 12).tolist()))
    assert rates[0][0] == 0.0 and rates[-1][-1] == 0.1


def test_paper_is_huang_linear_decay():
    rates = drop_path_rates(0.5, DEPTHS, "paper")
    approx_stages(rates, split([0.5 * b / 12 for b in range(1, 13)]))
    assert rates[0][0] == pytest.approx(0.5 / 12) and rates[-1][-1] == 0.5


def test_uniform():
    assert drop_path_rates(0.2, DEPTHS, "uniform") == [[0.2] * d for d in DEPTHS]


def test_stagewise_is_one_rate_per_stage():
    rates = drop_path_rates(0.3, DEPTHS, "stagewise")
    approx_stages(rates, [[0.0] * 2, [0.1] * 2, [0.2] * 6, [0.3] * 2])
    assert rates[-1][-1] == 0.3


@pytest.mark.parametrize("schedule,expected", [("linear", 0.1), ("paper", 0.1), ("uniform", 0.1), ("stagewise", 0.1)])
def test_single_block_and_single_stage(schedule, expected):
    assert drop_path_rates(0.1, 1, schedule) == [expected]
    assert drop_path_rates(0.1, [1], schedule) == [[expected]]
    assert drop_path_rates(0.1, [3], "stagewise") == [[0.1] * 3]


def test_flat_depth_gives_flat_list():
    assert drop_path_rates(0.2, 5) == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])
    assert drop_path_rates(0.0, 4, "paper") == [0.0] * 4
    assert drop_path_rates(0.3, 0) == []


def test_unknown_schedule_lists_the_valid_ones():
    with pytest.raises(ValueError) as err:
        drop_path_rates(0.1, DEPTHS, "cosine")
    assert "'cosine'" in str(err.value)
    for name in DEPTH_SCHEDULES:
        assert name in str(err.value)


@pytest.mark.parametrize("bad", [-0.1, 1.01, float("nan"), "x"])
def test_bad_rate_names_the_argument(bad):
    with pytest.raises(ValueError, match="drop_path_rate"):
        drop_path_rates(bad, DEPTHS)


@pytest.mark.parametrize("bad", [[2, -1], [2.5], -3, [True]])
def test_bad_depths(bad):
    with pytest.raises(ValueError, match="depths"):
        drop_path_rates(0.1, bad)
