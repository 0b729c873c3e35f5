"""What the command line, the resume check and the report share about a run's keys, without torch: the
keys that change nothing a run computes, flattened configs, and a sweep's jobs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

# Keys that say where a run reads and writes, on what and how fast it runs, and how it reports progress,
# not what it computes: they stay out of job-dir names (configs/train.yaml's exclude_keys), a resumed run
# may change them, and the report pairs runs that differ only in them (amp and channels_last: the report
# compares the precision each run resolved to instead).
ENVIRONMENT_KEYS = (
    "resume", "device", "amp", "channels_last", "compile", "data.path", "data.cache_dir", "data.root",
    "tensorboard", "log_every_s", "overwrite",
)


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
