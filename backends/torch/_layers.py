"""The spec-to-layer builder of the torch models: a layer spec of :mod:`attn_core.models.layers` or an attention
config becomes a torch module, registered under its canonical dotted name."""

from __future__ import annotations

from typing import Any

from torch import nn

from attn_core import CONFIGS, AttentionConfig, bn_momentum_for
from attn_core.models import BatchNorm, Conv, Linear

from ._base import AttentionModule
from ._norm import BatchNorm2d
from .registry import ATTN_LAYERS

__all__ = ["build_layer", "build_attention", "attach"]

_REGISTRY_KEY = {cls: key for key, cls in CONFIGS.items()}  # config class -> attention registry name


def build_layer(spec: Any) -> nn.Module:
    """The torch layer of one layer spec of :mod:`attn_core.models.layers`."""
    if isinstance(spec, Conv):
        return nn.Conv2d(spec.in_channels, spec.out_channels, spec.kernel_size, stride=spec.stride,
                         padding=spec.padding, groups=spec.groups, bias=spec.bias)
    if isinstance(spec, BatchNorm):
        return BatchNorm2d(spec.channels, eps=spec.eps, momentum=bn_momentum_for("torch", spec.momentum))
    if isinstance(spec, Linear):
        return nn.Linear(spec.in_features, spec.out_features, bias=spec.bias)
    raise TypeError(f"no torch layer for the layer spec {type(spec).__name__}")


def build_attention(config: AttentionConfig) -> AttentionModule:
    """The attention module of this backend for an attention config (through ``ATTN_LAYERS``)."""
    return ATTN_LAYERS[_REGISTRY_KEY[type(config)]].from_config(config)


def attach(parent: nn.Module, dotted: str, module: nn.Module) -> None:
    """Register ``module`` under the dotted name (``'downsample.0'`` makes ``downsample`` an ``nn.Sequential``)."""
    *path, leaf = dotted.split(".")
    for part in path:
        child = getattr(parent, part, None)
        if child is None:
            child = nn.Sequential()
            parent.add_module(part, child)
        parent = child
    parent.add_module(leaf, module)
