"""Non-local attention in Paddle: NonLocalAttn and BatNonLocalAttn (with its BilinearAttnTransform). The math:
:mod:`attn_core.non_local`."""

from __future__ import annotations

from typing import Any

import paddle
import paddle.nn.functional as F
from paddle import nn

from attn_core import BatNonLocalAttnConfig, NonLocalAttnConfig, bn_momentum_for
from attn_core.non_local import BN_EPS, BN_MOMENTUM

from ._base import AttentionModule
from ._norm import BatchNorm2D
from ._ops import ACTIVATIONS, amax, conv_as, scalar

__all__ = ["NonLocalAttn", "BatNonLocalAttn", "BilinearAttnTransform", "ConvNormAct"]


def _batch_norm(channels: int) -> BatchNorm2D:
    return BatchNorm2D(channels, momentum=bn_momentum_for("paddle", BN_MOMENTUM), epsilon=BN_EPS)


class NonLocalAttn(AttentionModule):
    __doc__ = NonLocalAttnConfig.__doc__

    def __init__(self, channels: int, use_scale: bool = True, rd_ratio: float = 1.0 / 8,
                 rd_channels: int | None = None, rd_divisor: int = 8) -> None:
        super().__init__()
        self.config = cfg = NonLocalAttnConfig(channels, use_scale, rd_ratio, rd_channels, rd_divisor)
        self.t = nn.Conv2D(cfg.channels, cfg.hidden, 1)
        self.p = nn.Conv2D(cfg.channels, cfg.hidden, 1)
        self.g = nn.Conv2D(cfg.channels, cfg.hidden, 1)
        self.z = nn.Conv2D(cfg.hidden, cfg.channels, 1)
        self.norm = _batch_norm(cfg.channels)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        compute, xc = self.prepare(x)
        h, w = xc.shape[2], xc.shape[3]
        t, p, g = (conv_as(layer, xc, compute).flatten(2) for layer in (self.t, self.p, self.g))  # (N, rd, HW)
        # the scale as a tensor: a Python float becomes a float32 attribute in a static graph (_ops.scalar)
        att = F.softmax(paddle.matmul(t, p, transpose_x=True) * scalar(self.config.scale, t), axis=2)
        ctx = paddle.matmul(g, att, transpose_y=True).reshape([-1, self.config.hidden, h, w])
        y = self.norm(conv_as(self.z, ctx, compute)) + xc  # the BatchNorm in ctx's dtype, whatever its own
        return self.finish(y, x, compute)


class ConvNormAct(nn.Layer):
    """timm's ConvNormAct as BAT builds it: 1x1 convolution without bias (``conv``), BatchNorm (``bn``), the
    activation; computed in the dtype given to :meth:`forward` (None: the input's)."""

    def __init__(self, in_channels: int, out_channels: int, act_layer: str = "relu") -> None:
        super().__init__()
        self.conv = nn.Conv2D(in_channels, out_channels, 1, bias_attr=False)
        self.bn = _batch_norm(out_channels)
        self._act = ACTIVATIONS[act_layer]

    def forward(self, x: paddle.Tensor, compute: Any = None) -> paddle.Tensor:
        return self._act(self.bn(conv_as(self.conv, x, compute)))


class BilinearAttnTransform(nn.Layer):
    """timm's BilinearAttnTransform (see :class:`attn_core.BatNonLocalAttnConfig`, steps 1-4) on rd channels."""

    def __init__(self, in_channels: int, block_size: int, groups: int, act_layer: str = "relu") -> None:
        super().__init__()
        b = block_size
        self.conv1 = ConvNormAct(in_channels, groups, act_layer)
        self.conv_p = nn.Conv2D(groups, b * b * groups, (b, 1))
        self.conv_q = nn.Conv2D(groups, b * b * groups, (1, b))
        self.conv2 = ConvNormAct(in_channels, in_channels, act_layer)
        self.block_size, self.groups = block_size, groups

    def forward(self, x: paddle.Tensor, compute: Any = None) -> paddle.Tensor:
        c, h, w = x.shape[1], x.shape[2], x.shape[3]
        b, g = self.block_size, self.groups
        th, tw = h // b, w // b
        o = self.conv1(x, compute)
        rows = amax(o.reshape([-1, g, b, th * w]), [3])  # the max over each block of rows: (N, G, b, 1)
        cols = amax(o.reshape([-1, g, h, b, tw]), [2, 4]).reshape([-1, g, 1, b])
        p = F.sigmoid(conv_as(self.conv_p, rows, compute).reshape([-1, g, b, b]))
        q = F.sigmoid(conv_as(self.conv_q, cols, compute).reshape([-1, g, b, b]))
        p = p / p.sum(axis=3, keepdim=True)
        q = q / q.sum(axis=2, keepdim=True)
        # kron(P, I_t) @ x @ kron(Q, I_s) per channel, without the H x H and W x W matrices: block row i mixes the
        # block rows j at the same offset, and likewise for the columns, each group's P and Q for its channels
        v = paddle.matmul(p.unsqueeze(2), x.reshape([-1, g, c // g, b, th * w]))
        v = paddle.matmul(v.reshape([-1, g, c // g * h, b, tw]), q.unsqueeze(2), transpose_x=True)
        return self.conv2(v.transpose([0, 1, 2, 4, 3]).reshape([-1, c, h, w]), compute)


class BatNonLocalAttn(AttentionModule):
    __doc__ = BatNonLocalAttnConfig.__doc__

    def __init__(self, channels: int, block_size: int = 7, groups: int = 2, rd_ratio: float = 0.25,
                 rd_channels: int | None = None, rd_divisor: int = 8, drop_rate: float = 0.2,
                 act_layer: str = "relu") -> None:
        super().__init__()
        self.config = cfg = BatNonLocalAttnConfig(channels, block_size, groups, rd_ratio, rd_channels, rd_divisor,
                                                  drop_rate, act_layer)
        self.conv1 = ConvNormAct(cfg.channels, cfg.hidden, cfg.act_layer)
        self.ba = BilinearAttnTransform(cfg.hidden, cfg.block_size, cfg.groups, cfg.act_layer)
        self.conv2 = ConvNormAct(cfg.hidden, cfg.channels, cfg.act_layer)
        self.dropout = nn.Dropout2D(p=cfg.drop_rate)  # upscale_in_train: kept channels times 1 / (1 - p)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        compute, xc = self.prepare(x)
        y = self.dropout(self.conv2(self.ba(self.conv1(xc, compute), compute), compute)) + xc
        return self.finish(y, x, compute)
