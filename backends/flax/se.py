"""Squeeze-and-Excitation in Flax. The math and its documentation: :class:`attn_core.SEConfig`."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from attn_core import SEConfig

from ._base import AttentionModule
from ._layers import pointwise
from ._ops import ACTIVATIONS


class SEModule(AttentionModule):
    __doc__ = SEConfig.__doc__
    _config_cls = SEConfig

    channels: int
    rd_ratio: float = 1.0 / 16
    rd_channels: int | None = None
    rd_divisor: int | None = 8
    bias: bool = True
    act_layer: str = "relu"
    gate_layer: str = "sigmoid"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg, dt, xc = self.prepare(x, train)
        s = jnp.mean(xc, axis=(1, 2), keepdims=True)
        h = ACTIVATIONS[cfg.act_layer](pointwise(cfg.hidden, cfg.bias, "fc1", dt)(s))
        g = ACTIVATIONS[cfg.gate_layer](pointwise(cfg.channels, cfg.bias, "fc2", dt)(h))
        return (xc * self.expose_gate(g.astype(dt))).astype(x.dtype)
