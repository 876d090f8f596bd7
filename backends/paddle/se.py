"""Squeeze-and-Excitation in Paddle. The math and its documentation: :class:`attn_core.SEConfig`."""

from __future__ import annotations

import paddle
from paddle import nn

from attn_core import SEConfig
from attn_core.se import SqueezeMLPConfig

from ._base import AttentionModule
from ._ops import ACTIVATIONS, conv_as, mean_hw


class SqueezeMLP(AttentionModule):
    """The layers of SE and of CBAM's channel attention (:class:`attn_core.se.SqueezeMLPConfig`): the 1x1
    convolutions ``fc1`` (C -> hidden) and ``fc2`` (hidden -> C), with biases where the config has them, and the
    config's activation and gate."""

    def __init__(self, config: SqueezeMLPConfig) -> None:
        super().__init__()
        self.config = cfg = config
        self.fc1 = nn.Conv2D(cfg.channels, cfg.hidden, 1, bias_attr=None if cfg.bias else False)
        self.fc2 = nn.Conv2D(cfg.hidden, cfg.channels, 1, bias_attr=None if cfg.bias else False)
        self._act = ACTIVATIONS[cfg.act_layer]
        self._gate = ACTIVATIONS[cfg.gate_layer]
        self.add_gate()


class SEModule(SqueezeMLP):
    __doc__ = SEConfig.__doc__

    def __init__(self, channels: int, rd_ratio: float = 1.0 / 16, rd_channels: int | None = None,
                 rd_divisor: int | None = 8, bias: bool = True, act_layer: str = "relu",
                 gate_layer: str = "sigmoid") -> None:
        super().__init__(SEConfig(channels, rd_ratio, rd_channels, rd_divisor, bias, act_layer, gate_layer))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        compute, xc = self.prepare(x)
        g = self._gate(conv_as(self.fc2, self._act(conv_as(self.fc1, mean_hw(xc), compute)), compute))
        y = xc * self.expose_gate(g)
        return self.finish(y, x, compute)
