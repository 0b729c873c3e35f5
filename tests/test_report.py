"""The comparison report: exact numbers from hand-made metrics files (final and per-epoch paired
differences, train accuracy and its gap, intervals with few seeds), the plot's panels, unfinished
sweeps, errors, the Hydra callback, and (slow) a real 2 x 2 micro sweep through train.py."""

import ast
import json
import math
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import OmegaConf

from conftest import REPO, compose_train
from zoo.train.report.comparison import (
    ReportCallback,
    main,
    paired_by_epoch,
    paired_difference,
    plot,
    render_markdown,
    reproduce_command,
    t_quantile,
    write_report,
)
from zoo.train.report.paired import Paired
from zoo.train.report.plot import TITLE_ACC, TITLE_DIFF, TITLE_DIFF_VAL, TITLE_LOSS, paired_curve
from zoo.train.report.sweep import ReportError, baseline_of, load_sweep

T_975_DF1 = 12.70620474  # Student t 0.975 quantiles, 1 and 2 degrees of freedom (from tables)
T_975_DF2 = 4.302652729749464

# Hand-made sweep: drop_path_rate 0 vs 0.1, seeds 0, 1, 2, three epochs each.
FINAL = {0.0: [0.80, 0.82, 0.84], 0.1: [0.83, 0.84, 0.88]}
BEST = {0.0: [0.81, 0.83, 0.85], 0.1: [0.84, 0.85, 0.89]}
EPOCH_SECONDS = {0.0: [10.0, 2.0, 4.0], 0.1: [12.0, 3.0, 5.0]}  # first epoch = warm-up, left out
IMAGES_PER_SECOND = {0.0: [100.0, 1000.0, 2000.0], 0.1: [100.0, 900.0, 1100.0]}
TRAIN_GAP = {0.0: 0.10, 0.1: 0.04}  # train acc = test acc + this + 0.01 * seed, every epoch
SUMMARY_EXTRA = {
    "params": 1234,
    "total_seconds": 20.0,
    "device": "cuda",
    "device_name": "Test GPU",
    "world_size": 1,
    "versions": {"torch": "2.14.1", "zoo": "0.1.0"},
    "model": "resnet8",
    "epochs": 3,
}


def write_job(
    job: Path,
    rate: float,
    seed: int,
    finished: bool = True,
    epochs_done: int = 3,
    accs: list[float] | None = None,
    experiment: str = "compare",
    **config_extra: Any,
) -> None:
    """A job dir; its test accuracy per epoch is ``accs``, by default rising to FINAL at epoch 3."""
    (job / ".hydra").mkdir(parents=True)
    overrides = [f"drop_path_rate={rate:g}", f"seed={seed}", f"experiment={experiment}"]
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    config = {"model": {"name": "resnet8"}, "drop_path_rate": rate, "seed": seed, "epochs": 3, **config_extra}
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    best = BEST[rate][seed] if accs is None else max(accs)
    accs = accs or [FINAL[rate][seed] - 0.1 * (2 - e) for e in range(epochs_done)]
    rows = []
    for e, acc in enumerate(accs):
        rows.append(
            {
                "epoch": e + 1,
                "train_loss": 2.0 - 0.5 * e + seed * 0.01,
                "train_acc": acc + TRAIN_GAP[rate] + 0.01 * seed,
                "test_loss": 1.0,
                "test_acc": acc,
                "lr": 0.1,
                "drop_path_rate": rate,
                "epoch_seconds": EPOCH_SECONDS[rate][e],
                "images_per_second": IMAGES_PER_SECOND[rate][e],
            }
        )
    (job / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if finished:
        summary = dict(SUMMARY_EXTRA, final_test_acc=accs[-1], best_test_acc=best, drop_path_rate=rate, seed=seed)
        (job / "summary.json").write_text(json.dumps(summary))


def write_multirun(sweep: Path) -> None:
    multirun = {
        "hydra": {
            "sweeper": {
                "_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                "params": {"drop_path_rate": "0,0.1", "seed": "0,1,2"},
            },
            "overrides": {"hydra": ["hydra.mode=MULTIRUN"], "task": ["experiment=compare"]},
            "job": {"name": "train"},
            "runtime": {"cwd": "/somewhere/zoo"},
        }
    }
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(multirun))


@pytest.fixture
def sweep_dir(tmp_path):
    sweep = tmp_path / "sweep"
    jobs = [(rate, seed) for rate in (0.0, 0.1) for seed in (0, 1, 2)]  # Hydra's job order
    for num, (rate, seed) in enumerate(jobs):
        write_job(sweep / str(num), rate, seed)
    write_multirun(sweep)
    return sweep


