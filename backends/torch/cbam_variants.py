"""timm's light CBAM in PyTorch. The math and its documentation: :class:`attn_core.LightCBAMConfig`."""

from __future__ import annotations

import torch
from torch import nn

from attn_core import LightCBAMConfig, bn_momentum_for

from ._base import AttentionModule
from ._ops import ACTIVATIONS, batch_norm_as, conv_as, mean_c, mean_hw, pointwise_as


class _LightChannelParams(nn.Module):
    """The channel MLP's layers under timm's names (``fc1``, ``fc2``); LightCbamModule computes with them."""

    def __init__(self, channels: int, hidden: int, bias: bool) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=bias)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=bias)


class _ConvNormParams(nn.Module):
    """timm's ``ConvNormAct`` without its activation: the 1 -> 1 channel convolution ``conv`` and BatchNorm ``bn``."""

    def __init__(self, kernel_size: int, eps: float, momentum: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1, eps=eps, momentum=momentum)


class _LightSpatialParams(nn.Module):
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
                                           bn_momentum_for("torch", cfg.bn_momentum))
        self._act = ACTIVATIONS[cfg.act_layer]
        self.add_gate("channel_gate", "spatial_gate")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compute, xc = self.prepare(x)
        channel, spatial = self.channel, self.spatial.conv
        pooled = 0.5 * mean_hw(xc) + 0.5 * xc.amax((2, 3))
        h = pointwise_as(channel.fc2, self._act(pointwise_as(channel.fc1, pooled, compute)), compute)
        x1 = xc * self.expose_gate(torch.sigmoid(h)[:, :, None, None], "channel_gate")
        z = conv_as(spatial.conv, 0.5 * mean_c(x1) + 0.5 * x1.amax(1, keepdim=True), compute)
        y = x1 * self.expose_gate(torch.sigmoid(batch_norm_as(spatial.bn, z, compute)), "spatial_gate")
        return self.finish(y, x, compute)
