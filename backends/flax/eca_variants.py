"""timm's ECA variants in Flax: EcaMlpModule (``'ecam'``) and CecaModule (``'ceca'``). The math and its
documentation: :mod:`attn_core.eca_variants`."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from attn_core import CECAConfig, ECAMConfig

from ._base import AttentionModule
from ._ops import ACTIVATIONS


class EcaMlpModule(AttentionModule):
    __doc__ = ECAMConfig.__doc__
    _config_cls = ECAMConfig

    channels: int
    kernel_size: int | None = None
    gamma: float = 2
    beta: float = 1
    act_layer: str = "relu"
    gate_layer: str = "sigmoid"
    rd_ratio: float = 1.0 / 8
    rd_channels: int | None = None
    rd_divisor: int = 8

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg, dt, xc = self.prepare(x, train)
        n, c = x.shape[0], x.shape[3]
        s = jnp.mean(xc, axis=(1, 2)).reshape(n, c, 1)  # channels as the 1-D spatial axis, one feature
        h = nn.Conv(cfg.hidden, (1,), padding=((0, 0),), use_bias=True, dtype=dt, name="conv")(s)
        p = cfg.padding
        z = nn.Conv(1, (cfg.k,), padding=((p, p),), use_bias=True, dtype=dt, name="conv2")(
            ACTIVATIONS[cfg.act_layer](h))
        return (xc * self.expose_gate(ACTIVATIONS[cfg.gate_layer](z).reshape(n, 1, 1, c).astype(dt))).astype(x.dtype)


class CecaModule(AttentionModule):
    __doc__ = CECAConfig.__doc__
    _config_cls = CECAConfig

    channels: int
    kernel_size: int | None = None
    gamma: float = 2
    beta: float = 1
    act_layer: str | None = None
    gate_layer: str = "sigmoid"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg, dt, xc = self.prepare(x, train)
        n, c = x.shape[0], x.shape[3]
        s = jnp.mean(xc, axis=(1, 2)).reshape(n, c, 1)  # channels as the 1-D spatial axis, one feature
        p = cfg.padding
        # circular padding as a concatenation of the row's two ends (p <= C, checked by the config)
        s = jnp.concatenate([s[:, c - p:], s, s[:, :p]], axis=1) if p else s
        z = nn.Conv(1, (cfg.k,), padding=((0, 0),), use_bias=cfg.bias, dtype=dt, name="conv")(s)
        return (xc * self.expose_gate(ACTIVATIONS[cfg.gate_layer](z).reshape(n, 1, 1, c).astype(dt))).astype(x.dtype)
