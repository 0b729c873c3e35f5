"""Depth robustness: test accuracy of a trained run with residual blocks removed at test time.

    python -m zoo.train.knockout <run dir or sweep dir> [--which last|best] [--draws 5] [--seed 0]
                                 [--data-path P] [--device auto|cpu|cuda] [--test-subset N] [--no-plot]

For each run: every removable block removed alone, then k blocks drawn at random for k = 1, 2, 4, ...
(``--draws`` seeded draws each; the draws depend on ``--seed``, k and the draw only, so runs of the
same model lose the same blocks and can be paired). Writes ``knockout.md`` and ``knockout.png``
beside the run, or, for a sweep, into the sweep dir: per configuration the accuracy at each k with its
spread over seeds, and the paired difference against the drop_path_rate=0 runs of the same seeds; and
each block removed alone, averaged over blocks, paired the same way.
The test split is the run's own (its ``data.test_subset``) unless ``--test-subset`` says otherwise, so
k = 0 is the run's own final test accuracy. A mistake is one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .._weights import CHECKPOINT_NAME, LoadError
from ..knockout import removable_blocks, remove_blocks
from .errors import ZooError, run_command
from .evaluate import Loaded, OneLineParser, accuracy, add_source_arguments, load_for_eval, positive
from .loop.distributed import resolve_device
from .report.comparison import interval_cell, markdown_table, pct, pp
from .report.paired import CONFIDENCE, Paired, pair_curves
from .report.sweep import Configuration, ReportError, Sweep, baseline_of, load_sweep

if TYPE_CHECKING:
    from matplotlib.figure import Figure

KNOCKOUT_MD = "knockout.md"
KNOCKOUT_PNG = "knockout.png"


@dataclass
class Knockout:
    """One run's accuracies (fractions): intact, each block removed alone, and k random blocks per draw."""

    intact: float
    single: dict[str, float] = field(default_factory=dict)  # block name -> accuracy without it
    rates: dict[str, float] = field(default_factory=dict)  # block name -> its drop path rate as trained
    random: dict[int, list[float]] = field(default_factory=dict)  # k -> accuracy per draw

    def at(self, k: int) -> float:
        """Mean accuracy with k random blocks removed (k = 0: intact)."""
        return self.intact if k == 0 else statistics.fmean(self.random[k])


def ks(n: int) -> list[int]:
    """1, 2, 4, ... up to ``n`` removable blocks."""
    out, k = [], 1
    while k <= n:
        out.append(k)
        k *= 2
    return out


def draw(names: list[str], k: int, index: int, seed: int) -> list[str]:
    """Draw ``index`` of k blocks out of ``names``: a function of (seed, k, index, len(names)) only."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + k * 1_009 + index)
    return [names[i] for i in sorted(torch.randperm(len(names), generator=g)[:k].tolist())]


def knockout(loaded: Loaded, draws: int, seed: int) -> Knockout:
    """Evaluate ``loaded.model`` intact, without each removable block, and without k random ones."""
    model = loaded.model
    names = removable_blocks(model)
    blocks = dict(model.named_modules())
    result = Knockout(accuracy(loaded, model)[0])
    for name in names:
        result.single[name] = accuracy(loaded, remove_blocks(model, [name]))[0]
        result.rates[name] = float(getattr(blocks[name], "base_drop_path", 0.0))
    for k in ks(len(names)):
        n_draws = 1 if k == len(names) else draws  # all of them: one set, however drawn
        result.random[k] = [accuracy(loaded, remove_blocks(model, draw(names, k, d, seed)))[0] for d in range(n_draws)]
    return result


# ---------------------------------------------------------------- markdown


def _provenance(args: argparse.Namespace, device: torch.device) -> list[str]:
    name = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else (_cpu_model() or platform.processor() or "cpu")
    )
    return [
        "",
        "## Provenance",
        "",
        f"- command: `python -m zoo.train.knockout {' '.join(shlex.quote(a) for a in args.argv)}`",
        f"- device: {device.type} ({name}), torch {torch.__version__}",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
    ]


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _method(args: argparse.Namespace, images: int) -> str:
    return (
        f"Test accuracy on {images} test images ({args.which}.pt weights) with residual blocks removed at test "
        "time: the branch skipped, the shortcut kept (`zoo.remove_blocks`); blocks whose shortcut changes the "
        f"shape (downsampling) are never removed. Random removals: {args.draws} seeded draw(s) for each k "
        f"(seed {args.seed}; one draw when k is every removable block), the same block sets for every run of "
        "the same model."
    )


def run_markdown(run: Path, result: Knockout, args: argparse.Namespace, images: int) -> list[str]:
    lines = [
        f"# Knockout: {run.name}",
        "",
        _method(args, images),
        "",
        f"Intact: {pct(result.intact)} %.",
        "",
        "## One block removed",
        "",
    ]
    lines += markdown_table(
        ["block", "drop path rate (trained)", "test acc %", "Δ vs intact (pp)"],
        [[f"`{n}`", f"{result.rates[n]:.3g}", pct(a), pp(a - result.intact)] for n, a in result.single.items()],
    )
    lines += ["", "## k random blocks removed", ""]
    rows = [
        [
            str(k),
            str(len(accs)),
            pct(statistics.fmean(accs)),
            f"{pct(min(accs))} to {pct(max(accs))}",
            pp(statistics.fmean(accs) - result.intact),
        ]
        for k, accs in result.random.items()
    ]
    lines += markdown_table(["k", "draws", "test acc % (mean)", "min to max", "Δ vs intact (pp)"], rows)
    return lines + ["", f"![accuracy with blocks removed]({KNOCKOUT_PNG})"]


def _seed_curves(config: Configuration, results: dict[Path, Knockout]) -> dict[Any, dict[int, float]]:
    """Per seed of ``config``'s knocked-out runs, the accuracy at each k (0: intact)."""
    out: dict[Any, dict[int, float]] = {}
    for run in config.runs:
        if run.path in results:
            r = results[run.path]
            out[run.seed] = {0: r.intact, **{k: r.at(k) for k in r.random}}
    return out


