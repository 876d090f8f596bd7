"""Selective Kernel convolution in PyTorch. The math and its documentation: :class:`attn_core.SelectiveKernelConfig`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attn_core import SelectiveKernelConfig, bn_momentum_for

from ._base import AttentionModule
from ._ops import ACTIVATIONS, batch_norm_as, conv_as, mean_hw, pointwise_as


class ConvNormAct(nn.Module):
    """One path: convolution (no bias), BatchNorm, activation; the names of timm's ``ConvNormAct`` (``conv``,
    ``bn``)."""

    def __init__(self, cfg: SelectiveKernelConfig, index: int) -> None:
        super().__init__()
        k = cfg.kernels[index]
        self.conv = nn.Conv2d(cfg.path_in, cfg.out, k, stride=cfg.stride, padding=cfg.paddings[index],
                              dilation=cfg.dilations[index], groups=cfg.conv_groups, bias=False)
        self.bn = nn.BatchNorm2d(cfg.out, eps=cfg.bn_eps, momentum=bn_momentum_for("torch", cfg.bn_momentum))
        self._act = ACTIVATIONS[cfg.act_layer]

    def forward(self, x: torch.Tensor, compute: torch.dtype | None = None) -> torch.Tensor:
        return self._act(batch_norm_as(self.bn, conv_as(self.conv, x, compute), compute))


class SelectiveKernelAttn(nn.Module):
    """The attention over the stacked paths (N, P, C, H, W): their softmax weights (N, P, C, 1, 1), timm's names
    (``fc_reduce``, ``bn``, ``fc_select``)."""

    def __init__(self, cfg: SelectiveKernelConfig) -> None:
        super().__init__()
        self.num_paths = cfg.num_paths
        self.fc_reduce = nn.Conv2d(cfg.out, cfg.attn_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(cfg.attn_channels, eps=cfg.bn_eps,
                                 momentum=bn_momentum_for("torch", cfg.bn_momentum))
        self.fc_select = nn.Conv2d(cfg.attn_channels, cfg.out * cfg.num_paths, 1, bias=False)

    def forward(self, x: torch.Tensor, compute: torch.dtype | None = None) -> torch.Tensor:
        z = pointwise_as(self.fc_reduce, mean_hw(x.sum(1)), compute)[:, :, None, None]
        z = F.relu(batch_norm_as(self.bn, z, compute)).flatten(1)
        logits = pointwise_as(self.fc_select, z, compute)
        return torch.softmax(logits.view(x.shape[0], self.num_paths, -1, 1, 1), dim=1)


class SelectiveKernel(AttentionModule):
    __doc__ = SelectiveKernelConfig.__doc__
    config: SelectiveKernelConfig

    def __init__(self, in_channels: int, out_channels: int | None = None,
                 kernel_size: int | tuple[int, ...] | None = None, stride: int = 1, dilation: int = 1,
                 groups: int = 1, rd_ratio: float = 1.0 / 16, rd_channels: int | None = None, rd_divisor: int = 8,
                 keep_3x3: bool = True, split_input: bool = True, act_layer: str = "relu", bn_eps: float = 1e-5,
                 bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.config = cfg = SelectiveKernelConfig(in_channels, out_channels, kernel_size, stride, dilation, groups,
                                                  rd_ratio, rd_channels, rd_divisor, keep_3x3, split_input,
                                                  act_layer, bn_eps, bn_momentum)
        self.paths = nn.ModuleList([ConvNormAct(cfg, i) for i in range(cfg.num_paths)])
        self.attn = SelectiveKernelAttn(cfg)
        self.add_gate("path_attn")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compute, xc = self.prepare(x)
        cfg = self.config
        inputs = torch.split(xc, cfg.path_in, 1) if cfg.split_input else [xc] * cfg.num_paths
        stacked = torch.stack([path(xi, compute) for path, xi in zip(self.paths, inputs, strict=True)], 1)
        a = self.attn(stacked, compute)
        self.expose_branch_weights(a, "path_attn")
        y = (stacked * a).sum(1)
        return self.finish(y, x, compute)
