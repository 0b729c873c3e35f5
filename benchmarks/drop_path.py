"""Benchmark the residual drop path forms and the compute-skipping mode (issue 5).

Part 1, one table: ``shortcut + drop_path(branch)`` forward + backward, fp32, for the seed formula,
timm, torchvision, zoo mask, zoo fused (``drop_path_add``, out of place and in place as every zoo
block calls it) and zoo skip (identity branch, so it shows the gather + scatter overhead alone).
Ratios are to timm's ``x + DropPath(p)(b)`` measured in the same process (to zoo mask when timm is
missing). The branch is what a block hands over: a non-leaf tensor that requires grad (see
``branch_output``; it costs nothing). Goal: zoo fused, as blocks call it, <= 0.7x.

Part 2, training steps (forward, backward, SGD): resnet110, drop_path_rate=0.5, schedule "paper",
skip <= 0.85x of mask; "metaformer" at 0.1, auto no more than 3% slower than mask. A third line, mask
with every residual sum out of place, shows what the in-place sum saves in a whole step.

Part 3 (``--sweep``): one block, skip / mask against the rate: the measurement behind
``zoo.layers.residual.AUTO_SKIP_MIN_RATE``.

Variants are interleaved across repeats (a new seeded random order each repeat); times
are summarised by their median and ratios by the median of the per-repeat ratios, so machine noise
hits every variant alike. On CUDA the timings come from CUDA events.

    python benchmarks/drop_path.py               # full run
    python benchmarks/drop_path.py --quick       # a few repeats, while developing
    python benchmarks/drop_path.py --device cuda --repeats 50
    python benchmarks/drop_path.py --threads 1 --clock process   # on a loaded (shared) machine

By default the process keeps freed memory (``zoo.malloc.retain_freed_memory``, as train.py does);
``--malloc glibc`` measures with glibc's defaults, where big tensors are page-faulted in on every
allocation and the fault cost, not the arithmetic, decides the op table.

On a loaded machine, wall time with several intra-op threads mostly measures how often a parallel
region waits for a descheduled thread (tens of ms each), which penalises forms with more kernels;
one thread and the process CPU clock measure the work itself.
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
from unittest import mock

import torch
from torch import Tensor, nn

import zoo
import zoo.models  # noqa: F401  (registers the models)
from zoo.layers import DropPath, drop_path_add
from zoo.layers.residual import AUTO_SKIP_MIN_RATE
from zoo.malloc import retain_freed_memory

try:
    import timm
    from timm.layers import DropPath as TimmDropPath
except ImportError:  # the timm column is skipped
    timm = None
try:
    import torchvision
    from torchvision.ops import StochasticDepth
except ImportError:  # the torchvision column is skipped
    torchvision = None

OP_SHAPES = ((128, 64, 32, 32), (128, 320, 8, 8), (128, 197, 384))
FUSED_GOAL, SKIP_GOAL, AUTO_GOAL = 0.7, 0.85, 1.03
FUSED_INPLACE = "zoo fused  in place (as blocks call it)"


# ----------------------------------------------------------------------------------------- timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS = {"wall": time.perf_counter, "process": time.process_time}
clock = time.perf_counter  # set from --clock in main()


def time_call(fn: Callable[[], object], device: torch.device, inner: int) -> float:
    """Milliseconds per call of ``fn``, averaged over ``inner`` back-to-back calls.

    On CPU the clock is wall time, or with ``--clock process`` this process's CPU time, which a
    loaded machine disturbs less (use it with ``--threads 1``: idle worker threads spin).
    """
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
    """Time every ``fn`` once per repeat, in a new random order each repeat (seeded), so slow phases
    of a loaded machine hit all alike and no variant always follows the same one.

    The order matters at sizes near the cache: a variant that runs right after one reading the same
    inputs finds them in cache. With the order reversed every other repeat instead, the in-place form
    at (128, 320, 8, 8) always followed either the out-of-place form (same x and grad: hot) or skip
    (which churns the cache), and timm always followed a form reading its inputs: in-place / timm
    measured 0.60x on the even repeats and 0.70x on the odd ones, with a per-repeat SD of 0.11 to
    0.13; shuffled, the same pair gave 0.66x with an SD of 0.07 (60 to 80 repeats each, 2026-11-26).

    The ``warmup`` rounds are interleaved too: the heap grows (and page-faults) until it fits every
    variant's pattern of allocations in turn, which took a few rounds of training steps here; warming
    each variant on its own left the growth inside the first timed rounds."""
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


def branch_output(b: Tensor) -> Tensor:
    """``b`` as a block's branch hands it over: a non-leaf tensor whose maker keeps nothing for
    backward. ``_unsafe_view`` is what a Linear layer's output already is (3-D input); it shares
    ``b``'s memory and costs nothing, and every op gets the same, so the comparison stays like for like."""
    return torch.ops.aten._unsafe_view(b, b.shape)


