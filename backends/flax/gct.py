"""Gated Channel Transformation in Flax. The math and its documentation: :class:`attn_core.GCTConfig`."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from attn_core import GCTConfig

from ._base import AttentionModule


class GCT(AttentionModule):
    __doc__ = GCTConfig.__doc__
    _config_cls = GCTConfig

    channels: int
    epsilon: float = 1e-5
    mode: str = "l2"
    after_relu: bool = False
    channel_eps: str = "mean"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg, dt, xc = self.prepare(x, train)
        c = cfg.channels
        # the canonical (1, C, 1, 1) parameters, as NHWC broadcasts them; the authors' initialisation 1, 0, 0
        alpha, gamma, beta = (self.param(name, init, (1, c, 1, 1)).reshape(1, 1, 1, c).astype(dt) for name, init in
                              (("alpha", nn.initializers.ones_init()), ("gamma", nn.initializers.zeros_init()),
                               ("beta", nn.initializers.zeros_init())))
        if cfg.mode == "l2":
            emb = jnp.sqrt(jnp.sum(xc * xc, axis=(1, 2), keepdims=True) + cfg.epsilon) * alpha
            norm = gamma / jnp.sqrt(jnp.mean(emb * emb, axis=3, keepdims=True) + cfg.norm_epsilon)
        else:
            emb = jnp.sum(xc if cfg.after_relu else jnp.abs(xc), axis=(1, 2), keepdims=True) * alpha
            norm = gamma / (jnp.mean(jnp.abs(emb), axis=3, keepdims=True) + cfg.norm_epsilon)
        return (xc * self.expose_gate(1.0 + jnp.tanh(emb * norm + beta))).astype(x.dtype)
