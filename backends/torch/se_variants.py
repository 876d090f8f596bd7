"""Effective Squeeze-Excitation in PyTorch. The math and its documentation: :class:`attn_core.EffectiveSEConfig`."""

from __future__ import annotations

import torch
from torch import nn

from attn_core import EffectiveSEConfig

from ._base import AttentionModule
from ._ops import ACTIVATIONS, mean_hw, pointwise_as


class EffectiveSEModule(AttentionModule):
    __doc__ = EffectiveSEConfig.__doc__

    def __init__(self, channels: int, add_maxpool: bool = False, gate_layer: str = "hard_sigmoid") -> None:
        super().__init__()
        self.config = cfg = EffectiveSEConfig(channels, add_maxpool, gate_layer)
        self.fc = nn.Conv2d(cfg.channels, cfg.channels, 1, bias=True)
        self._gate = ACTIVATIONS[cfg.gate_layer]
        self.add_gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compute, xc = self.prepare(x)
        s = mean_hw(xc)
        if self.config.add_maxpool:
            s = 0.5 * s + 0.5 * xc.amax((2, 3))
        y = xc * self.expose_gate(self._gate(pointwise_as(self.fc, s, compute))[:, :, None, None])
        return self.finish(y, x, compute)
