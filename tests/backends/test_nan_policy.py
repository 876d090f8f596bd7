"""One NaN policy: a NaN or an infinity in the input is never hidden. The float64 reference and every backend give
NaN (and +-inf) at exactly the same positions of the output.

A NaN pixel in SE or channel attention makes that channel's pooled value NaN, every hidden unit of the MLP NaN
(ReLU keeps NaN, as torch's does), every gate NaN and so the whole sample NaN; an infinity gives what IEEE
arithmetic gives (``inf - inf = NaN``, ``0 * inf = NaN``). The positions are drawn from a seeded generator over a
grid of modules, configurations and values, so that every run checks the same cases.
"""

from __future__ import annotations

import numpy as np
import pytest

from attn_core import create_config, ops
from attn_core.autodiff import Node
from attn_core.frameworks import FRAMEWORK_INFO
from conformance.runners import get_runner
from conformance.runners.base import RunResult

from .._fw import FRAMEWORKS, backend

N, C, H, W = 2, 16, 6, 7

# (id, registry name, constructor kwargs, training)
CASES = [
    ("se", "se", {}, False),
    ("se-nobias-silu-hsig", "se", {"bias": False, "act_layer": "silu", "gate_layer": "hard_sigmoid"}, False),
    ("se-seed", "se", {"rd_divisor": None, "bias": False}, False),
    ("eca-k3", "eca", {"kernel_size": 3}, False),
    ("eca-k5", "eca", {"kernel_size": 5}, False),
    ("ca", "ca", {}, False),
    ("ca-bias-hsig", "ca", {"bias": True, "gate_layer": "hard_sigmoid"}, False),
    ("sa", "sa", {}, False),
    ("sa-k3-bias", "sa", {"kernel_size": 3, "bias": True, "order": "max_mean"}, False),
    ("sa-bn-eval", "sa", {"norm": True}, False),
    ("sa-bn-train", "sa", {"norm": True}, True),
    ("cbam-article", "cbam", {"rd_divisor": None, "mlp_bias": False, "spatial_order": "mean_max",
                              "spatial_norm": False}, False),
    ("cbam-timm", "cbam", {"rd_divisor": 1, "spatial_norm": True}, False),
    ("cbam-original-train", "cbam", {"rd_divisor": None, "mlp_bias": True, "spatial_order": "max_mean",
                                     "spatial_norm": True}, True),
    ("simam", "simam", {}, False),
]
VALUES = {"nan": np.nan, "+inf": np.inf, "-inf": -np.inf}
# the fast tier keeps every case's NaN row and the first case's infinities (Paddle's masked-gradient branch)
CASE_VALUES = [pytest.param(c[0], v, id=f"{c[0]}-{v}", marks=() if v == "nan" or c is CASES[0] else (pytest.mark.slow,))
               for c in CASES for v in VALUES]


def _data(case_id: str, value_name: str) -> tuple[dict[str, np.ndarray], np.ndarray, tuple[int, int, int, int]]:
    """float32-exact weights and input with ``value`` at one drawn pixel (sample, channel, row, column)."""
    rng = np.random.default_rng([ord(ch) for ch in case_id + value_name])  # the same draw on every run
    _, name, kwargs, _ = next(c for c in CASES if c[0] == case_id)
    config = create_config(name, C, **kwargs)
    weights = {k: v.astype(np.float32).astype(np.float64) for k, v in config.init_weights(rng).items()}
    x = rng.standard_normal((N, C, H, W)).astype(np.float32).astype(np.float64)
    where = (int(rng.integers(N)), int(rng.integers(C)), int(rng.integers(H)), int(rng.integers(W)))
    x[where] = VALUES[value_name]
    return weights, x, where


