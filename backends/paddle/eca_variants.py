"""timm's ECA variants in Paddle: EcaMlpModule (``'ecam'``) and CecaModule (``'ceca'``). The math and its
documentation: :mod:`attn_core.eca_variants`."""

from __future__ import annotations

import paddle
from paddle import nn

from attn_core import CECAConfig, ECAMConfig

from ._base import AttentionModule
from ._ops import ACTIVATIONS, conv_as, mean_hw


class EcaMlpModule(AttentionModule):
    __doc__ = ECAMConfig.__doc__

    def __init__(self, channels: int, kernel_size: int | None = None, gamma: float = 2, beta: float = 1,
                 act_layer: str = "relu", gate_layer: str = "sigmoid", rd_ratio: float = 1.0 / 8,
                 rd_channels: int | None = None, rd_divisor: int = 8) -> None:
        super().__init__()
        self.add_gate()
        self.config = cfg = ECAMConfig(channels, kernel_size, gamma, beta, act_layer, gate_layer, rd_ratio,
                                       rd_channels, rd_divisor)
        self.conv = nn.Conv1D(1, cfg.hidden, 1)
        self.conv2 = nn.Conv1D(cfg.hidden, 1, cfg.k, padding=cfg.padding)
        self._act = ACTIVATIONS[cfg.act_layer]
        self._gate = ACTIVATIONS[cfg.gate_layer]

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        compute, xc = self.prepare(x)
        s = mean_hw(xc).squeeze(axis=[2, 3]).unsqueeze(1)  # (N, 1, C); no shape values, so unknown N stays unknown
        z = conv_as(self.conv2, self._act(conv_as(self.conv, s, compute)), compute)
        y = xc * self.expose_gate(self._gate(z).squeeze(1).unsqueeze([2, 3]))
        return self.finish(y, x, compute)


class CecaModule(AttentionModule):
    __doc__ = CECAConfig.__doc__

    def __init__(self, channels: int, kernel_size: int | None = None, gamma: float = 2, beta: float = 1,
                 act_layer: str | None = None, gate_layer: str = "sigmoid") -> None:
        super().__init__()
        self.add_gate()
        self.config = cfg = CECAConfig(channels, kernel_size, gamma, beta, act_layer, gate_layer)
        self.conv = nn.Conv1D(1, 1, cfg.k, padding=0, bias_attr=None if cfg.bias else False)
        self._gate = ACTIVATIONS[cfg.gate_layer]

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        compute, xc = self.prepare(x)
        s = mean_hw(xc).squeeze(axis=[2, 3]).unsqueeze(1)  # (N, 1, C)
        p, c = self.config.padding, self.config.channels
        # circular padding as a concatenation of the row's two ends (p <= C, checked by the config)
        if p:
            s = paddle.concat([s[:, :, c - p:], s, s[:, :, :p]], axis=2)
        y = xc * self.expose_gate(self._gate(conv_as(self.conv, s, compute)).squeeze(1).unsqueeze([2, 3]))
        return self.finish(y, x, compute)
