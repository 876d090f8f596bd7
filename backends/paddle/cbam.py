"""CBAM in Paddle: ChannelAttention, SpatialAttention, CBAM. The math: :mod:`attn_core.cbam`."""

from __future__ import annotations

import paddle
from paddle import nn

from attn_core import CBAMConfig, ChannelAttentionConfig, SpatialAttentionConfig, bn_momentum_for

from ._base import AttentionModule
from ._norm import BatchNorm2D
from ._ops import ACTIVATIONS, amax, conv_as, expand_gate, mean_hw
from .se import SqueezeMLP


class ChannelAttention(SqueezeMLP):
    __doc__ = ChannelAttentionConfig.__doc__

    def __init__(self, channels: int, rd_ratio: float = 1.0 / 16, rd_channels: int | None = None,
                 rd_divisor: int | None = 1, bias: bool = False, act_layer: str = "relu",
                 gate_layer: str = "sigmoid") -> None:
        super().__init__(ChannelAttentionConfig(channels, rd_ratio, rd_channels, rd_divisor, bias, act_layer,
                                                gate_layer))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        compute, xc = self.prepare(x)
        avg = conv_as(self.fc2, self._act(conv_as(self.fc1, mean_hw(xc), compute)), compute)
        mx = conv_as(self.fc2, self._act(conv_as(self.fc1, amax(xc, [2, 3]), compute)), compute)
        y = xc * self.expose_gate(self._gate(avg + mx))
        return self.finish(y, x, compute)


class SpatialAttention(AttentionModule):
    __doc__ = SpatialAttentionConfig.__doc__

    def __init__(self, channels: int | None = None, kernel_size: int = 7, order: str = "mean_max",
                 bias: bool = False, norm: bool = False, bn_eps: float = 1e-5, bn_momentum: float = 0.1,
                 gate_layer: str = "sigmoid") -> None:
        super().__init__()
        self.config = cfg = SpatialAttentionConfig(channels, kernel_size, order, bias, norm, bn_eps, bn_momentum,
                                                   gate_layer)
        self.conv = nn.Conv2D(2, 1, cfg.kernel_size, padding=cfg.padding, bias_attr=None if cfg.bias else False)
        self.bn = BatchNorm2D(1, momentum=bn_momentum_for("paddle", cfg.bn_momentum), epsilon=cfg.bn_eps) \
            if cfg.norm else None
        self._gate = ACTIVATIONS[cfg.gate_layer]
        self.add_gate()
        self._mean_first = cfg.order == "mean_max"

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        compute, xc = self.prepare(x)
        avg, mx = xc.mean(axis=1, keepdim=True), amax(xc, [1])
        z = conv_as(self.conv, paddle.concat([avg, mx] if self._mean_first else [mx, avg], axis=1), compute)
        if self.bn is not None:
            z = self.bn(z)  # in z's dtype, whatever its own (BatchNorm2D)
        y = xc * expand_gate(self.expose_gate(self._gate(z)), xc)
        return self.finish(y, x, compute)


class CBAM(AttentionModule):
    __doc__ = CBAMConfig.__doc__

    def __init__(self, channels: int, rd_ratio: float = 1.0 / 16, rd_channels: int | None = None,
                 rd_divisor: int | None = 1, spatial_kernel_size: int = 7, mlp_bias: bool = False,
                 spatial_order: str = "mean_max", spatial_bias: bool = False, spatial_norm: bool = False,
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1, act_layer: str = "relu",
                 gate_layer: str = "sigmoid") -> None:
        super().__init__()
        self.config = cfg = CBAMConfig(channels, rd_ratio, rd_channels, rd_divisor, spatial_kernel_size, mlp_bias,
                                       spatial_order, spatial_bias, spatial_norm, bn_eps, bn_momentum, act_layer,
                                       gate_layer)
        self.channel = ChannelAttention.from_config(cfg.channel)
        self.spatial = SpatialAttention.from_config(cfg.spatial)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        compute, xc = self.prepare(x)  # half: both halves in float32, the output rounded once (attn_core.precision)
        y = self.spatial(self.channel(xc))
        return self.finish(y, x, compute)
