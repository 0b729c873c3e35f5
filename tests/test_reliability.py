"""Issue 6: every bad input gets one line and a non-zero exit; checkpoints survive a kill mid-save;
SIGTERM / Ctrl-C stop at a step boundary and resume to the uninterrupted result; a non-finite loss
stops the run within one step, naming where and the last good checkpoint."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch

from conftest import (
    BAD_VALUES,
    REPO,
    assert_same_weights,
    check_cli,
    compose_train,
    make_tree,
    metrics,
    run_cli,
    run_python,
    tiny,
)
from zoo.train.config.schema import validate_config
from zoo.train.data.cifar10 import CLASSES
from zoo.train.errors import CheckpointError, CompileFailed, ConfigError, DataError, RunDirError, TrainingDiverged
from zoo.train.loop import run as loop
from zoo.train.rundir.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from zoo.train.rundir.placement import resumed_run_dir


def one_error_line(out: subprocess.CompletedProcess) -> str:
    """The run failed with exit 2 and exactly one stderr line, "error: ...", and no traceback."""
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (out.returncode, out.stderr)
    assert "Traceback" not in out.stdout + out.stderr
    return lines[0]


# --- bad values: one ConfigError naming the key, the value and what is allowed -------------------


@pytest.mark.parametrize("override, message", BAD_VALUES)
def test_bad_values_name_the_key_and_what_is_allowed(override, message):
    with pytest.raises(ConfigError) as info:
        validate_config(compose_train("model=resnet8", override))
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "override, message",
    [
        ("model=resnt20", "model=resnt20: there is no model 'resnt20'; did you mean resnet20,"),
        ("experiment=cpu_smok", "experiment=cpu_smok: there is no experiment 'cpu_smok'; did you mean cpu_smoke?"),
        ("optim=adam", "optim=adam: there is no optim 'adam'; did you mean adamw?"),
        ("sched=cosin", "sched=cosin: there is no sched 'cosin'; did you mean cosine?"),
        ("data=cifar10folder", "data=cifar10folder: there is no data 'cifar10folder'; did you mean cifar10_folder"),
        ("model=resnet8,resnt20", "model=resnt20: there is no"),  # a sweep is checked name by name
        ("drop_path_rat=0.1", "unknown key 'drop_path_rat'; did you mean drop_path_rate"),
        ("data.subst=100", "unknown key 'data.subst'; did you mean data.subset"),
        ("retain_freed_memory=false", "retain_freed_memory was removed: zoo no longer changes malloc's settings"),
        ("+new_key=1", "unknown key 'new_key'"),  # the schema has no such key, with or without +
        ("logger=null", "logger=null: a config group takes one of its names, not null; ~logger leaves"),
        ("experiment=null", "experiment=null: a config group takes one of its names, not null"),
        ("+logger=null", "+logger=null: a config group takes one of its names, not null; ~logger leaves"),
        ("logger=csv,null", "logger=csv,null: a config group takes one of its names, not null"),  # one value of a sweep
    ],
)
def test_mistyped_config_groups_and_keys_list_close_matches(override, message):
    assert check_cli("-m", override).startswith(f"error: {message}")


def test_valid_overrides_are_left_to_hydra(tmp_path):
    ok = [
        "model=resnet8",
        "model=metaformer,resnet20",
        "~experiment",
        "data=cifar10_folder",
        f"data.path={make_tree(tmp_path / 'cifar')}",
        "model.name=convformer_tiny",
        "hydra.run.dir=out",
        "seed=range(3)",
        "lr=0.1",
        "-m",
    ]
    assert check_cli(*ok) == ""


def test_an_experiments_own_sweep_is_counted_and_checked_before_hydra(monkeypatch):
    """experiment=compare sweeps through its hydra.sweeper.params: its jobs are the ones checked (and counted,
    for the sweep's eta), the command line's values replacing the experiment's as in Hydra's sweeper."""
    from zoo.train.cli import SWEEP_JOBS

    monkeypatch.delenv(SWEEP_JOBS, raising=False)
    assert check_cli("-m", "experiment=compare") == "" and os.environ[SWEEP_JOBS] == "6"  # 2 rates x 3 seeds
    assert check_cli("-m", "experiment=compare", "seed=5,6") == "" and os.environ[SWEEP_JOBS] == "4"
    assert check_cli("-m", "experiment=compare", "lr=choice(0.001)") == "" and os.environ[SWEEP_JOBS] == "6"
    bad = check_cli("-m", "experiment=compare", "hydra.sweeper.params.seed='-1,0'")
    assert bad == "error: seed must be an integer >= 0, got -1"


def test_resume_of_a_mistyped_path_writes_nothing_next_to_it(tmp_path):
    typo = compose_train(f"resume={tmp_path / 'typo'}", hydra=True).hydra
    assert resumed_run_dir(str(tmp_path / "typo")) is None and typo.run.dir.startswith("outputs/")  # Hydra's own dir
    assert typo.output_subdir == ".hydra"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("{}")
    resumed = compose_train(f"resume={tmp_path / 'run'}", hydra=True).hydra
    assert resumed.run.dir == str(tmp_path / "run") and resumed.output_subdir.startswith(".hydra/resume-")
    (tmp_path / "copied").mkdir()  # a checkpoint copied out of its run dir: the run goes on where it is
    (tmp_path / "copied" / "last.pt").write_bytes(b"")
    for named in (tmp_path / "copied" / "last.pt", tmp_path / "copied"):
        alone = compose_train(f"resume={named}", hydra=True).hydra
        assert alone.run.dir == str(tmp_path / "copied") and alone.output_subdir.startswith(".hydra/resume-")


# --- the command line: exit 2, one line, no traceback --------------------------------------------


def test_cli_config_mistakes_are_one_line(tmp_path):
    cases = {
        "drop_path_rate=abc": "error: drop_path_rate must be a number, got 'abc'",
        "drop_path_mode=fast": "error: drop_path_mode must be one of mask, skip, auto, got 'fast'",
        "model.name=resnt20": "error: model.name: unknown model 'resnt20'; did you mean resnet20",
        "model=resnt20": "error: model=resnt20: there is no model 'resnt20'; did you mean resnet20",
        "model=metaformer,resnet20": "error: model=metaformer,resnet20 is a sweep: add -m to run one job per value",
    }
    for i, (override, line) in enumerate(cases.items()):
        assert check_cli(override, f"hydra.run.dir={tmp_path / str(i)}").startswith(line), override
        assert not (tmp_path / str(i)).exists(), "a run refused before it starts leaves nothing behind"


def test_cli_data_mistakes_name_the_path(tmp_path, monkeypatch):
    """A missing path is refused before Hydra starts; what is wrong inside the data is found while the run
    reads it: one line on stderr, and the dir it was given is removed (nothing was saved; end to end, once)."""
    (tmp_path / "notes.txt").write_text("hello")
    bad = make_tree(tmp_path / "bad")
    (bad / "train" / "cat" / "0001.png").write_bytes(b"\x89PNG broken")
    cases = {
        tmp_path / "nope": "no such file or directory",
        tmp_path / "notes.txt": "is neither a directory nor a readable .tar/.tar.gz archive",
        make_tree(tmp_path / "eight", CLASSES[:8]): "train/ lacks the class folders ship, truck",
    }
    for i, (path, text) in enumerate(cases.items()):
        args = (
            "experiment=cpu_smoke",
            "data=cifar10_folder",
            f"data.path={path}",
            f"data.cache_dir={tmp_path / 'cache'}",
        )
        if i == 0:  # found before Hydra starts: no run dir
            assert text in check_cli(*args, f"hydra.run.dir={tmp_path / '0'}")
            assert not (tmp_path / "0").exists()
            continue
        with pytest.raises(DataError, match=re.escape(text)):  # found while the run reads its data
            loop.train(compose_train(*args), tmp_path / str(i))
    out = run_cli(
        "experiment=cpu_smoke",
        "data=cifar10_folder",
        f"data.path={bad}",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    line = one_error_line(out)
    assert f"unreadable image {bad}/train/cat/0001.png: not an image format" in line
    assert line.endswith(f"(nothing was saved: run dir {tmp_path / 'run'} removed)")  # no stub dir with a train.log
    assert not (tmp_path / "run").exists() and out.stdout.splitlines()[0] == f"run dir: {tmp_path / 'run'}"


def test_a_run_without_a_network_leaves_no_data_dir(tmp_path):
    """data=cifar10 downloads; when that fails the empty data dir it made is removed again. A proxy on
    a closed local port makes the download fail at once whether or not the machine has a network."""
    proxy = {"https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}
    out = run_cli("model=resnet8", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, env=proxy, timeout=300)
    assert "could not download CIFAR-10 into data.root='./data'" in one_error_line(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nor the run dir: nothing was saved in it


def test_data_problems_in_an_archive_name_the_member(tmp_path):
    from zoo.train.data.cifar10 import load_image_folder

    tree = make_tree(tmp_path / "cifar")
    (tree / "test" / "dog" / "0000.png").write_bytes(b"")
    with tarfile.open(tmp_path / "c.tar.gz", "w:gz") as tf:
        tf.add(tree, arcname="cifar")
    with pytest.raises(DataError, match=r"unreadable image .*c\.tar\.gz:cifar/test/dog/0000\.png"):
        load_image_folder(tmp_path / "c.tar.gz", tmp_path / "cache")
    (tmp_path / "cut.tar.gz").write_bytes((tmp_path / "c.tar.gz").read_bytes()[:200])  # a download cut short
    with pytest.raises(DataError, match="found no train/<class>/<image> files|nor a readable .tar"):
        load_image_folder(tmp_path / "cut.tar.gz", tmp_path / "cache")


# --- checkpoints ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, cifar10_archive, cifar10_cache) -> Path:
    """A finished 2-epoch tiny run (read-only for the tests that use it)."""
    run_dir = tmp_path_factory.mktemp("finished")
    loop.train(compose_train(*tiny(cifar10_archive, cifar10_cache)), run_dir)
    return run_dir


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch, finished_run):
    state = load_checkpoint(finished_run)
    path = save_checkpoint(state, tmp_path / CHECKPOINT_NAME)

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({**state, "epoch": 99}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == state["epoch"]
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME]


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_resume_from_a_corrupt_checkpoint_is_one_line(tmp_path, finished_run, damage):
    blob = (finished_run / CHECKPOINT_NAME).read_bytes()
    bad = {"truncated": blob[: len(blob) // 2], "garbage": b"not a checkpoint at all\n" * 10, "empty": b""}[damage]
    (tmp_path / CHECKPOINT_NAME).write_bytes(bad)
    with pytest.raises(CheckpointError, match="is not a readable checkpoint") as info:
        loop.train(compose_train("model=resnet8", f"resume={tmp_path}"), tmp_path, overrides=(f"resume={tmp_path}",))
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


def test_resume_with_another_model_is_refused(tmp_path, finished_run):
    resume = f"resume={finished_run}"
    with pytest.raises(CheckpointError, match=r"changes model.name='resnet20' \(saved 'resnet8'\)"):
        loop.train(compose_train("model=resnet20", resume), tmp_path, overrides=("model=resnet20", resume))
    # A file that claims to be resnet8 but holds another model's weights.
    state = load_checkpoint(finished_run)
    state["model"] = {k: v for k, v in list(state["model"].items())[:-2]}  # lost the classifier
    save_checkpoint(state, tmp_path / "odd" / CHECKPOINT_NAME)
    with pytest.raises(
        CheckpointError,
        match=r"\(resnet8 weights\) does not fit model resnet8: "
        r"2 missing keys \(head\.weight, head\.bias\)$",
    ) as info:
        loop.train(
            compose_train("model=resnet8", f"resume={tmp_path / 'odd'}"),
            tmp_path,
            overrides=(f"resume={tmp_path / 'odd'}",),
        )
    assert "\n" not in str(info.value)


def test_cli_corrupt_checkpoint_is_one_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("{}")
    (run / CHECKPOINT_NAME).write_bytes(b"\x00garbage" * 100)
    line = one_error_line(run_cli(f"resume={run}"))
    assert line.startswith(f"error: {run / CHECKPOINT_NAME} is not a readable checkpoint (corrupt, truncated")


# --- a non-finite loss ----------------------------------------------------------------------------


def poison(monkeypatch, at_call: int, weights: bool = False) -> list[int]:
    """Make train_step's ``at_call``-th call (1-based) return a NaN loss, or leave NaN weights behind it."""
    calls: list[int] = []
    real = loop.train_step

    def step(model, optimizer, *args):
        loss, correct = real(model, optimizer, *args)
        calls.append(1)
        if len(calls) == at_call:
            if weights:
                next(model.parameters()).data.fill_(math.nan)
            else:
                loss = torch.tensor(math.nan)
        return loss, correct

    monkeypatch.setattr(loop, "train_step", step)
    return calls


def test_nan_loss_stops_within_one_step_naming_the_last_checkpoint(
    tmp_path, monkeypatch, cifar10_archive, cifar10_cache
):
    calls = poison(monkeypatch, at_call=4 + 2)  # 4 steps per epoch: epoch 2, its second step
    with pytest.raises(TrainingDiverged) as info:
        loop.train(compose_train(*tiny(cifar10_archive, cifar10_cache)), tmp_path)
    assert str(info.value).startswith(
        f"the training loss became nan at epoch 2 step 2; last good checkpoint: {tmp_path / CHECKPOINT_NAME}"
    )
    assert len(calls) <= 4 + 2 + 1  # at most one more step ran
    assert load_checkpoint(tmp_path)["epoch"] == 1  # the epoch-1 checkpoint is still there and whole
    assert len(metrics(tmp_path)) == 1


def test_non_finite_weights_never_replace_the_last_checkpoint(tmp_path, monkeypatch, cifar10_archive, cifar10_cache):
    poison(monkeypatch, at_call=8, weights=True)  # the last step of epoch 2: its loss was still finite
    with pytest.raises(
        TrainingDiverged, match=f"weights became non-finite after epoch 2; last good checkpoint: {tmp_path}"
    ):
        loop.train(compose_train(*tiny(cifar10_archive, cifar10_cache)), tmp_path)
    assert load_checkpoint(tmp_path)["epoch"] == 1


def test_cli_divergence_is_one_line(tmp_path, cifar10_archive, cifar10_cache):
    out = run_cli(
        "experiment=cpu_smoke",
        "data=cifar10_folder",
        f"data.path={cifar10_archive}",
        f"data.cache_dir={cifar10_cache}",
        "data.subset=200",
        "data.test_subset=100",
        "lr=1e30",
        f"hydra.run.dir={tmp_path}",
    )
    line = one_error_line(out)
    assert line.startswith("error: the training loss became nan at epoch 1 step ")
    assert line.endswith(
        "last good checkpoint: none (no epoch had finished); lower lr or change the recipe "
        f"(nothing was saved: run dir {tmp_path} removed)"
    )
    assert not (tmp_path / CHECKPOINT_NAME).exists()


# --- interruption: SIGTERM, Ctrl-C, a kill during a save (subprocesses) ---------------------------


def cli_args(archive: Path, cache: Path, run_dir: Path) -> list[str]:
    """resnet8 on 600 images, 12 steps per epoch, 3 epochs: a few seconds per run on an idle CPU."""
    return [
        "model=resnet8",
        "data=cifar10_folder",
        f"data.path={archive}",
        f"data.cache_dir={cache}",
        "data.subset=600",
        "data.test_subset=200",
        "epochs=3",
        "batch_size=50",
        "sched.warmup_epochs=0",
        "device=cpu",
        "amp=false",
        f"hydra.run.dir={run_dir}",
    ]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, cifar10_archive, cifar10_cache) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    out = run_cli(*cli_args(cifar10_archive, cifar10_cache, run_dir))
    assert out.returncode == 0, out.stderr[-2000:]
    return run_dir


