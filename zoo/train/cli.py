"""The command line of train.py: the checks and adjustments made before Hydra parses its arguments,
and the Hydra task itself (:func:`run`), which lives here so that a launcher plugin can pickle it."""

from __future__ import annotations

import difflib
import itertools
import logging
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from omegaconf import DictConfig, OmegaConf

from .config import REMOVED_KEYS
from .errors import ConfigError, ZooError

# Config groups a user picks with ``group=<file name>`` (configs/<group>/<name>.yaml).
CONFIG_GROUPS = ("model", "data", "optim", "sched", "experiment")
_SIMPLE = re.compile(r"[A-Za-z0-9_./-]+")


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
    record = logging.LogRecord("train", logging.ERROR, __file__, 0, line, None, None)
    for handler in logging.getLogger().handlers:  # the file handlers only: the console has the line
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
    sys.exit(code)


def prepare_argv(argv: list[str], config_dir: str | os.PathLike) -> list[str]:
    """``argv`` checked before Hydra creates a run dir (:func:`check_overrides`, :func:`check_jobs`:
    a mistake exits 2 with one line and leaves nothing behind) and adjusted for Hydra (:func:`hydra_argv`)."""
    try:
        check_overrides(argv, config_dir)
        check_jobs(argv, config_dir)
    except ZooError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    return hydra_argv(argv)


MAX_CHECKED_JOBS = 256  # a bigger sweep is checked job by job as it runs


def check_jobs(argv: list[str], config_dir: str | os.PathLike) -> None:
    """Compose the config of every job the command line asks for and validate it, so that a bad value
    is refused before Hydra creates a run or sweep dir. What cannot be worked out here is left to Hydra
    and to the run: glob sweeps, values that need Hydra's runtime (``${hydra:...}``), environment
    variables of another machine, a resumed run's checkpoint (checked when it starts; only a missing
    path is refused here), and data that a launcher's machines may hold but this one does not."""
    from hydra import compose, initialize_config_dir

    from .checkpoint import resolve_checkpoint
    from .config import validate_config
    from .data import source_path

    args = [a for a in argv[1:] if a not in ("-m", "--multirun")]
    if any(a.startswith("-") for a in args):  # --help, --cfg, --config-dir, ...: Hydra's business
        return
    multirun = len(args) < len(argv) - 1 or "hydra.mode=MULTIRUN" in args
    if not multirun:
        _refuse_sweeps(args)
    resume = [a.partition("=")[2].strip("'\"") for a in args if a.startswith("resume=")]
    if resume and resume[-1] not in ("", "null", "None"):
        if not multirun:
            resolve_checkpoint(resume[-1])  # one line for a mistyped path, before any dir exists
        return
    jobs = _expand(args)
    if jobs is None or len(jobs) > MAX_CHECKED_JOBS:
        return
    local = not any(a.startswith("hydra/launcher=") for a in args)
    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
        for job in jobs:
            try:
                cfg = compose("train", overrides=job)
                validate_config(cfg)
                if local and cfg.data.name == "cifar10_folder":
                    source_path(cfg.data.path)
            except ZooError:
                raise
            except Exception:  # Hydra (or the run) will say what is wrong, in its own words
                return


def _refuse_sweeps(args: list[str]) -> None:
    """A sweep value (``a,b``, ``range(3)``) without ``-m``: one line saying what to do, instead of
    Hydra's six-line "Ambiguous value" message."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except Exception:
        return
    for o in parsed:
        if o.is_sweep_override() and not o.is_hydra_override():
            raise ConfigError(f"{o.input_line} is a sweep: add -m to run one job per value "
                              "(or quote it, key='a,b', for one string value)")


def _expand(args: list[str]) -> list[list[str]] | None:
    """The override lists of the jobs a basic sweep of ``args`` runs (one job without a sweep); None
    where that needs more than the command line (a glob sweep) or Hydra cannot parse it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except Exception:
        return None
    choices = []
    for o in parsed:
        if o.is_hydra_override():
            continue
        if o.is_sweep_override():
            if not o.is_discrete_sweep():
                return None
            try:
                choices.append([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()])
            except Exception:
                return None
        else:
            choices.append([o.input_line])
    return [list(job) for job in itertools.product(*choices)]


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def hydra_argv(argv: list[str]) -> list[str]:
    """Add Hydra overrides so that:

    - ``resume=<run dir or checkpoint>`` runs in that run dir (its .hydra/ keeps the original
      overrides; this invocation's go to .hydra/resume-<time>/);
    - under torchrun, ranks other than 0 create no run dir, write no log file and log only warnings
      (rank 0's timestamped dir may differ by a second from theirs; rank 0 writes every file).
    """
    args = list(argv[1:])
    if any(a in ("-m", "--multirun") or a.startswith(("--help", "-h", "--cfg", "-c", "--info")) for a in args):
        return argv
    has_run_dir = any(a.startswith("hydra.run.dir=") for a in args)
    if int(os.environ.get("RANK", "0")) > 0:
        return [argv[0], *args, "hydra.run.dir=.", "hydra.output_subdir=null",
                f"hydra.job_logging.handlers.file.filename={_quote(os.devnull)}", "hydra.job_logging.root.level=WARNING"]
    resume = [a.partition("=")[2] for a in args if a.startswith("resume=")]
    if resume and resume[-1] and not has_run_dir:
        path = Path(resume[-1].strip("'\"")).expanduser()
        run_dir = path if path.is_dir() else path.parent
        # Only into a dir that holds a run: a mistyped path must not get a .hydra/ written next to it.
        if (run_dir / "config.yaml").is_file() or (run_dir / ".hydra").is_dir():
            args += [f"hydra.run.dir={_quote(str(run_dir.resolve()))}",
                     f"hydra.output_subdir={_quote('.hydra/resume-' + time.strftime('%Y%m%d-%H%M%S'))}"]
    return [argv[0], *args]


