"""The project's GPU evidence from one command: the machine, the CUDA tests, a throughput table and a
with / without stochastic depth comparison on the full data set, each stage inside its own time budget.

Run through ``scripts/gpu_check.sh`` (it installs Hydra from the wheels in .whl/ where Python has none;
its header has the stage budgets and the steps). Everything lands
in ``$OUT`` (or ``--out``): gpu_check.md (every table), gpu_check.json, cuda_tests.txt, comparison.md
and comparison.png. ``--dry`` runs every stage on the CPU with tiny models and a data subset, in 6 minutes
at most: CI runs it so that the script never breaks unseen.
"""

from __future__ import annotations

import time

STARTED = time.monotonic()  # the budgets count from here, before the imports of torch and zoo

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import zoo  # noqa: E402
from zoo._weights import one_line  # noqa: E402
from zoo.train.data.batches import epoch_plan, train_batch  # noqa: E402
from zoo.train.data.cifar10 import Split, load_image_folder  # noqa: E402
from zoo.train.errors import ZooError  # noqa: E402
from zoo.train.loop.step import train_step  # noqa: E402


@dataclass
class Plan:
    """What each stage does and may spend; the real run and the dry run differ only here. The stage
    budgets are the table in scripts/gpu_check.sh's header (tests/test_gpu_check.py holds them equal)."""

    device: str
    total_s: float  # everything: the shell's timeout
    setup_s: float  # imports, the machine, decoding the data set once (not enforced: it is not a loop)
    tests_s: float
    throughput_s: float  # the eager table
    claim_s: float  # the claim model compiled, mask against skip
    margin_s: float  # the reports, stopping the comparison's runs
    models: dict[str, tuple[float, str]]  # name -> (drop_path_rate, schedule) timed in the throughput table
    batches: tuple[int, ...]
    steps: int  # timed steps per throughput row
    compile_backend: str
    claim: tuple[str, int]  # (model, batch): skip mode against mask mode, both compiled
    compare_model: str
    compare_seeds: tuple[int, ...]
    compare_batch: int
    compare_data: tuple[str, ...]  # extra overrides: the data subset of the dry run
    compare_startup_s: float  # a comparison run's imports, data loading and first steps, all starting at once
    min_epochs: int
    max_epochs: int

    @property
    def compare_s(self) -> float:
        """The comparison's budget: what the other stages leave."""
        return self.total_s - self.setup_s - self.tests_s - self.throughput_s - self.claim_s - self.margin_s


REAL = Plan(
    "cuda",
    480,
    35,
    70,
    75,
    140,
    15,
    {
        "resnet20": (0.1, "linear"),
        "resnet56": (0.1, "linear"),
        "resnet110": (0.5, "paper"),
        "metaformer": (0.1, "linear"),
    },
    (128, 512),
    20,
    "inductor",
    ("resnet110", 512),
    "resnet20",
    (0, 1, 2),
    512,
    (),
    60,
    5,
    60,
)
DRY = Plan(
    "cpu",
    360,
    30,
    60,
    60,
    60,
    15,
    {"resnet8": (0.1, "linear"), "convformer_tiny": (0.1, "linear")},
    (16,),
    2,
    "eager",
    ("resnet8", 16),
    "resnet8",
    (0, 1),
    64,
    ("data.subset=256", "data.test_subset=100"),
    0,
    1,
    1,
)


@dataclass
class Report:
    started: float = STARTED
    machine: dict = field(default_factory=dict)
    tests: dict = field(default_factory=dict)
    throughput: list = field(default_factory=list)
    comparison: dict = field(default_factory=dict)
    skipped: list = field(default_factory=list)

    def left(self, plan: Plan) -> float:
        return plan.total_s - (time.monotonic() - self.started)


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------- stage 1: machine


