"""Split attention (ResNeSt's Splat) in Paddle. The math and its documentation: :class:`attn_core.SplitAttnConfig`."""

from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle import nn

from attn_core import SplitAttnConfig, bn_momentum_for

from ._base import AttentionModule
from ._norm import BatchNorm2D
from ._ops import ACTIVATIONS, conv_as, mean_hw


class SplitAttn(AttentionModule):
    __doc__ = SplitAttnConfig.__doc__
    config: SplitAttnConfig

    def __init__(self, in_channels: int, out_channels: int | None = None, kernel_size: int = 3, stride: int = 1,
                 padding: int | None = None, dilation: int = 1, groups: int = 1, bias: bool = False, radix: int = 2,
                 rd_ratio: float = 0.25, rd_channels: int | None = None, rd_divisor: int = 8,
                 act_layer: str = "relu", norm_layer: str | None = None, bn_eps: float = 1e-5,
                 bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.add_gate("radix_attn")
        self.config = cfg = SplitAttnConfig(in_channels, out_channels, kernel_size, stride, padding, dilation,
                                            groups, bias, radix, rd_ratio, rd_channels, rd_divisor, act_layer,
                                            norm_layer, bn_eps, bn_momentum)
        momentum = bn_momentum_for("paddle", cfg.bn_momentum)
        self.conv = nn.Conv2D(cfg.in_channels, cfg.mid, cfg.kernel_size, stride=cfg.stride, padding=cfg.pad,
                              dilation=cfg.dilation, groups=cfg.groups * cfg.radix,
                              bias_attr=None if cfg.bias else False)
        self.bn0 = BatchNorm2D(cfg.mid, momentum=momentum, epsilon=cfg.bn_eps) if cfg.has_norm else None
        self.fc1 = nn.Conv2D(cfg.out, cfg.attn_channels, 1, groups=cfg.groups)
        self.bn1 = BatchNorm2D(cfg.attn_channels, momentum=momentum, epsilon=cfg.bn_eps) if cfg.has_norm else None
        self.fc2 = nn.Conv2D(cfg.attn_channels, cfg.mid, 1, groups=cfg.groups)
        self._act = ACTIVATIONS[cfg.act_layer]

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        compute, xc = self.prepare(x)
        cfg = self.config
        r, g, c = cfg.radix, cfg.groups, cfg.out
        u = conv_as(self.conv, xc, compute)
        u = self._act(u if self.bn0 is None else self.bn0(u))  # the BatchNorm in its input's dtype
        # (N, R, C, H', W'), split-major as timm's: a reshape, where stacking the splits copied the whole map
        splits = u.reshape([-1, r, c, u.shape[2], u.shape[3]])
        z = conv_as(self.fc1, mean_hw(splits.sum(axis=1)), compute)
        z = self._act(z if self.bn1 is None else self.bn1(z))
        logits = conv_as(self.fc2, z, compute)  # (N, R*C, 1, 1): cardinal group, split, channel
        if r > 1:
            a = F.softmax(logits.reshape([-1, g, r, c // g]), axis=2).transpose([0, 2, 1, 3])
        else:
            a = F.sigmoid(logits)
        self.expose_branch_weights(a, "radix_attn")
        y = (splits * a.reshape([-1, r, c, 1, 1])).sum(axis=1)
        return self.finish(y, x, compute)
