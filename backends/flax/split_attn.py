"""Split attention (ResNeSt's Splat) in Flax. The math and its documentation: :class:`attn_core.SplitAttnConfig`."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from attn_core import SplitAttnConfig

from ._base import AttentionModule
from ._layers import batch_norm, conv, pointwise
from ._ops import ACTIVATIONS


class SplitAttn(AttentionModule):
    __doc__ = SplitAttnConfig.__doc__
    _config_cls = SplitAttnConfig

    in_channels: int
    out_channels: int | None = None
    kernel_size: int = 3
    stride: int = 1
    padding: int | None = None
    dilation: int = 1
    groups: int = 1
    bias: bool = False
    radix: int = 2
    rd_ratio: float = 0.25
    rd_channels: int | None = None
    rd_divisor: int = 8
    act_layer: str = "relu"
    norm_layer: str | None = None
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg, dt, xc = self.prepare(x, train)
        r, g, c, k, s, p, d = cfg.radix, cfg.groups, cfg.out, cfg.kernel_size, cfg.stride, cfg.pad, cfg.dilation
        act = ACTIVATIONS[cfg.act_layer]

        def norm(z: jax.Array, name: str) -> jax.Array:
            if not cfg.has_norm:
                return z
            return batch_norm(train, cfg.bn_eps, cfg.bn_momentum, name)(z)

        u = conv(cfg.mid, k, "conv", stride=s, padding=p, dilation=d, groups=g * r, bias=cfg.bias, dtype=dt)(xc)
        u = act(norm(u, "bn0"))
        splits = u.reshape(u.shape[:3] + (r, c))  # (N, H', W', R, C), split-major as timm's
        gap = jnp.mean(splits.sum(axis=3), axis=(1, 2), keepdims=True)
        z = act(norm(pointwise(cfg.attn_channels, True, "fc1", dt, groups=g)(gap), "bn1"))
        logits = pointwise(cfg.mid, True, "fc2", dt, groups=g)(z)  # (N, 1, 1, R*C): cardinal group, split, channel
        n = logits.shape[0]
        if r > 1:
            a = jnp.swapaxes(jax.nn.softmax(logits.reshape(n, g, r, c // g), axis=2), 1, 2)
        else:
            a = jax.nn.sigmoid(logits)
        if self.is_mutable_collection("intermediates"):  # (N, 1, 1, R * C), split-major as torch's (N, R * C, 1, 1)
            self.expose_gate(a.reshape(n, 1, 1, r * c), "radix_attn")
        y = (splits * a.reshape(n, 1, 1, r, c).astype(dt)).sum(axis=3)
        return y.astype(x.dtype)
