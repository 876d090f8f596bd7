"""Coordinate attention and timm's strip-pooling variants in Paddle: CoordAttn, SimpleCoordAttn, EfficientLocalAttn,
StripAttn. The math: :mod:`attn_core.coord_attn`."""

from __future__ import annotations

from typing import Any

import paddle
from paddle import nn

from attn_core import (
    CoordAttnConfig,
    EfficientLocalAttnConfig,
    SimpleCoordAttnConfig,
    StripAttnConfig,
    bn_momentum_for,
)

from .._common import gated
from ._base import AttentionModule
from ._norm import BatchNorm2D
from ._ops import ACTIVATIONS, conv_as, group_norm_as, linear_as, static_shape


def _identity(x: paddle.Tensor) -> paddle.Tensor:
    return x


def _bias(bias: bool) -> Any:
    return None if bias else False


def _strip_convs(channels: int, kernel_size: int, bias: bool) -> tuple[nn.Conv2D, nn.Conv2D]:
    """The depthwise (k, 1) convolution along H and (1, k) along W, each zero padded by k // 2."""
    p = kernel_size // 2
    return (nn.Conv2D(channels, channels, (kernel_size, 1), padding=(p, 0), groups=channels, bias_attr=_bias(bias)),
            nn.Conv2D(channels, channels, (1, kernel_size), padding=(0, p), groups=channels, bias_attr=_bias(bias)))


