"""SimAM in PyTorch. The math and its documentation: :class:`attn_core.SimAMConfig`."""

from __future__ import annotations

import torch

from attn_core import SimAMConfig, simam_denominator_count
from attn_core.simam import simam_mean_prescale

from ._base import AttentionModule


class SimAM(AttentionModule):
    __doc__ = SimAMConfig.__doc__

    def __init__(self, channels: int | None = None, e_lambda: float = 1e-4) -> None:
        super().__init__()
        self.config = SimAMConfig(channels, e_lambda)
        self.add_gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compute, xc = self.prepare(x)  # half: statistics, gate and product in float32, rounded once at the end
        h, w = x.shape[2], x.shape[3]
        n = simam_denominator_count(h, w)
        grad = torch.is_grad_enabled() and xc.requires_grad
        # scale-free (attn_core.simam): the mean prescaled by a power of two, the deviations divided by their largest.
        # Without autograd, one temporary updated in place (each fresh tensor costs a pass of page faults).
        p = simam_mean_prescale(h, w)
        lo, hi = xc.detach().amin((2, 3), keepdim=True), xc.detach().amax((2, 3), keepdim=True)
        d = torch.mul(xc, p)
        m = d.sum((2, 3), keepdim=True) / (h * w * p)
        clamped = torch.minimum(torch.maximum(m.detach(), lo), hi)  # the value only: its gradient is the mean's
        m = m + (clamped - m.detach()) if grad else clamped
        d = xc - m if grad else torch.sub(xc, m, out=d)
        s = torch.maximum(hi - clamped, clamped - lo)
        s = torch.where(s == 0, torch.ones_like(s), s)  # attn_core.simam.simam_deviation_scale
        d = (d / s).square() if grad else d.div_(s).square_()
        scale = 4 * (d.sum((2, 3), keepdim=True) / n + self.config.e_lambda / s / s)
        g = torch.sigmoid(d / scale + 0.5) if grad else d.div_(scale).add_(0.5).sigmoid_()
        # a hook may keep the gate: then the product is a fresh tensor, not written over it
        y = xc * self.expose_gate(g) if grad or self.gate_hooked() else g.mul_(xc)
        return self.finish(y, x, compute)
