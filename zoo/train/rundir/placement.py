"""Where a run's files go, decided before Hydra writes anything: the run dir Hydra resolves (made new for a
single run, a resumed run's own dir), the ``zoo.*`` resolvers configs/train.yaml's ``hydra:`` node uses,
and the checks that a new run's dir is free and writable."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ..._weights import CHECKPOINT_NAME
from ..config.overrides import job_dir_name, override_value
from ..errors import ConfigError


def resumed_run_dir(resume: str | None) -> Path | None:
    """The run dir ``resume=`` names: that dir, or the dir of the checkpoint file it names (where the run
    goes on writing); None when it names no run, so that a mistyped path gets no .hydra/ written next to it."""
    path = Path(resume).expanduser() if resume else None
    run_dir = None if path is None else path if path.is_dir() else path.parent
    marks = ("config.yaml", CHECKPOINT_NAME, ".hydra")  # a run's files, or a checkpoint copied out of its run
    if run_dir is None or not (path.is_file() or any((run_dir / mark).exists() for mark in marks)):
        return None
    return run_dir.resolve()


_DEFAULT_RUN_DIR: dict[str, Any] = {"reserve": False, "dir": None}


def reserve_run_dir(argv: list[str]) -> None:
    """For a single run with the default run dir: from now on in this process, that dir is made at once when
    Hydra resolves it, and made new: when another run took the name (two runs started in the same second),
    ``_2``, ``_3``, ... is appended. A sweep, Hydra's flags and a dir given by ``hydra.run.dir=`` never ask."""
    if any(a.startswith("-") or a.startswith("hydra.mode=") for a in argv[1:]):
        return
    _DEFAULT_RUN_DIR["reserve"] = True


def _fresh_run_dir(default: str) -> str:
    if not _DEFAULT_RUN_DIR["reserve"]:
        return default
    if _DEFAULT_RUN_DIR["dir"] is None:  # once: Hydra resolves the run dir more than once
        Path(default).parent.mkdir(parents=True, exist_ok=True)
        for n in range(1, 10_000):
            candidate = default if n == 1 else f"{default}_{n}"
            try:
                os.mkdir(candidate)  # atomic: of two runs asking for one name, one gets it
            except FileExistsError:
                continue
            _DEFAULT_RUN_DIR["dir"] = candidate
            break
    return _DEFAULT_RUN_DIR["dir"] or default


def register_resolvers() -> None:
    """The resolvers of configs/train.yaml's hydra node: a resumed run runs in its own dir (this invocation's
    .hydra/ files in .hydra/resume-<time>/); torchrun ranks above 0 create no run dir, write no log file and
    log only warnings (rank 0 writes every file); job-dir names leave out the environment keys and stay
    short (:func:`job_dir_name`)."""
    worker = int(os.environ.get("RANK", "0")) > 0
    stamp = time.strftime("%Y%m%d-%H%M%S")
    resolvers = {
        "zoo.run_dir": lambda resume, default: (
            "." if worker else str(resumed_run_dir(resume) or _fresh_run_dir(default))
        ),
        "zoo.output_subdir": lambda resume: (
            None if worker else f".hydra/resume-{stamp}" if resumed_run_dir(resume) else ".hydra"
        ),
        "zoo.log_file": lambda default: os.devnull if worker else default,
        "zoo.log_level": lambda: "WARNING" if worker else "INFO",
        "zoo.job_dir": job_dir_name,
    }
    for name, resolver in resolvers.items():
        OmegaConf.register_new_resolver(name, resolver, replace=True)


def check_writable(args: list[str], multirun: bool, resume: str | None) -> None:
    """The run (or sweep) dir, or the nearest folder above it that exists, is writable: Hydra writes there
    first, and fails with a traceback."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    given = [a.partition("=")[2] for a in args if a.startswith(key + "=")]
    where = given[-1] if given else "multirun" if multirun else "outputs"
    run_dir = (resumed_run_dir(resume) if resume and not multirun else None) or Path(where.partition("$")[0] or ".")
    folder = Path(os.path.abspath(run_dir.expanduser()))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{key}={where}: {folder} is not writable (read-only or not yours): give {key}= a writable path"
        )


def check_run_dir(args: list[str], overwrite: bool) -> None:
    """A new run's ``hydra.run.dir=`` holds no other run's records (or ``overwrite=true`` says to replace
    them) and no other process writes there. The default dir is made new when the run starts."""
    from .runlog import check_new_run_dir, check_unlocked

    given = [override_value(a) for a in args if a.startswith("hydra.run.dir=")]
    if not given or not isinstance(given[-1], str) or "${" in given[-1]:  # an interpolation: Hydra resolves it
        return
    run_dir = Path(given[-1]).expanduser()
    if not overwrite:
        check_new_run_dir(run_dir)
    check_unlocked(run_dir)
