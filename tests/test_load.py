"""Issue 16.1, a trained model back out: ``create_model(checkpoint_path=...)``, ``zoo.load_run``,
``pretrained=`` as timm spells it, the mismatch message the library and the trainer share, and
``python -m zoo.train.evaluate``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import zoo
from conftest import REPO, TRAINER_ONLY, blocked_imports, compose_train, rows, run_python, tiny, training_checkpoint
from zoo.layers import drop_path_blocks
from zoo.train import evaluate as evaluate_cli
from zoo.train.config.schema import build_model, model_args
from zoo.train.errors import CheckpointError
from zoo.train.loop import run as loop
from zoo.train.rundir.checkpoint import load_checkpoint, load_model_state


def keys_only_in(name: str, other: str) -> list[str]:
    """The state-dict keys model ``name`` has and model ``other`` lacks, in ``name``'s order."""
    theirs = set(zoo.create_model(other).state_dict())
    return [k for k in zoo.create_model(name).state_dict() if k not in theirs]


def same_weights(a: torch.nn.Module, b: dict[str, torch.Tensor]) -> bool:
    own = a.state_dict()
    return own.keys() == b.keys() and all(torch.equal(own[k].cpu(), b[k]) for k in own)


# --- create_model(checkpoint_path=...) -----------------------------------------------------------


def test_checkpoint_path_loads_a_run_dir_a_training_checkpoint_and_a_state_dict(tmp_path):
    state = training_checkpoint("resnet8", seed=1)
    torch.save(state, tmp_path / "last.pt")
    torch.save(state["model"], tmp_path / "weights.pt")
    for path in (tmp_path, tmp_path / "last.pt", tmp_path / "weights.pt", str(tmp_path / "weights.pt")):
        model = zoo.create_model("resnet8", checkpoint_path=path, drop_path_rate=0.3, drop_path_schedule="uniform")
        assert same_weights(model, state["model"]), path
        # the drop path settings come from the call, not from the checkpoint (saved at 0.1, linear)
        assert model.drop_path_rates() == pytest.approx([0.3, 0.3, 0.3])
    assert not same_weights(zoo.create_model("resnet8"), state["model"])  # a fresh init differs


def test_a_checkpoint_of_another_model_names_both_models_and_the_first_keys(tmp_path):
    torch.save(training_checkpoint("resnet8"), tmp_path / "last.pt")
    with pytest.raises(zoo.LoadError) as info:
        zoo.create_model("resnet20", checkpoint_path=tmp_path)
    msg = str(info.value)
    assert isinstance(info.value, ValueError) and "\n" not in msg and len(msg) < 500
    extra = keys_only_in("resnet20", "resnet8")  # resnet8's stage 0 has one block, resnet20's three
    assert extra[0] == "stages.0.1.conv_bn1.0.weight" and len(extra) > 3
    listed = ", ".join(extra[:3])
    assert msg == (
        f"{tmp_path / 'last.pt'} (resnet8 weights) does not fit model resnet20: {len(extra)} missing keys "
        f"({listed}, ... {len(extra) - 3} more)"
    )

    torch.save(zoo.create_model("resnet20").state_dict(), tmp_path / "r20.pt")
    with pytest.raises(zoo.LoadError) as info:
        zoo.create_model("resnet8", checkpoint_path=tmp_path / "r20.pt")
    assert str(info.value) == (
        f"{tmp_path / 'r20.pt'} (a state dict that does not record its model) does not fit model "
        f"resnet8: {len(extra)} unexpected keys ({listed}, ... {len(extra) - 3} more)"
    )


def test_shape_mismatches_list_both_shapes(tmp_path):
    torch.save(zoo.create_model("resnet8").state_dict(), tmp_path / "r8.pt")
    with pytest.raises(
        zoo.LoadError,
        match=r"does not fit model resnet8: 2 shape mismatches, checkpoint vs model "
        r"\(head\.weight 10x64 vs 5x64, head\.bias 10 vs 5\)$",
    ):
        zoo.create_model("resnet8", num_classes=5, checkpoint_path=tmp_path / "r8.pt")


