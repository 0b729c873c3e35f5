"""The training loop on a GPU: what runs on CUDA when it is present (skipped, saying so, on a CPU),
and what can be checked for it on a CPU: the step makes no host sync but the loss check one step late,
and copies nothing from the host.

``pytest -m cuda`` runs the CUDA cases alone (scripts/gpu_check.sh does, on a lent GPU).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.overrides import TorchFunctionMode

from conftest import compose_train, metrics, tiny, train_cut_and_resumed
from zoo.train import loop
from zoo.train.batches import crop_flip, epoch_plan, normalize, train_batch
from zoo.train.data import Split
from zoo.train.precision import resolve_precision


# --- the precision each device gets ----------------------------------------------------------------


def test_auto_precision_per_device(monkeypatch):
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert resolve_precision("auto", "auto", cuda).amp and resolve_precision("auto", "auto", cuda).channels_last
    from zoo.train import precision

    for has_bf16 in (True, False):
        monkeypatch.setattr(precision, "cpu_has_bf16", lambda has_bf16=has_bf16: has_bf16)
        p = resolve_precision("auto", "auto", cpu)
        assert (p.amp, p.channels_last) == (has_bf16, True)
        assert ("has bf16 in hardware" if has_bf16 else "has no bf16 in hardware") in p.describe()
    p = resolve_precision(True, False, cpu)
    assert (p.amp, p.channels_last, p.why) == (True, False, "amp as set")


def test_the_run_logs_and_saves_its_precision(tmp_path, cifar10_archive, cifar10_cache, caplog):
    caplog.set_level("INFO", logger="train")
    summary = loop.train(compose_train(*tiny(cifar10_archive, cifar10_cache, "epochs=1", "data.subset=64", amp=None)),
                         tmp_path)
    expected = resolve_precision("auto", "auto", torch.device("cpu"))
    assert summary["amp"] == ("bf16" if expected.amp else "off") and summary["channels_last"] is True
    assert summary["precision_choice"] == expected.why
    assert expected.describe() in caplog.text.splitlines()[0]


# --- syncs and copies per step, by design (on any device) -------------------------------------------


class CountSyncs(TorchFunctionMode):
    """Counts the calls that read a tensor's value back to the host: on a GPU each one waits for the
    device. ``host_side`` names tensors that stay on the host on a GPU too (an optimizer's step count,
    which torch's AdamW keeps on the CPU unless ``capturable``): reading those waits for nothing."""

    READS = {"item", "tolist", "nonzero", "__bool__", "cpu", "numpy", "__int__", "__float__"}

    def __init__(self, host_side=lambda t: False) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.host_side = host_side

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.READS and not (args and self.host_side(args[0])):
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


def optimizer_steps(optimizer: torch.optim.Optimizer):
    return lambda t: any(t is state.get("step") for state in optimizer.state.values())


@pytest.mark.parametrize("mode", ["mask", "skip"])
def test_a_training_step_reads_nothing_back_and_the_loss_check_once(tmp_path, monkeypatch, mode, cifar10_archive,
                                                                    cifar10_cache):
    """``train_step`` itself (forward, loss, backward, optimizer; skip mode with the fixed draw, as on a
    GPU) reads no tensor value back; the loop reads one per step: the previous step's loss and count."""
    in_steps, real_step = [], loop.train_step

    def counted_step(model, optimizer, *args):
        with CountSyncs(optimizer_steps(optimizer)) as counter:
            out = real_step(model, optimizer, *args)
        in_steps.extend(counter.calls)
        return out

    monkeypatch.setattr(loop, "train_step", counted_step)
    real_epoch, per_epoch = loop.train_one_epoch, []

    def counted_epoch(s, epoch, stop):
        with CountSyncs(optimizer_steps(s.optimizer)) as counter:
            meter = real_epoch(s, epoch, stop)
        per_epoch.append(counter.calls)
        return meter

    monkeypatch.setattr(loop, "train_one_epoch", counted_epoch)
    loop.train(compose_train(*tiny(cifar10_archive, cifar10_cache, f"drop_path_mode={mode}",
                                   "drop_path_skip_draw=fixed", "drop_path_rate=0.5", amp=None)), tmp_path)
    assert in_steps == []
    assert per_epoch == [["tolist"] * 4, ["tolist"] * 4]  # 4 steps per epoch, one read each


def test_an_epoch_plan_is_made_once_and_steps_slice_it_on_the_device():
    """The whole epoch's order and augmentation go to the device in one copy; a batch is the same as
    drawing its augmentation on its own (what the plan replaced) and identical for 1 and 2 ranks."""
    from zoo.train.batches import augment_params, generator

    images = torch.randint(0, 256, (40, 32, 32, 3), dtype=torch.uint8)
    data = Split(images, torch.arange(40) % 10)
    plan = epoch_plan(40, 16, seed=3, epoch=2)
    assert plan.steps == 2 and plan.params.shape == (3, 32)
    x, y = train_batch(data, plan, 1, rank=0, world=1, channels_last=False)
    idx = torch.randperm(40, generator=generator(3, "perm", 2))[16:32]
    expected = normalize(crop_flip(images[idx], augment_params(16, generator(3, "aug", 2, 1))))
    assert torch.equal(x, expected) and torch.equal(y, data.labels[idx])
    halves = [train_batch(data, plan, 1, rank=r, world=2, channels_last=False)[0] for r in (0, 1)]
    assert torch.equal(torch.stack([halves[0], halves[1]], 1).flatten(0, 1), x)
    plain = epoch_plan(40, 16, seed=3, epoch=2, augment=False)  # data.augment=false: same order, no crops
    x, y = train_batch(data, plain, 1, rank=0, world=1, channels_last=False)
    assert torch.equal(x, normalize(images[idx])) and torch.equal(y, data.labels[idx])


# --- on CUDA ------------------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("mode", ["mask", "skip"])
def test_cuda_step_syncs_once_for_the_loss_check(tmp_path, monkeypatch, mode, cifar10_archive, cifar10_cache):
    real_epoch, warned = loop.train_one_epoch, []

    def watched_epoch(s, epoch, stop):
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                meter = real_epoch(s, epoch, stop)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        warned.append(sum("synchroniz" in str(w.message) for w in caught))
        return meter

    monkeypatch.setattr(loop, "train_one_epoch", watched_epoch)
    loop.train(compose_train(*tiny(cifar10_archive, cifar10_cache, f"drop_path_mode={mode}",
                                   "drop_path_rate=0.5", device="cuda", amp=None)), tmp_path)
    assert warned[1] == 4, warned  # epoch 2 (cuDNN has picked its kernels): the 4 loss reads, nothing else


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("extra", [(), ("drop_path_mode=skip",), pytest.param(("compile=true",), marks=pytest.mark.slow)])
def test_cuda_two_epoch_run_and_resume_equality(tmp_path, monkeypatch, extra, cifar10_archive, cifar10_cache):
    """Two epochs on the GPU (bf16 autocast and channels_last by default), with the data on the device;
    interrupted after epoch 2's first step and resumed, it ends exactly as the uninterrupted run
    (deterministic kernels: cuDNN's autotuner may pick another algorithm in another process)."""
    overrides = tiny(cifar10_archive, cifar10_cache, "deterministic=true", *extra, device="cuda", amp=None)
    full = loop.train(compose_train(*overrides), tmp_path / "full")
    assert full["device"] == "cuda" and full["amp"] == "bf16" and full["channels_last"] is True

    train_cut_and_resumed(monkeypatch, overrides, tmp_path / "cut")
    assert metrics(tmp_path / "cut") == metrics(tmp_path / "full")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_batches_equal_the_cpu_ones():
    images = torch.randint(0, 256, (40, 32, 32, 3), dtype=torch.uint8)
    labels = torch.arange(40) % 10
    batches = []
    for device in ("cpu", "cuda"):
        plan = epoch_plan(40, 16, seed=1, epoch=0, device=device)
        x, y = train_batch(Split(images, labels).to(device), plan, 1, 0, 1, channels_last=True)
        assert x.device.type == device and x.is_contiguous(memory_format=torch.channels_last)
        batches.append((x.cpu(), y.cpu()))
    torch.testing.assert_close(batches[0], batches[1])
