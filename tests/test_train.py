"""train.py and its pieces: schedules, seeds, checkpoints, resume equivalence, end-to-end runs."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch
from omegaconf import OmegaConf

import zoo
from conftest import (
    assert_same_weights,
    compose_train,
    metrics,
    rows,
    run_cli,
    tiny,
    train_cut_and_resumed,
    training_checkpoint,
)
from zoo.train.config.schema import validate_config
from zoo.train.data.batches import derive_seed
from zoo.train.errors import CheckpointError, RunDirError, TrainingDiverged
from zoo.train.loop import run as loop
from zoo.train.loop.optim import lr_at
from zoo.train.loop.step import LossWatch, Meter
from zoo.train.rundir.checkpoint import load_checkpoint, load_model_state, resumed_config, save_checkpoint

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
    # A resumed run is another process, maybe of a later zoo: it must draw the epoch's augmentation again
    # from the same seed, so the value is pinned (Python's hash() would change with PYTHONHASHSEED).
    assert derive_seed(0, "aug", 1, 2) == 3656089171571997293
    assert len({derive_seed(0, "aug", e, s) for e in range(5) for s in range(50)}) == 250


def test_non_finite_loss_names_epoch_step_and_checkpoint():
    watch = LossWatch(Meter(), epoch=2, last_checkpoint="/runs/x/last.pt")
    watch.push(torch.tensor(1.5), torch.tensor(3), 8, step=6)
    watch.push(torch.tensor(math.nan), torch.tensor(0), 8, step=7)  # checks step index 6: fine
    assert watch.meter.count == 8 and watch.meter.loss_sum == pytest.approx(12.0)
    with pytest.raises(TrainingDiverged, match=r"nan at epoch 3 step 8; last good checkpoint: /runs/x/last.pt"):
        watch.flush()


# --- checkpoints -------------------------------------------------------------------------------


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
    save_checkpoint(training_checkpoint("resnet8"), tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match="holds a resnet8 model, not resnet20"):
        load_checkpoint(tmp_path, model_name="resnet20")
    state = load_checkpoint(tmp_path)
    with pytest.raises(
        CheckpointError, match=r"\(resnet8 weights\) does not fit model resnet20: \d+ missing keys \("
    ):  # counted in test_load
        load_model_state(zoo.create_model("resnet20"), state)


def test_interrupted_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(training_checkpoint(), tmp_path / "last.pt")

    def dies_midway(obj, f):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(training_checkpoint(), path)
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


def test_resume_may_change_a_key_inside_an_environment_key():
    """``logger`` may change, and so may every key under it (``logger.wandb.mode``): one rule for the list."""
    saved = compose_train("model=resnet8", "logger=wandb")
    state = {"config": OmegaConf.to_container(saved), "path": "/runs/x/last.pt"}
    cfg = compose_train("model=resnet8", "logger=wandb", "logger.wandb.mode=online", "resume=/runs/x")
    resumed = resumed_config(cfg, state, ["resume=/runs/x", "logger.wandb.mode=online"])
    assert resumed.logger.wandb.mode == "online" and saved.logger.wandb.mode == "offline"
    other = compose_train("model=resnet8", "logger=csv", "resume=/runs/x")  # replaces the saved loggers
    assert list(resumed_config(other, state, ["resume=/runs/x", "logger=csv"]).logger) == ["csv"]
    none = compose_train("model=resnet8", "~logger", "resume=/runs/x")
    assert resumed_config(none, state, ["resume=/runs/x", "~logger"]).logger is None


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


def test_resume_mid_epoch_ends_like_an_uninterrupted_run(tmp_path, monkeypatch, cifar10_archive, cifar10_cache):
    # ramp: the drop path rate changes every step, so the resumed run must restore it too.
    overrides = tiny(cifar10_archive, cifar10_cache, "drop_path_time_schedule=ramp", "drop_path_time_cutoff=2")
    full = loop.train(compose_train(*overrides), tmp_path / "full")
    assert [r["drop_path_rate"] for r in rows(tmp_path / "full")] == pytest.approx([0.1 * 0.75 / 2, 0.1 * 1.75 / 2])

    cut = train_cut_and_resumed(monkeypatch, overrides, tmp_path / "cut")  # at epoch 2, after its first step
    assert str(cut).startswith("SIGTERM in epoch 2 after step 1 of 4; saved ") and cut.exit_code == 143
    assert metrics(tmp_path / "cut") == metrics(tmp_path / "full")
    assert load_checkpoint(tmp_path / "cut")["global_step"] == 8
    assert json.loads((tmp_path / "cut" / "summary.json").read_text())["final_test_acc"] == full["final_test_acc"]
    a, b = torch.load(tmp_path / "full" / "last.pt"), torch.load(tmp_path / "cut" / "last.pt")
    assert_same_weights(a["model"], b["model"])
    assert not (tmp_path / "cut-ignored").exists()  # a resumed run writes into its own dir


# What a resume must restore beyond mask mode's state, on the CPU (the CUDA runs are in
# test_gpu_path.py): skip mode's draws (Bernoulli, and the fixed draw a GPU and compile use), bf16
# autocast with channels_last (as on a GPU), the mixing draws, and a time schedule whose cutoff the
# resumed part crosses (epoch 1.5 of 2; the cut is at 1.25). Two runs carry them all, to stay cheap;
# 128 images in batches of 32 keep the 4 steps an epoch the cut counts on.
RESUMED = {
    "skip-bernoulli-mixing-late": (
        "drop_path_mode=skip",
        "drop_path_skip_draw=bernoulli",
        "mixup_alpha=0.2",
        "cutmix_alpha=1.0",
        "drop_path_time_schedule=late",
    ),
    "skip-fixed-bf16-early": (
        "drop_path_mode=skip",
        "drop_path_skip_draw=fixed",
        "amp=true",
        "channels_last=true",
        "drop_path_time_schedule=early",
    ),
}


@pytest.mark.parametrize("case", list(RESUMED))
def test_resume_ends_like_an_uninterrupted_run_on_the_cpu(case, tmp_path, monkeypatch, cifar10_archive, cifar10_cache):
    overrides = tiny(
        cifar10_archive,
        cifar10_cache,
        "data.subset=128",
        "batch_size=32",
        "data.test_subset=50",
        "drop_path_rate=0.3",
        "drop_path_time_cutoff=1.5",
        *RESUMED[case],
    )
    full = loop.train(compose_train(*overrides), tmp_path / "full")
    # the rate after epoch 1's last step and after epoch 2's: on then off (early), off then on (late)
    on, off = [r["drop_path_rate"] for r in rows(tmp_path / "full")][:: 1 if case.endswith("early") else -1]
    assert on == pytest.approx(0.3) and off == 0.0
    assert full["amp"] == ("bf16" if "bf16" in case else "off")
    train_cut_and_resumed(monkeypatch, overrides, tmp_path / "cut")
    assert metrics(tmp_path / "cut") == metrics(tmp_path / "full")
    a, b = (torch.load(tmp_path / d / "last.pt", weights_only=True) for d in ("full", "cut"))
    assert_same_weights(a["model"], b["model"])


@pytest.mark.slow
def test_a_compiled_run_resumes_like_an_uninterrupted_one_on_the_cpu(
    tmp_path, monkeypatch, fresh_dynamo, cifar10_archive, cifar10_cache
):
    """compile=true (skip mode's fixed draw, as under compile on a GPU), cut and resumed, ends where the
    uninterrupted run does. Traced with the aot_eager backend: what a resume restores does not depend
    on the code generator, and Inductor's C++ build takes minutes on a 2-core CPU."""
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: real_compile(model, backend="aot_eager"))
    overrides = tiny(
        cifar10_archive,
        cifar10_cache,
        "data.subset=128",
        "batch_size=32",
        "data.test_subset=50",
        "compile=true",
        "drop_path_mode=skip",
        "drop_path_rate=0.3",
    )
    loop.train(compose_train(*overrides), tmp_path / "full")
    train_cut_and_resumed(monkeypatch, overrides, tmp_path / "cut")
    assert metrics(tmp_path / "cut") == metrics(tmp_path / "full")
    a, b = (torch.load(tmp_path / d / "last.pt", weights_only=True) for d in ("full", "cut"))
    assert_same_weights(a["model"], b["model"])


