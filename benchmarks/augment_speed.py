"""Training images/s of each ``data.augment`` policy against crop + flip, on one model and device.

Each policy trains ``zoo.train.loop.run.train`` (what ``train.py`` runs) for ``--epochs`` epochs of ``--images``
images and takes the last epoch's ``images_per_second`` (metrics.jsonl: its training steps, not the set-up
or the test pass); a repeat runs every policy, the order rotating from repeat to repeat. A rate is the
median over repeats, the ratio to crop_flip the median of the per-repeat ratios. A second column times
the augmentation alone (``train_batch`` over one epoch, no model): what the policy costs per image.

    python benchmarks/augment_speed.py --data ../shared/data/cifar10-jpeg.tar.gz   # minutes (15 short runs)
    python benchmarks/augment_speed.py --data ... --device cuda --model metaformer --images 10000
    python benchmarks/augment_speed.py --tiny --data ...                                     # seconds: correctness only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from zoo.profile import cpu_model  # noqa: E402
from zoo.train.data.augment import build_policy  # noqa: E402
from zoo.train.data.batches import epoch_plan, train_batch  # noqa: E402
from zoo.train.data.cifar10 import Split  # noqa: E402
from zoo.train.loop import run as loop  # noqa: E402
from zoo.train.loop.distributed import resolve_device  # noqa: E402

# (name in the table, data.* overrides)
POLICIES = {
    "crop_flip": ["data.augment=crop_flip"],
    "autoaugment": ["data.augment=autoaugment"],
    "randaugment (n 2, m 9)": ["data.augment=randaugment"],
    "trivialaugment": ["data.augment=trivialaugment"],
    "crop_flip + random_erasing 0.25": ["data.augment=crop_flip", "data.random_erasing=0.25"],
}


def compose(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return hydra_compose("train", overrides=list(overrides))


def overrides(args: argparse.Namespace, policy: list[str]) -> list[str]:
    return [
        f"model={args.model}",
        "data=cifar10_folder",
        f"data.path={args.data}",
        f"data.subset={args.images}",
        "data.test_subset=100",
        f"epochs={args.epochs}",
        f"batch_size={args.batch}",
        "sched.warmup_epochs=0",
        f"device={args.device}",
        "log_every_s=0",
        *([f"data.cache_dir={args.cache_dir}"] if args.cache_dir else []),
        *policy,
    ]


def train_rate(args: argparse.Namespace, policy: list[str], run_dir: Path) -> float:
    loop.train(compose(*overrides(args, policy)), run_dir)
    last = (run_dir / "metrics.jsonl").read_text().splitlines()[-1]
    return float(json.loads(last)["images_per_second"])


def augment_rate(args: argparse.Namespace, policy: list[str]) -> float:
    """Images/s of the epoch's batches alone: crop, flip, policy and normalisation, on the device."""
    data = {k.split("=")[0].removeprefix("data."): k.split("=")[1] for k in policy}
    device = resolve_device(args.device)
    images = torch.randint(0, 256, (args.images, 32, 32, 3), dtype=torch.uint8, device=device)
    split = Split(images, torch.zeros(args.images, dtype=torch.long, device=device))
    transform = build_policy(data["augment"], erasing=float(data.get("random_erasing", 0)))
    plan = epoch_plan(args.images, args.batch, 0, 0, device, True, transform)
    start = time.perf_counter()
    for step in range(plan.steps):
        x, _ = train_batch(split, plan, step, 0, 1, True)
    float(x.sum())  # waits for the device
    return plan.steps * args.batch / (time.perf_counter() - start)


def header(args: argparse.Namespace) -> str:
    device = resolve_device(args.device)
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return (
        f"# data.augment policies against crop_flip, {time.strftime('%Y-%m-%d %H:%M')}\n"
        f"CPU {cpu_model()} x {os.cpu_count()}, {torch.get_num_threads()} torch threads{gpu}; load average "
        f"{os.getloadavg()[0]:.2f} (1 min)\ntorch {torch.__version__}, torchvision {torchvision.__version__}\n"
        f"{args.model}, {args.images} training images, batch {args.batch}, the last of {args.epochs} epochs timed, "
        f"{args.repeats} repeats in rotating order"
    )


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} [{min(values):.0f}, {max(values):.0f}]"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="the CIFAR-10 image-folder tree or .tar.gz")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--model", default="resnet20")
    p.add_argument("--device", default="cpu")
    p.add_argument("--images", type=int, default=2560)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path, default=None, help="also write the rates here")
    p.add_argument("--tiny", action="store_true", help="resnet8, 128 images, 1 epoch, 1 repeat: correctness only")
    args = p.parse_args(argv)
    if args.tiny:
        args.model, args.images, args.batch, args.epochs, args.repeats = "resnet8", 128, 64, 1, 1
    names = list(POLICIES)
    train = {n: [] for n in names}
    alone = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for i in range(len(names)):
                name = names[(i + r) % len(names)]
                train[name].append(train_rate(args, POLICIES[name], Path(tmp) / f"{r}-{i}"))
                alone[name].append(augment_rate(args, POLICIES[name]))
    ratios = {n: statistics.median(t / b for t, b in zip(train[n], train["crop_flip"])) for n in names}
    print(header(args))
    print("\n| data.augment | training images/s, median [min, max] | / crop_flip | augmentation alone, images/s |")
    print("|---|---|---|---|")
    for n in names:
        print(f"| {n} | {spread(train[n])} | {ratios[n]:.2f}x | {spread(alone[n])} |")
    if args.json:
        args.json.write_text(json.dumps({"header": header(args), "train": train, "alone": alone, "ratio": ratios}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
