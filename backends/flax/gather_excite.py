"""Gather-Excite in Flax. The math and its documentation: :class:`attn_core.GatherExciteConfig`. NHWC."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from attn_core import GatherExciteConfig
from attn_core.ops import nearest_indices

from ._base import AttentionModule
from ._layers import batch_norm, conv, pointwise
from ._ops import ACTIVATIONS, max_pool2d, max_with_shared_ties


def resize_nearest(g: jax.Array, size: tuple[int, int]) -> jax.Array:
    """``g`` (N, h, w, C) resized to ``size`` by torch's nearest rule (:func:`attn_core.ops.nearest_indices`), as
    explicit indices (``jax.image.resize`` samples pixel centres, another rule)."""
    g = jnp.take(g, jnp.asarray(nearest_indices(g.shape[1], size[0])), axis=1)
    return jnp.take(g, jnp.asarray(nearest_indices(g.shape[2], size[1])), axis=2)


class Gather(nn.Module):
    """The gather with parameters, named as timm's ``gather`` Sequential: depthwise convolutions ``conv<i>`` without
    bias, each followed by BatchNorm ``norm<i>`` and all but the last by ``act``."""

    config: GatherExciteConfig
    dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        cfg = self.config
        c = cfg.channels
        if cfg.extent == 0 and cfg.feat_size is not None:
            kernel, stride, padding = cfg.feat_size, 1, 0
        else:
            kernel, stride, padding = (3, 3), 2, 1
        g = x
        for i in range(1, cfg.num_convs + 1):
            g = conv(c, kernel, f"conv{i}", stride=stride, padding=padding, groups=c, bias=False, dtype=self.dtype)(g)
            if cfg.norm:
                g = batch_norm(train, cfg.bn_eps, cfg.bn_momentum, f"norm{i}")(g)
            if i != cfg.num_convs:
                g = ACTIVATIONS[cfg.act_layer](g)
        return g


class ConvMlp(nn.Module):
    """timm's ``ConvMlp`` without norm: ``fc2(act(fc1(x)))``, 1x1 convolutions with biases."""

    channels: int
    hidden: int
    act_layer: str
    dtype: Any

    @nn.compact
    def __call__(self, g: jax.Array) -> jax.Array:
        h = ACTIVATIONS[self.act_layer](pointwise(self.hidden, True, "fc1", self.dtype)(g))
        return pointwise(self.channels, True, "fc2", self.dtype)(h)


class GatherExcite(AttentionModule):
    __doc__ = GatherExciteConfig.__doc__
    _config_cls = GatherExciteConfig

    channels: int
    feat_size: tuple[int, int] | None = None
    extra_params: bool = False
    extent: int = 0
    use_mlp: bool = True
    rd_ratio: float = 1.0 / 16
    rd_channels: int | None = None
    rd_divisor: int | None = 1
    add_maxpool: bool = False
    act_layer: str = "relu"
    norm_layer: str | None = "batchnorm"
    gate_layer: str = "sigmoid"
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg, dt, xc = self.prepare(x, train)
        if cfg.extra_params:
            g = Gather(cfg, dt, name="gather")(xc, train)
        elif cfg.extent == 0:
            g = jnp.mean(xc, axis=(1, 2), keepdims=True)
            if cfg.add_maxpool:
                g = 0.5 * g + 0.5 * max_with_shared_ties(xc, (1, 2))
        else:
            # window sums over each window's count of input cells (count_include_pad=False) and max_pool2d's
            # -inf pad + VALID pool: jax2onnx 0.17's linen pools take no padding pairs, so nn.avg_pool and
            # nn.max_pool with this padding do not export (the same numbers either way)
            k, s, p = cfg.pool_geometry
            sums = jax.lax.reduce_window(xc, 0.0, jax.lax.add, (1, k, k, 1), (1, s, s, 1),
                                         ((0, 0), (p, p), (p, p), (0, 0)))
            counts = cfg.pool_counts(x.shape[1], x.shape[2]).transpose(0, 2, 3, 1)
            g = sums / jnp.asarray(counts, sums.dtype)
            if cfg.add_maxpool:
                g = 0.5 * g + 0.5 * max_pool2d(xc, k, s, p)
        if cfg.use_mlp:
            g = ConvMlp(cfg.channels, cfg.hidden, cfg.act_layer, dt, name="mlp")(g)
        if g.shape[1] != 1 or g.shape[2] != 1:
            g = resize_nearest(g, (x.shape[1], x.shape[2]))
        return (xc * self.expose_gate(ACTIVATIONS[cfg.gate_layer](g).astype(dt))).astype(x.dtype)
