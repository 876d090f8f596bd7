"""Spatial attention kernel sizes: the memory limit decided in attn_core, and Flax's choice of convolution.

Before the limit, k = 100001 reached an 80 GB allocation before failing; before the choice, Flax unrolled every k
into k * k * 2 shifted multiply-adds (7 to 16 s to compile at k = 31, 24 s to run op by op at k = 101).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import attn_core.cbam as cbam
from attn_core import CBAMConfig, ConfigError, SpatialAttentionConfig, ops
from attn_core.autodiff import Node, backward
from conformance import run_case
from conformance.cases import Case
from conformance.runners import get_runner

from .._fw import backend


# ------------------------------------------------------------------------------------------ the memory limit
def test_the_largest_odd_kernel_whose_weights_fit_is_accepted_and_the_next_refused(monkeypatch):
    # 1 MiB of memory: 2 * k * k * 8 bytes <= 1048576 holds for k <= 256, so 255 is the largest odd k that fits
    monkeypatch.setattr(cbam, "physical_memory_bytes", lambda: 1 << 20)
    assert SpatialAttentionConfig(kernel_size=255).kernel_size == 255
    with pytest.raises(ConfigError) as err:
        SpatialAttentionConfig(kernel_size=257)
    text = str(err.value)
    assert text.startswith("SpatialAttention: kernel_size 257 needs 1,056,784 bytes")  # 2 * 257 * 257 * 8
    assert "1,048,576 bytes of memory" in text and "odd kernel sizes up to 255" in text
    with pytest.raises(ConfigError, match=r"^CBAM: SpatialAttention: kernel_size 257 "):
        CBAMConfig(8, spatial_kernel_size=257)


def test_no_limit_where_the_platform_does_not_say_its_memory(monkeypatch):
    monkeypatch.setattr(cbam, "physical_memory_bytes", lambda: None)
    assert SpatialAttentionConfig(kernel_size=100001).kernel_size == 100001  # a config allocates nothing


def test_this_machine_reports_its_memory():
    memory = cbam.physical_memory_bytes()
    assert memory is None or memory > 1 << 20


def _refuse_the_issues_kernel(construct) -> None:
    if cbam.physical_memory_bytes() is None or cbam.physical_memory_bytes() >= 2 * 100001 ** 2 * 8:
        pytest.skip("this machine's memory would hold the weights of k = 100001")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"kernel_size 100001 needs 160,003,200,016 bytes"):
        construct()
    assert time.perf_counter() - start < 5.0  # refused before allocating, not after an 80 GB attempt


def test_the_reference_refuses_the_issues_kernel_before_allocating():
    _refuse_the_issues_kernel(lambda: SpatialAttentionConfig(2, kernel_size=100001))


@pytest.mark.parametrize("module", ["SpatialAttention", "CBAM"])
@pytest.mark.parametrize("fw", ["torch", "paddle", "flax"])
def test_every_backend_refuses_the_issues_kernel_before_allocating(fw, module):
    bk = backend(fw)
    key = "kernel_size" if module == "SpatialAttention" else "spatial_kernel_size"
    _refuse_the_issues_kernel(lambda: getattr(bk, module)(8, **{key: 100001}))


# ------------------------------------------------------------------ Flax: unrolled up to a size, lax beyond
def _reference_conv(z: np.ndarray, kernel: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 ops.conv2d on NCHW / OIHW of the NHWC / HWIO operands: (y, dz, dkernel) in the NHWC / HWIO layouts."""
    zn, wn = Node(z.transpose(0, 3, 1, 2)), Node(kernel.transpose(3, 2, 0, 1))
    y = ops.conv2d(zn, wn, padding=kernel.shape[0] // 2)
    dz, dw = backward(y, g.transpose(0, 3, 1, 2), [zn, wn])
    return y.value.transpose(0, 2, 3, 1), dz.transpose(0, 2, 3, 1), dw.transpose(2, 3, 1, 0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("k", [3, "limit", "above", 33])
def test_flax_spatial_conv_matches_the_float64_convolution_either_side_of_the_switch(k, dtype):
    backend("flax")
    import jax
    import jax.numpy as jnp

    from backends.flax._ops import UNROLLED_MAX_KERNEL, spatial_conv
    k = {"limit": UNROLLED_MAX_KERNEL, "above": UNROLLED_MAX_KERNEL + 2}.get(k, k)
    rng = np.random.default_rng(k)
    z = rng.standard_normal((2, 9, 7, 2)) * 2.0 + 0.5  # a map smaller than the larger kernels
    kernel = rng.standard_normal((k, k, 2, 1)) / k
    g = rng.standard_normal((2, 9, 7, 1))
    y_ref, dz_ref, dk_ref = _reference_conv(z, kernel, g)
    with jax.enable_x64(dtype == "float64"):
        y, vjp = jax.vjp(spatial_conv, jnp.asarray(z, dtype), jnp.asarray(kernel, dtype))
        dz, dk = vjp(jnp.asarray(g, dtype))
        got = [np.asarray(a, np.float64) for a in (y, dz, dk)]
    rtol, atol = (1e-5, 1e-5) if dtype == "float32" else (1e-12, 1e-12)
    for name, a, ref in zip(("y", "dz", "dkernel"), got, (y_ref, dz_ref, dk_ref), strict=True):
        np.testing.assert_allclose(a, ref, rtol=rtol, atol=atol * max(1.0, float(np.abs(ref).max())), err_msg=name)


def test_flax_switches_to_the_framework_convolution_above_the_limit():
    backend("flax")
    import jax
    import jax.numpy as jnp

    from backends.flax._ops import UNROLLED_MAX_KERNEL, spatial_conv

    def convolutions(k: int) -> int:
        z, w = jnp.zeros((1, 5, 5, 2), jnp.float32), jnp.zeros((k, k, 2, 1), jnp.float32)
        return str(jax.make_jaxpr(spatial_conv)(z, w)).count("conv_general_dilated")

    assert convolutions(UNROLLED_MAX_KERNEL) == 0
    assert convolutions(UNROLLED_MAX_KERNEL + 2) == 1


@pytest.mark.slow  # its eager row runs op by op
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_flax_spatial_attention_at_k33_on_a_small_map_passes_its_conformance_row(dtype):
    """A conformance-like row above the switch: k = 33 on a 9 x 7 map (the kernel larger than the map), with a bias
    and BatchNorm in training, forward and every gradient against the float64 reference, eager and compiled."""
    backend("flax")
    case = Case("sa", "k33-bias-bn-train", (2, 3, 9, 7), (("kernel_size", 33), ("bias", True), ("norm", True)),
                training=True)
    for mode in ("eager", "compiled"):
        row = run_case(case, get_runner("flax"), dtype, mode=mode)
        assert row.status == "pass", f"{mode}: {row.message} " + "; ".join(
            f"{c.quantity} {c.worst_ratio:.3g}x" for c in row.comparisons if not c.passed)
        assert {"output", "grad:input", "grad:conv.weight"} <= {c.quantity for c in row.comparisons}
