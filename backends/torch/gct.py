"""Gated Channel Transformation in PyTorch. The math and its documentation: :class:`attn_core.GCTConfig`."""

from __future__ import annotations

import torch
from torch import nn

from attn_core import GCTConfig

from ._base import AttentionModule


class GCT(AttentionModule):
    __doc__ = GCTConfig.__doc__

    def __init__(self, channels: int, epsilon: float = 1e-5, mode: str = "l2", after_relu: bool = False,
                 channel_eps: str = "mean") -> None:
        super().__init__()
        self.config = cfg = GCTConfig(channels, epsilon, mode, after_relu, channel_eps)
        # the authors' initialisation: alpha 1, gamma 0, beta 0, an identity gate of 1
        self.alpha = nn.Parameter(torch.ones(1, cfg.channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, cfg.channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, cfg.channels, 1, 1))
        self.add_gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compute, xc = self.prepare(x)
        cfg = self.config
        alpha, gamma, beta = (p.to(xc.dtype) for p in (self.alpha, self.gamma, self.beta))
        if cfg.mode == "l2":
            emb = ((xc * xc).sum((2, 3), keepdim=True) + cfg.epsilon).sqrt() * alpha
            norm = gamma / ((emb * emb).mean(1, keepdim=True) + cfg.norm_epsilon).sqrt()
        else:
            emb = (xc if cfg.after_relu else xc.abs()).sum((2, 3), keepdim=True) * alpha
            norm = gamma / (emb.abs().mean(1, keepdim=True) + cfg.norm_epsilon)
        y = xc * self.expose_gate(1.0 + torch.tanh(emb * norm + beta))
        return self.finish(y, x, compute)
