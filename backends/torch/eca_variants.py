"""timm's ECA variants in PyTorch: EcaMlpModule (``'ecam'``) and CecaModule (``'ceca'``). The math and its
documentation: :mod:`attn_core.eca_variants`."""

from __future__ import annotations

import torch
from torch import nn

from attn_core import CECAConfig, ECAMConfig

from ._base import AttentionModule
from ._ops import ACTIVATIONS, conv_as, mean_hw


class EcaMlpModule(AttentionModule):
    __doc__ = ECAMConfig.__doc__

    def __init__(self, channels: int, kernel_size: int | None = None, gamma: float = 2, beta: float = 1,
                 act_layer: str = "relu", gate_layer: str = "sigmoid", rd_ratio: float = 1.0 / 8,
                 rd_channels: int | None = None, rd_divisor: int = 8) -> None:
        super().__init__()
        self.config = cfg = ECAMConfig(channels, kernel_size, gamma, beta, act_layer, gate_layer, rd_ratio,
                                       rd_channels, rd_divisor)
        self.conv = nn.Conv1d(1, cfg.hidden, 1, bias=True)
        self.conv2 = nn.Conv1d(cfg.hidden, 1, cfg.k, padding=cfg.padding, bias=True)
        self._act = ACTIVATIONS[cfg.act_layer]
        self._gate = ACTIVATIONS[cfg.gate_layer]
        self.add_gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compute, xc = self.prepare(x)
        s = mean_hw(xc)[:, None, :]  # (N, 1, C): the channels as the 1-D convolution's length
        z = conv_as(self.conv2, self._act(conv_as(self.conv, s, compute)), compute)
        y = xc * self.expose_gate(self._gate(z)[:, 0, :, None, None])
        return self.finish(y, x, compute)


class CecaModule(AttentionModule):
    __doc__ = CECAConfig.__doc__

    def __init__(self, channels: int, kernel_size: int | None = None, gamma: float = 2, beta: float = 1,
                 act_layer: str | None = None, gate_layer: str = "sigmoid") -> None:
        super().__init__()
        self.config = cfg = CECAConfig(channels, kernel_size, gamma, beta, act_layer, gate_layer)
        self.conv = nn.Conv1d(1, 1, cfg.k, padding=0, bias=cfg.bias)
        self._gate = ACTIVATIONS[cfg.gate_layer]
        self.add_gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compute, xc = self.prepare(x)
        s = mean_hw(xc)
        p, c = self.config.padding, s.shape[1]
        # circular padding as a concatenation of the row's two ends (p <= C, checked by the config)
        s = torch.cat([s[:, c - p:], s, s[:, :p]], 1) if p else s
        z = conv_as(self.conv, s[:, None, :], compute)
        y = xc * self.expose_gate(self._gate(z)[:, 0, :, None, None])
        return self.finish(y, x, compute)
