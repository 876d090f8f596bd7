"""Split attention (ResNeSt's Splat) in PyTorch. The math and its documentation: :class:`attn_core.SplitAttnConfig`."""

from __future__ import annotations

import torch
from torch import nn

from attn_core import SplitAttnConfig, bn_momentum_for

from ._base import AttentionModule
from ._ops import ACTIVATIONS, batch_norm_as, conv_as, mean_hw


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
        momentum = bn_momentum_for("torch", cfg.bn_momentum)
        self.conv = nn.Conv2d(cfg.in_channels, cfg.mid, cfg.kernel_size, stride=cfg.stride, padding=cfg.pad,
                              dilation=cfg.dilation, groups=cfg.groups * cfg.radix, bias=cfg.bias)
        self.bn0 = nn.BatchNorm2d(cfg.mid, eps=cfg.bn_eps, momentum=momentum) if cfg.has_norm else None
        self.fc1 = nn.Conv2d(cfg.out, cfg.attn_channels, 1, groups=cfg.groups)
        self.bn1 = nn.BatchNorm2d(cfg.attn_channels, eps=cfg.bn_eps, momentum=momentum) if cfg.has_norm else None
        self.fc2 = nn.Conv2d(cfg.attn_channels, cfg.mid, 1, groups=cfg.groups)
        self._act = ACTIVATIONS[cfg.act_layer]

    def _norm(self, bn: nn.BatchNorm2d | None, z: torch.Tensor, compute: torch.dtype | None) -> torch.Tensor:
        return z if bn is None else batch_norm_as(bn, z, compute)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compute, xc = self.prepare(x)
        cfg = self.config
        u = self._act(self._norm(self.bn0, conv_as(self.conv, xc, compute), compute))
        n, _, h, w = u.shape
        r, g, c = cfg.radix, cfg.groups, cfg.out
        splits = u.reshape(n, r, c, h, w)  # split-major, as timm's
        s = mean_hw(splits.sum(1))[:, :, None, None]
        z = self._act(self._norm(self.bn1, conv_as(self.fc1, s, compute), compute))
        logits = conv_as(self.fc2, z, compute)  # (N, R*C, 1, 1): cardinal group, split, channel
        if r > 1:
            a = torch.softmax(logits.view(n, g, r, c // g), dim=2).transpose(1, 2).reshape(n, r, c, 1, 1)
        else:
            a = torch.sigmoid(logits).view(n, 1, c, 1, 1)
        self.expose_branch_weights(a, "radix_attn")
        y = (splits * a).sum(1)
        return self.finish(y, x, compute)
