"""scripts/gpu_check.sh, the prepared GPU run, in its CPU dry mode: every stage runs (tiny models, a
data subset) and writes its files, so the script does not break between the sessions lent a GPU."""

import json
import os
import subprocess

import pytest

from conftest import REPO


@pytest.mark.slow
def test_gpu_check_dry_run_on_the_cpu(tmp_path, cifar10_archive):
    env = {**os.environ, "ZOO_CIFAR10": str(cifar10_archive), "GPU_CHECK_RUNS": str(tmp_path / "runs")}
    out = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--dry", "--out", str(tmp_path / "out")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["comparison.md", "comparison.png", "cuda_tests.txt", "gpu_check.json", "gpu_check.md"]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert report["tests"]["status"] == "passed" and "skipped" in report["tests"]["summary"]
    eager = [r for r in report["throughput"] if not r["compiled"]]
    assert len(eager) == 4 and all(r["images_per_s"] > 0 for r in eager)
    assert report["comparison"]["runs"] == 4 and len(report["comparison"]["summaries"]) >= 2
    assert "| resnet8 | 16 | False | mask |" in (tmp_path / "out" / "gpu_check.md").read_text()
