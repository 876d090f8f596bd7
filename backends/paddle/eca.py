"""Efficient Channel Attention in Paddle. The math and its documentation: :class:`attn_core.ECAConfig`."""

from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle import nn

from attn_core import ECAConfig

from ._base import AttentionModule
from ._ops import conv_as, mean_hw


class ECAModule(AttentionModule):
    __doc__ = ECAConfig.__doc__

    def __init__(self, channels: int, kernel_size: int | None = None, gamma: float = 2, beta: float = 1) -> None:
        super().__init__()
        self.config = cfg = ECAConfig(channels, kernel_size, gamma, beta)
        self.conv = nn.Conv1D(1, 1, cfg.k, padding=cfg.padding, bias_attr=False)
        self.add_gate()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        compute, xc = self.prepare(x)
        s = mean_hw(xc).squeeze(axis=[2, 3]).unsqueeze(1)  # (N, 1, C); no shape values, so unknown N stays unknown
        y = xc * self.expose_gate(F.sigmoid(conv_as(self.conv, s, compute)).squeeze(1).unsqueeze([2, 3]))
        return self.finish(y, x, compute)
