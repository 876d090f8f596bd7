"""Shuffle Attention in Flax. The math and its documentation: :class:`attn_core.ShuffleAttentionConfig`."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from attn_core import ShuffleAttentionConfig
from attn_core.shuffle import GATE_PARAMS

from ._base import AttentionModule


class _GroupNormParams(nn.Module):
    """The parameters of nn.GroupNorm (``scale``, ``bias``) over ``channels`` groups of one channel, for a caller
    that takes the statistics itself; ones and zeros (exact no-ops) without ``affine``."""

    channels: int
    affine: bool

    @nn.compact
    def __call__(self) -> tuple[jax.Array, jax.Array]:
        if not self.affine:
            return jnp.ones((self.channels,)), jnp.zeros((self.channels,))
        return (self.param("scale", nn.initializers.ones, (self.channels,)),
                self.param("bias", nn.initializers.zeros, (self.channels,)))


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
        gs, gb = (v.astype(dt) for v in _GroupNormParams(b, cfg.gn_affine, name="gn")())
        # the statistics over H, W of all C channels at once (C on the contiguous axis: a reduction over a minor
        # axis of b = 2 channels, the default's, is slow), the products on the groups' halves
        mean = jnp.mean(xc, axis=(1, 2), keepdims=True)
        var = jnp.mean(jnp.square(xc - mean), axis=(1, 2), keepdims=True)
        mean, var = mean.reshape(n, 1, 1, g, 2 * b), var.reshape(n, 1, 1, g, 2 * b)
        xg = xc.reshape(n, h, w, g, 2 * b)
        x0, x1 = xg[..., :b], xg[..., b:]
        gate_c = jax.nn.sigmoid(cw * mean[..., :b] + cb)
        mul = jax.lax.rsqrt(var[..., b:] + cfg.gn_eps) * gs
        gate_s = jax.nn.sigmoid(sw * ((x1 - mean[..., b:]) * mul + gb) + sb)
        if self.is_mutable_collection("intermediates"):  # the groups' gates one after the other, as the reference's
            for name, gate in (("sa_channel_gate", gate_c), ("sa_spatial_gate", gate_s)):
                self.expose_gate(gate.reshape(*gate.shape[:3], c // 2), name)
        out = jnp.concatenate([x0 * gate_c, x1 * gate_s], axis=-1).reshape(n, h, w, 2, c // 2)
        return jnp.swapaxes(out, -1, -2).reshape(n, h, w, c).astype(x.dtype)  # channel_shuffle(out, 2)
