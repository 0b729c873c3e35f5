"""The files a training run leaves in its directory: config.yaml, metrics.jsonl, summary.json, and what its
loggers write (rank 0 only)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
from pathlib import Path
from typing import IO, Any

import torch
from omegaconf import DictConfig, OmegaConf

from ..._weights import BEST_NAME, CHECKPOINT_NAME
from ..errors import RunDirError
from .atomic import write_atomic
from .loggers import IDS_NAME, Logger, open_loggers

LOCK_NAME = ".lock"
# What a run leaves in its dir: a new run refuses a dir that holds any of them (unless overwrite=true).
RUN_RECORDS = ("config.yaml", "metrics.jsonl", "summary.json", "last.pt", "best.pt", ".hydra")
_LOCKS: dict[Path, IO[str]] = {}  # run dirs this process holds: taking one again is no conflict


def versions() -> dict[str, str | None]:
    import torchvision

    from ... import __version__

    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "cuda": torch.version.cuda,
        "zoo": __version__,
    }


def lock_run_dir(run_dir: Path) -> None:
    """Hold an exclusive lock on ``run_dir`` (a ``.lock`` file in it) until :func:`unlock_run_dir` or
    the process ends, so two runs, or a resume of a run still going, never write there at once. No-op
    where ``fcntl`` does not exist (Windows)."""
    try:
        import fcntl
    except ImportError:
        return
    key = run_dir.resolve()
    if key in _LOCKS:
        return
    f = open(key / LOCK_NAME, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise in_use(run_dir, holder) from None
    f.seek(0)
    f.truncate()
    f.write(f"process {os.getpid()} on {socket.gethostname()}\n")
    f.flush()
    _LOCKS[key] = f


def in_use(run_dir: Path, holder: str) -> RunDirError:
    return RunDirError(
        f"{run_dir} is in use by {holder} (another run, or this run still going); wait for it to end, "
        "or give this run another hydra.run.dir"
    )


def check_unlocked(run_dir: Path) -> None:
    """Refuse ``run_dir`` while another process holds its lock, without writing anything (before Hydra
    writes its files there)."""
    try:
        import fcntl

        f = open(run_dir / LOCK_NAME)
    except (ImportError, OSError):  # no lock file: nobody holds it
        return
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise in_use(run_dir, f.read().strip() or "another process") from None


def check_new_run_dir(run_dir: Path) -> None:
    """A new run writes only into a dir that holds no run's records (:data:`RUN_RECORDS`)."""
    found = [name for name in RUN_RECORDS if (run_dir / name).exists()]
    if not found:
        return
    from ..config.overrides import quoted_override

    if "last.pt" in found:
        what = f"{quoted_override('resume', run_dir)} continues it"
    else:
        what = "it has no last.pt to continue from (resume=<dir> continues a run that has one)"
    raise RunDirError(
        f"hydra.run.dir={run_dir} already holds a run ({', '.join(found)}); {what}; give this run "
        "another hydra.run.dir, or add overwrite=true to replace that run's records"
    )


def remove_stub(run_dir: Path, hydra_subdir: str | None) -> bool:
    """Remove what a run that failed before it saved anything left in ``run_dir`` (its log, Hydra's files,
    an empty metrics.jsonl, its lock), and the dir itself when that leaves it empty. Nothing is removed
    from a dir that holds a checkpoint, a summary or metrics. True when ``run_dir`` is gone."""
    metrics = run_dir / "metrics.jsonl"
    if any((run_dir / n).exists() for n in ("last.pt", "best.pt", "summary.json")) or (
        metrics.is_file() and metrics.stat().st_size
    ):
        return False
    for name in ("train.log", "config.yaml", "metrics.jsonl", LOCK_NAME):
        (run_dir / name).unlink(missing_ok=True)
    if hydra_subdir:
        shutil.rmtree(run_dir / hydra_subdir, ignore_errors=True)
    try:
        run_dir.rmdir()
    except OSError:  # something else is in it: kept
        return False
    return True


def unlock_run_dir(run_dir: Path) -> None:
    f = _LOCKS.pop(run_dir.resolve(), None)
    if f is not None:
        f.close()


class RunLog:
    """Writes one run's files, holding the run dir's lock; every method is a no-op on ranks other than 0."""

    def __init__(self, run_dir: str | Path, enabled: bool = True):
        self.dir = Path(run_dir)
        self.enabled = enabled
        self.loggers: list[Logger] = []
        self.outcome = "failed"  # what the trackers record when the run closes: "finished" once summarised
        if enabled:
            self.dir.mkdir(parents=True, exist_ok=True)
            for name in ("config.yaml", "metrics.jsonl", "summary.json"):
                if (self.dir / name).is_dir():
                    raise RunDirError(
                        f"{self.dir / name} is a directory where the run writes its {name}: "
                        "move it away, or give this run another hydra.run.dir"
                    )
            lock_run_dir(self.dir)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close(self.outcome)
        self.loggers = []
        if self.enabled:
            unlock_run_dir(self.dir)

    def open_loggers(self, cfg: DictConfig, history: list[dict[str, Any]]) -> None:
        """Start (or, resumed, continue) the trackers ``cfg.logger`` names (:mod:`zoo.train.rundir.loggers`)."""
        if self.enabled:
            self.loggers = open_loggers(cfg.get("logger"), self.dir, OmegaConf.to_container(cfg, resolve=True), history)

    def forget_records(self) -> None:
        """Remove the records another run left here (``overwrite=true``): its checkpoints, summary,
        metrics.csv, TensorBoard event files and tracker run ids (loggers.json: a W&B or MLflow logger
        then starts a run of its own, and the replaced run's stays in their stores, wandb/ or mlflow.db).
        config.yaml and metrics.jsonl are rewritten when the run starts."""
        if self.enabled:
            names = ("summary.json", "best.pt", "last.pt", "metrics.csv", IDS_NAME)
            for path in [*(self.dir / name for name in names), *self.dir.glob("events.out.tfevents.*")]:
                path.unlink(missing_ok=True)

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
        for logger in self.loggers:
            logger.metrics(row)

    def summary(self, summary: dict[str, Any]) -> None:
        if self.enabled:
            write_atomic(self.dir / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
        checkpoints = {
            f"{name.partition('.')[0]}_checkpoint": str((self.dir / name).resolve())
            for name in (CHECKPOINT_NAME, BEST_NAME)
            if (self.dir / name).exists()
        }
        for logger in self.loggers:
            logger.finish(summary, checkpoints)
        self.outcome = "finished"