def machine(plan: Plan) -> dict:
    info = {
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpu_count": os.cpu_count(),
        "device": plan.device,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        smi = shutil.which("nvidia-smi")
        if smi:
            out = subprocess.run(
                [smi, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            )
            info["nvidia_smi"] = out.stdout.strip()
    return info


# ---------------------------------------------------------------------------- stage 2: CUDA tests


def cuda_tests(plan: Plan, out: Path, archive: Path, cache: Path) -> dict:
    """``pytest -m "cuda and not slow"`` (the CUDA cases of the suite but those that compile with Inductor,
    which the throughput table does; on a CPU they are all skipped) within the stage's budget, with the
    data set decoded beforehand (the tests that train read it from ``ZOO_TEST_CACHE_DIR``)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-m", "cuda and not slow", "-p", "no:cacheprovider", "tests"]
    env = {**os.environ, "ZOO_CIFAR10": str(archive), "ZOO_TEST_CACHE_DIR": str(cache)}
    try:
        res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=plan.tests_s)
        text, status = res.stdout + res.stderr, ("passed" if res.returncode == 0 else f"exit {res.returncode}")
    except subprocess.TimeoutExpired as e:
        text, status = (
            (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or ""),
            f"stopped after its {plan.tests_s:.0f} s budget",
        )
    (out / "cuda_tests.txt").write_text(text)
    last = next((line for line in reversed(text.splitlines()) if line.strip()), "")
    if "archive not found" in text:  # tests that train were skipped: not a pass
        status = "incomplete: the tests that train found no data"
    return {"status": status, "summary": last}


# ---------------------------------------------------------------------------- stage 3: throughput


def throughput_rows(plan: Plan) -> list[tuple[str, int, bool, str]]:
    """(model, batch, compiled, mode) of the eager table, the comparison model first (its rate sizes the
    comparison)."""
    models = sorted(plan.models, key=lambda m: m != plan.compare_model)
    return [(m, b, False, mode) for m in models for b in plan.batches for mode in ("mask", "skip")]


def claim_rows(plan: Plan) -> list[tuple[str, int, bool, str]]:
    """The claim model compiled at its batch, mask then skip: skip mode saves compute where it is compiled."""
    name, batch = plan.claim
    return [(name, batch, True, "mask"), (name, batch, True, "skip")]


def time_row(plan: Plan, data: Split, name: str, batch: int, compiled: bool, mode: str) -> dict:
    rate, schedule = plan.models[name]
    device = torch.device(plan.device)
    torch.backends.cudnn.benchmark = True  # as the trainer runs (deterministic=false): its autotuned kernels
    torch.manual_seed(0)
    net = zoo.create_model(name, drop_path_rate=rate, drop_path_schedule=schedule, drop_path_mode=mode)
    net = net.to(device, memory_format=torch.channels_last).train()
    if compiled:
        torch._dynamo.reset()  # each row compiles afresh: no cache limit reached, no shape from another row
    model = torch.compile(net, backend=plan.compile_backend) if compiled else net
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    epoch = epoch_plan(len(data), batch, 0, 0, device)
    amp = device.type == "cuda"

    def step(i: int) -> None:
        x, y = train_batch(data, epoch, i % epoch.steps, 0, 1, channels_last=True)
        train_step(model, opt, loss_fn, x, y, 0.01, amp)

    t0 = time.perf_counter()
    step(0)  # compiles when compiled
    sync(device)
    first = time.perf_counter() - t0
    for i in range(1, 3):
        step(i)
    sync(device)
    t0 = time.perf_counter()
    for i in range(plan.steps):
        step(i)
    sync(device)
    seconds = time.perf_counter() - t0
    return {
        "model": name,
        "batch": batch,
        "compiled": compiled,
        "mode": mode,
        "drop_path_rate": rate,
        "images_per_s": batch * plan.steps / seconds,
        "step_ms": 1e3 * seconds / plan.steps,
        "first_step_s": first,
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class RowTimeout(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise RowTimeout


def timed_rows(plan: Plan, report: Report, out: Path, rows: list[tuple[str, int, bool, str]], budget_s: float) -> None:
    """Every row within ``budget_s``; a row that would overrun it (a long compile) is stopped by an alarm
    and recorded as such."""
    device = torch.device(plan.device)
    images = torch.randint(0, 256, (4096, 32, 32, 3), dtype=torch.uint8, device=device)
    data = Split(images, torch.randint(0, 10, (4096,), device=device))
    deadline = time.monotonic() + budget_s
    signal.signal(signal.SIGALRM, _alarm)
    for row in rows:
        left = int(deadline - time.monotonic())
        if left < 1:
            report.skipped.append(f"throughput {row}: its stage's {budget_s:.0f} s budget ran out")
            continue
        signal.alarm(left)
        try:
            result = time_row(plan, data, *row)
        except Exception as e:  # one failing row (a compile error, memory, the alarm) must not lose the others
            why = f"stopped at the stage's time limit ({left} s left)" if isinstance(e, RowTimeout) else one_line(e)
            result = {"model": row[0], "batch": row[1], "compiled": row[2], "mode": row[3], "error": why}
        finally:
            signal.alarm(0)
        report.throughput.append(result)
        log(f"throughput {result}")
        write(report, out)


# ---------------------------------------------------------------------------- stage 4: comparison


def compare_epochs(plan: Plan, report: Report, seconds: float, runs: int) -> int:
    """Epochs that fit ``seconds`` with ``runs`` runs sharing the device at once: each gets the solo rate
    measured in the eager table (the comparison model at its batch, mask mode) divided by ``runs``,
    after ``plan.compare_startup_s`` of start-up; an epoch is 50k training images and 10k evaluated."""
    rows = [
        r
        for r in report.throughput
        if r.get("model") == plan.compare_model
        and not r["compiled"]
        and r.get("batch") == plan.compare_batch
        and r.get("mode") == "mask"
        and "images_per_s" in r
    ]
    if not rows or plan.device != "cuda":
        return plan.min_epochs
    per_run = rows[0]["images_per_s"] / runs
    epochs = int((seconds - plan.compare_startup_s) * per_run / 60_000)
    return max(plan.min_epochs, min(plan.max_epochs, epochs))


def comparison(plan: Plan, report: Report, out: Path, archive: Path) -> None:
    """Rates 0 and 0.1 over the plan's seeds, all runs at once for the time left, and their report."""
    sweep = Path(os.environ.get("GPU_CHECK_RUNS", "/tmp/zoo-gpu-check")) / time.strftime("%H%M%S")
    seconds = max(0.0, report.left(plan) - plan.margin_s)
    jobs = [(rate, seed) for rate in (0.0, 0.1) for seed in plan.compare_seeds]
    epochs = compare_epochs(plan, report, seconds, len(jobs))
    log(f"comparison: {len(jobs)} runs of {plan.compare_model}, {epochs} epochs, at once, {seconds:.0f} s left")
    sweep.mkdir(parents=True, exist_ok=True)
    common = compare_overrides(plan, epochs, archive, sweep.parent / "cache")
    procs = [launch_run(common, rate, seed, sweep, i) for i, (rate, seed) in enumerate(jobs)]
    wait_or_stop(procs, time.monotonic() + seconds)
    errors = [(sweep / f"{i}.err").read_text().strip().splitlines()[-1:] for i, p in enumerate(procs) if p.returncode]
    report.comparison = {
        "dir": str(sweep),
        "epochs": epochs,
        "runs": len(jobs),
        "exit_codes": [p.returncode for p in procs],
        "errors": errors,
    }
    from zoo.train.report.comparison import ReportError, write_report

    try:
        for path in write_report(sweep):
            shutil.copy(path, out / path.name)
    except ReportError as e:
        report.skipped.append(f"comparison report: {e}")
    summaries = [sweep / str(i) / "summary.json" for i in range(len(jobs))]
    report.comparison["summaries"] = [json.loads(s.read_text()) for s in summaries if s.exists()]


def compare_overrides(plan: Plan, epochs: int, archive: Path, cache: Path) -> list[str]:
    """train.py's overrides shared by every comparison run: SGD with the lr scaled to the batch."""
    return [
        f"model={plan.compare_model}",
        "optim=sgd",
        f"lr={0.1 * plan.compare_batch / 128:g}",
        "weight_decay=5e-4",
        f"epochs={epochs}",
        f"batch_size={plan.compare_batch}",
        "sched.warmup_epochs=1",
        "data=cifar10_folder",
        f"data.path={archive}",
        f"data.cache_dir={cache}",
        f"device={plan.device}",
        *plan.compare_data,
    ]


def launch_run(common: list[str], rate: float, seed: int, sweep: Path, i: int) -> subprocess.Popen:
    """One comparison run in the background, in ``sweep/<i>``, its stderr in ``sweep/<i>.err``."""
    env = {**os.environ, "OMP_NUM_THREADS": "2"}  # several runs share the host's cores
    args = [*common, f"drop_path_rate={rate:g}", f"seed={seed}", f"hydra.run.dir={sweep / str(i)}"]
    with open(sweep / f"{i}.err", "w") as err:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, str(REPO / "train.py"), *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=err, env=env
        )


def wait_or_stop(procs: list[subprocess.Popen], deadline: float) -> None:
    """Wait for the runs until ``deadline``, then SIGTERM the rest (they save at the next step boundary;
    the report shows how far each got), and kill any that have not stopped 10 s later."""
    for p in procs:
        try:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# ------------------------------------------------------------------------------------- summary


def markdown(report: Report) -> str:
    m = report.machine
    lines = [
        f"# gpu_check, {m.get('date')}: {m.get('gpu', 'no GPU (dry run on the CPU)')}",
        "",
        f"torch {m.get('torch')}, CUDA {m.get('cuda')}, python {m.get('python')}, {m.get('nvidia_smi', '')}",
        "",
        f"CUDA tests (`pytest -m 'cuda and not slow'`): {report.tests.get('status')}: {report.tests.get('summary')}",
        "",
        "| model | batch | compiled | mode | images/s | step ms | first step s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report.throughput:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['batch']} | {r['compiled']} | {r['mode']} | error: {r['error']} | | |")
        else:
            lines.append(
                f"| {r['model']} | {r['batch']} | {r['compiled']} | {r['mode']} | {r['images_per_s']:,.0f} | "
                f"{r['step_ms']:.1f} | {r['first_step_s']:.1f} |"
            )
    claim = [r for r in report.throughput if r["compiled"] and "step_ms" in r]  # the claim stage's rows
    if sorted(r["mode"] for r in claim) == ["mask", "skip"]:
        ms = {r["mode"]: r["step_ms"] for r in claim}
        lines += [
            "",
            f"Compiled, {claim[0]['model']} at batch {claim[0]['batch']}: skip / mask step time "
            f"{ms['skip'] / ms['mask']:.3f}x",
        ]
    c = report.comparison
    if c:
        lines += [
            "",
            f"Comparison: {c['runs']} runs, {c['epochs']} epochs each, exit codes {c['exit_codes']} "
            "(comparison.md, comparison.png)",
        ]
        lines += [
            f"- {s['drop_path_rate']} seed {s['seed']}: test acc {s['final_test_acc']:.4f}, "
            f"{s['images_per_second']:,.0f} images/s"
            for s in c.get("summaries", [])
        ]
    lines += [""] + [f"- skipped: {s}" for s in report.skipped]
    return "\n".join(lines) + "\n"


def write(report: Report, out: Path) -> None:
    """The files as far as the check got: written after every stage (and table row), so that a stop
    from outside still leaves what was measured."""
    (out / "gpu_check.json").write_text(json.dumps(asdict(report), indent=2, default=str))
    (out / "gpu_check.md").write_text(markdown(report))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry", action="store_true", help="every stage on the CPU, tiny and fast (CI)")
    ap.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out")
    ap.add_argument("--data", default=os.environ.get("ZOO_CIFAR10") or str(REPO / ".data" / "cifar10-jpeg.tar.gz"))
    args = ap.parse_args(argv)
    plan = DRY if args.dry else REAL
    if plan.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --dry for the CPU dry run", file=sys.stderr)
        return 2
    out, archive = Path(args.out), Path(args.data)
    out.mkdir(parents=True, exist_ok=True)
    report = Report()
    report.machine = machine(plan)
    log(f"machine {report.machine}")
    cache = Path(os.environ.get("GPU_CHECK_RUNS", "/tmp/zoo-gpu-check")) / "cache"
    try:
        load_image_folder(archive, cache)  # decoded once, for the tests and the comparison runs
    except ZooError as e:
        report.skipped.append(f"data: {e}")
        archive = None
    write(report, out)
    report.tests = cuda_tests(plan, out, archive or Path("missing"), cache)
    log(f"CUDA tests: {report.tests}")
    write(report, out)
    timed_rows(plan, report, out, throughput_rows(plan), plan.throughput_s)
    timed_rows(plan, report, out, claim_rows(plan), plan.claim_s)
    if archive is None:
        report.skipped.append("comparison: no data set")
    elif report.left(plan) > plan.margin_s + 60 or plan is DRY:
        comparison(plan, report, out, archive)
    else:
        report.skipped.append("comparison: less than 60 s of its budget left")
    write(report, out)
    print(markdown(report))
    log(f"done in {time.monotonic() - report.started:.0f} s; files in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