def test_exact_numbers(sweep_dir):
    sweep = load_sweep(sweep_dir)
    assert [c.label for c in sweep.configurations] == ["drop_path_rate=0", "drop_path_rate=0.1"]
    assert sweep.common == (("experiment", "compare"),)
    base, sd = sweep.configurations
    assert base.is_baseline and baseline_of(sd, sweep) is base
    paired = paired_difference(sd, base)
    assert paired.seeds == [0, 1, 2]
    assert paired.diffs == pytest.approx([0.03, 0.02, 0.04], abs=1e-12)
    # By hand: mean 0.03; sd of (0, -0.01, +0.01) around it = sqrt(0.0002 / 2) = 0.01.
    half = T_975_DF2 * 0.01 / math.sqrt(3)
    assert paired.mean == pytest.approx(0.03, abs=1e-12)
    assert paired.interval() == pytest.approx((0.03 - half, 0.03 + half), abs=1e-12)

    md = render_markdown(sweep)
    # 0 : final 80, 82, 84 -> 82.00 +- 2.00; best 81, 83, 85 -> 83.00; train 90, 93, 96 -> 93.00, gaps 10, 11, 12
    # -> +11.00; epoch s (2 + 4) / 2; images/s (1000 + 2000) / 2
    assert (
        "| `drop_path_rate=0` | 0 | 3 | 82.00 ± 2.00 | 83.00 | 93.00 | +11.00 | 3.00 | 1,500 | baseline |  |  |" in md
    )
    # 0.1: final 83, 84, 88 -> 85.00 +- sqrt((4 + 1 + 9) / 2) = 2.65; train 87, 89, 94 -> 90.00, gaps 4, 5, 6 -> +5.00;
    # diff +3.00, 3 -+ 2.48 -> +0.52 to +5.48
    assert (
        "| `drop_path_rate=0.1` | 0.1 | 3 | 85.00 ± 2.65 | 86.00 | 90.00 | +5.00 | 4.00 | 1,000 | +3.00 | +0.52 to +5.48 "
        "| 0, 1, 2 |"
    ) in md
    assert "| final train acc % | train − test (pp) |" in md
    assert "Final train acc is the last epoch's running accuracy" in md
    assert "Shared by every job: `experiment=compare`" in md
    assert "- device: cuda (Test GPU)" in md
    assert "- versions: torch 2.14.1, zoo 0.1.0" in md
    assert "python train.py -m experiment=compare\n" in md
    assert "every run finished and every configuration has its baseline" in md


def test_t_quantile_matches_tables():
    # Published values to 10 significant digits (any statistics table; scipy.stats.t.ppf agrees).
    for df, value in [
        (1, T_975_DF1),
        (2, T_975_DF2),
        (3, 3.182446305),
        (4, 2.776445105),
        (10, 2.228138852),
        (30, 2.042272456),
    ]:
        assert t_quantile(0.975, df) == pytest.approx(value, rel=1e-9)
    assert t_quantile(0.95, 3) == pytest.approx(2.353363435, rel=1e-9)
    with pytest.raises(ValueError):
        t_quantile(0.3, 2)


# Per-epoch test accuracy, seeds 0, 1, 2; seed 2 of rate 0.1 stopped after two epochs (no pair at epoch 3).
EPOCH_ACCS = {
    0.0: [[0.50, 0.60, 0.70], [0.52, 0.61, 0.72], [0.48, 0.62, 0.74]],
    0.1: [[0.45, 0.62, 0.74], [0.49, 0.61, 0.75], [0.44, 0.66]],
}


@pytest.fixture
def epoch_sweep(tmp_path):
    sweep = tmp_path / "epochs"
    for num, (rate, seed) in enumerate((rate, seed) for rate in (0.0, 0.1) for seed in (0, 1, 2)):
        accs = EPOCH_ACCS[rate][seed]
        write_job(sweep / str(num), rate, seed, finished=len(accs) == 3, accs=accs)
    return sweep


def test_paired_difference_per_epoch(epoch_sweep):
    sweep = load_sweep(epoch_sweep)
    base, sd = sweep.configurations
    pairs = paired_by_epoch(sd, base)
    assert list(pairs) == [1.0, 2.0, 3.0]
    assert [p.seeds for p in pairs.values()] == [[0, 1, 2], [0, 1, 2], [0, 1]]
    assert pairs[1.0].diffs == pytest.approx([-0.05, -0.03, -0.04], abs=1e-12)
    assert pairs[2.0].diffs == pytest.approx([0.02, 0.00, 0.04], abs=1e-12)
    assert pairs[3.0].diffs == pytest.approx([0.04, 0.03], abs=1e-12)
    (xs, mean, lo, hi), ns = paired_curve(pairs)
    assert xs == [1.0, 2.0, 3.0] and ns == [3, 3, 2]
    assert mean == pytest.approx([-0.04, 0.02, 0.035], abs=1e-12)
    # sd 0.01, 0.02 over three pairs (t 4.303); epoch 3: sd 0.01/sqrt(2), two pairs (t 12.71): half 12.71 * 0.005
    halves = [T_975_DF2 * 0.01 / math.sqrt(3), T_975_DF2 * 0.02 / math.sqrt(3), T_975_DF1 * 0.005]
    assert lo == pytest.approx([m - h for m, h in zip(mean, halves)], abs=1e-9)
    assert hi == pytest.approx([m + h for m, h in zip(mean, halves)], abs=1e-9)
    # The last epoch's pairs are the finished runs' final pairs.
    assert paired_difference(sd, base).diffs == pytest.approx(pairs[3.0].diffs, abs=1e-12)


