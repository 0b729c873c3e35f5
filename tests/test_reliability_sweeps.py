"""Sweeps that survive their jobs: a failed job is recorded and the others run, the report lists it and
the multirun exits 1; the same sweep command again skips finished jobs, resumes interrupted ones and runs
missing ones; job dir names stay within the file system's limit."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from conftest import REPO, compose_train, run_cli, run_python
from zoo.train.config.overrides import MAX_JOB_DIR_BYTES, job_dir_name
from zoo.train.report.comparison import ReportCallback, render_markdown, reproduce_command
from zoo.train.report.sweep import FAILED_NAME, load_sweep
from zoo.train.sweep_job import record_failure, run_job

# ---------------------------------------------------------------- job dir names


def test_long_job_dir_names_are_shortened_with_a_hash():
    long = [f"model.option_number_{i}=value_{i}_{'x' * 10}" for i in range(18)]  # ~600 bytes
    name = job_dir_name(3, long)
    assert len(name.encode()) <= MAX_JOB_DIR_BYTES < 255
    assert name.startswith("3_model.option_number_0=value_0_")
    assert job_dir_name(3, long) == name  # a rerun of the sweep finds the same dir
    assert job_dir_name(3, long[:-1] + [long[-1] + "y"]) != name  # a different last override: a different dir
    assert job_dir_name(3, ["seed=2", "drop_path_rate=0.1"]) == "3_drop_path_rate=0.1,seed=2"  # sorted, as Hydra's
    wide = job_dir_name(0, ["a=" + "é" * 300])  # two bytes a character: never cut inside one
    assert len(wide.encode()) <= MAX_JOB_DIR_BYTES and wide.encode().decode() == wide


def test_job_dir_names_leave_out_the_keys_that_change_nothing_computed_and_keys_inside_them():
    overrides = ["seed=1", "device=cpu", "logger.wandb.mode=offline", "+logger.csv.x=1", "data.path=/d", "lr=0.1"]
    assert job_dir_name(0, overrides) == "0_lr=0.1,seed=1"
    assert job_dir_name(0, ["logger=[csv,wandb]"]) == "0_"  # as a job with no overrides
    assert job_dir_name(0, ["++device=cpu", "~logger", "logger@x=csv", "seed=1"]) == "0_seed=1"


def test_the_sweep_subdir_uses_the_short_name():
    cfg = compose_train("seed=0", hydra=True)
    assert OmegaConf.to_container(cfg.hydra.sweep, resolve=False)["subdir"] == (
        "${zoo.job_dir:${hydra.job.num},${hydra.overrides.task}}"
    )
    task = ["a=" + "b" * 400, "device=cpu"]
    node = OmegaConf.create({"num": 7, "task": task, "subdir": "${zoo.job_dir:${num},${task}}"})
    assert node.subdir == job_dir_name(7, task[:1]) and len(node.subdir.encode()) <= MAX_JOB_DIR_BYTES


# ---------------------------------------------------------------- one job of a sweep, in process


def _job_cfg(**values):
    return OmegaConf.merge(compose_train("model=resnet8", "epochs=2", "sched.warmup_epochs=0"), values)


def test_a_failing_job_is_recorded_and_returns(tmp_path, capsys):
    from zoo.train.cli import _exit

    def fails(cfg, run_dir, overrides):
        _exit("error: data.path='x' is unreadable", 2)

    assert run_job(_job_cfg(), str(tmp_path), (), fails) is None
    record = json.loads((tmp_path / FAILED_NAME).read_text())
    assert record["exit_status"] == 2 and record["error"] == "error: data.path='x' is unreadable"
    assert capsys.readouterr().err == "error: data.path='x' is unreadable\n"

    def crashes(cfg, run_dir, overrides):
        raise RuntimeError("out of memory\nin a kernel")

    train_log = logging.FileHandler(tmp_path / "train.log")  # as Hydra's job logging sets one up
    logging.getLogger().addHandler(train_log)
    try:
        assert run_job(_job_cfg(), str(tmp_path), (), crashes) is None
    finally:
        logging.getLogger().removeHandler(train_log)
        train_log.close()
    record = json.loads((tmp_path / FAILED_NAME).read_text())
    assert record["exit_status"] == 1 and record["error"].startswith("error: RuntimeError: out of memory in a kernel")
    assert capsys.readouterr().err.count("\n") == 1  # one line on the console, the traceback in train.log
    assert "Traceback" in (tmp_path / "train.log").read_text() and "in crashes" in (tmp_path / "train.log").read_text()

    def succeeds(cfg, run_dir, overrides):
        return {"final_test_acc": 0.5}

    assert run_job(_job_cfg(), str(tmp_path), (), succeeds) == {"final_test_acc": 0.5}
    assert not (tmp_path / FAILED_NAME).exists()  # the last attempt's outcome, not an old one


def test_an_interrupted_job_still_stops_the_sweep(tmp_path):
    from zoo.train.cli import _exit

    def interrupted(cfg, run_dir, overrides):
        _exit("interrupted: SIGTERM in epoch 2 after step 1 of 4", 143)

    with pytest.raises(SystemExit) as stop:
        run_job(_job_cfg(), str(tmp_path), (), interrupted)
    assert stop.value.code == 143 and not (tmp_path / FAILED_NAME).exists()


def test_a_rerun_skips_finished_jobs_and_resumes_interrupted_ones(tmp_path):
    calls = []

    def run(cfg, run_dir, overrides):
        calls.append(cfg.resume)
        return 0.5  # what the task returns: the best validation accuracy

    cfg = _job_cfg()
    interrupted, done = tmp_path / "1_seed=1", tmp_path / "0_seed=0"
    interrupted.mkdir()
    (interrupted / "last.pt").write_bytes(b"")
    assert run_job(cfg, str(interrupted), ("seed=1",), run) == 0.5
    assert calls == [str(interrupted)]  # resumed from its last.pt
    done.mkdir()
    (done / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.merge(cfg, {"resume": None, "device": "cuda"})))
    (done / "summary.json").write_text(json.dumps({"final_test_acc": 0.25, "best_val_acc": 0.3}))
    assert run_job(cfg, str(done), ("seed=0",), run) == 0.3  # the finished run's objective, for a sweeper
    assert len(calls) == 1  # not run again (device: where it ran, not what it computed)
    # A finished run of other values in the job dir (another command into this sweep dir): not this job's result.
    assert run_job(_job_cfg(lr=0.5), str(done), ("seed=0",), run) is None
    error = json.loads((done / FAILED_NAME).read_text())["error"]
    assert "holds a finished run of other values: lr=0.5 (finished with 0.002)" in error and len(calls) == 1


# ---------------------------------------------------------------- the report and the exit status


def _fake_sweep(root: Path, failed: bool = True) -> Path:
    for num, seed in enumerate((0, 1)):
        job = root / f"{num}_seed={seed}"
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"seed={seed}"]))
        if seed == 0 or not failed:
            row = {"epoch": 1, "train_loss": 1.0, "train_acc": 0.5, "test_acc": 0.4, "epoch_seconds": 1.0}
            (job / "metrics.jsonl").write_text(json.dumps(row) + "\n")
            (job / "summary.json").write_text(json.dumps({"final_test_acc": 0.4, "best_test_acc": 0.4, "seed": seed}))
        else:
            record_failure(job, 2, "error: data.path='/d/seed1' is neither a directory nor a readable archive")
    multirun = {
        "hydra": {"job": {"name": "train"}, "overrides": {"hydra": [f"hydra.sweep.dir={root}"], "task": ["seed=0,1"]}}
    }
    (root / "multirun.yaml").write_text(yaml.safe_dump(multirun))
    return root


def test_the_report_lists_failed_jobs_and_the_multirun_exits_1(tmp_path, capsys):
    sweep = _fake_sweep(tmp_path / "sweep")
    md = render_markdown(load_sweep(sweep), None)
    assert "1 job(s) failed (listed below)" in md
    assert (
        "| `1_seed=1` | `seed=1` | 2 | 0 of None | error: data.path='/d/seed1' is neither a directory nor a "
        "readable archive |"
    ) in md
    assert "no metrics yet" not in md  # a failed job is not "not started"
    with pytest.raises(SystemExit) as end:
        ReportCallback().on_multirun_end(config=OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    assert end.value.code == 1 and (sweep / "comparison.md").is_file()
    err = capsys.readouterr().err
    assert "failed: job 1_seed=1: error: data.path='/d/seed1'" in err and "1 job(s) of the sweep failed" in err
    # Every job failed: still a report, which lists them.
    (sweep / "0_seed=0" / "summary.json").unlink()
    (sweep / "0_seed=0" / "metrics.jsonl").unlink()
    record_failure(sweep / "0_seed=0", 1, "error: RuntimeError: boom")
    (sweep / "comparison.md").unlink()
    with pytest.raises(SystemExit):
        ReportCallback().on_multirun_end(config=OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    md = (sweep / "comparison.md").read_text()
    assert "0 run(s) in 0 configuration(s), 0 finished. 2 job(s) failed" in md and "error: RuntimeError: boom" in md
    ok = _fake_sweep(tmp_path / "ok", failed=False)
    ReportCallback().on_multirun_end(config=OmegaConf.create({"hydra": {"sweep": {"dir": str(ok)}}}))  # no exit


def test_reproduce_gives_the_sweep_command_not_a_partial_one(tmp_path):
    sweep = _fake_sweep(tmp_path / "sweep", failed=False)
    assert reproduce_command(load_sweep(sweep)) == f"python train.py -m hydra.sweep.dir={sweep} seed=0,1"
    # The last invocation ran job 1 alone into the same sweep dir: the command still makes every job.
    multirun = yaml.safe_load((sweep / "multirun.yaml").read_text())
    multirun["hydra"]["overrides"]["task"] = ["seed=1"]
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(multirun))
    assert reproduce_command(load_sweep(sweep)) == f"python train.py -m hydra.sweep.dir={sweep} seed=0,1"


# ---------------------------------------------------------------- the real thing, through train.py


def _sweep_args(archive: Path, cache: Path, data: Path, sweep: Path, seeds: str) -> list[str]:
    """Tiny jobs (resnet8, 128 images, 4 steps an epoch, 2 epochs), each seed reading data/seed<n>."""
    return [
        "-m",
        "model=resnet8",
        "data=cifar10_folder",
        f"data.path={data}/seed${{seed}}",
        f"data.cache_dir={cache}",
        "data.subset=128",
        "data.test_subset=50",
        "epochs=2",
        "batch_size=32",
        "sched.warmup_epochs=0",
        "device=cpu",
        "amp=false",
        f"seed={seeds}",
        f"hydra.sweep.dir={sweep}",
    ]


def _data(tmp_path: Path, archive: Path, bad_seed: int, seeds: range) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    for seed in seeds:
        if seed == bad_seed:
            (data / f"seed{seed}").write_bytes(b"not an archive")
        else:
            (data / f"seed{seed}").symlink_to(archive)  # resolved: the jobs share the decoded cache
    return data


ONE_THREAD = {"OMP_NUM_THREADS": "1"}


# Trains as train.py does, but SIGKILLs itself in epoch 2 of seed 3's job after 2 of its 4 steps.
KILLER = """
import os, runpy, signal, sys
sys.path.insert(0, {repo!r})
from zoo.train.loop import run as loop

