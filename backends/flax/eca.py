"""Efficient Channel Attention in Flax. The math and its documentation: :class:`attn_core.ECAConfig`."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from attn_core import ECAConfig

from ._base import AttentionModule


class ECAModule(AttentionModule):
    __doc__ = ECAConfig.__doc__
    _config_cls = ECAConfig

    channels: int
    kernel_size: int | None = None
    gamma: float = 2
    beta: float = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg, dt, xc = self.prepare(x, train)
        n, c = x.shape[0], x.shape[3]
        s = jnp.mean(xc, axis=(1, 2)).reshape(n, c, 1)  # channels as the 1-D spatial axis, one feature
        p = cfg.padding
        z = nn.Conv(1, (cfg.k,), padding=((p, p),), use_bias=False, dtype=dt, name="conv")(s)
        return (xc * self.expose_gate(jax.nn.sigmoid(z).reshape(n, 1, 1, c).astype(dt))).astype(x.dtype)
