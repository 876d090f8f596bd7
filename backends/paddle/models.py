"""``create_model(name, **kwargs)`` for the Paddle backend: names and configs from ``attn_core.models``."""

from __future__ import annotations

from functools import partial
from types import MappingProxyType
from typing import Any, Callable, Mapping

from paddle import nn

from attn_core import AttentionConfig, ConfigError
from attn_core.models import (MODEL_CONFIGS, ECAMobileNetV2Config, ResNetConfig, SEDenseNetConfig, TowerNetConfig,
                               create_model_config)

from .densenet import SEDenseNet
from .mobilenetv2 import ECAMobileNetV2
from .resnet import ResNet
from .towernet import TowerNet

__all__ = ["MODELS", "MODEL_CLASSES", "create_model", "model_from_config"]

# config class -> the module class built from it
MODEL_CLASSES: Mapping[type[AttentionConfig], type[nn.Layer]] = MappingProxyType({
    ResNetConfig: ResNet, TowerNetConfig: TowerNet, ECAMobileNetV2Config: ECAMobileNetV2,
    SEDenseNetConfig: SEDenseNet})


def model_from_config(config: AttentionConfig) -> nn.Layer:
    """The Paddle module of a model config (``ResNetConfig`` -> :class:`ResNet`)."""
    cls = MODEL_CLASSES.get(type(config))
    if cls is None:
        raise ConfigError(f"create_model: the Paddle backend has no model for {type(config).__name__}; it builds "
                          f"{', '.join(c.__name__ for c in MODEL_CLASSES)}")
    return cls.from_config(config)  # type: ignore[attr-defined]


def create_model(name: str, **kwargs: Any) -> nn.Layer:
    """Build the model registered as ``name`` (see ``attn_core.models.MODEL_CONFIGS``); ``kwargs`` override fields
    of its config, e.g. ``create_model('seresnet50', num_classes=10)``. An unknown name lists the known ones."""
    return model_from_config(create_model_config(name, **kwargs))


def _factory(name: str) -> Callable[..., nn.Layer]:
    def factory(**kwargs: Any) -> nn.Layer:
        return create_model(name, **kwargs)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"``create_model({name!r}, **kwargs)``."
    return factory


def _config_class(name: str) -> type:
    """The config class a registered name builds (read off the registry's partial, else from a default config)."""
    factory = MODEL_CONFIGS[name]
    target = factory.func if isinstance(factory, partial) else factory
    return target if isinstance(target, type) else type(factory())


# registered name -> factory, for the registered models whose config this backend builds
MODELS: Mapping[str, Callable[..., nn.Layer]] = MappingProxyType(
    {name: _factory(name) for name in MODEL_CONFIGS if _config_class(name) in MODEL_CLASSES})
