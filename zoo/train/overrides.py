"""What the command line, the resume check and the report share about a run's keys, without torch: the
keys that change nothing a run computes, flattened configs, and a sweep's jobs."""

from __future__ import annotations

from typing import Any

# Keys that say where a run reads and writes, on what and how fast it runs, and how it reports progress,
# not what it computes: they stay out of job-dir names (configs/train.yaml's exclude_keys), a resumed run
# may change them, and the report pairs runs that differ only in them (amp and channels_last: the report
# compares the precision each run resolved to instead).
ENVIRONMENT_KEYS = (
    "resume", "device", "amp", "channels_last", "compile", "data.path", "data.cache_dir", "data.root",
    "logger", "log_every_s",
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