def resume_and_compare(run_dir: Path, expected: Path) -> None:
    out = run_cli(f"resume={run_dir}")
    assert out.returncode == 0, out.stderr[-2000:]
    assert metrics(run_dir) == metrics(expected)  # exact: the loop's randomness is a function of (seed, epoch, step)
    got, want = (json.loads((d / "summary.json").read_text()) for d in (run_dir, expected))
    assert got["final_test_acc"] == want["final_test_acc"] and got["best_test_acc"] == want["best_test_acc"]
    a, b = (torch.load(d / CHECKPOINT_NAME, weights_only=True) for d in (run_dir, expected))
    assert_same_weights(a["model"], b["model"])


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_after_first_epoch_then_resume_matches(tmp_path, signum, uninterrupted, cifar10_archive, cifar10_cache):
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *cli_args(cifar10_archive, cifar10_cache, run_dir)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not ((run_dir / "metrics.jsonl").exists() and (run_dir / "metrics.jsonl").read_text().strip()):
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before its first epoch did"
            time.sleep(0.02)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signum, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert re.match(
        rf"interrupted: {signal.Signals(signum).name} (in epoch [23] after step \d+ of 12|after epoch [12]); ", last
    ), last
    assert last.endswith(f"saved {run_dir / CHECKPOINT_NAME}; continue with: python train.py resume={run_dir}")
    state = load_checkpoint(run_dir)
    assert (state["epoch"], state["step"]) >= (1, 0) and state["epoch"] < 3
    resume_and_compare(run_dir, uninterrupted)


