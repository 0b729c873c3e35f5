"""train.py and its pieces: schedules, seeds, checkpoints, resume equivalence, end-to-end runs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import zoo
from conftest import compose_train
from zoo.train import loop
from zoo.train.batches import derive_seed
from zoo.train.checkpoint import load_checkpoint, load_model_state, resumed_config, save_checkpoint
from zoo.train.config import validate_config
from zoo.train.errors import CheckpointError, ConfigError, TrainingDiverged
from zoo.train.interrupt import StopOnSignal, TrainingInterrupted
from zoo.train.optim import lr_at
from zoo.train.step import LossWatch, Meter

REPO = Path(__file__).resolve().parents[1]
TIMING = ("epoch_seconds", "images_per_second")


def small(archive: Path, cache: Path, *extra: str) -> tuple[str, ...]:
    """resnet8 on 256 images, 4 steps per epoch, 2 epochs: seconds on a CPU."""
    return (
        "model=resnet8", "data=cifar10_folder", f"data.path={archive}", f"data.cache_dir={cache}",
        "data.subset=256", "data.test_subset=100", "epochs=2", "batch_size=64", "sched.warmup_epochs=0",
        "device=cpu", "amp=false", *extra,
    )


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in history]


# --- pure pieces -------------------------------------------------------------------------------


def test_cosine_warms_up_then_decays():
    lrs = [lr_at(s, 100, 0.1, "cosine", warmup_steps=10) for s in range(100)]
    assert lrs[0] == pytest.approx(0.01) and lrs[9] == pytest.approx(0.1)
    assert lrs[10] == pytest.approx(0.1) and lrs[55] == pytest.approx(0.05)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and 0 < lrs[-1] < 1e-3


def test_step_schedule_divides_by_ten_at_half_and_three_quarters():
    lrs = [lr_at(s, 200, 0.1, "step") for s in range(200)]
    assert lrs[99] == 0.1 and lrs[100] == pytest.approx(0.01)
    assert lrs[149] == pytest.approx(0.01) and lrs[150] == pytest.approx(0.001)


def test_derived_seeds_are_stable_and_distinct():
    assert derive_seed(0, "aug", 1, 2) == derive_seed(0, "aug", 1, 2)
    assert len({derive_seed(0, "aug", e, s) for e in range(5) for s in range(50)}) == 250


def test_non_finite_loss_names_epoch_step_and_checkpoint():
    watch = LossWatch(Meter(), epoch=2, last_checkpoint="/runs/x/last.pt")
    watch.push(torch.tensor(1.5), torch.tensor(3), 8, step=6)
    watch.push(torch.tensor(math.nan), torch.tensor(0), 8, step=7)  # checks step index 6: fine
    assert watch.meter.count == 8 and watch.meter.loss_sum == pytest.approx(12.0)
    with pytest.raises(TrainingDiverged, match=r"nan at epoch 3 step 8; last good checkpoint: /runs/x/last.pt"):
        watch.flush()


# --- checkpoints -------------------------------------------------------------------------------


def fake_state(model_name: str = "resnet8") -> dict:
    net = zoo.create_model(model_name)
    return {"model": net.state_dict(), "optimizer": {}, "epoch": 1, "step": 0, "global_step": 4,
            "config": {"model": {"name": model_name}}, "model_name": model_name, "history": []}


def test_checkpoint_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(CheckpointError, match="no such run dir or checkpoint"):
        load_checkpoint(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="holds no last.pt"):
        load_checkpoint(tmp_path)
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path)
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a zoo training checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    save_checkpoint(fake_state("resnet8"), tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match="holds a resnet8 model, not resnet20"):
        load_checkpoint(tmp_path, model_name="resnet20")
    state = load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match=r"\(resnet8 weights\) does not fit model resnet20: 72 missing keys \("):
        load_model_state(zoo.create_model("resnet20"), state)


def test_interrupted_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(fake_state(), tmp_path / "last.pt")

    def dies_midway(obj, f):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(fake_state(), path)
    monkeypatch.undo()
    assert load_checkpoint(path)["global_step"] == 4
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left


def test_resume_refuses_overrides_that_change_the_run():
    cfg = compose_train("model=resnet8", "epochs=3", "resume=/runs/x", "device=cpu")
    state = {"config": OmegaConf.to_container(compose_train("model=resnet8", "epochs=2")), "path": "/runs/x/last.pt"}
    with pytest.raises(CheckpointError, match=r"epochs=3 \(saved 2\)"):
        resumed_config(cfg, state, ["model=resnet8", "epochs=3", "resume=/runs/x"])
    same = resumed_config(cfg, state, ["resume=/runs/x", "device=cpu"])  # only free keys: the saved config wins
    assert same.epochs == 2 and same.device == "cpu" and same.resume == "/runs/x"


def test_resume_of_a_run_saved_before_a_key_existed_or_after_one_was_removed():
    """A checkpoint from before drop_path_skip_draw existed resumes with today's default for it (or the
    command line's value); a key saved by an older version that no longer exists is dropped."""
    old = OmegaConf.to_container(compose_train("model=resnet8", "epochs=2", "sched.warmup_epochs=0"))
    del old["drop_path_skip_draw"]
    old["retain_freed_memory"] = True
    state = {"config": old, "path": "/runs/x/last.pt"}
    resumed = resumed_config(compose_train("model=resnet8", "resume=/runs/x"), state)
    validate_config(resumed)
    assert resumed.epochs == 2 and resumed.drop_path_skip_draw == "auto" and "retain_freed_memory" not in resumed
    cfg = compose_train("model=resnet8", "resume=/runs/x", "drop_path_skip_draw=fixed")
    resumed = resumed_config(cfg, state, ["resume=/runs/x", "drop_path_skip_draw=fixed"])
    assert resumed.drop_path_skip_draw == "fixed"


