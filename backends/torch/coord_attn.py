"""Coordinate attention and timm's strip-pooling variants in PyTorch: CoordAttn, SimpleCoordAttn,
EfficientLocalAttn, StripAttn. The math: :mod:`attn_core.coord_attn`."""

from __future__ import annotations

import torch
from torch import nn

from attn_core import (
    CoordAttnConfig,
    EfficientLocalAttnConfig,
    SimpleCoordAttnConfig,
    StripAttnConfig,
    bn_momentum_for,
)

from .._common import gated
from ._base import AttentionModule
from ._ops import ACTIVATIONS, batch_norm_as, conv_as, group_norm_as, linear_as


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _strip_convs(channels: int, kernel_size: int, bias: bool) -> tuple[nn.Conv2d, nn.Conv2d]:
    """The depthwise (k, 1) convolution along H and (1, k) along W, each zero padded by k // 2."""
    p = kernel_size // 2
    return (nn.Conv2d(channels, channels, (kernel_size, 1), padding=(p, 0), groups=channels, bias=bias),
            nn.Conv2d(channels, channels, (1, kernel_size), padding=(0, p), groups=channels, bias=bias))


class CoordAttn(AttentionModule):
    __doc__ = CoordAttnConfig.__doc__

    def __init__(self, channels: int, rd_ratio: float = 1.0 / 16, rd_channels: int | None = None,
                 rd_divisor: int | None = 8, se_factor: float = 2.0 / 3, bias: bool = False,
                 act_layer: str = "hard_swish", norm_layer: str | None = "batchnorm", gate_layer: str = "sigmoid",
                 has_skip: bool = False, rd_min: int | None = None, bn_eps: float = 1e-5,
                 bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.config = cfg = CoordAttnConfig(channels, rd_ratio, rd_channels, rd_divisor, se_factor, bias, act_layer,
                                            norm_layer, gate_layer, has_skip, rd_min, bn_eps, bn_momentum)
        self.conv1 = nn.Conv2d(cfg.channels, cfg.hidden, 1, bias=cfg.bias)
        self.bn1 = nn.BatchNorm2d(cfg.hidden, eps=cfg.bn_eps, momentum=bn_momentum_for("torch", cfg.bn_momentum)) \
            if cfg.norm_layer is not None else None
        self.conv_h = nn.Conv2d(cfg.hidden, cfg.channels, 1, bias=cfg.bias)
        self.conv_w = nn.Conv2d(cfg.hidden, cfg.channels, 1, bias=cfg.bias)
        self._act = ACTIVATIONS[cfg.act_layer]
        self._gate = ACTIVATIONS[cfg.gate_layer]
        self.add_gate("gate_h", "gate_w")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compute, xc = self.prepare(x)
        h, w = x.shape[2], x.shape[3]
        y = conv_as(self.conv1, torch.cat([xc.mean(3, keepdim=True), xc.mean(2, keepdim=True).transpose(2, 3)], 2),
                    compute)
        if self.bn1 is not None:
            y = batch_norm_as(self.bn1, y, compute)
        y_h, y_w = torch.split(self._act(y), [h, w], dim=2)
        a_h = self.expose_gate(self._gate(conv_as(self.conv_h, y_h, compute)), "gate_h")
        a_w = self.expose_gate(self._gate(conv_as(self.conv_w, y_w.transpose(2, 3), compute)), "gate_w")
        return self.finish(gated(xc, a_w, a_h, skip=self.config.has_skip), x, compute)


class SimpleCoordAttn(AttentionModule):
    __doc__ = SimpleCoordAttnConfig.__doc__

    def __init__(self, channels: int, rd_ratio: float = 0.25, rd_channels: int | None = None,
                 rd_divisor: int | None = 8, se_factor: float = 2.0 / 3, bias: bool = True, act_layer: str = "silu",
                 gate_layer: str = "sigmoid", has_skip: bool = False, rd_min: int | None = None) -> None:
        super().__init__()
        self.config = cfg = SimpleCoordAttnConfig(channels, rd_ratio, rd_channels, rd_divisor, se_factor, bias,
                                                  act_layer, gate_layer, has_skip, rd_min)
        self.fc1 = nn.Linear(cfg.channels, cfg.hidden, bias=cfg.bias)
        self.fc_h = nn.Linear(cfg.hidden, cfg.channels, bias=cfg.bias)
        self.fc_w = nn.Linear(cfg.hidden, cfg.channels, bias=cfg.bias)
        self._act = ACTIVATIONS[cfg.act_layer]
        self._gate = ACTIVATIONS[cfg.gate_layer]
        self.add_gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compute, xc = self.prepare(x)
        # the strips as rows of C: (N, H, C) and (N, W, C), through the one shared fc1
        r_h = self._act(linear_as(self.fc1, xc.mean(3).transpose(1, 2), compute))
        r_w = self._act(linear_as(self.fc1, xc.mean(2).transpose(1, 2), compute))
        a_h = linear_as(self.fc_h, r_h, compute).transpose(1, 2).unsqueeze(-1)
        a_w = linear_as(self.fc_w, r_w, compute).transpose(1, 2).unsqueeze(-2)
        return self.finish(gated(xc, self.expose_gate(self._gate(a_h + a_w)), skip=self.config.has_skip), x, compute)


class EfficientLocalAttn(AttentionModule):
    __doc__ = EfficientLocalAttnConfig.__doc__

    def __init__(self, channels: int, kernel_size: int = 7, bias: bool = False, act_layer: str | None = "silu",
                 gate_layer: str = "sigmoid", norm_layer: str | None = "groupnorm", has_skip: bool = False,
                 norm_groups: int = 1, norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.config = cfg = EfficientLocalAttnConfig(channels, kernel_size, bias, act_layer, gate_layer, norm_layer,
                                                     has_skip, norm_groups, norm_eps)
        self.conv_h, self.conv_w = _strip_convs(cfg.channels, cfg.kernel_size, cfg.bias)
        if cfg.norm_layer is not None:
            self.norm_h = nn.GroupNorm(cfg.norm_groups, cfg.channels, eps=cfg.norm_eps)
            self.norm_w = nn.GroupNorm(cfg.norm_groups, cfg.channels, eps=cfg.norm_eps)
        else:
            self.norm_h = self.norm_w = None
        self._act = _identity if cfg.act_layer is None else ACTIVATIONS[cfg.act_layer]
        self._gate = ACTIVATIONS[cfg.gate_layer]
        self.add_gate("gate_h", "gate_w")

    def _branch(self, strip: torch.Tensor, conv: nn.Conv2d, norm: nn.GroupNorm | None,
                compute: torch.dtype | None) -> torch.Tensor:
        z = conv_as(conv, strip, compute)
        if norm is not None:
            z = group_norm_as(norm, z, compute)
        return self._gate(self._act(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compute, xc = self.prepare(x)
        a_h = self.expose_gate(self._branch(xc.mean(3, keepdim=True), self.conv_h, self.norm_h, compute), "gate_h")
        a_w = self.expose_gate(self._branch(xc.mean(2, keepdim=True), self.conv_w, self.norm_w, compute), "gate_w")
        return self.finish(gated(xc, a_h, a_w, skip=self.config.has_skip), x, compute)


class StripAttn(AttentionModule):
    __doc__ = StripAttnConfig.__doc__

    def __init__(self, channels: int, use_conv: bool = True, kernel_size: int = 3, bias: bool = False,
                 gate_layer: str = "sigmoid", has_skip: bool = False) -> None:
        super().__init__()
        self.config = cfg = StripAttnConfig(channels, use_conv, kernel_size, bias, gate_layer, has_skip)
        if cfg.use_conv:
            self.conv_h, self.conv_w = _strip_convs(cfg.channels, cfg.kernel_size, cfg.bias)
        self._gate = ACTIVATIONS[cfg.gate_layer]
        self.add_gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compute, xc = self.prepare(x)
        s_h, s_w = xc.mean(3, keepdim=True), xc.mean(2, keepdim=True)
        if self.config.use_conv:
            s_h, s_w = conv_as(self.conv_h, s_h, compute), conv_as(self.conv_w, s_w, compute)
        return self.finish(gated(xc, self.expose_gate(self._gate(s_h + s_w)), skip=self.config.has_skip), x, compute)
