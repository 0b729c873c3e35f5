"""The comparison report of a sweep: comparison.md (a table per configuration, paired differences
against drop_path_rate=0 with 95% intervals) and comparison.png (test accuracy and train loss per epoch).

    python -m zoo.train.report multirun/2026-11-26/10-00-00

A Hydra callback (``ReportCallback``, registered in configs/train.yaml) writes the same report at
the end of every multirun. An unfinished sweep is reported as far as it got, with what is missing.
"""

from __future__ import annotations

import argparse
import logging
import math
import shlex
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from .sweep import Configuration, ReportError, Run, Sweep, baseline_of, load_sweep

REPORT_MD = "comparison.md"
REPORT_PNG = "comparison.png"
CONFIDENCE = 0.95

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- statistics

def _t_two_sided_cdf(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with an integer ``df`` (Abramowitz & Stegun 26.7.3-4, exact)."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2 == 1:  # (2/pi) [theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...)], (df - 1)/2 terms
        term, total = 1.0, 0.0
        for j in range((df - 1) // 2):
            total += term
            term *= (2 * j + 2) / (2 * j + 3) * c2
        return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    term, total = 1.0, 0.0  # sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...), df/2 terms
    for j in range(df // 2):
        total += term
        term *= (2 * j + 1) / (2 * j + 2) * c2
    return math.sin(theta) * total


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (p > 0.5) of Student's t with ``df`` degrees of freedom, by bisection."""
    if not 0.5 < p < 1 or df < 1:
        raise ValueError(f"t_quantile needs 0.5 < p < 1 and df >= 1, got p={p}, df={df}")
    target, lo, hi = 2 * p - 1, 0.0, 1.0
    while _t_two_sided_cdf(hi, df) < target:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_two_sided_cdf(mid, df) < target else (lo, mid)
    return (lo + hi) / 2


@dataclass
class Paired:
    """Final test accuracy of a configuration minus its baseline's, seed by seed (fractions)."""

    seeds: list[Any]
    diffs: list[float]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.diffs)

    def interval(self, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
        """mean +- t(1 - a/2, n - 1) * sd / sqrt(n); None with fewer than two pairs."""
        n = len(self.diffs)
        if n < 2:
            return None
        half = t_quantile(0.5 + confidence / 2, n - 1) * statistics.stdev(self.diffs) / math.sqrt(n)
        return self.mean - half, self.mean + half


def _final_by_seed(config: Configuration) -> dict[Any, float]:
    by_seed: dict[Any, list[float]] = {}
    for run in config.finished:
        by_seed.setdefault(run.seed, []).append(run.final_acc)
    return {seed: statistics.fmean(v) for seed, v in by_seed.items()}  # repeated seeds: their mean


def paired_difference(config: Configuration, baseline: Configuration) -> Paired:
    mine, base = _final_by_seed(config), _final_by_seed(baseline)
    seeds = sorted((s for s in mine if s in base), key=str)
    return Paired(seeds, [mine[s] - base[s] for s in seeds])


def mean_metric(config: Configuration, key: str) -> float | None:
    """Mean of a per-epoch metric over every epoch of the configuration's runs but each run's first
    (compilation, cudnn autotuning, cache warm-up); over the first epochs only when no run has more."""
    columns = [[float(row[key]) for row in run.metrics if row.get(key) is not None] for run in config.runs]
    vals = [v for col in columns for v in col[1:]] or [v for col in columns for v in col]
    return statistics.fmean(vals) if vals else None


# ---------------------------------------------------------------- markdown

def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _pp(x: float) -> str:
    return f"{100 * x:+.2f}"


def _acc_cell(values: list[float], with_std: bool) -> str:
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{_pct(values[0])} (1 run)"
    if with_std:
        return f"{_pct(statistics.fmean(values))} ± {_pct(statistics.stdev(values))}"
    return _pct(statistics.fmean(values))


def _num(x: float | None, fmt: str) -> str:
    return "n/a" if x is None else format(x, fmt)


def _row(config: Configuration, sweep: Sweep) -> list[str]:
    done = config.finished
    runs = f"{len(done)}" + (f" (+{len(config.runs) - len(done)} unfinished)" if len(done) < len(config.runs) else "")
    cells = [
        f"`{config.label}`",
        "?" if config.rate is None else f"{config.rate:g}",
        runs,
        _acc_cell([r.final_acc for r in done], True),
        _acc_cell([r.best_acc for r in done], False),
        _num(mean_metric(config, "epoch_seconds"), ".2f"),
        _num(mean_metric(config, "images_per_second"), ",.0f"),
    ]
    if config.is_baseline:
        return cells + ["baseline", "", ""]
    baseline = baseline_of(config, sweep)
    if baseline is None:
        return cells + ["no baseline", "", ""]
    paired = paired_difference(config, baseline)
    if not paired.diffs:
        return cells + ["no finished pairs", "", ""]
    interval = paired.interval()
    ci = "n/a (1 pair)" if interval is None else f"{_pp(interval[0])} to {_pp(interval[1])}"
    return cells + [_pp(paired.mean), ci, ", ".join(str(s) for s in paired.seeds)]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"] + [
        "| " + " | ".join(r) + " |" for r in rows
    ]


def _missing(sweep: Sweep) -> list[str]:
    out = [f"- not started: `{sweep.short(job)}`" for job in sweep.not_started]
    out += [f"- job `{r.name}` (`{sweep.run_label(r)}`): no metrics yet (not started, or failed before its first epoch)" for r in sweep.no_metrics]
    for config in sweep.configurations:
        for r in config.runs:
            if not r.finished:
                out.append(f"- job `{r.name}` (`{sweep.run_label(r)}`): no summary.json, {len(r.metrics)} of {r.planned_epochs} epochs done")
            if r.bad_lines:
                out.append(f"- job `{r.name}`: {r.bad_lines} unreadable line(s) in metrics.jsonl (skipped)")
        if not config.is_baseline:
            baseline = baseline_of(config, sweep)
            if baseline is None:
                out.append(f"- `{config.label}`: no drop_path_rate=0 configuration with the same other overrides")
            else:
                unpaired = set(_final_by_seed(config)) ^ set(_final_by_seed(baseline))
                if unpaired:
                    seeds = ", ".join(str(s) for s in sorted(unpaired, key=str))
                    out.append(f"- `{config.label}`: seed(s) {seeds} finished on one side only, left out of the pairing")
    return out


def _describe(summary: dict[str, Any], field_name: str) -> str:
    value = summary.get(field_name)
    if field_name == "device":
        name = summary.get("device_name")
        text = f"{value} ({name})" if name and name != value else str(value)
        world = summary.get("world_size") or 1
        return text + (f" x {world} processes" if world > 1 else "")
    if field_name == "data" and "train_images" in summary:
        return f"{value} ({summary['train_images']} train / {summary.get('test_images')} test images)"
    return ", ".join(f"{k} {v}" for k, v in value.items()) if isinstance(value, dict) else str(value)


def _machine(sweep: Sweep) -> list[str]:
    summaries = [r.summary for r in sweep.runs if r.summary]
    if not summaries:
        return ["- no finished run yet (device and versions come from summary.json)"]
    lines = []
    for field_name in ("device", "versions", "data"):
        seen: dict[str, int] = {}
        for s in summaries:
            if field_name in s:
                text = _describe(s, field_name)
                seen[text] = seen.get(text, 0) + 1
        for text, n in seen.items():
            lines.append(f"- {field_name}: {text}" + (f" ({n} of {len(summaries)} runs)" if len(seen) > 1 else ""))
    return lines


def reproduce_command(sweep: Sweep) -> str:
    """The command line that reruns the sweep: from multirun.yaml, else rebuilt from the job overrides."""
    hydra = (sweep.multirun or {}).get("hydra", {})
    if hydra:
        script = f"{hydra.get('job', {}).get('name') or 'train'}.py"
        args = [o for o in hydra.get("overrides", {}).get("hydra", []) or [] if not o.startswith("hydra.mode=")]
        args += list(hydra.get("overrides", {}).get("task", []) or [])
        return " ".join(["python", script, "-m"] + [shlex.quote(a) for a in args])
    values: dict[str, list[str]] = {}
    for run in sweep.runs + sweep.no_metrics:
        for item in run.overrides or []:
            key, _, value = item.partition("=")
            if value not in values.setdefault(key, []):
                values[key].append(value)
    return " ".join(["python", "train.py", "-m"] + [shlex.quote(f"{k}={','.join(v)}") for k, v in values.items()])


def render_markdown(sweep: Sweep, plot_name: str | None = REPORT_PNG) -> str:
    n_done = sum(r.finished for r in sweep.runs)
    common = " ".join(f"{k}={v}" for k, v in sweep.common)
    lines = [
        f"# Comparison: {sweep.path.name}",
        "",
        f"Sweep dir `{sweep.path}`: {len(sweep.runs)} run(s) in {len(sweep.configurations)} configuration(s), "
        f"{n_done} finished." + (f" Shared by every job: `{common}`." if common else ""),
        "",
        "Accuracies are test accuracy in percent over the finished runs (mean ± sample std across seeds). "
        "Δ is the final test accuracy minus that of the drop_path_rate=0 run with the same seed and the same "
        f"other overrides, in percentage points (pp); the {CONFIDENCE:.0%} interval is mean Δ ± t(n-1)·sd/√n "
        "over the seed pairs. Epoch seconds and images/s average every epoch but each run's first (warm-up).",
        "",
    ]
    header = ["configuration", "drop_path_rate", "runs", "final test acc %", "best test acc %", "epoch s",
              "images/s", "Δ final vs rate 0 (pp)", f"{CONFIDENCE:.0%} interval (pp)", "paired seeds"]
    lines += _table(header, [_row(c, sweep) for c in sweep.configurations])
    if plot_name:
        lines += ["", f"![test accuracy and train loss per epoch]({plot_name})",
                  "", f"`{plot_name}`: mean over seeds per configuration, band = min to max."]
    unfinished = [r for r in sweep.runs if not r.finished]
    if unfinished:
        lines += ["", "## Unfinished runs", ""]
        rows = [[f"`{r.name}`", f"`{sweep.run_label(r)}`", f"{len(r.metrics)} of {r.planned_epochs}",
                 _pct(float(r.metrics[-1]["test_acc"])) if "test_acc" in r.metrics[-1] else "n/a"] for r in unfinished]
        lines += _table(["job", "overrides", "epochs done", "last test acc %"], rows)
    missing = _missing(sweep)
    lines += ["", "## Missing", ""] + (missing or ["- nothing: every run finished and every configuration has its baseline"])
    lines += ["", "## Machine", ""] + _machine(sweep)
    cwd = (sweep.multirun or {}).get("hydra", {}).get("runtime", {}).get("cwd")
    lines += ["", "## Reproduce", "", "```", reproduce_command(sweep), "```"]
    if cwd:
        lines += ["", f"(run from `{cwd}`; then `python -m zoo.train.report <sweep dir>` rebuilds this report)"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- plot

def _curve(runs: list[Run], key: str) -> tuple[list[float], list[float], list[float], list[float]]:
    """Per epoch: the epoch, and mean, min, max of ``key`` over the runs that reached it."""
    by_epoch: dict[float, list[float]] = {}
    for run in runs:
        for i, row in enumerate(run.metrics):
            if row.get(key) is not None:
                by_epoch.setdefault(float(row.get("epoch", i + 1)), []).append(float(row[key]))
    xs = sorted(by_epoch)
    return xs, [statistics.fmean(by_epoch[x]) for x in xs], [min(by_epoch[x]) for x in xs], [max(by_epoch[x]) for x in xs]


def plot(sweep: Sweep, path: Path) -> None:
    # The object-oriented API renders with Agg and leaves pyplot's global backend alone.
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(12, 4.5), layout="constrained")
    ax_acc, ax_loss = fig.subplots(1, 2)
    for i, config in enumerate(sweep.configurations):
        color = f"C{i % 10}"
        for ax, key, scale in ((ax_acc, "test_acc", 100.0), (ax_loss, "train_loss", 1.0)):
            xs, mean, lo, hi = _curve(config.runs, key)
            if not xs:
                continue
            ax.plot(xs, [m * scale for m in mean], color=color, marker="." if len(xs) < 30 else None,
                    label=f"{config.label} (n={len(config.runs)})")
            ax.fill_between(xs, [v * scale for v in lo], [v * scale for v in hi], color=color, alpha=0.2, linewidth=0)
    ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)", title="Test accuracy (mean, min-max band)")
    ax_loss.set(xlabel="epoch", ylabel="train loss", title="Train loss (mean, min-max band)")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize="small")
    fig.savefig(path, dpi=120)


# ---------------------------------------------------------------- entry points

def write_report(sweep_dir: str | Path, with_plot: bool = True) -> list[Path]:
    """Write comparison.md (and comparison.png) into ``sweep_dir``; return the paths written."""
    sweep = load_sweep(sweep_dir)
    md = sweep.path / REPORT_MD
    md.write_text(render_markdown(sweep, REPORT_PNG if with_plot else None))
    if not with_plot:
        return [md]
    png = sweep.path / REPORT_PNG
    plot(sweep, png)
    return [md, png]


class ReportCallback(Callback):
    """Hydra callback: writes the comparison report into the sweep dir when a multirun ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            paths = write_report(sweep_dir)
        except ReportError as err:  # the runs themselves are done; a missing report must not fail them
            log.warning("no comparison report: %s", err)
            return
        log.info("comparison report: %s", ", ".join(str(p) for p in paths))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.train.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", help="a Hydra multirun sweep dir (holding the numbered job dirs)")
    parser.add_argument("--no-plot", action="store_true", help="write comparison.md only")
    args = parser.parse_args(argv)
    try:
        paths = write_report(args.sweep_dir, with_plot=not args.no_plot)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("wrote " + " and ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
