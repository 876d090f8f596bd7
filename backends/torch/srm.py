"""SRM (style-based recalibration) in PyTorch. The math and its documentation: :class:`attn_core.SRMConfig`."""

from __future__ import annotations

import torch
from torch import nn

from attn_core import SRMConfig, bn_momentum_for

from ._base import AttentionModule
from ._ops import batch_norm_as


class SRM(AttentionModule):
    __doc__ = SRMConfig.__doc__

    def __init__(self, channels: int, unbiased: bool = False, eps: float = 1e-5, bn_eps: float = 1e-5,
                 bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.config = cfg = SRMConfig(channels, unbiased, eps, bn_eps, bn_momentum)
        self.cfc = nn.Parameter(torch.zeros(cfg.channels, 2))  # the authors' initialisation: a 0.5 gate
        self.bn = nn.BatchNorm2d(cfg.channels, eps=cfg.bn_eps, momentum=bn_momentum_for("torch", cfg.bn_momentum))
        self.add_gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compute, xc = self.prepare(x)  # in training also the BatchNorm's rule: N > 1 (SRMConfig)
        flat = xc.flatten(2)
        mean = flat.mean(2)
        std = (torch.var(flat, 2, correction=1 if self.config.unbiased else 0) + self.config.eps).sqrt()
        cfc = self.cfc.to(xc.dtype)
        z = (mean * cfc[:, 0] + std * cfc[:, 1])[:, :, None, None]
        y = xc * self.expose_gate(torch.sigmoid(batch_norm_as(self.bn, z, compute)))
        return self.finish(y, x, compute)
