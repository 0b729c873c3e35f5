"""Evidence without selection on the test set: the validation split (data.val_size), best.pt and the
summary's test accuracy at the best validation epoch; and depth robustness (zoo.remove_blocks and
python -m zoo.train.knockout)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

import zoo
from conftest import compose_train, rows, run_cli, run_python
from zoo.train import knockout as ko
from zoo.train.config.schema import validate_config
from zoo.train.data.cifar10 import CLASSES, Split, hold_out, load_cifar10
from zoo.train.errors import ConfigError
from zoo.train.loop.run import best_val_epoch, train

# ---------------------------------------------------------------- the validation split


def test_held_out_images_are_the_last_of_each_class_and_never_trained_on():
    labels = torch.arange(10).repeat(20)  # 20 images of each class, interleaved
    images = torch.arange(200, dtype=torch.int64).view(200, 1, 1, 1).expand(200, 32, 32, 3).to(torch.uint8)
    train_split, val = hold_out(Split(images, labels), 30)
    assert len(val) == 30 and torch.bincount(val.labels).tolist() == [3] * 10
    assert len(train_split) == 170
    # pixel value = index: the held-out indices are each class's last 3, and the two sets are disjoint
    val_idx, train_idx = set(val.images[:, 0, 0, 0].tolist()), set(train_split.images[:, 0, 0, 0].tolist())
    assert val_idx == {i for i in range(200) if i >= 170} and not val_idx & train_idx
    assert train_split.subset(50, "data.subset").labels.tolist() == labels[:50].tolist()  # the subset's own images


def test_real_split_keeps_the_subset_and_shares_no_image(cifar10_archive, cifar10_cache):
    cfg = {
        "name": "cifar10_folder",
        "path": str(cifar10_archive),
        "cache_dir": str(cifar10_cache),
        "subset": 1000,
        "test_subset": 100,
    }
    plain = load_cifar10(cfg)
    held = load_cifar10({**cfg, "val_size": 500})
    assert plain.val is None
    assert torch.equal(held.train.images, plain.train.images) and torch.equal(held.train.labels, plain.train.labels)
    assert len(held.val) == 500 and torch.bincount(held.val.labels).tolist() == [50] * len(CLASSES)
    train_bytes = {bytes(img.numpy()) for img in held.train.images}
    assert not any(bytes(img.numpy()) in train_bytes for img in held.val.images)


@pytest.mark.parametrize(
    "value, subset, match",
    [
        (15, None, "data.val_size must be a multiple of the 10 classes"),
        (-10, None, r"data.val_size must be an integer >= 0, got -10"),
        (49000, 2000, "does not fit beside data.subset=2000: 5000 training images of each class leave at most 48000"),
        (50000, None, "leaves no training images"),
        (0, 100000, r"data.subset=100000 is more than the 50000 training images: at most 50000, or null for all"),
    ],
)
def test_bad_val_size_is_refused(value, subset, match):
    cfg = compose_train("model=resnet8", f"data.val_size={value}", f"data.subset={subset or 'null'}")
    with pytest.raises(ConfigError, match=match):
        validate_config(cfg)


def test_bad_val_size_on_the_command_line_is_one_line_and_no_run_dir(tmp_path):
    out = run_cli("model=resnet8", "data.val_size=15", f"hydra.run.dir={tmp_path / 'run'}")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: data.val_size must be a multiple of the 10 classes (the same number of each), >= 0 (0: no "
        "validation split), got 15"
    ]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "experiment, val_size",
    [
        ("compare", 5000),
        ("paper_resnet110", 5000),
        ("study_gpu", 5000),
        ("study_metaformer_gpu", 5000),
        ("study_cpu", 1000),
        ("study_cpu_late", 1000),
        ("study_metaformer", 1000),
    ],
)
def test_experiments_that_make_claims_select_on_a_validation_split(experiment, val_size):
    cfg = compose_train(f"experiment={experiment}")
    validate_config(cfg)
    assert cfg.data.val_size == val_size


def test_best_epoch_is_the_first_argmax_of_validation_accuracy():
    history = [{"epoch": e + 1, "val_acc": a, "test_acc": 0.5} for e, a in enumerate([0.1, 0.3, 0.3, 0.2])]
    assert best_val_epoch(history)["epoch"] == 2
    assert best_val_epoch([{"epoch": 1, "test_acc": 0.5}]) is None


@pytest.fixture(scope="module")
def val_run(tmp_path_factory, cifar10_archive, cifar10_cache) -> Path:
    """resnet20 (7 removable blocks) on 192 images with 50 held out, 3 epochs of SGD."""
    run = tmp_path_factory.mktemp("val") / "run"
    train(
        compose_train(
            "model=resnet20",
            "optim=sgd",
            "lr=0.2",
            "data=cifar10_folder",
            f"data.path={cifar10_archive}",
            f"data.cache_dir={cifar10_cache}",
            "data.subset=192",
            "data.test_subset=100",
            "data.val_size=50",
            "epochs=3",
            "batch_size=64",
            "sched.warmup_epochs=0",
            "device=cpu",
            "amp=false",
        ),
        run,
    )
    return run


def test_best_pt_and_the_summary_follow_validation_accuracy(val_run):
    history = rows(val_run)
    summary = json.loads((val_run / "summary.json").read_text())
    accs = [r["val_acc"] for r in history]
    best = accs.index(max(accs))  # the first of equals
    assert summary["best_val_epoch"] == history[best]["epoch"] and summary["best_val_acc"] == accs[best]
    assert summary["test_acc_at_best_val"] == history[best]["test_acc"]
    assert summary["val_images"] == 50 and summary["train_images"] == 192
    saved = torch.load(val_run / "best.pt", weights_only=True)
    assert saved["epoch"] == history[best]["epoch"]
    # the arguments that rebuild the model (drop_path_rates among them), as last.pt stores them
    assert saved["model_args"] == torch.load(val_run / "last.pt", weights_only=True)["model_args"] != {}
    # best.pt's weights give that epoch's test accuracy again, through load_run(which="best")
    out = run_python(
        "-m", "zoo.train.evaluate", str(val_run), "--which", "best", "--test-subset", "100", "--device", "cpu"
    )
    assert out.returncode == 0, out.stderr
    assert f"test_acc={history[best]['test_acc']:.4f}" in out.stdout
    model, _ = zoo.load_run(val_run, which="best")
    last, _ = zoo.load_run(val_run)
    same = all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), last.state_dict().values()))
    assert same == (history[best]["epoch"] == len(history))


def test_test_every_0_tests_the_last_epoch_and_best_pt_only(tmp_path, cifar10_archive, cifar10_cache):
    """test_every=0: no per-epoch test pass but the last; the test accuracy at the best validation epoch
    is best.pt's, evaluated once at the end."""
    from zoo.train.evaluate import accuracy, load_for_eval

    run = tmp_path / "run"
    summary = train(
        compose_train(
            "model=resnet8",
            "optim=sgd",
            "lr=0.2",
            "data=cifar10_folder",
            f"data.path={cifar10_archive}",
            f"data.cache_dir={cifar10_cache}",
            "data.subset=100",
            "data.test_subset=100",
            "data.val_size=50",
            "epochs=4",
            "batch_size=50",
            "sched.warmup_epochs=0",
            "device=cpu",
            "amp=false",
            "test_every=0",
        ),
        run,
    )
    history = rows(run)
    assert ["test_acc" in r for r in history] == [False, False, False, True] and all("val_acc" in r for r in history)
    assert summary["final_test_acc"] == summary["best_test_acc"] == history[-1]["test_acc"]
    loaded = load_for_eval(run, torch.device("cpu"), None, 100, which="best")
    assert summary["test_acc_at_best_val"] == accuracy(loaded, loaded.model)[0]
    assert summary["best_val_epoch"] == best_val_epoch(history)["epoch"]


