"""The comparison report of a sweep: comparison.md (a table per configuration: final test and train
accuracy and their gap, paired differences against drop_path_rate=0 with 95% intervals; with a
validation split, the test accuracy at the best validation epoch and its paired difference too; for
several rates, the rate response) and comparison.png (test, validation and train accuracy, train loss,
the paired difference per epoch, and the rate response).

Nothing in it is selected on the test set: without a validation split the highest test accuracy of a
run is shown only under a label that says it was chosen on the test set.

    python -m zoo.train.report multirun/2026-11-26/10-00-00

A Hydra callback (``ReportCallback``, registered in configs/train.yaml) writes the same report at
the end of every multirun. An unfinished sweep is reported as far as it got, with what is missing.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Sequence

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ..config.overrides import is_search, resume_command
from ..errors import run_command
from .paired import (
    CONFIDENCE,
    Paired,
    at_best_val,
    final_acc,
    paired_by_epoch,
    paired_difference,
    rate_response,
    runs_per_seed,
    t_quantile,
    unpaired_seeds,
)
from .plot import diff_key, plot
from .sweep import (
    Configuration,
    ReportError,
    Run,
    Sweep,
    baseline_of,
    expected_jobs,
    failed_jobs,
    load_sweep,
    override_pairs,
)

__all__ = [
    "ReportCallback",
    "main",
    "paired_by_epoch",
    "paired_difference",
    "plot",
    "render_markdown",
    "t_quantile",
    "write_report",
]

REPORT_MD = "comparison.md"
REPORT_PNG = "comparison.png"
SEARCH_RESULTS = "optimization_results.yaml"  # what hydra-optuna-sweeper writes into the sweep dir

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- numbers


def mean_metric(config: Configuration, key: str) -> float | None:
    """Mean of a per-epoch metric over every epoch of the configuration's runs but each run's first
    (compilation, cudnn autotuning, cache warm-up); over the first epochs only when no run has more."""
    columns = [[float(row[key]) for row in run.metrics if row.get(key) is not None] for run in config.runs]
    vals = [v for col in columns for v in col[1:]] or [v for col in columns for v in col]
    return statistics.fmean(vals) if vals else None


def final_train_acc(run: Run) -> float | None:
    """The last epoch's train accuracy: the running accuracy of that epoch's training steps (the images
    as trained on, augmented unless data.augment=false; drop path active), not an evaluation of the
    final weights."""
    value = run.metrics[-1].get("train_acc") if run.metrics else None
    return None if value is None else float(value)


# ---------------------------------------------------------------- markdown


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def pp(x: float) -> str:
    return f"{100 * x:+.2f}"


def _acc_cell(values: list[float], with_std: bool) -> str:
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{pct(values[0])} (1 run)"
    if with_std:
        return f"{pct(statistics.fmean(values))} ± {pct(statistics.stdev(values))}"
    return pct(statistics.fmean(values))


def _num(x: float | None, fmt: str) -> str:
    return "n/a" if x is None else format(x, fmt)


def interval_cell(paired: Paired) -> str:
    interval = paired.interval()
    if interval is None:
        return paired.no_interval() or "n/a"
    text = f"{pp(interval[0])} to {pp(interval[1])}"
    if paired.n == 2:  # t(1) = 12.71, the largest: said, so the width reads as "two seeds"
        text += f" (n = 2: t = {t_quantile(0.5 + CONFIDENCE / 2, 1):.2f})"
    return text


def has_validation(sweep: Sweep) -> bool:
    """Whether a finished run of the sweep kept a validation split (then the report selects on it)."""
    return any(r.at_best_val is not None for r in sweep.runs if r.finished)


def _delta_cells(config: Configuration, sweep: Sweep, metric: Callable[[Run], float | None]) -> list[str]:
    """Δ vs rate 0 of ``metric`` and its interval (the first cell says why there is none)."""
    if config.is_baseline:
        return ["baseline", ""]
    baseline = baseline_of(config, sweep)
    if baseline is None:
        return ["no baseline", ""]
    paired = paired_difference(config, baseline, metric)
    if not paired.diffs:
        return ["no finished pairs", ""]
    return [pp(paired.mean), interval_cell(paired)]


def _paired_seeds(config: Configuration, sweep: Sweep) -> str:
    """The seeds paired with the baseline, and how many runs each side had where a seed ran more than once."""
    baseline = None if config.is_baseline else baseline_of(config, sweep)
    if baseline is None:
        return ""
    mine, base = runs_per_seed(config), runs_per_seed(baseline)
    return ", ".join(
        f"{s} ({mine[s]} vs {base[s]} runs)" if mine[s] > 1 or base[s] > 1 else str(s)
        for s in paired_difference(config, baseline).seeds
    )


def _row(config: Configuration, sweep: Sweep, validation: bool) -> list[str]:
    done = config.finished
    runs = f"{len(done)}" + (f" (+{len(config.runs) - len(done)} unfinished)" if len(done) < len(config.runs) else "")
    train = [(acc, r.final_acc) for r in done if (acc := final_train_acc(r)) is not None]
    selected = [v for r in done if (v := r.at_best_val) is not None] if validation else [r.best_acc for r in done]
    row = [
        f"`{config.label}`",
        "?" if config.rate is None else f"{config.rate:g}",
        runs,
        _acc_cell([r.final_acc for r in done], True),
        _acc_cell(selected, validation),
        _acc_cell([acc for acc, _ in train], False),
        pp(statistics.fmean(acc - test for acc, test in train)) if train else "n/a",
        _num(mean_metric(config, "epoch_seconds"), ".2f"),
        _num(mean_metric(config, "images_per_second"), ",.0f"),
    ] + _delta_cells(config, sweep, final_acc)
    if validation:
        row += _delta_cells(config, sweep, at_best_val)
    return row + [_paired_seeds(config, sweep)]


def _header(validation: bool) -> list[str]:
    interval = f"{CONFIDENCE:.0%} interval (pp)"
    selected = "test acc at best val epoch %" if validation else "best test acc % (chosen on the test set)"
    header = [
        "configuration",
        "drop_path_rate",
        "runs",
        "final test acc %",
        selected,
        "final train acc %",
        "train − test (pp)",
        "epoch s",
        "images/s",
        "Δ final vs rate 0 (pp)",
        interval,
    ]
    if validation:
        header += ["Δ at best val vs rate 0 (pp)", interval]
    return header + ["paired seeds"]


def _rate_response_lines(sweep: Sweep, validation: bool) -> list[str]:
    final = rate_response(sweep)
    if not final:
        return []
    best = dict((c.key, p) for c, p in rate_response(sweep, at_best_val)) if validation else {}
    rows = []
    for config, paired in final:
        row = [f"{config.rate:g}", f"`{config.label}`", str(paired.n), pp(paired.mean), interval_cell(paired)]
        if validation:
            other = best.get(config.key)
            row += [pp(other.mean), interval_cell(other)] if other else ["n/a", ""]
        rows.append(row)
    interval = f"{CONFIDENCE:.0%} interval (pp)"
    header = ["drop_path_rate", "configuration", "seed pairs", "Δ final test acc vs rate 0 (pp)", interval]
    if validation:
        header += ["Δ at best val vs rate 0 (pp)", interval]
    return [
        "",
        "## Rate response",
        "",
        "Each rate against rate 0, paired by seed (the table above, by rate; the plot's last panel):",
        "",
    ] + markdown_table(header, rows)


def _search_lines(sweep: Sweep) -> list[str]:
    """An Optuna search's trials by rate (hydra/sweeper=optuna_rate): what each scored on its objective,
    the best validation accuracy, and the test accuracy at that epoch; the sweeper's best trial."""
    results = sweep.path / SEARCH_RESULTS
    if not results.is_file():
        return []
    found = OmegaConf.to_container(OmegaConf.load(results))
    jobs = [dict(override_pairs(r.overrides or [])) for r in sweep.runs]
    searched = sorted(k for k in set().union(*jobs) if len({job.get(k) for job in jobs}) > 1)  # what the trials varied
    trials = sorted((r for r in sweep.runs if r.finished and "best_val_acc" in r.summary), key=lambda r: r.rate or 0.0)
    rows = [
        [
            r.name.partition("_")[0],
            *(f"{r.config.get(k, float('nan')):g}" for k in searched),
            pct(r.summary["best_val_acc"]),
            pct(r.summary["test_acc_at_best_val"]),
        ]
        for r in trials
    ]
    best = ", ".join(f"{k}={v:g}" for k, v in (found.get("best_params") or {}).items())
    return [
        "",
        "## Search",
        "",
        f"The Optuna sweeper's trials by rate; it maximised each trial's best validation accuracy and picked "
        f"{best or 'no trial'} (best validation accuracy {pct(found['best_value']) if 'best_value' in found else 'n/a'} %, "
        f"{SEARCH_RESULTS}). One seed per trial: a trial's score carries its seed's noise.",
        "",
    ] + markdown_table(["trial", *searched, "best val acc %", "test acc at best val %"], rows)


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"] + [
        "| " + " | ".join(r) + " |" for r in rows
    ]


