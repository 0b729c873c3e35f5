"""Benchmark the residual drop path forms and the compute-skipping mode, on the CPU or a GPU.

Part 1, one table: ``shortcut + drop_path(branch)`` forward + backward, fp32, for the seed formula,
timm, torchvision, zoo mask, zoo fused (``drop_path_add``) and zoo skip with an identity branch (its
gather and scatter alone, both draws). Ratios are to timm's ``x + DropPath(p)(b)`` measured in the
same process (to zoo mask when timm is missing). Goal: zoo fused <= 0.85x at every shape.

Part 2, training steps (forward, backward, SGD): resnet110 at drop_path_rate=0.5 with the "paper"
schedule, skip (the draw "auto" picks: Bernoulli on the CPU, fixed on a GPU) and the other draw
against mask; goal on the CPU: skip <= 0.85x of mask at batch 128. On a GPU also at batch 512 and
compiled (``--compile`` adds compiled steps on the CPU too). "metaformer" at 0.1, auto against mask.

Part 3 (``--sweep``): one block, skip / mask against the rate, the measurement behind
``zoo.layers.residual.AUTO_SKIP_MIN_RATE`` on this machine.

Variants are interleaved: every repeat runs each once, in a new seeded random order, so slow phases
of a shared machine hit every variant alike and none always follows the same one (at sizes near the
cache, a form that runs right after one reading the same inputs finds them in cache). Times are
summarised by their median, ratios by the median of the per-repeat ratios. On CUDA the timings come
from CUDA events.

    python benchmarks/drop_path.py               # full run (about 8 minutes on the 2-core CPU)
    python benchmarks/drop_path.py --quick       # a few repeats, while developing
    python benchmarks/drop_path.py --device cuda # GPU: batch 128 and 512, eager and compiled
    python benchmarks/drop_path.py --threads 1 --clock process   # on a loaded (shared) machine
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

import zoo
from zoo.layers import DropPath, drop_path_add
from zoo.layers.residual import AUTO_SKIP_MIN_RATE
from zoo.profile import cpu_model

try:
    import timm
    from timm.layers import DropPath as TimmDropPath
except ImportError:  # the timm row is skipped
    timm = None
try:
    import torchvision
    from torchvision.ops import StochasticDepth
except ImportError:  # the torchvision row is skipped
    torchvision = None

OP_SHAPES = ((128, 64, 32, 32), (128, 320, 8, 8), (128, 197, 384))
FUSED_GOAL, SKIP_GOAL = 0.85, 0.85
FUSED = "zoo fused  drop_path_add"


# ----------------------------------------------------------------------------------------- timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS = {"wall": time.perf_counter, "process": time.process_time}
clock = time.perf_counter  # set from --clock in main()


def time_call(fn: Callable[[], object], device: torch.device, inner: int) -> float:
    """Milliseconds per call of ``fn``, averaged over ``inner`` back-to-back calls (CUDA events on a GPU;
    on the CPU wall time, or with ``--clock process`` this process's CPU time)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / inner
    t0 = clock()
    for _ in range(inner):
        fn()
    return (clock() - t0) * 1e3 / inner


def round_robin(
    fns: dict[str, Callable[[], object]],
    device: torch.device,
    repeats: int,
    inner: int,
    warmup: int = 2,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Time every ``fn`` once per repeat, in a new random order each repeat (seeded). The ``warmup``
    rounds are interleaved too: the allocator grows until it fits every variant's pattern in turn."""
    rng = random.Random(seed)
    order = list(fns.items())
    for _ in range(warmup):
        for _, fn in rng.sample(order, len(order)):
            fn()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in rng.sample(order, len(order)):
            times[name].append(time_call(fn, device, inner))
    return times


def paired_ratio(ts: list[float], base: list[float]) -> float:
    """Median over repeats of ``ts[i] / base[i]``: each pair ran in the same repeat, so a load phase of
    a shared machine that slows one repeat slows both sides of its ratio."""
    return statistics.median(t / b for t, b in zip(ts, base))


def spread(ts: list[float]) -> str:
    """Median and the half inter-quartile range, as 'median ± iqr/2'."""
    if len(ts) < 4:
        return f"{statistics.median(ts):.3f}"
    q = statistics.quantiles(ts, n=4)
    return f"{statistics.median(ts):.3f} ± {(q[2] - q[0]) / 2:.3f}"


# ------------------------------------------------------------------------------ part 1: the ops


def seed_formula(x: Tensor, keep_prob: float) -> Tensor:
    """The formula the project started from (the 2016-era implementation)."""
    mask = torch.floor(keep_prob + torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), device=x.device))
    return x.div(keep_prob) * mask


