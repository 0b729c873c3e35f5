"""Every config file composes with Hydra's compose API, passes validation and builds its model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import zoo
from conftest import compose_train
from zoo.train.config import build_model, validate_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MODEL_FILES = sorted(p.stem for p in (CONFIGS / "model").glob("*.yaml"))
EXPERIMENT_FILES = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))
CONTRACT_KEYS = (
    "drop_path_rate", "drop_path_schedule", "drop_path_mode", "drop_path_time_schedule", "drop_path_time_cutoff",
    "drop_path_time_early_mode", "epochs", "batch_size", "lr", "weight_decay", "label_smoothing", "seed", "device",
    "amp", "channels_last", "compile", "resume",
)


def test_defaults_follow_the_contract(monkeypatch):
    monkeypatch.delenv("ZOO_CIFAR10", raising=False)
    cfg = compose_train()
    assert cfg.model.name == "metaformer" and cfg.data.name == "cifar10"
    assert cfg.optim.name == "adamw" and cfg.sched.name == "cosine"
    assert cfg.drop_path_rate == 0.1 and cfg.device == "auto" and cfg.resume is None
    assert all(k in cfg for k in CONTRACT_KEYS)
    validate_config(cfg)


def test_data_path_comes_from_zoo_cifar10(monkeypatch, tmp_path):
    monkeypatch.setenv("ZOO_CIFAR10", str(tmp_path))
    assert compose_train("data=cifar10_folder").data.path == str(tmp_path)
    monkeypatch.delenv("ZOO_CIFAR10")
    assert compose_train("data=cifar10_folder").data.path is None


@pytest.mark.parametrize("name", MODEL_FILES)
def test_model_config_builds_its_model(name):
    cfg = compose_train(f"model={name}", "data=cifar10_folder")
    validate_config(cfg)
    if name in ("resnet1202", "resnet164"):  # deep: building is enough
        assert isinstance(build_model(cfg), zoo.models.ZooModel)
        return
    model = build_model(cfg).eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert max(model.drop_path_rates()) == pytest.approx(0.1)  # drop_path_rate reached the blocks


def test_every_registered_model_is_selectable_as_model_equals_its_name():
    """``model=<name>`` works for every name zoo.list_models() gives (configs/model/<name>.yaml)."""
    for name in zoo.list_models():
        path = CONFIGS / "model" / f"{name}.yaml"
        assert path.is_file(), f"no configs/model/{name}.yaml"
        assert OmegaConf.load(path).name == name


def test_every_registered_family_has_a_model_config():
    named = {OmegaConf.load(CONFIGS / "model" / f"{f}.yaml").name for f in MODEL_FILES}
    families = {n.split("_")[0] for n in zoo.list_models()}
    missing = [f for f in families if not any(n == f or n.startswith(f + "_") for n in named)]
    assert not missing, f"no configs/model/*.yaml for {missing}"


@pytest.mark.parametrize("name", EXPERIMENT_FILES)
def test_experiment_composes_and_builds(name, tmp_path):
    cfg = compose_train(f"experiment={name}", "data=cifar10_folder", f"hydra.run.dir={tmp_path}")
    validate_config(cfg)
    assert isinstance(build_model(cfg), zoo.models.ZooModel)


def test_experiment_values_win_over_train_yaml():
    cfg = compose_train("experiment=cpu_smoke")
    assert cfg.epochs == 1 and cfg.model.name == "resnet8" and cfg.data.subset == 2000


def test_group_options_compose():
    cfg = compose_train("optim=adamw", "sched=step", "data=cifar10_folder")
    assert cfg.optim.name == "adamw" and list(cfg.sched.milestones) == [0.5, 0.75]
    validate_config(cfg)


def test_help_lists_the_keys_and_what_they_mean():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(CONFIGS.parent / "train.py"), "--help"], capture_output=True, text=True,
                         timeout=120, cwd=CONFIGS.parent)
    assert out.returncode == 0, out.stderr
    for text in ("drop_path_schedule        over depth: linear", "drop_path_mode            mask", "early (the rate until",
                 "model: caformer, caformer_s12", "compile                   false | true"):
        assert text in out.stdout, text
    assert "Powered by Hydra" not in out.stdout