def paired_at_k(config: Configuration, baseline: Configuration, results: dict[Path, Knockout]) -> dict[int, Paired]:
    """Per k, the accuracy of ``config`` minus its baseline's, seed by seed."""
    return pair_curves(_seed_curves(config, results), _seed_curves(baseline, results))


def _single_deltas(config: Configuration, results: dict[Path, Knockout]) -> dict[Any, dict[str, float]]:
    """Per seed of ``config``'s knocked-out runs: each block removed alone, the accuracy minus intact."""
    return {
        run.seed: {name: acc - results[run.path].intact for name, acc in results[run.path].single.items()}
        for run in config.runs
        if run.path in results and results[run.path].single
    }


def _over_blocks(deltas: dict[Any, dict[str, float]]) -> dict[Any, dict[str, float]]:
    return {seed: {"mean": statistics.fmean(d.values())} for seed, d in deltas.items()}


def single_block_row(config: Configuration, sweep: Sweep, results: dict[Path, Knockout]) -> list[str] | None:
    """The sweep's one-block table row of ``config``: each block removed alone, the accuracy minus intact
    averaged over blocks (the exact k = 1 expectation) and seeds; that minus its baseline's, seed by seed;
    the block whose removal costs most on average over seeds. None without knocked-out runs."""
    deltas = _single_deltas(config, results)
    if not deltas:
        return None
    means = _over_blocks(deltas)
    baseline = None if config.is_baseline else baseline_of(config, sweep)
    paired = pair_curves(means, _over_blocks(_single_deltas(baseline, results))) if baseline else {}
    names = sorted({name for d in deltas.values() for name in d})
    per_block = {name: statistics.fmean(d[name] for d in deltas.values() if name in d) for name in names}
    worst = min(per_block, key=per_block.__getitem__)
    return [
        f"`{config.label}`",
        str(len(deltas)),
        str(len(names)),
        pp(statistics.fmean(m["mean"] for m in means.values())),
        *_delta_cells(config, paired.get("mean")),
        f"`{worst}` {pp(per_block[worst])}",
    ]


def _delta_cells(config: Configuration, paired: Paired | None) -> tuple[str, str]:
    """A row's difference against rate 0 and its interval: "baseline" for a rate-0 configuration,
    "no pairs" where no seed pairs with one."""
    if config.is_baseline:
        return "baseline", ""
    return (pp(paired.mean), interval_cell(paired)) if paired else ("no pairs", "")


