"""Shuffle Attention in PyTorch. The math and its documentation: :class:`attn_core.ShuffleAttentionConfig`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attn_core import ShuffleAttentionConfig
from attn_core.shuffle import GATE_PARAMS

from ._base import AttentionModule


class ShuffleAttention(AttentionModule):
    __doc__ = ShuffleAttentionConfig.__doc__

    def __init__(self, channels: int, groups: int = 64, gn_affine: bool = True, gn_eps: float = 1e-5) -> None:
        super().__init__()
        self.config = cfg = ShuffleAttentionConfig(channels, groups, gn_affine, gn_eps)
        b = cfg.branch_channels
        for name, value in GATE_PARAMS:  # the authors' initialisation: scales 0, shifts 1
            self.register_parameter(name, nn.Parameter(torch.full((1, b, 1, 1), value)))
        self.gn = nn.GroupNorm(b, b, eps=cfg.gn_eps, affine=cfg.gn_affine)
        self.add_gate("sa_channel_gate", "sa_spatial_gate")

    def _expose_groups(self, g: torch.Tensor, name: str, n: int) -> None:
        """The gate ``g`` of every (sample, group), (N * G, b, ., .), as the reference's tap ``name``: the groups'
        gates one after the other, (N, C / 2, ., .); only while a hook waits for it."""
        if self.gate_hooked(name):
            self.expose_gate(g.reshape(n, self.config.channels // 2, *g.shape[2:]), name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compute, xc = self.prepare(x)
        n, c, h, w = xc.shape
        dt = xc.dtype
        cw, cb, sw, sb = (getattr(self, name).to(dt) for name, _ in GATE_PARAMS)
        x0, x1 = xc.reshape(n * self.config.groups, -1, h, w).chunk(2, dim=1)
        weight, bias = (None if p is None else p.to(dt) for p in (self.gn.weight, self.gn.bias))
        gate_c = torch.sigmoid(cw * x0.mean((2, 3), keepdim=True) + cb)
        gate_s = torch.sigmoid(sw * F.group_norm(x1, self.gn.num_groups, weight, bias, self.gn.eps) + sb)
        self._expose_groups(gate_c, "sa_channel_gate", n)
        self._expose_groups(gate_s, "sa_spatial_gate", n)
        xn, xs = x0 * gate_c, x1 * gate_s
        out = torch.cat([xn, xs], dim=1).reshape(n, 2, c // 2, h, w)
        y = out.transpose(1, 2).reshape(n, c, h, w)  # channel_shuffle(out, 2)
        return self.finish(y, x, compute)