def _reference(case_id: str, weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    _, name, kwargs, training = next(c for c in CASES if c[0] == case_id)
    config = create_config(name, C, **kwargs)
    with np.errstate(invalid="ignore", over="ignore"):
        return config.reference(weights, x, training=training)


def _backend_run(fw: str, case_id: str, weights: dict[str, np.ndarray], x: np.ndarray,
                 cotangent: np.ndarray | None = None) -> RunResult:
    """The backend's float32 run of the case (the suite's runner: eager, canonical weights, NCHW float64 back)."""
    _, name, kwargs, training = next(c for c in CASES if c[0] == case_id)
    backend(fw)  # skips where the framework is not installed
    return get_runner(fw).run(name, create_config(name, C, **kwargs), weights, x, cotangent, "float32", training)


def _masks(y: np.ndarray) -> dict[str, np.ndarray]:
    return {"nan": np.isnan(y), "+inf": np.isposinf(y), "-inf": np.isneginf(y)}


# ------------------------------------------------------------------------------------------ the reference
def test_reference_relu_keeps_nan_and_infinities():
    v = np.array([np.nan, -1.0, 0.0, 2.0, np.inf, -np.inf])
    y = ops.relu(Node(v)).value
    assert np.isnan(y[0]) and y[1:].tolist() == [0.0, 0.0, 2.0, np.inf, 0.0]


def test_reference_se_nan_pixel_makes_the_whole_sample_nan_as_torch_does():
    """Hand reasoning, not the code: a NaN in channel c makes mean_hw NaN in c, every fc1 unit NaN (a NaN times a
    weight summed in), ReLU keeps it, every fc2 output NaN, every gate NaN: the whole sample; the other is finite."""
    weights, x, where = _data("se", "nan")
    y = _reference("se", weights, x)
    assert np.isnan(y[where[0]]).all()
    assert np.isfinite(np.delete(y, where[0], axis=0)).all()


def test_reference_spatial_attention_nan_spreads_over_the_convolution_window_only():
    """A NaN at (h, w) makes both pooled maps NaN there, the k x k convolution NaN within k // 2 of it, and so every
    channel NaN in that window of the sample (no BatchNorm in training to spread it further)."""
    weights, x, (n, c, h, w) = _data("sa", "nan")
    y = _reference("sa", weights, x)
    expected = np.zeros_like(y, dtype=bool)
    expected[n, :, max(h - 3, 0):h + 4, max(w - 3, 0):w + 4] = True
    assert np.array_equal(np.isnan(y), expected)


def test_reference_vjp_keeps_nan_in_the_gradient():
    """The backward pass does not turn the NaN into finite numbers: the input gradient is NaN where the forward
    output's sample is."""
    _, name, kwargs, _ = next(c for c in CASES if c[0] == "se")
    weights, x, where = _data("se", "nan")
    config = create_config(name, C, **kwargs)
    with np.errstate(invalid="ignore"):
        _, dx, dp = config.reference_vjp(weights, x, np.ones_like(x))
    assert np.isnan(dx[where[0]]).all() and np.isfinite(np.delete(dx, where[0], axis=0)).all()
    assert all(np.isnan(g).any() for g in dp.values())


# ------------------------------------------------------------------------------------------ every backend
@pytest.mark.parametrize("case_id,value_name", CASE_VALUES)
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_nan_and_inf_masks_match_the_reference(fw, case_id, value_name):
    weights, x, where = _data(case_id, value_name)
    ref = _reference(case_id, weights, x)
    got = _backend_run(fw, case_id, weights, x).y
    assert not np.isfinite(ref[where])  # the special value itself is never hidden
    for kind, ref_mask in _masks(ref).items():
        got_mask = _masks(got)[kind]
        assert np.array_equal(got_mask, ref_mask), (
            f"{fw} {case_id} {value_name} at {where}: {kind} at {int(got_mask.sum())} positions, "
            f"the reference at {int(ref_mask.sum())} ({int((got_mask != ref_mask).sum())} differ)")
    finite = np.isfinite(ref)
    assert np.allclose(got[finite], ref[finite], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case_id,value_name", CASE_VALUES)
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_input_gradient_masks_match_the_reference(fw, case_id, value_name):
    """The backward pass hides nothing either. For an infinite input, a framework whose ReLU and hard-sigmoid
    backward multiply the incoming gradient by their 0/1 mask (``FrameworkInfo.grad_mask_multiplies``: Paddle) gives
    NaN where the activation is flat and the incoming gradient infinite, where torch, JAX and the reference select 0
    (a selecting ReLU would slow Paddle's modules): its input gradient then has NaN where theirs is finite, more NaN
    and never fewer; that row is checked as a superset."""
    weights, x, _ = _data(case_id, value_name)
    _, name, kwargs, training = next(c for c in CASES if c[0] == case_id)
    cotangent = np.random.default_rng(0).standard_normal(x.shape).astype(np.float32).astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        _, dx_ref, _ = create_config(name, C, **kwargs).reference_vjp(weights, x, cotangent, training=training)
    dx = _backend_run(fw, case_id, weights, x, cotangent).dx
    if FRAMEWORK_INFO[fw].grad_mask_multiplies and value_name != "nan":
        assert np.all(np.isnan(dx)[np.isnan(dx_ref)])
        finite = np.isfinite(dx)
        assert np.array_equal(np.isinf(dx) & finite, np.isinf(dx_ref) & finite)
        return
    for kind, ref_mask in _masks(dx_ref).items():
        assert np.array_equal(_masks(dx)[kind], ref_mask), (fw, case_id, value_name, kind)
