"""The model registry."""

import pytest

import zoo
from zoo import _registry


def test_list_and_is_model():
    names = zoo.list_models()
    assert names == sorted(names)
    assert {"resnet20", "resnet56", "resnet110", "resnet1202", "metaformer"} <= set(names)
    assert zoo.list_models("resnet1*") == ["resnet110", "resnet1202", "resnet164"]
    formers = zoo.list_models("*former*")
    assert formers and all("former" in n for n in formers)
    assert zoo.list_models("nothing*") == []
    assert zoo.is_model("resnet20") and not zoo.is_model("resnet21")


def test_unknown_model_lists_close_matches():
    with pytest.raises(ValueError) as err:
        zoo.create_model("resnet5")
    msg = str(err.value)
    assert "'resnet5'" in msg and "resnet56" in msg


def test_duplicate_name_raises_and_keeps_the_first():
    before = _registry._models["resnet20"]
    with pytest.raises(ValueError, match="already registered"):

        @zoo.register_model(name="resnet20")
        def other(**kwargs):
            raise AssertionError

    assert _registry._models["resnet20"] is before


def test_register_and_create_with_kwargs(monkeypatch):
    monkeypatch.setattr(_registry, "_models", dict(_registry._models))

    @zoo.register_model
    def tiny_test_model(num_classes=10, drop_path_rate=0.0):
        return zoo.create_model("resnet8", num_classes=num_classes, drop_path_rate=drop_path_rate)

    assert zoo.is_model("tiny_test_model")
    m = zoo.create_model("tiny_test_model", num_classes=4, drop_path_rate=0.2)
    assert m.num_classes == 4 and max(m.drop_path_rates()) == pytest.approx(0.2)
