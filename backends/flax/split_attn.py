"""Split attention (ResNeSt's Splat) in Flax. The math and its documentation: :class:`attn_core.SplitAttnConfig`."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from attn_core import SplitAttnConfig, bn_momentum_for

from ._base import AttentionModule
from ._norm import BatchNorm
from ._ops import ACTIVATIONS, compute_dtype_of


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
        self.check_input(x)
        cfg = self.config
        if train:  # each BatchNorm needs more than one value per channel (attn_core's rule and message)
            cfg.check_training_input(tuple(x.shape), layout="NHWC")
        dt = compute_dtype_of(x)  # half: computed in float32, rounded once (attn_core.precision)
        r, g, c, k, s, p, d = cfg.radix, cfg.groups, cfg.out, cfg.kernel_size, cfg.stride, cfg.pad, cfg.dilation
        act = ACTIVATIONS[cfg.act_layer]

        def norm(z: jax.Array, name: str) -> jax.Array:
            if not cfg.has_norm:
                return z
            return BatchNorm(use_running_average=not train, momentum=bn_momentum_for("flax", cfg.bn_momentum),
                             epsilon=cfg.bn_eps, name=name)(z)

        u = nn.Conv(cfg.mid, (k, k), strides=(s, s), padding=((p, p), (p, p)), kernel_dilation=(d, d),
                    feature_group_count=g * r, use_bias=cfg.bias, dtype=dt, name="conv")(x.astype(dt))
        u = act(norm(u, "bn0"))
        splits = u.reshape(u.shape[:3] + (r, c))  # (N, H', W', R, C), split-major as timm's
        gap = jnp.mean(splits.sum(axis=3), axis=(1, 2), keepdims=True)
        z = act(norm(nn.Conv(cfg.attn_channels, (1, 1), padding=((0, 0), (0, 0)), feature_group_count=g,
                             dtype=dt, name="fc1")(gap), "bn1"))
        logits = nn.Conv(cfg.mid, (1, 1), padding=((0, 0), (0, 0)), feature_group_count=g, dtype=dt,
                         name="fc2")(z)  # (N, 1, 1, R*C): cardinal group, split, channel
        n = logits.shape[0]
        if r > 1:
            a = jnp.swapaxes(jax.nn.softmax(logits.reshape(n, g, r, c // g), axis=2), 1, 2)
        else:
            a = jax.nn.sigmoid(logits)
        y = (splits * a.reshape(n, 1, 1, r, c).astype(dt)).sum(axis=3)
        return y.astype(x.dtype)