def op_variants(p: float, device: torch.device) -> dict[str, Callable[[Tensor, Tensor], Tensor]]:
    zoo_dp = DropPath(p).train().to(device)
    fixed = DropPath(p, skip_draw="fixed").train().to(device)
    bernoulli = DropPath(p, skip_draw="bernoulli").train().to(device)
    ops: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"x + b (no drop path, floor)": lambda x, b: x + b}
    ops["seed formula  x + b.div(k)*floor(k+rand)"] = lambda x, b: x + seed_formula(b, 1 - p)
    if timm is not None:
        timm_dp = TimmDropPath(p).train()
        ops["timm  x + DropPath(p)(b)"] = lambda x, b: x + timm_dp(b)
    if torchvision is not None:
        tv_sd = StochasticDepth(p, "row").train()
        ops["torchvision  x + StochasticDepth(p)(b)"] = lambda x, b: x + tv_sd(b)
    ops["zoo mask  x + DropPath(p)(b)"] = lambda x, b: x + zoo_dp(b)
    ops[FUSED] = lambda x, b: drop_path_add(x, b, p, training=True)
    ops["zoo skip bernoulli (identity branch)"] = lambda x, b: bernoulli.skip_add(x, b, lambda t: t)
    ops["zoo skip fixed (identity branch)"] = lambda x, b: fixed.skip_add(x, b, lambda t: t)
    return ops


def bench_ops(args, device: torch.device) -> list[tuple[str, str, float]]:
    """Print the op table; return (op, shape, ratio) rows for the goal check."""
    rows = []
    print(
        f"\n## Residual drop path ops: forward + backward, fp32, p = {args.drop_prob}, "
        f"{args.repeats} interleaved repeats of {args.inner} calls; ratio to timm x + DropPath(p)(b)"
    )
    print(f"{'op':44s} {'shape':18s} {'median ms ± iqr/2':>18s} {'ratio':>6s}")
    for shape in OP_SHAPES:
        x = torch.randn(shape, device=device, requires_grad=True)
        b = torch.randn(shape, device=device, requires_grad=True)
        g = torch.randn(shape, device=device)
        ops = op_variants(args.drop_prob, device)
        fns = {name: (lambda op=op: torch.autograd.grad(op(x, b), (x, b), g)) for name, op in ops.items()}
        times = round_robin(fns, device, args.repeats, args.inner)
        base_name = next((n for n in ops if n.startswith("timm")), "zoo mask  x + DropPath(p)(b)")
        for name, ts in times.items():
            ratio = paired_ratio(ts, times[base_name])
            rows.append((name, str(tuple(shape)), ratio))
            print(f"{name:44s} {str(tuple(shape)):18s} {spread(ts):>18s} {ratio:6.2f}x")
    return rows


# ---------------------------------------------------------------------- part 2: training steps


def train_step_fn(model: nn.Module, images: Tensor, labels: Tensor) -> Callable[[], None]:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(images), labels).backward()
        opt.step()

    return step


