"""The README is a front page: an example per framework, the commands CI runs, and the fast loop of the tests.

Its Python examples run in tests/tools/test_docs.py, with those of docs/.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)
COMMANDS = [c.strip() for c in re.findall(r"```bash\n(.*?)```", README, flags=re.S)]


def test_examples_exist_for_every_framework():
    joined = "\n".join(BLOCKS)
    for fw in ("backends.torch", "backends.paddle", "backends.flax"):
        assert fw in joined


def test_ci_runs_the_readme_test_command():
    test_cmd = next(c for c in COMMANDS if "pip install" in c and "pytest" in c)
    ci = (ROOT / ".ci" / "run").read_text()
    install, _, run = test_cmd.partition(" && ")
    assert install in ci.splitlines() and run in ci.splitlines()


def test_the_fast_loop_leaves_out_a_registered_marker(pytestconfig):
    fast = next(c for c in COMMANDS if "pytest -m" in c)
    marker = re.search(r'-m "not (\w+)"', fast).group(1)
    assert marker in [m.split(":")[0].strip() for m in pytestconfig.getini("markers")]


def test_the_fast_loop_needs_only_the_test_extra():
    """Its ``-n`` comes from pytest-xdist, which the install line's test extra must therefore bring."""
    fast = next(c for c in COMMANDS if "pytest -m" in c)
    test_extra = re.search(r"^test = \[(.*)\]$", (ROOT / "pyproject.toml").read_text(), flags=re.M).group(1)
    assert " -n " not in fast or '"pytest-xdist' in test_extra


def test_front_page_is_short():
    assert len(README.splitlines()) <= 250


def test_ci_lints_and_type_checks_before_the_tests():
    """ruff and mypy come from the test extra (through lint), so the README's install line brings them."""
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    tests = next(i for i, line in enumerate(ci) if line.startswith("python -m pytest"))
    assert ci.index("ruff check .") < tests and ci.index("mypy") < tests
    pyproject = (ROOT / "pyproject.toml").read_text()
    test_extra = re.search(r"^test = \[(.*)\]$", pyproject, flags=re.M).group(1)
    assert "lint" in re.search(r"attn-modules\[([^\]]*)\]", test_extra).group(1).split(",")
    lint = re.search(r"^lint = \[(.*)\]$", pyproject, flags=re.M).group(1)
    assert '"ruff' in lint and '"mypy' in lint
