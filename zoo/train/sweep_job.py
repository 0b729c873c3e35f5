"""One job of a multirun (``python train.py -m ...``), so that a sweep survives its jobs and continues.

A job whose dir already holds its finished run (summary.json) is skipped; one with a last.pt continues
from it; one that fails (a config or data error, a non-finite loss, any exception) is recorded in its dir
(``failed.json``: exit status and error line; the line ends its train.log too) and returns, so the
launcher goes on with the other jobs: a task that raised would make joblib kill the jobs running beside
it, and Hydra's basic sweeper stop before its report. The report lists the failed jobs and the
multirun exits 1 at its end (:class:`zoo.train.report.comparison.ReportCallback`). A signal (Ctrl-C, SIGTERM)
still stops the whole sweep, saved; the same command with the same ``hydra.sweep.dir`` continues it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .._weights import CHECKPOINT_NAME
from .cli import say
from .config.overrides import flatten, is_environment_key
from .config.schema import validate_config
from .errors import ConfigError, ZooError
from .report.sweep import FAILED_NAME

SUMMARY_NAME = "summary.json"
FAILED_STATUSES = (1, 2)  # exit statuses of a failed job; 128 + n is a signal, which stops the sweep

Run = Callable[[DictConfig, str, tuple[str, ...]], "float | None"]


def run_job(cfg: DictConfig, run_dir: str, overrides: tuple[str, ...], run: Run) -> float | None:
    """``run(cfg, run_dir, overrides)`` as one job of a sweep: skipped when finished, resumed from its
    last.pt, its failure recorded (returns None) instead of raised. Returns what ``run`` returns (the
    best validation accuracy a sweeper maximises), read from summary.json for a job finished before."""
    job = Path(run_dir)
    (job / FAILED_NAME).unlink(missing_ok=True)  # this attempt's outcome replaces the last one's
    try:
        summary = finished(cfg, job)
        if summary is not None:
            print(f"done before: {job} (summary.json is there; not run again)")
            return summary.get("best_val_acc")
        if (job / CHECKPOINT_NAME).is_file() and not cfg.resume:
            cfg = OmegaConf.merge(cfg, {"resume": str(job)})  # continues the interrupted run, its saved config
        return run(cfg, run_dir, overrides)
    except SystemExit as e:  # the run's own one-line exit (cli._exit)
        if e.code not in FAILED_STATUSES:
            raise
        record_failure(job, int(e.code), getattr(e, "line", f"exit status {e.code}"))
    except ZooError as e:  # this job's dir holds another run
        say(f"error: {e}")
        record_failure(job, 2, f"error: {e}")
    except Exception as e:  # a bug, or out of memory: the traceback goes to train.log, the sweep goes on
        line = f"error: {type(e).__name__}: {' '.join(str(e).split())[:300]} (traceback in {job}/train.log)"
        say(line, e)
        record_failure(job, 1, line)
    return None


def finished(cfg: DictConfig, job: Path) -> dict[str, Any] | None:
    """The summary of the finished run in ``job``, None when there is none. A finished run of other values
    (another command into the same sweep dir) is a ConfigError: it is not this job's result."""
    summary_file = job / SUMMARY_NAME
    if not summary_file.is_file():
        return None
    if (job / "config.yaml").is_file():
        then = flatten(OmegaConf.to_container(OmegaConf.load(job / "config.yaml"), resolve=True))
        now = flatten(OmegaConf.to_container(validate_config(cfg), resolve=True))
        changed = [k for k in sorted(then.keys() & now.keys()) if not is_environment_key(k) and then[k] != now[k]]
        if changed:
            diffs = ", ".join(f"{k}={now[k]!r} (finished with {then[k]!r})" for k in changed[:5])
            raise ConfigError(
                f"{job} holds a finished run of other values: {diffs}; give this sweep its own hydra.sweep.dir"
            )
    return json.loads(summary_file.read_text())


def record_failure(job: Path, status: int, line: str) -> None:
    """``failed.json`` in the job dir: what the report lists, and why the multirun exits 1."""
    record = {"exit_status": status, "error": line, "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    job.mkdir(parents=True, exist_ok=True)
    (job / FAILED_NAME).write_text(json.dumps(record, indent=2) + "\n")
