"""The experiment trackers a run also writes to (``logger=csv``, ``tensorboard``, ``wandb``, ``mlflow``, or a
list of them), each through its own maintained client.

Each logger gets the resolved config when the run starts, every metrics line, and at the end the summary
and the paths of last.pt and best.pt. The id of each tracker's run is kept in the run dir (loggers.json),
so a resumed run continues the tracker's run it started instead of opening a new one.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import time
from pathlib import Path
from typing import Any

from ..config.overrides import flatten
from ..errors import ConfigError
from .atomic import write_atomic

IDS_NAME = "loggers.json"
# Each logger's package (None: the standard library's), which is also the name of its extra.
PACKAGES = {"csv": None, "tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def check_installed(names: list[str]) -> None:
    """Refuse, in one line, a logger whose package is not installed."""
    for name in names:
        package = PACKAGES[name]
        if package is not None and importlib.util.find_spec(package) is None:
            raise ConfigError(f"logger={name} needs the {package} package: pip install 'zoo[{name}]'")


Json = dict[str, Any]  # a config, a logger's options, a metrics line


class Logger:
    """One tracker's run. ``id`` is what a resumed run reopens it with (None: nothing to reopen)."""

    id: str | None = None

    def metrics(self, row: dict[str, Any]) -> None: ...

    def finish(self, summary: dict[str, Any], checkpoints: dict[str, str]) -> None: ...

    def close(self, outcome: str = "finished") -> None:
        """End the tracker's run: ``outcome`` is "finished", "interrupted" (a resume continues it) or "failed"."""


class CSVLogger(Logger):
    """metrics.csv beside metrics.jsonl, one row per epoch (rewritten from the history on a resume). Its
    columns are every key seen so far: a key that first appears later (the test split's, with
    ``test_every``) rewrites the file with the new column, the earlier rows left empty there."""

    def __init__(self, run_dir: Path, options: Json, config: Json, history: list[Json], run_id: str | None):
        self.path = run_dir / "metrics.csv"
        self.rows: list[dict[str, Any]] = []
        self.columns: list[str] = []
        self._rewrite(history)

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        self.rows = list(rows)
        self.columns = list(dict.fromkeys(k for row in self.rows for k in row))
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, self.columns)
            if self.columns:
                writer.writeheader()
            writer.writerows(self.rows)

    def metrics(self, row: dict[str, Any]) -> None:
        if any(k not in self.columns for k in row):
            self._rewrite([*self.rows, row])
            return
        self.rows.append(row)
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.columns).writerow(row)


class TensorBoardLogger(Logger):
    """TensorBoard event files in the run dir: a scalar per metric (step: the epoch), the config and the
    summary as text."""

    def __init__(self, run_dir: Path, options: Json, config: Json, history: list[Json], run_id: str | None):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: events of epochs the checkpoint did not keep are dropped when the run resumes; the
        # config goes at the first epoch to come (a step below the purge step would purge again)
        self.writer = SummaryWriter(str(run_dir), purge_step=len(history) + 1 if history else None)
        self.writer.add_text("config", _code(json.dumps(config, indent=2)), len(history) + 1)

    def metrics(self, row: dict[str, Any]) -> None:
        for key, value in row.items():
            if key != "epoch":
                self.writer.add_scalar(key, value, row["epoch"])
        self.writer.flush()

    def finish(self, summary: dict[str, Any], checkpoints: dict[str, str]) -> None:
        self.writer.add_text("summary", _code(json.dumps({**summary, **checkpoints}, indent=2)), summary["epochs"])

    def close(self, outcome: str = "finished") -> None:
        self.writer.close()


class WandbLogger(Logger):
    """A Weights & Biases run (``logger.wandb.mode=offline`` by default: files under <run dir>/wandb, for
    ``wandb sync``); the config as its config, metrics by epoch, the summary and checkpoint paths as its summary."""

    def __init__(self, run_dir: Path, options: Json, config: Json, history: list[Json], run_id: str | None):
        import wandb

        self.run = wandb.init(dir=str(run_dir), config=config, id=run_id, resume="allow" if run_id else None, **options)
        self.id = self.run.id

    def metrics(self, row: dict[str, Any]) -> None:
        self.run.log({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])

    def finish(self, summary: dict[str, Any], checkpoints: dict[str, str]) -> None:
        self.run.summary.update({**summary, **checkpoints})

    def close(self, outcome: str = "finished") -> None:
        if outcome == "interrupted":  # W&B's mark for a run that a resume continues (shown as preempted)
            self.run.mark_preempting()
        self.run.finish(exit_code=0 if outcome == "finished" else 1)


