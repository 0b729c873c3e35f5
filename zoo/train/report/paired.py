"""Paired differences against the drop_path_rate=0 baseline: a configuration's accuracy minus its
baseline's, seed by seed, at the end of training and at every epoch, with Student t intervals."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .sweep import Configuration, Run, Sweep, baseline_of

CONFIDENCE = 0.95
# Accuracies are fractions of a test set (steps of 1e-4 for CIFAR-10's 10,000 images). Differences
# closer than this are one number up to float rounding: 0.83 - 0.80 and 0.84 - 0.81 differ in the
# 17th digit, and would otherwise give a "spread" of 1e-17 and a zero-width interval.
SAME = 1e-9


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
    """Test accuracy of a configuration minus its baseline's, seed by seed (fractions)."""

    seeds: list[Any] = field(default_factory=list)
    diffs: list[float] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.diffs)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.diffs)

    @property
    def equal(self) -> bool:
        """Two or more pairs whose differences are all the same number (no spread measured)."""
        return self.n >= 2 and max(self.diffs) - min(self.diffs) <= SAME

    def interval(self, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
        """mean ± t(1 - a/2, n - 1)·sd/√n, or None when the differences cannot give one.

        With n = 2 the interval is kept: mean ± 12.71·|d1 - d2|/2 covers the true mean difference 95%
        of the time if the differences are normal, so its width is the honest statement of how little
        two seeds tell; suppressing it would also hide a difference large enough to exclude zero even
        so. None with one pair (no spread at all), and None when every difference is equal: that
        happens because accuracy counts test images (steps of 1/test images), not because the seeds
        agree exactly, so sd = 0 is a spread not measured and a zero-width interval would claim
        certainty the data do not have. ``no_interval`` says which.
        """
        if self.n < 2 or self.equal:
            return None
        half = t_quantile(0.5 + confidence / 2, self.n - 1) * statistics.stdev(self.diffs) / math.sqrt(self.n)
        return self.mean - half, self.mean + half

    def no_interval(self) -> str | None:
        """Why there is no interval, in words for the table; None when there is one."""
        if self.n == 1:
            return "n/a (1 pair)"
        if self.equal:
            return f"none: n = {self.n}, all differences equal (spread unmeasured)"
        return None


def seed_order(seed: Any) -> tuple[int, float, str]:
    """Sort key for seeds: numbers by value (2 before 10, whether read as 2 or "2"), then the rest by text."""
    try:
        return (0, float(seed), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(seed))


def runs_per_seed(config: Configuration) -> dict[Any, int]:
    """How many finished runs each seed has (more than one when a seed was run again)."""
    counts: dict[Any, int] = {}
    for run in config.finished:
        counts[run.seed] = counts.get(run.seed, 0) + 1
    return counts


def final_acc(run: Run) -> float | None:
    return run.final_acc


def at_best_val(run: Run) -> float | None:
    """Test accuracy at the best validation epoch (None: the run kept no validation split)."""
    return run.at_best_val


def _final_by_seed(config: Configuration, metric: Callable[[Run], float | None] = final_acc) -> dict[Any, float]:
    by_seed: dict[Any, list[float]] = {}
    for run in config.finished:
        value = metric(run)
        if value is not None:
            by_seed.setdefault(run.seed, []).append(value)
    # A seed run twice is one pair, its runs' mean: repeats share the seed's initialisation and data
    # order, so they are not independent samples and must not add to n.
    return {seed: statistics.fmean(v) for seed, v in by_seed.items()}


def paired_difference(
    config: Configuration, baseline: Configuration, metric: Callable[[Run], float | None] = final_acc
) -> Paired:
    """``metric`` of a finished run (default: final test accuracy) minus the baseline's, over the seeds
    finished on both sides (and for which both have the metric)."""
    mine, base = _final_by_seed(config, metric), _final_by_seed(baseline, metric)
    seeds = sorted((s for s in mine if s in base), key=seed_order)
    return Paired(seeds, [mine[s] - base[s] for s in seeds])


def unpaired_seeds(config: Configuration, baseline: Configuration) -> list[Any]:
    """Seeds finished on one side only, left out of ``paired_difference``."""
    return sorted(set(_final_by_seed(config)) ^ set(_final_by_seed(baseline)), key=seed_order)


def _by_seed_and_epoch(config: Configuration, key: str) -> dict[Any, dict[float, float]]:
    """``key`` per seed and epoch over every run, finished or not (repeated seeds: their mean)."""
    values: dict[Any, dict[float, list[float]]] = {}
    for run in config.runs:
        for i, row in enumerate(run.metrics):
            if row.get(key) is not None:
                epoch = float(row.get("epoch", i + 1))
                values.setdefault(run.seed, {}).setdefault(epoch, []).append(float(row[key]))
    return {seed: {e: statistics.fmean(v) for e, v in rows.items()} for seed, rows in values.items()}


def paired_by_epoch(config: Configuration, baseline: Configuration, key: str = "test_acc") -> dict[float, Paired]:
    """Per epoch, ``key`` minus the baseline's for each seed both sides reached that epoch with.

    Unfinished runs count for the epochs they finished, so n can change from epoch to epoch; epochs
    without a single pair are left out.
    """
    return pair_curves(_by_seed_and_epoch(config, key), _by_seed_and_epoch(baseline, key))


def pair_curves(mine: dict[Any, dict[Any, float]], base: dict[Any, dict[Any, float]]) -> dict[Any, Paired]:
    """Two sides' curves, seed -> {x: value}, as one :class:`Paired` per x (an epoch, a count of removed
    blocks): mine minus base for each seed that has x on both sides, in x's order."""
    out: dict[Any, Paired] = {}
    for seed in sorted(mine.keys() & base.keys(), key=seed_order):
        for x in mine[seed].keys() & base[seed].keys():
            pair = out.setdefault(x, Paired())
            pair.seeds.append(seed)
            pair.diffs.append(mine[seed][x] - base[seed][x])
    return dict(sorted(out.items()))


def rate_response(
    sweep: Sweep, metric: Callable[[Run], float | None] = final_acc
) -> list[tuple[Configuration, Paired]]:
    """Each configuration with a rate above 0 and a baseline, with its paired difference of ``metric``,
    ordered by rate; empty unless that gives two or more rates (one rate is a row of the main table)."""
    found = [
        (c, paired_difference(c, b, metric))
        for c in sweep.configurations
        if not c.is_baseline and c.rate is not None and (b := baseline_of(c, sweep)) is not None
    ]
    found = [(c, p) for c, p in found if p.diffs]
    rates = {c.rate for c, _ in found}
    return sorted(found, key=lambda cp: (cp[0].rate, cp[0].label)) if len(rates) >= 2 else []
