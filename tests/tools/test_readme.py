"""The README's Python examples run as written, and its commands are the ones CI runs."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)
NEEDS = {"torch": "torch", "paddle": "paddle", "jax": "jax", "flax": "flax"}


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_python_example_runs(index):
    code = BLOCKS[index]
    for word, module in NEEDS.items():
        if re.search(rf"^\s*(import|from) {word}\b|backends\.{word}\b", code, flags=re.M) \
                and importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} not installed")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


def test_examples_exist_for_every_framework():
    joined = "\n".join(BLOCKS)
    for fw in ("backends.torch", "backends.paddle", "backends.flax"):
        assert fw in joined


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    test_cmd = next(c.strip() for c in commands if "pytest" in c)
    ci = (ROOT / ".ci" / "run").read_text()
    install, _, run = test_cmd.partition(" && ")
    assert install in ci and run in ci