def _values(value: str) -> list[str] | None:
    """The names a group override picks: one, or a comma-separated sweep; None for Hydra's richer syntax."""
    names = [v.strip().strip("'\"") for v in value.split(",")]
    return names if all(_SIMPLE.fullmatch(n) for n in names) else None


def _choices(config_dir: Path, group: str) -> list[str]:
    return sorted(p.stem for p in (config_dir / group).glob("*.yaml"))


def _known_keys(config_dir: Path) -> tuple[set[str], dict[str, set[str]]]:
    """The top-level keys any config file sets (train.yaml, experiments) and, per group, the keys any
    of its files (or an experiment) sets: a key outside these is unknown to every composition."""

    def keys(node: object) -> set[str]:
        return {k for k in node if k != "defaults"} if OmegaConf.is_dict(node) else set()

    experiments = [OmegaConf.load(f) for f in (config_dir / "experiment").glob("*.yaml")]
    top = keys(OmegaConf.load(config_dir / "train.yaml")).union(*(keys(e) for e in experiments))
    inner = {g: set().union(*(keys(OmegaConf.load(f)) for f in (config_dir / g).glob("*.yaml")),
                            *(keys(e.get(g)) for e in experiments)) for g in CONFIG_GROUPS}
    return top, inner


def _hint(name: str, options: list[str] | set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(options), n=3, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else ""


def check_overrides(argv: list[str], config_dir: str | os.PathLike) -> None:
    """Catch the two command-line slips Hydra answers with a multi-line message, before Hydra runs:
    a config group file that does not exist (``model=resnt20``) and a key no config defines
    (``drop_path_rat=0.1``), each as one :class:`ConfigError` that lists the close matches.

    Overrides with a ``+``/``~`` prefix, Hydra's sweep functions, ``hydra.*`` keys and runs with another
    config dir are left to Hydra.
    """
    config_dir = Path(config_dir)
    args = argv[1:]
    if not (config_dir / "train.yaml").is_file() or any(
        a.startswith(("--config-path", "--config-dir", "--config-name", "-cp", "-cd", "-cn", "hydra.searchpath"))
        for a in args
    ):
        return
    known: tuple[set[str], dict[str, set[str]]] | None = None
    for arg in args:
        key, eq, value = arg.partition("=")
        if not eq or arg.startswith(("-", "+", "~")) or key.startswith("hydra") or "/" in key or "@" in key:
            continue
        if key in CONFIG_GROUPS:
            names = _values(value)
            choices = _choices(config_dir, key)
            for name in names or ():
                if name not in choices and not (key == "experiment" and name == "null"):
                    raise ConfigError(
                        f"{key}={name}: there is no configs/{key}/{name}.yaml{_hint(name, choices)} "
                        f"(choices: {', '.join(choices)})"
                    )
            continue
        top, inner = known = known or _known_keys(config_dir)
        head, _, rest = key.partition(".")
        if head in REMOVED_KEYS:
            raise ConfigError(f"{head} was removed: {REMOVED_KEYS[head]}")
        if head not in top and head not in CONFIG_GROUPS:
            raise ConfigError(f"unknown key {key!r}{_hint(head, top)} (to add a new key: +{arg})")
        if head in CONFIG_GROUPS and head != "experiment" and rest:
            sub = rest.partition(".")[0]
            if sub not in inner[head]:
                hint = _hint(sub, inner[head]).replace("mean ", f"mean {head}.").replace(", ", f", {head}.")
                raise ConfigError(
                    f"unknown key {key!r}{hint} (keys the {head} configs set: {', '.join(sorted(inner[head]))}; "
                    f"to add a new key: +{arg})"
                )
