"""Global Context attention in Flax: GlobalContext ('gc') and GlobalContextAdd ('gca'). The math and its
documentation: :class:`attn_core.GlobalContextConfig`. NHWC: the context is (N, 1, 1, C)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from attn_core import GlobalContextAddConfig, GlobalContextConfig
from attn_core.global_context import LAYER_NORM_EPS

from ._base import AttentionModule
from ._layers import pointwise
from ._ops import ACTIVATIONS


class ChannelLayerNorm(nn.Module):
    """timm's ``LayerNorm2d`` on (N, 1, 1, rd): normalised over the channels with ``params/scale``, ``params/bias``
    (the names ``attn_core.native_location`` gives the norm's weight and bias), the two-pass variance, eps 1e-6."""

    dtype: Any

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        features = (h.shape[-1],)
        scale = self.param("scale", nn.initializers.ones, features, jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, features, jnp.float32)
        centred = h - jnp.mean(h, axis=-1, keepdims=True)
        var = jnp.mean(centred * centred, axis=-1, keepdims=True)
        return centred * jax.lax.rsqrt(var + LAYER_NORM_EPS) * scale.astype(self.dtype) + bias.astype(self.dtype)


class ContextMlp(nn.Module):
    """timm's ``ConvMlp`` with ``LayerNorm2d``: ``fc2(act(norm(fc1(context))))``; ``zero_last``: ``fc2``'s kernel
    starts at zero (timm's ``mlp_add``)."""

    channels: int
    hidden: int
    act_layer: str
    zero_last: bool
    dtype: Any

    @nn.compact
    def __call__(self, v: jax.Array) -> jax.Array:
        h = ChannelLayerNorm(self.dtype, name="norm")(pointwise(self.hidden, True, "fc1", self.dtype)(v))
        init = nn.initializers.zeros_init() if self.zero_last else nn.linear.default_kernel_init
        return pointwise(self.channels, True, "fc2", self.dtype, kernel_init=init)(ACTIVATIONS[self.act_layer](h))


class GlobalContext(AttentionModule):
    __doc__ = GlobalContextConfig.__doc__
    _config_cls = GlobalContextConfig

    channels: int
    use_attn: bool = True
    fuse_add: bool = False
    fuse_scale: bool = True
    init_last_zero: bool = False
    rd_ratio: float = 1.0 / 8
    rd_channels: int | None = None
    rd_divisor: int | None = 1
    act_layer: str = "relu"
    gate_layer: str = "sigmoid"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg, dt, xc = self.prepare(x, train)
        n, h, w, c = x.shape
        if cfg.use_attn:
            # timm's initialisation: Kaiming-normal, fan in, ReLU gain
            logits = pointwise(1, True, "conv_attn", dt,
                               kernel_init=nn.initializers.variance_scaling(2.0, "fan_in", "normal"))(xc)
            attn = jax.nn.softmax(logits.reshape(n, h * w), axis=-1)
            context = jnp.einsum("npc,np->nc", xc.reshape(n, h * w, c), attn).reshape(n, 1, 1, c)
        else:
            context = jnp.mean(xc, axis=(1, 2), keepdims=True)
        y = xc
        if cfg.fuse_scale:
            m = ContextMlp(cfg.channels, cfg.hidden, cfg.act_layer, False, dt, name="mlp_scale")
            y = y * self.expose_gate(ACTIVATIONS[cfg.gate_layer](m(context)).astype(dt))
        if cfg.fuse_add:
            y = y + ContextMlp(cfg.channels, cfg.hidden, cfg.act_layer, True, dt, name="mlp_add")(context).astype(dt)
        return y.astype(x.dtype)


class GlobalContextAdd(GlobalContext):
    __doc__ = GlobalContextAddConfig.__doc__
    _config_cls = GlobalContextAddConfig

    fuse_add: bool = True
    fuse_scale: bool = False
