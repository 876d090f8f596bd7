"""Effective Squeeze-Excitation in Paddle. The math and its documentation: :class:`attn_core.EffectiveSEConfig`."""

from __future__ import annotations

import paddle
from paddle import nn

from attn_core import EffectiveSEConfig

from ._base import AttentionModule
from ._ops import ACTIVATIONS, amax, conv_as, mean_hw


class EffectiveSEModule(AttentionModule):
    __doc__ = EffectiveSEConfig.__doc__

    def __init__(self, channels: int, add_maxpool: bool = False, gate_layer: str = "hard_sigmoid") -> None:
        super().__init__()
        self.add_gate()
        self.config = cfg = EffectiveSEConfig(channels, add_maxpool, gate_layer)
        self.fc = nn.Conv2D(cfg.channels, cfg.channels, 1)
        self._gate = ACTIVATIONS[cfg.gate_layer]

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        compute, xc = self.prepare(x)
        s = mean_hw(xc)
        if self.config.add_maxpool:
            s = 0.5 * s + 0.5 * amax(xc, [2, 3])
        y = xc * self.expose_gate(self._gate(conv_as(self.fc, s, compute)))
        return self.finish(y, x, compute)