def step_variants(name: str, rate: float, modes: tuple[str, ...], batch: int, compiled: bool, device: torch.device):
    """One training step per ``mode`` ("mask", "skip", "skip bernoulli", ...: a drop path mode, then
    optionally the skip draw), each on its own copy of the same initial model."""
    schedule = "paper" if name.startswith("resnet") else "linear"
    torch.manual_seed(0)
    images = torch.randn(batch, 3, 32, 32, device=device)
    labels = torch.randint(0, 10, (batch,), device=device)
    fns = {}
    for mode in modes:
        drop_path_mode, _, draw = mode.partition(" ")
        torch.manual_seed(0)
        model = (
            zoo.create_model(
                name,
                drop_path_rate=rate,
                drop_path_schedule=schedule,
                drop_path_mode=drop_path_mode,
                drop_path_skip_draw=draw or "auto",
            )
            .to(device)
            .train()
        )
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        fns[mode] = train_step_fn(torch.compile(model) if compiled else model, images, labels)
    return fns


def bench_train(
    name: str, rate: float, modes: tuple[str, ...], batch: int, compiled: bool, args, device
) -> dict[str, float]:
    fns = step_variants(name, rate, modes, batch, compiled, device)
    print(
        f"\n## Training step (fwd + bwd + SGD): {name}, drop_path_rate={rate}, batch {batch}, "
        f"{'compiled' if compiled else 'eager'}, {args.train_repeats} interleaved repeats"
    )
    # warm-up rounds: compilation, cudnn autotuning, oneDNN kernels for skip mode's batch sizes, allocator growth
    times = round_robin(fns, device, args.train_repeats, inner=1, warmup=args.train_warmup)
    ratios = {m: paired_ratio(ts, times["mask"]) for m, ts in times.items()}
    for mode, ts in times.items():
        print(f"{mode:34s} {spread(ts):>18s} ms   ratio to mask {ratios[mode]:.3f}x")
    return ratios


# ----------------------------------------------------------------------------- part 3: sweep


