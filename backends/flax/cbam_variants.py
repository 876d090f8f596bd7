"""timm's light CBAM in Flax. The math and its documentation: :class:`attn_core.LightCBAMConfig`."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from attn_core import LightCBAMConfig

from ._base import AttentionModule
from ._layers import SpatialConv, batch_norm, pointwise
from ._ops import ACTIVATIONS, max_with_shared_ties


class _LightChannel(nn.Module):
    """The channel half's gate, ``sigmoid(fc2(act(fc1(0.5 * mean_hw + 0.5 * max_hw))))``, its layers under timm's
    names (``fc1``, ``fc2``)."""

    channels: int
    hidden: int
    bias: bool
    act_layer: str
    dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        pooled = 0.5 * jnp.mean(x, axis=(1, 2), keepdims=True) + 0.5 * max_with_shared_ties(x, (1, 2))
        h = pointwise(self.hidden, self.bias, "fc1", self.dtype)(pooled)
        h = pointwise(self.channels, self.bias, "fc2", self.dtype)(ACTIVATIONS[self.act_layer](h))
        return jax.nn.sigmoid(h).astype(x.dtype)


class _ConvNorm(nn.Module):
    """timm's ``ConvNormAct`` without its activation: the 1 -> 1 channel convolution ``conv``, BatchNorm ``bn``."""

    kernel_size: int
    bn_eps: float
    bn_momentum: float
    dtype: Any

    @nn.compact
    def __call__(self, z: jax.Array, train: bool) -> jax.Array:
        z = SpatialConv(self.kernel_size, False, self.dtype, name="conv")(z)
        return batch_norm(train, self.bn_eps, self.bn_momentum, "bn")(z)


class _LightSpatial(nn.Module):
    """The spatial half's gate, ``sigmoid(bn(conv(0.5 * mean_c + 0.5 * max_c)))``, its layers under timm's names
    (``conv.conv``, ``conv.bn``)."""

    kernel_size: int
    bn_eps: float
    bn_momentum: float
    dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        pooled = 0.5 * jnp.mean(x, axis=-1, keepdims=True) + 0.5 * max_with_shared_ties(x, -1)
        z = _ConvNorm(self.kernel_size, self.bn_eps, self.bn_momentum, self.dtype, name="conv")(pooled, train)
        return jax.nn.sigmoid(z).astype(x.dtype)


class LightCbamModule(AttentionModule):
    __doc__ = LightCBAMConfig.__doc__
    _config_cls = LightCBAMConfig

    channels: int
    rd_ratio: float = 1.0 / 16
    rd_channels: int | None = None
    rd_divisor: int | None = 1
    spatial_kernel_size: int = 7
    act_layer: str = "relu"
    gate_layer: str = "sigmoid"
    mlp_bias: bool = False
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg, dt, xc = self.prepare(x, train)
        g = _LightChannel(cfg.channels, cfg.hidden, cfg.mlp_bias, cfg.act_layer, dt, name="channel")(xc)
        x1 = xc * self.expose_gate(g, "channel_gate")
        g = _LightSpatial(cfg.spatial_kernel_size, cfg.bn_eps, cfg.bn_momentum, dt, name="spatial")(x1, train)
        y = x1 * self.expose_gate(g, "spatial_gate")
        return y.astype(x.dtype)
