"""Polarized Self-Attention in PyTorch. The math and its documentation: :class:`attn_core.PSAConfig`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attn_core import PSAConfig

from ._base import AttentionModule


def _pointwise(c_in: int, c_out: int, bias: bool) -> nn.Conv2d:
    conv = nn.Conv2d(c_in, c_out, 1, bias=bias)
    nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")  # the authors' initialisation
    return conv


class PSA(AttentionModule):
    __doc__ = PSAConfig.__doc__

    def __init__(self, channels: int, mode: str = "parallel", channel_up: str = "linear", channel_norm: bool = False,
                 spatial_softmax: str = "context", ratio: int = 4, ln_eps: float = 1e-5, bias: bool = False) -> None:
        super().__init__()
        self.config = cfg = PSAConfig(channels, mode, channel_up, channel_norm, spatial_softmax, ratio, ln_eps,
                                          bias)
        self.add_gate("psa_channel_gate", "psa_spatial_gate")
        c, ci, cr = cfg.channels, cfg.inter_channels, cfg.up_channels
        self.conv_q_right = _pointwise(c, 1, cfg.bias)
        self.conv_v_right = _pointwise(c, ci, cfg.bias)
        self.conv_up: nn.Module
        if cfg.channel_up == "linear":
            self.conv_up = nn.Conv2d(ci, c, 1, bias=cfg.bias)
        else:  # PSA_s's names: conv_up.0, conv_up.1 (LayerNorm over the Cr channels), conv_up.3
            self.conv_up = nn.Sequential(nn.Conv2d(ci, cr, 1), nn.LayerNorm([cr, 1, 1], eps=cfg.ln_eps), nn.ReLU(),
                                         nn.Conv2d(cr, c, 1))
        self.ln = nn.LayerNorm(c, eps=cfg.ln_eps) if cfg.channel_norm else None
        self.conv_q_left = _pointwise(c, ci, cfg.bias)
        self.conv_v_left = _pointwise(c, ci, cfg.bias)

    @staticmethod
    def _conv(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        bias = None if layer.bias is None else layer.bias.to(x.dtype)
        return F.conv2d(x, layer.weight.to(x.dtype), bias)

    def _channel_logits(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        v = self._conv(self.conv_v_right, x).flatten(2)
        q = torch.softmax(self._conv(self.conv_q_right, x).flatten(2), dim=2)
        ctx = (v @ q.transpose(1, 2)).unsqueeze(-1)  # (N, Ci, 1, 1)
        if self.config.channel_up == "bottleneck":
            first, norm, _, last = self.conv_up
            hidden = F.layer_norm(self._conv(first, ctx), norm.normalized_shape, norm.weight.to(x.dtype),
                                  norm.bias.to(x.dtype), norm.eps)
            return self._conv(last, F.relu(hidden))
        z = self._conv(self.conv_up, ctx)
        if self.ln is not None:
            z = F.layer_norm(z.flatten(1), self.ln.normalized_shape, self.ln.weight.to(x.dtype),
                             self.ln.bias.to(x.dtype), self.ln.eps)[:, :, None, None]
        return z

    def _spatial_gate(self, s: torch.Tensor) -> torch.Tensor:
        n, _, h, w = s.shape
        q = self._conv(self.conv_q_left, s).mean((2, 3)).unsqueeze(1)  # (N, 1, Ci)
        v = self._conv(self.conv_v_left, s).flatten(2)  # (N, Ci, HW)
        kind = self.config.spatial_softmax
        if kind == "query":
            logits = torch.softmax(q, dim=2) @ v
        elif kind == "context":
            logits = torch.softmax(q @ v, dim=2)
        else:
            logits = q @ torch.softmax(v, dim=2)
        return torch.sigmoid(logits.view(n, 1, h, w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compute, xc = self.prepare(x)
        x_ch = xc * self.expose_gate(torch.sigmoid(self._channel_logits(xc)), "psa_channel_gate")
        if self.config.mode == "parallel":
            y = x_ch + xc * self.expose_gate(self._spatial_gate(xc), "psa_spatial_gate")
        else:
            y = x_ch * self.expose_gate(self._spatial_gate(x_ch), "psa_spatial_gate")
        return self.finish(y, x, compute)