def bench_sweep(args, device: torch.device) -> None:
    """skip / mask for one BasicBlock and one MLP block against the rate: where skipping pays."""
    from zoo.blocks.resnet import BasicBlock
    from zoo.layers import DropPathArgs, DropPathBlock

    class MlpBlock(DropPathBlock):
        def __init__(self, dim: int, drop_path: DropPathArgs):
            super().__init__(drop_path)
            self.norm = nn.LayerNorm(dim)
            self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

        def forward(self, x: Tensor) -> Tensor:
            return self.residual(x, x, lambda t: self.mlp(self.norm(t)))

    cases = {
        "BasicBlock 16ch (128,16,32,32)": (
            lambda r, m: BasicBlock(16, 16, drop_path=DropPathArgs(r, m)),
            (128, 16, 32, 32),
        ),
        "BasicBlock 64ch (128,64,8,8)": (
            lambda r, m: BasicBlock(64, 64, drop_path=DropPathArgs(r, m)),
            (128, 64, 8, 8),
        ),
        "MLP block (128,64,64)": (lambda r, m: MlpBlock(64, DropPathArgs(r, m)), (128, 64, 64)),
    }
    print(f"\n## Sweep: one block, fwd + bwd, skip / mask against the rate (AUTO_SKIP_MIN_RATE = {AUTO_SKIP_MIN_RATE})")
    rates = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5)
    print(f"{'block':32s} " + " ".join(f"p={r:<5}" for r in rates))
    for label, (make, shape) in cases.items():
        x = torch.randn(shape, device=device, requires_grad=True)
        ratios = []
        for r in rates:
            fns = {}
            for mode in ("mask", "skip"):
                torch.manual_seed(0)
                block = make(r, mode).to(device).train()
                fns[mode] = lambda block=block: block(x).sum().backward()
            times = round_robin(fns, device, max(3, args.repeats // 2), args.inner)
            ratios.append(paired_ratio(times["skip"], times["mask"]))
        print(f"{label:32s} " + " ".join(f"{q:7.2f}" for q in ratios))


# ----------------------------------------------------------------------------------------- main


def print_header(device: torch.device) -> None:
    print("# zoo drop path benchmark")
    print(
        f"torch {torch.__version__}, torchvision {torchvision.__version__ if torchvision else 'missing'}, "
        f"timm {timm.__version__ if timm else 'missing'}, python {platform.python_version()}"
    )
    print(
        f"machine: {platform.platform()}, CPU {cpu_model()} x {os.cpu_count()}, "
        f"load average {os.getloadavg()[0]:.2f} (1 min)"
    )
    print(
        f"torch threads: {torch.get_num_threads()}, device: {device}, clock: {clock.__name__}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
    )


def goal(label: str, value: float | None, limit: float) -> bool:
    if value is None:
        print(f"SKIP  {label}: not measured")
        return True
    ok = value <= limit
    print(f"{'PASS' if ok else 'FAIL'}  {label}: {value:.3f}x (goal <= {limit}x)")
    return ok


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--quick", action="store_true", help="few repeats, for development")
    ap.add_argument("--repeats", type=int, default=None, help="op table repeats (default 41; quick 4)")
    ap.add_argument("--inner", type=int, default=None, help="calls per timed op sample (default 3)")
    ap.add_argument("--train-repeats", type=int, default=None, help="training steps per mode (default 15; quick 3)")
    ap.add_argument("--train-warmup", type=int, default=3, help="untimed interleaved rounds of training steps")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="training batches (CPU 128; CUDA 128 512)")
    ap.add_argument("--compile", action="store_true", help="also time compiled training steps (always on CUDA)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument(
        "--clock",
        choices=tuple(CLOCKS),
        default="wall",
        help="CPU timing clock: wall, or process CPU time for a loaded machine",
    )
    ap.add_argument("--drop-prob", type=float, default=0.2, help="rate for the op table")
    ap.add_argument("--only", choices=("ops", "train", "sweep"), default=None, help="run one part")
    ap.add_argument("--sweep", action="store_true", help="also run the per-block rate sweep")
    args = ap.parse_args(argv)
    args.repeats = args.repeats or (4 if args.quick else 41)
    args.inner = args.inner or (2 if args.quick else 3)
    args.train_repeats = args.train_repeats or (3 if args.quick else 15)
    args.batch_sizes = args.batch_sizes or ([128, 512] if args.device == "cuda" else [128])
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    global clock
    clock = CLOCKS[args.clock]
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda asked for, but CUDA is not available", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    print_header(device)

    results: dict[str, float | None] = {}
    if args.only in (None, "ops"):
        rows = bench_ops(args, device)
        results["fused"] = max(r for n, _, r in rows if n == FUSED)
    if args.only in (None, "train"):
        other = "skip fixed" if device.type == "cpu" else "skip bernoulli"
        for compiled in (False, True) if (args.compile or device.type == "cuda") else (False,):
            for batch in args.batch_sizes:
                res = bench_train("resnet110", 0.5, ("mask", "skip", other), batch, compiled, args, device)
                if not compiled and batch == 128:
                    results["skip"] = res["skip"]
        bench_train("metaformer", 0.1, ("mask", "auto"), args.batch_sizes[0], False, args, device)
    if args.sweep or args.only == "sweep":
        bench_sweep(args, device)

    print("\n## Goals (set for the CPU; on a GPU the numbers are reported, not judged)")
    ok = True
    if "fused" in results:
        ok &= goal("zoo fused drop_path_add vs timm x + DropPath(p)(b), worst shape", results["fused"], FUSED_GOAL)
    if "skip" in results:
        ok &= goal("resnet110 p=0.5 paper training step at batch 128, skip / mask", results["skip"], SKIP_GOAL)
    return 0 if ok or device.type == "cuda" else 1


if __name__ == "__main__":
    sys.exit(main())
