"""Coordinate attention and timm's strip-pooling variants in Flax: CoordAttn, SimpleCoordAttn, EfficientLocalAttn,
StripAttn. The math: :mod:`attn_core.coord_attn`. NHWC: the strips are (N, H, 1, C) and (N, 1, W, C)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from attn_core import (
    CoordAttnConfig,
    EfficientLocalAttnConfig,
    SimpleCoordAttnConfig,
    StripAttnConfig,
)

from .._common import gated
from ._base import AttentionModule
from ._layers import batch_norm, conv, pointwise
from ._ops import ACTIVATIONS


def _strip_conv(channels: int, kernel_size: int, axis: str, bias: bool, dtype: Any) -> nn.Conv:
    """The depthwise (k, 1) convolution along H (``axis='h'``, named ``conv_h``) or (1, k) along W (``conv_w``), zero
    padded by k // 2."""
    p = kernel_size // 2
    shape, padding = ((kernel_size, 1), (p, 0)) if axis == "h" else ((1, kernel_size), (0, p))
    return conv(channels, shape, f"conv_{axis}", padding=padding, groups=channels, bias=bias, dtype=dtype)


class CoordAttn(AttentionModule):
    __doc__ = CoordAttnConfig.__doc__
    _config_cls = CoordAttnConfig

    channels: int
    rd_ratio: float = 1.0 / 16
    rd_channels: int | None = None
    rd_divisor: int | None = 8
    se_factor: float = 2.0 / 3
    bias: bool = False
    act_layer: str = "hard_swish"
    norm_layer: str | None = "batchnorm"
    gate_layer: str = "sigmoid"
    has_skip: bool = False
    rd_min: int | None = None
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg, dt, xc = self.prepare(x, train)
        h = x.shape[1]
        # (N, H, 1, C) and the W strip laid out as (N, W, 1, C), stacked along axis 1 as in timm's NCHW
        s_w = jnp.swapaxes(jnp.mean(xc, axis=1, keepdims=True), 1, 2)
        y = pointwise(cfg.hidden, cfg.bias, "conv1", dt)(jnp.concatenate([jnp.mean(xc, axis=2, keepdims=True), s_w],
                                                                          axis=1))
        if cfg.norm_layer is not None:
            y = batch_norm(train, cfg.bn_eps, cfg.bn_momentum, "bn1")(y)
        y = ACTIVATIONS[cfg.act_layer](y)
        gate = ACTIVATIONS[cfg.gate_layer]
        a_h = self.expose_gate(gate(pointwise(cfg.channels, cfg.bias, "conv_h", dt)(y[:, :h])), "gate_h")
        a_w = self.expose_gate(gate(pointwise(cfg.channels, cfg.bias, "conv_w", dt)(jnp.swapaxes(y[:, h:], 1, 2))),
                               "gate_w")
        return gated(xc, a_w.astype(dt), a_h.astype(dt), skip=cfg.has_skip).astype(x.dtype)


class SimpleCoordAttn(AttentionModule):
    __doc__ = SimpleCoordAttnConfig.__doc__
    _config_cls = SimpleCoordAttnConfig

    channels: int
    rd_ratio: float = 0.25
    rd_channels: int | None = None
    rd_divisor: int | None = 8
    se_factor: float = 2.0 / 3
    bias: bool = True
    act_layer: str = "silu"
    gate_layer: str = "sigmoid"
    has_skip: bool = False
    rd_min: int | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg, dt, xc = self.prepare(x, train)
        act = ACTIVATIONS[cfg.act_layer]
        fc1 = nn.Dense(cfg.hidden, use_bias=cfg.bias, dtype=dt, name="fc1")  # shared by both strips
        # the strips as rows of C: (N, H, C) and (N, W, C)
        r_h, r_w = act(fc1(jnp.mean(xc, axis=2))), act(fc1(jnp.mean(xc, axis=1)))
        a_h = nn.Dense(cfg.channels, use_bias=cfg.bias, dtype=dt, name="fc_h")(r_h)[:, :, None, :]
        a_w = nn.Dense(cfg.channels, use_bias=cfg.bias, dtype=dt, name="fc_w")(r_w)[:, None, :, :]
        g = self.expose_gate(ACTIVATIONS[cfg.gate_layer](a_h + a_w).astype(dt))
        return gated(xc, g, skip=cfg.has_skip).astype(x.dtype)


class EfficientLocalAttn(AttentionModule):
    __doc__ = EfficientLocalAttnConfig.__doc__
    _config_cls = EfficientLocalAttnConfig

    channels: int
    kernel_size: int = 7
    bias: bool = False
    act_layer: str | None = "silu"
    gate_layer: str = "sigmoid"
    norm_layer: str | None = "groupnorm"
    has_skip: bool = False
    norm_groups: int = 1
    norm_eps: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg, dt, xc = self.prepare(x, train)
        act = ACTIVATIONS[cfg.act_layer] if cfg.act_layer is not None else (lambda v: v)
        gates = []
        for axis, strip in (("h", jnp.mean(xc, axis=2, keepdims=True)), ("w", jnp.mean(xc, axis=1, keepdims=True))):
            z = _strip_conv(cfg.channels, cfg.kernel_size, axis, cfg.bias, dt)(strip)
            if cfg.norm_layer is not None:
                # the strip's statistics over its length and each group's channels (timm's GroupNorm1: all C),
                # two-pass as torch
                z = nn.GroupNorm(num_groups=cfg.norm_groups, epsilon=cfg.norm_eps, dtype=dt, use_fast_variance=False,
                                 name=f"norm_{axis}")(z)
            gates.append(self.expose_gate(ACTIVATIONS[cfg.gate_layer](act(z)).astype(dt), f"gate_{axis}"))
        return gated(xc, *gates, skip=cfg.has_skip).astype(x.dtype)


class StripAttn(AttentionModule):
    __doc__ = StripAttnConfig.__doc__
    _config_cls = StripAttnConfig

    channels: int
    use_conv: bool = True
    kernel_size: int = 3
    bias: bool = False
    gate_layer: str = "sigmoid"
    has_skip: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg, dt, xc = self.prepare(x, train)
        s_h, s_w = jnp.mean(xc, axis=2, keepdims=True), jnp.mean(xc, axis=1, keepdims=True)
        if cfg.use_conv:
            s_h = _strip_conv(cfg.channels, cfg.kernel_size, "h", cfg.bias, dt)(s_h)
            s_w = _strip_conv(cfg.channels, cfg.kernel_size, "w", cfg.bias, dt)(s_w)
        g = self.expose_gate(ACTIVATIONS[cfg.gate_layer](s_h + s_w).astype(dt))
        return gated(xc, g, skip=cfg.has_skip).astype(x.dtype)
