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

from conftest import REPO, compose_train, metrics, run_python, tiny, train_cut_and_resumed
from zoo.train.data.batches import crop_flip, epoch_plan, normalize, train_batch
from zoo.train.data.cifar10 import Split
from zoo.train.loop import run as loop
from zoo.train.loop.precision import resolve_precision

# --- the precision each device gets ----------------------------------------------------------------


def test_auto_precision_per_device(monkeypatch):
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert resolve_precision("auto", "auto", cuda).amp and resolve_precision("auto", "auto", cuda).channels_last
    from zoo.train.loop import precision

    for has_bf16 in (True, False):
        monkeypatch.setattr(precision, "cpu_has_bf16", lambda has_bf16=has_bf16: has_bf16)
        p = resolve_precision("auto", "auto", cpu)
        assert (p.amp, p.channels_last) == (has_bf16, True)
        assert ("has bf16 in hardware" if has_bf16 else "has no bf16 in hardware") in p.describe()
    p = resolve_precision(True, False, cpu)
    assert (p.amp, p.channels_last, p.why) == (True, False, "amp as set")


def test_the_run_logs_and_saves_its_precision(tmp_path, cifar10_archive, cifar10_cache, caplog):
    caplog.set_level("INFO", logger="train")
    summary = loop.train(
        compose_train(*tiny(cifar10_archive, cifar10_cache, "epochs=1", "data.subset=64", amp=None)), tmp_path
    )
    expected = resolve_precision("auto", "auto", torch.device("cpu"))
    assert summary["amp"] == ("bf16" if expected.amp else "off") and summary["channels_last"] is True
    assert summary["precision_choice"] == expected.why
    assert expected.describe() in caplog.text.splitlines()[0]


def test_a_run_puts_the_global_torch_flags_back(tmp_path, monkeypatch, cifar10_archive, cifar10_cache):
    """deterministic=true turns deterministic algorithms on for the run only; flags the run does not
    own (set here to what no default is) are as they were after it, also after a run that failed."""
    from zoo.train.loop.precision import torch_flags

    torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32 = True, False
    torch.set_float32_matmul_precision("medium")  # the autouse fixture puts all three back after the test
    before, during, real_epoch = torch_flags(), [], loop.train_one_epoch

    def seen_epoch(s, epoch, stop):
        during.append(torch_flags())
        return real_epoch(s, epoch, stop)

    monkeypatch.setattr(loop, "train_one_epoch", seen_epoch)
    loop.train(
        compose_train(*tiny(cifar10_archive, cifar10_cache, "epochs=1", "data.subset=64", "deterministic=true")),
        tmp_path / "run",
    )
    assert during[0]["deterministic"] and not before["deterministic"]
    assert torch_flags() == before

    def failing_load(cfg, ctx):
        during.append(torch_flags())
        raise RuntimeError("no data today")

    monkeypatch.setattr(loop, "load_data", failing_load)  # fails after the flags were set
    with pytest.raises(RuntimeError, match="no data today"):
        loop.train(compose_train(*tiny(cifar10_archive, cifar10_cache, "deterministic=true")), tmp_path / "2")
    assert during[-1]["deterministic"] and torch_flags() == before


def test_restored_torch_flags_restores_every_flag():
    from zoo.train.loop.precision import restored_torch_flags, torch_flags

    before = torch_flags()
    with restored_torch_flags():
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("high")
        assert all(torch_flags()[k] != before[k] for k in before)
    assert torch_flags() == before


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
def test_a_training_step_reads_nothing_back_and_the_loss_check_once(
    tmp_path, monkeypatch, mode, cifar10_archive, cifar10_cache
):
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
    loop.train(
        compose_train(
            *tiny(
                cifar10_archive,
                cifar10_cache,
                f"drop_path_mode={mode}",
                "drop_path_skip_draw=fixed",
                "drop_path_rate=0.5",
                amp=None,
            )
        ),
        tmp_path,
    )
    assert in_steps == []
    assert per_epoch == [["tolist"] * 4, ["tolist"] * 4]  # 4 steps per epoch, one read each