def sweep_markdown(sweep: Sweep, results: dict[Path, Knockout], args: argparse.Namespace, images: int) -> list[str]:
    lines = [
        f"# Knockout: {sweep.path.name}",
        "",
        _method(args, images),
        "",
        "Per configuration and k: test accuracy (mean ± sample std over seeds, each seed's value the mean "
        "over its draws), its drop from the intact network (k = 0), and the accuracy minus that of the "
        f"drop_path_rate=0 run of the same seed, with its {CONFIDENCE:.0%} t interval over the seed pairs.",
        "",
    ]
    rows = [row for config in sweep.configurations for row in _configuration_rows(config, sweep, results)]
    lines += markdown_table(
        [
            "configuration",
            "k removed",
            "runs",
            "test acc %",
            "drop vs intact (pp)",
            "Δ vs rate 0 (pp)",
            f"{CONFIDENCE:.0%} interval (pp)",
        ],
        rows,
    )
    lines += ["", "## One block removed", "", _SINGLE_NOTE, ""]
    lines += markdown_table(
        [
            "configuration",
            "runs",
            "blocks",
            "Δ vs intact, mean over blocks (pp)",
            "Δ vs rate 0 (pp)",
            f"{CONFIDENCE:.0%} interval (pp)",
            "costliest block (Δ vs intact, pp)",
        ],
        [row for c in sweep.configurations if (row := single_block_row(c, sweep, results)) is not None],
    )
    return lines + ["", f"![accuracy with k blocks removed, and the difference against rate 0]({KNOCKOUT_PNG})"]


_SINGLE_NOTE = (
    "Every removable block removed alone: the test accuracy minus intact, averaged over the blocks (the exact "
    "expectation of k = 1 above, which draws blocks) and over seeds; that minus the drop_path_rate=0 run's of "
    f"the same seed (positive: it loses less), with its {CONFIDENCE:.0%} t interval over the seed pairs; and "
    "the block whose removal costs most, on average over seeds."
)


def _configuration_rows(config: Configuration, sweep: Sweep, results: dict[Path, Knockout]) -> list[list[str]]:
    """The sweep table's rows of one configuration, one per k: its accuracy over seeds, the drop from
    intact, and the paired difference against its baseline (none without knocked-out runs)."""
    curves = _seed_curves(config, results)
    if not curves:
        return []
    baseline = None if config.is_baseline else baseline_of(config, sweep)
    paired = paired_at_k(config, baseline, results) if baseline else {}
    rows = []
    for k in sorted({k for c in curves.values() for k in c}):
        accs = [c[k] for c in curves.values() if k in c]
        drops = [c[k] - c[0] for c in curves.values() if k in c]
        spread = f" ± {pct(statistics.stdev(accs))}" if len(accs) > 1 else ""
        rows.append(
            [
                f"`{config.label}`",
                str(k),
                str(len(accs)),
                pct(statistics.fmean(accs)) + spread,
                pp(statistics.fmean(drops)),
                *_delta_cells(config, paired.get(k)),
            ]
        )
    return rows


# ---------------------------------------------------------------- plots


def run_plot(result: Knockout) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.2), layout="constrained")
    ax_one, ax_k = fig.subplots(1, 2)
    names = list(result.single)
    ax_one.bar(range(len(names)), [100 * (a - result.intact) for a in result.single.values()])
    ax_one.set_xticks(range(len(names)), names, rotation=90, fontsize="x-small")
    ax_one.set(ylabel="Δ test accuracy vs intact (pp)", title="One block removed")
    xs = [0, *result.random]
    ax_k.plot(xs, [100 * result.at(k) for k in xs], marker="o")
    ax_k.fill_between(
        xs,
        [100 * min(result.random.get(k, [result.intact])) for k in xs],
        [100 * max(result.random.get(k, [result.intact])) for k in xs],
        alpha=0.2,
        linewidth=0,
    )
    ax_k.set(
        xlabel="k blocks removed at random",
        ylabel="test accuracy (%)",
        title="k random blocks (mean, min-max of draws)",
    )
    for ax in (ax_one, ax_k):
        ax.grid(alpha=0.3)
    return fig


