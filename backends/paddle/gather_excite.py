"""Gather-Excite in Paddle. The math and its documentation: :class:`attn_core.GatherExciteConfig`."""

from __future__ import annotations

from typing import Any

import paddle
import paddle.nn.functional as F
from paddle import nn

from attn_core import GatherExciteConfig, bn_momentum_for
from attn_core.ops import nearest_indices

from ._base import AttentionModule
from ._norm import BatchNorm2D
from ._ops import ACTIVATIONS, amax, conv_as, mean_hw, scalar, static_shape


def resize_nearest(g: paddle.Tensor, size: tuple[int, int]) -> paddle.Tensor:
    """``g`` (N, C, h, w) resized to ``size`` by torch's nearest rule (:func:`attn_core.ops.nearest_indices`), as
    explicit indices (Paddle's own nearest interpolation rounds its own way)."""
    _, _, h, w = static_shape(g)
    rows = paddle.to_tensor(nearest_indices(h, size[0]), dtype="int64")
    cols = paddle.to_tensor(nearest_indices(w, size[1]), dtype="int64")
    return paddle.index_select(paddle.index_select(g, rows, axis=2), cols, axis=3)


def avg_pool_exclusive(config: GatherExciteConfig, x: paddle.Tensor) -> paddle.Tensor:
    """The parameter-free gather's average pooling, the padded zeros not counted (timm's ``count_include_pad=False``).
    In float64 as window sums by a depthwise convolution of ones over the counts: Paddle's avg_pool2d backward is
    1e-8 off there."""
    k, s, p = config.pool_geometry
    if x.dtype != paddle.float64:
        return F.avg_pool2d(x, k, s, p, exclusive=True)
    _, c, h, w = static_shape(x)
    ones = paddle.ones([c, 1, k, k], dtype=x.dtype)
    counts = paddle.to_tensor(config.pool_counts(h, w), dtype=x.dtype)
    return F.conv2d(x, ones, stride=s, padding=p, groups=c) / counts


class ConvMlp(nn.Layer):
    """timm's ``ConvMlp`` without norm: ``fc2(act(fc1(x)))``, 1x1 convolutions with biases."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2D(channels, hidden, 1)
        self.fc2 = nn.Conv2D(hidden, channels, 1)


class GatherExcite(AttentionModule):
    __doc__ = GatherExciteConfig.__doc__

    def __init__(self, channels: int, feat_size: tuple[int, int] | None = None, extra_params: bool = False,
                 extent: int = 0, use_mlp: bool = True, rd_ratio: float = 1.0 / 16, rd_channels: int | None = None,
                 rd_divisor: int | None = 1, add_maxpool: bool = False, act_layer: str = "relu",
                 norm_layer: str | None = "batchnorm", gate_layer: str = "sigmoid", bn_eps: float = 1e-5,
                 bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.config = cfg = GatherExciteConfig(channels, feat_size, extra_params, extent, use_mlp, rd_ratio,
                                               rd_channels, rd_divisor, add_maxpool, act_layer, norm_layer,
                                               gate_layer, bn_eps, bn_momentum)
        c = cfg.channels
        self.gather: nn.Sequential | None = None
        self._convs: list[Any] = []
        if cfg.extra_params:
            self.gather = nn.Sequential()
            kernel, stride, padding = (cfg.feat_size, 1, 0) if cfg.extent == 0 else ((3, 3), 2, 1)
            for i in range(1, cfg.num_convs + 1):
                conv = nn.Conv2D(c, c, kernel, stride, padding, groups=c, bias_attr=False)
                self.gather.add_sublayer(f"conv{i}", conv)
                norm = None
                if cfg.norm:
                    norm = BatchNorm2D(c, momentum=bn_momentum_for("paddle", cfg.bn_momentum), epsilon=cfg.bn_eps)
                    self.gather.add_sublayer(f"norm{i}", norm)
                self._convs.append((conv, norm))
        self.mlp = ConvMlp(c, cfg.hidden) if cfg.use_mlp else None
        self._act = ACTIVATIONS[cfg.act_layer]
        self._gate = ACTIVATIONS[cfg.gate_layer]
        self.add_gate()

    def _gathered(self, xc: paddle.Tensor, compute: Any) -> paddle.Tensor:
        cfg = self.config
        if self.gather is not None:
            g = xc
            last = len(self._convs) - 1
            for i, (conv, norm) in enumerate(self._convs):  # to_static's enumerate takes no start
                g = conv_as(conv, g, compute)
                if norm is not None:
                    g = norm(g)  # in g's dtype, whatever its own (BatchNorm2D)
                if i != last:
                    g = self._act(g)
            return g
        half = scalar(0.5, xc)
        if cfg.extent == 0:
            g = mean_hw(xc)
            return g * half + amax(xc, [2, 3]) * half if cfg.add_maxpool else g
        g = avg_pool_exclusive(cfg, xc)
        return g * half + F.max_pool2d(xc, *cfg.pool_geometry) * half if cfg.add_maxpool else g

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        compute, xc = self.prepare(x)
        g = self._gathered(xc, compute)
        if self.mlp is not None:
            g = conv_as(self.mlp.fc2, self._act(conv_as(self.mlp.fc1, g, compute)), compute)
        _, _, h, w = static_shape(g)
        if h != 1 or w != 1:
            _, _, height, width = static_shape(x)
            g = resize_nearest(g, (height, width))
        y = xc * self.expose_gate(self._gate(g))
        return self.finish(y, x, compute)
