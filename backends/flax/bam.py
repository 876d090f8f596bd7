"""BAM in Flax. The math and its documentation: :class:`attn_core.BAMConfig`. NHWC: the channel branch is
(N, 1, 1, C), the spatial branch (N, H, W, 1)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from attn_core import BAMConfig

from ._base import AttentionModule
from ._layers import batch_norm, conv


class ChannelLayers(nn.Module):
    """The channel branch's layers under the authors' names (``gate_c``): Dense / BatchNorm pairs on the pooled
    (N, 1, 1, C), then ``gate_c_fc_final``."""

    config: BAMConfig
    dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg = self.config
        h = jnp.mean(x, axis=(1, 2), keepdims=True)
        for i in range(cfg.num_layers):
            h = nn.Dense(cfg.hidden, dtype=self.dtype, name=f"gate_c_fc_{i}")(h)
            h = jax.nn.relu(batch_norm(train, cfg.bn_eps, cfg.bn_momentum, f"gate_c_bn_{i + 1}")(h))
        return nn.Dense(cfg.channels, dtype=self.dtype, name="gate_c_fc_final")(h)


class SpatialLayers(nn.Module):
    """The spatial branch's layers under the authors' names (``gate_s``): convolution / BatchNorm pairs, dilated
    3x3 ones padded by their dilation, then ``gate_s_conv_final``."""

    config: BAMConfig
    dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg = self.config
        z = x
        for name, bn, k, d in cfg.spatial_layers:
            z = conv(cfg.hidden, k, name, padding=d * (k // 2), dilation=d, dtype=self.dtype)(z)
            z = jax.nn.relu(batch_norm(train, cfg.bn_eps, cfg.bn_momentum, bn)(z))
        return conv(1, 1, "gate_s_conv_final", dtype=self.dtype)(z)


class Branch(nn.Module):
    """One branch under the authors' two-level names: ``layers`` (:class:`ChannelLayers`, ``M_c`` (N, 1, 1, C), or
    :class:`SpatialLayers`, ``M_s`` (N, H, W, 1)) as submodule ``inner`` (``gate_c``, ``gate_s``), in ``dtype``."""

    layers: Any
    inner: str
    config: BAMConfig
    dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return self.layers(self.config, self.dtype, name=self.inner)(x, train).astype(self.dtype)


class BAMGate(nn.Module):
    """The gate ``1 + sigmoid(M_c * M_s)`` (product) or ``1 + sigmoid(M_c + M_s)`` (sum), (N, H, W, C). It holds no
    variables; a submodule so that ``conformance.check`` can tap it."""

    product: bool

    def __call__(self, m_c: jax.Array, m_s: jax.Array) -> jax.Array:
        return 1.0 + jax.nn.sigmoid(m_c * m_s if self.product else m_c + m_s)


class BAM(AttentionModule):
    __doc__ = BAMConfig.__doc__
    _config_cls = BAMConfig

    channels: int
    reduction_ratio: int = 16
    num_layers: int = 1
    dilation_conv_num: int = 2
    dilation_val: int = 4
    combine: str = "product"
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg, dt, xc = self.prepare(x, train)
        m_c = Branch(ChannelLayers, "gate_c", cfg, dt, name="channel_att")(xc, train)
        m_s = Branch(SpatialLayers, "gate_s", cfg, dt, name="spatial_att")(xc, train)
        gate = BAMGate(cfg.combine == "product", name="gate")(m_c, m_s)
        return (xc * self.expose_gate(gate, "bam_gate")).astype(x.dtype)
