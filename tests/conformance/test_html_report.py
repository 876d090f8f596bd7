"""The HTML report: the matrix colours each cell by its worst error relative to tolerance, failures stand out."""

from __future__ import annotations

import math

from conformance import Comparison, Report, Row
from conformance.html import cell_class, render_html


def _row(module, backend, status, ratio, mode="eager", dtype="float32", case="c1"):
    comps = [] if status == "skip" else [Comparison("output", ratio * 1e-5, ratio * 1e-4, ratio, 0, ratio <= 1)]
    return Row(module, case, backend, dtype, mode, status, comps, "boom" if status == "error" else "")


def test_cell_colour_follows_worst_ratio():
    assert cell_class([_row("se", "torch", "pass", 0.005)])[0] == "ok0"
    assert cell_class([_row("se", "torch", "pass", 0.05), _row("se", "torch", "pass", 0.7)]) == ("ok3", "0.7x")
    cls, text = cell_class([_row("se", "torch", "pass", 0.05), _row("se", "torch", "fail", 3.0)])
    assert cls == "bad" and text.startswith("3x") and "1/2 failed" in text
    assert cell_class([_row("se", "torch", "skip", 0)])[0] == "skip"
    assert cell_class([_row("se", "torch", "error", math.inf)])[0] == "bad"


def test_page_has_one_column_per_backend_mode_dtype_and_shows_failures():
    rows = [_row("se", "torch", "pass", 0.2), _row("se", "paddle", "fail", 4.0, case="c2"),
            _row("simam", "flax", "pass", 0.001, mode="jax.jit"), _row("simam", "torch", "skip", 0)]
    page = render_html(Report(rows), command="python -m conformance --html r.html")
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    header = page.split("<tr>", 2)[1]
    for col in ("paddle<br>eager<br>float32", "torch<br>eager<br>float32", "flax<br>jax.jit<br>float32"):
        assert col in header
    assert "2 passed, 1 failed, 1 skipped" in page
    assert "<details open><summary>se: 2 rows, 1 failed" in page   # the failing module is expanded
    assert "output: 4x tolerance" in page and "python -m conformance --html r.html" in page


def test_every_registered_module_is_a_row_of_the_page_in_registry_order():
    """A tiny run, the first case of every registered attention module in torch, rendered: each registry key has its
    row in the matrix (titled with its class name) and its section of cases, in the registry's order, whatever its
    rows' order; a name that is not registered (a model) follows them."""
    from attn_core import CONFIGS
    from conformance.cases import select_cases
    from conformance.suite import run_case

    from .._fw import runner

    torch_runner = runner("torch")
    rows = [run_case(select_cases([key])[0], torch_runner) for key in reversed(list(CONFIGS))]
    rows.append(_row("resnet18-se", "torch", "pass", 0.01))
    assert {r.status for r in rows[:-1]} <= {"pass", "fail", "error"}  # every module ran (no skip, no n/a)
    page = render_html(Report(rows))
    matrix, cases = page.split("<h2>Cases</h2>")
    for key, config in CONFIGS.items():
        assert f"<tr><td class='name' title='{config.module_name}'>{key}</td>" in matrix
        assert f"<summary>{key}: 1 rows, " in cases
    order = [matrix.index(f">{key}</td>") for key in [*CONFIGS, "resnet18-se"]]
    assert order == sorted(order)
    new = ("coord", "scoord", "ela", "strip", "ese", "ecam", "ceca", "lcbam", "sk", "splat", "nl", "bat", "ge",
           "gc", "gca")
    assert set(new) <= set(CONFIGS)
