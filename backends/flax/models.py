"""``create_model(name, **kwargs)`` for the Flax backend; names and configs from :mod:`attn_core.models`."""

from __future__ import annotations

from functools import partial
from types import MappingProxyType
from typing import Any, Callable, Mapping

import flax.linen as nn

from attn_core import AttentionConfig, ConfigError
from attn_core.models import (MODEL_CONFIGS, ECAMobileNetV2Config, ResNetConfig, SEDenseNetConfig, TowerNetConfig,
                               create_model_config)

from .densenet import SEDenseNet
from .mobilenetv2 import ECAMobileNetV2
from .resnet import ResNet
from .towernet import TowerNet

__all__ = ["MODELS", "MODEL_CLASSES", "create_model", "model_from_config"]

# model config class -> the Flax module built from it
MODEL_CLASSES: Mapping[type[AttentionConfig], type[nn.Module]] = MappingProxyType({
    ResNetConfig: ResNet, TowerNetConfig: TowerNet, ECAMobileNetV2Config: ECAMobileNetV2,
    SEDenseNetConfig: SEDenseNet})


def model_from_config(config: AttentionConfig) -> nn.Module:
    """The Flax module of a model config (``ResNetConfig`` -> :class:`ResNet`)."""
    cls = MODEL_CLASSES.get(type(config))
    if cls is None:
        raise ConfigError(f"create_model: the Flax backend has no model for {type(config).__name__}; it builds "
                          f"{', '.join(c.__name__ for c in MODEL_CLASSES)}")
    return cls.from_config(config)  # type: ignore[attr-defined]


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """The model registered as ``name`` (see ``attn_core.models.MODEL_CONFIGS``); ``kwargs`` override its config
    fields (``num_classes=10``). Initialise and call it as any linen module (NHWC input)."""
    return model_from_config(create_model_config(name, **kwargs))


# registered name -> a factory taking the config overrides, for the models this backend implements
MODELS: Mapping[str, Callable[..., nn.Module]] = MappingProxyType({
    name: partial(create_model, name) for name in MODEL_CONFIGS if type(MODEL_CONFIGS[name]()) in MODEL_CLASSES})
