"""Every conformance case on every backend, float32 and float64, forward and every gradient (the suite in pytest).

The fast tier runs the first case of each module in float32; float64 and the other cases are slow. Flax runs a
module's later cases in float32 or float64 by turns (``python -m conformance --backends flax --dtypes
float32,float64`` runs them all)."""

from __future__ import annotations

import functools

import pytest

from conformance import CASES, MODULES, reference_for, run_case
from conformance.runners import RUNNERS, get_runner

FIRST_OF_EACH_MODULE = frozenset(next(c.name for c in CASES if c.module == m) for m in MODULES)


def _rows() -> list[object]:
    """Every case x backend x dtype, but Flax runs a module's later cases in one dtype each, float32 and float64 by
    turns: each Flax row jit-compiles its case's program for seconds, and every module still runs in both dtypes
    (its first case) and every case once."""
    rows = []
    for case in CASES:
        index = [c.name for c in CASES if c.module == case.module].index(case.name)
        for backend in RUNNERS:
            for dtype in ("float32", "float64"):
                if backend == "flax" and index > 0 and dtype != ("float32" if index % 2 else "float64"):
                    continue
                # float32 is the dtype users run and the tighter test of a port's arithmetic order: the fast tier's
                slow = dtype == "float64" or case.name not in FIRST_OF_EACH_MODULE
                rows.append(pytest.param(case, backend, dtype, id=f"{case.name}-{backend}-{dtype}",
                                         marks=[pytest.mark.slow] if slow else []))
    return rows


@functools.cache
def _reference(case_name: str) -> tuple:
    case = next(c for c in CASES if c.name == case_name)
    return reference_for(case)


@pytest.mark.parametrize("case,backend,dtype", _rows())
def test_backend_matches_reference(case, backend, dtype):
    runner = get_runner(backend)
    ok, why = runner.available()
    if not ok:
        pytest.skip(why)
    # each framework in its users' mode (attn_core.frameworks: jax.jit in Flax, eager in torch and Paddle); the
    # other mode (op by op in Flax, much slower) is covered case by case in tests/backends/test_modes.py
    row = run_case(case, runner, dtype, reference=_reference(case.name), mode=runner.default_mode)
    failures = [f"{c.quantity}: {c.worst_ratio:.3g}x tolerance, {c.detail}" for c in row.comparisons if not c.passed]
    assert row.status == "pass", f"{row.message}\n" + "\n".join(failures)
    # output, input gradient, one gradient per trainable parameter, and in training every running statistic
    n_trainable = sum(p.trainable for p in case.config().param_table())
    n_state = sum(not p.trainable for p in case.config().param_table()) if case.training else 0
    assert len(row.comparisons) == 2 + n_trainable + n_state