def test_unreadable_or_foreign_files_are_one_line(tmp_path):
    with pytest.raises(zoo.LoadError, match="no such run dir or checkpoint file"):
        zoo.create_model("resnet8", checkpoint_path=tmp_path / "missing")
    with pytest.raises(zoo.LoadError, match="the run dir holds no last.pt"):
        zoo.create_model("resnet8", checkpoint_path=tmp_path)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(zoo.LoadError, match=r"junk.pt is not a readable checkpoint .*UnpicklingError") as info:
        zoo.create_model("resnet8", checkpoint_path=tmp_path / "junk.pt")
    assert "\n" not in str(info.value)
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "other.pt")
    with pytest.raises(zoo.LoadError, match="holds a dict with keys epoch, lr: neither a zoo training checkpoint"):
        zoo.create_model("resnet8", checkpoint_path=tmp_path / "other.pt")


def test_the_trainer_words_a_mismatch_as_the_library_does(tmp_path):
    torch.save(training_checkpoint("resnet8"), tmp_path / "last.pt")
    state = load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError) as info:
        load_model_state(zoo.create_model("resnet20"), state)
    with pytest.raises(zoo.LoadError) as lib:
        zoo.create_model("resnet20", checkpoint_path=tmp_path)
    assert str(info.value) == str(lib.value)
    n = len(keys_only_in("resnet20", "resnet8"))
    assert f"(resnet8 weights) does not fit model resnet20: {n} missing keys (" in str(info.value)


# --- pretrained ----------------------------------------------------------------------------------


def test_pretrained_is_accepted_and_true_says_how_to_load_your_own():
    assert isinstance(zoo.create_model("resnet8", pretrained=False), zoo.models.ZooModel)
    with pytest.raises(ValueError) as info:
        zoo.create_model("resnet8", pretrained=True)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("zoo ships no pretrained weights")
    assert "checkpoint_path=" in msg and "zoo.load_run(" in msg
    with pytest.raises(ValueError, match="unknown model 'resnet5'"):  # the name is checked first
        zoo.create_model("resnet5", pretrained=True)


def test_list_models_pretrained_is_empty_and_patterns_still_work():
    assert zoo.list_models(pretrained=True) == [] and zoo.list_models("resnet*", pretrained=True) == []
    assert zoo.list_models("resnet1*") == ["resnet110", "resnet1202", "resnet164"]
    assert zoo.list_models(pretrained=False) == zoo.list_models()


# --- load_run ------------------------------------------------------------------------------------


def test_load_run_rebuilds_the_saved_model_group_and_drop_path_keys(tmp_path, device):
    # shortcut B adds 1x1 convs: their weights only fit a model built with the group's keys
    state = training_checkpoint(
        "resnet8",
        model={"shortcut": "B"},
        drop_path_rate=0.2,
        drop_path_schedule="paper",
        drop_path_mode="skip",
        epochs=3,
    )
    torch.save(state, tmp_path / "last.pt")
    model, config = zoo.load_run(tmp_path, device=device)
    assert not model.training and {p.device.type for p in model.parameters()} == {device}
    assert same_weights(model, state["model"]) and any("shortcut" in k for k in state["model"])
    expected = zoo.create_model("resnet8", drop_path_rate=0.2, drop_path_schedule="paper", drop_path_mode="skip")
    assert model.drop_path_rates() == pytest.approx(expected.drop_path_rates())
    assert type(config) is dict and config == state["config"] and config["epochs"] == 3
    assert zoo.load_run(tmp_path / "last.pt")[1] == config


