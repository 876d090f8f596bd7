"""GAM (Global Attention Mechanism) in Paddle. The math and its documentation: :class:`attn_core.GAMConfig`."""

from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle import nn

from attn_core import GAMConfig

from ._base import AttentionModule
from ._ops import channel_shuffle, conv_as, linear_as


class GAM(AttentionModule):
    __doc__ = GAMConfig.__doc__

    def __init__(self, channels: int, rate: float = 4, kernel_size: int = 7, bn_eps: float = 1e-5,
                 bn_momentum: float = 0.1, groups: int = 1, shuffle_groups: int = 1) -> None:
        from ._layers import attach, build_layer  # here: _layers reaches the registry, which imports this module

        super().__init__()
        self.config = cfg = GAMConfig(channels, rate, kernel_size, bn_eps, bn_momentum, groups, shuffle_groups)
        self.add_gate("gam_channel_gate", "gam_spatial_gate")
        for name, spec in cfg.layers():
            attach(self, name, nn.ReLU() if spec == "relu" else build_layer(spec))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        compute, xc = self.prepare(x)  # in training also the BatchNorms' rule: N*H*W > 1 (GAMConfig)
        mlp = self.channel_attention
        a = linear_as(mlp[2], F.relu(linear_as(mlp[0], xc.transpose([0, 2, 3, 1]), compute)), compute)
        x1 = xc * self.expose_gate(F.sigmoid(a.transpose([0, 3, 1, 2])), "gam_channel_gate")
        convs = self.spatial_attention
        s = F.relu(convs[1](conv_as(convs[0], x1, compute)))  # the BatchNorms in their input's dtype (BatchNorm2D)
        s = convs[4](conv_as(convs[3], s, compute))
        if self.config.shuffle_groups > 1:  # the shuffle commutes with the sigmoid: the copies shuffle the gate
            s = channel_shuffle(s, self.config.shuffle_groups)
        return self.finish(x1 * self.expose_gate(F.sigmoid(s), "gam_spatial_gate"), x, compute)
