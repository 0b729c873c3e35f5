"""The drop path benchmark's own machinery (the timings themselves belong to the benchmark run)."""

import importlib.util

import torch

from conftest import REPO
from zoo.layers import can_overwrite

spec = importlib.util.spec_from_file_location("drop_path_bench", REPO / "benchmarks" / "drop_path.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_branch_output_takes_the_in_place_path_and_passes_gradients():
    """The op table's branch must be one the in-place form may overwrite (as a block's is), or its
    in-place row would silently time the out-of-place fallback."""
    x = torch.randn(4, 3, requires_grad=True)
    b = torch.randn(4, 3, requires_grad=True)
    branch = bench.branch_output(b)
    assert can_overwrite(branch, x) and branch.data_ptr() == b.data_ptr()
    (gb,) = torch.autograd.grad((branch * 2).sum(), b)
    assert torch.equal(gb, torch.full_like(b, 2.0))


def test_round_robin_alternates_order_and_warms_up_interleaved():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    times = bench.round_robin(fns, torch.device("cpu"), repeats=2, inner=1, warmup=2)
    assert calls == list("abcabc" + "abc" + "cba")
    assert {k: len(v) for k, v in times.items()} == {"a": 2, "b": 2, "c": 2}


def test_paired_ratio_is_the_median_of_per_repeat_ratios():
    # a slow phase (repeat 2) hits both sides of its pair, so it does not move the ratio
    assert bench.paired_ratio([1.0, 10.0, 1.2], [2.0, 20.0, 2.0]) == 0.5