def test_load_run_ema_loads_the_moving_average_of_the_weights(tmp_path):
    state = training_checkpoint("resnet8", seed=1)
    averaged = {k: v + 1 if v.is_floating_point() else v for k, v in state["model"].items()}
    state["ema"] = {**{f"module.{k}": v for k, v in averaged.items()}, "n_averaged": torch.tensor(4)}  # AveragedModel's
    torch.save(state, tmp_path / "last.pt")
    assert same_weights(zoo.load_run(tmp_path, ema=True)[0], averaged)
    assert same_weights(zoo.load_run(tmp_path)[0], state["model"])
    state["ema"] = None  # trained with ema=false
    torch.save(state, tmp_path / "last.pt")
    with pytest.raises(zoo.LoadError, match=r"last.pt holds no EMA weights \(the run trained with ema=false\)"):
        zoo.load_run(tmp_path, ema=True)


def test_load_run_needs_a_training_checkpoint(tmp_path):
    torch.save(zoo.create_model("resnet8").state_dict(), tmp_path / "weights.pt")
    with pytest.raises(
        zoo.LoadError,
        match=r"weights.pt records no model \(model_name and model_args\); .* zoo.create_model\(<name>, "
        r"checkpoint_path=\.\.\.\)",
    ):
        zoo.load_run(tmp_path / "weights.pt")
    torch.save(training_checkpoint("resnet8", drop_path_mode="sideways"), tmp_path / "last.pt")
    with pytest.raises(zoo.LoadError, match="its saved arguments no longer build model resnet8: .*sideways"):
        zoo.load_run(tmp_path)


def test_loading_needs_torch_alone(tmp_path):
    """load_run and create_model(checkpoint_path=...) with the trainer's dependencies unimportable."""
    torch.save(training_checkpoint("resnet8"), tmp_path / "last.pt")
    script = f"""{blocked_imports(TRAINER_ONLY)}
import zoo
model, config = zoo.load_run({str(tmp_path)!r})
zoo.create_model("resnet8", checkpoint_path={str(tmp_path)!r})
print(config["model"]["name"], model.training)
"""
    out = run_python("-c", script, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["resnet8", "False"]


FIXTURE = REPO / "tests" / "data" / "resnet8_before_model_args.pt"


def test_a_checkpoint_written_before_model_args_still_loads():
    """tests/data holds a checkpoint the trainer wrote before checkpoints stored ``model_args`` (commit
    68c62d6: ``model=resnet8 model.shortcut=B +model.widths=[4,8,16] drop_path_rate=0.2
    drop_path_schedule=paper seed=3``, one step on 64 images): its saved training config still
    rebuilds the model, through load_run and create_model(checkpoint_path=) alike."""
    saved = torch.load(FIXTURE, map_location="cpu", weights_only=True)
    assert "model_args" not in saved and saved["config"]["model"] == {
        "name": "resnet8",
        "shortcut": "B",
        "widths": [4, 8, 16],
    }
    model, config = zoo.load_run(FIXTURE)
    assert same_weights(model, saved["model"]) and config == saved["config"]
    assert model.feature_info.channels() == [4, 8, 16] and model.num_classes == 10
    assert model.drop_path_rates() == pytest.approx([0.2 * 1 / 3, 0.2 * 2 / 3, 0.2])  # "paper": r * l / L
    again = zoo.create_model("resnet8", checkpoint_path=FIXTURE).eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), again(x))
    assert again.model_args["widths"] == [4, 8, 16] and again.model_args["shortcut"] == "B"


