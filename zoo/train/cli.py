"""The command line of train.py: every job it asks for checked before Hydra makes a run dir, and the Hydra
task itself (:func:`run`), which lives here so that a launcher plugin can pickle it."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

from omegaconf import DictConfig

from .config import compose_configs, validate_config
from .errors import ConfigError, ZooError
from .overrides import expand


def run(cfg: DictConfig) -> dict[str, Any]:
    """The Hydra task: train in this job's output dir and print one closing line. A user's mistake
    (:class:`ZooError`) is one line on stderr and exit 2; a signal stops at a step boundary, saved,
    with exit 128 + the signal number."""
    from hydra.core.hydra_config import HydraConfig

    from . import distributed as dist
    from .interrupt import TrainingInterrupted
    from .loop import train

    hc = HydraConfig.get()
    try:
        s = train(cfg, hc.runtime.output_dir, tuple(hc.overrides.task))
    except ZooError as e:
        _exit(f"error: {e}", 2)
    except OSError as e:
        if e.filename is None:  # not about a file the user can fix
            raise
        _exit(f"error: {e.filename}: {e.strerror}; a run writes only into its run dir: give it a writable "
              "hydra.run.dir", 2)
    except TrainingInterrupted as e:
        _exit(f"interrupted: {e}", e.exit_code)
    except KeyboardInterrupt:  # a second Ctrl-C inside the loop
        _exit("interrupted: stopped at once by a second Ctrl-C; the last checkpoint saved (if any) is intact",
              128 + signal.SIGINT)
    finally:
        dist.cleanup()
    if int(os.environ.get("RANK", "0")) == 0:
        world = f" x{s['world_size']}" if s["world_size"] > 1 else ""
        at_best = f"test_acc_at_best_val={s['test_acc_at_best_val']:.4f} " if "test_acc_at_best_val" in s else ""
        print(
            f"done: {s['model']} test_acc={s['final_test_acc']:.4f} {at_best}"
            f"epochs={s['epochs']} in {s['wall_seconds_last_invocation']:.1f}s ({s['device']}{world})"
        )
    return s


def _exit(line: str, code: int) -> NoReturn:
    """Print the run's last line on stderr, and into its log file (train.log) too, then exit."""
    print(line, file=sys.stderr)
    logging.raiseExceptions = False  # a log file that cannot be written (a read-only run dir) stays silent
    record = logging.LogRecord("train", logging.ERROR, __file__, 0, line, None, None)
    for handler in logging.getLogger().handlers:  # the file handlers only: the console has the line
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
    sys.exit(code)


def check_argv(argv: list[str], config_dir: str | os.PathLike) -> None:
    """:func:`check_jobs`, before Hydra creates a run dir: a mistake exits 2 with one line and leaves nothing behind."""
    try:
        check_jobs(argv, config_dir)
    except ZooError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


MAX_CHECKED_JOBS = 256  # a bigger sweep is checked job by job as it runs


def check_jobs(argv: list[str], config_dir: str | os.PathLike) -> None:
    """Compose the config of every job the command line asks for through the schema and validate it, so
    that a bad value is refused before Hydra creates a run or sweep dir. Left to Hydra and to the run:
    Hydra's flags, glob sweeps, a resumed run's checkpoint and ranges (checked when it starts, against the
    saved config; a missing path is refused here), and data that a launcher's machines may hold but this one
    does not."""
    from .checkpoint import resolve_checkpoint
    from .data import source_path

    args = [a for a in argv[1:] if a not in ("-m", "--multirun")]
    if any(a.startswith("-") for a in args):  # --help, --cfg, --config-dir, ...: Hydra's business
        return
    multirun = len(args) < len(argv) - 1 or "hydra.mode=MULTIRUN" in args
    jobs = expand(args)
    if jobs is None or len(jobs) > MAX_CHECKED_JOBS:
        return
    if not multirun and len(jobs) > 1:
        sweep = next(a for a in args if len(expand([a]) or ()) > 1)
        raise ConfigError(f"{sweep} is a sweep: add -m to run one job per value "
                          "(or quote it, key='a,b', for one string value)")
    resume = [a.partition("=")[2].strip("'\"") for a in args if a.startswith("resume=")]
    resuming = bool(resume) and resume[-1] not in ("", "null", "None")
    if resuming and not multirun:
        resolve_checkpoint(resume[-1])  # one line for a mistyped path, before any dir exists
    check_writable(args, multirun, resume[-1] if resuming else None)
    local = not any(a.startswith("hydra/launcher=") for a in args)
    try:
        for cfg in compose_configs(config_dir, jobs):  # types, keys and choices
            if resuming:  # the rest is the saved config's, checked when the run has read it
                continue
            cfg = validate_config(cfg)
            if local and cfg.data.name == "cifar10_folder":
                source_path(cfg.data.path)
    except ZooError:
        raise
    except Exception:  # not a config mistake: Hydra (or the run) says what is wrong, in its own words
        return


def check_writable(args: list[str], multirun: bool, resume: str | None) -> None:
    """The run (or sweep) dir, or the nearest folder above it that exists, is writable: Hydra writes there
    first, and fails with a traceback."""
    from .config import resumed_run_dir

    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    given = [a.partition("=")[2] for a in args if a.startswith(key + "=")]
    where = given[-1] if given else "multirun" if multirun else "outputs"
    run_dir = (resumed_run_dir(resume) if resume and not multirun else None) or Path(where.partition("$")[0] or ".")
    folder = Path(os.path.abspath(run_dir.expanduser()))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}={where}: {folder} is not writable (read-only or not yours): "
                          f"give {key}= a writable path")
