"""Depth schedules: the drop path rate of every block, computed once from one ``drop_path_rate``."""

from __future__ import annotations

from collections.abc import Sequence

from .drop import check_drop_prob

DEPTH_SCHEDULES = ("linear", "paper", "uniform", "stagewise")


def check_depth_schedule(schedule: str) -> str:
    if schedule not in DEPTH_SCHEDULES:
        raise ValueError(
            f"drop_path_schedule must be one of {', '.join(DEPTH_SCHEDULES)}, got {schedule!r}"
        )
    return schedule


def drop_path_rates(
    drop_path_rate: float, depths: int | Sequence[int], schedule: str = "linear"
) -> list[float] | list[list[float]]:
    """Per-block drop path rates for a network of ``depths`` blocks.

    Args:
        drop_path_rate: r, the largest rate, in [0, 1].
        depths: the number of blocks N (returns a flat list of N rates), or the depth of every
            stage (returns one list of rates per stage, blocks counted across stages).
        schedule: with blocks numbered l = 1..N and stages i = 0..S-1:
            ``"linear"`` r (l - 1) / (N - 1): first block 0, last r (timm, MetaFormer, ConvNeXt);
            ``"paper"`` r l / N: first block r / N, last r (Huang et al. 2016);
            ``"uniform"`` r for every block (DeiT III);
            ``"stagewise"`` r i / (S - 1) for every block of stage i: one rate per stage.
            A single block (linear) or single stage (stagewise) gets r.

    Example: ``drop_path_rates(0.1, [2, 2])`` -> ``[[0.0, 0.0333], [0.0667, 0.1]]``.
    """
    r = check_drop_prob(drop_path_rate, "drop_path_rate")
    check_depth_schedule(schedule)
    flat = isinstance(depths, int)
    stage_depths = [depths] if flat else list(depths)
    if any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in stage_depths):
        raise ValueError(f"depths must be non-negative ints, got {depths!r}")
    n, s = sum(stage_depths), len(stage_depths)
    rates: list[list[float]] = []
    l = 0  # blocks before this stage
    for i, d in enumerate(stage_depths):
        blocks = range(l + 1, l + d + 1)
        if schedule == "linear":
            stage = [r * ((b - 1) / (n - 1)) if n > 1 else r for b in blocks]
        elif schedule == "paper":
            stage = [r * (b / n) for b in blocks]
        elif schedule == "uniform":
            stage = [r for _ in blocks]
        else:
            stage = [r * (i / (s - 1)) if s > 1 else r for _ in blocks]
        rates.append(stage)
        l += d
    return rates[0] if flat else rates
