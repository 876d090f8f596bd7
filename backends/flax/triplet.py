"""Triplet attention in Flax. The math and its documentation: :class:`attn_core.TripletAttentionConfig`.

NHWC: each branch's gate sees a rotation of the input whose last axis is the one it pools over, (N, C, W, H) for
``ChannelGateH``, (N, H, C, W) for ``ChannelGateW`` and the input itself for ``SpatialGate``; the gates, (N, C, W, 1),
(N, H, C, 1) and (N, H, W, 1), are the reference's taps in NHWC."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from attn_core import TripletAttentionConfig

from ._base import AttentionModule
from ._layers import SpatialConv, batch_norm
from ._ops import max_with_shared_ties

#: branch -> the permutation of the NHWC input that puts the branch's pooled axis last and its gate's two axes in
#: the reference's order (each its own inverse)
NHWC_ROTATIONS: Mapping[str, tuple[int, int, int, int]] = MappingProxyType({
    "ChannelGateH": (0, 3, 2, 1), "ChannelGateW": (0, 1, 3, 2), "SpatialGate": (0, 1, 2, 3)})


class BasicConv(nn.Module):
    """The authors' ``BasicConv`` as triplet attention builds it: a 2 -> 1 convolution without bias (``conv``), then
    a BatchNorm of one channel (``bn``), computing in ``dtype``."""

    kernel_size: int
    bn_eps: float
    bn_momentum: float
    dtype: Any

    @nn.compact
    def __call__(self, z: jax.Array, train: bool = False) -> jax.Array:
        s = SpatialConv(self.kernel_size, False, self.dtype, name="conv")(z)
        return batch_norm(train, self.bn_eps, self.bn_momentum, "bn")(s)


class AttentionGate(nn.Module):
    """One branch: the gate ``sigmoid(spatial(ZPool(z)))`` of a rotated input ``z`` pooled over its last axis,
    (N, B, D, 1); the caller multiplies it in (so that ``conformance.check`` can tap it)."""

    kernel_size: int
    max_first: bool
    bn_eps: float
    bn_momentum: float
    dtype: Any

    @nn.compact
    def __call__(self, z: jax.Array, train: bool = False) -> jax.Array:
        mx, avg = max_with_shared_ties(z, -1), jnp.mean(z, axis=-1, keepdims=True)
        pooled = jnp.concatenate([mx, avg] if self.max_first else [avg, mx], axis=-1)
        s = BasicConv(self.kernel_size, self.bn_eps, self.bn_momentum, self.dtype, name="spatial")(pooled, train)
        return jax.nn.sigmoid(s).astype(self.dtype)


class TripletAttention(AttentionModule):
    __doc__ = TripletAttentionConfig.__doc__
    _config_cls = TripletAttentionConfig

    channels: int | None = None
    kernel_size: int = 7
    no_spatial: bool = False
    pool_order: str = "max_mean"
    bn_eps: float = 1e-5
    bn_momentum: float = 0.01

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg, dt, xc = self.prepare(x, train)
        outs = []
        for branch, tap, _ in cfg.branches:
            perm = NHWC_ROTATIONS[branch]
            z = jnp.transpose(xc, perm)
            gate = AttentionGate(cfg.kernel_size, cfg.pool_order == "max_mean", cfg.bn_eps, cfg.bn_momentum, dt,
                                 name=branch)(z, train)
            if self.is_mutable_collection("intermediates"):  # turned back to the input's axes, as torch's
                self.expose_gate(jnp.transpose(gate, perm), tap)
            outs.append(jnp.transpose(z * gate, perm))
        total = outs[0]
        for out in outs[1:]:
            total = total + out
        return (total * (1.0 / len(outs))).astype(x.dtype)
