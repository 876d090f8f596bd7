"""The spec-to-layer builder of the Paddle models: a layer spec of :mod:`attn_core.models.layers` or an attention
config becomes a Paddle layer, registered under its canonical dotted name."""

from __future__ import annotations

from typing import Any

from paddle import nn

from attn_core import CONFIGS, AttentionConfig, bn_momentum_for
from attn_core.models import BatchNorm, Conv, Linear

from ._base import AttentionModule
from ._norm import BatchNorm2D
from .registry import ATTN_LAYERS

__all__ = ["build_layer", "build_attention", "attach"]

_REGISTRY_KEY = {cls: key for key, cls in CONFIGS.items()}  # config class -> attention registry name


def build_layer(spec: Any) -> nn.Layer:
    """The Paddle layer of one layer spec of :mod:`attn_core.models.layers`."""
    if isinstance(spec, Conv):
        return nn.Conv2D(spec.in_channels, spec.out_channels, spec.kernel_size, stride=spec.stride,
                         padding=spec.padding, groups=spec.groups, bias_attr=None if spec.bias else False)
    if isinstance(spec, BatchNorm):
        return BatchNorm2D(spec.channels, momentum=bn_momentum_for("paddle", spec.momentum), epsilon=spec.eps)
    if isinstance(spec, Linear):
        return nn.Linear(spec.in_features, spec.out_features, bias_attr=None if spec.bias else False)
    raise TypeError(f"no Paddle layer for the layer spec {type(spec).__name__}")


def build_attention(config: AttentionConfig) -> AttentionModule:
    """The attention module of this backend for an attention config (through ``ATTN_LAYERS``)."""
    return ATTN_LAYERS[_REGISTRY_KEY[type(config)]].from_config(config)


def attach(parent: nn.Layer, dotted: str, layer: nn.Layer) -> None:
    """Register ``layer`` under the dotted name (``'downsample.0'`` makes ``downsample`` an ``nn.Sequential``)."""
    *path, leaf = dotted.split(".")
    for part in path:
        child = getattr(parent, part, None)
        if child is None:
            child = nn.Sequential()
            parent.add_sublayer(part, child)
        parent = child
    parent.add_sublayer(leaf, layer)
