"""Gated Channel Transformation in Paddle. The math and its documentation: :class:`attn_core.GCTConfig`."""

from __future__ import annotations

import paddle
from paddle import nn

from attn_core import GCTConfig

from ._base import AttentionModule
from ._ops import scalar


class GCT(AttentionModule):
    __doc__ = GCTConfig.__doc__

    def __init__(self, channels: int, epsilon: float = 1e-5, mode: str = "l2", after_relu: bool = False,
                 channel_eps: str = "mean") -> None:
        super().__init__()
        self.add_gate()
        self.config = cfg = GCTConfig(channels, epsilon, mode, after_relu, channel_eps)
        shape = [1, cfg.channels, 1, 1]
        # the authors' initialisation: alpha 1, gamma 0, beta 0, an identity gate of 1
        self.alpha = self.create_parameter(shape, default_initializer=nn.initializer.Constant(1.0))
        self.gamma = self.create_parameter(shape, default_initializer=nn.initializer.Constant(0.0))
        self.beta = self.create_parameter(shape, default_initializer=nn.initializer.Constant(0.0))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        compute, xc = self.prepare(x)
        cfg = self.config
        alpha, gamma, beta = (p.astype(xc.dtype) for p in (self.alpha, self.gamma, self.beta))
        # epsilons as tensors of the input's dtype: a Python float becomes a float32 attribute under to_static
        eps, norm_eps = scalar(float(cfg.epsilon), xc), scalar(cfg.norm_epsilon, xc)
        if cfg.mode == "l2":
            emb = paddle.sqrt((xc * xc).sum(axis=[2, 3], keepdim=True) + eps) * alpha
            norm = gamma / paddle.sqrt((emb * emb).mean(axis=1, keepdim=True) + norm_eps)
        else:
            emb = (xc if cfg.after_relu else paddle.abs(xc)).sum(axis=[2, 3], keepdim=True) * alpha
            norm = gamma / (paddle.abs(emb).mean(axis=1, keepdim=True) + norm_eps)
        y = xc * self.expose_gate(1.0 + paddle.tanh(emb * norm + beta))
        return self.finish(y, x, compute)
