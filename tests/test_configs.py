"""Every config file and every model= choice composes through the schema, passes validation and builds its model."""

from __future__ import annotations

import pytest
import torch

import zoo
from conftest import CONFIGS, compose_train
from zoo.train.config.schema import build_model, validate_config
from zoo.train.errors import ConfigError

EXPERIMENT_FILES = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))
CONTRACT_KEYS = (
    "drop_path_rate",
    "drop_path_schedule",
    "drop_path_mode",
    "drop_path_time_schedule",
    "drop_path_time_cutoff",
    "drop_path_time_early_mode",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "label_smoothing",
    "seed",
    "device",
    "amp",
    "channels_last",
    "compile",
    "resume",
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


@pytest.mark.parametrize("name", zoo.list_models())
def test_every_model_choice_builds_its_model(name):
    cfg = validate_config(compose_train(f"model={name}", "data=cifar10_folder"))
    if name in ("resnet1202", "resnet164"):  # deep: building is enough
        assert isinstance(build_model(cfg), zoo.models.ZooModel)
        return
    model = build_model(cfg).eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert max(model.drop_path_rates()) == pytest.approx(0.1)  # drop_path_rate reached the blocks


def test_the_model_group_is_the_registry():
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        assert GlobalHydra.instance().config_loader().get_group_options("model") == zoo.list_models()


def test_any_create_model_argument_is_a_model_key():
    model = build_model(
        validate_config(compose_train("model=metaformer", "model.stem_stride=2", "model.dims=[8,16,24,32]"))
    )
    assert model.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 32, 2, 2)  # 32 / (2 * 2**3)
    with pytest.raises(
        ConfigError,
        match=r"unknown key 'model.stem_strid'; did you mean model.stem_stride\? "
        r"\(metaformer's keys: depths, dims",
    ):
        validate_config(compose_train("model=metaformer", "model.stem_strid=2"))
    with pytest.raises(ConfigError, match=r"unknown key 'model.stem_stride' \(resnet8's keys: depths, widths"):
        validate_config(compose_train("model=resnet8", "model.stem_stride=2"))


def test_data_path_without_a_folder_source_says_to_add_it():
    with pytest.raises(
        ConfigError, match="data.path=/x is read from a folder data source only: add data=cifar10_folder"
    ):
        validate_config(compose_train("data.path=/x"))


@pytest.mark.parametrize("name", EXPERIMENT_FILES)
def test_experiment_composes_and_builds(name, tmp_path):
    cfg = validate_config(compose_train(f"experiment={name}", "data=cifar10_folder", f"hydra.run.dir={tmp_path}"))
    assert isinstance(build_model(cfg), zoo.models.ZooModel)


def test_experiment_values_win_over_train_yaml():
    cfg = compose_train("experiment=cpu_smoke")
    assert cfg.epochs == 1 and cfg.model.name == "resnet8" and cfg.data.subset == 2000


def test_group_options_compose():
    cfg = compose_train("optim=adamw", "sched=step", "data=cifar10_folder")
    assert cfg.optim.name == "adamw" and list(cfg.sched.milestones) == [0.5, 0.75]
    validate_config(cfg)


def test_a_key_of_another_choice_is_refused_and_accepted_with_that_choice():
    with pytest.raises(ConfigError, match=r"unknown key 'optim.momentum' \(optim's keys: name, betas, eps\)"):
        validate_config(compose_train("optim.momentum=0.5"))
    validate_config(compose_train("optim=sgd", "optim.momentum=0.5"))  # the same key in another choice is fine


def test_help_lists_the_keys_and_what_they_mean():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, str(CONFIGS.parent / "train.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=CONFIGS.parent,
    )
    assert out.returncode == 0, out.stderr
    for text in (
        "drop_path_schedule        over depth: linear",
        "drop_path_mode            mask",
        "early (the rate until",
        "model: caformer_s12, caformer_s18",
        "compile                   false | true",
    ):
        assert text in out.stdout, text
    assert "Powered by Hydra" not in out.stdout


def test_the_keys_that_change_nothing_computed_are_declared_once():
    """ENVIRONMENT_KEYS are keys of the schema (the job-dir names, the resume check and the report use them)."""
    from omegaconf import OmegaConf

    from zoo.train.config.overrides import ENVIRONMENT_KEYS, flatten

    keys = flatten(OmegaConf.to_container(validate_config(compose_train("data=cifar10_folder"))))
    assert [k for k in ENVIRONMENT_KEYS if k not in keys] == []
