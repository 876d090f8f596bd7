"""The suite's command line, report, skip handling and comparison rule."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from conformance import CASES, MODULES, Report, compare, run_case, tolerance_for
from conformance.__main__ import main
from conformance.runners.base import Runner


def test_cases_cover_the_edges_the_issue_names():
    from attn_core import CONFIGS

    assert set(MODULES) == set(CONFIGS)  # every registered module has cases
    for module in MODULES:
        cases = [c for c in CASES if c.module == module]
        assert any(c.shape[0] == 1 for c in cases), f"{module}: no batch-1 case"
        assert any(c.shape[2] != c.shape[3] and (c.shape[2] % 2 or c.shape[3] % 2) for c in cases), \
            f"{module}: no non-square odd case"
    # C // 16 < 1 for the squeeze MLPs
    for module in ("se", "ca", "cbam"):
        assert any(c.shape[1] // 16 < 1 for c in CASES if c.module == module)
    # ECA: Eq. 9's t is even for C = 128 (log2 = 7, (7 + 1) / 2 = 4) and C = 8 ((3 + 1) / 2 = 2)
    assert {128, 8} <= {c.shape[1] for c in CASES if c.module == "eca" and not dict(c.options)}
    assert any(c.shape[2:] == (1, 1) for c in CASES if c.module == "simam")
    assert any(c.training for c in CASES) and any(not c.training for c in CASES)


def test_compare_rule_is_allclose():
    tol = tolerance_for("float32")  # atol 1e-5, rtol 1e-4
    ref = np.array([0.0, 1.0, 100.0])
    ok = compare("q", ref + np.array([0.9e-5, 1e-4, 0.0100]), ref, tol)  # each within atol + rtol |ref|
    assert ok.passed and ok.worst_ratio <= 1
    bad = compare("q", ref + np.array([0.0, 0.0, 0.0102]), ref, tol)  # 0.0102 > 1e-5 + 1e-4 * 100
    assert not bad.passed and bad.max_abs == pytest.approx(0.0102)
    nan = compare("q", np.array([0.0, np.nan, 100.0]), ref, tol)
    assert not nan.passed and nan.nonfinite == 1
    wrong_shape = compare("q", np.zeros(2), ref, tol)
    assert not wrong_shape.passed and "shape" in wrong_shape.detail


class _Missing(Runner):
    framework = "nowhere"
    requires = ("no_such_framework_for_attn_modules",)


def test_uninstalled_backend_is_skipped_not_passed():
    row = run_case(CASES[0], _Missing())
    assert row.status == "skip" and "not installed" in row.message
    report = Report([row])
    assert report.passed == [] and report.skipped == [row] and report.summary() == "0 passed, 0 failed, 1 skipped"


def test_cli_json_and_narrowing(tmp_path, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "report.json"
    code = main(["--backends", "torch", "--modules", "simam", "--json", str(out), "-q"])
    assert code == 0
    data = json.loads(out.read_text())
    assert data["summary"] == {"passed": 4, "failed": 0, "skipped": 0, "n/a": 0}
    assert {r["case"] for r in data["rows"]} == {c.case_id for c in CASES if c.module == "simam"}
    for r in data["rows"]:
        assert r["backend"] == "torch" and r["status"] == "pass"
        assert math.isfinite(r["max_abs"]) and r["comparisons"][0]["quantity"] == "output"
    assert "4 passed, 0 failed, 0 skipped" in capsys.readouterr().out


def test_cli_rejects_unknown_names(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--modules", "nonesuch"])
    assert exc.value.code == 2 and "nonesuch" in capsys.readouterr().err


def test_cli_require_all_fails_on_skip(monkeypatch, capsys):
    import conformance.suite as suite
    monkeypatch.setattr(suite, "get_runner", lambda name: _Missing())
    assert main(["--backends", "torch", "--modules", "simam", "-q"]) == 0
    assert main(["--backends", "torch", "--modules", "simam", "-q", "--require-all"]) == 3
    assert "0 passed, 0 failed, 4 skipped" in capsys.readouterr().out


def test_cli_html_report_and_default_modes(tmp_path, capsys):
    """--html writes the matrix page; the default mode is each framework's own path (Flax: jax.jit)."""
    pytest.importorskip("jax")
    pytest.importorskip("flax")
    page = tmp_path / "report.html"
    code = main(["--backends", "flax", "--modules", "simam", "--html", str(page), "-q"])
    assert code == 0
    text = page.read_text()
    assert "flax<br>jax.jit<br>float32" in text and "4 passed, 0 failed" in text
    assert "python -m conformance --backends flax --modules simam --html" in text
    assert main(["--backends", "flax", "--modules", "simam", "--modes", "default,eager", "-q"]) == 0
    assert "8 passed, 0 failed" in capsys.readouterr().out   # jax.jit and eager rows, 4 cases each
