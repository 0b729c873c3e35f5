"""Where a CPU training step goes: a model's step (forward, backward, AdamW; batch 128, random 32x32
images) in fp32 NCHW against the precision ``amp=auto channels_last=auto`` resolves to on this CPU
(for a model with SepConv mixers under bf16 autocast, also that precision with their depthwise convolution in
bf16 too, which zoo keeps in fp32 on a CPU), interleaved, and the default step's most expensive ops (torch.profiler,
self CPU time).

Each round times ``--steps`` steps of every variant, in a new random order each round (drop_path.py's
``round_robin``); a time is the median over rounds, the ratio the median of the per-round ratios. It prints the CPU, the versions and the load average with the tables.

    python benchmarks/cpu_step_profile.py                      # metaformer, about 1 minute on 2 cores
    python benchmarks/cpu_step_profile.py --models resnet20 metaformer
    python benchmarks/cpu_step_profile.py --tiny               # seconds: correctness only (CI)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from drop_path import paired_ratio, round_robin  # noqa: E402

import zoo  # noqa: E402
from zoo.layers.mixers import SepConv  # noqa: E402
from zoo.profile import cpu_model  # noqa: E402
from zoo.train.loop.precision import Precision, resolve_precision  # noqa: E402


def step_fn(name: str, precision: Precision, batch: int, depthwise_bf16: bool = False):
    """One training step of a fresh ``name`` (drop_path_rate 0.1, as configs/train.yaml) under ``precision``
    (``depthwise_bf16``: its SepConv mixers' depthwise convolutions left to autocast too)."""
    torch.manual_seed(0)
    model = zoo.create_model(name, drop_path_rate=0.1).train()
    for module in model.modules():
        if isinstance(module, SepConv):
            module.cpu_depthwise_fp32 = not depthwise_bf16
    layout = torch.channels_last if precision.channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=layout)
    y = torch.randint(0, 10, (batch,))

    def step() -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision.amp):
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def top_ops(step, n: int) -> list[tuple[str, float, float]]:
    """The ``n`` ops of two steps with the most self CPU time: (name, share of the total, ms per step)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(2):
            step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    ranked = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:n]
    return [(e.key, e.self_cpu_time_total / total, e.self_cpu_time_total / 2e3) for e in ranked]


def report(name: str, args: argparse.Namespace) -> list[str]:
    default = resolve_precision("auto", "auto", torch.device("cpu"))
    variants = {"fp32, NCHW": Precision(False, False, "fp32 NCHW"), f"default ({default.describe()})": default}
    steps = {k: step_fn(name, p, args.batch) for k, p in variants.items()}
    with torch.device("meta"):  # no memory or init cost: only its module types are read
        has_sepconv = any(isinstance(m, SepConv) for m in zoo.create_model(name).modules())
    if default.amp and has_sepconv:
        steps["default, depthwise conv in bf16 too"] = step_fn(name, default, args.batch, depthwise_bf16=True)
    times = round_robin(steps, torch.device("cpu"), args.rounds, args.steps, warmup=1)
    base = times["fp32, NCHW"]
    lines = [f"\n{name}, batch {args.batch}: ms per step, median of {args.rounds} rounds of {args.steps} steps\n"]
    lines += ["| variant | ms per step, median [min, max] | vs fp32 NCHW |", "|---|---|---|"]
    for key, t in times.items():
        lines.append(
            f"| {key} | {statistics.median(t):.1f} [{min(t):.1f}, {max(t):.1f}] | {paired_ratio(t, base):.3f}x |"
        )
    lines += [f"\n{name}, the default step's top ops (self CPU time, 2 steps profiled)\n"]
    lines += ["| op | share of the step | ms per step |", "|---|---|---|"]
    lines += [f"| {op} | {share:.1%} | {ms:.1f} |" for op, share, ms in top_ops(steps[list(steps)[1]], args.top)]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["metaformer"])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3, help="steps per variant per round")
    ap.add_argument("--top", type=int, default=12, help="ops listed")
    ap.add_argument(
        "--tiny",
        action="store_true",
        help="resnet8 and convformer_tiny, batch 4, 1 round of 1 step: checks that it runs",
    )
    args = ap.parse_args(argv)
    if args.tiny:
        args.models, args.batch, args.rounds, args.steps, args.top = ["resnet8", "convformer_tiny"], 4, 1, 1, 3
    print(f"# CPU training step, {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"CPU {cpu_model()}, {torch.get_num_threads()} torch threads; load average {os.getloadavg()[0]:.2f}")
    print(f"torch {torch.__version__}, python {sys.version.split()[0]}")
    for name in args.models:
        print("\n".join(report(name, args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
