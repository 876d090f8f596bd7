"""SRM (style-based recalibration) in Paddle. The math and its documentation: :class:`attn_core.SRMConfig`."""

from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle import nn

from attn_core import SRMConfig, bn_momentum_for

from ._base import AttentionModule
from ._norm import BatchNorm2D
from ._ops import scalar


class SRM(AttentionModule):
    __doc__ = SRMConfig.__doc__

    def __init__(self, channels: int, unbiased: bool = False, eps: float = 1e-5, bn_eps: float = 1e-5,
                 bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.add_gate()
        self.config = cfg = SRMConfig(channels, unbiased, eps, bn_eps, bn_momentum)
        # the authors' initialisation: zeros, a 0.5 gate
        self.cfc = self.create_parameter([cfg.channels, 2], default_initializer=nn.initializer.Constant(0.0))
        self.bn = BatchNorm2D(cfg.channels, momentum=bn_momentum_for("paddle", cfg.bn_momentum), epsilon=cfg.bn_eps)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        compute, xc = self.prepare(x)  # in training also the BatchNorm's rule: N > 1 (SRMConfig)
        flat = xc.flatten(2)
        mean = flat.mean(axis=2)
        var = paddle.var(flat, axis=2, unbiased=self.config.unbiased)
        std = paddle.sqrt(var + scalar(float(self.config.eps), var))
        cfc = self.cfc.astype(xc.dtype)
        z = (mean * cfc[:, 0] + std * cfc[:, 1]).unsqueeze([2, 3])
        y = xc * self.expose_gate(F.sigmoid(self.bn(z)))  # the BatchNorm in z's dtype, whatever its own (BatchNorm2D)
        return self.finish(y, x, compute)
