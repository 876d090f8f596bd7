"""The layers of the Flax modules: the spec-to-layer builder of the models (a layer spec of
:mod:`attn_core.models.layers` or an attention config becomes a Flax module under its canonical name), and the
convolutions of the attention modules."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from attn_core import CONFIGS, AttentionConfig, bn_momentum_for
from attn_core.models import BatchNorm, Conv, Linear

from ._base import AttentionModule
from ._norm import BatchNorm as _BatchNorm
from ._ops import spatial_conv

__all__ = ["build_layer", "build_attention", "Sequential", "batch_norm", "conv", "pointwise", "SpatialConv"]

_REGISTRY_KEY = {cls: key for key, cls in CONFIGS.items()}  # config class -> attention registry name


def build_layer(spec: Any, name: str, train: bool = False) -> nn.Module:
    """The Flax layer of one layer spec of :mod:`attn_core.models.layers`, as submodule ``name`` of the module whose
    compact method calls this; ``train``: a BatchNorm normalises with the batch's statistics and updates its running
    ones (momentum converted from torch's convention, never Flax's default 0.99). Convolutions have HWIO kernels and
    explicit symmetric zero padding (never 'SAME')."""
    if isinstance(spec, Conv):
        return conv(spec.out_channels, spec.kernel_size, name, stride=spec.stride, padding=spec.padding,
                    groups=spec.groups, bias=spec.bias)
    if isinstance(spec, BatchNorm):
        return batch_norm(train, spec.eps, spec.momentum, name)
    if isinstance(spec, Linear):
        return nn.Dense(spec.out_features, use_bias=spec.bias, name=name)
    raise TypeError(f"no Flax layer for the layer spec {type(spec).__name__}")


def build_attention(config: AttentionConfig, name: str) -> AttentionModule:
    """The attention module of this backend for an attention config (through ``ATTN_LAYERS``), as submodule
    ``name``."""
    from .registry import ATTN_LAYERS  # imported here: the registry's modules import this file's convolutions

    return ATTN_LAYERS[_REGISTRY_KEY[type(config)]].from_config(config, name=name)


_ACTIVATIONS = {"relu": jax.nn.relu, "relu6": jax.nn.relu6}  # the parameter-free items of the models' layer lists


class Sequential(nn.Module):
    """Named items applied in order, as torch's nested ``nn.Sequential``: ``items`` are ``(dotted name relative to
    this module, spec)``; items sharing a first name segment form a nested container of that name (``'0.0'``,
    ``'0.1'`` -> ``'0'`` holding ``'0'``, ``'1'``). Layer specs and attention configs are built with
    :func:`build_layer` and :func:`build_attention`, ``'relu'`` and ``'relu6'`` applied; a model's own specs are
    built by a subclass's :meth:`item`. ``bn_eps`` and ``bn_momentum`` are the model's, for the blocks it builds."""

    items: tuple[tuple[str, Any], ...]
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        groups: dict[str, list[tuple[str, Any]]] = {}
        for name, spec in self.items:
            head, _, rest = name.partition(".")
            groups.setdefault(head, []).append((rest, spec))
        for head, group in groups.items():
            if len(group) == 1 and group[0][0] == "":
                x = self.item(group[0][1], head, x, train)
            else:
                x = type(self)(tuple(group), self.bn_eps, self.bn_momentum, name=head)(x, train)
        return x

    def item(self, spec: Any, name: str, x: jax.Array, train: bool) -> jax.Array:
        """``x`` through the item ``spec``, as submodule ``name`` where it has variables."""
        if isinstance(spec, (Conv, BatchNorm, Linear)):
            return build_layer(spec, name, train)(x)
        if isinstance(spec, AttentionConfig):
            return build_attention(spec, name)(x, train)
        if isinstance(spec, str) and spec in _ACTIVATIONS:
            return _ACTIVATIONS[spec](x)
        raise TypeError(f"{type(self).__name__}: no Flax layer for {spec!r} ({name!r})")


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (v[0], v[1])


def conv(features: int, kernel_size: int | tuple[int, int], name: str, *, stride: int = 1,
         padding: int | tuple[int, int] = 0, dilation: int = 1, groups: int = 1, bias: bool = True,
         dtype: Any = None, **kwargs: Any) -> nn.Conv:
    """A 2-D convolution as torch's ``nn.Conv2d`` has it: explicit symmetric zero padding (never 'SAME'), ``padding``
    an int or (along H, along W), computing in ``dtype`` (None: its inputs' dtype); ``kwargs`` are ``nn.Conv``'s own
    (``kernel_init``)."""
    ph, pw = _pair(padding)
    return nn.Conv(features, _pair(kernel_size), strides=_pair(stride), padding=((ph, ph), (pw, pw)),
                   kernel_dilation=_pair(dilation), feature_group_count=groups, use_bias=bias, dtype=dtype, name=name,
                   **kwargs)


def pointwise(features: int, bias: bool, name: str, dtype: Any = None, groups: int = 1, **kwargs: Any) -> nn.Conv:
    """A 1x1 convolution (the SE / channel-attention MLP layers), computing in ``dtype`` (None: its inputs' dtype)."""
    return conv(features, 1, name, groups=groups, bias=bias, dtype=dtype, **kwargs)


def batch_norm(train: bool, eps: float, momentum: float, name: str) -> _BatchNorm:
    """BatchNorm over the channels with torch's ``eps`` and ``momentum`` (converted from torch's convention, never
    Flax's default 0.99); ``train``: it normalises with the batch's statistics and updates its running ones."""
    return _BatchNorm(use_running_average=not train, momentum=bn_momentum_for("flax", momentum), epsilon=eps,
                      name=name)


class SpatialConv(nn.Module):
    """The parameters of ``nn.Conv(1, (k, k), padding k // 2)`` (``kernel`` (k, k, 2, 1), optional ``bias`` (1,);
    the same initialisers), applied with :func:`spatial_conv` in ``dtype``."""

    kernel_size: int
    use_bias: bool
    dtype: Any = None

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        k = self.kernel_size
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, z.shape[-1], 1), jnp.float32)
        dt = self.dtype or z.dtype
        y = spatial_conv(z.astype(dt), kernel.astype(dt))
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros_init(), (1,), jnp.float32).astype(dt)
        return y