def test_plot_panels(epoch_sweep, tmp_path):
    fig = plot(load_sweep(epoch_sweep), tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 0
    ax_acc, ax_loss, ax_diff = fig.axes
    assert [ax.get_title() for ax in fig.axes] == [TITLE_ACC, TITLE_LOSS, TITLE_DIFF]
    # Train accuracy dashed beside test accuracy: test + TRAIN_GAP + 0.01 * seed, averaged over the seeds that
    # reached each epoch (rate 0.1 epoch 3: seeds 0 and 1 only).
    dashed = [line for line in ax_acc.get_lines() if line.get_linestyle() == "--"]
    assert [line.get_label() for line in dashed] == ["_train drop_path_rate=0", "_train drop_path_rate=0.1"]
    assert list(dashed[0].get_ydata()) == pytest.approx([61.0, 72.0, 83.0])
    assert list(dashed[1].get_ydata()) == pytest.approx([51.0, 68.0, 79.0])
    assert len([line for line in ax_acc.get_lines() if line.get_linestyle() == "-"]) == 2
    # The paired panel: one curve (the baseline has none) in percentage points, n marked where it changes,
    # and the zero line.
    (curve,) = [line for line in ax_diff.get_lines() if not line.get_label().startswith("_")]
    assert curve.get_label() == "drop_path_rate=0.1 (n=2-3 pairs)"
    assert list(curve.get_xdata()) == [1.0, 2.0, 3.0]
    assert list(curve.get_ydata()) == pytest.approx([-4.0, 2.0, 3.5])
    assert [t.get_text() for t in ax_diff.texts] == ["n=3", "n=2"]
    assert any(list(line.get_ydata()) == [0.0, 0.0] for line in ax_diff.get_lines())


def test_the_difference_panel_follows_validation_where_the_test_split_was_evaluated_once(epoch_sweep, tmp_path):
    """test_every=0: test accuracy after the last epoch only; the panel pairs the validation curve instead."""
    for metrics in epoch_sweep.glob("*/metrics.jsonl"):
        rows = [json.loads(line) for line in metrics.read_text().splitlines()]
        for row in rows:
            row["val_acc"] = row.pop("test_acc")
        rows[-1]["test_acc"] = rows[-1]["val_acc"] - 0.01
        metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    fig = plot(load_sweep(epoch_sweep), tmp_path / "c.png")
    ax_diff = fig.axes[2]
    assert ax_diff.get_title() == TITLE_DIFF_VAL and ax_diff.get_ylabel() == "Δ validation accuracy (pp)"
    (curve,) = [line for line in ax_diff.get_lines() if not line.get_label().startswith("_")]
    assert list(curve.get_xdata()) == [1.0, 2.0, 3.0]
    assert list(curve.get_ydata()) == pytest.approx([-4.0, 2.0, 3.5])
    assert "; validation accuracy minus the rate-0 run of the same seed" in render_markdown(load_sweep(epoch_sweep))


def test_plot_without_pairs(sweep_dir):
    for num in ("0", "1", "2"):  # no baseline left
        shutil.rmtree(sweep_dir / num)
    ax_diff = plot(load_sweep(sweep_dir)).axes[2]
    assert [t.get_text() for t in ax_diff.texts] == ["no seed pairs with a drop_path_rate=0 baseline"]


def test_interval_with_few_pairs(tmp_path, sweep_dir):
    # n = 2, differences 3 and 2 pp: mean 2.5, sd 0.5 * sqrt(2), half 12.71 * sd / sqrt(2) = 6.35; the t interval,
    # with its multiplier said.
    for num in ("2", "5"):
        shutil.rmtree(sweep_dir / num)
    md = render_markdown(load_sweep(sweep_dir))
    assert "| +2.50 | -3.85 to +8.85 (n = 2: t = 12.71) | 0, 1 |" in md
    # Equal differences (-1 pp twice; in floats 0.79 - 0.80 != 0.81 - 0.82): no zero-width interval.
    equal = tmp_path / "equal"
    for num, (rate, seed, final) in enumerate([(0.0, 0, 0.80), (0.0, 1, 0.82), (0.1, 0, 0.79), (0.1, 1, 0.81)]):
        write_job(equal / str(num), rate, seed, accs=[final - 0.1, final])
    md = render_markdown(load_sweep(equal))
    assert "| -1.00 | none: n = 2, all differences equal (spread unmeasured) | 0, 1 |" in md
    assert "-1.00 to -1.00" not in md
    assert Paired([0, 1, 2], [0.03] * 3).interval() is None
    assert Paired([0, 1, 2], [0.03] * 3).no_interval() == "none: n = 3, all differences equal (spread unmeasured)"
    assert Paired([0], [0.03]).no_interval() == "n/a (1 pair)"
    assert Paired([0, 1], [0.03, 0.02]).no_interval() is None


def test_seeds_of_ten_and_more_sort_as_numbers(tmp_path):
    """Seeds 2, 10 and 11 pair in numeric order (as text, 10 and 11 would come before 2)."""
    sweep_dir = tmp_path / "sweep"
    finals = {0.0: {2: 0.80, 10: 0.81, 11: 0.82}, 0.1: {2: 0.83, 10: 0.85, 11: 0.82}}
    for num, (rate, seed) in enumerate((rate, seed) for rate in finals for seed in finals[rate]):
        write_job(sweep_dir / str(num), rate, seed, accs=[finals[rate][seed] - 0.1, finals[rate][seed]])
    sweep = load_sweep(sweep_dir)
    base, sd = sweep.configurations
    assert paired_difference(sd, base).seeds == [2, 10, 11]
    assert paired_difference(sd, base).diffs == pytest.approx([0.03, 0.04, 0.0], abs=1e-12)
    assert [p.seeds for p in paired_by_epoch(sd, base).values()] == [[2, 10, 11]] * 2
    assert "| 2, 10, 11 |" in render_markdown(sweep)
    shutil.rmtree(sweep_dir / "0")  # seed 2's baseline: unpaired seeds are listed in order too
    shutil.rmtree(sweep_dir / "4")
    assert "- `drop_path_rate=0.1`: seed(s) 2, 10 finished on one side only" in render_markdown(load_sweep(sweep_dir))


def test_a_repeated_seed_is_one_pair_the_mean_of_its_runs(sweep_dir):
    """Seed 0 of rate 0.1 run twice (83 and 85): one pair of 84 - 80, n stays 3, and the seeds say so."""
    write_job(sweep_dir / "6", 0.1, 0, accs=[0.65, 0.75, 0.85])
    sweep = load_sweep(sweep_dir)
    base, sd = sweep.configurations
    assert len(sd.finished) == 4
    paired = paired_difference(sd, base)
    assert paired.seeds == [0, 1, 2] and paired.diffs == pytest.approx([0.04, 0.02, 0.04], abs=1e-12)
    assert paired_by_epoch(sd, base)[3.0].diffs == pytest.approx([0.04, 0.02, 0.04], abs=1e-12)
    half = T_975_DF2 * statistics.stdev([0.04, 0.02, 0.04]) / math.sqrt(3)
    assert paired.interval() == pytest.approx((paired.mean - half, paired.mean + half), abs=1e-12)
    assert (
        f"| {100 * paired.mean:+.2f} | {100 * (paired.mean - half):+.2f} to {100 * (paired.mean + half):+.2f} "
        "| 0 (2 vs 1 runs), 1, 2 |" in render_markdown(sweep)
    )


def test_unfinished_sweep(sweep_dir):
    shutil.rmtree(sweep_dir / "5")  # drop_path_rate=0.1 seed=2: not started
    shutil.rmtree(sweep_dir / "4")  # drop_path_rate=0.1 seed=1: killed after its first epoch, mid-write
    write_job(sweep_dir / "4", 0.1, 1, finished=False, epochs_done=1)
    with open(sweep_dir / "4" / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "train_lo')
    (sweep_dir / "6" / ".hydra").mkdir(parents=True)  # a job dir from another launch, no metrics yet
    (sweep_dir / "6" / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump(["drop_path_rate=0.2", "seed=0", "experiment=compare"])
    )

    paths = write_report(sweep_dir)
    assert [p.name for p in paths] == ["comparison.md", "comparison.png"]
    md = paths[0].read_text()
    # 0.1 now: seed 0 finished (83), seed 1 unfinished; epoch seconds from every epoch but each run's
    # first: (3 + 5) / 2 (seed 1 has only its first, left out)
    assert (
        "| `drop_path_rate=0.1` | 0.1 | 1 (+1 unfinished) | 83.00 (1 run) | 84.00 (1 run) | 87.00 (1 run) | +4.00 | 4.00 "
        "| 1,000 | +3.00 | n/a (1 pair) | 0 |"
    ) in md
    assert "## Unfinished runs" in md
    assert "| `4` | `drop_path_rate=0.1 seed=1` | 1 of 3 | 64.00 |" in md
    assert "- not started: `drop_path_rate=0.1 seed=2`" in md
    assert "- job `6` (`drop_path_rate=0.2 seed=0`): no metrics yet" in md
    assert "- job `4` (`drop_path_rate=0.1 seed=1`): no summary.json, 1 of 3 epochs done" in md
    assert "- job `4`: 1 unreadable line(s) in metrics.jsonl (skipped)" in md
    assert "- `drop_path_rate=0.1`: seed(s) 1, 2 finished on one side only" in md


def test_configuration_without_baseline(sweep_dir):
    for num in ("0", "1", "2"):
        shutil.rmtree(sweep_dir / num)
    md = render_markdown(load_sweep(sweep_dir))
    assert "| 85.00 ± 2.65 | 86.00 | 90.00 | +5.00 | 4.00 | 1,000 | no baseline |" in md
    assert "- `drop_path_rate=0.1`: no drop_path_rate=0 configuration with the same other overrides" in md
    assert md.count("- not started:") == 3
    (sweep_dir / "multirun.yaml").unlink()  # a lone configuration, nothing to tell it from: full label
    md = render_markdown(load_sweep(sweep_dir))
    assert "- `drop_path_rate=0.1 experiment=compare`: no drop_path_rate=0 configuration" in md
    assert "not started" not in md


def test_an_arm_swept_on_its_own_pairs_with_the_rate_0_runs_it_shares(sweep_dir):
    """A late-SD arm run as another experiment into a subdir: its overrides differ from the rate-0
    runs', but its resolved config only in drop path keys (nothing at rate 0) and paths."""
    for seed in (0, 1, 2):
        write_job(
            sweep_dir / "late" / str(seed),
            0.1,
            seed,
            experiment="late",
            drop_path_time_schedule="late",
            drop_path_time_cutoff=1.0,
            data={"path": "/elsewhere"},
            amp="auto",
        )
    for num in (0, 1, 2):  # the rate-0 runs said amp=false, and auto resolved to fp32 as well (summary.json)
        for job in (sweep_dir / str(num), sweep_dir / "late" / str(num)):
            summary = json.loads((job / "summary.json").read_text())
            (job / "summary.json").write_text(json.dumps({**summary, "amp": "off"}))
        config = yaml.safe_load((sweep_dir / str(num) / ".hydra" / "config.yaml").read_text())
        (sweep_dir / str(num) / ".hydra" / "config.yaml").write_text(yaml.safe_dump({**config, "amp": False}))
    sweep = load_sweep(sweep_dir)
    base = next(c for c in sweep.configurations if c.is_baseline)
    late = next(c for c in sweep.configurations if ("experiment", "late") in c.key)
    assert baseline_of(late, sweep) is base and paired_difference(late, base).seeds == [0, 1, 2]
    write_job(sweep_dir / "other" / "0", 0.1, 0, experiment="other", epochs=5)  # computes something else
    sweep = load_sweep(sweep_dir)
    other = next(c for c in sweep.configurations if ("experiment", "other") in c.key)
    assert baseline_of(other, sweep) is None


def test_groups_by_config_without_overrides_files(sweep_dir):
    for job in sweep_dir.iterdir():
        if job.is_dir():
            (job / ".hydra" / "overrides.yaml").unlink()
    (sweep_dir / "multirun.yaml").unlink()
    sweep = load_sweep(sweep_dir)
    assert [len(c.runs) for c in sweep.configurations] == [3, 3]
    assert [c.rate for c in sweep.configurations] == [0.0, 0.1]
    paired = paired_difference(sweep.configurations[1], sweep.configurations[0])
    assert paired.mean == pytest.approx(0.03, abs=1e-12)
    md = render_markdown(sweep)
    assert "| `drop_path_rate=0.1` | 0.1 | 3 | 85.00 ± 2.65 |" in md


def test_reproduce_command_without_multirun_yaml(sweep_dir):
    (sweep_dir / "multirun.yaml").unlink()
    assert "python train.py -m drop_path_rate=0,0.1 seed=0,1,2 experiment=compare\n" in render_markdown(
        load_sweep(sweep_dir)
    )


def test_a_search_is_reproduced_by_its_command_and_has_no_baseline_to_miss(sweep_dir):
    """An Optuna search chose its jobs' values: rerunning it is its own command, not a grid of those values."""
    multirun = yaml.safe_load((sweep_dir / "multirun.yaml").read_text())
    multirun["hydra"]["sweeper"] = {"_target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"}
    multirun["hydra"]["overrides"]["hydra"] += ["hydra/sweeper=optuna_rate", "hydra.sweeper.n_trials=6"]
    (sweep_dir / "multirun.yaml").write_text(yaml.safe_dump(multirun))
    assert reproduce_command(load_sweep(sweep_dir)) == (
        "python train.py -m hydra/sweeper=optuna_rate hydra.sweeper.n_trials=6 experiment=compare"
    )
    for num in ("0", "1", "2"):  # no rate-0 trial among the rest: no baseline, and none is missing
        shutil.rmtree(sweep_dir / num)
    missing = render_markdown(load_sweep(sweep_dir)).split("## Missing")[1].split("\n## ")[0]
    assert "no drop_path_rate=0 configuration" not in missing and "finished on one side only" not in missing


def test_plot_is_an_image(sweep_dir):
    import matplotlib.image

    (png,) = [p for p in write_report(sweep_dir) if p.suffix == ".png"]
    pixels = matplotlib.image.imread(png)
    assert pixels.ndim == 3 and pixels.shape[0] > 300 and pixels.shape[1] > 800


def test_missing_path_and_empty_dir(tmp_path, capsys):
    with pytest.raises(ReportError, match="does not exist"):
        load_sweep(tmp_path / "nope")
    (tmp_path / "empty" / "0" / ".hydra").mkdir(parents=True)
    with pytest.raises(ReportError, match="no runs in .*1 job dir"):
        load_sweep(tmp_path / "empty")
    assert main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and "nope" in err


def test_cli_exit_code(tmp_path, sweep_dir):
    bad = subprocess.run(
        [sys.executable, "-m", "zoo.train.report", str(tmp_path / "missing")], capture_output=True, text=True
    )
    assert bad.returncode != 0
    assert bad.stderr.strip().count("\n") == 0 and "missing" in bad.stderr and "Traceback" not in bad.stderr
    good = subprocess.run(
        [sys.executable, "-m", "zoo.train.report", str(sweep_dir), "--no-plot"], capture_output=True, text=True
    )
    assert good.returncode == 0, good.stderr
    assert (sweep_dir / "comparison.md").is_file() and not (sweep_dir / "comparison.png").exists()
    old_name = subprocess.run(
        [sys.executable, "-m", "zoo.report", str(sweep_dir), "--no-plot"], capture_output=True, text=True
    )
    assert old_name.returncode == 0 and "comparison.md" in old_name.stdout, old_name.stderr


def test_callback_writes_report(sweep_dir, tmp_path, caplog):
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}})
    ReportCallback().on_multirun_end(config=config)
    assert "| +3.00 | +0.52 to +5.48 |" in (sweep_dir / "comparison.md").read_text()
    assert (sweep_dir / "comparison.png").stat().st_size > 0
    # A sweep whose jobs all failed before their first epoch: a warning, no exception, no files.
    empty = tmp_path / "empty"
    empty.mkdir()
    ReportCallback().on_multirun_end(config=OmegaConf.create({"hydra": {"sweep": {"dir": str(empty)}}}))
    assert not list(empty.iterdir())
    assert "no comparison report" in caplog.text


