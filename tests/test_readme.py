"""The README's Python examples run as written (those that need no trained run on disk)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
RUNNABLE = [b for b in BLOCKS if "outputs/" not in b]  # the loading example names a run dir of the reader's


def test_the_readme_has_its_examples():
    assert len(BLOCKS) >= 3 and len(RUNNABLE) >= 2


@pytest.mark.parametrize("code", RUNNABLE, ids=[f"block{i}" for i in range(len(RUNNABLE))])
def test_readme_example_runs(code):
    exec(compile(code, str(README), "exec"), {})