def _missing(sweep: Sweep) -> list[str]:
    """The Missing section's items: jobs not started, without metrics, failed or unreadable; then per
    configuration its unfinished runs and, except in a search, what its pairing with the baseline lacks."""
    out = [f"- not started: `{sweep.short(job)}`" for job in sweep.not_started]
    out += [_missing_no_metrics(sweep, r) for r in sweep.no_metrics if r.failure is None]  # failed: listed next
    out += [f"- job `{r.name}` (`{sweep.run_label(r)}`): failed (see Failed jobs)" for r in sweep.failed]
    out += [
        f"- job `{r.name}` (`{sweep.run_label(r)}`): unreadable, left out: {r.unreadable}" for r in sweep.unreadable
    ]
    for config in sweep.configurations:
        out += _missing_runs(sweep, config)
        out += [] if sweep.searched else _missing_pairs(sweep, config)
    return out


def _missing_no_metrics(sweep: Sweep, r: Run) -> str:
    """A job dir without a metrics line: interrupted in its first epoch (with the command that continues
    it), or not started yet."""
    if (r.path / "last.pt").is_file():
        return (
            f"- job `{r.name}` (`{sweep.run_label(r)}`): interrupted before its first epoch ended; "
            f"continue with `{resume_command(r.path.resolve())}`"
        )
    return f"- job `{r.name}` (`{sweep.run_label(r)}`): no metrics yet (not started, or stopped before its first epoch)"