def test_a_checkpoint_rebuilds_its_model_from_model_args_alone(tmp_path):
    """load_run reads the name and create_model arguments a checkpoint stores, not the trainer's config;
    create_model(checkpoint_path=) takes them too, its own keyword arguments first."""
    torch.manual_seed(0)
    args = {"num_classes": 5, "widths": [4, 8, 16], "shortcut": "B", "drop_path_rate": 0.3, "drop_path_mode": "skip"}
    net = zoo.create_model("resnet8", **args)
    assert net.model_args == args
    torch.save(
        {"model": net.state_dict(), "model_name": "resnet8", "model_args": args, "config": {}}, tmp_path / "last.pt"
    )
    model, config = zoo.load_run(tmp_path)
    assert same_weights(model, net.state_dict()) and config == {}
    assert model.drop_path_rates() == pytest.approx(net.drop_path_rates()) and model.num_classes == 5
    assert all(b.drop_path_mode == "skip" for b in drop_path_blocks(model))
    lighter = zoo.create_model("resnet8", checkpoint_path=tmp_path, drop_path_rate=0.0)
    assert same_weights(lighter, net.state_dict()) and lighter.drop_path_rates() == [0.0, 0.0, 0.0]
    assert lighter.model_args == {**args, "drop_path_rate": 0.0}
    with pytest.raises(
        zoo.LoadError, match=r"\(resnet8 weights\) does not fit model resnet20"
    ):  # no args for another model
        zoo.create_model("resnet20", checkpoint_path=tmp_path)


def test_the_trainer_builds_its_model_from_the_arguments_it_saves():
    cfg = compose_train("model=resnet8", "model.shortcut=B", "drop_path_rate=0.1", "drop_path_mode=skip")
    args = model_args(cfg)
    assert args == {
        "num_classes": 10,
        "drop_path_rate": 0.1,
        "drop_path_schedule": "linear",
        "drop_path_mode": "skip",
        "drop_path_skip_draw": "auto",
        "shortcut": "B",
    }
    assert build_model(cfg).model_args == args


# --- python -m zoo.train.evaluate ----------------------------------------------------------------


def test_evaluate_data_comes_from_the_flag_the_run_or_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CIFAR10", "/env/cifar.tar.gz")
    folder = {
        "data": {
            "name": "cifar10_folder",
            "path": str(tmp_path),
            "subset": 256,
            "test_subset": 100,
            "cache_dir": str(tmp_path),
        }
    }
    cfg = evaluate_cli.data_config(folder, None)
    assert cfg["path"] == str(tmp_path) and cfg["subset"] is None and cfg["test_subset"] is None
    assert cfg["cache_dir"] == str(tmp_path)
    assert evaluate_cli.data_config(folder, "/flag")["path"] == "/flag"
    gone = {"data": {**folder["data"], "path": "/gone", "cache_dir": "/gone/cache"}}
    assert evaluate_cli.data_config(gone, None) == {
        **gone["data"],
        "path": "/env/cifar.tar.gz",
        "subset": None,
        "test_subset": None,
        "cache_dir": None,
    }
    tv = {"data": {"name": "cifar10", "root": "./data", "path": None}}
    assert evaluate_cli.data_config(tv, None)["name"] == "cifar10"  # the run's own source
    assert evaluate_cli.data_config(tv, "/flag")["name"] == "cifar10_folder"
    monkeypatch.delenv("ZOO_CIFAR10")
    with pytest.raises(evaluate_cli.DataError, match="pass --data-path"):
        evaluate_cli.data_config({}, None)


def test_evaluate_mistakes_are_one_line_and_exit_2(tmp_path, capsys):
    cases = {
        (str(tmp_path),): "the run dir holds no last.pt",
        (str(tmp_path), "--batch-size", "0"): "argument --batch-size: must be an integer >= 1, got '0'",
        (str(tmp_path), "--device", "tpu"): "argument --device: invalid choice: 'tpu'",
        (str(tmp_path / "run"), "--ema", "--device", "cpu"): "holds no EMA weights (the run trained with ema=false)",
    }
    (tmp_path / "run").mkdir()
    torch.save(training_checkpoint("resnet8"), tmp_path / "run" / "last.pt")
    for argv, words in cases.items():
        with pytest.raises(SystemExit) as info:
            sys.exit(evaluate_cli.main(list(argv)))
        assert info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and words in err[0], (argv, err)
    out = run_python("-m", "zoo.train.evaluate", str(tmp_path / "nope"), timeout=300)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [f"error: {str(tmp_path / 'nope')!r}: no such run dir or checkpoint file"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, cifar10_archive, cifar10_cache) -> Path:
    """resnet8 trained 1 epoch on 256 images (4 steps), tested on 100: seconds on a CPU."""
    run_dir = tmp_path_factory.mktemp("tiny_run")
    loop.train(
        compose_train(*tiny(cifar10_archive, cifar10_cache, "epochs=1", "drop_path_rate=0.2", amp=None)), run_dir
    )
    return run_dir


