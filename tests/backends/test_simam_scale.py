"""SimAM at extreme input scales: the scale-free form (attn_core.simam) in the reference and every backend.

Before it, float32 inputs scaled by 3e18 gave every gate sigmoid(0.5) (the sum of squared deviations overflowed) and
1e20 gave NaN (the squared deviations did), in every backend. Expected values come from the float64 reference on
the same (quantized) input, which does not overflow at these scales, and the reference is checked against a direct
NumPy transcription of the paper's formula.
"""

from __future__ import annotations

import numpy as np
import pytest

from attn_core import create_config
from attn_core.simam import simam_mean_prescale
from conformance import compare, tolerance_for
from conformance.precision import quantize

from .._fw import runner

F32_MAX = float(np.finfo(np.float32).max)


def _paper(x: np.ndarray, e_lambda: float = 1e-4) -> np.ndarray:
    """The paper's formula as written (Yang et al. 2021, the authors' PyTorch snippet), in float64."""
    n = max(x.shape[2] * x.shape[3] - 1, 1)
    d = (x - x.mean(axis=(2, 3), keepdims=True)) ** 2
    y = d / (4 * (d.sum(axis=(2, 3), keepdims=True) / n + e_lambda)) + 0.5
    return x / (1 + np.exp(-y))


def _realistic(shape: tuple[int, int, int, int], seed: int) -> np.ndarray:
    """Activation-like channels: offsets and spreads that differ per channel, a constant channel, a channel that is
    0 but for one outlier, and a ReLU-like one (half zeros)."""
    rng = np.random.default_rng(seed)
    n, c = shape[:2]
    x = rng.standard_normal(shape) * rng.uniform(0.2, 3.0, (1, c, 1, 1)) + rng.uniform(-2.0, 2.0, (1, c, 1, 1))
    x[:, 0] = 1.75
    x[:, 1] = 0.0
    x[:, 1, shape[2] // 2, shape[3] // 3] = 4.0
    x[:, 2] = np.maximum(x[:, 2], 0.0)
    return x


@pytest.mark.parametrize("shape", [(2, 5, 7, 5), (1, 4, 1, 1), (2, 3, 56, 56), (1, 6, 2, 1)])
@pytest.mark.parametrize("e_lambda", [1e-4, 0.1])
def test_reference_is_the_papers_formula_on_ordinary_inputs(shape, e_lambda):
    x = _realistic(shape, 3) if shape[1] >= 3 else np.random.default_rng(3).standard_normal(shape)
    y = create_config("simam", shape[1], e_lambda=e_lambda).reference_vjp({}, x, np.ones(shape))[0]
    np.testing.assert_allclose(y, _paper(x, e_lambda), rtol=1e-14, atol=1e-300)


def test_reference_gradient_matches_finite_differences_at_a_large_scale():
    """The divisor s is a constant to autodiff; the gradient is still exact because the result does not depend on
    it. Checked by central differences of the paper's formula (float64 does not overflow at 1e30). No constant
    channel here: at 1e30 any finite step makes its lambda negligible, so differences there measure another
    function."""
    scale = 1e30
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((1, 4, 4, 3)) + rng.uniform(-2.0, 2.0, (1, 4, 1, 1))) * scale
    cot = np.random.default_rng(6).standard_normal(x.shape)
    _, dx, _ = create_config("simam", 4).reference_vjp({}, x, cot)
    fd = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        h = 1e-6 * max(abs(x[idx]), scale)
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        fd[idx] = np.sum((_paper(xp) - _paper(xm)) * cot) / (2 * h)
    np.testing.assert_allclose(dx, fd, rtol=1e-6, atol=1e-6 * np.abs(fd).max())


def test_mean_prescale_is_a_power_of_two_that_keeps_the_sum_finite():
    for h, w in [(1, 1), (2, 1), (7, 5), (56, 56), (224, 224)]:
        p = simam_mean_prescale(h, w)
        assert np.log2(p) == int(np.log2(p)) and h * w * p <= 1.0 and (h * w == 1 or h * w * p > 0.5)
        assert np.isfinite(np.sum(np.full(h * w, F32_MAX, np.float32) * np.float32(p), dtype=np.float32))


#: test id -> (framework, mode): ``flax`` runs op by op, ``flax-jit`` under ``jax.jit``, where XLA may rewrite the
#: arithmetic
RUNS = {"torch": ("torch", "eager"), "paddle": ("paddle", "eager"), "flax": ("flax", "eager"),
        "flax-jit": ("flax", "compiled")}