def test_a_run_dir_holding_a_run_is_not_overwritten(tmp_path, cifar10_archive, cifar10_cache):
    cfg = compose_train(*tiny(cifar10_archive, cifar10_cache, "epochs=1", "data.subset=64", "data.test_subset=10"))
    loop.train(cfg, tmp_path)
    before = (tmp_path / "last.pt").read_bytes()
    with pytest.raises(RunDirError, match="already holds a run; continue it with resume="):
        loop.train(cfg, tmp_path)
    assert (tmp_path / "last.pt").read_bytes() == before


# --- the command line (subprocesses) -------------------------------------------------------------


def test_cli_bad_value_is_one_line_without_traceback(tmp_path):
    out = run_cli("drop_path_rate=1.5", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["error: drop_path_rate must be in [0, 1], got 1.5"]


@pytest.mark.slow
def test_cpu_smoke_end_to_end(tmp_path, cifar10_archive, cifar10_cache):
    out = run_cli(
        "experiment=cpu_smoke",
        "data=cifar10_folder",
        f"data.path={cifar10_archive}",
        f"data.cache_dir={cifar10_cache}",
        f"hydra.run.dir={tmp_path}",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1].startswith("done: resnet8 test_acc=")
    (row,) = rows(tmp_path)
    assert set(row) == {
        "epoch",
        "train_loss",
        "train_acc",
        "test_loss",
        "test_acc",
        "lr",
        "drop_path_rate",
        "epoch_seconds",
        "images_per_second",
    }
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["final_test_acc"] == row["test_acc"] > 0.15  # chance is 0.10 (500 test images)
    assert summary["model"] == "resnet8" and summary["params"] > 0 and summary["epochs"] == 1
    for name in ("config.yaml", "last.pt", ".hydra/config.yaml", ".hydra/overrides.yaml"):
        assert (tmp_path / name).exists(), name


RECORD_RANKS = """
import os, runpy, sys, torch
from zoo.layers import drop
from zoo.train.loop import run as loop
out, draws = sys.argv[1], []
real_scale, real_mask, real_summary = drop._keep_scale, drop.keep_mask, loop.make_summary
def keep_scale(*args, **kwargs):  # the mask forms' draw: which samples keep their branch
    factor = real_scale(*args, **kwargs)
    draws.append(factor.flatten().ne(0))
    return factor
def keep_mask(*args, **kwargs):  # skip mode's Bernoulli draw
    mask = real_mask(*args, **kwargs)
    draws.append(mask.clone())
    return mask
def make_summary(s, *args):  # after the last step, on every rank: its weights and its draws
    torch.save({"model": s.net.state_dict(), "draws": draws}, f"{out}/rank{os.environ['RANK']}.pt")
    return real_summary(s, *args)
drop._keep_scale, drop.keep_mask, loop.make_summary = keep_scale, keep_mask, make_summary
# the first validated epoch is the best: test_every=0 left it untested, so every rank evaluates best.pt
loop.best_val_epoch = lambda history: next((r for r in history if "val_acc" in r), None)
real_broadcast = loop.dist.broadcast_module
def broadcast_module(model):  # the weights each rank tests best.pt's accuracy with
    real_broadcast(model)
    torch.save(model.state_dict(), f"{out}/best{os.environ['RANK']}.pt")
loop.dist.broadcast_module = broadcast_module
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_two_process_torchrun(tmp_path, cifar10_archive, cifar10_cache):
    """Two ranks end with identical parameters (DDP averages their gradients) but draw different drop
    masks (the rank is part of each step's seed); rank 0 alone writes the run dir, with its weights, and
    hands best.pt's weights to rank 1 to test them together.
    (BatchNorm's running statistics are not compared: DDP copies rank 0's at the start of each forward,
    then each rank updates them from its own half of the batch.)"""
    record = tmp_path / "ranks"
    record.mkdir()
    out = run_cli(
        "experiment=cpu_smoke",
        "data=cifar10_folder",
        f"data.path={cifar10_archive}",
        f"data.cache_dir={cifar10_cache}",
        "data.subset=512",
        "data.test_subset=200",
        "drop_path_rate=0.3",
        "data.val_size=100",
        "epochs=2",
        "test_every=0",
        cwd=tmp_path,  # the default run dir: rank 1's is "." (it writes nothing)
        module=(
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "--no-python",
            sys.executable,
            "-c",
            RECORD_RANKS,
            str(record),
        ),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("done: resnet8") == 1  # rank 0 only
    (run_dir,) = (tmp_path / "outputs").glob("*/*")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["test_images"] == 200
    first, last = rows(run_dir)
    assert summary["best_val_epoch"] == first["epoch"] and "test_acc" not in first
    assert 0.0 <= summary["test_acc_at_best_val"] <= 1.0
    best = torch.load(run_dir / "best.pt", weights_only=True)["model"]
    for rank in (0, 1):
        tested = torch.load(record / f"best{rank}.pt", weights_only=True)
        assert_same_weights(tested, best)
    assert 0.0 <= last["test_acc"] <= 1.0 and last["images_per_second"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outputs", "ranks"]  # rank 1 wrote nothing of its own
    r0, r1 = (torch.load(record / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    params = [n for n, _ in zoo.create_model("resnet8").named_parameters()]
    assert r0["model"].keys() == r1["model"].keys() and set(params) < r0["model"].keys()
    assert all(torch.equal(r0["model"][k], r1["model"][k]) for k in params)
    saved = torch.load(run_dir / "last.pt", weights_only=True)["model"]
    assert_same_weights(saved, r0["model"])
    assert len(r0["draws"]) == len(r1["draws"]) > 0
    assert [d.shape for d in r0["draws"]] == [d.shape for d in r1["draws"]]
    assert any(not torch.equal(a, b) for a, b in zip(r0["draws"], r1["draws"]))


@pytest.mark.slow
def test_joblib_launcher_runs_a_sweep_in_parallel(tmp_path, cifar10_archive, cifar10_cache):
    """hydra/launcher=joblib pickles the task into worker processes (it could not while the loop
    lived in train.py's __main__); two seeds run at once and the report is written."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    out = run_cli(
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "experiment=cpu_smoke",
        "data=cifar10_folder",
        f"data.path={cifar10_archive}",
        f"data.cache_dir={cifar10_cache}",
        "data.subset=200",
        "data.test_subset=100",
        "seed=0,1",
        f"hydra.sweep.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = sorted(p for p in tmp_path.iterdir() if (p / "summary.json").is_file())
    assert [p.name.split("_")[0] for p in jobs] == ["0", "1"] and "seed=1" in jobs[1].name
    for job in jobs:
        assert json.loads((job / "summary.json").read_text())["model"] == "resnet8"
    assert (tmp_path / "comparison.md").is_file()
