"""Shuffle Attention in Paddle. The math and its documentation: :class:`attn_core.ShuffleAttentionConfig`."""

from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle import nn

from attn_core import ShuffleAttentionConfig
from attn_core.shuffle import GATE_PARAMS

from ._base import AttentionModule
from ._ops import channel_shuffle, group_norm


class ShuffleAttention(AttentionModule):
    __doc__ = ShuffleAttentionConfig.__doc__

    def __init__(self, channels: int, groups: int = 64, gn_affine: bool = True, gn_eps: float = 1e-5) -> None:
        super().__init__()
        self.config = cfg = ShuffleAttentionConfig(channels, groups, gn_affine, gn_eps)
        b = cfg.branch_channels
        for name, value in GATE_PARAMS:  # the authors' initialisation: scales 0, shifts 1
            self.add_parameter(name, self.create_parameter([1, b, 1, 1],
                                                           default_initializer=nn.initializer.Constant(value)))
        # no layer without the affine: Paddle's GroupNorm would still hold a frozen weight of ones in its state_dict
        self.gn = nn.GroupNorm(b, b, epsilon=cfg.gn_eps) if cfg.gn_affine else None
        self.add_gate("sa_channel_gate", "sa_spatial_gate")

    def _expose_groups(self, g: paddle.Tensor, name: str, n: int) -> None:
        """The gate ``g`` of every (sample, group), (N * G, b, ., .), as the reference's tap ``name``: the groups'
        gates one after the other, (N, C / 2, ., .); only while a hook waits for it (no loop: to_static's)."""
        if self.gate_hooked(name):
            self.expose_gate(g.reshape([n, self.config.channels // 2, *g.shape[2:]]), name)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        compute, xc = self.prepare(x)
        cfg = self.config
        c, b = cfg.channels, cfg.branch_channels
        dt = xc.dtype
        cw, cb, sw, sb = (getattr(self, name).astype(dt) for name, _ in GATE_PARAMS)
        xg = xc.reshape([-1, c // cfg.groups, 0, 0])  # (N * G, 2b, H, W); 0 keeps H and W, known or not
        x0, x1 = xg[:, :b], xg[:, b:]
        if self.gn is None:  # Paddle's group_norm without weight and bias gets the input gradient wrong: 1 and 0 given
            weight, bias = paddle.ones([b], dtype=dt), paddle.zeros([b], dtype=dt)
        else:
            weight, bias = self.gn.weight.astype(dt), self.gn.bias.astype(dt)
        gate_c = F.sigmoid(cw * x0.mean(axis=[2, 3], keepdim=True) + cb)
        gate_s = F.sigmoid(sw * group_norm(x1, b, cfg.gn_eps, weight, bias) + sb)
        self._expose_groups(gate_c, "sa_channel_gate", xc.shape[0])
        self._expose_groups(gate_s, "sa_spatial_gate", xc.shape[0])
        xn, xs = x0 * gate_c, x1 * gate_s
        out = paddle.concat([xn, xs], axis=1).reshape([-1, c, 0, 0])
        return self.finish(channel_shuffle(out, 2), x, compute)
