"""Read a Hydra multirun sweep dir: its runs, their configurations, and what is missing.

A sweep dir holds one job dir per run (``0/``, ``1/``, ...), each with ``.hydra/config.yaml``,
``.hydra/overrides.yaml``, ``metrics.jsonl`` (one line per finished epoch) and, once the run ended,
``summary.json``; Hydra writes ``multirun.yaml`` at the sweep root. Runs are grouped into
configurations by their overrides minus the seed; a configuration's baseline is the
``drop_path_rate=0`` configuration with the same other overrides, or else the one whose resolved
config differs from it only in keys that change nothing at rate 0 (:func:`baseline_of`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ..config.overrides import flatten, is_environment_key, is_search, override_key, sweep_jobs
from ..errors import ZooError

SEED_KEY = "seed"
FAILED_NAME = "failed.json"  # a failed job's exit status and error line (zoo.train.sweep_job)
RATE_KEY = "drop_path_rate"
RATES_KEY = "drop_path_rates"  # one rate per block, given instead of drop_path_rate

Pairs = tuple[tuple[str, str], ...]  # sorted (key, value) pairs: one configuration's identity


class ReportError(ZooError):
    """The sweep dir cannot be reported on (missing, or holds no runs)."""


@dataclass
class Run:
    """One job dir of the sweep and what it wrote so far."""

    path: Path
    name: str  # the job dir relative to the sweep dir, e.g. "3"
    overrides: list[str] | None  # from .hydra/overrides.yaml; None when that file is absent
    config: dict[str, Any]  # the job's config, flattened to dotted keys
    metrics: list[dict[str, Any]]  # one dict per finished epoch
    summary: dict[str, Any] | None  # None until the run finished
    bad_lines: int = 0  # metrics.jsonl lines that did not parse (a run killed mid-write)
    failure: dict[str, Any] | None = None  # failed.json, {"exit_status": 2, "error": "error: ..."}; None: no failure
    unreadable: str | None = None  # why its summary.json cannot be used (the run is then left out), if so

    @property
    def finished(self) -> bool:
        return self.summary is not None

    @property
    def seed(self) -> Any:
        for source in (self.config, self.summary or {}, dict(override_pairs(self.overrides or []))):
            if SEED_KEY in source:
                return source[SEED_KEY]
        return None

    @property
    def rate(self) -> float | None:
        """The largest drop path rate the run was configured with (not the time-scheduled current one): its
        drop_path_rate, or the largest of its drop_path_rates where it gave one rate per block."""
        for source in (self.config, self.summary or {}, dict(override_pairs(self.overrides or []))):
            rates = source.get(RATES_KEY)
            if RATE_KEY in source or isinstance(rates, list):
                try:
                    return max(map(float, rates), default=0.0) if isinstance(rates, list) else float(source[RATE_KEY])
                except (TypeError, ValueError):
                    return None
        return None

    @property
    def planned_epochs(self) -> Any:
        return self.config.get("epochs", (self.summary or {}).get("epochs"))

    @property
    def final_acc(self) -> float:
        return float(self.summary["final_test_acc"])  # type: ignore[index]

    @property
    def best_acc(self) -> float:
        """The highest test accuracy of any epoch: chosen on the test set (reported only with that label)."""
        return float(self.summary["best_test_acc"])  # type: ignore[index]

    @property
    def at_best_val(self) -> float | None:
        """Test accuracy at the epoch of the best validation accuracy; None for a run without a validation split."""
        value = (self.summary or {}).get("test_acc_at_best_val")
        return None if value is None else float(value)


@dataclass
class Configuration:
    """The runs that share every override but the seed."""

    key: Pairs
    runs: list[Run]
    label: str = ""

    @property
    def rate(self) -> float | None:
        rates = {r.rate for r in self.runs}
        return rates.pop() if len(rates) == 1 else None

    @property
    def is_baseline(self) -> bool:
        return self.rate == 0.0

    @property
    def finished(self) -> list[Run]:
        return [r for r in self.runs if r.finished]

    def without_rate(self) -> Pairs:
        return tuple(p for p in self.key if p[0] != RATE_KEY)


@dataclass
class Sweep:
    """Everything the report needs from a sweep dir."""

    path: Path
    runs: list[Run]  # job dirs with at least one metrics line
    configurations: list[Configuration]
    common: Pairs  # overrides every configuration shares (shown once, not in each label)
    no_metrics: list[Run] = field(default_factory=list)  # job dirs without a metrics line yet
    not_started: list[Pairs] = field(default_factory=list)  # jobs multirun.yaml asks for, with no dir
    multirun: dict[str, Any] | None = None  # the sweep's multirun.yaml as a plain dict
    failed: list[Run] = field(default_factory=list)  # job dirs with a failed.json, with or without metrics
    unreadable: list[Run] = field(default_factory=list)  # job dirs whose summary.json cannot be used

    def short(self, pairs: list[tuple[str, str]] | Pairs) -> str:
        """Overrides without those every job shares, as ``key=value`` words."""
        return " ".join(f"{k}={v}" for k, v in pairs if (k, v) not in self.common) or "(no overrides)"

    @property
    def searched(self) -> bool:
        """Whether a search (:func:`is_search`) chose the jobs' values: its trials have no baseline to pair with."""
        return is_search((self.multirun or {}).get("hydra", {}).get("sweeper"))

    def run_label(self, run: Run) -> str:
        return self.short(override_pairs(run.overrides)) if run.overrides is not None else f"job {run.name}"


