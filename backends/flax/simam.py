"""SimAM in Flax. The math and its documentation: :class:`attn_core.SimAMConfig`."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attn_core import SimAMConfig, simam_denominator_count
from attn_core.simam import simam_mean_prescale

from ._base import AttentionModule


class SimAM(AttentionModule):
    __doc__ = SimAMConfig.__doc__
    _config_cls = SimAMConfig

    channels: int | None = None
    e_lambda: float = 1e-4

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg, _, xc = self.prepare(x, train)  # half: statistics, gate and product in float32
        h, w = x.shape[1], x.shape[2]
        n = simam_denominator_count(h, w)
        # scale-free (attn_core.simam): the mean prescaled by a power of two, the deviations divided by their largest
        p = simam_mean_prescale(h, w)
        m = jnp.sum(xc * p, axis=(1, 2), keepdims=True) / (h * w * p)
        lo = jax.lax.stop_gradient(jnp.min(xc, axis=(1, 2), keepdims=True))
        hi = jax.lax.stop_gradient(jnp.max(xc, axis=(1, 2), keepdims=True))
        clamped = jnp.clip(jax.lax.stop_gradient(m), lo, hi)
        dev = xc - (m + (clamped - jax.lax.stop_gradient(m)))  # the clamp moves the value only: the mean's gradient
        s = jnp.maximum(hi - clamped, clamped - lo)
        s = jnp.where(s == 0, jnp.ones_like(s), s)  # attn_core.simam.simam_deviation_scale
        # XLA CPU divides by multiplying with the reciprocal, which flushes to 0 beyond s = 2^126: divided by s / 16
        # and the quotient (at most 16) scaled back, both exact (a prescaled numerator is folded away under jit)
        d = jnp.square(dev / (s * 0.0625) * 0.0625)
        v = jnp.sum(d, axis=(1, 2), keepdims=True) / n
        return (xc * self.expose_gate(jax.nn.sigmoid(d / (4 * (v + cfg.e_lambda / s / s)) + 0.5))).astype(x.dtype)
