"""PSA and GAM under each framework's compiler (torch.compile, paddle.jit.to_static, jax.jit) in float64 and the
half dtypes, against the float64 reference: rows that only float32 ran before (``python -m conformance --modules
psa,gam --modes compiled --dtypes ...`` runs every case). Paddle compiles one of these cases in about a second (fast
tier); jax.jit takes a few seconds and torch.compile's CPU inductor up to tens of seconds per row (slow tier)."""

from __future__ import annotations

import pytest

from conformance import CASES, run_case

from .._fw import FRAMEWORKS, runner

# the authors' PSA_p at odd C (two softmaxes), and the grouped, shuffled GAM training its two BatchNorms
CASE_NAMES = ("psa/c9-odd", "gam/c24-g2-s3-train")
DTYPES = ("float64", "float16", "bfloat16")
_SLOW = {"torch": "torch.compile: up to tens of seconds per row on a cold inductor cache",
         "flax": "jax.jit of forward and backward: seconds per row"}


#: torch.compile half rows left to python -m conformance: each half dtype still runs on one case here (both take
#: attn_core.precision's float32 path), float64 on both
_LEFT_TO_THE_SUITE = {("psa/c9-odd", "torch", "bfloat16"), ("gam/c24-g2-s3-train", "torch", "float16")}


def _params() -> list[object]:
    return [pytest.param(name, fw, dtype, id=f"{name}-{fw}-{dtype}",
                         marks=[pytest.mark.slow(reason=_SLOW[fw])] if fw in _SLOW else [])
            for name in CASE_NAMES for fw in FRAMEWORKS for dtype in DTYPES
            if (name, fw, dtype) not in _LEFT_TO_THE_SUITE]


@pytest.mark.parametrize("name,fw,dtype", _params())
def test_compiled_row_passes(name, fw, dtype):
    run = runner(fw)
    case = next(c for c in CASES if c.name == name)
    row = run_case(case, run, dtype, mode="compiled")
    assert row.status == "pass", row.message + "\n" + "\n".join(
        f"{c.quantity}: {c.worst_ratio:.3g}x {c.detail}" for c in row.comparisons if not c.passed)
    assert row.mode == run.mode_label("compiled") != "eager" and row.dtype == dtype
    # every trainable parameter's gradient is compared, and in training every running statistic
    table = case.config().param_table()
    assert len(row.comparisons) == 2 + sum(p.trainable for p in table) + \
        (sum(not p.trainable for p in table) if case.training else 0)