KILL_DURING_SECOND_SAVE = """
import os, runpy, signal, sys, torch
real_save, saves = torch.save, []
def save(obj, f, *args, **kwargs):
    if isinstance(obj, dict) and "model_name" in obj:  # a training checkpoint, not the data cache
        saves.append(obj["epoch"])
        if len(saves) == 2:  # the end of epoch 2: die with half a file written
            f.write(b"half a checkpoint")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)
torch.save = save
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_kill_during_a_save_keeps_the_previous_checkpoint(tmp_path, uninterrupted, cifar10_archive, cifar10_cache):
    run_dir = tmp_path / "run"
    out = run_python(
        "-c", KILL_DURING_SECOND_SAVE, str(REPO / "train.py"), *cli_args(cifar10_archive, cifar10_cache, run_dir)
    )
    assert out.returncode == -signal.SIGKILL, out.stderr[-2000:]
    assert load_checkpoint(run_dir)["epoch"] == 1  # the epoch-1 file, whole
    assert len(metrics(run_dir)) == 1
    resume_and_compare(run_dir, uninterrupted)


# --- the second round (issue 17): full disks, stale temporaries, signals before the loop, compile
# failures, runs sharing a dir ----------------------------------------------------------------------


def small_disk(path: Path, size: str):
    """A tmpfs of ``size`` mounted at ``path`` (root only); None where mounting is not allowed."""
    path.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
        ).returncode
        != 0
    ):
        return None
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    "size, kept", [("400k", "no earlier last.pt exists"), ("1000k", "the previous last.pt is intact")]
)
def test_a_full_disk_during_a_save_is_one_line(tmp_path, size, kept, cifar10_archive, cifar10_cache):
    """A real file system that fills up: 400 KB holds no checkpoint (633 KB); 1000 KB holds the first
    but not a second beside it. One line, exit 2, no partial file, the previous checkpoint whole."""
    disk = small_disk(tmp_path / "disk", size)
    if disk is None:
        pytest.skip(
            "cannot mount a tmpfs here (not root, or no mount permission); the simulated test covers the code path"
        )
    try:
        out = run_cli(
            "experiment=cpu_smoke",
            "epochs=2",
            "data=cifar10_folder",
            f"data.path={cifar10_archive}",
            f"data.cache_dir={cifar10_cache}",
            f"hydra.run.dir={disk / 'run'}",
        )
        line = one_error_line(out)
        assert line.startswith(f"error: no space left on the device writing {disk / 'run' / CHECKPOINT_NAME} (")
        where = f"run dir {disk / 'run'}" if "intact" in kept else f"nothing was saved: run dir {disk / 'run'} removed"
        assert line.endswith(f"; {kept}; free some space and run again ({where})")
        assert not list((disk / "run").glob(".*.tmp"))
        if "intact" in kept:
            assert load_checkpoint(disk / "run")["epoch"] == 1
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_full_disk_is_one_error_where_no_tmpfs_can_be_mounted(tmp_path, monkeypatch, finished_run):
    """The same code path without a mount: the temporary file's write fails with ENOSPC half way."""
    import errno
    import io

    from zoo.train.rundir import atomic

    state = load_checkpoint(finished_run)
    path = save_checkpoint(state, tmp_path / CHECKPOINT_NAME)

    class HalfFull(io.FileIO):
        def write(self, data):
            super().write(bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "open", lambda p, mode: HalfFull(p, "w"), raising=False)
    with pytest.raises(atomic.DiskFull) as info:
        save_checkpoint({**state, "epoch": 99}, path)
    message = str(info.value)
    assert message.startswith(f"no space left on the device writing {path} (") and "\n" not in message
    assert message.endswith("; the previous last.pt is intact; free some space and run again")
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME]
    assert load_checkpoint(path)["epoch"] == state["epoch"]


