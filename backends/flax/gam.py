"""GAM (Global Attention Mechanism) in Flax. The math and its documentation: :class:`attn_core.GAMConfig`."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from attn_core import GAMConfig

from ._base import AttentionModule
from ._layers import Sequential


class GAM(AttentionModule):
    __doc__ = GAMConfig.__doc__
    _config_cls = GAMConfig

    channels: int
    rate: float = 4
    kernel_size: int = 7
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    groups: int = 1
    shuffle_groups: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg, dt, xc = self.prepare(x, train)  # in training also the BatchNorms' rule: N*H*W > 1 (GAMConfig)
        layers = cfg.layers()
        # NHWC: the channel MLP's Dense layers act on the last axis, which is the paper's permutation
        mlp, convs = (tuple((name.partition(".")[2], spec) for name, spec in part) for part in (layers[:3], layers[3:]))
        gate_c = jax.nn.sigmoid(Sequential(mlp, name="channel_attention")(xc, train))
        x1 = xc * self.expose_gate(gate_c, "gam_channel_gate")
        s = Sequential(convs, cfg.bn_eps, cfg.bn_momentum, name="spatial_attention")(x1, train)
        g = cfg.shuffle_groups
        if g > 1:  # NHWC: channel j * g + i is channel i * C / g + j (commutes with the sigmoid)
            n, h, w, c = s.shape
            s = jnp.swapaxes(s.reshape(n, h, w, g, c // g), -1, -2).reshape(n, h, w, c)
        return (x1 * self.expose_gate(jax.nn.sigmoid(s).astype(dt), "gam_spatial_gate")).astype(x.dtype)