real_epoch, real_step = loop.train_one_epoch, loop.train_step


def train_one_epoch(s, epoch, stop):
    if s.cfg.seed == 3 and epoch == 1:
        steps = []

        def step(*args):
            if len(steps) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            steps.append(1)
            return real_step(*args)

        loop.train_step = step
    return real_epoch(s, epoch, stop)


loop.train_one_epoch = train_one_epoch
runpy.run_path({repo!r} + "/train.py", run_name="__main__")
"""


@pytest.mark.slow
def test_chaos_a_failing_job_and_a_killed_one_then_the_same_command(tmp_path, cifar10_archive, cifar10_cache):
    """Six jobs; seed 1's data is unreadable, seed 3's job is killed (SIGKILL) mid-epoch, taking the sweep
    with it. The same command again: 5 finished runs, 1 reported failure, the killed job resumed, one report."""
    sweep = tmp_path / "sweep"
    data = _data(tmp_path, cifar10_archive, 1, range(6))
    args = _sweep_args(cifar10_archive, cifar10_cache, data, sweep, "0,1,2,3,4,5")
    (tmp_path / "killer.py").write_text(KILLER.format(repo=str(REPO)))
    first = run_python(str(tmp_path / "killer.py"), *args, cwd=tmp_path, env=ONE_THREAD)
    assert first.returncode == -9, first.stderr[-3000:]
    jobs = {int(p.name.partition("_")[0]): p for p in sweep.iterdir() if p.is_dir()}
    assert sorted(jobs) == [0, 1, 2, 3] and (jobs[3] / "last.pt").is_file() and not (jobs[3] / "summary.json").exists()
    # named by the overrides that change what a job computes (not data.path, data.cache_dir, device, amp)
    assert jobs[0].name == (
        "0_batch_size=32,data.subset=128,data.test_subset=50,data=cifar10_folder,epochs=2,model=resnet8,"
        "sched.warmup_epochs=0,seed=0"
    )
    assert json.loads((jobs[1] / FAILED_NAME).read_text())["exit_status"] == 2  # the sweep went on after it

    again = run_cli(*args, cwd=tmp_path, env=ONE_THREAD)
    assert again.returncode == 1, again.stderr[-3000:]
    jobs = {int(p.name.partition("_")[0]): p for p in sweep.iterdir() if p.is_dir()}
    assert sorted(n for n, p in jobs.items() if (p / "summary.json").is_file()) == [0, 2, 3, 4, 5]
    assert [n for n, p in jobs.items() if (p / FAILED_NAME).is_file()] == [1]
    assert again.stdout.count("done before:") == 2  # jobs 0 and 2 were not run again
    assert "resuming" in (jobs[3] / "train.log").read_text()
    assert len((jobs[3] / "metrics.jsonl").read_text().splitlines()) == 2
    md = (sweep / "comparison.md").read_text()
    assert "5 finished. 1 job(s) failed" in md and "| `1_" in md.split("## Failed jobs")[1]
    assert "readable .tar/.tar.gz archive" in md
    assert f"hydra.sweep.dir={sweep}" in md.split("## Reproduce")[1] and "seed=0,1,2,3,4,5" in md  # the whole sweep
    assert "error: 1 job(s) of the sweep failed" in again.stderr


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_a_failing_job_beside_a_healthy_one_in_a_launcher(tmp_path, launcher, cifar10_archive, cifar10_cache):
    """Two jobs at once: seed 1's fails at its start, seed 0's trains on to its summary (joblib used to kill
    it), and the multirun exits 1 with the report written."""
    pytest.importorskip(f"hydra_plugins.hydra_{launcher.split('_')[0]}_launcher")
    sweep = tmp_path / "sweep"
    args = _sweep_args(cifar10_archive, cifar10_cache, _data(tmp_path, cifar10_archive, 1, range(2)), sweep, "0,1")
    options = ["hydra.launcher.n_jobs=2"] if launcher == "joblib" else ["hydra.launcher.tasks_per_node=1"]
    out = run_cli(*args, f"hydra/launcher={launcher}", *options, cwd=tmp_path, env=ONE_THREAD)
    assert out.returncode == 1, out.stderr[-3000:]
    healthy, failed = sorted((p for p in sweep.iterdir() if p.is_dir() and p.name[0].isdigit()), key=lambda p: p.name)
    assert json.loads((healthy / "summary.json").read_text())["epochs"] == 2
    assert json.loads((failed / FAILED_NAME).read_text())["exit_status"] == 2
    assert "## Failed jobs" in (sweep / "comparison.md").read_text()
