"""Drop path schedules: over depth, the rate of every block, computed once from one ``drop_path_rate``;
over training time, a factor on all of them (Liu et al. 2023, "Dropout Reduces Underfitting")."""

from __future__ import annotations

from collections.abc import Sequence

from .drop import check_drop_prob

DEPTH_SCHEDULES = ("linear", "paper", "uniform", "stagewise")
TIME_SCHEDULES = ("constant", "early", "late", "ramp")
EARLY_MODES = ("constant", "linear")


def check_depth_schedule(schedule: str) -> str:
    if schedule not in DEPTH_SCHEDULES:
        raise ValueError(f"drop_path_schedule must be one of {', '.join(DEPTH_SCHEDULES)}, got {schedule!r}")
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
    flat = not isinstance(depths, Sequence)  # one depth: checked below with the rest (2.5 is refused there)
    stage_depths = [depths] if flat else list(depths)
    if any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in stage_depths):
        raise ValueError(f"depths must be a non-negative int or a sequence of them (one per stage), got {depths!r}")
    n, s = sum(stage_depths), len(stage_depths)
    rates: list[list[float]] = []
    before = 0  # blocks before this stage
    for i, d in enumerate(stage_depths):
        blocks = range(before + 1, before + d + 1)
        if schedule == "linear":
            stage = [r * ((b - 1) / (n - 1)) if n > 1 else r for b in blocks]
        elif schedule == "paper":
            stage = [r * (b / n) for b in blocks]
        elif schedule == "uniform":
            stage = [r for _ in blocks]
        else:
            stage = [r * (i / (s - 1)) if s > 1 else r for _ in blocks]
        rates.append(stage)
        before += d
    return rates[0] if flat else rates


def check_time_schedule(schedule: str, early_mode: str = "constant") -> None:
    if schedule not in TIME_SCHEDULES:
        raise ValueError(f"drop_path_time_schedule must be one of {', '.join(TIME_SCHEDULES)}, got {schedule!r}")
    if early_mode not in EARLY_MODES:
        raise ValueError(f"drop_path_time_early_mode must be one of {', '.join(EARLY_MODES)}, got {early_mode!r}")


def time_factor(schedule: str, epoch: float, cutoff: float, early_mode: str = "constant") -> float:
    """The factor on every block's rate after ``epoch`` epochs of training (fractional: step / steps_per_epoch).

    Args:
        schedule: ``"constant"`` 1 throughout; ``"early"`` 1 (or, with ``early_mode="linear"``,
            1 - epoch / cutoff) before ``cutoff``, then 0; ``"late"`` 0 before ``cutoff``, then 1;
            ``"ramp"`` epoch / cutoff, reaching 1 at ``cutoff``.
        epoch: epochs done so far, >= 0.
        cutoff: the epoch where early stops, late starts and ramp ends; a cutoff of 0 makes early
            0, late 1 and ramp 1 from the start.
        early_mode: how the early rate behaves before the cutoff.
    """
    check_time_schedule(schedule, early_mode)
    if cutoff < 0:
        raise ValueError(f"drop_path_time_cutoff must be >= 0, got {cutoff}")
    before = epoch < cutoff
    if schedule == "constant":
        return 1.0
    if schedule == "early":
        if not before:
            return 0.0
        return 1.0 if early_mode == "constant" else 1.0 - epoch / cutoff
    if schedule == "late":
        return 0.0 if before else 1.0
    return epoch / cutoff if before else 1.0
