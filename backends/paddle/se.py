"""Squeeze-and-Excitation in Paddle. The math and its documentation: :class:`attn_core.SEConfig`."""

from __future__ import annotations

import paddle
from paddle import nn

from attn_core import SEConfig

from ._base import ACTIVATIONS, AttentionModule, mean_hw


class SEModule(AttentionModule):
    __doc__ = SEConfig.__doc__

    def __init__(self, channels: int, rd_ratio: float = 1.0 / 16, rd_channels: int | None = None,
                 rd_divisor: int | None = 8, bias: bool = True, act_layer: str = "relu",
                 gate_layer: str = "sigmoid") -> None:
        super().__init__()
        self.config = cfg = SEConfig(channels, rd_ratio, rd_channels, rd_divisor, bias, act_layer, gate_layer)
        self.fc1 = nn.Conv2D(cfg.channels, cfg.hidden, 1, bias_attr=None if cfg.bias else False)
        self.fc2 = nn.Conv2D(cfg.hidden, cfg.channels, 1, bias_attr=None if cfg.bias else False)
        self._act = ACTIVATIONS[cfg.act_layer]
        self._gate = ACTIVATIONS[cfg.gate_layer]

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        self.check_input(x)
        s = mean_hw(x)
        return x * self._gate(self.fc2(self._act(self.fc1(s))))
