"""Training-time drop path schedules (Liu et al. 2023, "Dropout Reduces Underfitting").

A time schedule gives a factor in [0, 1] for the point reached in training; every block's rate is its
depth-schedule rate times that factor, so the depth profile keeps its shape.
"""

from __future__ import annotations

TIME_SCHEDULES = ("constant", "early", "late", "ramp")
EARLY_MODES = ("constant", "linear")


def check_time_schedule(schedule: str, early_mode: str = "constant") -> None:
    if schedule not in TIME_SCHEDULES:
        raise ValueError(
            f"drop_path_time_schedule must be one of {', '.join(TIME_SCHEDULES)}, got {schedule!r}"
        )
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
    return min(1.0, epoch / cutoff) if before else 1.0
