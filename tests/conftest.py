"""Shared fixtures and helpers: the repository root, the real CIFAR-10 archive and a decoded copy of
it, the composed config, the tiny run's overrides, metrics readers, Python and ``train.py`` as
subprocesses, a made-up image tree, a run cut by a simulated signal then resumed, the tiny models and
their inputs, scripts loaded as modules, blocked imports, and the weights-equal check.

The archive is found through the environment variable ZOO_CIFAR10, else at
``<repo>/../shared/data/cifar10-jpeg.tar.gz``; tests that need it skip, saying so, when it is absent.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
TIMING = ("epoch_seconds", "images_per_second")  # metrics columns that differ run to run
TRAINER_ONLY = ("hydra", "omegaconf", "tqdm", "matplotlib", "torchvision")  # the trainer's, not the library's
if str(REPO) not in sys.path:  # lets tests import train.py
    sys.path.insert(0, str(REPO))

# Bad config values and the start of the one-line error each gets (with model=resnet8).
BAD_VALUES = [
    ("drop_path_rate=1.5", "drop_path_rate must be in [0, 1], got 1.5"),
    ("drop_path_rate=-0.1", "drop_path_rate must be in [0, 1], got -0.1"),
    ("drop_path_rate=abc", "drop_path_rate must be a number, got 'abc'"),
    ("drop_path_rate=nan", "drop_path_rate must be a finite number, got nan"),
    ("drop_path_schedule=cosine", "drop_path_schedule must be one of linear, paper, uniform, stagewise, got 'cosine'"),
    ("drop_path_mode=fast", "drop_path_mode must be one of mask, skip, auto, got 'fast'"),
    ("drop_path_time_schedule=warm", "drop_path_time_schedule must be one of constant, early, late, ramp, got 'warm'"),
    ("drop_path_time_early_mode=cubic", "drop_path_time_early_mode must be one of constant, linear, got 'cubic'"),
    ("drop_path_time_cutoff=-1", "drop_path_time_cutoff must be >= 0 epochs, got -1"),
    ("model.name=resnt20", "model.name: unknown model 'resnt20'; did you mean resnet20"),
    ("epochs=0", "epochs must be an integer >= 1, got 0"),
    ("epochs=abc", "epochs must be an integer, got 'abc'"),
    ("batch_size=0", "batch_size must be an integer >= 1, got 0"),
    ("test_every=-1", "test_every must be an integer >= 0, got -1"),
    ("batch_size=1.5", "batch_size must be an integer, got 1.5"),
    ("lr=0", "lr must be > 0, got 0"),
    ("lr=-0.1", "lr must be > 0, got -0.1"),
    ("lr=inf", "lr must be a finite number, got inf"),
    ("weight_decay=-1", "weight_decay must be >= 0, got -1"),
    ("label_smoothing=1", "label_smoothing must be in [0, 1), got 1.0"),
    ("seed=-1", "seed must be an integer >= 0, got -1"),
    ("device=gpu", "device must be one of auto, cpu, cuda, got 'gpu'"),
    ("data.subset=-5", "data.subset must be an integer >= 0, got -5"),
    ("drop_path_skip_draw=exact", "drop_path_skip_draw must be one of auto, bernoulli, fixed, got 'exact'"),
    ("lr=abc", "lr must be a number, got 'abc'"),
    ("optim.name=lamb", "optim.name must be one of sgd, adamw, got 'lamb'"),
    (
        "data.augment=maybe",
        "data.augment must be one of crop_flip, autoaugment, randaugment, trivialaugment, none, got 'maybe'",
    ),
    (
        "data.augment=null",
        "data.augment must be one of crop_flip, autoaugment, randaugment, trivialaugment, none, got None",
    ),
    ("mixup_alpha=-1", "mixup_alpha must be >= 0, got -1"),
    ("ema_decay=1", "ema_decay must be in (0, 1), got 1.0"),
    ("ema=sometimes", "ema must be one of True, False, got 'sometimes'"),
]


def find_cifar10_archive() -> Path | None:
    env = os.environ.get("ZOO_CIFAR10")
    path = Path(env) if env else REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
    # absolute: subprocess tests run train.py from a temporary directory
    return path.resolve() if path.exists() else None


@pytest.fixture(autouse=True)
def _torch_flags_as_found():
    """Every test starts with the process-wide kernel flags the one before it found (a run with
    deterministic=true sets them; a CUDA test under them would take other kernels, and syncs)."""
    from zoo.train.loop.precision import restored_torch_flags

    with restored_torch_flags():
        yield


@pytest.fixture
def exact_fp32():
    """No TF32 in this test (cuDNN uses it by default for float32 convolutions on CUDA, and may pick
    other kernels for two batch sizes: results then differ by ~1e-3, not 1e-5). No-op on a CPU."""
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")  # restored after the test by _torch_flags_as_found
    yield


NO_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, NO_CUDA])]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    """Runs a test on the CPU, and again on CUDA where a GPU is present (skipped, saying so, elsewhere;
    ``pytest -m cuda`` runs the CUDA cases alone)."""
    return request.param


@pytest.fixture
def fresh_dynamo():
    """For tests that compile: Dynamo's caches are empty before the test and emptied after it, whether
    it passed or not, so no compiled graph or recompile count carries over to the next test."""
    import torch._dynamo

    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def cifar10_archive() -> Path:
    """The real CIFAR-10 (image folders, or a .tar.gz of them)."""
    path = find_cifar10_archive()
    if path is None:
        pytest.skip("CIFAR-10 archive not found: set ZOO_CIFAR10 or place it at ../shared/data/cifar10-jpeg.tar.gz")
    return path


@pytest.fixture(scope="session")
def cifar10_cache(cifar10_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache dir holding the decoded archive (decoded once per session; ZOO_TEST_CACHE_DIR reuses one across sessions)."""
    from zoo.train.data.cifar10 import load_image_folder

    cache = Path(os.environ.get("ZOO_TEST_CACHE_DIR") or tmp_path_factory.mktemp("zoo-cache"))
    load_image_folder(cifar10_archive, cache)
    return cache