def test_which_best_without_a_validation_split_says_why(tmp_path, val_run):
    run = tmp_path / "run"
    shutil.copytree(val_run, run)
    (run / "best.pt").unlink()
    with pytest.raises(zoo.LoadError, match="holds no best.pt .*without data.val_size"):
        zoo.load_run(run, which="best")
    with pytest.raises(zoo.LoadError, match="which must be one of last, best"):
        zoo.load_run(run, which="first")


# ---------------------------------------------------------------- removing blocks


@pytest.mark.parametrize("name", ["resnet20", "poolformer_tiny", "caformer_tiny"])
def test_removing_no_block_changes_nothing_and_a_removed_branch_is_not_called(name):
    torch.manual_seed(0)
    model = zoo.create_model(name).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for p in model.parameters():  # a ResNet's branches start at zero: removing one would change nothing
            p.add_(0.1 * torch.randn_like(p))
        assert torch.equal(zoo.remove_blocks(model, [])(x), model(x))
        names = zoo.removable_blocks(model)
        cut = zoo.remove_blocks(model, names[:1])
        block = dict(cut.named_modules())[names[0]]
        calls = []
        for attr in ("branch", "mixer_branch", "mlp_branch"):
            if hasattr(block, attr):
                setattr(block, attr, lambda x, attr=attr: calls.append(attr))
        assert not torch.equal(cut(x), model(x))
    assert calls == [] and not dict(model.named_modules())[names[0]].removed  # the original is left whole


