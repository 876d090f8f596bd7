"""The documentation's Python examples run as written, its links lead somewhere, and its mode names exist.

The pages are the README and every ``docs/*.md``; a page's examples run in a fresh interpreter from the repository
root, as a reader would paste them.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from attn_core.frameworks import FRAMEWORKS, MODES

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: a word imported or named as ``backends.<word>`` -> the package the example needs
NEEDS = {"torch": "torch", "paddle": "paddle", "jax": "jax", "flax": "flax"}
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", flags=re.S | re.M)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def blocks(page: Path, language: str) -> list[tuple[int, str]]:
    """(line number, code) of each fenced block of ``language`` in ``page``."""
    text = page.read_text()
    return [(text.count("\n", 0, m.start()) + 1, m.group(2)) for m in FENCE.finditer(text) if m.group(1) == language]


EXAMPLES = [pytest.param(code, id=f"{_name(page)}:{line}") for page in PAGES for line, code in blocks(page, "python")]


def test_pages_exist():
    names = [_name(p) for p in PAGES]
    for page in ("docs/modules.md", "docs/conformance.md", "docs/porting-bugs.md", "docs/checkpoints.md",
                 "docs/performance.md", "docs/training.md"):
        assert page in names


@pytest.mark.slow
@pytest.mark.parametrize("code", EXAMPLES)
def test_python_example_runs(code):
    for word, module in NEEDS.items():
        if re.search(rf"^\s*(import|from) {word}\b|backends\.{word}\b", code, flags=re.M) \
                and importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} not installed")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_relative_links_resolve(page):
    text = FENCE.sub("", page.read_text())
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {_name(dest)})")
    assert not broken, f"{_name(page)}: " + ", ".join(broken)


def test_every_page_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in LINK.findall(readme)}
    assert [_name(p) for p in PAGES[1:] if p.resolve() not in linked] == []


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_command_lines_use_the_mode_names(page):
    """Every ``--modes`` on a documented command line is a mode of attn_core.frameworks, alone or after a
    framework, or ``default``."""
    wrong = []
    for _, code in blocks(page, "bash"):
        for value in re.findall(r"--modes[ =](\S+)", code):
            for item in value.split(","):
                framework, _, mode = item.rpartition(":")
                if (framework and framework not in FRAMEWORKS) or mode not in (*MODES, "default"):
                    wrong.append(item)
    assert not wrong, f"{_name(page)}: --modes {', '.join(wrong)}"
