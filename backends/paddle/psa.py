"""Polarized Self-Attention in Paddle. The math and its documentation: :class:`attn_core.PSAConfig`."""

from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle import nn

from attn_core import PSAConfig

from ._base import AttentionModule
from ._ops import conv_as, expand_gate, scalar


def _pointwise(c_in: int, c_out: int, bias: bool) -> nn.Conv2D:
    kaiming = paddle.ParamAttr(initializer=nn.initializer.KaimingNormal(nonlinearity="relu"))  # the authors' init
    return nn.Conv2D(c_in, c_out, 1, weight_attr=kaiming, bias_attr=None if bias else False)


class _Affine(nn.Layer):
    """The affine of torch's ``nn.LayerNorm(shape)``, ``weight`` and ``bias`` of that shape (Paddle's LayerNorm
    flattens them), applied by :func:`_layer_norm`."""

    def __init__(self, shape: list[int]) -> None:
        super().__init__()
        self.weight = self.create_parameter(shape, default_initializer=nn.initializer.Constant(1.0))
        self.bias = self.create_parameter(shape, default_initializer=nn.initializer.Constant(0.0))


def _layer_norm(h: paddle.Tensor, weight: paddle.Tensor, bias: paddle.Tensor, eps: float) -> paddle.Tensor:
    """LayerNorm of ``h`` (N, C, 1, 1) over C from ops, so that eps is exact in float64 (Paddle's layer_norm takes it
    as a float32 attribute); ``weight``, ``bias`` broadcast against (C, 1, 1)."""
    centred = h - h.mean(axis=1, keepdim=True)
    var = (centred * centred).mean(axis=1, keepdim=True)
    dt = h.dtype
    return centred * paddle.rsqrt(var + scalar(eps, var)) * weight.astype(dt) + bias.astype(dt)


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
        self.conv_up: nn.Layer
        if cfg.channel_up == "linear":
            self.conv_up = nn.Conv2D(ci, c, 1, bias_attr=None if cfg.bias else False)
        else:  # PSA_s's names: conv_up.0, conv_up.1 (LayerNorm over the Cr channels), conv_up.3
            self.conv_up = nn.Sequential(nn.Conv2D(ci, cr, 1), _Affine([cr, 1, 1]), nn.ReLU(), nn.Conv2D(cr, c, 1))
        self.ln = _Affine([c]) if cfg.channel_norm else None
        self.conv_q_left = _pointwise(c, ci, cfg.bias)
        self.conv_v_left = _pointwise(c, ci, cfg.bias)

    def _channel_logits(self, x: paddle.Tensor, dt: object) -> paddle.Tensor:
        cfg = self.config
        v = conv_as(self.conv_v_right, x, dt).flatten(2)  # (N, Ci, HW)
        q = F.softmax(conv_as(self.conv_q_right, x, dt).flatten(2), axis=2)  # (N, 1, HW)
        ctx = paddle.matmul(v, q, transpose_y=True).unsqueeze(-1)  # (N, Ci, 1, 1)
        if cfg.channel_up == "bottleneck":
            first, norm, _, last = self.conv_up[0], self.conv_up[1], self.conv_up[2], self.conv_up[3]
            hidden = _layer_norm(conv_as(first, ctx, dt), norm.weight, norm.bias, cfg.ln_eps)
            return conv_as(last, F.relu(hidden), dt)
        z = conv_as(self.conv_up, ctx, dt)
        if self.ln is not None:
            z = _layer_norm(z, self.ln.weight.reshape([-1, 1, 1]), self.ln.bias.reshape([-1, 1, 1]), cfg.ln_eps)
        return z

    def _spatial_gate(self, s: paddle.Tensor, dt: object) -> paddle.Tensor:
        h, w = s.shape[2], s.shape[3]
        q = conv_as(self.conv_q_left, s, dt).mean(axis=[2, 3]).unsqueeze(1)  # (N, 1, Ci)
        v = conv_as(self.conv_v_left, s, dt).flatten(2)  # (N, Ci, HW)
        kind = self.config.spatial_softmax
        if kind == "query":
            logits = paddle.matmul(F.softmax(q, axis=2), v)
        elif kind == "context":
            logits = F.softmax(paddle.matmul(q, v), axis=2)
        else:
            logits = paddle.matmul(q, F.softmax(v, axis=2))
        return F.sigmoid(logits.reshape([-1, 1, h, w]))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        compute, xc = self.prepare(x)
        dt = xc.dtype
        x_ch = xc * self.expose_gate(F.sigmoid(self._channel_logits(xc, dt)), "psa_channel_gate")
        if self.config.mode == "parallel":
            y = x_ch + xc * expand_gate(self.expose_gate(self._spatial_gate(xc, dt), "psa_spatial_gate"), xc)
        else:
            y = x_ch * expand_gate(self.expose_gate(self._spatial_gate(x_ch, dt), "psa_spatial_gate"), x_ch)
        return self.finish(y, x, compute)