def _run(fw: str, x: np.ndarray, cot: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """SimAM's output and input gradient in ``fw`` for the NCHW ``x`` (already representable in ``dtype``)."""
    framework, mode = RUNS[fw]
    r = runner(framework)
    out = r.execute(r.build_handle("simam", create_config("simam", x.shape[1])), {}, x, cot, dtype, mode=mode)
    return out.y, out.dx


def _no_grad_output(fw: str, x: np.ndarray) -> np.ndarray:
    """The float32 forward without autograd (torch's takes another code path, in place): the runner's eval forward."""
    r = runner(RUNS[fw][0])
    handle = r.build_handle("simam", create_config("simam", x.shape[1]))
    return r.forward(handle.module, handle.variables, x.astype(np.float32))


def _scaled(scale: float, dtype: str, seed: int) -> np.ndarray:
    x = _realistic((2, 5, 56, 56), seed)
    x = x / np.abs(x).max() * scale  # the largest value is ``scale`` exactly
    return quantize(x, dtype)


def _check(fw: str, x: np.ndarray, dtype: str, grads: bool = True) -> None:
    cot = quantize(np.random.default_rng(9).standard_normal(x.shape), dtype)
    y_ref, dx_ref, _ = create_config("simam", x.shape[1]).reference_vjp({}, x, cot)
    y, dx = _run(fw, x, cot, dtype)
    tol = tolerance_for(dtype)
    checks = [("output", y, y_ref)] + ([("grad:input", dx, dx_ref)] if grads else [])
    if dtype == "float32":
        checks.append(("output without autograd", _no_grad_output(fw, x), y_ref))
    for name, got, ref in checks:
        c = compare(name, got, ref, tol)
        assert c.nonfinite == 0 and c.passed, f"{fw} {dtype} {name}: {c.worst_ratio:.3g}x tolerance; {c.detail}"


@pytest.mark.parametrize("scale", [1e-30, 1.0, 1e18, 1e30])
@pytest.mark.parametrize("fw", ["torch", "paddle", "flax", "flax-jit"])
def test_float32_matches_the_reference_at_every_scale(fw, scale):
    _check(fw, _scaled(scale, "float32", 1), "float32")


@pytest.mark.parametrize("fw", ["torch", "paddle", "flax", "flax-jit"])
def test_float32_output_matches_the_reference_near_the_float32_maximum(fw):
    """Values up to float32 max / 2, so that ``x - mean`` is finite; the plain mean's sum of 3136 such values is
    not. The input gradient is not compared here: the backward's ``cotangent * x`` is itself of order 1e38, and
    the sums autodiff forms from it overflow float32 although the gradient itself is of order 1."""
    _check(fw, _scaled(F32_MAX / 2, "float32", 2), "float32", grads=False)


@pytest.mark.parametrize("dtype, scale", [("float16", 6e4), ("float16", 1e-3), ("bfloat16", 1e38),
                                          ("bfloat16", 1e-30), ("bfloat16", 1e18)])
@pytest.mark.parametrize("fw", ["torch", "paddle", "flax"])
def test_half_inputs_match_the_reference_at_their_extreme_scales(fw, dtype, scale):
    """float16 and bfloat16 are computed in float32 (attn_core.precision) and rounded once."""
    if dtype == "bfloat16":
        pytest.importorskip("ml_dtypes", reason="bfloat16 test data needs ml_dtypes")
    _check(fw, _scaled(scale, dtype, 4), dtype, grads=scale < 1e30)


@pytest.mark.parametrize("value", [1234.5678, 3e8, 2e15])
@pytest.mark.parametrize("fw", ["torch", "paddle", "flax", "flax-jit"])
def test_a_constant_channel_is_gated_by_sigmoid_half_whatever_its_value(fw, value):
    """Its float32 mean rounds (the sum of 3136 copies is inexact), and the scale-free form would turn deviations of
    that rounding into gates far from sigmoid(0.5): the mean is clamped into the channel's range, and Paddle's fused
    path subtracts the channel's first value."""
    x = np.random.default_rng(12).standard_normal((2, 3, 56, 56)).astype(np.float32)
    x[:, 1] = np.float32(value)
    _check(fw, x.astype(np.float64), "float32")
    y, _ = _run(fw, x.astype(np.float64), np.ones(x.shape), "float32")
    np.testing.assert_allclose(y[:, 1] / x[:, 1], 1 / (1 + np.exp(-0.5)), rtol=1e-6)
