"""Training images/s of zoo's trainer against the loop a user writes by hand, on the same model, batch,
precision and augmentation.

- zoo: ``zoo.train.loop.run.train``, what ``train.py`` runs, with zoo's defaults (the data set on the
  device, crops and flips as batched tensor ops, ``amp`` / ``channels_last`` / ``compile`` as
  configs/train.yaml sets them); the rate is the last epoch's ``images_per_second`` (metrics.jsonl:
  its training steps, not the set-up or the test pass).
- hand: torchvision's ``ImageFolder`` over the same number of training JPEGs extracted from the
  archive, a ``DataLoader`` (shuffle, full batches, persistent workers, with the ``num_workers`` of
  ``--workers`` that a short calibration found fastest), ``RandomCrop(32, padding=4)``,
  ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize``; the model built from the same config, AdamW
  with the config's learning rate and weight decay, label smoothing, and bf16 autocast and
  channels_last exactly where the trainer resolves them on; the last epoch timed.

Each repeat runs both, the order alternating from repeat to repeat; a rate is the median over
repeats, the ratio zoo / hand the median of the per-repeat ratios. It prints the machine, the versions
and the load average with the table.

    python benchmarks/trainer_speed.py --data ../shared/data/cifar10-jpeg.tar.gz
    python benchmarks/trainer_speed.py --tiny --data ...     # seconds: correctness only (CI)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from zoo.profile import cpu_model  # noqa: E402
from zoo.train.config.schema import build_model  # noqa: E402
from zoo.train.data.cifar10 import CLASSES, MEAN, STD, _iter_files  # noqa: E402
from zoo.train.loop import run as loop  # noqa: E402
from zoo.train.loop.distributed import resolve_device  # noqa: E402
from zoo.train.loop.precision import Precision, resolve_precision  # noqa: E402


def compose(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return hydra_compose("train", overrides=list(overrides))


def extract(archive: Path, n: int, dest: Path) -> Path:
    """The first ``n // 10`` training images of each class in ``archive`` (a tree or a .tar.gz of
    one), written as files into ``dest/<class>/``: what ImageFolder reads."""
    per_class, counts = n // len(CLASSES), dict.fromkeys(CLASSES, 0)
    for split, cls, name, read, _ in _iter_files(archive):
        if split != "train" or counts.get(cls, per_class) >= per_class:
            continue
        (dest / cls).mkdir(parents=True, exist_ok=True)
        (dest / cls / name).write_bytes(read())
        counts[cls] += 1
        if all(c >= per_class for c in counts.values()):
            break
    return dest


def overrides(args: argparse.Namespace, model: str) -> list[str]:
    """zoo's defaults, with the model, the batch, the data subset and the run's length set."""
    cache = [f"data.cache_dir={args.cache_dir}"] if args.cache_dir else []  # else the trainer's default cache
    return [
        f"model={model}",
        "data=cifar10_folder",
        f"data.path={args.data}",
        *cache,
        f"data.subset={args.images}",
        "data.test_subset=100",
        f"epochs={args.epochs}",
        f"batch_size={args.batch}",
        "sched.warmup_epochs=0",
        "log_every_s=0",
        f"device={args.device}",
        *args.set,
    ]


def zoo_rate(args: argparse.Namespace, model: str, run_dir: Path) -> float:
    """images/s of the trainer's last epoch."""
    loop.train(compose(*overrides(args, model)), run_dir)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return rows[-1]["images_per_second"]


def hand_loader(folder: Path, batch: int, workers: int, cuda: bool) -> DataLoader:
    augment = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]
    )
    return DataLoader(
        datasets.ImageFolder(str(folder), transform=augment),
        batch_size=batch,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=cuda,
    )


