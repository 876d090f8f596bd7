"""Efficient Channel Attention in PyTorch. The math and its documentation: :class:`attn_core.ECAConfig`."""

from __future__ import annotations

import torch
from torch import nn

from attn_core import ECAConfig

from ._base import AttentionModule
from ._ops import conv1d_as, mean_hw


class ECAModule(AttentionModule):
    __doc__ = ECAConfig.__doc__

    def __init__(self, channels: int, kernel_size: int | None = None, gamma: float = 2, beta: float = 1) -> None:
        super().__init__()
        self.config = cfg = ECAConfig(channels, kernel_size, gamma, beta)
        self.conv = nn.Conv1d(1, 1, cfg.k, padding=cfg.padding, bias=False)
        self.add_gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compute, xc = self.prepare(x)
        y = xc * self.expose_gate(torch.sigmoid(conv1d_as(self.conv, mean_hw(xc), compute))[:, :, None, None])
        return self.finish(y, x, compute)
