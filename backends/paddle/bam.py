"""BAM in Paddle. The math and its documentation: :class:`attn_core.BAMConfig`."""

from __future__ import annotations

from typing import Any

import paddle
import paddle.nn.functional as F
from paddle import nn

from attn_core import BAMConfig, bn_momentum_for

from ._base import AttentionModule
from ._norm import BatchNorm2D
from ._ops import ACTIVATIONS, conv_as, linear_as, mean_hw


def _bn(cfg: BAMConfig, width: int) -> BatchNorm2D:
    return BatchNorm2D(width, momentum=bn_momentum_for("paddle", cfg.bn_momentum), epsilon=cfg.bn_eps)


_relu = ACTIVATIONS["relu"]  # keeps NaN, as torch's ReLU


class ChannelGate(nn.Layer):
    """The channel branch ``M_c`` (N, C, 1, 1), its layers in ``gate_c`` under the authors' names. Its BatchNorm1d
    runs as a BatchNorm2D on (N, r, 1, 1): the same statistics."""

    def __init__(self, cfg: BAMConfig) -> None:
        super().__init__()
        self.gate_c = nn.Layer()
        width = cfg.channels
        for i in range(cfg.num_layers):
            self.gate_c.add_sublayer(f"gate_c_fc_{i}", nn.Linear(width, cfg.hidden))
            self.gate_c.add_sublayer(f"gate_c_bn_{i + 1}", _bn(cfg, cfg.hidden))
            width = cfg.hidden
        self.gate_c.add_sublayer("gate_c_fc_final", nn.Linear(cfg.hidden, cfg.channels))
        self._num_layers = cfg.num_layers

    def forward(self, x: paddle.Tensor, compute: Any = None) -> paddle.Tensor:
        layers = self.gate_c
        h = paddle.flatten(mean_hw(x), 1)
        for i in range(self._num_layers):
            h = linear_as(getattr(layers, f"gate_c_fc_{i}"), h, compute).unsqueeze([2, 3])
            h = paddle.flatten(_relu(getattr(layers, f"gate_c_bn_{i + 1}")(h)), 1)
        return linear_as(layers.gate_c_fc_final, h, compute).unsqueeze([2, 3])


class SpatialGate(nn.Layer):
    """The spatial branch ``M_s`` (N, 1, H, W), its layers in ``gate_s`` under the authors' names."""

    def __init__(self, cfg: BAMConfig) -> None:
        super().__init__()
        self.gate_s = nn.Layer()
        width = cfg.channels
        for conv, bn, k, d in cfg.spatial_layers:
            self.gate_s.add_sublayer(conv, nn.Conv2D(width, cfg.hidden, k, padding=d * (k // 2), dilation=d))
            self.gate_s.add_sublayer(bn, _bn(cfg, cfg.hidden))
            width = cfg.hidden
        self.gate_s.add_sublayer("gate_s_conv_final", nn.Conv2D(cfg.hidden, 1, 1))
        self._pairs = [(conv, bn) for conv, bn, _, _ in cfg.spatial_layers]

    def forward(self, x: paddle.Tensor, compute: Any = None) -> paddle.Tensor:
        layers = self.gate_s
        z = x
        for conv, bn in self._pairs:
            z = _relu(getattr(layers, bn)(conv_as(getattr(layers, conv), z, compute)))
        return conv_as(layers.gate_s_conv_final, z, compute)


class BAMGate(nn.Layer):
    """The gate ``1 + sigmoid(M_c * M_s)`` (product) or ``1 + sigmoid(M_c + M_s)`` (sum), (N, C, H, W). It holds no
    parameters; a sublayer so that ``conformance.check`` can tap it."""

    def __init__(self, product: bool) -> None:
        super().__init__()
        self._product = product

    def forward(self, m_c: paddle.Tensor, m_s: paddle.Tensor) -> paddle.Tensor:
        # both expanded to (N, C, H, W) first: Paddle's CPU kernels broadcasting (N, C, 1, 1) against (N, 1, H, W)
        # take several times as long as the same operation on two full tensors
        shape = [m_c.shape[0], m_c.shape[1], m_s.shape[2], m_s.shape[3]]
        m_c, m_s = m_c.expand(shape), m_s.expand(shape)
        return F.sigmoid(m_c * m_s if self._product else m_c + m_s) + 1.0


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

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        compute, xc = self.prepare(x)  # checked (BatchNorm counts in training); half computed in float32
        m_c, m_s = self.channel_att(xc, compute), self.spatial_att(xc, compute)
        y = xc * self.expose_gate(self.gate(m_c, m_s), "bam_gate")
        return self.finish(y, x, compute)