APP = """
import json
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig


@hydra.main(version_base="1.3", config_path=".", config_name="cfg")
def main(cfg):
    out = Path(HydraConfig.get().runtime.output_dir)
    acc = 0.5 + cfg.drop_path_rate + 0.01 * cfg.seed
    row = {"epoch": 1, "train_loss": 1.0, "test_acc": acc, "epoch_seconds": 1.0, "images_per_second": 10.0}
    (out / "metrics.jsonl").write_text(json.dumps(row) + "\\n")
    summary = {"final_test_acc": acc, "best_test_acc": acc, "seed": cfg.seed, "device": "cpu"}
    (out / "summary.json").write_text(json.dumps(summary))


main()
"""


def test_callback_runs_at_the_end_of_a_real_multirun(tmp_path):
    (tmp_path / "app.py").write_text(APP)
    # Microseconds in the sweep dir: the callback must see the dir the jobs were written to.
    cfg = {
        "drop_path_rate": 0.0,
        "seed": 0,
        "hydra": {
            "callbacks": {"report": {"_target_": "zoo.train.report.comparison.ReportCallback"}},
            "sweep": {"dir": str(tmp_path / "multirun" / "${now:%H-%M-%S-%f}")},
        },
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    done = subprocess.run(
        [sys.executable, "app.py", "-m", "drop_path_rate=0,0.1", "seed=0,1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (sweep,) = (tmp_path / "multirun").iterdir()
    md = (sweep / "comparison.md").read_text()
    # Both differences are 0.1 (up to float rounding): no zero-width "+10.00 to +10.00"; no train_acc written.
    assert (
        "| `drop_path_rate=0.1` | 0.1 | 2 | 60.50 ± 0.71 | 60.50 | n/a | n/a | 1.00 | 10 | +10.00 "
        "| none: n = 2, all differences equal (spread unmeasured) | 0, 1 |"
    ) in md
    assert "python app.py -m drop_path_rate=0,0.1 seed=0,1" in md
    assert (sweep / "comparison.png").stat().st_size > 0


@pytest.mark.parametrize(
    "experiment,rates,model",
    [
        ("compare", "0,0.1", "metaformer"),
        ("paper_resnet110", "0,0.5", "resnet110"),
        ("early_sd", "0,0.1", "metaformer"),
        ("late_sd", "0,0.1", "metaformer"),
    ],
)
def test_experiment_sweeps(experiment, rates, model):
    cfg = compose_train(f"experiment={experiment}", hydra=True)  # through the schema, as train.py composes it
    assert dict(cfg.hydra.sweeper.params) == {"drop_path_rate": rates, "seed": "0,1,2"}
    assert cfg.model.name == model
    if experiment == "paper_resnet110":
        assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.drop_path_schedule) == (
            500,
            128,
            0.1,
            1e-4,
            "paper",
        )
        assert cfg.optim.name == "sgd" and cfg.optim.nesterov and cfg.optim.momentum == 0.9
        assert cfg.sched.name == "step" and list(cfg.sched.milestones) == [0.5, 0.75] and cfg.sched.gamma == 0.1
    if experiment.endswith("_sd"):
        assert cfg.drop_path_time_schedule == experiment.split("_")[0]
        assert 0 < cfg.drop_path_time_cutoff < cfg.epochs


# ---------------------------------------------------------------- the real thing, through train.py


@pytest.mark.slow
def test_micro_sweep_through_train_py(tmp_path, cifar10_archive, cifar10_cache):
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable,
        "train.py",
        "-m",
        "experiment=cpu_smoke",
        "data=cifar10_folder",
        f"data.path={cifar10_archive}",
        f"data.cache_dir={cifar10_cache}",
        "data.subset=500",
        "data.test_subset=200",
        "epochs=1",
        "drop_path_rate=0,0.1",
        "seed=0,1",
        "device=cpu",
        f"hydra.sweep.dir={sweep}",
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (sweep / "comparison.md").is_file(), (
        "no comparison.md: is zoo.train.report.comparison.ReportCallback under hydra.callbacks?"
    )
    md = (sweep / "comparison.md").read_text()
    assert (sweep / "comparison.png").stat().st_size > 0
    rows = [line for line in md.splitlines() if line.startswith("| `")]
    assert len(rows) == 2
    assert "| 0 | 2 |" in rows[0] and "baseline" in rows[0]
    assert "| 0.1 | 2 |" in rows[1] and "| 0, 1 |" in rows[1]
    assert "every run finished" in md


# ---------------------------------------------------------------- selection, and the rate response


def test_without_a_validation_split_the_test_selected_column_says_so(sweep_dir):
    md = render_markdown(load_sweep(sweep_dir))
    assert "| final test acc % | best test acc % (chosen on the test set) | final train acc % |" in md
    assert "chosen on the test set, so it overstates what the run reaches" in md
    assert "## Rate response" not in md  # one rate above 0: its row in the table says it all


def test_with_a_validation_split_the_report_selects_on_it(sweep_dir):
    at_best = {0.0: [0.79, 0.81, 0.83], 0.1: [0.84, 0.84, 0.86]}
    for num, (rate, seed) in enumerate([(rate, seed) for rate in (0.0, 0.1) for seed in (0, 1, 2)]):
        job = sweep_dir / str(num)
        summary = json.loads((job / "summary.json").read_text())
        summary.update(best_val_epoch=2, best_val_acc=0.5, test_acc_at_best_val=at_best[rate][seed])
        (job / "summary.json").write_text(json.dumps(summary))
        rows = [dict(json.loads(line), val_acc=0.5) for line in (job / "metrics.jsonl").read_text().splitlines()]
        (job / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    sweep = load_sweep(sweep_dir)
    md = render_markdown(sweep)
    assert "best test acc" not in md.lower()
    assert "| final test acc % | test acc at best val epoch % | final train acc % |" in md
    assert "| Δ at best val vs rate 0 (pp) | 95% interval (pp) | paired seeds |" in md
    # baseline 79, 81, 83 -> 81.00 ± 2.00; differences 5, 3, 3 pp: mean 3.67, sd sqrt(8/3 / 2) = 1.155
    half = T_975_DF2 * math.sqrt(4 / 3) / math.sqrt(3)
    assert "| `drop_path_rate=0` | 0 | 3 | 82.00 ± 2.00 | 81.00 ± 2.00 |" in md
    assert f"| +3.67 | {11 / 3 - half:+.2f} to {11 / 3 + half:+.2f} | 0, 1, 2 |" in md
    dotted = [line for line in plot(sweep).axes[0].get_lines() if line.get_linestyle() == ":"]
    assert [line.get_label() for line in dotted] == ["_val drop_path_rate=0", "_val drop_path_rate=0.1"]


def test_rate_response_table_and_panel(tmp_path, monkeypatch):
    from zoo.train.report.plot import TITLE_RATE

    for table, value in ((TRAIN_GAP, 0.02), (EPOCH_SECONDS, [1.0, 1.0]), (IMAGES_PER_SECOND, [10.0, 10.0])):
        monkeypatch.setitem(table, 0.2, value)
    finals = {0.0: [0.80, 0.82], 0.1: [0.83, 0.84], 0.2: [0.81, 0.81]}  # Δ: +3, +2 at 0.1; +1, -1 at 0.2
    sweep = tmp_path / "sweep"
    for num, (rate, seed) in enumerate([(r, s) for r in finals for s in (0, 1)]):
        write_job(sweep / str(num), rate, seed, accs=[finals[rate][seed] - 0.1, finals[rate][seed]])
    md = render_markdown(load_sweep(sweep))
    section = md.split("## Rate response")[1]
    assert "| 0.1 | `drop_path_rate=0.1` | 2 | +2.50 | -3.85 to +8.85 (n = 2: t = 12.71) |" in section
    assert "| 0.2 | `drop_path_rate=0.2` | 2 | +0.00 | -12.71 to +12.71 (n = 2: t = 12.71) |" in section
    fig = plot(load_sweep(sweep))
    assert [ax.get_title() for ax in fig.axes][3] == TITLE_RATE
    (line,) = fig.axes[3].get_lines()[:1]
    assert list(line.get_xdata()) == [0.0, 0.1, 0.2]
    assert list(line.get_ydata()) == pytest.approx([0.0, 2.5, 0.0])


def test_runs_with_an_unusable_summary_are_listed_and_the_rest_reported(sweep_dir, capsys):
    """A corrupt summary.json, a NaN or a string for the test accuracy: those runs are listed as
    unreadable and left out; the others are reported as before. A bad sweep dir exits 2, as the trainer."""
    (sweep_dir / "2" / "summary.json").write_text('{"final_test_acc": 0.8')  # cut short
    summary = json.loads((sweep_dir / "5" / "summary.json").read_text())
    (sweep_dir / "5" / "summary.json").write_text(json.dumps({**summary, "final_test_acc": float("nan")}))
    (sweep_dir / "4" / "summary.json").write_text(json.dumps({**summary, "final_test_acc": "n/a"}))
    sweep = load_sweep(sweep_dir)
    assert [r.name for r in sweep.unreadable] == ["2", "4", "5"]
    assert sorted(r.name for r in sweep.runs) == ["0", "1", "3"]
    assert main([str(sweep_dir), "--no-plot"]) == 0
    md = (sweep_dir / "comparison.md").read_text()
    assert "- job `2` (`drop_path_rate=0 seed=2`): unreadable, left out: summary.json is not readable JSON" in md
    assert "- job `5` (`drop_path_rate=0.1 seed=2`): unreadable, left out: summary.json's final_test_acc is nan" in md
    assert "- job `4` (`drop_path_rate=0.1 seed=1`): unreadable, left out: summary.json's final_test_acc is 'n/a'" in md
    assert "| `drop_path_rate=0.1` | 0.1 | 1 | 83.00 (1 run) |" in md  # seed 0 alone, paired with the baseline's seed 0
    for num in ("0", "1", "3"):
        (sweep_dir / num / "summary.json").write_text("[]")
    assert main([str(sweep_dir), "--no-plot"]) == 2
    assert "unreadable summary.json" in capsys.readouterr().err


def _zoo_imports(module: str) -> set[str]:
    """The absolute names ``module``'s own source imports (relative imports resolved), at any depth of its code."""
    path = REPO / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = REPO / module.replace(".", "/") / "__init__.py"
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            names.add(target)
            names.update(
                f"{target}.{a.name}"
                for a in node.names
                if (REPO / f"{target}.{a.name}".replace(".", "/")).with_suffix(".py").exists()
            )
    return names


def test_the_report_imports_no_torch():
    """The report reads JSON: its modules, and every zoo module they import in turn, import no torch
    (the ``zoo`` package's own ``__init__`` does, for the library; the report's code does not)."""
    todo, seen = [f"zoo.train.report.{p.stem}" for p in (REPO / "zoo/train/report").glob("*.py")], set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        imported = _zoo_imports(module)
        assert not [n for n in imported if n.split(".")[0] == "torch"], f"{module} imports torch"
        todo += [
            n for n in imported if n.startswith("zoo.") and ((REPO / n.replace(".", "/")).with_suffix(".py").exists())
        ]
    assert {"zoo.train.report.sweep", "zoo.train.config.overrides", "zoo.train.errors"} <= seen


def test_runs_given_one_rate_per_block_are_not_a_baseline(sweep_dir):
    """drop_path_rates=[...] (drop_path_rate left at 0): the largest of its rates is the configuration's
    rate, and it pairs with the rate-0 runs, whose resolved configs differ only in drop path keys."""
    for seed in (0, 1, 2):
        write_job(sweep_dir / "rates" / str(seed), 0.0, seed, experiment="rates", drop_path_rates=[0.1, 0.3])
    sweep = load_sweep(sweep_dir)
    arm = next(c for c in sweep.configurations if ("experiment", "rates") in c.key)
    base = next(c for c in sweep.configurations if c.is_baseline)
    assert arm.rate == 0.3 and not arm.is_baseline and baseline_of(arm, sweep) is base
