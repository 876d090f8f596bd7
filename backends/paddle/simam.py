"""SimAM in Paddle. The math and its documentation: :class:`attn_core.SimAMConfig`."""

from __future__ import annotations

import paddle
import paddle.nn.functional as F

from attn_core import SimAMConfig, simam_denominator_count

from ._base import AttentionModule, scalar, static_shape


class SimAM(AttentionModule):
    __doc__ = SimAMConfig.__doc__

    def __init__(self, channels: int | None = None, e_lambda: float = 1e-4) -> None:
        super().__init__()
        self.config = SimAMConfig(channels, e_lambda)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        self.check_input(x)
        _, _, h, w = static_shape(x)
        if h >= 0 and w >= 0:
            n = scalar(simam_denominator_count(h, w), x)
        else:  # H or W unknown until run time (to_static with an InputSpec of None sizes): the same rule in ops
            size = paddle.shape(x)
            n = paddle.clip(size[2] * size[3] - 1, min=1).astype(x.dtype)
        d = x - x.mean(axis=[2, 3], keepdim=True)
        d = d * d  # not pow(2): slow on Paddle CPU
        v = d.sum(axis=[2, 3], keepdim=True) / n
        return x * F.sigmoid(d / (4 * (v + scalar(self.config.e_lambda, x))) + 0.5)
