"""Global Context attention in Paddle: GlobalContext ('gc') and GlobalContextAdd ('gca'). The math and its
documentation: :class:`attn_core.GlobalContextConfig`."""

from __future__ import annotations

from typing import Any, ClassVar

import paddle
import paddle.nn.functional as F
from paddle import nn

from attn_core import GlobalContextAddConfig, GlobalContextConfig
from attn_core.global_context import LAYER_NORM_EPS

from ._base import AttentionModule
from ._ops import ACTIVATIONS, conv_as, mean_hw, scalar


class ContextMlp(nn.Layer):
    """timm's ``ConvMlp`` with ``LayerNorm2d``: 1x1 convolutions ``fc1``, ``fc2`` with biases, ``norm`` over the
    hidden channels (its ``weight`` and ``bias``), computed from ops so that eps is exact in float64 (Paddle's
    layer_norm takes it as a float32 attribute)."""

    def __init__(self, channels: int, hidden: int, zero_last: bool = False) -> None:
        super().__init__()
        self.fc1 = nn.Conv2D(channels, hidden, 1)
        self.norm = nn.LayerNorm(hidden, epsilon=LAYER_NORM_EPS)
        zero = paddle.ParamAttr(initializer=nn.initializer.Constant(0.0)) if zero_last else None
        self.fc2 = nn.Conv2D(hidden, channels, 1, weight_attr=zero)

    def run(self, v: paddle.Tensor, act: Any, dtype: Any) -> paddle.Tensor:
        """``fc2(act(norm(fc1(v))))`` of the pooled context ``v`` (N, C, 1, 1), in ``dtype`` (None: ``v``'s)."""
        h = conv_as(self.fc1, v, dtype)
        centred = h - h.mean(axis=1, keepdim=True)
        var = (centred * centred).mean(axis=1, keepdim=True)
        h = centred * paddle.rsqrt(var + scalar(LAYER_NORM_EPS, var))
        dt = h.dtype
        h = h * self.norm.weight.astype(dt).reshape([1, -1, 1, 1]) + self.norm.bias.astype(dt).reshape([1, -1, 1, 1])
        return conv_as(self.fc2, act(h), dtype)


class GlobalContext(AttentionModule):
    __doc__ = GlobalContextConfig.__doc__
    _config_cls: ClassVar[type[GlobalContextConfig]] = GlobalContextConfig

    def __init__(self, channels: int, use_attn: bool = True, fuse_add: bool = False, fuse_scale: bool = True,
                 init_last_zero: bool = False, rd_ratio: float = 1.0 / 8, rd_channels: int | None = None,
                 rd_divisor: int | None = 1, act_layer: str = "relu", gate_layer: str = "sigmoid") -> None:
        super().__init__()
        self.config = cfg = self._config_cls(channels, use_attn, fuse_add, fuse_scale, init_last_zero, rd_ratio,
                                             rd_channels, rd_divisor, act_layer, gate_layer)
        # timm's initialisation: conv_attn Kaiming-normal (fan in, ReLU gain), mlp_add.fc2.weight zero
        kaiming = paddle.ParamAttr(initializer=nn.initializer.KaimingNormal(nonlinearity="relu"))
        self.conv_attn = nn.Conv2D(cfg.channels, 1, 1, weight_attr=kaiming) if cfg.use_attn else None
        self.mlp_add = ContextMlp(cfg.channels, cfg.hidden, zero_last=True) if cfg.fuse_add else None
        self.mlp_scale = ContextMlp(cfg.channels, cfg.hidden) if cfg.fuse_scale else None
        self._act = ACTIVATIONS[cfg.act_layer]
        self._gate = ACTIVATIONS[cfg.gate_layer]
        if cfg.fuse_scale:  # the added context of fuse_add multiplies nothing: no gate
            self.add_gate()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        compute, xc = self.prepare(x)
        c = self.config.channels
        if self.conv_attn is not None:
            attn = F.softmax(conv_as(self.conv_attn, xc, compute).reshape([0, -1]), axis=-1)  # (N, H*W)
            context = paddle.bmm(xc.reshape([0, c, -1]), attn.unsqueeze(2)).reshape([0, c, 1, 1])
        else:
            context = mean_hw(xc)
        y = xc
        if self.mlp_scale is not None:
            y = y * self.expose_gate(self._gate(self.mlp_scale.run(context, self._act, compute)))
        if self.mlp_add is not None:
            y = y + self.mlp_add.run(context, self._act, compute)
        return self.finish(y, x, compute)


class GlobalContextAdd(GlobalContext):
    __doc__ = GlobalContextAddConfig.__doc__
    _config_cls = GlobalContextAddConfig

    def __init__(self, channels: int, use_attn: bool = True, fuse_add: bool = True, fuse_scale: bool = False,
                 init_last_zero: bool = False, rd_ratio: float = 1.0 / 8, rd_channels: int | None = None,
                 rd_divisor: int | None = 1, act_layer: str = "relu", gate_layer: str = "sigmoid") -> None:
        super().__init__(channels, use_attn, fuse_add, fuse_scale, init_last_zero, rd_ratio, rd_channels,
                         rd_divisor, act_layer, gate_layer)