class CoordAttn(AttentionModule):
    __doc__ = CoordAttnConfig.__doc__

    def __init__(self, channels: int, rd_ratio: float = 1.0 / 16, rd_channels: int | None = None,
                 rd_divisor: int | None = 8, se_factor: float = 2.0 / 3, bias: bool = False,
                 act_layer: str = "hard_swish", norm_layer: str | None = "batchnorm", gate_layer: str = "sigmoid",
                 has_skip: bool = False, rd_min: int | None = None, bn_eps: float = 1e-5,
                 bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.add_gate("gate_h", "gate_w")
        self.config = cfg = CoordAttnConfig(channels, rd_ratio, rd_channels, rd_divisor, se_factor, bias, act_layer,
                                            norm_layer, gate_layer, has_skip, rd_min, bn_eps, bn_momentum)
        self.conv1 = nn.Conv2D(cfg.channels, cfg.hidden, 1, bias_attr=_bias(cfg.bias))
        self.bn1 = BatchNorm2D(cfg.hidden, momentum=bn_momentum_for("paddle", cfg.bn_momentum), epsilon=cfg.bn_eps) \
            if cfg.norm_layer is not None else None
        self.conv_h = nn.Conv2D(cfg.hidden, cfg.channels, 1, bias_attr=_bias(cfg.bias))
        self.conv_w = nn.Conv2D(cfg.hidden, cfg.channels, 1, bias_attr=_bias(cfg.bias))
        self._act = ACTIVATIONS[cfg.act_layer]
        self._gate = ACTIVATIONS[cfg.gate_layer]

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        compute, xc = self.prepare(x)
        h = static_shape(x)[2]
        if h < 0:  # under to_static with a dynamic height, read at run time (-1 would cut the wrong strip)
            h = paddle.shape(x)[2]
        s_w = xc.mean(axis=2, keepdim=True).transpose([0, 1, 3, 2])
        y = conv_as(self.conv1, paddle.concat([xc.mean(axis=3, keepdim=True), s_w], axis=2), compute)
        if self.bn1 is not None:
            y = self.bn1(y)  # in y's dtype, whatever its own (BatchNorm2D)
        y = self._act(y)
        a_h = self.expose_gate(self._gate(conv_as(self.conv_h, y[:, :, :h], compute)), "gate_h")
        a_w = self.expose_gate(self._gate(conv_as(self.conv_w, y[:, :, h:].transpose([0, 1, 3, 2]), compute)), "gate_w")
        return self.finish(gated(xc, a_w, a_h, skip=self.config.has_skip), x, compute)


class SimpleCoordAttn(AttentionModule):
    __doc__ = SimpleCoordAttnConfig.__doc__

    def __init__(self, channels: int, rd_ratio: float = 0.25, rd_channels: int | None = None,
                 rd_divisor: int | None = 8, se_factor: float = 2.0 / 3, bias: bool = True, act_layer: str = "silu",
                 gate_layer: str = "sigmoid", has_skip: bool = False, rd_min: int | None = None) -> None:
        super().__init__()
        self.add_gate()
        self.config = cfg = SimpleCoordAttnConfig(channels, rd_ratio, rd_channels, rd_divisor, se_factor, bias,
                                                  act_layer, gate_layer, has_skip, rd_min)
        self.fc1 = nn.Linear(cfg.channels, cfg.hidden, bias_attr=_bias(cfg.bias))
        self.fc_h = nn.Linear(cfg.hidden, cfg.channels, bias_attr=_bias(cfg.bias))
        self.fc_w = nn.Linear(cfg.hidden, cfg.channels, bias_attr=_bias(cfg.bias))
        self._act = ACTIVATIONS[cfg.act_layer]
        self._gate = ACTIVATIONS[cfg.gate_layer]

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        compute, xc = self.prepare(x)
        # the strips as rows of C: (N, H, C) and (N, W, C), through the one shared fc1
        r_h = self._act(linear_as(self.fc1, xc.mean(axis=3).transpose([0, 2, 1]), compute))
        r_w = self._act(linear_as(self.fc1, xc.mean(axis=2).transpose([0, 2, 1]), compute))
        a_h = linear_as(self.fc_h, r_h, compute).transpose([0, 2, 1]).unsqueeze(-1)
        a_w = linear_as(self.fc_w, r_w, compute).transpose([0, 2, 1]).unsqueeze(-2)
        return self.finish(gated(xc, self.expose_gate(self._gate(a_h + a_w)), skip=self.config.has_skip), x, compute)


class EfficientLocalAttn(AttentionModule):
    __doc__ = EfficientLocalAttnConfig.__doc__

    def __init__(self, channels: int, kernel_size: int = 7, bias: bool = False, act_layer: str | None = "silu",
                 gate_layer: str = "sigmoid", norm_layer: str | None = "groupnorm", has_skip: bool = False,
                 norm_groups: int = 1, norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.add_gate("gate_h", "gate_w")
        self.config = cfg = EfficientLocalAttnConfig(channels, kernel_size, bias, act_layer, gate_layer, norm_layer,
                                                     has_skip, norm_groups, norm_eps)
        self.conv_h, self.conv_w = _strip_convs(cfg.channels, cfg.kernel_size, cfg.bias)
        if cfg.norm_layer is not None:
            self.norm_h = nn.GroupNorm(cfg.norm_groups, cfg.channels, epsilon=cfg.norm_eps)
            self.norm_w = nn.GroupNorm(cfg.norm_groups, cfg.channels, epsilon=cfg.norm_eps)
        else:
            self.norm_h = self.norm_w = None
        self._act = _identity if cfg.act_layer is None else ACTIVATIONS[cfg.act_layer]
        self._gate = ACTIVATIONS[cfg.gate_layer]

    def _branch(self, strip: paddle.Tensor, conv: nn.Conv2D, norm: nn.GroupNorm | None, compute: Any) -> paddle.Tensor:
        z = conv_as(conv, strip, compute)
        if norm is not None:
            z = group_norm_as(norm, z, compute)
        return self._gate(self._act(z))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        compute, xc = self.prepare(x)
        a_h = self.expose_gate(self._branch(xc.mean(axis=3, keepdim=True), self.conv_h, self.norm_h, compute), "gate_h")
        a_w = self.expose_gate(self._branch(xc.mean(axis=2, keepdim=True), self.conv_w, self.norm_w, compute), "gate_w")
        return self.finish(gated(xc, a_h, a_w, skip=self.config.has_skip), x, compute)


class StripAttn(AttentionModule):
    __doc__ = StripAttnConfig.__doc__

    def __init__(self, channels: int, use_conv: bool = True, kernel_size: int = 3, bias: bool = False,
                 gate_layer: str = "sigmoid", has_skip: bool = False) -> None:
        super().__init__()
        self.add_gate()
        self.config = cfg = StripAttnConfig(channels, use_conv, kernel_size, bias, gate_layer, has_skip)
        if cfg.use_conv:
            self.conv_h, self.conv_w = _strip_convs(cfg.channels, cfg.kernel_size, cfg.bias)
        self._gate = ACTIVATIONS[cfg.gate_layer]

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        compute, xc = self.prepare(x)
        s_h, s_w = xc.mean(axis=3, keepdim=True), xc.mean(axis=2, keepdim=True)
        if self.config.use_conv:
            s_h, s_w = conv_as(self.conv_h, s_h, compute), conv_as(self.conv_w, s_w, compute)
        return self.finish(gated(xc, self.expose_gate(self._gate(s_h + s_w)), skip=self.config.has_skip), x, compute)
