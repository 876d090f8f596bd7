"""Non-local attention in Flax: NonLocalAttn and BatNonLocalAttn (with its BilinearAttnTransform), on NHWC input.
The math: :mod:`attn_core.non_local`.

In training with ``drop_rate > 0`` BatNonLocalAttn's dropout draws from the ``'dropout'`` rng:
``module.apply(variables, x, train=True, mutable=['batch_stats'], rngs={'dropout': key})``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from attn_core import BatNonLocalAttnConfig, NonLocalAttnConfig
from attn_core.non_local import BN_EPS, BN_MOMENTUM

from ._base import AttentionModule
from ._layers import batch_norm, conv, pointwise
from ._ops import ACTIVATIONS, max_with_shared_ties

__all__ = ["NonLocalAttn", "BatNonLocalAttn", "BilinearAttnTransform", "ConvNormAct"]


class NonLocalAttn(AttentionModule):
    __doc__ = NonLocalAttnConfig.__doc__
    _config_cls = NonLocalAttnConfig

    channels: int
    use_scale: bool = True
    rd_ratio: float = 1.0 / 8
    rd_channels: int | None = None
    rd_divisor: int = 8

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg, dt, xc = self.prepare(x, train)
        n, h, w, c = x.shape
        rd = cfg.hidden
        t, p, g = (pointwise(rd, True, name, dt)(xc).reshape(n, h * w, rd) for name in ("t", "p", "g"))
        att = jax.nn.softmax(t @ p.transpose(0, 2, 1) * cfg.scale, axis=2)  # positions in H-major order, as torch
        ctx = (att @ g).reshape(n, h, w, rd)
        y = batch_norm(train, BN_EPS, BN_MOMENTUM, "norm")(pointwise(c, True, "z", dt)(ctx))
        return (y.astype(dt) + xc).astype(x.dtype)


class ConvNormAct(nn.Module):
    """timm's ConvNormAct as BAT builds it: 1x1 convolution without bias (``conv``), BatchNorm (``bn``), the
    activation, computing in ``dtype`` (None: its input's)."""

    features: int
    act_layer: str = "relu"
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        y = pointwise(self.features, False, "conv", self.dtype)(x)
        return ACTIVATIONS[self.act_layer](batch_norm(train, BN_EPS, BN_MOMENTUM, "bn")(y))


class BilinearAttnTransform(nn.Module):
    """timm's BilinearAttnTransform (see :class:`attn_core.BatNonLocalAttnConfig`, steps 1-4), NHWC."""

    block_size: int
    groups: int
    act_layer: str = "relu"
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        n, h, w, c = x.shape
        b, g = self.block_size, self.groups
        th, tw = h // b, w // b
        o = ConvNormAct(g, self.act_layer, self.dtype, name="conv1")(x, train)  # (N, H, W, G)
        rows = max_with_shared_ties(o.reshape(n, b, th * w, g), 2)  # the max over each block of rows: (N, b, 1, G)
        cols = max_with_shared_ties(o.reshape(n, h, b, tw, g).transpose(0, 2, 1, 3, 4).reshape(n, b, h * tw, g), 2)
        p = jax.nn.sigmoid(conv(b * b * g, (b, 1), "conv_p", dtype=self.dtype)(rows).reshape(n, g, b, b))
        q = jax.nn.sigmoid(conv(b * b * g, (1, b), "conv_q", dtype=self.dtype)(cols.reshape(n, 1, b, g))
                           .reshape(n, g, b, b))
        p = p / p.sum(axis=3, keepdims=True)
        q = q / q.sum(axis=2, keepdims=True)
        # kron(P, I_t) @ x @ kron(Q, I_s) per channel, without the H x H and W x W matrices: block row i mixes the
        # block rows j at the same offset, and likewise for the columns, each group's P and Q for its channels
        v = jnp.einsum("ngij,njawgc->niawgc", p, x.reshape(n, b, th, w, g, c // g)).reshape(n, h, w, c)
        v = jnp.einsum("nhjbgc,ngjk->nhkbgc", v.reshape(n, h, b, tw, g, c // g), q).reshape(n, h, w, c)
        return ConvNormAct(c, self.act_layer, self.dtype, name="conv2")(v, train)


class BatNonLocalAttn(AttentionModule):
    __doc__ = BatNonLocalAttnConfig.__doc__
    _config_cls = BatNonLocalAttnConfig

    channels: int
    block_size: int = 7
    groups: int = 2
    rd_ratio: float = 0.25
    rd_channels: int | None = None
    rd_divisor: int = 8
    drop_rate: float = 0.2
    act_layer: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg, dt, xc = self.prepare(x, train)
        u = ConvNormAct(cfg.hidden, cfg.act_layer, dt, name="conv1")(xc, train)
        v = BilinearAttnTransform(cfg.block_size, cfg.groups, cfg.act_layer, dt, name="ba")(u, train)
        y = ConvNormAct(cfg.channels, cfg.act_layer, dt, name="conv2")(v, train)
        # Dropout2d: one draw per (sample, channel), shared over H and W
        y = nn.Dropout(cfg.drop_rate, broadcast_dims=(1, 2), deterministic=not train, name="dropout")(y)
        return (y.astype(dt) + xc).astype(x.dtype)
