"""float16 and bfloat16: rounding the case data, the reference of the rounded data, and the half-precision rows."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from attn_core import create_config
from conformance import CASES, MODULES, TOLERANCES, Report, compare, reference_for, run_case, tolerance_for
from conformance.__main__ import main
from conformance.precision import bfloat16_bits, quantize
from conformance.runners import get_runner
from conformance.runners.base import Runner

from .._fw import backend, runner

_HAS_ML_DTYPES = importlib.util.find_spec("ml_dtypes") is not None


# ------------------------------------------------------------------------------------------ quantize by hand
# float16: 11 significant bits, so the spacing just above 1 is 2^-10 and 2^-11 is half of it.
# bfloat16: 8 significant bits, spacing 2^-7 above 1, half of it 2^-8.
@pytest.mark.parametrize("dtype, value, expected", [
    ("float16", 1 + 2**-11, 1.0),                     # exactly half-way between 1 and 1 + 2^-10: ties to even (1)
    ("float16", 1 + 3 * 2**-11, 1 + 2**-9),            # half-way between 1 + 2^-10 (odd) and 1 + 2^-9 (even): up
    ("float16", 1 + 2**-11 + 2**-20, 1 + 2**-10),     # just above half-way: up
    ("float16", -(1 + 3 * 2**-11), -(1 + 2**-9)),      # symmetric in sign
    ("float16", 65504.0, 65504.0),                     # largest finite
    ("float16", 65519.99, 65504.0),                    # below the half-way point to 2^16: still finite
    ("float16", 65520.0, np.inf),                      # half-way to 2^16: ties to even = overflow
    ("float16", 2**-25, 0.0),                          # half the smallest subnormal 2^-24: ties to even (0)
    ("float16", 3 * 2**-25, 2**-23),                   # 1.5 smallest subnormals: to 2 (even)
    ("bfloat16", 1 + 2**-8, 1.0),                     # half-way between 1 and 1 + 2^-7: ties to even (1)
    ("bfloat16", 1 + 3 * 2**-8, 1 + 2**-6),            # half-way between 1 + 2^-7 (odd) and 1 + 2^-6 (even): up
    ("bfloat16", 1 + 2**-9, 1.0),                      # below half-way: down
    ("bfloat16", 1 + 2**-8 + 2**-30, 1 + 2**-7),       # above half-way by less than float32 can hold: still up
    ("bfloat16", 3.0 + 2**-7, 3.0),                    # 3 = 1.1b x 2: spacing 2^-6, half-way 2^-7: to even (3)
    ("bfloat16", 255.5, 256.0),                        # 255 needs 8 bits; 255.5 is half-way to 256 (even): up
    ("bfloat16", 257.0, 256.0),                        # spacing 2 at 256: 257 is half-way, 256 even
    ("bfloat16", 259.0, 260.0),                        # half-way between 258 (odd) and 260 (even): up
    ("bfloat16", 2.0**127 * (2 - 2**-7), 2.0**127 * (2 - 2**-7)),   # largest finite, 3.3895e38
    ("bfloat16", 2.0**127 * (2 - 2**-8), np.inf),     # half-way to 2^128: ties to even = overflow
    ("bfloat16", 1e-50, 0.0),                          # below every float32, and so every bfloat16, subnormal
    ("bfloat16", 3 * 2**-134, 2**-132),               # 1.5 smallest bfloat16 subnormals (2^-133): to 2 (even)
])
def test_quantize_hand_values(dtype, value, expected):
    assert quantize(np.float64(value), dtype) == expected
    assert quantize(np.array([value, -value]), dtype).tolist() == [expected, -expected]


def test_quantize_keeps_special_values_and_returns_float64():
    for dtype in ("float16", "bfloat16"):
        q = quantize(np.array([np.nan, np.inf, -np.inf, -0.0, 0.0]), dtype)
        assert q.dtype == np.float64
        assert np.isnan(q[0]) and q[1] == np.inf and q[2] == -np.inf
        assert np.signbit(q[3]) and not np.signbit(q[4])
    x = np.random.default_rng(0).standard_normal((3, 4))
    assert quantize(x, "float64") is not x and np.array_equal(quantize(x, "float64"), x)
    assert np.array_equal(quantize(x, "float32"), x.astype(np.float32).astype(np.float64))


def test_quantize_is_idempotent_and_rejects_unknown_dtypes():
    x = np.random.default_rng(1).standard_normal(1000) * 100
    for dtype in ("float16", "bfloat16"):
        q = quantize(x, dtype)
        assert np.array_equal(quantize(q, dtype), q)
        assert np.array_equal(quantize(q.astype(np.float32), dtype), q)
    with pytest.raises(ValueError, match="unknown dtype 'int8'"):
        quantize(x, "int8")
    with pytest.raises(TypeError, match="real numeric"):
        quantize(np.array(["a"]), "float16")


def test_bfloat16_is_the_nearest_neighbour_of_float64_values():
    """Correct rounding checked against the definition: no other bfloat16 is closer, and ties go to even."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal(20000) * 10.0 ** rng.uniform(-40, 38, 20000)
    bits = bfloat16_bits(x).astype(np.int64)
    q = quantize(x, "bfloat16")

    def value(b: np.ndarray) -> np.ndarray:
        return (b.astype(np.uint32) << np.uint32(16)).view(np.float32).astype(np.float64)

    up, down = value((bits + 1).astype(np.uint16)), value((bits - 1).astype(np.uint16))
    ok = np.isfinite(up) & np.isfinite(down) & np.isfinite(q)
    assert ok.mean() > 0.99
    err = np.abs(q - x)
    assert not np.any(ok & (np.abs(up - x) < err)) and not np.any(ok & (np.abs(down - x) < err))


