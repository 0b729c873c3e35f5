"""What timm and Hydra users expect of a trainer: model EMA, mixup / cutmix, TensorBoard, progress
without a terminal, and sweeps through Hydra's launcher plugins with job dirs named by their overrides."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

import zoo
from conftest import NO_CUDA, assert_same_weights, compose_train, metrics, rows, run_cli, tiny, train_cut_and_resumed
from zoo.train.data.mixing import build_mixing
from zoo.train.loop import run as loop
from zoo.train.loop.ema import EMA
from zoo.train.rundir.checkpoint import load_checkpoint

# --- model EMA -------------------------------------------------------------------------------------


def test_ema_is_the_decayed_average_of_the_weights_and_buffers():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = EMA(net, decay=0.9)
    values = []
    for step in range(3):
        with torch.no_grad():
            for p in net.parameters():
                p.fill_(float(step + 1))
        net.train()(torch.randn(8, 2))  # moves the BatchNorm statistics too
        values.append(net[1].running_mean.clone())
        ema.update_parameters(net)
    # first update copies, then ema = 0.9 ema + 0.1 new
    expected = 0.9 * (0.9 * 1.0 + 0.1 * 2.0) + 0.1 * 3.0
    assert torch.allclose(ema.module[0].weight, torch.full((2, 2), expected))
    running = 0.9 * (0.9 * values[0] + 0.1 * values[1]) + 0.1 * values[2]
    assert torch.allclose(ema.module[1].running_mean, running)


def test_ema_equals_swa_utils_bit_for_bit_and_saves_the_same_keys(device):
    """What torch.optim.swa_utils.AveragedModel(get_ema_multi_avg_fn) computes, weights, BatchNorm
    statistics and its integer counters, over training steps of a zoo model with stochastic depth."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    torch.manual_seed(0)
    net = zoo.create_model("resnet8", drop_path_rate=0.2).to(device)
    ours = EMA(net, decay=0.9)
    theirs = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for _ in range(4):
        x, y = torch.randn(16, 3, 32, 32, device=device), torch.randint(0, 10, (16,), device=device)
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        ours.update_parameters(net)
        theirs.update_parameters(net)
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b)
    assert [k for k in a if not torch.equal(a[k].cpu(), b[k].cpu())] == []
    assert int(a["n_averaged"]) == 4 and a["n_averaged"].device.type == "cpu"
    assert not torch.equal(a["module.head.weight"], net.head.weight.detach())  # it averaged, not copied
    assert a["module.stem.1.num_batches_tracked"] > 0


@pytest.mark.cuda
@NO_CUDA
def test_cuda_ema_updates_without_a_sync():
    """No host read and no blocking copy per update (swa_utils copies its CPU step counter to the device)."""
    net = zoo.create_model("resnet8", drop_path_rate=0.2).cuda()
    ema = EMA(net, decay=0.9)
    ema.update_parameters(net)  # the first update copies
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):
            ema.update_parameters(net)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert int(ema.n_averaged) == 3


def test_a_run_with_ema_reports_saves_and_resumes_it(tmp_path, monkeypatch, cifar10_archive, cifar10_cache):
    overrides = tiny(cifar10_archive, cifar10_cache, "ema=true", "ema_decay=0.9")
    summary = loop.train(compose_train(*overrides), tmp_path / "full")
    expected = rows(tmp_path / "full")
    assert all(0 <= r["ema_test_acc"] <= 1 and r["ema_test_loss"] > 0 for r in expected)
    assert summary["final_ema_test_acc"] == expected[-1]["ema_test_acc"]
    state = load_checkpoint(tmp_path / "full")
    assert int(state["ema"]["n_averaged"]) == 8  # one update per step, 2 epochs of 4
    assert not torch.equal(state["ema"]["module.head.weight"], state["model"]["head.weight"])
    averaged, _ = zoo.load_run(tmp_path / "full", ema=True)  # the EMA weights back out, as a model
    assert torch.equal(averaged.head.weight, state["ema"]["module.head.weight"])

    train_cut_and_resumed(monkeypatch, overrides, tmp_path / "cut")
    assert metrics(tmp_path / "cut") == metrics(tmp_path / "full")
    again = load_checkpoint(tmp_path / "cut")
    assert_same_weights(again["ema"], state["ema"])


# --- mixup and cutmix ------------------------------------------------------------------------------


