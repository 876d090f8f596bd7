"""Selective Kernel convolution in Paddle. The math and its documentation: :class:`attn_core.SelectiveKernelConfig`."""

from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle import nn

from attn_core import SelectiveKernelConfig, bn_momentum_for

from ._base import AttentionModule
from ._norm import BatchNorm2D
from ._ops import ACTIVATIONS, conv_as, mean_hw


class ConvNormAct(nn.Layer):
    """One path: convolution (no bias), BatchNorm, activation; the names of timm's ``ConvNormAct`` (``conv``,
    ``bn``)."""

    def __init__(self, cfg: SelectiveKernelConfig, index: int) -> None:
        super().__init__()
        self.conv = nn.Conv2D(cfg.path_in, cfg.out, cfg.kernels[index], stride=cfg.stride,
                              padding=cfg.paddings[index], dilation=cfg.dilations[index], groups=cfg.conv_groups,
                              bias_attr=False)
        self.bn = BatchNorm2D(cfg.out, momentum=bn_momentum_for("paddle", cfg.bn_momentum), epsilon=cfg.bn_eps)
        self._act = ACTIVATIONS[cfg.act_layer]

    def forward(self, x: paddle.Tensor, compute: object = None) -> paddle.Tensor:
        return self._act(self.bn(conv_as(self.conv, x, compute)))  # the BatchNorm in its input's dtype


class SelectiveKernelAttn(nn.Layer):
    """The attention over the stacked paths (N, P, C, H, W): their softmax weights (N, P, C, 1, 1), timm's names
    (``fc_reduce``, ``bn``, ``fc_select``)."""

    def __init__(self, cfg: SelectiveKernelConfig) -> None:
        super().__init__()
        self.num_paths, self.channels = cfg.num_paths, cfg.out
        self.fc_reduce = nn.Conv2D(cfg.out, cfg.attn_channels, 1, bias_attr=False)
        self.bn = BatchNorm2D(cfg.attn_channels, momentum=bn_momentum_for("paddle", cfg.bn_momentum),
                              epsilon=cfg.bn_eps)
        self.fc_select = nn.Conv2D(cfg.attn_channels, cfg.out * cfg.num_paths, 1, bias_attr=False)

    def forward(self, x: paddle.Tensor, compute: object = None) -> paddle.Tensor:
        z = ACTIVATIONS["relu"](self.bn(conv_as(self.fc_reduce, mean_hw(x.sum(axis=1)), compute)))
        logits = conv_as(self.fc_select, z, compute)
        return F.softmax(logits.reshape([-1, self.num_paths, self.channels, 1, 1]), axis=1)


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
        self.paths = nn.LayerList([ConvNormAct(cfg, i) for i in range(cfg.num_paths)])
        self.attn = SelectiveKernelAttn(cfg)
        self.add_gate("path_attn")

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        compute, xc = self.prepare(x)
        cfg = self.config
        inputs = paddle.split(xc, cfg.num_paths, axis=1) if cfg.split_input else [xc] * cfg.num_paths
        # indexed, not zipped: to_static's zip takes no strict argument
        stacked = paddle.stack([self.paths[i](inputs[i], compute) for i in range(cfg.num_paths)], axis=1)
        a = self.attn(stacked, compute)
        self.expose_branch_weights(a, "path_attn")
        y = (stacked * a).sum(axis=1)
        return self.finish(y, x, compute)