def compose_train(*overrides: str, hydra: bool = False):
    """configs/train.yaml composed with ``overrides`` through the schema, as train.py composes it (and
    Hydra's own config with ``hydra=True``); a wrong type or an unknown key raises ConfigError."""
    from zoo.train.config.schema import compose_config

    return compose_config(CONFIGS, list(overrides), hydra=hydra)


def check_cli(*args: str) -> str:
    """train.py's checks of its command line, in process: the one stderr line they print before Hydra
    starts, and exit 2 (a refused run); "" when they let the command line through."""
    import contextlib
    import io

    from zoo.train.cli import check_argv

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            check_argv(["train.py", *args], CONFIGS)
        except SystemExit as e:
            assert e.code == 2, e.code
            lines = err.getvalue().strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), err.getvalue()
            return lines[0]
    return ""


def tiny(archive: Path, cache: Path, *extra: str, device: str = "cpu", amp: str | None = "false") -> tuple[str, ...]:
    """resnet8 on 256 images, 4 steps per epoch, 2 epochs, fp32 on the CPU: seconds in process.
    ``amp=None`` leaves the precision to the device (``auto``)."""
    return (
        "model=resnet8",
        "data=cifar10_folder",
        f"data.path={archive}",
        f"data.cache_dir={cache}",
        "data.subset=256",
        "data.test_subset=100",
        "epochs=2",
        "batch_size=64",
        "sched.warmup_epochs=0",
        f"device={device}",
        *([f"amp={amp}"] if amp is not None else []),
        *extra,
    )


def rows(run_dir: Path) -> list[dict]:
    """metrics.jsonl, one dict per finished epoch."""
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def metrics(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the timing columns: what two runs of the same arithmetic share exactly."""
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows(run_dir)]


def run_python(
    *args: str, cwd: Path = REPO, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """``python args`` in ``cwd`` with this checkout on PYTHONPATH and ``env`` added; output captured as text."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_cli(
    *args: str,
    cwd: Path = REPO,
    module: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """``python [module] train.py args`` in ``cwd``, with this checkout's zoo on the path (through run_python)."""
    return run_python(*module, str(REPO / "train.py"), *args, cwd=cwd, env=env, timeout=timeout)


def blocked_imports(packages: tuple[str, ...]) -> str:
    """Python source that, run first in a fresh interpreter, makes any import of ``packages`` raise ImportError."""
    return f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {tuple(packages)!r}:
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
"""


def load_script(path: Path, name: str) -> ModuleType:
    """The script at ``path`` imported as module ``name``, put in sys.modules first (dataclasses look it up)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def make_tree(root: Path, classes: tuple[str, ...] | list[str] | None = None, train: int = 2, test: int = 2) -> Path:
    """A CIFAR-like image-folder tree at ``root`` (``train`` and ``test`` images per class); pixel
    (0, 0) encodes (class, index) so order can be checked; a README beside the splits is ignored."""
    from PIL import Image

    from zoo.train.data.cifar10 import CLASSES

    for split, n in (("train", train), ("test", test)):
        for c, cls in enumerate(CLASSES if classes is None else classes):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((32, 32, 3), 10 * c + i, np.uint8)).save(root / split / cls / f"{i:04d}.png")
    (root / "README.md").write_text("not an image, outside the class folders: ignored")
    return root


