"""What the command line, the resume check and the report share about a run's keys, without torch: the
keys that change nothing a run computes, flattened configs, and a sweep's jobs."""

from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# Keys that say where a run reads and writes, on what and how fast it runs, and how it reports progress,
# not what it computes: they stay out of job-dir names (:func:`job_dir_name`), a resumed run
# may change them, and the report pairs runs that differ only in them (amp and channels_last: the report
# compares the precision each run resolved to instead).
ENVIRONMENT_KEYS = (
    "resume",
    "device",
    "amp",
    "channels_last",
    "compile",
    "data.path",
    "data.cache_dir",
    "data.root",
    "logger",
    "log_every_s",
    "overwrite",
)


def is_environment_key(key: str) -> bool:
    """Whether ``key`` (flattened: ``logger.wandb.mode``) is one of :data:`ENVIRONMENT_KEYS` or inside one."""
    return any(key == k or key.startswith(k + ".") for k in ENVIRONMENT_KEYS)


# A job dir's name in bytes at most: file systems allow 255 per name; the rest is room for a suffix
# (an archive of the dir, ``<name>.tar.gz``).
MAX_JOB_DIR_BYTES = 200


def job_dir_name(num: Any, overrides: Iterable[str]) -> str:
    """A sweep job's dir name, ``<num>_<overrides>`` (``3_drop_path_rate=0.1,seed=2``): the job's
    command-line overrides, sorted, without those of :data:`ENVIRONMENT_KEYS` (:func:`is_environment_key`),
    so that a rerun with another device or logger finds its job's dir again. Past
    :data:`MAX_JOB_DIR_BYTES`, its head and a hash of all those overrides (they are in the job's
    .hydra/overrides.yaml), so that two jobs never share a name."""
    kept = ",".join(sorted(o for o in overrides if not is_environment_key(override_key(o))))
    name = f"{num}_{kept}"
    if len(name.encode()) <= MAX_JOB_DIR_BYTES:
        return name
    digest = hashlib.sha1(kept.encode()).hexdigest()[:12]
    head = name.encode()[: MAX_JOB_DIR_BYTES - len(digest) - 1].decode(errors="ignore")  # whole characters only
    return f"{head}_{digest}"


def override_key(override: str) -> str:
    """The key or group a ``key=value`` override sets, as Hydra names it: ``++logger@x=csv`` -> ``logger``."""
    return override.partition("=")[0].strip().lstrip("+~").partition("@")[0]


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"model": {"name": "x"}}`` -> ``{"model.name": "x"}`` (plain dicts, as OmegaConf.to_container gives)."""
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: node} if prefix else {}


def expand(overrides: list[str]) -> list[list[str]] | None:
    """The ``key=value`` overrides of each job Hydra's basic sweeper runs for ``overrides`` (later keys
    replace earlier ones; one job without a sweep); None where that needs more than the overrides (a glob
    sweep) or Hydra cannot parse them."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(overrides), None)[0]
    except Exception:  # Hydra says what is wrong when it runs
        return None


def is_search(sweeper: Any) -> bool:
    """Whether a sweep's ``hydra.sweeper`` node is a search (Optuna's, ...) that picks its jobs' values as
    it runs, rather than Hydra's basic sweeper, whose jobs its params and command line spell out."""
    return "BasicSweeper" not in str((sweeper or {}).get("_target_", "BasicSweeper"))


def sweep_jobs(sweeper: Any, overrides: list[str]) -> list[list[str]] | None:
    """Each job's overrides as Hydra's basic sweeper runs them (:func:`expand`): the ``hydra.sweeper``
    node's params first, then ``overrides``, which win; a search's params are search spaces, not jobs,
    and are left out."""
    params = {} if is_search(sweeper) else (sweeper or {}).get("params") or {}
    return expand([*(f"{key}={value}" for key, value in params.items()), *overrides])


_PLAIN = re.compile(r"[\w./:@+-]+")  # a value Hydra's grammar reads as it is


def quoted_override(key: str, value: Any) -> str:
    """``key=value`` as one shell word that Hydra reads back as exactly ``value``: quoted for Hydra's
    override grammar where the value holds ``=``, ``,``, spaces, quotes, ``$`` and the like (an OmegaConf
    interpolation ``${`` escaped), then for a POSIX shell."""
    from hydra.core.override_parser.types import Quote, QuotedString

    text = str(value)
    if not _PLAIN.fullmatch(text):
        text = QuotedString(text.replace("${", "\\${"), Quote.single).with_quotes()
    return shlex.quote(f"{key}={text}")


def resume_command(run_dir: str | Path) -> str:
    """The command that continues the run in ``run_dir``, ready to paste into a shell (from the dir
    train.py was started in)."""
    return f"python train.py {quoted_override('resume', run_dir)}"


def override_value(override: str) -> Any:
    """The value Hydra reads from one ``key=value`` override (its quotes and escapes undone); None where
    Hydra cannot parse it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_overrides([override])[0].value()
    except Exception:  # Hydra says what is wrong when it runs
        return None
