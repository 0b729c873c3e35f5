"""The recipe keys timm users reach for: augmentation policies per image, gradient clipping and
accumulation, a run started from trained weights, and the progress line."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

import zoo
from conftest import (
    REPO,
    assert_same_weights,
    check_cli,
    compose_train,
    load_script,
    metrics,
    tiny,
    train_cut_and_resumed,
)
from zoo.train.cli import SWEEP_JOBS, jobs_after
from zoo.train.config.schema import validate_config
from zoo.train.data.augment import ERASE_VALUE, apply_per_image, build_policy, resolve_augment
from zoo.train.data.batches import epoch_plan, train_batch
from zoo.train.data.cifar10 import Split
from zoo.train.errors import CheckpointError
from zoo.train.loop import run as loop
from zoo.train.loop.progress import Progress
from zoo.train.loop.step import train_step
from zoo.train.rundir.checkpoint import init_weights

# --- augmentation policies -------------------------------------------------------------------------


def same_image(n: int) -> torch.Tensor:
    """``n`` copies of one random (H, W, C) uint8 image: any difference between them is the augmentation's."""
    image = torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return image.expand(n, -1, -1, -1).contiguous()


@pytest.mark.parametrize("policy", ["autoaugment", "randaugment", "trivialaugment"])
def test_each_image_of_a_batch_draws_its_own_operations(policy):
    images = same_image(16)
    out = apply_per_image(images, build_policy(policy), list(range(16)))
    distinct = {tuple(o.flatten().tolist()) for o in out}
    assert len(distinct) >= 4  # one draw per call would give 16 equal images
    again = apply_per_image(images, build_policy(policy), list(range(16)))
    assert torch.equal(out, again)  # the seeds alone decide


def test_the_policy_leaves_the_global_random_state_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    apply_per_image(same_image(4), build_policy("randaugment", erasing=0.5), [1, 2, 3, 4])
    assert torch.equal(torch.rand(3), expected)  # drop path draws do not depend on the policy


def test_random_erasing_erases_to_the_mean_colour_with_its_probability():
    images = same_image(200)
    out = apply_per_image(images, build_policy("none", erasing=0.5), list(range(200)))
    erased = (out != images).flatten(1).any(1)
    assert 60 < int(erased.sum()) < 140
    changed = (out != images).any(-1)  # (B, H, W): the pixels erasing wrote
    assert torch.equal(out[changed], torch.tensor(ERASE_VALUE, dtype=torch.uint8).expand(int(changed.sum()), 3))
    assert build_policy("none") is None and build_policy(True) is None and build_policy(False) is None


def test_a_policy_batch_depends_only_on_where_it_sits_in_training():
    """The seeds come with the epoch's plan: the same batch under any global RNG state (a resumed run), and
    the same images whether one process takes the batch or two share it."""
    data = Split(torch.randint(0, 256, (64, 32, 32, 3), dtype=torch.uint8), torch.arange(64) % 10)
    plan = epoch_plan(64, 16, seed=1, epoch=3, policy=build_policy("trivialaugment", erasing=0.25))
    torch.manual_seed(0)
    x, y = train_batch(data, plan, 2, rank=0, world=1, channels_last=False)
    torch.manual_seed(1)
    again, _ = train_batch(data, plan, 2, rank=0, world=1, channels_last=False)
    assert torch.equal(x, again)
    halves = [train_batch(data, plan, 2, rank=r, world=2, channels_last=False)[0] for r in (0, 1)]
    assert torch.equal(x[0::2], halves[0]) and torch.equal(x[1::2], halves[1])
    plain, _ = train_batch(data, epoch_plan(64, 16, seed=1, epoch=3), 2, rank=0, world=1, channels_last=False)
    assert not torch.equal(x, plain)


def test_a_resumed_run_with_a_policy_ends_like_an_uninterrupted_one(
    tmp_path, monkeypatch, cifar10_archive, cifar10_cache
):
    overrides = tiny(cifar10_archive, cifar10_cache, "data.augment=randaugment", "data.random_erasing=0.25")
    loop.train(compose_train(*overrides), tmp_path / "full")
    train_cut_and_resumed(monkeypatch, overrides, tmp_path / "cut")
    assert metrics(tmp_path / "cut") == metrics(tmp_path / "full")
    a, b = torch.load(tmp_path / "full" / "last.pt"), torch.load(tmp_path / "cut" / "last.pt")
    assert_same_weights(a["model"], b["model"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "data.augment=autoaug",
            "error: data.augment must be one of crop_flip, autoaugment, randaugment, trivialaugment, "
            "none, got 'autoaug'",
        ),
        ("data.randaugment_m=31", "error: data.randaugment_m must be an integer in [0, 30], got 31"),
        ("data.randaugment_n=0", "error: data.randaugment_n must be an integer >= 1 (operations per image), got 0"),
        ("data.random_erasing=1.5", "error: data.random_erasing must be a probability in [0, 1], got 1.5"),
        (
            "accum_steps=3",
            "error: accum_steps=3 does not divide batch_size=128: batch_size is the global batch of one "
            "optimizer step, split into accum_steps equal micro-batches",
        ),
        ("clip_grad=-1", "error: clip_grad must be > 0 (null: no clipping), got -1.0"),
        ("clip_mode=agc", "error: clip_mode must be one of norm, value, got 'agc'"),
        ("init_from=/no/such/run", "error: init_from='/no/such/run': no such run dir or checkpoint file"),
    ],
)
def test_bad_recipe_keys_are_one_line_before_any_run_dir(override, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert check_cli(override) == message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "value, policy",
    [
        ("true", "crop_flip"),
        ("false", "none"),
        ("crop_flip", "crop_flip"),
        ("none", "none"),
        ("autoaugment", "autoaugment"),
    ],
)
def test_the_augment_values_before_the_policies_still_work(value, policy):
    assert check_cli(f"data.augment={value}", "data.random_erasing=0.1", "accum_steps=4", "clip_grad=1") == ""
    assert resolve_augment(validate_config(compose_train(f"data.augment={value}")).data.augment) == policy


