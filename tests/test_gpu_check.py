"""scripts/gpu_check.sh, the prepared GPU run: its budget table matches what the script enforces and fits
8 minutes, and its CPU dry mode runs every stage (tiny models, a data subset) and writes its files, so
the script does not break between the sessions that have a GPU."""

import functools
import json
import os
import re
import subprocess

import pytest

from conftest import REPO, load_script


@functools.cache
def gpu_check_module():
    return load_script(REPO / "scripts" / "gpu_check.py", "gpu_check")


def test_the_header_budget_is_the_plan_and_fits_eight_minutes():
    plan = gpu_check_module().REAL
    text = (REPO / "scripts" / "gpu_check.sh").read_text()
    table = dict(re.findall(r"^#\s{5}(\S[^\n]*?)\s{2,}(\d+)$", text, re.M))
    stages = [plan.setup_s, plan.tests_s, plan.throughput_s, plan.claim_s, plan.compare_s, plan.margin_s]
    assert [int(v) for k, v in table.items() if k != "total"] == stages, table
    assert sum(stages) == int(table["total"]) == plan.total_s <= 480
    assert f"timeout {plan.total_s:.0f} python3" in text
    assert plan.claim == ("resnet110", 512) and plan.compare_s >= 120


def test_the_comparison_is_sized_from_the_solo_rate_shared_by_the_runs():
    module = gpu_check_module()
    plan, report = module.REAL, module.Report()
    report.throughput = [
        {"model": "resnet20", "batch": 512, "compiled": False, "mode": "mask", "images_per_s": 36_000.0}
    ]
    # 6 runs at once: 6,000 images/s each, (145 - 60) s -> 510,000 images -> 8 epochs of 60,000
    assert module.compare_epochs(plan, report, 145, 6) == 8
    report.throughput[0]["batch"] = 128  # no row at the comparison's batch: the floor
    assert module.compare_epochs(plan, report, 145, 6) == plan.min_epochs


@pytest.mark.slow
def test_gpu_check_dry_run_on_the_cpu(tmp_path, cifar10_archive):
    env = {**os.environ, "ZOO_CIFAR10": str(cifar10_archive), "GPU_CHECK_RUNS": str(tmp_path / "runs")}
    out = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh"), "--dry", "--out", str(tmp_path / "out")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["comparison.md", "comparison.png", "cuda_tests.txt", "gpu_check.json", "gpu_check.md"]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert report["tests"]["status"] == "passed" and "skipped" in report["tests"]["summary"]
    eager = [r for r in report["throughput"] if not r["compiled"]]
    assert len(eager) == 4 and all(r["images_per_s"] > 0 for r in eager)
    claim = [(r["model"], r["batch"], r["mode"]) for r in report["throughput"] if r["compiled"] and "images_per_s" in r]
    assert claim == [("resnet8", 16, "mask"), ("resnet8", 16, "skip")]
    assert report["comparison"]["runs"] == 4 and len(report["comparison"]["summaries"]) >= 2
    md = (tmp_path / "out" / "gpu_check.md").read_text()
    assert "| resnet8 | 16 | False | mask |" in md and "Compiled, resnet8 at batch 16: skip / mask step time" in md