def test_mixing_is_off_by_default_and_makes_soft_targets():
    assert build_mixing(0.0, 0.0) is None
    x = torch.rand(16, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    y = torch.arange(16) % 10
    for mixup, cutmix in ((0.4, 0.0), (0.0, 1.0), (0.4, 1.0)):
        mixing = build_mixing(mixup, cutmix)
        torch.manual_seed(0)
        mixed, target = mixing(x, y)
        assert mixed.shape == x.shape and target.shape == (16, 10)
        assert torch.allclose(target.sum(1), torch.ones(16)) and not torch.equal(mixed, x)
        own = target.gather(1, y[:, None]) + target.gather(1, y.roll(1)[:, None])  # its label and its partner's
        assert torch.allclose(own.squeeze(1), torch.ones(16))
        torch.manual_seed(0)
        again, _ = mixing(x, y)
        assert torch.equal(again, mixed), "the draw follows torch's global generator, which the loop seeds"


def test_a_run_with_mixup_and_cutmix_trains_on_mixed_batches(tmp_path, monkeypatch, cifar10_archive, cifar10_cache):
    """Every step trains on mixed images towards soft targets that sum to one and share their mass
    between a sample's label and its partner's; the same seed without mixing trains to other losses."""
    seen, real = [], loop.build_mixing

    def recording(*args):
        mixing = real(*args)

        def mix(x, y):
            mixed, target = mixing(x, y)
            seen.append((x, y, mixed, target))
            return mixed, target

        return mix

    monkeypatch.setattr(loop, "build_mixing", recording)
    loop.train(
        compose_train(*tiny(cifar10_archive, cifar10_cache, "epochs=1", "mixup_alpha=0.2", "cutmix_alpha=1.0")),
        tmp_path / "mixed",
    )
    assert len(seen) == 4  # one per step
    for x, y, mixed, target in seen:
        assert target.shape == (len(y), 10) and torch.allclose(target.sum(1), torch.ones(len(y)))
        elsewhere = target.scatter(1, y[:, None], 0.0).scatter(1, y.roll(1)[:, None], 0.0)
        assert (elsewhere == 0).all() and not torch.equal(mixed, x)
    monkeypatch.undo()
    loop.train(compose_train(*tiny(cifar10_archive, cifar10_cache, "epochs=1")), tmp_path / "plain")
    assert rows(tmp_path / "mixed")[0]["train_loss"] != rows(tmp_path / "plain")[0]["train_loss"]


# --- TensorBoard and progress lines -----------------------------------------------------------------


def test_tensorboard_gets_every_metric(tmp_path, cifar10_archive, cifar10_cache):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    loop.train(compose_train(*tiny(cifar10_archive, cifar10_cache, "logger=tensorboard")), tmp_path)
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    accs = [e.value for e in events.Scalars("test_acc")]
    assert accs == pytest.approx([r["test_acc"] for r in rows(tmp_path)])
    assert set(events.Tags()["scalars"]) == set(rows(tmp_path)[0]) - {"epoch"}  # the epoch is each point's step


@pytest.mark.slow
def test_progress_lines_when_the_output_is_not_a_terminal(tmp_path, cifar10_archive, cifar10_cache):
    out = run_cli(
        *tiny(cifar10_archive, cifar10_cache, "epochs=1", "log_every_s=0.001"),
        f"hydra.run.dir={tmp_path / 'r'}",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith("epoch 1/1 step ")]
    assert len(lines) >= 3 and "img/s  run eta " in lines[-1], out.stdout[-2000:]
    assert lines[-1].startswith("epoch 1/1 step 4/4  loss ")
    assert "\r" not in out.stderr, "no progress bar without a terminal"


# --- sweeps through launcher plugins ----------------------------------------------------------------


def sweep(tmp_path: Path, archive: Path, cache: Path, launcher: str, *extra: str) -> subprocess.CompletedProcess:
    return run_cli(
        "-m",
        f"hydra/launcher={launcher}",
        *extra,
        "experiment=cpu_smoke",
        "data=cifar10_folder",
        f"data.path={archive}",
        f"data.cache_dir={cache}",
        "data.subset=200",
        "data.test_subset=100",
        "drop_path_rate=0,0.1",
        f"hydra.sweep.dir={tmp_path}",
        cwd=tmp_path,
    )


@pytest.mark.slow
def test_a_sweep_through_submitit_local_names_its_job_dirs_and_reports(tmp_path, cifar10_archive, cifar10_cache):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    out = sweep(tmp_path, cifar10_archive, cifar10_cache, "submitit_local", "hydra.launcher.timeout_min=10")
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = sorted(p.name for p in tmp_path.iterdir() if (p / "summary.json").is_file())
    assert jobs == [
        "0_data.subset=200,data.test_subset=100,data=cifar10_folder,drop_path_rate=0,experiment=cpu_smoke",
        "1_data.subset=200,data.test_subset=100,data=cifar10_folder,drop_path_rate=0.1,experiment=cpu_smoke",
    ]
    assert "| `drop_path_rate=0.1` |" in (tmp_path / "comparison.md").read_text()


def test_launcher_presets_compose():
    slurm = compose_train("hydra/launcher=slurm_gpu", hydra=True).hydra.launcher
    assert slurm.gpus_per_node == 1 and slurm.tasks_per_node == 1 and "SlurmLauncher" in slurm._target_
    joblib = compose_train("hydra/launcher=joblib_cpu", hydra=True).hydra.launcher
    assert joblib.n_jobs == 2 and "JoblibLauncher" in joblib._target_
