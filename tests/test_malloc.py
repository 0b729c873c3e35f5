"""zoo.malloc: keeping freed memory in the process stops the per-step page faults of big CPU tensors."""

import os
import subprocess
import sys

import pytest

from zoo.malloc import ENV_SETTINGS, retain_freed_memory

# Allocates and frees a 40 MB tensor (above glibc's largest default mmap threshold, 32 MiB) in a loop
# and prints the setting and the median minor page faults per allocation (the median, because the
# kernel may fault in a retained heap's pages once in a while: one CI run averaged 1,953 a call).
FAULTS = """
import resource, statistics, sys
import torch
from zoo.malloc import retain_freed_memory
setting = retain_freed_memory() if sys.argv[1] == "retain" else "glibc defaults"
x = torch.ones(10_000_000)
for _ in range(3):
    y = x + 1
del y
faults = []
for _ in range(15):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    y = x + 1
    del y
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(setting, statistics.median(faults))
"""


def faults_per_allocation(setting: str) -> tuple[str, float]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_SETTINGS}
    out = subprocess.run([sys.executable, "-c", FAULTS, setting], capture_output=True, text=True, env=env, check=True)
    name, faults = out.stdout.strip().rsplit(" ", 1)
    return name, float(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_retained_heap_stops_page_faulting_big_tensors():
    name, retained = faults_per_allocation("retain")
    _, default = faults_per_allocation("glibc")
    assert name == "retain"
    # 40 MB is ~9,800 pages: glibc's default maps and faults them in on every allocation
    assert default > 5000, default
    assert retained < default / 20, (retained, default)


def test_user_malloc_environment_is_left_alone(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1000")
    assert retain_freed_memory() == "environment"
