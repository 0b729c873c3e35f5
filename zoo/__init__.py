"""zoo: residual and MetaFormer blocks with stochastic depth, and the CIFAR-10 evidence of what it buys."""

from . import layers, models  # importing models registers every model
from ._registry import create_model, is_model, list_models, register_model
from ._run import load_run
from ._weights import LoadError
from .knockout import removable_blocks, remove_blocks
from .models._base import set_drop_path_rate
from .models._cfg import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD

__version__ = "0.1.0"


def register_timm() -> list[str]:
    """Register every zoo model in timm's registry as ``zoo_<name>``; returns those names, sorted
    (:func:`zoo._timm.register_timm`). Imported when called, so that ``python -m zoo._timm`` does not find
    its own module already loaded (runpy warns then)."""
    from ._timm import register_timm as register

    return register()


__all__ = [
    "layers",
    "create_model",
    "is_model",
    "list_models",
    "register_model",
    "LoadError",
    "models",
    "load_run",
    "register_timm",
    "set_drop_path_rate",
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "removable_blocks",
    "remove_blocks",
    "__version__",
]