class MLflowLogger(Logger):
    """An MLflow run, through MLflow's client: the flattened config as params (and config.json as an
    artifact), metrics by epoch, the summary as summary.json and its numbers as ``summary.*`` metrics, the
    checkpoint paths as tags. ``logger.mlflow.tracking_uri`` null: a SQLite store in the run dir (mlflow.db)."""

    def __init__(self, run_dir: Path, options: Json, config: Json, history: list[Json], run_id: str | None):
        from mlflow import MlflowClient

        local = not options["tracking_uri"]
        self.client = MlflowClient(f"sqlite:///{run_dir.resolve() / 'mlflow.db'}" if local else options["tracking_uri"])
        if run_id is None:
            experiment = self.client.get_experiment_by_name(options["experiment_name"])
            # the local store's artifacts in the run dir too (MLflow's default is ./mlartifacts, wherever one runs from)
            artifacts = (run_dir.resolve() / "mlartifacts").as_uri() if local else None
            experiment_id = (
                experiment.experiment_id
                if experiment
                else self.client.create_experiment(options["experiment_name"], artifact_location=artifacts)
            )
            run_id = self.client.create_run(
                experiment_id, run_name=options["run_name"] or run_dir.name, tags={"run_dir": str(run_dir.resolve())}
            ).info.run_id
            params = [(k, json.dumps(v) if not isinstance(v, str) else v) for k, v in flatten(config).items()]
            from mlflow.entities import Param

            self.client.log_batch(run_id, params=[Param(k, v[:6000]) for k, v in params])
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.id = run_id
        self.client.log_dict(run_id, config, "config.json")  # the resumed run's too: ENVIRONMENT_KEYS may change

    def metrics(self, row: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        stamp = _millis()
        self.client.log_batch(
            self.id, metrics=[Metric(k, float(v), stamp, row["epoch"]) for k, v in row.items() if k != "epoch"]
        )

    def finish(self, summary: dict[str, Any], checkpoints: dict[str, str]) -> None:
        from mlflow.entities import Metric, RunTag

        numbers = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.client.log_batch(
            self.id,
            metrics=[Metric(f"summary.{k}", float(v), _millis(), 0) for k, v in numbers.items()],
            tags=[RunTag(k, v) for k, v in checkpoints.items()],
        )
        self.client.log_dict(self.id, summary, "summary.json")

    def close(self, outcome: str = "finished") -> None:
        status = {"finished": "FINISHED", "interrupted": "KILLED"}.get(outcome, "FAILED")
        self.client.set_terminated(self.id, status=status)


LOGGERS: dict[str, type[Logger]] = {
    "csv": CSVLogger,
    "tensorboard": TensorBoardLogger,
    "wandb": WandbLogger,
    "mlflow": MLflowLogger,
}


def open_loggers(
    chosen: dict[str, dict[str, Any]] | None, run_dir: Path, config: dict[str, Any], history: list[dict[str, Any]]
) -> list[Logger]:
    """The loggers ``chosen`` (``cfg.logger``: name -> options) names, each continuing the run it started in
    ``run_dir`` when it started one there (the ids in loggers.json)."""
    if not chosen:
        return []
    ids_path = run_dir / IDS_NAME
    ids = json.loads(ids_path.read_text()) if ids_path.exists() else {}
    opened: list[Logger] = []
    try:
        for name, options in chosen.items():
            opened.append(LOGGERS[name](run_dir, dict(options or {}), config, history, ids.get(name)))
    except BaseException:
        for logger in opened:
            logger.close("failed")
        raise
    ids.update({name: logger.id for name, logger in zip(chosen, opened) if logger.id is not None})
    if ids:
        write_atomic(ids_path, (json.dumps(ids, indent=2) + "\n").encode())
    return opened


def _code(text: str) -> str:
    return "".join(
        f"    {line}\n" for line in text.splitlines()
    )  # markdown code block: TensorBoard renders text as markdown


def _millis() -> int:
    return int(time.time() * 1000)