# --- gradient accumulation and clipping ------------------------------------------------------------


def one_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs) -> tuple[nn.Module, float, int]:
    model = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss, correct = train_step(model, optimizer, nn.CrossEntropyLoss(label_smoothing=0.1), x, y, 0.1, False, **kwargs)
    return model, float(loss), int(correct)


def test_accumulating_two_batches_of_64_is_one_batch_of_128(exact_fp32):
    torch.manual_seed(0)
    model = zoo.create_model("resnet8", num_classes=10, drop_path_rate=0.1).eval()  # eval: BN uses its running stats
    x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))
    whole, loss, correct = one_step(model, x, y)
    accumulated, loss2, correct2 = one_step(model, x, y, accum_steps=2)
    assert loss2 == pytest.approx(loss, rel=1e-6) and correct2 == correct
    assert not torch.equal(whole.stem[0].weight, model.stem[0].weight)  # a real step (zero-init BN scales
    assert not torch.equal(whole.head.weight, model.head.weight)  # keep some branches still at first)
    for a, b in zip(whole.parameters(), accumulated.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["norm", "value"])
def test_clipping_bounds_the_step(mode):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 10))
    x, y = torch.randn(8, 3, 4, 4) * 100, torch.randint(0, 10, (8,))
    stepped = copy.deepcopy(model)
    optimizer = torch.optim.SGD(stepped.parameters(), lr=1.0)  # the step is minus the clipped gradient
    train_step(stepped, optimizer, nn.CrossEntropyLoss(), x, y, 1.0, False, clip_grad=0.01, clip_mode=mode)
    steps = torch.cat([(m - s).detach().flatten() for m, s in zip(model.parameters(), stepped.parameters())])
    if mode == "norm":
        assert float(steps.norm()) == pytest.approx(0.01, rel=1e-4)
    else:
        assert float(steps.abs().max()) == pytest.approx(0.01, rel=1e-4)


# --- init_from -------------------------------------------------------------------------------------


def test_init_from_loads_the_body_and_starts_a_head_of_another_size_fresh(tmp_path):
    torch.manual_seed(0)
    trained = zoo.create_model("resnet8", num_classes=100)
    torch.save(trained.state_dict(), tmp_path / "weights.pt")
    net = zoo.create_model("resnet8", num_classes=10)
    head = net.head.weight.clone()
    assert init_weights(net, tmp_path / "weights.pt") == ["head.weight", "head.bias"]
    assert torch.equal(net.stem[0].weight, trained.stem[0].weight)
    assert torch.equal(net.head.weight, head)

    with pytest.raises(CheckpointError, match="resnet20"):  # another body is an error, not a fresh start
        init_weights(zoo.create_model("resnet20"), tmp_path / "weights.pt")


def test_a_run_starts_from_another_runs_weights(tmp_path, caplog, cifar10_archive, cifar10_cache):
    first = tiny(cifar10_archive, cifar10_cache, "epochs=1")
    loop.train(compose_train(*first), tmp_path / "first")
    trained = torch.load(tmp_path / "first" / "last.pt")["model"]
    seen = {}
    real = loop.init_weights

    def spy(net, source):
        fresh = real(net, source)
        seen.update({k: v.clone() for k, v in net.state_dict().items()})  # before training moves them
        return fresh

    with caplog.at_level(logging.INFO, logger="train"), pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "init_weights", spy)
        loop.train(compose_train(*first, f"init_from={tmp_path / 'first'}"), tmp_path / "second")
    assert_same_weights(seen, trained)
    assert f"weights from {tmp_path / 'first'}" in caplog.text


# --- progress --------------------------------------------------------------------------------------


def test_progress_shows_a_dash_until_a_loss_is_read_and_the_sweeps_eta(caplog):
    progress = Progress(0, 2, 0, 10, every_s=1e-9, enabled=True, jobs_after=3)
    progress.terminal, progress.lines = False, True  # as with the output redirected
    with caplog.at_level(logging.INFO, logger="train"):
        progress.update(0, float("nan"), 0.0, 64, steps_left=19)
        progress.start -= 10  # 5 s a step
        progress.update(1, 2.3, 0.1, 64, steps_left=18)
    first, second = [r.getMessage() for r in caplog.records]
    assert "loss -  " in first and "nan" not in first
    # this job's 18 steps left, then 3 more jobs of 2 epochs x 10 steps
    assert "loss 2.3000" in second and second.endswith("run eta 0:01:30  sweep eta 0:06:30")
    progress.close()


def test_a_sweeps_jobs_after_this_one_count_rounds_of_parallel_jobs(monkeypatch):
    from hydra.types import RunMode

    monkeypatch.setenv(SWEEP_JOBS, "6")
    hc = OmegaConf.create({"mode": RunMode.MULTIRUN, "job": {"num": 1}, "launcher": {"n_jobs": 2}})
    assert jobs_after(hc) == 2  # jobs 2 ... 5, two at a time
    hc.launcher = {}
    assert jobs_after(hc) == 4
    hc.mode = RunMode.RUN
    assert jobs_after(hc) == 0


def test_the_augment_benchmark_times_every_policy_it_names():
    import argparse

    bench = load_script(REPO / "benchmarks" / "augment_speed.py", "augment_speed")
    args = argparse.Namespace(device="cpu", images=64, batch=32)
    for policy in bench.POLICIES.values():
        assert check_cli(*policy) == ""  # the overrides are valid keys and values
        assert bench.augment_rate(args, policy) > 0