@pytest.mark.skipif(not _HAS_ML_DTYPES, reason="ml_dtypes not installed")
def test_bfloat16_matches_ml_dtypes_on_every_kind_of_float32():
    """On float32 input (where ml_dtypes rounds once) the bit patterns agree: normals, subnormals, the overflow
    edge, infinities, every tie pattern; NaN stays NaN."""
    import ml_dtypes

    rng = np.random.default_rng(3)
    patterns = np.concatenate([
        rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32),
        (np.arange(2**16, dtype=np.uint32) << np.uint32(16)) | np.uint32(0x8000),   # every exact tie
        (np.arange(2**16, dtype=np.uint32) << np.uint32(16)) | np.uint32(0x7FFF),   # just below every tie
        np.array([0x7F7F_8000, 0x7F7F_7FFF, 0x0000_8000, 0x0001_8000, 0x8000_0001], dtype=np.uint32),
    ])
    f = patterns.view(np.float32)
    nan = np.isnan(f)
    with np.errstate(invalid="ignore"):
        theirs = f.astype(ml_dtypes.bfloat16).view(np.uint16)
    assert np.array_equal(bfloat16_bits(f)[~nan], theirs[~nan])
    assert np.all(np.isnan(quantize(f[nan], "bfloat16")))
    # float64 input: ml_dtypes goes through float32 and can round twice; quantize rounds once.
    x = np.float64(1 + 2**-8 + 2**-30)
    assert float(np.float32(x).astype(ml_dtypes.bfloat16)) == 1.0
    assert quantize(x, "bfloat16") == 1 + 2**-7


def test_float16_matches_torch_casts():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(4).standard_normal(50000) * 10.0 ** np.random.default_rng(5).uniform(-9, 5, 50000)
    x32 = x.astype(np.float32)  # torch's own float64 -> half goes through float32; compare on float32 input
    for dtype, tdtype in (("float16", torch.float16), ("bfloat16", torch.bfloat16)):
        theirs = torch.from_numpy(x32).to(tdtype).to(torch.float64).numpy()
        assert np.array_equal(quantize(x32, dtype), theirs)


