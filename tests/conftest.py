"""Shared fixtures: the repository root, the real CIFAR-10 archive, and a decoded copy of it.

The archive is found through the environment variable ZOO_CIFAR10, else at
``<repo>/../shared/data/cifar10-jpeg.tar.gz``; tests that need it skip, saying so, when it is absent.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # lets tests import train.py
    sys.path.insert(0, str(REPO))


def find_cifar10_archive() -> Path | None:
    env = os.environ.get("ZOO_CIFAR10")
    path = Path(env) if env else REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
    # absolute: subprocess tests run train.py from a temporary directory
    return path.resolve() if path.exists() else None


@pytest.fixture(autouse=True)
def _torch_flags_as_found():
    """Every test starts with the process-wide kernel flags the one before it found (a run with
    deterministic=true sets them; a CUDA test under them would take other kernels, and syncs)."""
    from zoo.train.precision import restored_torch_flags

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
    from zoo.train.data import load_image_folder

    cache = Path(os.environ.get("ZOO_TEST_CACHE_DIR") or tmp_path_factory.mktemp("zoo-cache"))
    load_image_folder(cifar10_archive, cache)
    return cache


def compose_train(*overrides: str, hydra: bool = False):
    """configs/train.yaml composed with ``overrides`` through the schema, as train.py composes it (and
    Hydra's own config with ``hydra=True``); a wrong type or an unknown key raises ConfigError."""
    from zoo.train.config import compose_config

    return compose_config(REPO / "configs", list(overrides), hydra=hydra)


def check_cli(*args: str) -> str:
    """train.py's checks of its command line, in process: the one stderr line they print before Hydra
    starts, and exit 2 (a refused run); "" when they let the command line through."""
    import contextlib
    import io

    from zoo.train.cli import check_argv

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            check_argv(["train.py", *args], REPO / "configs")
        except SystemExit as e:
            assert e.code == 2, e.code
            lines = err.getvalue().strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), err.getvalue()
            return lines[0]
    return ""


def train_cut_and_resumed(monkeypatch: pytest.MonkeyPatch, overrides: tuple[str, ...], run_dir: Path,
                          stop_at_read: int = 6) -> None:
    """Trains into ``run_dir`` as if SIGTERM arrived at the loop's ``stop_at_read``-th look at its stop
    flag (the 6th: epoch 2 after its first step, with 4 steps an epoch), then resumes it to the end."""
    from zoo.train import loop

    class StopAfter(loop.StopOnSignal):
        reads = 0

        @property
        def requested(self) -> bool:
            StopAfter.reads += 1
            if StopAfter.reads >= stop_at_read:
                self.signum = 15
            return self.signum is not None

    with monkeypatch.context() as patch:
        patch.setattr(loop, "StopOnSignal", StopAfter)
        with pytest.raises(loop.TrainingInterrupted):
            loop.train(compose_train(*overrides), run_dir)
    resume = f"resume={run_dir}"
    loop.train(compose_train(*overrides, resume), run_dir.parent / f"{run_dir.name}-ignored", overrides=(resume,))