def test_stale_temporaries_are_removed_and_never_read(tmp_path, finished_run):
    """What a killed save leaves (our naming: host and pid) is removed at the next start, unless its
    process is alive; one of another machine or of an older zoo (no pid) only when it is an hour old."""
    import socket

    from zoo.train.rundir.atomic import remove_stale_temporaries

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    names = {
        "dead": f".last.pt.{host}.{dead.pid}.tmp",
        "alive": f".last.pt.{host}.{os.getpid()}.tmp",
        "other host": f".last.pt.elsewhere.example.{dead.pid}.tmp",
        "other host, old": f".last.pt.elsewhere.example.{os.getpid()}.tmp",
        "old, no owner": ".last.pt.k3j2h1.tmp",
        "new, no owner": ".last.pt.a8b7c6.tmp",
        "not ours": ".notes.tmp",
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"half a checkpoint")
    for old in ("old, no owner", "other host, old"):
        os.utime(tmp_path / names[old], (time.time() - 7200,) * 2)
    removed = remove_stale_temporaries(tmp_path / CHECKPOINT_NAME)
    assert sorted(p.name for p in removed) == sorted([names["dead"], names["old, no owner"], names["other host, old"]])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [names["alive"], names["other host"], names["new, no owner"], names["not ours"]]
    )