# ------------------------------------------------------------------------------- the reference of rounded data
def test_reference_for_quantizes_weights_input_and_cotangent_for_half_dtypes():
    case = next(c for c in CASES if c.name == "cbam/c48-original")
    w64, x64, ct64, ref64 = reference_for(case)
    assert np.array_equal(x64, case.data()[1])  # float64 (the default) and float32 rows use the data as drawn
    for dtype in ("float16", "bfloat16"):
        w, x, ct, (y, dx, dp) = reference_for(case, dtype=dtype)
        for got, raw in [(x, x64), (ct, ct64)] + [(w[k], w64[k]) for k in w64]:
            assert np.array_equal(got, quantize(raw, dtype)) and not np.array_equal(got, raw)
        config = case.config()
        y2, dx2, dp2 = config.reference_vjp(w, x, ct, training=case.training)
        assert np.array_equal(y, y2) and np.array_equal(dx, dx2)
        assert all(np.array_equal(dp[k], dp2[k]) for k in dp)


# -------------------------------------------------------------------------- SimAM at large activations, in half
def _simam_vjp(fw: str, x: np.ndarray, cotangent: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """SimAM of the NCHW ``x`` in framework ``fw`` and dtype ``dtype``, eagerly: (y, dL/dx) as float64 NCHW, for
    ``L = sum(y * cotangent)``. ``x`` and ``cotangent`` are already representable in ``dtype``, so the casts are
    exact."""
    result = runner(fw).run("simam", create_config("simam", x.shape[1]), {}, x, cotangent, dtype, mode="eager")
    assert result.dx is not None
    return result.y, result.dx


def _large(kind: str) -> np.ndarray:
    rng = np.random.default_rng({"std10-56x56": 10, "spread1e3": 11, "spread3e4": 12}[kind])
    if kind == "std10-56x56":    # d fits float16, but sum(d) over 3136 positions does not: v = inf, gate 0.5
        return rng.standard_normal((1, 3, 56, 56)) * 10.0 + 5.0
    spread = {"spread1e3": 1e3, "spread3e4": 3e4}[kind]
    x = rng.uniform(-spread, spread, (2, 3, 7, 5))
    x[:, 1] = 1234.0             # a constant channel: v = 0, d = 0, gate sigmoid(0.5)
    x[1, 2] += spread / 2        # and an offset one
    return x


# Flax's rows but the first are slow: each jit-compiles SimAM again for one input
@pytest.mark.parametrize("fw,kind,dtype", [
    pytest.param(f, k, d, id=f"{f}-{k}-{d}", marks=(pytest.mark.slow,) if f == "flax" and (k, d) != ("spread1e3",
                                                                                                   "float16") else ())
    for f in ("torch", "paddle", "flax") for k in ("spread1e3", "spread3e4", "std10-56x56")
    for d in ("float16", "bfloat16")])
def test_simam_half_is_finite_and_within_tolerance_at_large_activations(fw, kind, dtype):
    """Before SimAM computed half inputs in float32, float16 gave inf/NaN at spreads 1e3 and 3e4 (``d`` overflows
    past |x - mean| = 256) and a silent gate of sigmoid(0.5) at a standard deviation of 10 on 56 x 56 (the sum of
    ``d`` overflows); Paddle could not run float16 or bfloat16 at all on CPU."""
    x = quantize(_large(kind), dtype)
    cotangent = quantize(np.random.default_rng(7).standard_normal(x.shape) * 3.0, dtype)
    config = create_config("simam", x.shape[1])
    y_ref, dx_ref, _ = config.reference_vjp({}, x, cotangent)
    y, dx = _simam_vjp(fw, x, cotangent, dtype)
    tol = tolerance_for(dtype)
    for name, got, ref in (("output", y, y_ref), ("grad:input", dx, dx_ref)):
        c = compare(name, got, ref, tol)
        assert c.nonfinite == 0 and c.passed, f"{name}: {c.worst_ratio:.3g}x tolerance; {c.detail}"
    # the constant channel is gated by exactly sigmoid(0.5) in the reference, and to within rounding here
    if kind != "std10-56x56":
        gate = y[:, 1] / x[:, 1]
        assert np.allclose(gate, 1 / (1 + np.exp(-0.5)), rtol=2 * 2.0 ** -8)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("fw", ["torch", "paddle", "flax"])
def test_simam_half_keeps_the_one_by_one_rule(fw, dtype):
    """H*W = 1: gate sigmoid(0.5), no NaN in the output or the input gradient, in every backend."""
    x = quantize(np.array([[[[3.0]], [[-35000.0]], [[0.0]]], [[[1e-3]], [[250.0]], [[-7.5]]]]), dtype)
    cotangent = quantize(np.full(x.shape, 1.5), dtype)
    y, dx = _simam_vjp(fw, x, cotangent, dtype)
    g = 1 / (1 + np.exp(-0.5))
    tol = tolerance_for(dtype)
    for name, got, ref in (("output", y, x * g), ("grad:input", dx, np.full(x.shape, 1.5 * g))):
        c = compare(name, got, ref, tol)  # d = 0 everywhere: y = x * sigmoid(0.5), and dy/dx the gate alone
        assert c.nonfinite == 0 and c.passed, f"{name}: {c.worst_ratio:.3g}x tolerance; {c.detail}"


# ------------------------------------------------------------------------- which dtypes run where: 'n/a' rows
def test_capability_tables_declare_what_each_framework_runs():
    for fw in ("torch", "flax"):
        runner = get_runner(fw)
        assert all(runner.supports(m, d) == (True, "") for m in MODULES for d in TOLERANCES)
    paddle = get_runner("paddle")
    for dtype in ("float16", "bfloat16"):
        for module in ("se", "eca", "ca", "sa", "cbam", "simam"):
            assert paddle.supports(module, dtype) == (True, "")
        ok, why = paddle.supports("resnet18", dtype)
        assert not ok and dtype in why and "CPU" in why
    assert all(paddle.supports(m, d)[0] for m in MODULES for d in ("float32", "float64"))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_paddle_half_runs_on_cpu_in_float32_where_plain_layers_have_no_kernels(dtype):
    """What the table says of Paddle is what Paddle does: a plain convolution has no half kernel on CPU (should a
    Paddle release add one, this fails and the models' rows are to be widened), while SE, computing its half input
    in float32 (attn_core.precision), runs and returns the input's dtype."""
    bp = backend("paddle")
    import paddle

    paddle.set_device("cpu")
    conv = paddle.nn.Conv2D(8, 8, 1)
    conv.to(dtype=dtype)
    x = paddle.to_tensor(np.ones((1, 8, 3, 3), dtype=np.float32)).astype(dtype)
    with pytest.raises(RuntimeError, match="not registered"):
        conv(x)
    module = bp.SEModule(8)
    module.to(dtype=dtype)
    assert module(x).dtype == x.dtype


class _Float32Only(Runner):
    framework = "float32only"
    dtypes = ("float32",)
    dtype_notes = {"float16": "no float16 kernels here"}

    def run(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("an n/a row must not run")


def test_unsupported_dtype_is_n_a_with_its_reason_never_pass():
    case = next(c for c in CASES if c.module == "se")
    row = run_case(case, _Float32Only(), "float16")
    assert row.status == "n/a" and row.message == "no float16 kernels here" and not row.comparisons
    assert not row.failed
    other = run_case(case, _Float32Only(), "bfloat16")
    assert other.status == "n/a" and other.message == "float32only declares no bfloat16 support"
    report = Report([row, other])
    assert report.passed == [] and report.failed == [] and report.skipped == [] and len(report.not_applicable) == 2
    assert report.summary() == "0 passed, 0 failed, 0 skipped, 2 n/a"
    assert report.to_dict()["summary"] == {"passed": 0, "failed": 0, "skipped": 0, "n/a": 2}
    assert "N/A float32only float16: se (1 rows): no float16 kernels here" in report.not_applicable_details()
    assert "N/A" in report.table()


def test_cli_require_all_runs_paddle_half_rows_of_the_attention_modules(capsys):
    """Paddle's half rows of the attention modules run on CPU (computed in float32) and pass, none is n/a."""
    pytest.importorskip("paddle")
    assert main(["--backends", "paddle", "--modules", "se,simam", "--dtypes", "float16", "--no-grad", "-q",
                 "--require-all"]) == 0
    out = capsys.readouterr().out
    assert "9 passed, 0 failed, 0 skipped" in out and "n/a" not in out.splitlines()[-1]


# ------------------------------------------------------------------------------------- the precision rows
# Flax's rows over every case compile each case's program: the slow tier
SLOW_FLAX = pytest.param("flax", marks=pytest.mark.slow)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("fw", ["torch", "paddle", SLOW_FLAX])
def test_simam_half_rows_pass_forward_and_backward(fw, dtype):
    backend(fw)
    for case in (c for c in CASES if c.module == "simam"):
        row = run_case(case, get_runner(fw), dtype, reference=reference_for(case, True, dtype))
        assert row.status == "pass", f"{case.name}: {row.message} " + "; ".join(
            f"{c.quantity} {c.worst_ratio:.3g}x" for c in row.comparisons if not c.passed)
        assert len(row.comparisons) == 2


def _flax_half_slice(dtype: str) -> set[str]:
    """The modules in turn, one case each: the first case of every other module in float16, the second (its only
    one where it has one) of the others in bfloat16; both dtypes take the same path (attn_core.precision)."""
    by_module: dict[str, list] = {}
    for case in CASES:
        by_module.setdefault(case.module, []).append(case)
    index = 0 if dtype == "float16" else 1
    return {cases[min(index, len(cases) - 1)].name for i, cases in enumerate(by_module.values()) if i % 2 == index}


@pytest.mark.parametrize("dtype", ["float16", pytest.param("bfloat16", marks=pytest.mark.slow)])
@pytest.mark.parametrize("fw", ["torch", SLOW_FLAX])
def test_every_module_forward_is_within_half_tolerance(fw, dtype):
    """The outputs of every case pass in float16 and bfloat16; the half-precision gradients are the suite's rows
    (``python -m conformance --dtypes float16,bfloat16``), computed in float32 inside every module
    (attn_core.precision). Flax's rows are one case of each module, in float16 or bfloat16 by turns (each case's
    program compiles for seconds); Flax's every case is ``python -m conformance --backends flax --dtypes
    float16,bfloat16 --no-grad``."""
    backend(fw)
    for case in (c for c in CASES if c.module != "simam" and (fw != "flax" or c.name in _flax_half_slice(dtype))):
        row = run_case(case, get_runner(fw), dtype, grads=False, reference=reference_for(case, False, dtype))
        assert row.status == "pass", f"{case.name}: {row.message} {row.comparisons}"


HALF_CASES = ("se/c64-timm", "se/c24-silu-hsig", "eca/c128-k5", "eca/c8-k3-b1", "ca/c32-bias", "sa/k7-bn-train",
              "cbam/c32-article", "cbam/c24-timm-train")
# a module's second case is slow, and so is every Flax row but the first (each jit-compiles a module in half)
HALF_ROWS = [pytest.param(c, d, b, id=f"{c}-{d}-{b}",
                          marks=(pytest.mark.slow,) if c in ("se/c24-silu-hsig", "eca/c8-k3-b1", "cbam/c24-timm-train")
                          or (b == "flax" and (c, d) != (HALF_CASES[0], "float16")) else ())
             for c in HALF_CASES for d in ("float16", "bfloat16") for b in ("torch", "paddle", "flax")]


@pytest.mark.parametrize("case_name,dtype,backend", HALF_ROWS)
def test_half_rows_pass_forward_and_every_gradient(case_name, dtype, backend):
    """attn_core.precision: half inputs are computed in float32 and rounded once, so output, input gradient and
    parameter gradients all meet the onnxruntime half tolerances (computed in half they missed them by up to 36x)."""
    from conformance import CASES, run_case
    from conformance.runners import get_runner
    runner = get_runner(backend)
    ok, why = runner.available()
    if not ok:
        pytest.skip(why)
    case = next(c for c in CASES if c.name == case_name)
    row = run_case(case, runner, dtype)
    assert row.status == "pass", [(c.quantity, c.worst_ratio) for c in row.comparisons if not c.passed]
    assert any(c.quantity.startswith("grad:") and c.quantity != "grad:input" for c in row.comparisons)
