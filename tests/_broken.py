"""A backend broken on purpose in a test: the conformance row that should expose it fails, and passes again once the
backend is whole (test code only)."""

from __future__ import annotations

from typing import Any

import pytest

from conformance import CASES, Case, run_case
from conformance.runners import get_runner

from ._fw import clear_flax_programs


def case_named(name: str) -> Case:
    """The conformance case of that name."""
    return next(c for c in CASES if c.name == name)


def failing(row: Any) -> set[str]:
    """The quantities a conformance row failed on."""
    return {c.quantity for c in row.comparisons if not c.passed}


def broken_then_whole(monkeypatch: pytest.MonkeyPatch, fw: str, case_name: str) -> set[str]:
    """The float32 row of ``case_name`` in ``fw`` fails with the patches ``monkeypatch`` holds and passes once they
    are undone; returns the quantities the broken row failed on."""
    runner, case = get_runner(fw), case_named(case_name)
    broken = run_case(case, runner, "float32")
    assert broken.status == "fail", f"the suite missed the broken {fw} port on {case_name}"
    monkeypatch.undo()
    clear_flax_programs()
    whole = run_case(case, runner, "float32")
    assert whole.status == "pass", whole.message
    return failing(broken)
