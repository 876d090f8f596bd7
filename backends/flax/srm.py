"""SRM (style-based recalibration) in Flax. The math and its documentation: :class:`attn_core.SRMConfig`."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from attn_core import SRMConfig, bn_momentum_for

from ._base import AttentionModule
from ._norm import BatchNorm


class SRM(AttentionModule):
    __doc__ = SRMConfig.__doc__
    _config_cls = SRMConfig

    channels: int
    unbiased: bool = False
    eps: float = 1e-5
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg, dt, xc = self.prepare(x, train)  # in training also the BatchNorm's rule: N > 1 (SRMConfig)
        cfc = self.param("cfc", nn.initializers.zeros_init(), (cfg.channels, 2)).astype(dt)  # the authors' zeros
        mean = jnp.mean(xc, axis=(1, 2))
        std = jnp.sqrt(jnp.var(xc, axis=(1, 2), ddof=1 if cfg.unbiased else 0) + cfg.eps)
        z = (mean * cfc[:, 0] + std * cfc[:, 1])[:, None, None, :]
        z = BatchNorm(use_running_average=not train, momentum=bn_momentum_for("flax", cfg.bn_momentum),
                      epsilon=cfg.bn_eps, name="bn")(z)
        return (xc * self.expose_gate(jax.nn.sigmoid(z).astype(dt))).astype(x.dtype)
