"""Triplet attention in PyTorch. The math and its documentation: :class:`attn_core.TripletAttentionConfig`."""

from __future__ import annotations

import torch
from torch import nn

from attn_core import TripletAttentionConfig, bn_momentum_for

from ._base import AttentionModule
from ._ops import batch_norm_as, conv_as, mean_c


class BasicConv(nn.Module):
    """The authors' ``BasicConv`` as triplet attention builds it: a 2 -> 1 convolution without bias, then a
    BatchNorm of one channel (their ``state_dict`` names ``conv``, ``bn``)."""

    def __init__(self, kernel_size: int, bn_eps: float, bn_momentum: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1, eps=bn_eps, momentum=bn_momentum_for("torch", bn_momentum))

    def forward(self, z: torch.Tensor, compute: torch.dtype | None = None) -> torch.Tensor:
        return batch_norm_as(self.bn, conv_as(self.conv, z, compute), compute)


class AttentionGate(nn.Module):
    """One branch: the gate ``sigmoid(spatial(ZPool(z)))`` of a (rotated) input ``z`` (N, A, B, D), (N, 1, B, D).
    It returns the gate, which the caller multiplies in (so that ``conformance.check`` can tap it)."""

    def __init__(self, kernel_size: int, max_first: bool, bn_eps: float, bn_momentum: float) -> None:
        super().__init__()
        self.spatial = BasicConv(kernel_size, bn_eps, bn_momentum)
        self._max_first = max_first

    def forward(self, z: torch.Tensor, compute: torch.dtype | None = None) -> torch.Tensor:
        mx, avg = z.amax(1, keepdim=True), mean_c(z)
        return torch.sigmoid(self.spatial(torch.cat([mx, avg] if self._max_first else [avg, mx], 1), compute))


class TripletAttention(AttentionModule):
    __doc__ = TripletAttentionConfig.__doc__

    def __init__(self, channels: int | None = None, kernel_size: int = 7, no_spatial: bool = False,
                 pool_order: str = "max_mean", bn_eps: float = 1e-5, bn_momentum: float = 0.01) -> None:
        super().__init__()
        self.config = cfg = TripletAttentionConfig(channels, kernel_size, no_spatial, pool_order, bn_eps,
                                                   bn_momentum)
        for branch, _, _ in cfg.branches:
            self.add_module(branch, AttentionGate(cfg.kernel_size, cfg.pool_order == "max_mean", cfg.bn_eps,
                                                  cfg.bn_momentum))
        self._branches = [(branch, tap, perm) for branch, tap, perm in cfg.branches]
        self.add_gate(*(tap for _, tap, _ in cfg.branches))

    def _expose_rotated(self, g: torch.Tensor, tap: str, perm: tuple[int, ...]) -> None:
        """A branch's gate ``g``, in its rotation of the input, turned back to the input's axes (each rotation is
        its own inverse) as the gate ``tap``; only while a hook waits for it."""
        if self.gate_hooked(tap):
            self.expose_gate(g.permute(perm), tap)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compute, xc = self.prepare(x)  # checked (BatchNorm counts in training); half computed in float32
        outs = []
        for branch, tap, perm in self._branches:
            z = xc.permute(perm)  # each permutation is its own inverse
            g = getattr(self, branch)(z, compute)
            self._expose_rotated(g, tap, perm)
            outs.append((z * g).permute(perm))
        y = sum(outs[1:], outs[0]) * (1.0 / len(outs))
        return self.finish(y, x, compute)
