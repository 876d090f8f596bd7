"""CBAM in PyTorch: ChannelAttention, SpatialAttention, CBAM. The math: :mod:`attn_core.cbam`."""

from __future__ import annotations

import torch
from torch import nn

from attn_core import CBAMConfig, ChannelAttentionConfig, SpatialAttentionConfig, bn_momentum_for

from ._base import AttentionModule
from ._ops import ACTIVATIONS, batch_norm_as, conv_as, mean_c, mean_hw, pointwise_as
from .se import SqueezeMLP


class ChannelAttention(SqueezeMLP):
    __doc__ = ChannelAttentionConfig.__doc__

    def __init__(self, channels: int, rd_ratio: float = 1.0 / 16, rd_channels: int | None = None,
                 rd_divisor: int | None = 1, bias: bool = False, act_layer: str = "relu",
                 gate_layer: str = "sigmoid") -> None:
        super().__init__(ChannelAttentionConfig(channels, rd_ratio, rd_channels, rd_divisor, bias, act_layer,
                                                gate_layer))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compute, xc = self.prepare(x)
        n = x.shape[0]
        # the shared MLP once on the 2N pooled rows (mean, then max), its two halves summed as mlp(avg) + mlp(max)
        h = pointwise_as(self.fc2, self._act(pointwise_as(self.fc1, torch.cat([mean_hw(xc), xc.amax((2, 3))]),
                                                          compute)), compute)
        y = xc * self.expose_gate(self._gate(h[:n] + h[n:])[:, :, None, None])
        return self.finish(y, x, compute)


class SpatialAttention(AttentionModule):
    __doc__ = SpatialAttentionConfig.__doc__

    def __init__(self, channels: int | None = None, kernel_size: int = 7, order: str = "mean_max",
                 bias: bool = False, norm: bool = False, bn_eps: float = 1e-5, bn_momentum: float = 0.1,
                 gate_layer: str = "sigmoid") -> None:
        super().__init__()
        self.config = cfg = SpatialAttentionConfig(channels, kernel_size, order, bias, norm, bn_eps, bn_momentum,
                                                   gate_layer)
        self.conv = nn.Conv2d(2, 1, cfg.kernel_size, padding=cfg.padding, bias=cfg.bias)
        self.bn = nn.BatchNorm2d(1, eps=cfg.bn_eps, momentum=bn_momentum_for("torch", cfg.bn_momentum)) \
            if cfg.norm else None
        self._gate = ACTIVATIONS[cfg.gate_layer]
        self.add_gate()
        self._mean_first = cfg.order == "mean_max"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compute, xc = self.prepare(x)
        avg, mx = mean_c(xc), xc.amax(1, keepdim=True)
        z = conv_as(self.conv, torch.cat([avg, mx] if self._mean_first else [mx, avg], 1), compute)
        if self.bn is not None:
            z = batch_norm_as(self.bn, z, compute)
        y = xc * self.expose_gate(self._gate(z))
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compute, xc = self.prepare(x)  # half: both halves in float32, the output rounded once (attn_core.precision)
        y = self.spatial(self.channel(xc))
        return self.finish(y, x, compute)