def sweep_plot(sweep: Sweep, results: dict[Path, Knockout]) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.2), layout="constrained")
    ax_acc, ax_diff = fig.subplots(1, 2)
    for i, config in enumerate(sweep.configurations):
        curves = _seed_curves(config, results)
        if not curves:
            continue
        color = f"C{i % 10}"
        xs = sorted({k for c in curves.values() for k in c})
        values = [[c[k] for c in curves.values() if k in c] for k in xs]
        ax_acc.plot(xs, [100 * statistics.fmean(v) for v in values], color=color, marker="o", label=config.label)
        ax_acc.fill_between(
            xs, [100 * min(v) for v in values], [100 * max(v) for v in values], color=color, alpha=0.2, linewidth=0
        )
        baseline = None if config.is_baseline else baseline_of(config, sweep)
        paired = paired_at_k(config, baseline, results) if baseline else {}
        if paired:
            kx = list(paired)
            lo_hi = [p.interval() or (p.mean, p.mean) for p in paired.values()]
            ax_diff.plot(kx, [100 * p.mean for p in paired.values()], color=color, marker="o", label=config.label)
            ax_diff.fill_between(
                kx, [100 * lo for lo, _ in lo_hi], [100 * hi for _, hi in lo_hi], color=color, alpha=0.2, linewidth=0
            )
    ax_acc.set(xlabel="k blocks removed at random", ylabel="test accuracy (%)", title="Mean over seeds, min-max band")
    ax_diff.set(
        xlabel="k blocks removed at random",
        ylabel="Δ test accuracy vs rate 0 (pp)",
        title=f"Minus rate 0, same seed (mean, {CONFIDENCE:.0%} t band)",
    )
    ax_diff.axhline(0.0, color="black", linewidth=0.8)
    for ax in (ax_acc, ax_diff):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    return fig


# ---------------------------------------------------------------- entry point


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = OneLineParser(prog="python -m zoo.train.knockout", description=__doc__.split("\n\n")[0])
    p.add_argument("path", help="a run dir (holding last.pt) or a sweep dir (holding job dirs)")
    add_source_arguments(
        p, "last.pt (the last epoch) or best.pt (the best validation epoch)", "default: the run's own data.test_subset"
    )
    p.add_argument("--draws", type=positive, default=5, help="random draws for each k (5)")
    p.add_argument("--seed", type=non_negative, default=0, help="seed of the random draws (0)")
    p.add_argument("--no-plot", action="store_true", help="write knockout.md only")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def non_negative(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return int(text)


def _knock_run(run: Path, args: argparse.Namespace, device: torch.device, splits: dict) -> tuple[Knockout, int]:
    loaded = load_for_eval(run, device, args.data_path, None, which=args.which, loaded=splits)
    subset = args.test_subset or (loaded.config.get("data") or {}).get("test_subset")
    if subset and subset != len(loaded.test):
        loaded.test = loaded.test.subset(subset, "--test-subset")
    return knockout(loaded, args.draws, args.seed), len(loaded.test)


def write_knockout(args: argparse.Namespace) -> list[Path]:
    """Knock out the run (or every finished run of the sweep) at ``args.path``; returns the files written."""
    path = Path(args.path)
    device = resolve_device(args.device)
    if (path / CHECKPOINT_NAME).is_file():
        result, images = _knock_run(path, args, device, {})
        lines = run_markdown(path, result, args, images)
        fig = None if args.no_plot else run_plot(result)
    elif path.is_dir():
        sweep = load_sweep(path)
        runs = [r.path for r in sweep.runs if r.finished and (r.path / CHECKPOINT_NAME).is_file()]
        if not runs:
            raise ReportError(f"{str(path)!r}: no finished run with a {CHECKPOINT_NAME} to knock blocks out of")
        results, images, splits = {}, 0, {}
        for run in runs:
            results[run], images = _knock_run(run, args, device, splits)
        lines = sweep_markdown(sweep, results, args, images)
        fig = None if args.no_plot else sweep_plot(sweep, results)
    else:
        raise ReportError(f"{str(path)!r}: no such run dir or sweep dir")
    md = path / KNOCKOUT_MD
    md.write_text("\n".join(lines + _provenance(args, device)) + "\n")
    if fig is None:
        return [md]
    fig.savefig(path / KNOCKOUT_PNG, dpi=110)
    return [md, path / KNOCKOUT_PNG]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_command(lambda: "wrote " + " and ".join(str(p) for p in write_knockout(args)), (ZooError, LoadError))


if __name__ == "__main__":
    sys.exit(main())