def test_a_run_removes_the_temporary_its_killed_predecessor_left(tmp_path, cifar10_archive, cifar10_cache):
    import socket

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".last.pt.{socket.gethostname()}.{dead.pid}.tmp"
    stale.write_bytes(b"x" * 1000)
    loop.train(compose_train(*tiny(cifar10_archive, cifar10_cache, "epochs=1", "data.subset=64")), tmp_path)
    assert not stale.exists() and load_checkpoint(tmp_path)["epoch"] == 1


PAUSE_WHILE_DECODING = """
import runpy, sys, time
from pathlib import Path
from zoo.train.data import cifar10 as data
marker = Path(sys.argv[1])
def paused(src):  # decoding has begun: say so, then wait for the signal (its handler raises here)
    marker.write_text("decoding")
    time.sleep(120)
    raise SystemExit("no signal arrived while decoding")
data.decode_image_folder = paused
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_a_signal_while_the_model_is_built_says_what_stopped(tmp_path, monkeypatch, cifar10_archive, cifar10_cache):
    """Past the data, setup has no step boundary either: a signal stops it at once, with its own line
    (a first Ctrl-C there read as "a second Ctrl-C")."""
    from zoo.train.rundir.interrupt import TrainingInterrupted

    def unhandled(signum, frame):
        raise AssertionError("the signal reached the handler outside the run")

    previous = signal.signal(signal.SIGINT, unhandled)
    real_build_net = loop.build_net

    def build_net(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return real_build_net(*args, **kwargs)

    monkeypatch.setattr(loop, "build_net", build_net)
    try:
        with pytest.raises(TrainingInterrupted) as stopped:
            loop.setup(compose_train(*tiny(cifar10_archive, cifar10_cache)), tmp_path / "run")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert str(stopped.value) == "SIGINT while setting up the run; nothing was lost (no checkpoint was due yet)"
    assert stopped.value.exit_code == 130


def test_sigterm_while_decoding_says_what_stopped_and_that_nothing_was_lost(tmp_path):
    """A SIGTERM while the data set decodes stops at once, exit 143, one line, no cache file. Decoding
    is held (a hook in the child) until the signal has arrived, so the run cannot end first."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run_dir, cache, marker = tmp_path / "run", tmp_path / "cache", tmp_path / "decoding"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            PAUSE_WHILE_DECODING,
            str(marker),
            str(REPO / "train.py"),
            "experiment=cpu_smoke",
            "data=cifar10_folder",
            f"data.path={make_tree(tmp_path / 'cifar')}",
            f"data.cache_dir={cache}",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it decoded"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err[-2000:]
    assert err.strip().splitlines()[-1] == (
        "interrupted: SIGTERM while loading the data set; nothing was lost (no checkpoint was due yet; "
        f"a data cache is written whole or not at all) (nothing was saved: run dir {run_dir} removed)"
    )
    assert f"once; cached as {cache}/" in out + err  # the run's log line: the dir looked at below
    assert not run_dir.exists()  # it saved nothing
    assert not (cache.exists() and list(cache.iterdir())), "no cache file, whole or partial"


def test_a_compile_failure_is_one_line_naming_model_and_mode(
    tmp_path, monkeypatch, fresh_dynamo, cifar10_archive, cifar10_cache
):
    def broken_backend(gm, example_inputs):
        raise RuntimeError("the compiler met something it cannot handle\nand said so on many lines")

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: real_compile(model, backend=broken_backend))
    with pytest.raises(CompileFailed) as info:
        loop.train(
            compose_train(*tiny(cifar10_archive, cifar10_cache, "compile=true", "drop_path_mode=skip")), tmp_path
        )
    message = str(info.value)
    assert message.startswith("torch.compile failed on resnet8 with drop_path_mode=skip (") and "\n" not in message
    assert message.endswith("; compile=false runs it without compiling")


@pytest.mark.slow
def test_the_interrupt_message_starts_on_its_own_line_after_the_progress_bar(tmp_path, cifar10_archive, cifar10_cache):
    """On a terminal tqdm draws a bar on stderr; the bar is closed (its line cleared) before the message."""
    import pty
    import select

    run_dir = tmp_path / "run"
    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *cli_args(cifar10_archive, cifar10_cache, run_dir)],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 300
        signalled = False
        while True:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            if not signalled and b"epoch 2/3" in seen and (run_dir / "metrics.jsonl").exists():
                proc.send_signal(signal.SIGTERM)
                signalled = True
            assert time.monotonic() < deadline
        proc.wait(timeout=60)
    finally:
        proc.kill()
        os.close(master)
    text = seen.decode(errors="replace")
    assert proc.returncode == 143 and signalled, text[-2000:]
    before = text[: text.index("interrupted: SIGTERM")]
    assert before.endswith(("\r", "\n")), repr(before[-200:])