def op_variants(p: float) -> dict[str, Callable[[Tensor, Tensor], Tensor]]:
    zoo_dp = DropPath(p).train()
    ops: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"x + b (no drop path, floor)": lambda x, b: x + b}
    ops["seed formula  x + b.div(k)*floor(k+rand)"] = lambda x, b: x + seed_formula(b, 1 - p)
    if timm is not None:
        timm_dp = TimmDropPath(p).train()
        ops["timm  x + DropPath(p)(b)"] = lambda x, b: x + timm_dp(b)
    if torchvision is not None:
        tv_sd = StochasticDepth(p, "row").train()
        ops["torchvision  x + StochasticDepth(p)(b)"] = lambda x, b: x + tv_sd(b)
    ops["zoo mask  x + DropPath(p)(b)"] = lambda x, b: x + zoo_dp(b)
    ops["zoo fused  drop_path_add"] = lambda x, b: drop_path_add(x, b, p, training=True)
    ops[FUSED_INPLACE] = lambda x, b: drop_path_add(x, b, p, training=True, inplace=True)
    ops["zoo skip  (identity branch)"] = lambda x, b: zoo_dp.skip_add(x, b, lambda t: t)
    return ops


def bench_ops(args, device: torch.device) -> list[tuple[str, str, str, float]]:
    """Print the op table; return (op, shape, ratio) rows for the goal check."""
    rows = []
    print(f"\n## Residual drop path ops: forward + backward, fp32, p = {args.drop_prob}, "
          f"{args.repeats} interleaved repeats of {args.inner} calls; ratio to timm x + DropPath(p)(b)")
    print(f"{'op':44s} {'shape':18s} {'device':6s} {'median ms ± iqr/2':>18s} {'ratio':>6s}")
    for shape in OP_SHAPES:
        x = torch.randn(shape, device=device, requires_grad=True)
        g = torch.randn(shape, device=device)
        ops = op_variants(args.drop_prob)
        # one branch leaf per op: the in-place form writes into its branch (the values grow by at
        # most 1 / keep_prob per call, far from overflow in the calls timed here)
        leaves = {name: torch.randn(shape, device=device, requires_grad=True) for name in ops}

        def step(op, b: Tensor) -> None:
            torch.autograd.grad(op(x, branch_output(b)), (x, b), g)

        fns = {name: (lambda op=op, b=leaves[name]: step(op, b)) for name, op in ops.items()}
        times = round_robin(fns, device, args.repeats, args.inner)
        base_name = next((n for n in ops if n.startswith("timm")), "zoo mask  x + DropPath(p)(b)")
        for name, ts in times.items():
            ratio = paired_ratio(ts, times[base_name])
            rows.append((name, str(tuple(shape)), base_name, ratio))
            print(f"{name:44s} {str(tuple(shape)):18s} {device.type:6s} {spread(ts):>18s} {ratio:6.2f}x")
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


OUT_OF_PLACE = "mask (residual sums out of place)"  # what writing into the branch output saves