def override_pairs(overrides: list[str]) -> list[tuple[str, str]]:
    """``["+a.b=1", "seed=0"]`` -> ``[("a.b", "1"), ("seed", "0")]``."""
    return [(override_key(item), item.partition("=")[2]) for item in overrides]


def _load_yaml(path: Path) -> Any:
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def _read_metrics(path: Path) -> tuple[list[dict[str, Any]], int]:
    rows, bad = [], 0
    if not path.is_file():
        return rows, bad
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(row, dict) and ("test_acc" not in row or _is_accuracy(row["test_acc"])):
            rows.append(row)
        else:
            bad += 1
    return rows, bad


def _is_accuracy(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1  # False for nan


def _read_summary(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(summary.json, None), (None, None) when there is none yet, or (None, why it cannot be used): not
    JSON, not an object, or an accuracy that is not a number in [0, 1] (nan, a string)."""
    if not path.is_file():
        return None, None
    try:
        summary = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return None, f"summary.json is not readable JSON ({type(e).__name__}: {e})"
    if not isinstance(summary, dict):
        return None, f"summary.json holds a {type(summary).__name__}, not a JSON object"
    for key in ("final_test_acc", "best_test_acc", "test_acc_at_best_val"):
        if (key == "final_test_acc" or summary.get(key) is not None) and not _is_accuracy(summary.get(key)):
            return None, f"summary.json's {key} is {summary.get(key)!r}, not a number in [0, 1]"
    return summary, None


def _is_job_dir(path: Path) -> bool:
    return (path / ".hydra").is_dir() or (path / "metrics.jsonl").is_file()


def _job_dirs(root: Path) -> list[Path]:
    """Job dirs under ``root`` (any depth, so custom ``hydra.sweep.subdir`` patterns work), numeric names first."""
    if (root / "metrics.jsonl").is_file():  # a single run's dir
        return [root]
    found: list[Path] = []
    stack = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    while stack:
        d = stack.pop()
        if _is_job_dir(d):
            found.append(d)
        else:
            stack.extend(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
    return sorted(found, key=lambda p: [_natural(part) for part in p.relative_to(root).parts])


def _natural(name: str) -> tuple[int, int, str]:
    """Sort key: job dirs by their leading job number ("2_resnet8" before "10_resnet8"), then by name."""
    digits = re.match(r"\d+", name)
    return (0, int(digits.group()), name) if digits else (1, 0, name)


def load_run(path: Path, root: Path) -> Run:
    hydra_dir = path / ".hydra"
    overrides = _load_yaml(hydra_dir / "overrides.yaml") if (hydra_dir / "overrides.yaml").is_file() else None
    config_file = hydra_dir / "config.yaml" if (hydra_dir / "config.yaml").is_file() else path / "config.yaml"
    config = flatten(_load_yaml(config_file)) if config_file.is_file() else {}
    metrics, bad = _read_metrics(path / "metrics.jsonl")
    summary, unreadable = _read_summary(path / "summary.json")
    name = path.relative_to(root).as_posix() if path != root else path.name
    failure = _read_failure(path / FAILED_NAME) if summary is None else None
    overrides = [str(o) for o in overrides] if overrides is not None else None
    return Run(path, name, overrides, config, metrics, summary, bad, failure, unreadable)


def _read_failure(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = None
    return record if isinstance(record, dict) else {"error": f"unreadable {path.name}"}


def _run_keys(runs: list[Run]) -> list[Pairs]:
    """Each run's configuration key: its overrides minus the seed, or, when some run lacks an
    overrides file, the config values that differ between runs (minus the seed)."""
    if all(r.overrides is not None for r in runs):
        return [tuple(sorted((k, v) for k, v in override_pairs(r.overrides or []) if k != SEED_KEY)) for r in runs]
    keys = sorted({k for r in runs for k in r.config} - {SEED_KEY})
    varying = [k for k in keys if len({json.dumps(r.config.get(k), sort_keys=True, default=str) for r in runs}) > 1]
    return [tuple((k, json.dumps(r.config.get(k), default=str)) for k in varying) for r in runs]


def expected_jobs(multirun: dict[str, Any]) -> list[Pairs] | None:
    """The jobs a BasicSweeper launches for this multirun.yaml (its sweeper params, then the command
    line's overrides), or None when that cannot be worked out."""
    hydra = multirun.get("hydra", {})
    if is_search(hydra.get("sweeper")):
        return None
    jobs = sweep_jobs(hydra.get("sweeper"), list(hydra.get("overrides", {}).get("task", []) or []))
    return None if jobs is None else [tuple(sorted(override_pairs(job))) for job in jobs]


def load_sweep(path: str | Path) -> Sweep:
    """Read every job dir under ``path``. Raises ReportError if it does not exist or holds no runs."""
    root = Path(path)
    if not root.exists():
        raise ReportError(f"sweep dir {str(root)!r} does not exist")
    if not root.is_dir():
        raise ReportError(f"{str(root)!r} is not a directory; give the sweep dir of a multirun")
    all_runs = [load_run(d, root) for d in _job_dirs(root)]
    unreadable = [r for r in all_runs if r.unreadable]
    runs = [r for r in all_runs if r.metrics and not r.unreadable]
    if not runs and not any(r.failure is not None for r in all_runs):  # failed jobs alone: a report that lists them
        raise _no_runs(root, all_runs, unreadable)
    multirun = _load_multirun(root)
    jobs = expected_jobs(multirun) if multirun and all(r.overrides is not None for r in all_runs) else None
    groups: dict[Pairs, list[Run]] = {}
    for run, key in zip(runs, _run_keys(runs)):
        groups.setdefault(key, []).append(run)
    common = _common_overrides(groups, all_runs, jobs)
    have = {tuple(sorted(override_pairs(r.overrides or []))) for r in all_runs}
    not_started = [job for job in jobs or [] if job not in have]
    no_metrics = [r for r in all_runs if not r.metrics and not r.unreadable]
    return Sweep(
        root,
        runs,
        _configurations(groups, common),
        common,
        no_metrics,
        not_started,
        multirun,
        [r for r in all_runs if r.failure is not None],
        unreadable,
    )


def _no_runs(root: Path, all_runs: list[Run], unreadable: list[Run]) -> ReportError:
    """The error for a sweep dir with nothing to report: what its job dirs lack, or that it has none."""
    what = f"{len(all_runs)} job dir(s) but none has a metrics line yet" if all_runs else "no job dirs"
    if unreadable:
        what = f"{len(unreadable)} job dir(s) with an unreadable summary.json ({unreadable[0].name}: {unreadable[0].unreadable})"
    return ReportError(f"no runs in {str(root)!r}: {what} (expected job dirs with metrics.jsonl)")


def _load_multirun(root: Path) -> dict[str, Any] | None:
    """The sweep's multirun.yaml (in the sweep dir, or its .hydra dir) as a plain dict; None without one."""
    multirun_file = next((f for f in (root / "multirun.yaml", root / ".hydra" / "multirun.yaml") if f.is_file()), None)
    return _load_yaml(multirun_file) if multirun_file else None


def _common_overrides(groups: dict[Pairs, list[Run]], all_runs: list[Run], jobs: list[Pairs] | None) -> Pairs:
    """What every job of the sweep shares (runs, job dirs without metrics, jobs not started), shown once;
    labels keep only what tells configurations apart, so they stay short while a sweep runs. Nothing
    when every job has the same overrides."""
    everything = [set(k) for k in groups] + [
        set(_without_seed(r.overrides)) for r in all_runs if r.overrides is not None
    ]
    everything += [set(_without_seed(job)) for job in jobs or []]
    return tuple(sorted(set.intersection(*everything))) if len({frozenset(k) for k in everything}) > 1 else ()


def _configurations(groups: dict[Pairs, list[Run]], common: Pairs) -> list[Configuration]:
    """A configuration per group of runs, labelled by the overrides not all jobs share; baselines first,
    then by rate, so every table reads from "without" to "with"."""
    configurations = []
    for key, group in groups.items():
        label = " ".join(f"{k}={v}" for k, v in key if (k, v) not in common) or "(no overrides)"
        configurations.append(Configuration(key, group, label))
    configurations.sort(key=lambda c: (c.without_rate(), math.inf if c.rate is None else c.rate))
    return configurations


def failed_jobs(path: str | Path) -> list[Run]:
    """The job dirs under ``path`` whose last attempt failed (a failed.json and no summary.json)."""
    root = Path(path)
    dirs = _job_dirs(root) if root.is_dir() else []
    return [run for run in (load_run(d, root) for d in dirs if (d / FAILED_NAME).is_file()) if run.failure is not None]


def _without_seed(overrides: list[str] | Pairs) -> list[tuple[str, str]]:
    pairs = override_pairs(overrides) if overrides and isinstance(overrides[0], str) else list(overrides)
    return [(k, v) for k, v in pairs if k != SEED_KEY]  # type: ignore[misc]


def _same_at_rate_0(key: str) -> bool:
    """Whether ``key`` computes nothing different at drop_path_rate 0 (every drop path key, the seed's
    pairing aside) or changes nothing a run computes (ENVIRONMENT_KEYS)."""
    return key.startswith(("drop_path_", "seed")) or is_environment_key(key)


def _what_it_computes(config: Configuration) -> dict[str, Any] | None:
    """The resolved config of ``config``'s runs without :func:`_same_at_rate_0` keys, with the precision
    and layout each run resolved (summary.json); None when its runs disagree or recorded none."""
    found = [{k: v for k, v in r.config.items() if not _same_at_rate_0(k)} for r in config.runs]
    for run, values in zip(config.runs, found):  # amp=auto and amp=false compute alike where auto meant fp32
        values.update({k: run.summary[k] for k in ("amp", "channels_last") if run.summary and k in run.summary})
    return found[0] if found and found[0] and all(f == found[0] for f in found) else None


def baseline_of(config: Configuration, sweep: Sweep) -> Configuration | None:
    """The drop_path_rate=0 configuration with the same other overrides; failing that, the only
    rate-0 configuration whose runs' resolved configs differ from ``config``'s just in drop path keys
    (all of them do nothing at rate 0), the seed and paths: e.g. a late-stochastic-depth arm swept on
    its own into a subdir of the sweep whose rate-0 runs it shares. None if there is none."""
    if config.is_baseline:
        return None
    baselines = [other for other in sweep.configurations if other.is_baseline]
    for other in baselines:
        if other.without_rate() == config.without_rate():
            return other
    computes = _what_it_computes(config)
    same = [other for other in baselines if computes is not None and _what_it_computes(other) == computes]
    return same[0] if len(same) == 1 else None
