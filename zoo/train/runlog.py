"""The files a training run leaves in its directory: config.yaml, metrics.jsonl, summary.json (rank 0 only)."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

METRIC_KEYS = (
    "epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "drop_path_rate", "epoch_seconds", "images_per_second",
)


def versions() -> dict[str, str | None]:
    import torchvision

    from .. import __version__

    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "cuda": torch.version.cuda,
        "zoo": __version__,
    }


class RunLog:
    """Writes one run's files; every method is a no-op on ranks other than 0."""

    def __init__(self, run_dir: str | Path, enabled: bool = True):
        self.dir = Path(run_dir)
        self.enabled = enabled
        if enabled:
            self.dir.mkdir(parents=True, exist_ok=True)

    def config(self, cfg: DictConfig) -> None:
        if self.enabled:
            (self.dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    def restart_metrics(self, history: list[dict[str, Any]]) -> None:
        """Rewrite metrics.jsonl from a checkpoint's history, dropping lines of epochs it did not keep."""
        if self.enabled:
            (self.dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in history))

    def metrics(self, row: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")

    def summary(self, summary: dict[str, Any]) -> None:
        if self.enabled:
            tmp = self.dir / "summary.json.tmp"
            tmp.write_text(json.dumps(summary, indent=2) + "\n")
            tmp.replace(self.dir / "summary.json")