def test_a_downsampling_block_cannot_be_removed_and_the_error_lists_those_that_can():
    model = zoo.create_model("resnet20")
    assert zoo.removable_blocks(model) == [
        "stages.0.0",
        "stages.0.1",
        "stages.0.2",
        "stages.1.1",
        "stages.1.2",
        "stages.2.1",
        "stages.2.2",
    ]
    with pytest.raises(
        ValueError, match=r"block 'stages.1.0' cannot be removed: .*downsamples.*; removable: stages.0.0, "
    ):
        zoo.remove_blocks(model, ["stages.1.0"])
    with pytest.raises(ValueError, match=r"'stem' is not a residual block of ResNetCifar; removable: stages.0.0"):
        zoo.remove_blocks(model, ["stem"])


def test_random_draws_depend_on_seed_k_and_draw_only():
    names = [f"b{i}" for i in range(7)]
    torch.manual_seed(1)
    first = ko.draw(names, 3, 0, 0)
    torch.manual_seed(2)  # the global generator plays no part
    assert ko.draw(names, 3, 0, 0) == first and len(set(first)) == 3
    assert len({tuple(ko.draw(names, 2, d, 0)) for d in range(5)}) > 1  # the draw index
    assert len({tuple(ko.draw(names, 2, 0, seed)) for seed in range(5)}) > 1  # the seed
    assert ko.ks(7) == [1, 2, 4] and ko.ks(8) == [1, 2, 4, 8]


# ---------------------------------------------------------------- python -m zoo.train.knockout