def _missing_runs(sweep: Sweep, config: Configuration) -> list[str]:
    """``config``'s runs without a summary.json (how far they got, how to continue them), and its runs
    with unreadable metrics lines."""
    out = []
    for r in config.runs:
        if not r.finished and r.failure is None:
            resume = f"; continue with `{resume_command(r.path.resolve())}`" if (r.path / "last.pt").is_file() else ""
            out.append(
                f"- job `{r.name}` (`{sweep.run_label(r)}`): no summary.json, {len(r.metrics)} of "
                f"{r.planned_epochs} epochs done{resume}"
            )
        if r.bad_lines:
            out.append(f"- job `{r.name}`: {r.bad_lines} unreadable line(s) in metrics.jsonl (skipped)")
    return out


def _missing_pairs(sweep: Sweep, config: Configuration) -> list[str]:
    """What keeps ``config`` (not a baseline) from a full pairing: no baseline, or seeds finished on one side only."""
    if config.is_baseline:
        return []
    baseline = baseline_of(config, sweep)
    if baseline is None:
        return [f"- `{config.label}`: no drop_path_rate=0 configuration with the same other overrides"]
    unpaired = unpaired_seeds(config, baseline)
    if not unpaired:
        return []
    seeds = ", ".join(str(s) for s in unpaired)
    return [f"- `{config.label}`: seed(s) {seeds} finished on one side only, left out of the pairing"]


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
    """The command line that reruns (or continues) the sweep: multirun.yaml's, the last invocation's, when
    its jobs cover every job dir or a search (a sweeper other than Hydra's basic one) chose them (a search
    run into a dir that also holds an earlier grid gets the search's command alone); else (the last was part
    of the sweep) its Hydra options with every job dir's overrides, each key with all its values."""
    hydra = (sweep.multirun or {}).get("hydra", {})
    script = f"{hydra.get('job', {}).get('name') or 'train'}.py" if hydra else "train.py"
    options = [o for o in hydra.get("overrides", {}).get("hydra", []) or [] if not o.startswith("hydra.mode=")]
    jobs = expected_jobs(sweep.multirun) if hydra else None
    have = [
        tuple(sorted(override_pairs(r.overrides))) for r in sweep.runs + sweep.no_metrics if r.overrides is not None
    ]
    if sweep.searched or (jobs is not None and set(have) <= set(jobs)):
        args = options + list(hydra.get("overrides", {}).get("task", []) or [])
        return " ".join(["python", script, "-m"] + [shlex.quote(a) for a in args])
    values: dict[str, list[str]] = {}
    for run in sweep.runs + sweep.no_metrics:
        for item in run.overrides or []:
            key, _, value = item.partition("=")
            if value not in values.setdefault(key, []):
                values[key].append(value)
    args = options + [f"{k}={','.join(v)}" for k, v in values.items()]
    return " ".join(["python", script, "-m"] + [shlex.quote(a) for a in args])