def test_two_runs_never_share_a_run_dir(tmp_path, cifar10_archive, cifar10_cache):
    """A run dir held by another process (a run still going, or its resume) is refused, naming the
    process; once it is free the run goes ahead."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
            "f.write('process 4242 on testhost'); f.flush(); print('locked', flush=True); time.sleep(60)",
            str(tmp_path / ".lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        cfg = compose_train(*tiny(cifar10_archive, cifar10_cache, "epochs=1", "data.subset=64"))
        with pytest.raises(RunDirError) as info:
            loop.train(cfg, tmp_path)
        assert str(info.value) == (
            f"{tmp_path} is in use by process 4242 on testhost (another run, or this run still "
            "going); wait for it to end, or give this run another hydra.run.dir"
        )
        assert not (tmp_path / CHECKPOINT_NAME).exists()
    finally:
        holder.kill()
        holder.wait()
    loop.train(cfg, tmp_path)
    assert load_checkpoint(tmp_path)["epoch"] == 1


def test_resume_with_a_mistyped_override_is_one_line(tmp_path, finished_run):
    """A resumed run's overrides go through the schema before Hydra starts; a bad one is one line."""
    assert check_cli(f"resume={finished_run}", "lr=abc").startswith("error: lr must be a number, got 'abc'")
    assert check_cli(f"resume={finished_run}", "drop_path_rat=0.1").startswith("error: unknown key 'drop_path_rat'")
    assert check_cli(f"resume={finished_run}", "device=cpu") == ""


# --- the third round (issue 25): every optimizer and schedule key, drop path inputs, misspelled
# top-level keys, run dirs that cannot be written --------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        (("sched.min_lr_ratio=-3",), "sched.min_lr_ratio must be in [0, 1] (a fraction of lr), got -3.0"),
        (("optim=sgd", "optim.momentum=-5"), "optim.momentum must be in [0, 1), got -5.0"),
        (("optim=sgd", "optim.momentum=nan"), "optim.momentum must be a finite number, got nan"),
        (("epochs=3", "sched.warmup_epochs=4"), "sched.warmup_epochs must be <= epochs=3, got 4.0"),
        (("ema_decay=1",), "ema_decay must be in (0, 1), got 1.0"),
        (("label_smoothing=-0.1",), "label_smoothing must be in [0, 1), got -0.1"),
        (("optim.betas=[0.9,1.0]",), "optim.betas[1] must be in [0, 1), got 1.0"),
        (("optim.betas=[nan,0.999]",), "optim.betas[0] must be a finite number, got nan"),
        (("optim.eps=0",), "optim.eps must be > 0, got 0.0"),
        (
            ("sched=step", "sched.gamma=-1"),
            "sched.gamma must be in (0, 1] (the lr's factor at each milestone), got -1.0",
        ),
        (("sched=step", "sched.milestones=[0.5,inf]"), "sched.milestones[1] must be a finite number, got inf"),
        (
            ("sched=step", "sched.milestones=[1.5]"),
            "sched.milestones[0] must be in [0, 1] (a fraction of training), got 1.5",
        ),
        (("mixup_alpha=inf",), "mixup_alpha must be a finite number, got inf"),
        (("model.layer_scale_init_values=nan",), "model.layer_scale_init_values must be a finite number, got nan"),
    ],
)
def test_every_optimizer_and_schedule_key_is_range_checked(overrides, message):
    with pytest.raises(ConfigError) as info:
        validate_config(compose_train(*overrides))
    assert str(info.value) == message


def test_a_bad_schedule_value_is_one_line_before_any_dir(tmp_path):
    line = check_cli("sched.min_lr_ratio=-3", f"hydra.run.dir={tmp_path / 'run'}")
    assert line == "error: sched.min_lr_ratio must be in [0, 1] (a fraction of lr), got -3.0"
    assert (
        check_cli("-m", "optim=sgd", "optim.momentum=0.9,-5", f"hydra.sweep.dir={tmp_path / 'sweep'}")
        == "error: optim.momentum must be in [0, 1), got -5.0"
    )
    assert not any(tmp_path.iterdir())
    assert check_cli("epochs=3", "sched.warmup_epochs=3", f"hydra.run.dir={tmp_path / 'ok'}") == ""  # warmup = training


@pytest.mark.parametrize(
    "override, message",
    [
        ("modle=resnet20", "error: unknown key 'modle'; did you mean model?"),
        ("+optm=sgd", "error: unknown key 'optm'; did you mean optim?"),
        ("shed.warmup_epochs=0", "error: unknown key 'shed'; did you mean sched, seed?"),
        ("epoch=3", "error: unknown key 'epoch'; did you mean epochs?"),
    ],
)
def test_a_misspelled_top_level_key_or_group_suggests_the_known_name(tmp_path, override, message):
    assert check_cli(override, f"hydra.run.dir={tmp_path / 'run'}") == message
    assert not tmp_path.joinpath("run").exists()


