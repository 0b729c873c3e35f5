"""The benchmarks' own machinery (the timings themselves belong to the benchmark runs)."""

import torch

from conftest import REPO, load_script

bench = load_script(REPO / "benchmarks" / "drop_path.py", "drop_path_bench")


def test_every_op_variant_is_a_residual_with_a_drop_path():
    """Each row of the op table computes shortcut + branch with whole samples dropped (or none, for the
    floor), so the table compares like with like."""
    torch.manual_seed(0)
    x, b = torch.randn(64, 3, 4), torch.rand(64, 3, 4) + 1.0
    for name, op in bench.op_variants(0.5, torch.device("cpu")).items():
        added = op(x, b) - x  # per sample: 0 (dropped) or the branch times one factor
        factors = (added / b).flatten(1)
        assert torch.allclose(factors, factors[:, :1], atol=1e-5), name
        kept = factors[:, 0] != 0
        if name.startswith("x + b"):
            assert kept.all()
        else:
            assert 0 < kept.sum() < 64, name


def test_round_robin_shuffles_each_repeat_and_warms_up_interleaved():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abcd"}
    times = bench.round_robin(fns, torch.device("cpu"), repeats=30, inner=2, warmup=2, seed=1)
    rounds = [calls[i : i + 4] for i in range(0, 8, 4)] + [calls[i : i + 8 : 2] for i in range(8, len(calls), 8)]
    assert len(calls) == 4 * 2 + 4 * 30 * 2 and all(sorted(r) == list("abcd") for r in rounds)
    assert all(calls[i] == calls[i + 1] for i in range(8, len(calls), 2))  # inner calls back to back
    assert len({"".join(r) for r in rounds}) > 5  # the order changes from repeat to repeat
    assert {k: len(v) for k, v in times.items()} == {name: 30 for name in "abcd"}
    # the same seed gives the same orders, so a run can be repeated as it was
    again = []
    bench.round_robin({n: (lambda n=n: again.append(n)) for n in "abcd"}, torch.device("cpu"), 30, 2, 2, seed=1)
    assert again == calls


def test_paired_ratio_is_the_median_of_per_repeat_ratios():
    # a slow phase (repeat 2) hits both sides of its pair, so it does not move the ratio
    assert bench.paired_ratio([1.0, 10.0, 1.2], [2.0, 20.0, 2.0]) == 0.5


def test_cpu_step_profile_times_the_precisions_and_lists_the_ops_at_a_tiny_size(capsys):
    profile = load_script(REPO / "benchmarks" / "cpu_step_profile.py", "cpu_step_profile")
    assert profile.main(["--tiny"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    assert rows[1].startswith("| fp32, NCHW |") and rows[1].endswith("| 1.000x |")
    assert rows[2].startswith("| default (amp=")
    assert rows[3] == "| op | share of the step | ms per step |" and rows[7].startswith("| variant |")  # top 3 ops
    # the second model (convformer_tiny) has SepConv mixers: under bf16 autocast, the bf16 depthwise variant too
    bf16 = "amp=bf16" in rows[2]
    variants = [r.split(" |")[0] for r in rows[8 : 11 if bf16 else 10]]
    assert variants == ["| fp32, NCHW", rows[2].split(" |")[0]] + ["| default, depthwise conv in bf16 too"] * bf16
    assert len(rows) == (15 if bf16 else 14)
