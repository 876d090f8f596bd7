"""SimAM in PyTorch. The math and its documentation: :class:`attn_core.SimAMConfig`."""

from __future__ import annotations

import torch

from attn_core import SimAMConfig, simam_denominator_count
from attn_core.simam import SIMAM_COMPUTE_DTYPES

from ._base import AttentionModule, mean_hw

# input dtype -> compute dtype, for the dtypes attn_core computes in another (float16, bfloat16 -> float32)
_COMPUTE = {getattr(torch, k): getattr(torch, v) for k, v in SIMAM_COMPUTE_DTYPES.items()}


class SimAM(AttentionModule):
    __doc__ = SimAMConfig.__doc__

    def __init__(self, channels: int | None = None, e_lambda: float = 1e-4) -> None:
        super().__init__()
        self.config = SimAMConfig(channels, e_lambda)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        n = simam_denominator_count(x.shape[2], x.shape[3])
        compute = _COMPUTE.get(x.dtype)  # half: statistics, gate and product in float32, rounded once at the end
        xc = x if compute is None else x.to(compute)
        grad = torch.is_grad_enabled() and xc.requires_grad
        # without autograd, one temporary updated in place (each fresh tensor costs a pass of page faults)
        d = xc - mean_hw(xc)[:, :, None, None]
        d = d.square() if grad else d.square_()
        scale = 4 * (d.sum((2, 3), keepdim=True) / n + self.config.e_lambda)
        y = xc * torch.sigmoid(d / scale + 0.5) if grad else d.div_(scale).add_(0.5).sigmoid_().mul_(xc)
        return y if compute is None else y.to(x.dtype)