def without_inplace(fn: Callable[[], None]) -> Callable[[], None]:
    """``fn`` with every block's residual sum in a new tensor (``can_overwrite`` answers no)."""

    def run() -> None:
        with mock.patch.object(zoo.layers.drop, "can_overwrite", lambda branch, shortcut: False):
            fn()

    return run


def bench_train(
    name: str, rate: float, modes: tuple[str, ...], args, device: torch.device
) -> dict[str, float] | None:
    if not zoo.is_model(name):
        print(f"\n## {name}: SKIPPED (model {name!r} is not registered yet)")
        return None
    schedule = "paper" if name.startswith("resnet") else "linear"
    torch.manual_seed(0)
    images = torch.randn(args.batch_size, 3, 32, 32, device=device)
    labels = torch.randint(0, 10, (args.batch_size,), device=device)
    fns = {}
    for mode in modes + (OUT_OF_PLACE,):
        torch.manual_seed(0)
        model = zoo.create_model(
            name, drop_path_rate=rate, drop_path_schedule=schedule, drop_path_mode=mode.split()[0]
        ).to(device).train()
        fns[mode] = train_step_fn(model, images, labels)
    fns[OUT_OF_PLACE] = without_inplace(fns[OUT_OF_PLACE])
    repeats = args.train_repeats
    print(f"\n## Training step (fwd + bwd + SGD): {name}, drop_path_rate={rate}, schedule={schedule}, "
          f"batch {args.batch_size}, {repeats} interleaved repeats")
    # warm-up rounds: skip mode meets new batch sizes, whose oneDNN kernels are built once, and the
    # heap must grow to fit all modes' allocations (mask steps page-faulted 10^5 pages in round 1)
    times = round_robin(fns, device, repeats, inner=1, warmup=args.train_warmup)
    ratios = {m: paired_ratio(ts, times["mask"]) for m, ts in times.items()}
    for mode, ts in times.items():
        print(f"{mode:34s} {spread(ts):>18s} ms   ratio to mask {ratios[mode]:.3f}x")
    return ratios


# ----------------------------------------------------------------------------- part 3: sweep


def bench_sweep(args, device: torch.device) -> None:
    """skip / mask for one BasicBlock and one MLP block against the rate: where skipping pays."""
    from zoo.blocks.resnet import BasicBlock
    from zoo.layers import DropPathBlock

    class MlpBlock(DropPathBlock):
        def __init__(self, dim: int, drop_path: float, drop_path_mode: str):
            super().__init__(drop_path, drop_path_mode)
            self.norm = nn.LayerNorm(dim)
            self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

        def forward(self, x: Tensor) -> Tensor:
            return self.residual(x, x, lambda t: self.mlp(self.norm(t)))

    cases = {
        "BasicBlock 16ch (128,16,32,32)": (lambda r, m: BasicBlock(16, 16, 1, r, m), (128, 16, 32, 32)),
        "BasicBlock 64ch (128,64,8,8)": (lambda r, m: BasicBlock(64, 64, 1, r, m), (128, 64, 8, 8)),
        "MLP block (128,64,64)": (lambda r, m: MlpBlock(64, r, m), (128, 64, 64)),
    }
    print("\n## Sweep: one block, fwd + bwd, skip / mask against the rate "
          f"(AUTO_SKIP_MIN_RATE = {AUTO_SKIP_MIN_RATE})")
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
            ratios.append(statistics.median(times["skip"]) / statistics.median(times["mask"]))
        print(f"{label:32s} " + " ".join(f"{q:7.2f}" for q in ratios))


# ----------------------------------------------------------------------------------------- main


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def print_header(device: torch.device, malloc: str) -> None:
    print("# zoo drop path benchmark")
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__ if torchvision else 'missing'}, "
          f"timm {timm.__version__ if timm else 'missing'}, python {platform.python_version()}")
    print(f"machine: {platform.platform()}, CPU {cpu_model()} x {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.2f} (1 min)")
    print(f"torch threads: {torch.get_num_threads()}, device: {device}, clock: {clock.__name__}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    # With glibc's defaults, freed 10-100 MB blocks go back to the OS and are page-faulted in on the
    # next allocation; which form pays those faults depends on allocation order, not on its
    # arithmetic. The table records which allocator setting it ran under.
    env = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}
    print(f"malloc: {malloc}" + (f" {env}" if env else ""))


