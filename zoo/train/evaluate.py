"""Evaluate a trained run on the CIFAR-10 test split, as the trainer does after each epoch:

    python -m zoo.train.evaluate <run dir or last.pt> [--which last|best] [--data-path P]
                                 [--device auto|cpu|cuda] [--batch-size N] [--test-subset N]

prints one line (``eval: model=... images=... correct=... test_acc=... test_loss=...``). The data is
``--data-path``, else the run's own (its saved ``data`` config), else ``$ZOO_CIFAR10`` when the run's
image folder is not on this machine. A mistake is one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch

from .._run import load_run
from .._weights import LoadError
from .data.cifar10 import Split, load_cifar10
from .errors import DataError, ZooError, run_command
from .loop.distributed import resolve_device
from .loop.precision import resolve_precision
from .loop.run import EVAL_BATCH
from .loop.step import evaluate


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line and exit 2, like the rest of the command line."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return int(text)


def add_source_arguments(p: argparse.ArgumentParser, which_help: str, test_subset_default: str) -> None:
    """The options evaluate and knockout share: which checkpoint, where the data is, the device, a test subset."""
    p.add_argument("--which", choices=("last", "best"), default="last", help=which_help)
    p.add_argument(
        "--data-path", help="CIFAR-10 image folders or a .tar.gz of them (default: the run's, else $ZOO_CIFAR10)"
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: cuda when available")
    p.add_argument(
        "--test-subset",
        type=positive,
        default=None,
        help=f"the class-balanced first N test images ({test_subset_default})",
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = OneLineParser(
        prog="python -m zoo.train.evaluate",
        description="Evaluate a trained run on the CIFAR-10 test split and print one line.",
    )
    p.add_argument("run", help="a run dir (its last.pt) or a training checkpoint file")
    which = "from a run dir: last.pt (the last epoch) or best.pt (the best validation epoch)"
    add_source_arguments(p, which, "as data.test_subset; default: all 10,000")
    p.add_argument("--batch-size", type=positive, default=EVAL_BATCH, help=f"images per forward pass ({EVAL_BATCH})")
    p.add_argument("--ema", action="store_true", help="the run's moving average of the weights (trained with ema=true)")
    return p.parse_args(argv)


def data_config(saved: dict[str, Any], data_path: str | None) -> dict[str, Any]:
    """The ``data`` config to load CIFAR-10 with: the run's own source unless ``data_path`` is given or
    the run's image folder is gone (then ``$ZOO_CIFAR10``); no subsets (the caller takes its own)."""
    data = dict(saved.get("data") or {"name": "cifar10_folder"})
    saved_path = data.get("path") if data.get("name") == "cifar10_folder" else None
    if data_path:
        data.update(name="cifar10_folder", path=data_path)
    elif data.get("name") == "cifar10_folder" and not (saved_path and Path(str(saved_path)).expanduser().exists()):
        data["path"] = os.environ.get("ZOO_CIFAR10") or saved_path
        if not data["path"]:
            raise DataError("no data path: pass --data-path <CIFAR-10 image folders or .tar.gz> or set ZOO_CIFAR10")
    cache = data.get("cache_dir")  # the run's cache, when it is on this machine
    data.update(subset=None, test_subset=None, cache_dir=cache if cache and Path(str(cache)).is_dir() else None)
    return data


@dataclass
class Loaded:
    """A trained run ready to evaluate: its model (eval mode, on ``device``), config and test split."""

    model: torch.nn.Module
    config: dict[str, Any]
    test: Split  # on the device
    amp: bool
    channels_last: bool


def load_for_eval(
    run: str | Path,
    device: torch.device,
    data_path: str | None,
    test_subset: int | None,
    ema: bool = False,
    which: str = "last",
    loaded: dict[str, Split] | None = None,
) -> Loaded:
    """The run's model and test split, with the settings it trained with on this device type (bf16
    autocast and channels_last). ``loaded`` keeps the test splits read so far, for runs of one sweep."""
    model, config = load_run(run, device, ema=ema, which=which)
    data = data_config(config, data_path)
    key = json.dumps(data, sort_keys=True, default=str)
    if loaded is None or key not in loaded:
        full = load_cifar10(data).test
        if loaded is not None:
            loaded[key] = full
    test: Split = (loaded[key] if loaded is not None else full).subset(test_subset, "--test-subset")
    precision = resolve_precision(config.get("amp", "auto"), config.get("channels_last", "auto"), device)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return Loaded(model, config, test.to(device), precision.amp, precision.channels_last)


def accuracy(loaded: Loaded, model: torch.nn.Module, batch_size: int = EVAL_BATCH) -> tuple[float, float, int]:
    """(accuracy, mean loss, images) of ``model`` (``loaded.model`` or a variant of it) on the test split."""
    loss_sum, correct, count = evaluate(model, loaded.test, batch_size, loaded.amp, loaded.channels_last).tolist()
    return correct / count, loss_sum / count, int(count)


def run_eval(args: argparse.Namespace) -> dict[str, Any]:
    """Load the run and its test split, and evaluate; returns the line's values."""
    device = resolve_device(args.device)
    loaded = load_for_eval(args.run, device, args.data_path, args.test_subset, args.ema, args.which)
    acc, loss, count = accuracy(loaded, loaded.model, args.batch_size)
    name = loaded.model.model_name + (" (EMA)" if args.ema else "") + (" (best.pt)" if args.which == "best" else "")
    return {
        "model": name,
        "images": count,
        "correct": round(acc * count),
        "test_acc": acc,
        "test_loss": loss,
        "device": device.type,
    }


def _eval_line(args: argparse.Namespace) -> str:
    r = run_eval(args)
    return (
        f"eval: model={r['model']} images={r['images']} correct={r['correct']} test_acc={r['test_acc']:.4f} "
        f"test_loss={r['test_loss']:.4f} device={r['device']} run={args.run}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_command(lambda: _eval_line(args), (ZooError, LoadError))


if __name__ == "__main__":
    sys.exit(main())
