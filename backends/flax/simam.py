"""SimAM in Flax. The math and its documentation: :class:`attn_core.SimAMConfig`."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attn_core import SimAMConfig, simam_denominator_count
from attn_core.simam import simam_compute_dtype

from ._base import AttentionModule


class SimAM(AttentionModule):
    __doc__ = SimAMConfig.__doc__
    _config_cls = SimAMConfig

    channels: int | None = None
    e_lambda: float = 1e-4

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        self.check_input(x)
        n = simam_denominator_count(x.shape[1], x.shape[2])
        # half: statistics, gate and product in float32, rounded once at the end (a no-op for other dtypes)
        xc = x.astype(simam_compute_dtype(jnp.dtype(x.dtype).name))
        d = jnp.square(xc - jnp.mean(xc, axis=(1, 2), keepdims=True))
        v = jnp.sum(d, axis=(1, 2), keepdims=True) / n
        return (xc * jax.nn.sigmoid(d / (4 * (v + self.config.e_lambda)) + 0.5)).astype(x.dtype)
