"""CBAM in Flax: ChannelAttention, SpatialAttention, CBAM. The math: :mod:`attn_core.cbam`."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from attn_core import CBAMConfig, ChannelAttentionConfig, SpatialAttentionConfig

from ._base import AttentionModule
from ._layers import SpatialConv, batch_norm, pointwise
from ._ops import ACTIVATIONS, max_with_shared_ties


class ChannelAttention(AttentionModule):
    __doc__ = ChannelAttentionConfig.__doc__
    _config_cls = ChannelAttentionConfig

    channels: int
    rd_ratio: float = 1.0 / 16
    rd_channels: int | None = None
    rd_divisor: int | None = 1
    bias: bool = False
    act_layer: str = "relu"
    gate_layer: str = "sigmoid"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg, dt, xc = self.prepare(x, train)
        fc1, fc2 = pointwise(cfg.hidden, cfg.bias, "fc1", dt), pointwise(cfg.channels, cfg.bias, "fc2", dt)
        act = ACTIVATIONS[cfg.act_layer]
        avg = fc2(act(fc1(jnp.mean(xc, axis=(1, 2), keepdims=True))))
        mx = fc2(act(fc1(max_with_shared_ties(xc, (1, 2)))))
        return (xc * self.expose_gate(ACTIVATIONS[cfg.gate_layer](avg + mx).astype(dt))).astype(x.dtype)


class SpatialAttention(AttentionModule):
    __doc__ = SpatialAttentionConfig.__doc__
    _config_cls = SpatialAttentionConfig

    channels: int | None = None
    kernel_size: int = 7
    order: str = "mean_max"
    bias: bool = False
    norm: bool = False
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    gate_layer: str = "sigmoid"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg, dt, xc = self.prepare(x, train)
        avg, mx = jnp.mean(xc, axis=-1, keepdims=True), max_with_shared_ties(xc, -1)
        pooled = jnp.concatenate([avg, mx] if cfg.order == "mean_max" else [mx, avg], axis=-1)
        z = SpatialConv(cfg.kernel_size, cfg.bias, dt, name="conv")(pooled)
        if cfg.norm:
            z = batch_norm(train, cfg.bn_eps, cfg.bn_momentum, "bn")(z)
        return (xc * self.expose_gate(ACTIVATIONS[cfg.gate_layer](z).astype(dt))).astype(x.dtype)


class CBAM(AttentionModule):
    __doc__ = CBAMConfig.__doc__
    _config_cls = CBAMConfig

    channels: int
    rd_ratio: float = 1.0 / 16
    rd_channels: int | None = None
    rd_divisor: int | None = 1
    spatial_kernel_size: int = 7
    mlp_bias: bool = False
    spatial_order: str = "mean_max"
    spatial_bias: bool = False
    spatial_norm: bool = False
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    act_layer: str = "relu"
    gate_layer: str = "sigmoid"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg, _, xc = self.prepare(x, train)  # half: both halves in float32, the output rounded once
        x1 = ChannelAttention.from_config(cfg.channel, name="channel")(xc, train)
        return SpatialAttention.from_config(cfg.spatial, name="spatial")(x1, train).astype(x.dtype)