def _selection_note(validation: bool) -> str:
    if validation:
        return (
            "Test acc at best val epoch is each run's test accuracy at the epoch of its highest validation "
            "accuracy (images held out of training by data.val_size; ties: the earlier epoch, the weights "
            "in best.pt), chosen without looking at the test set; mean ± sample std across seeds, and its "
            "own paired Δ and interval."
        )
    return (
        "Best test acc is each run's highest test accuracy over its epochs: chosen on the test set, so it "
        "overstates what the run reaches and no Δ is computed from it; train with data.val_size for a "
        "selection that does not look at the test set."
    )


def _explanation(validation: bool = False) -> list[str]:
    t2, t3 = (t_quantile(0.5 + CONFIDENCE / 2, df) for df in (1, 2))
    return [
        "Accuracies are in percent over the finished runs (mean ± sample std across seeds). Final train acc is "
        "the last epoch's running accuracy over its training steps (images as trained on, augmented unless "
        "data.augment=false; drop path active; weights still moving), not an evaluation of the final weights; "
        "train − test is that minus the final test accuracy, run by run, averaged, in percentage points (pp). "
        "With drop path the train accuracy is measured with blocks dropped, so part of a smaller gap is how it "
        "is measured, not only better generalisation.",
        "",
        "Δ is the final test accuracy minus that of the drop_path_rate=0 run with the same seed and the same "
        "other overrides (or else the same config but for drop path keys, which do nothing at rate 0), in pp; the "
        f"{CONFIDENCE:.0%} interval is mean Δ ± t(n-1)·sd/√n over the n seed pairs "
        f"(t = {t2:.2f} for n = 2, {t3:.2f} for n = 3: few seeds give wide intervals). There is none for one pair, "
        "nor when all differences are equal: accuracy moves in steps of one test image, so equal differences "
        "mean the spread was not measured, not that it is zero. A seed run more than once on a side is one pair, "
        "the mean of its runs (repeats of a seed are not independent samples); the paired seeds say how many "
        "runs each side had. Epoch seconds and images/s average every epoch but each run's first (warm-up).",
        "",
        _selection_note(validation),
        "",
    ]


def _caption(plot_name: str, diff_metric: str) -> str:
    return (
        f"`{plot_name}`, per configuration: test accuracy (solid, mean over seeds, band = min to max), train "
        "accuracy (dashed, mean) and validation accuracy where there is a split (dotted, mean); train loss "
        f"(mean, band = min to max); {diff_metric} accuracy minus the rate-0 run of the same seed at each epoch where "
        f"both have one (mean over the seed pairs, band = {CONFIDENCE:.0%} t interval where there is one, n "
        "marked where it changes); with two or more rates above 0, the rate response: Δ final test accuracy "
        f"against drop_path_rate (mean, {CONFIDENCE:.0%} t interval as error bars)."
    )


def render_markdown(sweep: Sweep, plot_name: str | None = REPORT_PNG) -> str:
    """comparison.md: what the sweep holds and how to read it, the table per configuration, the rate
    response and search, the plot, then what is unfinished, failed or missing, the machine, and the
    command that reproduces the sweep."""
    validation = has_validation(sweep)
    lines = _intro_lines(sweep) + _explanation(validation)
    lines += markdown_table(_header(validation), [_row(c, sweep, validation) for c in sweep.configurations])
    lines += _rate_response_lines(sweep, validation)
    lines += _search_lines(sweep)
    if plot_name:
        lines += [
            "",
            f"![accuracy, train loss and paired difference per epoch]({plot_name})",
            "",
            _caption(plot_name, "test" if diff_key(sweep) == "test_acc" else "validation"),
        ]
    lines += _unfinished_lines(sweep)
    lines += _failed_lines(sweep)
    missing = _missing(sweep)
    lines += ["", "## Missing", ""] + (
        missing or ["- nothing: every run finished and every configuration has its baseline"]
    )
    lines += ["", "## Machine", ""] + _machine(sweep)
    cwd = (sweep.multirun or {}).get("hydra", {}).get("runtime", {}).get("cwd")
    lines += ["", "## Reproduce", "", "```", reproduce_command(sweep), "```"]
    if cwd:
        lines += ["", f"(run from `{cwd}`; then `python -m zoo.train.report <sweep dir>` rebuilds this report)"]
    return "\n".join(lines) + "\n"


