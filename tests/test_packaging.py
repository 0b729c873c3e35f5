"""The library and the trainer, apart: ``import zoo`` needs torch alone, and the Hydra task can be
pickled by a launcher plugin."""

from __future__ import annotations

import json
import runpy

import pytest
import torch

from conftest import REPO, TRAINER_ONLY, blocked_imports, run_python

NOT_NEEDED = (*TRAINER_ONLY, "timm")  # timm too: zoo.register_timm alone imports it

# Runs in a fresh interpreter where the trainer's dependencies cannot be imported at all (torch itself
# tries tqdm, and copes without it), then uses the library as another project would.
BLOCKED_IMPORT = f"""{blocked_imports(NOT_NEEDED)}
import torch, zoo, zoo.layers, zoo.blocks, zoo.models
from zoo.layers import DropPath, drop_path, drop_path_add, drop_path_rates, drop_path_skip_add
from zoo.blocks import BasicBlock, Bottleneck, MetaFormerBlock
model = zoo.create_model("resnet8", drop_path_rate=0.1, drop_path_mode="skip")
model(torch.randn(4, 3, 32, 32)).sum().backward()
print(len(zoo.list_models()), model.drop_path_rates())
"""


def test_the_library_imports_and_runs_without_the_trainers_dependencies():
    out = run_python("-c", BLOCKED_IMPORT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    count, rates = out.stdout.split(" ", 1)
    assert int(count) > 20 and json.loads(rates) == pytest.approx([0.0, 0.05, 0.1])


def test_the_hydra_task_pickles_by_value_as_a_launcher_sends_it():
    """joblib (and submitit) pickle the task function with cloudpickle. Run as a script, train.py's
    ``main`` lives in a module workers cannot import, so it is pickled by value, with the globals it
    reads; those must be picklable (they were not while the loop lived in train.py)."""
    cloudpickle = pytest.importorskip("cloudpickle")
    script = runpy.run_path(str(REPO / "train.py"), run_name="not_importable")
    task = script["main"].__wrapped__  # what hydra.main hands the launcher
    assert task.__module__ == "not_importable"
    restored = cloudpickle.loads(cloudpickle.dumps(task))
    assert restored.__globals__["run"].__module__ == "zoo.train.cli"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_fixed_skip_step_does_not_sync_the_device():
    """A training step of a skip-mode model (the fixed draw, the default on CUDA) makes no host sync."""
    import zoo

    model = zoo.create_model("resnet8", drop_path_rate=0.5, drop_path_mode="skip").cuda().train()
    x, y = torch.randn(32, 3, 32, 32, device="cuda"), torch.randint(0, 10, (32,), device="cuda")
    torch.nn.functional.cross_entropy(model(x), y).backward()  # warm-up: cudnn picks its kernels
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        torch.nn.functional.cross_entropy(model(x), y).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
