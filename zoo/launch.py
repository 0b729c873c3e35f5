"""Command-line adjustments train.py makes before Hydra parses its arguments."""

from __future__ import annotations

import os
import time
from pathlib import Path


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
        if run_dir.is_dir():
            args += [f"hydra.run.dir={_quote(str(run_dir.resolve()))}",
                     f"hydra.output_subdir={_quote('.hydra/resume-' + time.strftime('%Y%m%d-%H%M%S'))}"]
    return [argv[0], *args]