def _intro_lines(sweep: Sweep) -> list[str]:
    """The title, and a line with the sweep's runs, configurations, finished and failed jobs, and the
    overrides every job shares."""
    n_done = sum(r.finished for r in sweep.runs)
    common = " ".join(f"{k}={v}" for k, v in sweep.common)
    return [
        f"# Comparison: {sweep.path.name}",
        "",
        f"Sweep dir `{sweep.path}`: {len(sweep.runs)} run(s) in {len(sweep.configurations)} configuration(s), "
        f"{n_done} finished."
        + (f" {len(sweep.failed)} job(s) failed (listed below)." if sweep.failed else "")
        + (f" Shared by every job: `{common}`." if common else ""),
        "",
    ]


def _unfinished_lines(sweep: Sweep) -> list[str]:
    """The Unfinished runs section: runs with metrics but no summary.json, and no failure (none: no section)."""
    unfinished = [r for r in sweep.runs if not r.finished and r.failure is None]
    if not unfinished:
        return []
    rows = [
        [
            f"`{r.name}`",
            f"`{sweep.run_label(r)}`",
            f"{len(r.metrics)} of {r.planned_epochs}",
            pct(float(r.metrics[-1]["test_acc"])) if "test_acc" in r.metrics[-1] else "n/a",
        ]
        for r in unfinished
    ]
    return ["", "## Unfinished runs", ""] + markdown_table(["job", "overrides", "epochs done", "last test acc %"], rows)


def _failed_lines(sweep: Sweep) -> list[str]:
    """The Failed jobs section: each failed job's exit status, epochs done and error (none: no section)."""
    if not sweep.failed:
        return []
    rows = [
        [
            f"`{r.name}`",
            f"`{sweep.run_label(r)}`",
            str(failure.get("exit_status", "?")),
            f"{len(r.metrics)} of {r.planned_epochs}",
            str(failure.get("error", "")).replace("|", "\\|"),
        ]
        for r in sweep.failed
        if (failure := r.failure) is not None
    ]
    return [
        "",
        "## Failed jobs",
        "",
        "Each job's dir holds failed.json and its train.log; the same sweep "
        "command runs them again (and skips the finished ones).",
        "",
    ] + markdown_table(["job", "overrides", "exit status", "epochs done", "error"], rows)


# ---------------------------------------------------------------- entry points


def write_report(sweep_dir: str | Path, with_plot: bool = True) -> list[Path]:
    """Write comparison.md (and comparison.png) into ``sweep_dir``; return the paths written."""
    sweep = load_sweep(sweep_dir)
    with_plot = with_plot and bool(sweep.runs)  # every job failed: nothing to plot
    md = sweep.path / REPORT_MD
    md.write_text(render_markdown(sweep, REPORT_PNG if with_plot else None))
    if not with_plot:
        return [md]
    png = sweep.path / REPORT_PNG
    plot(sweep, png)
    return [md, png]


class ReportCallback(Callback):
    """Hydra callback: writes the comparison report into the sweep dir when a multirun ends, then exits 1
    when a job of the sweep failed (its failed.json, zoo.train.sweep_job), naming each."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # made before the sweeper starts, so that it can keep its state there (hydra/sweeper=optuna_rate's study)
        sweep_dir = Path(str(config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if is_search(config.hydra.sweeper):
            # Hydra's basic sweeper saves the sweep's config and command as multirun.yaml; a search's does not
            OmegaConf.save(config, sweep_dir / "multirun.yaml")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            paths = write_report(sweep_dir)
            log.info("comparison report: %s", ", ".join(str(p) for p in paths))
        except ReportError as err:  # the runs themselves are done; a missing report must not fail them
            log.warning("no comparison report: %s", err)
        failed = failed_jobs(sweep_dir)
        if failed:
            for run in failed:
                print(f"failed: job {run.name}: {(run.failure or {}).get('error')}", file=sys.stderr)
            print(
                f"error: {len(failed)} job(s) of the sweep failed; the others ran. Run the same command again "
                f"(hydra.sweep.dir={sweep_dir}) to retry them; finished jobs are skipped",
                file=sys.stderr,
            )
            sys.exit(1)  # SystemExit: Hydra passes it on, so the multirun's exit status says a job failed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.train.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", help="a Hydra multirun sweep dir (holding the numbered job dirs)")
    parser.add_argument("--no-plot", action="store_true", help="write comparison.md only")
    args = parser.parse_args(argv)
    return run_command(
        lambda: "wrote " + " and ".join(str(p) for p in write_report(args.sweep_dir, with_plot=not args.no_plot))
    )


if __name__ == "__main__":
    sys.exit(main())