# --- training runs (in process) -------------------------------------------------------------------


class StopAfter(StopOnSignal):
    """Acts as if SIGTERM arrived just before the ``n``-th step starts."""

    n = 0

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    @property
    def requested(self) -> bool:
        self.reads += 1
        if self.reads >= self.n:
            self.signum = 15
        return self.signum is not None


def test_resume_mid_epoch_ends_like_an_uninterrupted_run(tmp_path, monkeypatch, cifar10_archive, cifar10_cache):
    # ramp: the drop path rate changes every step, so the resumed run must restore it too.
    overrides = small(cifar10_archive, cifar10_cache, "drop_path_time_schedule=ramp", "drop_path_time_cutoff=2")
    full = loop.train(compose_train(*overrides), tmp_path / "full")
    expected = rows(tmp_path / "full")
    assert [r["drop_path_rate"] for r in expected] == pytest.approx([0.1 * 0.75 / 2, 0.1 * 1.75 / 2])

    StopAfter.n = 6  # epoch 2, after its first step
    monkeypatch.setattr(loop, "StopOnSignal", StopAfter)
    with pytest.raises(TrainingInterrupted, match="in epoch 2 after step 1 of 4; saved ") as info:
        loop.train(compose_train(*overrides), tmp_path / "cut")
    assert info.value.exit_code == 143
    assert load_checkpoint(tmp_path / "cut")["step"] == 1
    monkeypatch.undo()
    resumed = loop.train(compose_train(*overrides, f"resume={tmp_path / 'cut'}"), tmp_path / "ignored",
                          overrides=(f"resume={tmp_path / 'cut'}",))
    assert without_timing(rows(tmp_path / "cut")) == without_timing(expected)
    assert resumed["final_test_acc"] == full["final_test_acc"]
    a, b = torch.load(tmp_path / "full" / "last.pt"), torch.load(tmp_path / "cut" / "last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert not (tmp_path / "ignored").exists()  # a resumed run writes into its own dir


def test_a_run_dir_holding_a_run_is_not_overwritten(tmp_path, cifar10_archive, cifar10_cache):
    cfg = compose_train(*small(cifar10_archive, cifar10_cache, "epochs=1", "data.subset=64", "data.test_subset=10"))
    loop.train(cfg, tmp_path)
    before = (tmp_path / "last.pt").read_bytes()
    with pytest.raises(ConfigError, match="already holds a run; continue it with resume="):
        loop.train(cfg, tmp_path)
    assert (tmp_path / "last.pt").read_bytes() == before


# --- the command line (subprocesses) -------------------------------------------------------------


def run_cli(*args: str, cwd: Path = REPO, module: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, *module, str(REPO / "train.py"), *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_cli_bad_value_is_one_line_without_traceback(tmp_path):
    out = run_cli("drop_path_rate=1.5", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["error: drop_path_rate must be in [0, 1], got 1.5"]


@pytest.mark.slow
def test_cpu_smoke_end_to_end(tmp_path, cifar10_archive, cifar10_cache):
    out = run_cli("experiment=cpu_smoke", "data=cifar10_folder", f"data.path={cifar10_archive}",
                  f"data.cache_dir={cifar10_cache}", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1].startswith("done: resnet8 test_acc=")
    (row,) = rows(tmp_path)
    assert set(row) == {"epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "drop_path_rate",
                        "epoch_seconds", "images_per_second"}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["final_test_acc"] == row["test_acc"] > 0.15  # chance is 0.10 (500 test images)
    assert summary["model"] == "resnet8" and summary["params"] > 0 and summary["epochs"] == 1
    for name in ("config.yaml", "last.pt", ".hydra/config.yaml", ".hydra/overrides.yaml"):
        assert (tmp_path / name).exists(), name


@pytest.mark.slow
def test_two_process_torchrun(tmp_path, cifar10_archive, cifar10_cache):
    run_dir = tmp_path / "run"
    out = run_cli("experiment=cpu_smoke", "data=cifar10_folder", f"data.path={cifar10_archive}",
                  f"data.cache_dir={cifar10_cache}", "data.subset=512", "data.test_subset=200",
                  f"hydra.run.dir={run_dir}", cwd=tmp_path,
                  module=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("done: resnet8") == 1  # rank 0 only
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["test_images"] == 200
    (row,) = rows(run_dir)
    assert 0.0 <= row["test_acc"] <= 1.0 and row["images_per_second"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # rank 1 wrote nothing


@pytest.mark.slow
def test_joblib_launcher_runs_a_sweep_in_parallel(tmp_path, cifar10_archive, cifar10_cache):
    """hydra/launcher=joblib pickles the task into worker processes (it could not while the loop
    lived in train.py's __main__); two seeds run at once and the report is written."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    out = run_cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "experiment=cpu_smoke", "data=cifar10_folder",
                  f"data.path={cifar10_archive}", f"data.cache_dir={cifar10_cache}", "data.subset=200",
                  "data.test_subset=100", "seed=0,1", f"hydra.sweep.dir={tmp_path}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = sorted(p for p in tmp_path.iterdir() if (p / "summary.json").is_file())
    assert [p.name.split("_")[0] for p in jobs] == ["0", "1"] and "seed=1" in jobs[1].name
    for job in jobs:
        assert json.loads((job / "summary.json").read_text())["model"] == "resnet8"
    assert (tmp_path / "comparison.md").is_file()
