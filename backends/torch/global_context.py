"""Global Context attention in PyTorch: GlobalContext ('gc') and GlobalContextAdd ('gca'). The math and its
documentation: :class:`attn_core.GlobalContextConfig`."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from attn_core import GlobalContextAddConfig, GlobalContextConfig
from attn_core.global_context import LAYER_NORM_EPS

from ._base import AttentionModule
from ._ops import ACTIVATIONS, conv_as, pointwise_as


class ContextMlp(nn.Module):
    """timm's ``ConvMlp`` with ``LayerNorm2d``: 1x1 convolutions ``fc1``, ``fc2`` with biases, ``norm`` over the
    hidden channels (applied here to the pooled (N, rd) rows, where it is a plain LayerNorm)."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.norm = nn.LayerNorm(hidden, eps=LAYER_NORM_EPS)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def run(self, v: torch.Tensor, act: Any, dtype: torch.dtype | None) -> torch.Tensor:
        """``fc2(act(norm(fc1(v))))`` of pooled rows ``v`` (N, C), in ``dtype`` (None: ``v``'s)."""
        h = pointwise_as(self.fc1, v, dtype)
        # centred first, as the reference and the other backends: F.layer_norm's fused kernel leaves rounding noise
        # times 1 / sqrt(eps) where the norm sees one channel (rd = 1), whose exact output is 0
        centred = h - h.mean(1, keepdim=True)
        h = centred * torch.rsqrt((centred * centred).mean(1, keepdim=True) + self.norm.eps)
        dt = h.dtype
        h = h * self.norm.weight.to(dt) + self.norm.bias.to(dt)
        return pointwise_as(self.fc2, act(h), dtype)


class GlobalContext(AttentionModule):
    __doc__ = GlobalContextConfig.__doc__
    _config_cls: ClassVar[type[GlobalContextConfig]] = GlobalContextConfig

    def __init__(self, channels: int, use_attn: bool = True, fuse_add: bool = False, fuse_scale: bool = True,
                 init_last_zero: bool = False, rd_ratio: float = 1.0 / 8, rd_channels: int | None = None,
                 rd_divisor: int | None = 1, act_layer: str = "relu", gate_layer: str = "sigmoid") -> None:
        super().__init__()
        self.config = cfg = self._config_cls(channels, use_attn, fuse_add, fuse_scale, init_last_zero, rd_ratio,
                                             rd_channels, rd_divisor, act_layer, gate_layer)
        self.conv_attn = nn.Conv2d(cfg.channels, 1, 1) if cfg.use_attn else None
        self.mlp_add = ContextMlp(cfg.channels, cfg.hidden) if cfg.fuse_add else None
        self.mlp_scale = ContextMlp(cfg.channels, cfg.hidden) if cfg.fuse_scale else None
        self._act = ACTIVATIONS[cfg.act_layer]
        self._gate = ACTIVATIONS[cfg.gate_layer]
        if cfg.fuse_scale:  # the added context of fuse_add multiplies nothing: no gate
            self.add_gate()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """timm's initialisation: ``conv_attn.weight`` Kaiming-normal (fan in, ReLU gain), ``mlp_add.fc2.weight``
        zero (whatever ``init_last_zero`` says, as in timm); the rest torch's defaults."""
        if self.conv_attn is not None:
            nn.init.kaiming_normal_(self.conv_attn.weight, mode="fan_in", nonlinearity="relu")
        if self.mlp_add is not None:
            nn.init.zeros_(self.mlp_add.fc2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compute, xc = self.prepare(x)
        n, c = x.shape[0], x.shape[1]
        if self.conv_attn is not None:
            attn = torch.softmax(conv_as(self.conv_attn, xc, compute).reshape(n, -1), dim=-1)  # (N, H*W)
            context = torch.bmm(xc.reshape(n, c, -1), attn.unsqueeze(2)).reshape(n, c)
        else:
            context = xc.mean((2, 3))
        y = xc
        if self.mlp_scale is not None:
            y = y * self.expose_gate(self._gate(self.mlp_scale.run(context, self._act, compute))[:, :, None, None])
        if self.mlp_add is not None:
            y = y + self.mlp_add.run(context, self._act, compute)[:, :, None, None]
        return self.finish(y, x, compute)


class GlobalContextAdd(GlobalContext):
    __doc__ = GlobalContextAddConfig.__doc__
    _config_cls = GlobalContextAddConfig

    def __init__(self, channels: int, use_attn: bool = True, fuse_add: bool = True, fuse_scale: bool = False,
                 init_last_zero: bool = False, rd_ratio: float = 1.0 / 8, rd_channels: int | None = None,
                 rd_divisor: int | None = 1, act_layer: str = "relu", gate_layer: str = "sigmoid") -> None:
        super().__init__(channels, use_attn, fuse_add, fuse_scale, init_last_zero, rd_ratio, rd_channels,
                         rd_divisor, act_layer, gate_layer)
