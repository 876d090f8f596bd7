"""Effective Squeeze-Excitation in Flax. The math and its documentation: :class:`attn_core.EffectiveSEConfig`."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from attn_core import EffectiveSEConfig

from ._base import AttentionModule
from ._layers import pointwise
from ._ops import ACTIVATIONS, max_with_shared_ties


class EffectiveSEModule(AttentionModule):
    __doc__ = EffectiveSEConfig.__doc__
    _config_cls = EffectiveSEConfig

    channels: int
    add_maxpool: bool = False
    gate_layer: str = "hard_sigmoid"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg, dt, xc = self.prepare(x, train)
        s = jnp.mean(xc, axis=(1, 2), keepdims=True)
        if cfg.add_maxpool:
            s = 0.5 * s + 0.5 * max_with_shared_ties(xc, (1, 2))
        g = ACTIVATIONS[cfg.gate_layer](pointwise(cfg.channels, True, "fc", dt)(s))
        return (xc * self.expose_gate(g.astype(dt))).astype(x.dtype)
