"""``create_model(name, **kwargs)`` for the torch backend: names and configs from ``attn_core.models``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from torch import nn

from attn_core import AttentionConfig
from attn_core.models import (
    ECAMobileNetV2Config,
    ResNetConfig,
    SEDenseNetConfig,
    TowerNetConfig,
    build_model,
    create_model_config,
    model_factories,
)

from .densenet import SEDenseNet
from .mobilenetv2 import ECAMobileNetV2
from .resnet import ResNet
from .towernet import TowerNet

__all__ = ["MODELS", "MODEL_CLASSES", "create_model", "model_from_config"]

# config class -> the module class built from it
MODEL_CLASSES: Mapping[type[AttentionConfig], type[nn.Module]] = MappingProxyType({
    ResNetConfig: ResNet, TowerNetConfig: TowerNet, ECAMobileNetV2Config: ECAMobileNetV2,
    SEDenseNetConfig: SEDenseNet})


def model_from_config(config: AttentionConfig) -> nn.Module:
    """The torch module of a model config (``ResNetConfig`` -> :class:`ResNet`)."""
    return build_model(config, MODEL_CLASSES, "torch")


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name`` (see ``attn_core.models.MODEL_CONFIGS``); ``kwargs`` override fields
    of its config, e.g. ``create_model('seresnet50', num_classes=10)``. An unknown name lists the known ones."""
    return model_from_config(create_model_config(name, **kwargs))


# registered name -> factory, for the registered models whose config this backend builds
MODELS: Mapping[str, Callable[..., nn.Module]] = model_factories(create_model, MODEL_CLASSES)