def hand_rates(
    cfg, folder: Path, workers: int, epochs: int, max_steps: int | None = None, skip: int = 0
) -> list[float]:
    """images/s of each epoch of the hand-written loop (after its first ``skip`` batches; at most
    ``max_steps`` batches an epoch)."""
    device = resolve_device(cfg.device)
    precision: Precision = resolve_precision(cfg.amp, cfg.channels_last, device)
    fmt = torch.channels_last if precision.channels_last else torch.contiguous_format
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(device, memory_format=fmt).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    loader = hand_loader(folder, cfg.batch_size, workers, device.type == "cuda")
    rates = []
    for _ in range(epochs):
        images, start = 0, time.perf_counter()
        for i, (x, y) in enumerate(loader):
            if i == skip:
                images, start = 0, time.perf_counter()
            if max_steps is not None and i >= max_steps:
                break
            x, y = x.to(device, memory_format=fmt, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision.amp):
                loss = criterion(model(x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            images += len(y)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        rates.append(images / (time.perf_counter() - start))
    return rates


def best_workers(cfg, folder: Path, candidates: list[int], steps: int) -> tuple[int, dict[int, float]]:
    """The ``num_workers`` with the highest images/s over ``steps`` batches, after 2 warm-up batches."""
    rates = {w: hand_rates(cfg, folder, w, 1, max_steps=steps + 2, skip=2)[0] for w in candidates}
    return max(rates, key=rates.get), rates


def bench_model(args: argparse.Namespace, model: str, folder: Path) -> dict:
    cfg = compose(*overrides(args, model))
    workers, calibration = best_workers(cfg, folder, args.workers, args.calibration_steps)
    print(
        f"{model}: hand loop num_workers {workers} (images/s over {args.calibration_steps} batches: "
        + ", ".join(f"{w}: {r:.0f}" for w, r in calibration.items())
        + ")",
        flush=True,
    )
    zoo, hand = [], []
    for r in range(args.repeats):
        for side in ("zoo", "hand") if r % 2 == 0 else ("hand", "zoo"):
            if side == "zoo":
                zoo.append(zoo_rate(args, model, args.work / f"{model}-{r}"))
            else:
                hand.append(hand_rates(cfg, folder, workers, args.epochs)[-1])
        print(f"{model} repeat {r + 1}: zoo {zoo[-1]:.1f}, hand {hand[-1]:.1f} images/s", flush=True)
    ratios = [z / h for z, h in zip(zoo, hand, strict=True)]
    return {
        "model": model,
        "zoo": zoo,
        "hand": hand,
        "ratio": statistics.median(ratios),
        "num_workers": workers,
        "calibration": calibration,
        "precision": resolve_precision(cfg.amp, cfg.channels_last, resolve_device(cfg.device)).describe(),
    }


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} [{min(values):.1f}, {max(values):.1f}]"


def header(args: argparse.Namespace) -> str:
    device = resolve_device(args.device)
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return (
        f"# zoo trainer vs hand-written loop, {time.strftime('%Y-%m-%d %H:%M')}"
        f"{'; trainer overrides: ' + ' '.join(args.set) if args.set else ''}\n"
        f"CPU {cpu_model()} x {os.cpu_count()}, {torch.get_num_threads()} torch threads{gpu}; load average "
        f"{os.getloadavg()[0]:.2f} (1 min)\ntorch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"python {platform.python_version()}\n{args.images} training images, batch {args.batch}, the last of "
        f"{args.epochs} epochs timed, {args.repeats} repeats in alternating order"
    )


def table(results: list[dict]) -> str:
    lines = [
        (
            "| model | precision (both) | zoo images/s, median [min, max] | hand loop images/s | hand num_workers "
            "| zoo / hand (median of per-repeat ratios) |"
        ),
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['model']} | {r['precision']} | {spread(r['zoo'])} | {spread(r['hand'])} | {r['num_workers']} | "
        f"**{r['ratio']:.2f}x** |"
        for r in results
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("ZOO_CIFAR10"), help="CIFAR-10 image folder or .tar.gz of one")
    ap.add_argument("--models", nargs="+", help="default: resnet20 metaformer (--tiny: resnet8 convformer_tiny)")
    ap.add_argument("--images", type=int, default=2560, help="training images (a balanced subset)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2, help="per run; the last one is timed")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="the hand loop's num_workers to try")
    ap.add_argument("--calibration-steps", type=int, default=6, help="batches timed per num_workers candidate")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--cache-dir", help="the decoded data set's cache (default: the trainer's, ~/.cache/zoo)")
    ap.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="trainer overrides beyond zoo's defaults, e.g. compile=true (the hand loop reads the "
        "model, amp, channels_last, lr, weight_decay and label_smoothing from the same config)",
    )
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--tiny", action="store_true", help="tiny models and sizes: checks that it runs (CI)")
    args = ap.parse_args(argv)
    if args.tiny:
        args.images, args.batch, args.epochs, args.repeats, args.workers, args.calibration_steps = (
            40,
            8,
            1,
            1,
            [0, 1],
            1,
        )
    args.models = args.models or (["resnet8", "convformer_tiny"] if args.tiny else ["resnet20", "metaformer"])
    if not args.data or not Path(args.data).exists():
        ap.error(f"--data {args.data!r}: not found (the CIFAR-10 image folder or .tar.gz; or set ZOO_CIFAR10)")
    if args.images < args.batch or args.images % len(CLASSES):
        ap.error(f"--images {args.images}: must be a multiple of {len(CLASSES)} and at least --batch {args.batch}")
    args.data = Path(args.data).resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="zoo-trainer-speed-") as work:
        args.work = Path(work)
        folder = extract(args.data, args.images, args.work / "images")
        print(header(args), flush=True)
        results = [bench_model(args, model, folder) for model in args.models]
    print("\n" + table(results))
    if args.json:
        args.json.write_text(json.dumps({"header": header(args), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
