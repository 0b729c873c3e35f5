"""hydra/sweeper=optuna_rate: an Optuna search of drop_path_rate that maximises validation accuracy, its study
in the sweep dir, trials run by the joblib launcher, and a report that lists the trials by rate."""

from __future__ import annotations

import json

import pytest

from conftest import check_cli, compose_train, run_cli


@pytest.mark.slow
def test_a_four_trial_search_through_the_joblib_launcher(tmp_path, cifar10_archive, cifar10_cache):
    optuna = pytest.importorskip("optuna")
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep_dir = tmp_path / "search"
    args = [
        "-m",
        "hydra/sweeper=optuna_rate",
        "hydra.sweeper.n_trials=4",
        "hydra/launcher=joblib_cpu",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.n_jobs=2",
        f"hydra.sweep.dir={sweep_dir}",
        "model=resnet8",
        "data=cifar10_folder",
        f"data.path={cifar10_archive}",
        f"data.cache_dir={cifar10_cache}",
        "data.subset=200",
        "data.val_size=100",
        "data.test_subset=100",
        "epochs=1",
        "batch_size=50",
        "sched.warmup_epochs=0",
        "device=cpu",
        "amp=false",
    ]
    out = run_cli(*args, cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]

    study = optuna.load_study(study_name="drop_path_rate", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    trials = study.get_trials()
    assert len(trials) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name[0].isdigit())
    assert len(jobs) == 4
    for trial, job in zip(
        sorted(trials, key=lambda t: t.number), sorted(jobs, key=lambda p: int(p.name.split("_")[0]))
    ):
        summary = json.loads((job / "summary.json").read_text())
        assert summary["drop_path_rate"] == pytest.approx(trial.params["drop_path_rate"])
        assert 0 <= trial.params["drop_path_rate"] <= 0.5
        assert trial.value == pytest.approx(summary["best_val_acc"])  # the objective is validation, never test
    assert len({t.params["drop_path_rate"] for t in trials}) == 4

    report = (sweep_dir / "comparison.md").read_text()
    search = report.split("## Search")[1].split("\n## ")[0]
    rows = [line for line in search.splitlines() if line.startswith("| ") and line[2].isdigit()]
    rates = [float(line.split(" | ")[1]) for line in rows]
    assert len(rows) == 4 and rates == sorted(rates)
    assert f"drop_path_rate={study.best_params['drop_path_rate']:g}" in search
    reproduce = report.split("## Reproduce")[1]  # the search's own command, not a grid of the rates it chose
    assert "hydra/sweeper=optuna_rate" in reproduce and "drop_path_rate=" not in reproduce


def test_the_search_is_seeded_by_the_run_seed_and_needs_a_validation_split():
    cfg = compose_train("model=resnet8", "seed=3", "hydra/sweeper=optuna_rate", hydra=True)
    assert cfg.hydra.sweeper.sampler.seed == 3 and cfg.hydra.sweeper.direction == "maximize"
    assert str(cfg.hydra.sweeper.storage).endswith("/optuna.db")
    assert check_cli("-m", "hydra/sweeper=optuna_rate", "model=resnet8") == (
        "error: hydra/sweeper=optuna_rate maximises validation accuracy: hold out training images with "
        "data.val_size=<N> (a multiple of 10, e.g. 5000)"
    )
    assert check_cli("-m", "hydra/sweeper=optuna_rate", "model=resnet8", "data.val_size=100") == ""
