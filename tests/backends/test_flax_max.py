"""backends.flax's max with shared ties (CBAM's max over H, W and over C): its gradient under jax.jit, where the
max's operand is computed in the same program, against the float64 reference and against hand calculations.

Why: jnp.max's gradient finds the maximum as ``x == max(x)``, and XLA may recompute ``x`` for that comparison in
another fusion that rounds differently, which lost the gradient of CBAM inside a ResNet block (jax-ml/jax 3602,
40564)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("flax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import backends.flax as bf  # noqa: E402
from backends.flax._ops import _max_bwd, max_with_shared_ties  # noqa: E402


def _nhwc(x: np.ndarray) -> jax.Array:
    return jnp.asarray(np.transpose(x, (0, 2, 3, 1)))


def _close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """Elementwise within 1e-9, with 1e-9 of the array's scale as the floor for entries near 0."""
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9 * float(np.max(np.abs(want))), err_msg=what)


def test_cbam_max_gradient_under_jit() -> None:
    """CBAM alone, its input centred per channel inside the jitted program."""
    from attn_core import CBAM_PRESETS, create_config

    config = create_config("cbam", 256, **dict(CBAM_PRESETS["timm"]))
    rng = np.random.default_rng(0)
    weights = config.init_weights(rng)
    x = rng.standard_normal((1, 256, 3, 3)) + 0.5
    cotangent = rng.standard_normal(x.shape)
    # the module sees x centred per channel (computed inside the program); the centring's VJP is g - mean(g)
    centred = x - x.mean(axis=(0, 2, 3), keepdims=True)
    _, want_dc, want_grads = config.reference_vjp(weights, centred, cotangent, training=True)
    want_dx = want_dc - want_dc.mean(axis=(0, 2, 3), keepdims=True)
    module = bf.CBAM.from_config(config)

    def run(variables: dict[str, Any], xx: jax.Array, ct: jax.Array) -> tuple[Any, Any]:
        rest = {k: v for k, v in variables.items() if k != "params"}

        def f(params: Any, xi: jax.Array) -> jax.Array:
            xc = xi - jnp.mean(xi, axis=(0, 1, 2))
            return module.apply({**rest, "params": params}, xc, train=True, mutable=["batch_stats"])[0]

        return jax.vjp(f, variables["params"], xx)[1](ct)

    with jax.enable_x64(True):
        variables = bf.load_weights(module, weights, dtype=jnp.float64)
        dparams, dx = jax.jit(run)(variables, _nhwc(x), _nhwc(cotangent))
        dx = np.transpose(np.asarray(dx), (0, 3, 1, 2))
    got = bf.export_weights(module, {"params": dparams, "batch_stats": variables["batch_stats"]})
    for name, want in want_grads.items():
        _close(got[name], want, f"CBAM d/d{name}")
    _close(dx, want_dx, "CBAM d/dx")


def test_max_shares_ties_under_jit() -> None:
    """The reference's tie rule (attn_core.ops.amax: the gradient split equally among the maxima) under jit, the
    operand computed in the program. By hand, for the NHWC input below: over C, pixel (0, 1) ties (3, 3) and each
    takes 1/2, times 2 from ``z * 2 - 1``; over H, W, channel 0 has three 3s (1/3 each) and channel 1 two (1/2
    each); over everything the five 3s take 1/5 each."""
    t = jnp.array([[[[1.0, 3.0], [3.0, 3.0]], [[3.0, 0.5], [3.0, -1.0]]]])  # (1, 2, 2, 2)
    rows = jax.jit(jax.grad(lambda z: jnp.sum(max_with_shared_ties(z * 2.0 - 1.0, -1))))(t)
    np.testing.assert_allclose(np.asarray(rows).reshape(4, 2), [[0, 2], [1, 1], [2, 0], [2, 0]], rtol=1e-7)
    spatial = np.asarray(jax.jit(jax.grad(lambda z: jnp.sum(max_with_shared_ties(z + 0.0, (1, 2)))))(t))
    np.testing.assert_allclose(spatial[0, :, :, 0], [[0, 1 / 3], [1 / 3, 1 / 3]], rtol=1e-7)
    np.testing.assert_allclose(spatial[0, :, :, 1], [[0.5, 0.5], [0, 0]], rtol=1e-7)
    everything = jax.jit(jax.grad(lambda z: jnp.sum(max_with_shared_ties(z - 1.0, (1, 2, 3)))))(t)
    np.testing.assert_allclose(np.asarray(everything), np.where(np.asarray(t) == 3.0, 0.2, 0.0), rtol=1e-7)


def test_max_gradient_when_no_value_equals_the_maximum() -> None:
    """The backward's fallback: where x, recomputed with other rounding, has no value equal to the forward's maximum,
    the gradient goes to the first largest value (argmax). By hand: rows [1, 3, 2] and [5, 5, 4] with maxima given
    slightly above what they hold (3 + 1e-6 and 5 + 1e-6): all of g to position 1 and position 0."""
    x = jnp.array([[1.0, 3.0, 2.0], [5.0, 5.0, 4.0]])
    m = jnp.array([[3.0 + 1e-6], [5.0 + 1e-6]])
    (dx,) = jax.jit(lambda a, b, g: _max_bwd(-1, (a, b), g))(x, m, jnp.array([[2.0], [4.0]]))
    np.testing.assert_array_equal(np.asarray(dx), [[0.0, 2.0, 0.0], [4.0, 0.0, 0.0]])
    # and where the maximum is found, ties share it (1/2 each of 4 in the second row)
    (dx,) = jax.jit(lambda a, b, g: _max_bwd(-1, (a, b), g))(x, jnp.array([[3.0], [5.0]]), jnp.array([[2.0], [4.0]]))
    np.testing.assert_array_equal(np.asarray(dx), [[0.0, 2.0, 0.0], [2.0, 2.0, 0.0]])
