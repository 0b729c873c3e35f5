"""comparison.png: per configuration, test, train and validation accuracy, train loss, and the paired
difference against drop_path_rate=0 at every epoch; with two or more rates above 0, the rate response."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import TYPE_CHECKING

from .paired import CONFIDENCE, Paired, paired_by_epoch, rate_response
from .sweep import Configuration, Run, Sweep, baseline_of

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Curve = tuple[list[float], list[float], list[float], list[float]]  # epochs, mean, low, high

TITLE_ACC = "Accuracy: test (solid, min-max band), train (dashed), validation (dotted)"
TITLE_LOSS = "Train loss (mean, min-max band)"
TITLE_DIFF = f"Test accuracy minus rate 0, same seed (mean, {CONFIDENCE:.0%} t band)"
TITLE_DIFF_VAL = f"Validation accuracy minus rate 0, same seed (mean, {CONFIDENCE:.0%} t band)"
TITLE_RATE = f"Rate response: Δ final test acc vs rate 0 (mean, {CONFIDENCE:.0%} t interval)"


def _curve(runs: list[Run], key: str) -> Curve:
    """Per epoch: the epoch, and mean, min, max of ``key`` over the runs that reached it."""
    by_epoch: dict[float, list[float]] = {}
    for run in runs:
        for i, row in enumerate(run.metrics):
            if row.get(key) is not None:
                by_epoch.setdefault(float(row.get("epoch", i + 1)), []).append(float(row[key]))
    xs = sorted(by_epoch)
    return (
        xs,
        [statistics.fmean(by_epoch[x]) for x in xs],
        [min(by_epoch[x]) for x in xs],
        [max(by_epoch[x]) for x in xs],
    )


def paired_curve(pairs: dict[float, Paired]) -> tuple[Curve, list[int]]:
    """Epochs, mean difference and its interval (NaN where there is none, which leaves a gap in the
    band), and the number of seed pairs at each epoch."""
    xs = list(pairs)
    intervals = [p.interval() or (math.nan, math.nan) for p in pairs.values()]
    mean = [p.mean for p in pairs.values()]
    return (xs, mean, [lo for lo, _ in intervals], [hi for _, hi in intervals]), [p.n for p in pairs.values()]


def _scaled(values: list[float], scale: float) -> list[float]:
    return [v * scale for v in values]


def _plot_runs(ax_acc: Axes, ax_loss: Axes, config: Configuration, color: str) -> None:
    label = f"{config.label} (n={len(config.runs)})"
    for ax, key, scale in ((ax_acc, "test_acc", 100.0), (ax_loss, "train_loss", 1.0)):
        xs, mean, lo, hi = _curve(config.runs, key)
        if xs:
            ax.plot(xs, _scaled(mean, scale), color=color, marker="." if len(xs) < 30 else None, label=label)
            ax.fill_between(xs, _scaled(lo, scale), _scaled(hi, scale), color=color, alpha=0.2, linewidth=0)
    for name, style in (("train", "--"), ("val", ":")):
        xs, mean, _, _ = _curve(config.runs, f"{name}_acc")
        if xs:  # no band: several per configuration would hide each other; "_": out of the legend, the title says it
            ax_acc.plot(xs, _scaled(mean, 100.0), color=color, linestyle=style, label=f"_{name} {config.label}")


def _plot_paired(ax: Axes, pairs: dict[float, Paired], label: str, color: str) -> None:
    (xs, mean, lo, hi), ns = paired_curve(pairs)
    varies = len(set(ns)) > 1
    label += f" (n={min(ns)}-{max(ns)} pairs)" if varies else f" (n={ns[0]} pairs)"
    ys = _scaled(mean, 100.0)
    ax.plot(xs, ys, color=color, marker="." if len(xs) < 30 else None, label=label)
    ax.fill_between(xs, _scaled(lo, 100.0), _scaled(hi, 100.0), color=color, alpha=0.2, linewidth=0)
    if varies:  # a change in n moves the curve by itself; mark where it happens
        for k, (x, y, n) in enumerate(zip(xs, ys, ns)):
            if k == 0 or n != ns[k - 1]:
                ax.annotate(
                    f"n={n}",
                    (x, y),
                    textcoords="offset points",
                    xytext=(0, 6),
                    ha="center",
                    fontsize="x-small",
                    color=color,
                )


def _plot_rate_response(ax: Axes, sweep: Sweep) -> None:
    """Δ final test accuracy against drop_path_rate, one line per family of configurations (those that
    differ only in the rate), from (0, 0) at the baseline; error bars: the t interval where there is one."""
    families: dict[tuple, list[tuple[float, Paired]]] = {}
    for config, paired in rate_response(sweep):
        families.setdefault(config.without_rate(), []).append((config.rate or 0.0, paired))
    for i, (key, points) in enumerate(families.items()):
        xs = [0.0] + [rate for rate, _ in points]
        ys = [0.0] + [100 * p.mean for _, p in points]
        intervals = [(0.0, 0.0)] + [p.interval() or (p.mean, p.mean) for _, p in points]
        err = [[y - 100 * lo for y, (lo, _) in zip(ys, intervals)], [100 * hi - y for y, (_, hi) in zip(ys, intervals)]]
        label = " ".join(f"{k}={v}" for k, v in key if (k, v) not in sweep.common) or "all runs"
        ax.errorbar(xs, ys, yerr=err, color=f"C{i % 10}", marker="o", capsize=4, label=label)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set(xlabel="drop_path_rate", ylabel="Δ final test accuracy (pp)", title=TITLE_RATE)


def plot(sweep: Sweep, path: Path | None = None) -> Figure:
    """Draw comparison.png (saved to ``path`` when given); returns the figure."""
    # The object-oriented API renders with Agg and leaves pyplot's global backend alone.
    from matplotlib.figure import Figure

    rates = bool(rate_response(sweep))
    fig = Figure(figsize=(24 if rates else 18, 4.8), layout="constrained")
    axes = fig.subplots(1, 4 if rates else 3)
    ax_acc, ax_loss, ax_diff = axes[:3]
    key = diff_key(sweep)
    for i, config in enumerate(sweep.configurations):
        color = f"C{i % 10}"
        _plot_runs(ax_acc, ax_loss, config, color)
        baseline = baseline_of(config, sweep)
        pairs = paired_by_epoch(config, baseline, key) if baseline else {}
        if pairs:
            _plot_paired(ax_diff, pairs, config.label, color)
    _label_epoch_axes(ax_acc, ax_loss, ax_diff, key)
    if rates:
        _plot_rate_response(axes[3], sweep)
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def diff_key(sweep: Sweep) -> str:
    """The metric of the per-epoch difference panel: test accuracy, unless every run evaluated the test
    split at one epoch at most (``test_every=0``) and the validation split at several: then validation
    accuracy, a curve instead of one point."""
    counts = {
        key: [sum(row.get(key) is not None for row in run.metrics) for run in sweep.runs]
        for key in ("test_acc", "val_acc")
    }
    return "val_acc" if max(counts["test_acc"], default=0) < 2 <= min(counts["val_acc"], default=0) else "test_acc"


def _label_epoch_axes(ax_acc: Axes, ax_loss: Axes, ax_diff: Axes, key: str) -> None:
    """Titles, axis labels and whole-epoch ticks of the three per-epoch panels; the paired panel's zero
    line, and a note on it where no configuration had seed pairs with a baseline."""
    from matplotlib.ticker import MaxNLocator

    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title=TITLE_ACC)
    ax_loss.set(xlabel="epoch", ylabel="train loss", title=TITLE_LOSS)
    val = key == "val_acc"
    ax_diff.set(
        xlabel="epoch",
        ylabel=f"Δ {'validation' if val else 'test'} accuracy (pp)",
        title=TITLE_DIFF_VAL if val else TITLE_DIFF,
    )
    ax_diff.axhline(0.0, color="black", linewidth=0.8)
    if not ax_diff.get_legend_handles_labels()[0]:
        ax_diff.text(
            0.5,
            0.5,
            "no seed pairs with a drop_path_rate=0 baseline",
            transform=ax_diff.transAxes,
            ha="center",
            va="center",
        )
    for ax in (ax_acc, ax_loss, ax_diff):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
