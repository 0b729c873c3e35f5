"""The command line of train.py: every job it asks for checked before Hydra makes a run dir, and the Hydra
task itself (:func:`run`), which lives here so that a launcher plugin can pickle it."""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

from omegaconf import DictConfig, OmegaConf

from .config.overrides import expand, override_key, override_value, sweep_jobs
from .config.schema import compose_config, compose_configs, validate_config
from .errors import ConfigError, ZooError
from .rundir.placement import check_run_dir, check_writable


def run(cfg: DictConfig) -> float | None:
    """The Hydra task: train in this job's output dir and print one closing line; returns the objective a
    sweeper maximises (hydra/sweeper=optuna_rate): the best validation accuracy, None without a validation
    split. A user's mistake
    (:class:`ZooError`) is one line on stderr and exit 2; a signal stops at a step boundary, saved,
    with exit 128 + the signal number. A job of a multirun is skipped, resumed or recorded as failed
    instead (:func:`zoo.train.sweep_job.run_job`)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        from .sweep_job import run_job

        return run_job(
            cfg, hc.runtime.output_dir, tuple(hc.overrides.task), partial(run_one, jobs_after=jobs_after(hc))
        )
    # A single run that saved nothing leaves no dir behind; a sweep's job dir stays, the record of its job.
    return run_one(cfg, hc.runtime.output_dir, tuple(hc.overrides.task), stub=hc.output_subdir)


def run_one(
    cfg: DictConfig, run_dir: str | Path, overrides: tuple[str, ...], jobs_after: int = 0, stub: str | None = None
) -> float | None:
    """:func:`run` for one run in ``run_dir`` (``jobs_after``: the sweep's rounds of jobs still to come, for
    its ETA; ``stub``: the run's Hydra subdir, to remove the dir when nothing was saved); returns its best
    validation accuracy (None without a split)."""
    run_dir = Path(run_dir)
    main = int(os.environ.get("RANK", "0")) == 0
    if main:
        logging.getLogger("train").info("run dir: %s", run_dir)
    s = _train_or_exit(cfg, run_dir, overrides, jobs_after, stub, main)
    if main:
        print(_done_line(s, run_dir))
    return s.get("best_val_acc")


def _train_or_exit(
    cfg: DictConfig, run_dir: Path, overrides: tuple[str, ...], jobs_after: int, stub: str | None, main: bool
) -> dict[str, Any]:
    """Train; returns the run's summary. A user's mistake, a file the run cannot write, a signal or a second
    Ctrl-C ends the process instead, with one last line that says where the run's files are (:func:`_exit`)."""
    from .loop import distributed as dist
    from .loop.run import train
    from .rundir.interrupt import TrainingInterrupted

    try:
        return train(cfg, run_dir, overrides, jobs_after)
    except ZooError as e:
        _exit(f"error: {e}{_where(run_dir, stub, main)}", 2)
    except OSError as e:
        if e.filename is None:  # not about a file the user can fix
            raise
        _exit(
            f"error: {e.filename}: {e.strerror}; a run writes only into its run dir: give it a writable "
            f"hydra.run.dir{_where(run_dir, stub, main)}",
            2,
        )
    except TrainingInterrupted as e:
        named = "continue with:" in str(e)  # the resume command names the dir
        _exit(f"interrupted: {e}{_where(run_dir, stub, main, not named)}", e.exit_code)
    except KeyboardInterrupt:  # a second Ctrl-C inside the loop, or one where no handler waits (joining torchrun)
        _exit(
            "interrupted: stopped at once by Ctrl-C; the last checkpoint saved (if any) is intact"
            f"{_where(run_dir, stub, main)}",
            128 + signal.SIGINT,
        )
    finally:
        dist.cleanup()


def _done_line(s: dict[str, Any], run_dir: Path) -> str:
    """A finished run's closing line, from its summary: model, test accuracy, epochs, time, device, run dir."""
    world = f" x{s['world_size']}" if s["world_size"] > 1 else ""
    at_best = f"test_acc_at_best_val={s['test_acc_at_best_val']:.4f} " if "test_acc_at_best_val" in s else ""
    return (
        f"done: {s['model']} test_acc={s['final_test_acc']:.4f} {at_best}"
        f"epochs={s['epochs']} in {s['wall_seconds_last_invocation']:.1f}s ({s['device']}{world}); run dir {run_dir}"
    )


SWEEP_JOBS = "ZOO_SWEEP_JOBS"  # set by check_jobs for a sweep's jobs (a launcher's processes inherit it)


def jobs_after(hc: Any) -> int:
    """In a sweep, the rounds of jobs after this one (the launcher's ``n_jobs`` run at once); 0 otherwise."""
    from hydra.types import RunMode

    total = int(os.environ.get(SWEEP_JOBS, "0"))
    if hc.mode != RunMode.MULTIRUN or not total:
        return 0
    parallel = OmegaConf.select(hc, "launcher.n_jobs", default=None) or 1
    parallel = parallel if parallel > 0 else os.cpu_count() or 1  # joblib's -1: every core
    return math.ceil(max(0, total - int(hc.job.num) - 1) / parallel)


def _where(run_dir: Path, stub: str | None, main: bool, name_it: bool = True) -> str:
    """The end of a stopped run's last line: where its files are. With ``stub`` (the run's Hydra subdir),
    a run that saved nothing removes its dir (:func:`runlog.remove_stub`)."""
    from .rundir.runlog import remove_stub

    if not main:
        return ""
    if stub is not None and remove_stub(run_dir, stub):
        return f" (nothing was saved: run dir {run_dir} removed)"
    return f" (run dir {run_dir})" if name_it else ""


def _exit(line: str, code: int) -> NoReturn:
    """Print the run's last line on stderr, and into its log file (train.log) too, then exit."""
    say(line)
    raise RunEnded(line, code)


def say(line: str, error: BaseException | None = None) -> None:
    """``line`` on stderr and at the end of the run's log file (train.log), with ``error``'s traceback there."""
    print(line, file=sys.stderr)
    logging.raiseExceptions = False  # a log file that cannot be written (a read-only run dir) stays silent
    exc_info = (type(error), error, error.__traceback__) if error is not None else None
    record = logging.LogRecord("train", logging.ERROR, __file__, 0, line, None, exc_info)
    for handler in logging.getLogger().handlers:  # the file handlers only: the console has the line
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


class RunEnded(SystemExit):
    """``sys.exit(code)`` that carries the run's last line, which a sweep job records (failed.json)."""

    def __init__(self, line: str, code: int):
        super().__init__(code)
        self.line = line


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
    that a bad value is refused before Hydra creates a run or sweep dir, or writes into one: for a single
    run also its checkpoint and saved config when it resumes, and its run dir (:mod:`.rundir.placement`).
    Left to Hydra and to the run: Hydra's flags, glob sweeps, a sweep's resumed jobs, and data that a
    launcher's machines may hold but this one does not."""
    from .rundir.checkpoint import resolve_checkpoint

    args = [a for a in argv[1:] if a not in ("-m", "--multirun")]
    if any(a.startswith("-") for a in args):  # --help, --cfg, --config-dir, ...: Hydra's business
        return
    multirun = len(args) < len(argv) - 1 or "hydra.mode=MULTIRUN" in args
    check_no_null_group(args, config_dir)
    jobs = expand_jobs(args, multirun, config_dir)
    if jobs is None or len(jobs) > MAX_CHECKED_JOBS:
        return
    if not multirun and len(jobs) > 1:
        sweep = next(a for a in args if len(expand([a]) or ()) > 1)
        raise ConfigError(
            f"{sweep} is a sweep: add -m to run one job per value (or quote it, key='a,b', for one string value)"
        )
    resume = [override_value(a) for a in args if a.startswith("resume=")]
    resuming = bool(resume) and resume[-1] not in ("", "null", "None", None)
    if resuming and not multirun:
        resolve_checkpoint(str(resume[-1]))  # one line for a mistyped path, before any dir exists
    check_writable(args, multirun, str(resume[-1]) if resuming else None)
    try:
        for cfg, job in zip(compose_configs(config_dir, jobs), jobs):  # types, keys and choices
            if resuming and not multirun:
                check_resume(cfg, job)
            if not resuming:  # a sweep's resumed jobs are checked against their saved configs as they start
                check_new_job(cfg, args, multirun)
    except ZooError:
        raise
    except Exception:  # not a config mistake: Hydra (or the run) says what is wrong, in its own words
        return


def expand_jobs(args: list[str], multirun: bool, config_dir: str | os.PathLike) -> list[list[str]] | None:
    """Each job's overrides (:func:`expand`); a sweep's as Hydra's basic sweeper makes them from its
    config's sweeper params and the command line (:func:`sweep_jobs`), their count kept for the sweep's
    eta (:data:`SWEEP_JOBS`)."""
    if not multirun:
        return expand(args)
    jobs = sweep_jobs(sweeper_node(args, config_dir), args)  # None where Hydra cannot parse them
    if jobs is not None:
        os.environ[SWEEP_JOBS] = str(len(jobs))
    return jobs


def sweeper_node(args: list[str], config_dir: str | os.PathLike) -> Any:
    """The ``hydra.sweeper`` node of the config the command line's fixed overrides compose (an experiment
    sets its params: ``experiment=compare``); None where it does not compose."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:  # Hydra composes the sweep's own config without the sweep overrides (lr=choice(0.1) is one)
        fixed = [o.input_line for o in OverridesParser.create().parse_overrides(args) if not o.is_sweep_override()]
        return compose_config(config_dir, fixed, hydra=True).hydra.sweeper
    except Exception:  # a mistake the job checks report, in their words
        return None


def check_no_null_group(args: list[str], config_dir: str | os.PathLike) -> None:
    """``<group>=null`` (``logger=null``): Hydra refuses it with a traceback; ``~<group>`` is its way."""
    groups = {"model", *(p.name for p in Path(config_dir).iterdir() if p.is_dir())}
    for arg in (a for a in args if not a.startswith("~")):  # ~group: Hydra's own way to leave one out
        key = override_key(arg)
        values = [job[0].partition("=")[2] for job in expand([arg]) or ()]  # each value of a sweep
        if key in groups and "null" in (v.strip().lower() for v in values):
            raise ConfigError(f"{arg}: a config group takes one of its names, not null; ~{key} leaves the group out")


def check_new_job(cfg: DictConfig, args: list[str], multirun: bool) -> None:
    """A new job's config in range; with an Optuna search, a validation split to maximise; unless a
    launcher runs it elsewhere, the data folder and init_from checkpoint it reads; a single run's dir."""
    from .data.cifar10 import source_path
    from .rundir.checkpoint import resolve_checkpoint

    cfg = validate_config(cfg)
    search = next((a for a in args if a.startswith("hydra/sweeper=optuna")), None)
    if search and cfg.data.val_size == 0:
        raise ConfigError(
            f"{search} maximises validation accuracy: hold out training images with "
            "data.val_size=<N> (a multiple of 10, e.g. 5000)"
        )
    local = not any(a.startswith("hydra/launcher=") for a in args)
    if local and cfg.data.name == "cifar10_folder":
        source_path(cfg.data.path)
    if local and cfg.init_from:
        resolve_checkpoint(cfg.init_from, "init_from")
    if not multirun and int(os.environ.get("RANK", "0")) == 0:  # torchrun's other ranks write no files
        check_run_dir(args, cfg.overwrite)


def check_resume(cfg: DictConfig, overrides: list[str]) -> None:
    """What a resumed run checks when it starts, before Hydra writes into the run's dir: a checkpoint
    that loads, overrides that change only environment keys, the saved config's ranges, a free dir."""
    from .rundir.checkpoint import load_checkpoint, resumed_config
    from .rundir.runlog import check_unlocked

    saved = load_checkpoint(cfg.resume)
    validate_config(resumed_config(cfg, saved, overrides))
    if int(os.environ.get("RANK", "0")) == 0:  # torchrun's other ranks write no files
        check_unlocked(Path(saved["path"]).parent)
