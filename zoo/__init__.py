"""zoo: residual and MetaFormer blocks with stochastic depth, and the CIFAR-10 evidence of what it buys."""

from . import layers
from ._registry import create_model, is_model, list_models, register_model
from ._weights import LoadError
from . import models  # registers every model  # noqa: E402
from ._run import load_run  # noqa: E402
from ._timm import register_timm  # noqa: E402
from .models._base import set_drop_path_rate  # noqa: E402
from .models._cfg import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD  # noqa: E402
from .knockout import removable_blocks, remove_blocks  # noqa: E402

__version__ = "0.1.0"
