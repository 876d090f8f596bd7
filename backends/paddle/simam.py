"""SimAM in Paddle. The math and its documentation: :class:`attn_core.SimAMConfig`."""

from __future__ import annotations

import paddle
import paddle.nn.functional as F

from attn_core import SimAMConfig, simam_denominator_count
from attn_core.simam import SIMAM_COMPUTE_DTYPES, simam_mean_prescale

from ._base import AttentionModule, scalar, static_shape

# input dtype -> compute dtype, for the dtypes attn_core computes in another (float16, bfloat16 -> float32). Paddle's
# CPU build has no float16/bfloat16 kernels for mean, subtract, multiply or sigmoid, so only this way does it run there.
_COMPUTE = {getattr(paddle, k): getattr(paddle, v) for k, v in SIMAM_COMPUTE_DTYPES.items()}


class SimAM(AttentionModule):
    __doc__ = SimAMConfig.__doc__

    def __init__(self, channels: int | None = None, e_lambda: float = 1e-4) -> None:
        super().__init__()
        self.config = SimAMConfig(channels, e_lambda)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        self.check_input(x)
        compute = _COMPUTE.get(x.dtype)  # half: statistics, gate and product in float32, rounded once at the end
        xc = x if compute is None else x.astype(compute)
        _, _, h, w = static_shape(x)
        if h >= 0 and w >= 0:
            n, hw = scalar(simam_denominator_count(h, w), xc), scalar(h * w, xc)
            p = scalar(simam_mean_prescale(h, w), xc)
        else:  # H or W unknown until run time (to_static with an InputSpec of None sizes): the same rules in ops
            size = paddle.shape(x)
            n = paddle.clip(size[2] * size[3] - 1, min=1).astype(xc.dtype)
            hw = (size[2] * size[3]).astype(xc.dtype)
            p = paddle.pow(scalar(2.0, xc), -paddle.ceil(paddle.log2(hw)))
        # scale-free (attn_core.simam): the mean prescaled by a power of two, the deviations divided by their largest.
        # (instance_norm, one fused op, takes a single scalar eps where this needs lambda / s^2 per channel.)
        m = (xc * p).sum(axis=[2, 3], keepdim=True) / (hw * p)
        lo, hi = xc.detach().min(axis=[2, 3], keepdim=True), xc.detach().max(axis=[2, 3], keepdim=True)
        clamped = paddle.minimum(paddle.maximum(m.detach(), lo), hi)
        d = xc - (m + (clamped - m.detach()))  # the clamp moves the value only: its gradient is the mean's
        s = paddle.maximum(hi - clamped, clamped - lo)
        s = paddle.where(s == 0, paddle.ones_like(s), s)  # attn_core.simam.simam_deviation_scale
        d = d / s
        d = d * d  # not pow(2): slow on Paddle CPU
        v = d.sum(axis=[2, 3], keepdim=True) / n
        y = xc * F.sigmoid(d / (4 * (v + scalar(self.config.e_lambda, xc) / s / s)) + 0.5)
        return y if compute is None else y.astype(x.dtype)