def test_drop_path_rejects_what_would_give_a_wrong_result():
    from zoo.layers import DropPath, drop_path, drop_path_add, drop_path_rates

    for depths in (2.5, -1, [2, 2.5], [3, -1], "3"):
        with pytest.raises(
            ValueError, match=r"^depths must be a non-negative int or a sequence of them \(one per stage\), got "
        ):
            drop_path_rates(0.1, depths)
    ints = torch.ones(4, 3, dtype=torch.int64)
    module = DropPath(0.5).train()
    for call in (
        lambda: module(ints),
        lambda: module.add(ints, ints),
        lambda: module.skip_add(ints, ints, lambda t: t),
        lambda: drop_path(ints, 0.5, training=True),
        lambda: drop_path_add(ints, ints, 0.5, training=True),
    ):
        with pytest.raises(TypeError, match=r"^drop path needs a floating-point tensor, got torch\.int64"):
            call()
    assert torch.equal(DropPath(0.5).eval()(ints), ints)  # eval is the identity, for any tensor
    x = torch.ones(4, 3)
    for rate, message in (
        (torch.tensor(float("nan")), "must be a finite number, got nan"),
        (torch.tensor(1.5), r"must be in \[0, 1\], got 1.5"),
        (torch.tensor([0.1, 0.2]), r"a one-element float tensor, got a torch.float32 tensor of shape \(2,\)"),
    ):
        with pytest.raises(ValueError, match=message):
            drop_path(x, rate, training=True)
        with pytest.raises(ValueError, match=r"^drop_prob must be"):
            module.drop_prob = rate  # checked once, when set: the step reads the buffer only
    assert module.drop_prob == 0.5


def test_a_run_file_that_is_a_directory_is_one_line(tmp_path, cifar10_archive, cifar10_cache):
    (tmp_path / "metrics.jsonl").mkdir()
    with pytest.raises(RunDirError) as info:
        loop.train(compose_train(*tiny(cifar10_archive, cifar10_cache, "epochs=1", "data.subset=64")), tmp_path)
    assert str(info.value) == (
        f"{tmp_path / 'metrics.jsonl'} is a directory where the run writes its metrics.jsonl: "
        "move it away, or give this run another hydra.run.dir"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_a_read_only_run_or_sweep_dir_is_one_line_before_hydra(tmp_path):
    disk = tmp_path / "ro"
    disk.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(disk)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("cannot mount a read-only tmpfs here (not root, or no mount permission)")
    try:
        assert check_cli(f"hydra.run.dir={disk / 'run'}") == (
            f"error: hydra.run.dir={disk / 'run'}: {disk} is not writable (read-only or not yours): "
            "give hydra.run.dir= a writable path"
        )
        assert check_cli("-m", "seed=0,1", f"hydra.sweep.dir={disk}").startswith(
            f"error: hydra.sweep.dir={disk}: {disk} is not"
        )
        out = run_cli("model=resnet8", f"hydra.run.dir={disk / 'run'}")
        assert one_error_line(out).startswith(f"error: hydra.run.dir={disk / 'run'}: {disk} is not writable")
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_file_the_run_cannot_write_mid_run_is_one_line(tmp_path, monkeypatch, capsys):
    """What no check before the run can see (a run dir made read-only while it trains, a summary.json
    that became a folder): the OSError is one line naming the file, exit 2, no traceback."""
    from types import SimpleNamespace

    from hydra.core.hydra_config import HydraConfig

    from zoo.train import cli

    def train(*args):
        raise IsADirectoryError(21, "Is a directory", str(tmp_path / "summary.json"))

    from hydra.types import RunMode

    monkeypatch.setattr(
        HydraConfig,
        "get",
        staticmethod(
            lambda: SimpleNamespace(
                mode=RunMode.RUN,
                output_subdir=None,
                runtime=SimpleNamespace(output_dir=str(tmp_path)),
                overrides=SimpleNamespace(task=[]),
            )
        ),
    )
    monkeypatch.setattr(loop, "train", train)
    with pytest.raises(SystemExit) as info:
        cli.run(compose_train("model=resnet8"))
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'summary.json'}: Is a directory; a run writes only into its "
        f"run dir: give it a writable hydra.run.dir (run dir {tmp_path})\n"
    )


# --- where a run is, and never over another (issue 25) --------------------------------------------


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root``: its bytes and modification time (a refused run changes neither)."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()
    }


def fake_run(run_dir: Path, last: bool = False) -> Path:
    """A finished run's records (its last.pt only with ``last``): what a new run must not write over."""
    (run_dir / ".hydra").mkdir(parents=True)
    for name in ("config.yaml", ".hydra/config.yaml", ".hydra/overrides.yaml", "metrics.jsonl", "summary.json"):
        (run_dir / name).write_text(f"{name} of an earlier run\n")
    if last:
        (run_dir / CHECKPOINT_NAME).write_bytes(b"an earlier run's checkpoint")
    return run_dir


def test_a_new_run_never_writes_into_a_dir_holding_another_run(tmp_path):
    """hydra.run.dir=<a run's dir> is refused before Hydra writes there (with last.pt, naming the resume
    that continues it), unless the dir is empty or overwrite=true asks for it."""
    old = fake_run(tmp_path / "old")
    line = check_cli("model=resnet8", f"hydra.run.dir={old}")
    assert line == (
        f"error: hydra.run.dir={old} already holds a run (config.yaml, metrics.jsonl, summary.json, .hydra); "
        "it has no last.pt to continue from (resume=<dir> continues a run that has one); give this run "
        "another hydra.run.dir, or add overwrite=true to replace that run's records"
    )
    resumable = fake_run(tmp_path / "a=b,c", last=True)
    assert f"; 'resume='\"'\"'{resumable}'\"'\"'' continues it;" in check_cli(
        "model=resnet8", f"hydra.run.dir='{resumable}'"
    )
    (tmp_path / "empty").mkdir()
    assert check_cli("model=resnet8", f"hydra.run.dir={tmp_path / 'empty'}") == ""
    assert check_cli("model=resnet8", f"hydra.run.dir={old}", "overwrite=true") == ""
    before = snapshot(tmp_path)
    one_error_line(run_cli("model=resnet8", "lr=0.5", f"hydra.run.dir={old}"))  # end to end: Hydra never ran
    assert snapshot(tmp_path) == before


