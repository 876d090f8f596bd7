"""SimAM in Paddle. The math and its documentation: :class:`attn_core.SimAMConfig`."""

from __future__ import annotations

import paddle
import paddle.nn.functional as F

from attn_core import SimAMConfig, simam_denominator_count
from attn_core.simam import simam_mean_prescale

from ._base import AttentionModule
from ._ops import scalar, static_shape

_FLOAT32_MAX = 3.4028234663852886e38


class SimAM(AttentionModule):
    __doc__ = SimAMConfig.__doc__

    def __init__(self, channels: int | None = None, e_lambda: float = 1e-4) -> None:
        super().__init__()
        self.config = SimAMConfig(channels, e_lambda)
        self.add_gate()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        compute, xc = self.prepare(x)  # half: statistics, gate and product in float32, rounded once at the end
        _, _, h, w = static_shape(x)
        if h >= 0 and w >= 0 and xc.dtype != paddle.float64 and paddle.in_dynamic_mode() \
                and 16 * h * w * max(float(xc.max()), -float(xc.min())) ** 2 <= _FLOAT32_MAX:
            # Where no square or sum of squares below can overflow (every ordinary activation), one fused op instead
            # of the scale-free form's dozen: instance_norm's z = (x - mean) / sqrt(v_b + eps), v_b the variance over
            # H * W, is the energy with eps = lambda * n / (H * W): d / (4 (v + lambda)) = z^2 * n / (4 H W). Its
            # weight sqrt(n / (4 H W)) puts that factor in z. It is shift-invariant, so each channel is given less
            # its first value: a constant channel is then exactly 0, where its own rounded mean would leave
            # deviations that the normalisation blows up (the clamp of attn_core.simam). (Not in float64:
            # instance_norm keeps eps as a float32 attribute, 1e-8 off in float64.)
            n, c = simam_denominator_count(h, w), xc.shape[1]
            weight = paddle.full([c], (n / (4 * h * w)) ** 0.5, dtype=xc.dtype)
            z = F.instance_norm(xc - xc[:, :, :1, :1], weight=weight, eps=self.config.e_lambda * n / (h * w))
            y = xc * self.expose_gate(F.sigmoid(z * z + 0.5))
            return self.finish(y, x, compute)
        if h >= 0 and w >= 0:
            n, hw = scalar(simam_denominator_count(h, w), xc), scalar(h * w, xc)
            p = scalar(simam_mean_prescale(h, w), xc)
        else:  # H or W unknown until run time (to_static with an InputSpec of None sizes): the same rules in ops
            size = paddle.shape(x)
            n = paddle.clip(size[2] * size[3] - 1, min=1).astype(xc.dtype)
            hw = (size[2] * size[3]).astype(xc.dtype)
            p = paddle.pow(scalar(2.0, xc), -paddle.ceil(paddle.log2(hw)))
        # scale-free (attn_core.simam): the mean prescaled by a power of two, the deviations divided by their largest
        # (instance_norm takes a single scalar eps where this needs lambda / s^2 per channel)
        m = (xc * p).sum(axis=[2, 3], keepdim=True) / (hw * p)
        lo, hi = xc.detach().min(axis=[2, 3], keepdim=True), xc.detach().max(axis=[2, 3], keepdim=True)
        clamped = paddle.minimum(paddle.maximum(m.detach(), lo), hi)
        d = xc - (m + (clamped - m.detach()))  # the clamp moves the value only: its gradient is the mean's
        s = paddle.maximum(hi - clamped, clamped - lo)
        s = paddle.where(s == 0, paddle.ones_like(s), s)  # attn_core.simam.simam_deviation_scale
        d = d / s
        d = d * d  # not pow(2): slow on Paddle CPU
        v = d.sum(axis=[2, 3], keepdim=True) / n
        y = xc * self.expose_gate(F.sigmoid(d / (4 * (v + scalar(self.config.e_lambda, xc) / s / s)) + 0.5))
        return self.finish(y, x, compute)