def test_knockout_of_a_run(val_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(val_run, run)
    assert ko.main([str(run), "--draws", "2", "--device", "cpu", "--no-plot"]) == 0
    md = (run / "knockout.md").read_text()
    final = json.loads((run / "summary.json").read_text())["final_test_acc"]
    assert f"Intact: {100 * final:.2f} %." in md  # zero blocks removed: the run's own accuracy
    assert "| `stages.1.1` |" in md and "`stages.1.0`" not in md
    assert "| 4 | 2 |" in md and "| 7 | 1 |" not in md  # k = 1, 2, 4 over 2 draws; 7 is not a power of 2


@pytest.mark.slow
def test_knockout_of_a_sweep_pairs_rate_0(val_run, tmp_path):
    sweep = tmp_path / "sweep"
    for num, (rate, seed) in enumerate([(0, 0), (0, 1), (0.1, 0), (0.1, 1)]):
        job = sweep / str(num)
        shutil.copytree(val_run, job)
        (job / ".hydra").mkdir()
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"drop_path_rate={rate}", f"seed={seed}"]))
        config = dict(yaml.safe_load((job / "config.yaml").read_text()), drop_path_rate=rate, seed=seed)
        (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    assert ko.main([str(sweep), "--draws", "1", "--device", "cpu", "--test-subset", "50"]) == 0
    md = (sweep / "knockout.md").read_text()
    assert "| `drop_path_rate=0` | 0 | 2 |" in md and "| `drop_path_rate=0.1` | 4 | 2 |" in md
    # the same weights on both sides: every paired difference is 0, so there is no interval to give
    assert "| +0.00 | none: n = 2, all differences equal (spread unmeasured) |" in md
    one_block = md.split("## One block removed")[1]  # each block alone, per configuration: the same weights too
    assert "| +0.00 | none: n = 2, all differences equal (spread unmeasured) |" in one_block
    assert (sweep / "knockout.png").stat().st_size > 0


def test_a_sweeps_one_block_table_pairs_the_mean_over_blocks_with_rate_0():
    """Each block removed alone, per configuration: accuracy minus intact averaged over blocks and seeds,
    that minus the same seed's rate-0 run, and the costliest block."""
    from zoo.train.report.sweep import Configuration, Run, Sweep

    def run(rate: float, seed: int) -> Run:
        pairs = [f"drop_path_rate={rate}", f"seed={seed}"]
        return Run(Path(f"/s/{rate}-{seed}"), f"{rate}-{seed}", pairs, {"drop_path_rate": rate, "seed": seed}, [{}], {})

    singles = {  # (rate, seed) -> accuracy without block a, without block b; intact 0.80 throughout
        (0.0, 0): (0.60, 0.70),
        (0.0, 1): (0.50, 0.76),
        (0.1, 0): (0.70, 0.78),
        (0.1, 1): (0.62, 0.78),
    }
    runs = {key: run(*key) for key in singles}
    results = {runs[key].path: ko.Knockout(0.80, {"a": acc[0], "b": acc[1]}) for key, acc in singles.items()}
    configs = [
        Configuration(
            ((("drop_path_rate", str(rate)),)), [runs[(rate, 0)], runs[(rate, 1)]], f"drop_path_rate={rate:g}"
        )
        for rate in (0.0, 0.1)
    ]
    sweep = Sweep(Path("/s"), list(runs.values()), configs, ())
    base, sd = (ko.single_block_row(c, sweep, results) for c in configs)
    # rate 0: seed means -0.15 and -0.17 (mean -16 pp); a costs -25 pp on average, b -7
    assert base == ["`drop_path_rate=0`", "2", "2", "-16.00", "baseline", "", "`a` -25.00"]
    # rate 0.1: seed means -0.06 and -0.10 (mean -8 pp); pairs +0.09 and +0.07: +8 pp, t(1) interval 12.71 * 0.01
    assert sd[:5] == ["`drop_path_rate=0.1`", "2", "2", "-8.00", "+8.00"] and sd[6] == "`a` -14.00"
    assert sd[5] == "-4.71 to +20.71 (n = 2: t = 12.71)"  # as comparison.md writes an interval


@pytest.mark.parametrize(
    "args, line",
    [
        (["/no/such/dir"], "error: '/no/such/dir': no such run dir or sweep dir"),
        (["{run}", "--draws", "0"], "error: argument --draws: must be an integer >= 1, got '0' (see --help)"),
        (["{run}", "--which", "first"], "error: argument --which: invalid choice: 'first' (choose from"),
        (["{empty}"], "error: no runs in '{empty}': no job dirs (expected job dirs with metrics.jsonl)"),
    ],
)
def test_knockout_bad_arguments_are_one_line_and_exit_2(args, line, tmp_path, capsys):
    run, empty = tmp_path / "run", tmp_path / "empty"
    run.mkdir(), empty.mkdir()
    (run / "last.pt").write_bytes(b"")
    with pytest.raises(SystemExit) as stop:  # argparse's errors exit from parse_args
        raise SystemExit(ko.main([a.format(run=run, empty=empty) for a in args]))
    assert stop.value.code == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert err.startswith(line.format(empty=empty))  # (how argparse quotes the choices depends on its version)
