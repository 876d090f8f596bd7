"""SimAM in Paddle. The math and its documentation: :class:`attn_core.SimAMConfig`."""

from __future__ import annotations

import paddle
import paddle.nn.functional as F

from attn_core import SimAMConfig, simam_denominator_count

from ._base import AttentionModule


class SimAM(AttentionModule):
    __doc__ = SimAMConfig.__doc__

    def __init__(self, channels: int | None = None, e_lambda: float = 1e-4) -> None:
        super().__init__()
        self.config = SimAMConfig(channels, e_lambda)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        self.check_input(x)
        n = simam_denominator_count(x.shape[2], x.shape[3])
        d = x - x.mean(axis=[2, 3], keepdim=True)
        d = d * d  # not pow(2): slow on Paddle CPU
        v = d.sum(axis=[2, 3], keepdim=True) / n
        return x * F.sigmoid(d / (4 * (v + self.config.e_lambda)) + 0.5)