def test_a_refused_run_changes_nothing_on_disk(tmp_path, finished_run):
    """A resume refused for a changed key, a bad value or a dir in use, and a new run refused for its
    dir: no file of the run is written, not even Hydra's .hydra/ ones."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / ".hydra").mkdir()
    (run / ".hydra" / "overrides.yaml").write_text("- seed=0\n")
    before = snapshot(tmp_path)
    assert "the command line changes lr=0.5 (saved 0.002)" in one_error_line(run_cli(f"resume={run}", "lr=0.5"))
    assert one_error_line(run_cli(f"resume={run}", "log_every_s=-1")).startswith("error: log_every_s must be >= 0")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
            "print('locked', flush=True); time.sleep(60)",
            str(run / ".lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        before["run/.lock"] = ((run / ".lock").read_bytes(), (run / ".lock").stat().st_mtime_ns)
        assert "is in use by" in one_error_line(run_cli(f"resume={run}"))
        assert "is in use by" in one_error_line(run_cli("model=resnet8", f"hydra.run.dir={run}", "overwrite=true"))
    finally:
        holder.kill()
        holder.wait()
    assert snapshot(tmp_path) == before


def test_two_runs_in_one_second_never_share_the_default_run_dir(tmp_path, monkeypatch, cifar10_archive, cifar10_cache):
    """The default run dir is made new as the run starts: a name another run took (in the same second)
    gets _2, _3, ...; the run there is left alone."""
    from zoo.train.rundir import placement

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(placement, "_DEFAULT_RUN_DIR", {"reserve": True, "dir": None})
    assert placement._fresh_run_dir("same-second/10-00-00_resnet8") == "same-second/10-00-00_resnet8"
    monkeypatch.setattr(placement, "_DEFAULT_RUN_DIR", {"reserve": True, "dir": None})  # a second process
    assert placement._fresh_run_dir("same-second/10-00-00_resnet8") == "same-second/10-00-00_resnet8_2"
    # End to end: every name the run could be given in the next minute holds another run.
    taken = [time.strftime("%Y-%m-%d/%H-%M-%S", time.localtime(time.time() + s)) for s in range(60)]
    for name in taken:
        fake_run(tmp_path / "outputs" / f"{name}_resnet8")
    before = snapshot(tmp_path)
    out = run_cli(*tiny(cifar10_archive, cifar10_cache, "epochs=1", "data.subset=64"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    new = [p for p in (tmp_path / "outputs").glob("*/*") if (p / "summary.json").exists() and p.name.endswith("_2")]
    assert len(new) == 1 and new[0].name.removesuffix("_2") in {n.rpartition("/")[2] + "_resnet8" for n in taken}
    dirs = {str(p.relative_to(tmp_path / "outputs")) for p in (tmp_path / "outputs").glob("*/*")}
    assert dirs == {f"{n}_resnet8" for n in taken} | {str(new[0].relative_to(tmp_path / "outputs"))}  # no other
    assert {
        k: v for k, v in snapshot(tmp_path).items() if not k.startswith(str(new[0].relative_to(tmp_path)))
    } == before
    # 5c: the run names its dir on its first line and on its last
    assert out.stdout.splitlines()[0] == f"run dir: {new[0]}"
    assert out.stdout.strip().splitlines()[-1].endswith(f"; run dir {new[0]}")


def test_the_printed_resume_command_runs_as_pasted(tmp_path, monkeypatch, cifar10_archive, cifar10_cache):
    """A sweep job interrupted in its first epoch, in a dir whose name holds Hydra's and the shell's
    special characters: the interrupt message and the report give one resume command, and pasted into a
    shell it resumes the run to its end."""
    import yaml

    from zoo.train.report.comparison import render_markdown
    from zoo.train.report.sweep import load_sweep

    sweep = tmp_path / "sweep"
    job = sweep / "0_data=cifar10_folder,seed=7 $(touch pwned);'q\"`x`"
    job.mkdir(parents=True)
    with monkeypatch.context() as patch:
        patch.setattr(loop.StopOnSignal, "requested", property(lambda self: True))
        with pytest.raises(loop.TrainingInterrupted) as info:
            loop.train(compose_train(*tiny(cifar10_archive, cifar10_cache, "epochs=1", "data.subset=128")), job)
    message = str(info.value)
    assert message.startswith(f"SIGTERM before the first step; saved {job / CHECKPOINT_NAME}; continue with: ")
    command = message.partition("; continue with: ")[2]
    (job / ".hydra").mkdir()
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["seed=7"]))
    other = sweep / "1"  # a job beside it, one epoch done
    row = {
        "epoch": 1,
        "train_loss": 2.0,
        "train_acc": 0.1,
        "test_loss": 2.0,
        "test_acc": 0.1,
        "lr": 0.1,
        "drop_path_rate": 0.1,
        "epoch_seconds": 1.0,
        "images_per_second": 64.0,
    }
    (other / ".hydra").mkdir(parents=True)
    (other / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["seed=8"]))
    (other / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    md = render_markdown(load_sweep(sweep), plot_name=None)
    assert f"- job `{job.name}` (`seed=7`): interrupted before its first epoch ended; continue with `{command}`" in md
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(["bash", "-c", command], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads((job / "summary.json").read_text())["epochs"] == 1
    assert not (REPO / "pwned").exists() and not (job / "pwned").exists()