def test_the_stop_vote_of_several_processes_travels_in_the_loss_read():
    """With several processes a rank's stop request (a device tensor) is read with the step's loss, one
    step late, in the same one read; once seen it stays."""
    from zoo.train.loop.step import LossWatch, Meter

    watch, seen = LossWatch(Meter(), 0, None), []
    with CountSyncs() as counter:
        for step, vote in enumerate([0.0, 1.0, 0.0, 0.0]):
            watch.push(torch.tensor(2.0), torch.tensor(3), 4, step, torch.tensor(vote))
            seen.append(watch.stop_voted)
    assert seen == [False, False, True, True] and counter.calls == ["tolist"] * 3
    assert watch.meter.loss_sum == 2.0 * 4 * 3 and watch.meter.correct == 9


STOP_ON_RANK_1 = """
import os, sys
sys.path.insert(0, {tests!r})
from conftest import compose_train
from zoo.train.loop import run as loop

rank = int(os.environ["RANK"])


class StopOnRank1(loop.StopOnSignal):
    reads = 0

    @property
    def requested(self):
        StopOnRank1.reads += 1
        if rank == 1 and StopOnRank1.reads >= 3:  # as if SIGTERM reached rank 1 alone, in step 3
            self.signum = 15
        return self.signum is not None


loop.StopOnSignal = StopOnRank1
try:
    loop.train(compose_train(*{overrides!r}), {run_dir!r})
except loop.TrainingInterrupted as e:
    # a file per rank: the two processes share one stdout, where their lines can interleave
    with open(f"rank{{rank}}.txt", "w") as f:
        f.write(f"rank {{rank}}: {{e}}")
    sys.exit(e.exit_code)
"""


@pytest.mark.slow
def test_two_processes_stop_together_when_one_is_signalled(tmp_path, cifar10_archive, cifar10_cache):
    """Rank 1 alone is asked to stop; its vote reaches rank 0 through the loss read, and both stop at
    the same step boundary (two steps later), saved, without hanging in a collective."""
    overrides = tiny(
        cifar10_archive,
        cifar10_cache,
        "data.subset=512",
        "drop_path_mode=skip",
        "drop_path_skip_draw=fixed",
        "drop_path_rate=0.5",
    )
    script = tmp_path / "stop_on_rank_1.py"
    script.write_text(
        STOP_ON_RANK_1.format(tests=str(REPO / "tests"), overrides=overrides, run_dir=str(tmp_path / "run"))
    )
    out = run_python(
        "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), cwd=tmp_path, timeout=300
    )
    said = sorted(p.read_text() for p in tmp_path.glob("rank*.txt"))
    where = "SIGTERM in epoch 1 after step 4 of 8"
    assert [line[:7] for line in said] == ["rank 0:", "rank 1:"] and all(where in line for line in said), (
        out.stdout[-2000:] + out.stderr[-3000:]
    )
    assert (tmp_path / "run" / "last.pt").is_file()


def test_ddp_looks_for_unused_parameters_only_where_a_branch_can_go_without_samples():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    unused = lambda *extra, device=cpu: loop.unused_parameters(compose_train(*extra), device)  # noqa: E731
    assert not unused("drop_path_mode=mask")
    assert unused("drop_path_mode=skip")  # the CPU's default draw is Bernoulli: all of a block's samples can go
    assert not unused("drop_path_mode=skip", device=cuda)  # fixed: at least one sample kept
    assert not unused("drop_path_mode=skip", "compile=true")
    assert not unused("drop_path_mode=auto", "drop_path_skip_draw=fixed")
    assert unused("drop_path_mode=skip", "drop_path_rate=1.0", device=cuda)  # rate 1 keeps none


def test_an_epoch_plan_is_made_once_and_steps_slice_it_on_the_device():
    """The whole epoch's order and augmentation go to the device in one copy; a batch is the same as
    drawing its augmentation on its own (what the plan replaced) and identical for 1 and 2 ranks."""
    from zoo.train.data.batches import augment_params, generator

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
    loop.train(
        compose_train(
            *tiny(
                cifar10_archive, cifar10_cache, f"drop_path_mode={mode}", "drop_path_rate=0.5", device="cuda", amp=None
            )
        ),
        tmp_path,
    )
    assert warned[1] == 4, warned  # epoch 2 (cuDNN has picked its kernels): the 4 loss reads, nothing else


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize(
    "extra", [(), ("drop_path_mode=skip",), pytest.param(("compile=true",), marks=pytest.mark.slow)]
)
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
