"""Triplet attention in Paddle. The math and its documentation: :class:`attn_core.TripletAttentionConfig`."""

from __future__ import annotations

from typing import Any

import paddle
import paddle.nn.functional as F
from paddle import nn

from attn_core import TripletAttentionConfig, bn_momentum_for

from ._base import AttentionModule
from ._norm import BatchNorm2D
from ._ops import amax, conv_as, expand_gate, scalar


class BasicConv(nn.Layer):
    """The authors' ``BasicConv`` as triplet attention builds it: a 2 -> 1 convolution without bias, then a
    BatchNorm of one channel (their ``state_dict`` names ``conv``, ``bn``)."""

    def __init__(self, kernel_size: int, bn_eps: float, bn_momentum: float) -> None:
        super().__init__()
        self.conv = nn.Conv2D(2, 1, kernel_size, padding=kernel_size // 2, bias_attr=False)
        self.bn = BatchNorm2D(1, momentum=bn_momentum_for("paddle", bn_momentum), epsilon=bn_eps)

    def forward(self, z: paddle.Tensor, compute: Any = None) -> paddle.Tensor:
        return self.bn(conv_as(self.conv, z, compute))  # BatchNorm2D computes in z's dtype, whatever its own


class AttentionGate(nn.Layer):
    """One branch: the gate ``sigmoid(spatial(ZPool(z)))`` of a (rotated) input ``z`` (N, A, B, D), (N, 1, B, D).
    It returns the gate, which the caller multiplies in (so that ``conformance.check`` can tap it)."""

    def __init__(self, kernel_size: int, max_first: bool, bn_eps: float, bn_momentum: float) -> None:
        super().__init__()
        self.spatial = BasicConv(kernel_size, bn_eps, bn_momentum)
        self._max_first = max_first

    def forward(self, z: paddle.Tensor, compute: Any = None) -> paddle.Tensor:
        mx, avg = amax(z, [1]), z.mean(axis=1, keepdim=True)
        return F.sigmoid(self.spatial(paddle.concat([mx, avg] if self._max_first else [avg, mx], axis=1), compute))


class TripletAttention(AttentionModule):
    __doc__ = TripletAttentionConfig.__doc__

    def __init__(self, channels: int | None = None, kernel_size: int = 7, no_spatial: bool = False,
                 pool_order: str = "max_mean", bn_eps: float = 1e-5, bn_momentum: float = 0.01) -> None:
        super().__init__()
        self.config = cfg = TripletAttentionConfig(channels, kernel_size, no_spatial, pool_order, bn_eps,
                                                   bn_momentum)
        for branch, _, _ in cfg.branches:
            self.add_sublayer(branch, AttentionGate(cfg.kernel_size, cfg.pool_order == "max_mean", cfg.bn_eps,
                                                    cfg.bn_momentum))
        self._branches = [(branch, tap, list(perm)) for branch, tap, perm in cfg.branches]
        self.add_gate(*(tap for _, tap, _ in cfg.branches))

    def _expose_rotated(self, g: paddle.Tensor, tap: str, perm: list[int]) -> None:
        """A branch's gate ``g``, in its rotation of the input, turned back to the input's axes (each rotation is
        its own inverse) as the gate ``tap``; only while a hook waits for it."""
        if self.gate_hooked(tap):
            self.expose_gate(g.transpose(perm), tap)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        compute, xc = self.prepare(x)  # checked (BatchNorm counts in training); half computed in float32
        outs = []
        for branch, tap, perm in self._branches:
            z = xc.transpose(perm)  # each permutation is its own inverse
            g = getattr(self, branch)(z, compute)
            self._expose_rotated(g, tap, perm)
            outs.append((z * expand_gate(g, z)).transpose(perm))
        total = outs[0]
        for out in outs[1:]:
            total = total + out
        # a tensor factor: a Python 1/3 would be a float32 attribute in a static graph (_ops.scalar)
        return self.finish(total * scalar(1.0 / len(outs), total), x, compute)
