"""Shuffle Attention in Flax. The math and its documentation: :class:`attn_core.ShuffleAttentionConfig`."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from attn_core import ShuffleAttentionConfig
from attn_core.shuffle import GATE_PARAMS

from ._base import AttentionModule


class ShuffleAttention(AttentionModule):
    __doc__ = ShuffleAttentionConfig.__doc__
    _config_cls = ShuffleAttentionConfig

    channels: int
    groups: int = 64
    gn_affine: bool = True
    gn_eps: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg, dt, xc = self.prepare(x, train)
        n, h, w, c = x.shape
        g, b = cfg.groups, cfg.branch_channels
        # the canonical (1, b, 1, 1) vectors on the last axis; the authors' initialisation: scales 0, shifts 1
        cw, cb, sw, sb = (self.param(name, nn.initializers.constant(value), (1, b, 1, 1)).reshape(b).astype(dt)
                          for name, value in GATE_PARAMS)
        xg = xc.reshape(n, h, w, g, 2 * b)
        x0, x1 = xg[..., :b], xg[..., b:]
        gate_c = jax.nn.sigmoid(cw * jnp.mean(x0, axis=(1, 2), keepdims=True) + cb)
        xn = x0 * gate_c
        # GroupNorm of b one-channel groups over H, W of each (sample, group): Flax's layer on (N * G, H, W, b)
        per_group = jnp.transpose(x1, (0, 3, 1, 2, 4)).reshape(n * g, h, w, b)
        normed = nn.GroupNorm(num_groups=b, epsilon=cfg.gn_eps, use_scale=cfg.gn_affine, use_bias=cfg.gn_affine,
                              dtype=dt, use_fast_variance=False, name="gn")(per_group)
        normed = jnp.transpose(normed.reshape(n, g, h, w, b), (0, 2, 3, 1, 4))
        gate_s = jax.nn.sigmoid(sw * normed + sb)
        xs = x1 * gate_s
        if self.is_mutable_collection("intermediates"):  # the groups' gates one after the other, as the reference's
            for name, gate in (("sa_channel_gate", gate_c), ("sa_spatial_gate", gate_s)):
                self.expose_gate(gate.reshape(*gate.shape[:3], c // 2), name)
        out = jnp.concatenate([xn, xs], axis=-1).reshape(n, h, w, 2, c // 2)
        return jnp.swapaxes(out, -1, -2).reshape(n, h, w, c).astype(x.dtype)  # channel_shuffle(out, 2)
