"""timm's light CBAM in Paddle. The math and its documentation: :class:`attn_core.LightCBAMConfig`."""

from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle import nn

from attn_core import LightCBAMConfig, bn_momentum_for

from ._base import AttentionModule
from ._norm import BatchNorm2D
from ._ops import ACTIVATIONS, amax, conv_as, expand_gate, mean_hw


class _LightChannelParams(nn.Layer):
    """The channel MLP's layers under timm's names (``fc1``, ``fc2``); LightCbamModule computes with them."""

    def __init__(self, channels: int, hidden: int, bias: bool) -> None:
        super().__init__()
        self.fc1 = nn.Conv2D(channels, hidden, 1, bias_attr=None if bias else False)
        self.fc2 = nn.Conv2D(hidden, channels, 1, bias_attr=None if bias else False)


class _ConvNormParams(nn.Layer):
    """timm's ``ConvNormAct`` without its activation: the 1 -> 1 channel convolution ``conv`` and BatchNorm ``bn``."""

    def __init__(self, kernel_size: int, eps: float, momentum: float) -> None:
        super().__init__()
        self.conv = nn.Conv2D(1, 1, kernel_size, padding=kernel_size // 2, bias_attr=False)
        self.bn = BatchNorm2D(1, momentum=momentum, epsilon=eps)


class _LightSpatialParams(nn.Layer):
    """The spatial half's layers under timm's names (``conv.conv``, ``conv.bn``)."""

    def __init__(self, kernel_size: int, eps: float, momentum: float) -> None:
        super().__init__()
        self.conv = _ConvNormParams(kernel_size, eps, momentum)


class LightCbamModule(AttentionModule):
    __doc__ = LightCBAMConfig.__doc__

    def __init__(self, channels: int, rd_ratio: float = 1.0 / 16, rd_channels: int | None = None,
                 rd_divisor: int | None = 1, spatial_kernel_size: int = 7, act_layer: str = "relu",
                 gate_layer: str = "sigmoid", mlp_bias: bool = False, bn_eps: float = 1e-5,
                 bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.config = cfg = LightCBAMConfig(channels, rd_ratio, rd_channels, rd_divisor, spatial_kernel_size,
                                            act_layer, gate_layer, mlp_bias, bn_eps, bn_momentum)
        self.channel = _LightChannelParams(cfg.channels, cfg.hidden, cfg.mlp_bias)
        self.spatial = _LightSpatialParams(cfg.spatial_kernel_size, cfg.bn_eps,
                                           bn_momentum_for("paddle", cfg.bn_momentum))
        self._act = ACTIVATIONS[cfg.act_layer]
        self.add_gate("channel_gate", "spatial_gate")

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        compute, xc = self.prepare(x)
        channel, spatial = self.channel, self.spatial.conv
        pooled = 0.5 * mean_hw(xc) + 0.5 * amax(xc, [2, 3])
        h = conv_as(channel.fc2, self._act(conv_as(channel.fc1, pooled, compute)), compute)
        x1 = xc * self.expose_gate(F.sigmoid(h), "channel_gate")
        z = conv_as(spatial.conv, 0.5 * x1.mean(axis=1, keepdim=True) + 0.5 * amax(x1, [1]), compute)
        y = x1 * expand_gate(self.expose_gate(F.sigmoid(spatial.bn(z)), "spatial_gate"), x1)
        return self.finish(y, x, compute)