def eval_line(capsys, *argv: str) -> dict[str, str]:
    assert evaluate_cli.main(list(argv)) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert line.startswith("eval: ")
    return dict(item.split("=", 1) for item in line.split()[1:])


@pytest.mark.slow
def test_evaluate_reproduces_the_runs_final_test_accuracy(tiny_run, capsys):
    (row,) = rows(tiny_run)
    got = eval_line(capsys, str(tiny_run), "--test-subset", "100", "--device", "cpu")
    assert got["model"] == "resnet8" and got["images"] == "100" and got["device"] == "cpu"
    assert int(got["correct"]) / 100 == row["test_acc"] and got["test_acc"] == f"{row['test_acc']:.4f}"
    assert float(got["test_loss"]) == pytest.approx(row["test_loss"], abs=5e-5)
    # the checkpoint file, in batches of 7: the same images, the same answers
    again = eval_line(capsys, str(tiny_run / "last.pt"), "--test-subset", "100", "--batch-size", "7", "--device", "cpu")
    assert again["correct"] == got["correct"]
    assert float(again["test_loss"]) == pytest.approx(row["test_loss"], abs=5e-4)


@pytest.mark.slow
def test_a_trained_run_loads_back_as_the_model_it_saved(tiny_run):
    model, config = zoo.load_run(tiny_run)
    saved = torch.load(tiny_run / "last.pt", map_location="cpu", weights_only=True)
    assert same_weights(model, saved["model"]) and not model.training
    assert config["model"]["name"] == "resnet8" and config["drop_path_rate"] == 0.2
    assert model.drop_path_rates() == pytest.approx([0.0, 0.1, 0.2])
    # the create_model arguments the run built its model with, as the trainer composed them (model=resnet8
    # adds no key of its own: the registry's defaults build it)
    assert saved["model_args"] == {
        "num_classes": 10,
        "drop_path_rate": 0.2,
        "drop_path_schedule": "linear",
        "drop_path_mode": "mask",
        "drop_path_skip_draw": "auto",
    }
    again = zoo.create_model("resnet8", checkpoint_path=tiny_run).eval()
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(model(x), again(x))


def test_a_feature_extractor_loads_a_classifier_checkpoint(tmp_path):
    """features_only takes a classifier's weights, its head (and the stages after out_indices) ignored,
    as timm does; weights of another model are still refused with the keys named."""
    classifier = zoo.create_model("resnet8", num_classes=10).eval()
    torch.save(classifier.state_dict(), tmp_path / "resnet8.pt")
    x = torch.randn(2, 3, 32, 32)
    features = zoo.create_model("resnet8", features_only=True, checkpoint_path=tmp_path / "resnet8.pt").eval()
    first = zoo.create_model(
        "resnet8", features_only=True, out_indices=(0,), checkpoint_path=tmp_path / "resnet8.pt"
    ).eval()
    with torch.no_grad():
        expected = classifier.forward_intermediates(x, intermediates_only=True)
        assert all(torch.equal(a, b) for a, b in zip(features(x), expected, strict=True))
        assert torch.equal(first(x)[0], expected[0])
    with pytest.raises(zoo.LoadError, match=r"does not fit model resnet20: \d+ missing keys \(stages\.0\.1\."):
        zoo.create_model("resnet20", features_only=True, checkpoint_path=tmp_path / "resnet8.pt")
    torch.save(features.state_dict(), tmp_path / "features.pt")  # the other way round: the head is missing
    with pytest.raises(zoo.LoadError, match=r"does not fit model resnet8: 2 missing keys \(head\.weight, head\.bias\)"):
        zoo.create_model("resnet8", checkpoint_path=tmp_path / "features.pt")
