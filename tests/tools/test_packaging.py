"""Imports: attn_core needs NumPy only, each backend only its framework, and a missing one names the extra."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

FRAMEWORK_MODULES = ("torch", "paddle", "jax", "flax")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300)


def test_core_and_suite_import_no_framework():
    r = _run(f"""
        import sys
        import attn_core, conformance, conformance.cases, conformance.suite
        loaded = [m for m in {FRAMEWORK_MODULES!r} if m in sys.modules]
        print(loaded)
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


@pytest.mark.parametrize("fw,own", [("torch", {"torch"}), ("paddle", {"paddle"}), ("flax", {"jax", "flax"})])
def test_backend_imports_only_its_framework(fw, own):
    pytest.importorskip(sorted(own)[0])
    r = _run(f"""
        import sys
        import backends.{fw}
        print([m for m in {FRAMEWORK_MODULES!r} if m in sys.modules])
    """)
    assert r.returncode == 0, r.stderr
    loaded = set(eval(r.stdout.strip()))  # noqa: S307 - our own subprocess printed a list literal
    assert loaded - own == set(), f"backends.{fw} also imported {loaded - own}"


@pytest.mark.parametrize("fw,blocked", [("torch", "torch"), ("paddle", "paddle"), ("flax", "jax"), ("flax", "flax")])
def test_missing_framework_names_the_extra(fw, blocked):
    r = _run(f"""
        import sys
        sys.modules[{blocked!r}] = None  # makes "import {blocked}" raise ImportError, as if not installed
        try:
            import backends.{fw}
        except ImportError as err:
            print("ImportError:", err)
        else:
            print("imported")
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ImportError:")
    assert f"pip install 'attn-modules[{fw}]'" in r.stdout