def goal(label: str, value: float | None, limit: float) -> bool:
    if value is None:
        print(f"SKIP  {label}: not measured")
        return True
    ok = value <= limit
    print(f"{'PASS' if ok else 'FAIL'}  {label}: {value:.3f}x (goal <= {limit}x)")
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--quick", action="store_true", help="few repeats, for development")
    # the in-place / timm ratio at (128, 320, 8, 8) varies with an SD of about 0.07 from repeat to
    # repeat (shuffled order); the median of 41 then moves by about 0.013 from run to run
    ap.add_argument("--repeats", type=int, default=None, help="op table repeats (default 41; quick 4)")
    ap.add_argument("--inner", type=int, default=None, help="calls per timed op sample (default 3)")
    # one resnet110 step's skip / mask ratio varies with an SD of 0.057 from pair to pair here (40
    # pairs); the median of 11 pairs then moves by about 0.016 from run to run, of 21 by about 0.010
    ap.add_argument("--train-repeats", type=int, default=None,
                    help="training steps per mode (default 21; quick 3): a 3%% goal needs more than a few")
    ap.add_argument("--train-warmup", type=int, default=4, help="untimed interleaved rounds of training steps")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                    help="CPU timing clock: wall, or process CPU time for a loaded machine")
    ap.add_argument("--drop-prob", type=float, default=0.2, help="rate for the op table")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--only", choices=("ops", "train", "sweep"), default=None, help="run one part")
    ap.add_argument("--sweep", action="store_true", help="also run the per-block rate sweep")
    ap.add_argument("--malloc", choices=("retain", "glibc"), default="retain",
                    help="retain: keep freed memory in the process, as train.py does (default); glibc: defaults")
    args = ap.parse_args(argv)
    args.repeats = args.repeats or (4 if args.quick else 41)
    args.inner = args.inner or (2 if args.quick else 3)
    args.train_repeats = args.train_repeats or (3 if args.quick else 21)
    if args.threads:
        torch.set_num_threads(args.threads)
    global clock
    clock = CLOCKS[args.clock]
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda asked for, but CUDA is not available", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    malloc = retain_freed_memory() if args.malloc == "retain" else "glibc defaults"
    print_header(device, malloc)

    results: dict[str, float | None] = {}
    if args.only in (None, "ops"):
        rows = bench_ops(args, device)
        results["fused"] = max(r for n, _, _, r in rows if n == FUSED_INPLACE)
        results["fused out of place"] = max(r for n, _, _, r in rows if n.startswith("zoo fused  drop_path_add"))
    if args.only in (None, "train"):
        res = bench_train("resnet110", 0.5, ("mask", "skip"), args, device)
        results["skip"] = res["skip"] if res else None
        mf = bench_train("metaformer", 0.1, ("mask", "auto"), args, device)
        results["auto"] = mf["auto"] if mf else None
    if args.sweep or args.only == "sweep":
        bench_sweep(args, device)

    print("\n## Goals")
    ok = True
    if "fused" in results:
        ok &= goal("zoo fused in place (as blocks call it) vs timm x + DropPath(p)(b), worst shape",
                   results["fused"], FUSED_GOAL)
        # not a goal: out of place, the floor is 5 tensor passes against timm's 7 (0.71x)
        print(f"info  zoo fused out of place (drop_path_add default), worst shape: {results['fused out of place']:.3f}x")
    if "skip" in results:
        ok &= goal("resnet110 p=0.5 paper training step, skip / mask", results["skip"], SKIP_GOAL)
        ok &= goal("metaformer p=0.1 training step, auto / mask", results["auto"], AUTO_GOAL)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
