"""BAM in PyTorch. The math and its documentation: :class:`attn_core.BAMConfig`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attn_core import BAMConfig, bn_momentum_for

from ._base import AttentionModule
from ._ops import batch_norm_as, conv_as, linear_as, mean_hw


def _bn(cfg: BAMConfig, width: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(width, eps=cfg.bn_eps, momentum=bn_momentum_for("torch", cfg.bn_momentum))


class ChannelGate(nn.Module):
    """The channel branch ``M_c`` (N, C, 1, 1), its layers in ``gate_c`` under the authors' names. Its BatchNorm1d
    runs as a BatchNorm2d on (N, r, 1, 1): the same statistics and the same ``state_dict``."""

    def __init__(self, cfg: BAMConfig) -> None:
        super().__init__()
        self.gate_c = nn.Module()
        width = cfg.channels
        for i in range(cfg.num_layers):
            self.gate_c.add_module(f"gate_c_fc_{i}", nn.Linear(width, cfg.hidden))
            self.gate_c.add_module(f"gate_c_bn_{i + 1}", _bn(cfg, cfg.hidden))
            width = cfg.hidden
        self.gate_c.add_module("gate_c_fc_final", nn.Linear(cfg.hidden, cfg.channels))
        self._num_layers = cfg.num_layers

    def forward(self, x: torch.Tensor, compute: torch.dtype | None = None) -> torch.Tensor:
        layers = self.gate_c
        h = mean_hw(x)
        for i in range(self._num_layers):
            h = linear_as(getattr(layers, f"gate_c_fc_{i}"), h, compute)[:, :, None, None]
            h = F.relu(batch_norm_as(getattr(layers, f"gate_c_bn_{i + 1}"), h, compute)).flatten(1)
        return linear_as(layers.gate_c_fc_final, h, compute)[:, :, None, None]


class SpatialGate(nn.Module):
    """The spatial branch ``M_s`` (N, 1, H, W), its layers in ``gate_s`` under the authors' names."""

    def __init__(self, cfg: BAMConfig) -> None:
        super().__init__()
        self.gate_s = nn.Module()
        width = cfg.channels
        for conv, bn, k, d in cfg.spatial_layers:
            self.gate_s.add_module(conv, nn.Conv2d(width, cfg.hidden, k, padding=d * (k // 2), dilation=d))
            self.gate_s.add_module(bn, _bn(cfg, cfg.hidden))
            width = cfg.hidden
        self.gate_s.add_module("gate_s_conv_final", nn.Conv2d(cfg.hidden, 1, 1))
        self._pairs = [(conv, bn) for conv, bn, _, _ in cfg.spatial_layers]

    def forward(self, x: torch.Tensor, compute: torch.dtype | None = None) -> torch.Tensor:
        layers = self.gate_s
        z = x
        for conv, bn in self._pairs:
            z = F.relu(batch_norm_as(getattr(layers, bn), conv_as(getattr(layers, conv), z, compute), compute))
        return conv_as(layers.gate_s_conv_final, z, compute)


class BAMGate(nn.Module):
    """The gate ``1 + sigmoid(M_c * M_s)`` (product) or ``1 + sigmoid(M_c + M_s)`` (sum), (N, C, H, W). It holds no
    parameters; a submodule so that ``conformance.check`` can tap it."""

    def __init__(self, product: bool) -> None:
        super().__init__()
        self._product = product

    def forward(self, m_c: torch.Tensor, m_s: torch.Tensor) -> torch.Tensor:
        return 1.0 + torch.sigmoid(m_c * m_s if self._product else m_c + m_s)


class BAM(AttentionModule):
    __doc__ = BAMConfig.__doc__

    def __init__(self, channels: int, reduction_ratio: int = 16, num_layers: int = 1, dilation_conv_num: int = 2,
                 dilation_val: int = 4, combine: str = "product", bn_eps: float = 1e-5,
                 bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.config = cfg = BAMConfig(channels, reduction_ratio, num_layers, dilation_conv_num, dilation_val,
                                      combine, bn_eps, bn_momentum)
        self.channel_att = ChannelGate(cfg)
        self.spatial_att = SpatialGate(cfg)
        self.gate = BAMGate(cfg.combine == "product")
        self.add_gate("bam_gate")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compute, xc = self.prepare(x)  # checked (BatchNorm counts in training); half computed in float32
        m_c, m_s = self.channel_att(xc, compute), self.spatial_att(xc, compute)
        y = xc * self.expose_gate(self.gate(m_c, m_s), "bam_gate")
        return self.finish(y, x, compute)
