"""The timm bridge (``zoo.register_timm``), the input every model declares (``pretrained_cfg``), rates set
on a built model (``set_drop_path_rate``), and timm's ``drop_rate`` / ``global_pool`` / a list of
per-block rates on ``create_model``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import zoo
from conftest import REPO, check_cli, run_python, training_checkpoint
from zoo.layers import DropPath, drop_path_blocks, drop_path_rates

pytest.importorskip("timm")
import timm  # noqa: E402
import timm.data  # noqa: E402

# one tiny model per family: both ResNet blocks and every MetaFormer mixer family
FAMILIES = [
    "resnet8",
    "resnet164",
    *(f"{f}_tiny" for f in ("identityformer", "randformer", "poolformer", "convformer", "caformer")),
]


def flat(rates: list[list[float]]) -> list[float]:
    return [r for stage in rates for r in stage]


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_trains_through_timm_with_zoos_schedule(name):
    assert f"zoo_{name}" in zoo.register_timm()
    # the arguments timm's train.py passes (None ones are dropped by timm's create_model)
    model = timm.create_model(
        f"zoo_{name}",
        pretrained=False,
        num_classes=7,
        in_chans=3,
        drop_rate=0.1,
        drop_path_rate=0.2,
        drop_path_schedule="paper",
        drop_block_rate=None,
        global_pool=None,
        bn_momentum=None,
        scriptable=False,
        checkpoint_path="",
    )
    assert type(model).__name__ in ("ResNetCifar", "MetaFormer") and model.num_classes == 7
    assert model.drop_path_rates() == pytest.approx(flat(drop_path_rates(0.2, model.depths, "paper")))
    assert model.drop_path_rates()[-1] == pytest.approx(0.2)
    model.train()
    x = torch.randn(2, 3, 32, 32)
    logits = model(x)
    assert logits.shape == (2, 7)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.head.parameters())


def test_register_timm_is_idempotent_and_timm_knows_the_input():
    names = zoo.register_timm()
    assert names == zoo.register_timm() == [f"zoo_{n}" for n in zoo.list_models()]
    assert set(timm.list_models("zoo_*")) == set(names)
    cfg = timm.models.get_pretrained_cfg("zoo_convformer_s12")
    assert cfg.input_size == (3, 32, 32) and cfg.mean == zoo.CIFAR10_MEAN and cfg.first_conv == "stem.conv"
    assert not timm.list_models("zoo_*", pretrained=True)  # no weights: nothing to download
    with pytest.raises(ValueError, match="pretrained weights"):
        timm.create_model("zoo_resnet8", pretrained=True)


def test_timm_data_preprocesses_as_the_trainer_does(tmp_path):
    from PIL import Image

    from zoo.train.data.cifar10 import MEAN, STD

    model = zoo.create_model("resnet8")
    modules = dict(model.named_modules())
    cfg = model.pretrained_cfg
    assert model.default_cfg is cfg and isinstance(modules[cfg["first_conv"]], torch.nn.Conv2d)
    assert modules[cfg["classifier"]] is model.get_classifier() and cfg["num_classes"] == 10
    assert cfg["label_names"] == zoo.CIFAR10_CLASSES
    data_cfg = timm.data.resolve_data_config(model=model)
    assert data_cfg["input_size"] == (3, 32, 32) and data_cfg["mean"] == MEAN and data_cfg["std"] == STD
    transform = timm.data.create_transform(**data_cfg)
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    expected = (torch.from_numpy(pixels).permute(2, 0, 1) / 255 - torch.tensor(MEAN)[:, None, None]) / torch.tensor(
        STD
    )[:, None, None]
    assert torch.allclose(transform(Image.fromarray(pixels)), expected, atol=1e-5)  # a CIFAR image passes unchanged
    assert transform(Image.fromarray(np.zeros((48, 80, 3), np.uint8))).shape == (3, 32, 32)  # a photo is resized
    meta = zoo.create_model("caformer_tiny", img_size=64, in_chans=1, num_classes=5).pretrained_cfg
    assert meta["input_size"] == (1, 64, 64) and meta["label_names"] is None


def test_the_readme_classifies_an_image_with_a_trained_run(tmp_path, capsys):
    from PIL import Image

    readme = (REPO / "README.md").read_text()
    code = next(
        block
        for block in readme.split("```python\n")[1:]
        if "resolve_data_config(model=model)" in block and "load_run" in block
    ).split("```")[0]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    torch.save(training_checkpoint("resnet8"), run_dir / "last.pt")
    Image.fromarray(np.full((40, 60, 3), 128, np.uint8)).save(tmp_path / "photo.jpg")
    code = code.replace("outputs/2026-11-30/10-00-00_resnet20", str(run_dir)).replace(
        "my_photo.jpg", str(tmp_path / "photo.jpg")
    )
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    probs, names = scope["probs"].detach(), scope["model"].pretrained_cfg["label_names"]
    assert probs.shape == (10,) and float(probs.sum()) == pytest.approx(1) and len(names) == 10
    assert capsys.readouterr().out == f"{names[probs.argmax()]} {probs.max():.0%}\n"


# --- set_drop_path_rate ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet8", "convformer_tiny"])
def test_set_drop_path_rate_makes_the_model_built_with_that_rate(name):
    built = zoo.create_model(name, drop_path_rate=0.3, drop_path_mode="auto")
    changed = zoo.create_model(name, drop_path_rate=0.0, drop_path_mode="auto")
    changed.load_state_dict(built.state_dict())
    assert all(b.drop_path is None for b in drop_path_blocks(changed))
    zoo.set_drop_path_rate(changed, 0.3)
    assert isinstance(drop_path_blocks(changed)[-1].drop_path, DropPath)
    assert changed.drop_path_rates() == pytest.approx(built.drop_path_rates())
    for a, b in zip(drop_path_blocks(built), drop_path_blocks(changed)):
        assert type(a.drop_path) is type(b.drop_path) and a.skip == b.skip  # "auto" decides again at the new rate
        assert getattr(a, "mixer_skip", None) == getattr(b, "mixer_skip", None)
    x = torch.randn(8, 3, 32, 32)
    outs = []
    for model in (built, changed):
        torch.manual_seed(0)
        outs.append(model.train()(x))
    assert torch.equal(outs[0], outs[1])  # the same draws: the same drop paths
    zoo.set_drop_path_rate(changed, 0.0)
    assert all(b.drop_path is None for b in drop_path_blocks(changed))


def test_assigning_drop_path_rate_works_and_keeps_the_factor_and_the_schedule():
    model = zoo.create_model("resnet20", drop_path_rate=0.1, drop_path_schedule="paper")
    assert model.drop_path_rate == pytest.approx(0.1)
    model.set_drop_path_factor(0.5)
    model.drop_path_rate = 0.4
    assert model.drop_path_rate == pytest.approx(0.4) and model.drop_path_factor == 0.5
    assert model.drop_path_rates() == pytest.approx([0.5 * r for r in drop_path_rates(0.4, 9, "paper")])
    zoo.set_drop_path_rate(model, 0.2, schedule="uniform")
    assert model.drop_path_schedule == "uniform" and model.drop_path_rates() == pytest.approx([0.1] * 9)
    rebuilt = zoo.create_model(model.model_name, **model.model_args)  # what a checkpoint rebuilds
    assert rebuilt.drop_path_rates() == pytest.approx([0.2] * 9)
    with pytest.raises(ValueError, match=r"drop_path_rate must be in \[0, 1\], got 2"):
        model.drop_path_rate = 2
    with pytest.raises(ValueError, match="drop_path_schedule must be one of"):
        zoo.set_drop_path_rate(model, 0.2, schedule="cosine")


def test_set_drop_path_rate_takes_one_rate_per_block():
    model = zoo.create_model("resnet8", drop_path_rate=0.1)
    zoo.set_drop_path_rate(model, [0.3, 0.0, 0.2])
    assert model.drop_path_rates() == pytest.approx([0.3, 0.0, 0.2]) and model.drop_path_schedule is None
    assert zoo.create_model("resnet8", **model.model_args).drop_path_rates() == pytest.approx([0.3, 0.0, 0.2])
    with pytest.raises(ValueError, match="has 2 entries but the model has 3 blocks"):
        zoo.set_drop_path_rate(model, [0.1, 0.2])
    with pytest.raises(ValueError, match="pass schedule="):
        zoo.set_drop_path_rate(model, 0.1)  # built from a list: no schedule to spread a rate with


# --- drop_path_rates, drop_rate and global_pool on create_model --------------------------------


def test_create_model_takes_one_rate_per_block_and_names_both_lengths():
    model = zoo.create_model("caformer_tiny", drop_path_rates=[0.0, 0.1, 0.0, 0.3])
    assert model.drop_path_rates() == pytest.approx([0.0, 0.1, 0.0, 0.3])
    with pytest.raises(
        ValueError, match=r"drop_path_rates has 5 entries but the model has 9 blocks \(depths \(3, 3, 3\)\)"
    ):
        zoo.create_model("resnet20", drop_path_rates=[0.1] * 5)
    with pytest.raises(ValueError, match=r"drop_path_rates\[1\] must be in \[0, 1\], got 1.5"):
        zoo.create_model("resnet8", drop_path_rates=[0.1, 1.5, 0.0])
    with pytest.raises(ValueError, match="not both"):
        zoo.create_model("resnet8", drop_path_rate=0.1, drop_path_rates=[0.1] * 3)


@pytest.mark.parametrize("name", ["resnet8", "poolformer_tiny"])
def test_drop_rate_is_a_dropout_before_the_classifier(name):
    torch.manual_seed(0)
    plain = zoo.create_model(name)
    dropped = zoo.create_model(name, drop_rate=0.5)
    dropped.load_state_dict(plain.state_dict())
    feats = torch.randn(16, plain.num_features, 4, 4)  # a last-stage map: no pooled feature is 0
    assert torch.equal(dropped.eval().forward_head(feats), plain.eval().forward_head(feats))  # eval: none
    pre = dropped.train().forward_head(feats, pre_logits=True)
    kept = pre != 0
    assert 0.3 < kept.float().mean() < 0.7  # about half the features zeroed, the rest scaled by 2
    assert torch.allclose(pre[kept], 2 * plain.forward_head(feats, pre_logits=True)[kept])
    with pytest.raises(ValueError, match=r"drop_rate must be in \[0, 1\], got 1.5"):
        zoo.create_model(name, drop_rate=1.5)


def test_global_pool_chooses_the_heads_pooling():
    torch.manual_seed(0)
    model = zoo.create_model("resnet8", global_pool="max")
    feats = model.forward_features(torch.randn(2, 3, 32, 32))
    assert torch.equal(model.forward_head(feats, pre_logits=True), feats.amax((2, 3)))
    model.reset_classifier(4, global_pool="avgmax")
    assert model.global_pool == "avgmax" and model(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    assert torch.allclose(model.forward_head(feats, pre_logits=True), (feats.mean((2, 3)) + feats.amax((2, 3))) / 2)
    with pytest.raises(ValueError, match="global_pool must be one of avg, fast, max, avgmax, got 'sum'"):
        zoo.create_model("resnet8", global_pool="sum")


# --- the trainer's keys ------------------------------------------------------------------------


def test_the_trainer_takes_a_rate_list_and_refuses_a_wrong_length_before_any_run_dir(tmp_path):
    from conftest import compose_train
    from zoo.train.config.schema import build_model, validate_config
    from zoo.train.loop import run as loop

    cfg = validate_config(
        compose_train("model=resnet8", "drop_path_rates=[0,0.1,0.3]", "model.drop_rate=0.2", "model.global_pool=max")
    )
    model = build_model(cfg)
    assert model.drop_path_rates() == pytest.approx([0.0, 0.1, 0.3]) and model.global_pool == "max"
    assert "drop_path_rate" not in model.model_args and model.head_drop.p == 0.2
    assert loop.drop_path_summary(cfg) == {"drop_path_rates": [0.0, 0.1, 0.3]}  # what summary.json records
    assert loop.drop_path_summary(validate_config(compose_train("model=resnet8"))) == {
        "drop_path_rate": 0.1,
        "drop_path_schedule": "linear",
    }
    run_dir = tmp_path / "run"
    line = check_cli("model=resnet20", "drop_path_rates=[0,0.1]", f"hydra.run.dir={run_dir}")
    assert line == (
        "error: model resnet20 cannot be built from the config: drop_path_rates has 2 entries but "
        "the model has 9 blocks (depths (3, 3, 3)): give one rate per block"
    )
    assert check_cli("model=resnet8", "model.global_pool=sum").startswith("error: model.global_pool must be one of")
    assert check_cli("model=resnet8", "model.drop_rate=2").startswith("error: model.drop_rate must be in [0, 1]")
    assert check_cli("drop_path_rates=[0,2]").startswith("error: drop_path_rates[1] must be in [0, 1]")
    assert not run_dir.exists()


def test_zoo_runs_timms_scripts_with_its_models_registered(tmp_path):
    script = tmp_path / "script.py"  # as timm's train.py: a script that knows timm alone
    script.write_text(
        "import sys, timm\nm = timm.create_model(sys.argv[1], drop_path_rate=0.1)\n"
        "print(type(m).__name__, m.drop_path_rates()[-1])\n"
    )
    out = run_python("-m", "zoo._timm", str(script), "zoo_resnet8", cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["ResNetCifar", "0.1"]
    assert "RuntimeWarning" not in out.stderr  # runpy's, when the module ran was imported before