def stop_after(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """Makes the loop act as if SIGTERM arrived at its ``n``-th look at its stop flag (with 4 steps an
    epoch, the 6th is epoch 2 after its first step). The count lives on the instance, so nothing is
    left behind for the next test."""
    from zoo.train.loop import run as loop

    class StopAfter(loop.StopOnSignal):
        def __init__(self) -> None:
            super().__init__()
            self.reads = 0

        @property
        def requested(self) -> bool:
            self.reads += 1
            if self.reads >= n:
                self.signum = 15
            return self.signum is not None

    monkeypatch.setattr(loop, "StopOnSignal", StopAfter)


def train_cut_and_resumed(
    monkeypatch: pytest.MonkeyPatch,
    overrides: tuple[str, ...],
    run_dir: Path,
    stop_at_read: int = 6,
    between: Callable[[], object] = lambda: None,
) -> BaseException:
    """Trains into ``run_dir`` as if SIGTERM arrived at the loop's ``stop_at_read``-th look at its stop
    flag (the 6th: epoch 2 after its first step, with 4 steps an epoch), calls ``between``, then resumes
    it to the end. Returns the interruption the first part raised."""
    from zoo.train.loop import run as loop

    with monkeypatch.context() as patch:
        stop_after(patch, stop_at_read)
        with pytest.raises(loop.TrainingInterrupted) as info:
            loop.train(compose_train(*overrides), run_dir)
    between()
    resume = f"resume={run_dir}"
    loop.train(compose_train(*overrides, resume), run_dir.parent / f"{run_dir.name}-ignored", overrides=(resume,))
    return info.value


def training_checkpoint(model_name: str = "resnet8", seed: int = 0, **config) -> dict:
    """A training checkpoint as the trainer writes it, with the keys load_run reads (a resnet8 is 78k params)."""
    torch.manual_seed(seed)
    group = {"name": model_name, **config.pop("model", {})}
    import zoo

    net = zoo.create_model(model_name, **{k: v for k, v in group.items() if k != "name"})
    return {
        "model": net.state_dict(),
        "optimizer": {},
        "epoch": 1,
        "step": 0,
        "global_step": 4,
        "history": [],
        "config": {
            "model": group,
            "drop_path_rate": 0.1,
            "drop_path_schedule": "linear",
            "drop_path_mode": "mask",
            "drop_path_skip_draw": "auto",
            **config,
        },
        "model_name": model_name,
    }


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Two state dicts hold the same keys and, under each, equal tensors."""
    assert a.keys() == b.keys(), sorted(a.keys() ^ b.keys())
    for k in a:
        assert torch.equal(a[k], b[k]), k


def tiny_models() -> dict[str, Callable[..., torch.nn.Module]]:
    """A builder per family's tiny model (create_model's drop path keywords), resnet8, and a bottleneck ResNet."""
    import zoo
    from zoo.layers import drop_path_from_kwargs
    from zoo.models import ResNetCifar

    models = {name: (lambda name=name, **kw: zoo.create_model(name, **kw)) for name in zoo.list_models("*_tiny")}
    models["resnet8"] = lambda **kw: zoo.create_model("resnet8", **kw)
    models["bottleneck"] = lambda **kw: ResNetCifar(
        (1, 1, 1), (4, 8, 16), block="bottleneck", **drop_path_from_kwargs(kw)
    )
    return models


TINY = tiny_models()  # one builder per tiny model, by name


def inputs(batch: int = 2) -> torch.Tensor:
    """``batch`` random CIFAR-sized images, the same every call."""
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def wake_zero_scales(model: torch.nn.Module) -> None:
    """Gives zero-initialised scales (a ResNet branch's last BN) values, as training would: zero hides a drop."""
    with torch.no_grad():
        for p in model.parameters():
            if (p == 0).all():
                p.uniform_(0.5, 1.5)
