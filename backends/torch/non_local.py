"""Non-local attention in PyTorch: NonLocalAttn and BatNonLocalAttn (with its BilinearAttnTransform). The math:
:mod:`attn_core.non_local`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attn_core import BatNonLocalAttnConfig, NonLocalAttnConfig, bn_momentum_for
from attn_core.non_local import BN_EPS, BN_MOMENTUM

from ._base import AttentionModule
from ._ops import ACTIVATIONS, batch_norm_as, conv_as

__all__ = ["NonLocalAttn", "BatNonLocalAttn", "BilinearAttnTransform", "ConvNormAct"]


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=bn_momentum_for("torch", BN_MOMENTUM))


class NonLocalAttn(AttentionModule):
    __doc__ = NonLocalAttnConfig.__doc__

    def __init__(self, channels: int, use_scale: bool = True, rd_ratio: float = 1.0 / 8,
                 rd_channels: int | None = None, rd_divisor: int = 8) -> None:
        super().__init__()
        self.config = cfg = NonLocalAttnConfig(channels, use_scale, rd_ratio, rd_channels, rd_divisor)
        self.t = nn.Conv2d(cfg.channels, cfg.hidden, 1)
        self.p = nn.Conv2d(cfg.channels, cfg.hidden, 1)
        self.g = nn.Conv2d(cfg.channels, cfg.hidden, 1)
        self.z = nn.Conv2d(cfg.hidden, cfg.channels, 1)
        self.norm = _batch_norm(cfg.channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compute, xc = self.prepare(x)
        n, _, h, w = xc.shape
        t, p, g = (conv_as(layer, xc, compute).flatten(2) for layer in (self.t, self.p, self.g))  # (N, rd, HW)
        att = torch.softmax(t.transpose(1, 2) @ p * self.config.scale, dim=2)
        ctx = (g @ att.transpose(1, 2)).reshape(n, -1, h, w)
        y = batch_norm_as(self.norm, conv_as(self.z, ctx, compute), compute) + xc
        return self.finish(y, x, compute)


class ConvNormAct(nn.Module):
    """timm's ConvNormAct as BAT builds it: 1x1 convolution without bias (``conv``), BatchNorm (``bn``), the
    activation; computed in the dtype given to :meth:`forward` (None: the input's)."""

    def __init__(self, in_channels: int, out_channels: int, act_layer: str = "relu") -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = _batch_norm(out_channels)
        self._act = ACTIVATIONS[act_layer]

    def forward(self, x: torch.Tensor, compute: torch.dtype | None = None) -> torch.Tensor:
        return self._act(batch_norm_as(self.bn, conv_as(self.conv, x, compute), compute))


class BilinearAttnTransform(nn.Module):
    """timm's BilinearAttnTransform (see :class:`attn_core.BatNonLocalAttnConfig`, steps 1-4) on rd channels."""

    def __init__(self, in_channels: int, block_size: int, groups: int, act_layer: str = "relu") -> None:
        super().__init__()
        b = block_size
        self.conv1 = ConvNormAct(in_channels, groups, act_layer)
        self.conv_p = nn.Conv2d(groups, b * b * groups, (b, 1))
        self.conv_q = nn.Conv2d(groups, b * b * groups, (1, b))
        self.conv2 = ConvNormAct(in_channels, in_channels, act_layer)
        self.block_size, self.groups = block_size, groups

    def forward(self, x: torch.Tensor, compute: torch.dtype | None = None) -> torch.Tensor:
        n, c, h, w = x.shape
        b, g = self.block_size, self.groups
        th, tw = h // b, w // b
        o = self.conv1(x, compute)
        p = torch.sigmoid(conv_as(self.conv_p, F.adaptive_max_pool2d(o, (b, 1)), compute).view(n, g, b, b))
        q = torch.sigmoid(conv_as(self.conv_q, F.adaptive_max_pool2d(o, (1, b)), compute).view(n, g, b, b))
        p = p / p.sum(3, keepdim=True)
        q = q / q.sum(2, keepdim=True)
        # kron(P, I_t) @ x @ kron(Q, I_s) per channel, without the H x H and W x W matrices: block row i mixes the
        # block rows j at the same offset, and likewise for the columns, each group's P and Q for its channels
        v = p[:, :, None] @ x.reshape(n, g, c // g, b, th * w)
        v = v.reshape(n, g, c // g * h, b, tw).transpose(-1, -2) @ q[:, :, None]
        return self.conv2(v.transpose(-1, -2).reshape(n, c, h, w), compute)


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
        self.dropout = nn.Dropout2d(p=cfg.drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compute, xc = self.prepare(x)
        y = self.dropout(self.conv2(self.ba(self.conv1(xc, compute), compute), compute)) + xc
        return self.finish(y, x, compute)
