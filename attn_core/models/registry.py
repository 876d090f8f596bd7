"""Registered model names -> their configs, and what every backend's ``create_model`` does with them apart from
naming its own module classes (:func:`build_model`, :func:`model_factories`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from types import MappingProxyType
from typing import Any, TypeVar

from ..cbam import CBAM_PRESETS
from ..gam import GAM_PRESETS
from ..spec import AttentionConfig, ConfigError
from .densenet import SEDenseNetConfig
from .mobilenetv2 import ECAMobileNetV2Config
from .resnet import ResNetConfig
from .towernet import TowerNetConfig

__all__ = ["MODEL_CONFIGS", "create_model_config", "build_model", "model_factories"]

Module = TypeVar("Module")

_DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3)),
           101: ("bottleneck", (3, 4, 23, 3))}
# attention prefix -> (attn_layer, attn_kwargs); CBAM in a ResNet follows timm's CbamModule (BatchNorm after the
# spatial convolution), SE and ECA their own defaults (timm's SEModule and EcaModule).
_ATTN = {"": (None, {}), "se": ("se", {}), "eca": ("eca", {}), "cbam": ("cbam", dict(CBAM_PRESETS["timm"])),
         "simam": ("simam", {})}

_table: dict[str, Callable[..., AttentionConfig]] = {}
for _prefix, (_attn, _kw) in _ATTN.items():
    for _depth, (_block, _layers) in _DEPTHS.items():
        _table[f"{_prefix}resnet{_depth}"] = partial(ResNetConfig, _block, _layers, attn_layer=_attn,
                                                     attn_kwargs=tuple(sorted(_kw.items())))

# the modules timm lacks, each in a ResNet-18 and a ResNet-50 at its default preset; shuffle attention's default 64
# groups need 128 channels, so the ResNet-18 (64 channels in its first stage) takes 16. GAM's full 7x7 convolutions
# (C -> C/4 -> C) would give a ResNet-50 529 M parameters: its ResNet-50 is the paper's, with GAM_PRESETS['grouped']
# (grouped convolutions and a channel shuffle: 158.9 M parameters)
_KWARGS = {("shuffle", 18): {"groups": 16}, ("gam", 50): dict(GAM_PRESETS["grouped"])}
for _key in ("srm", "gct", "shuffle", "triplet", "bam", "gam", "psa"):
    for _depth in (18, 50):
        _block, _layers = _DEPTHS[_depth]
        _kw = _KWARGS.get((_key, _depth), {})
        _table[f"{_key}resnet{_depth}"] = partial(ResNetConfig, _block, _layers, attn_layer=_key,
                                                  attn_kwargs=tuple(sorted(_kw.items())))

# timm's ResNet-D with ECA, SKNet-18 and ResNeSt-14d: their exact structure and state_dict keys (timm's resnet.py,
# sknet.py and resnest.py model functions)
_table["ecaresnet50d"] = partial(ResNetConfig, "bottleneck", (3, 4, 6, 3), attn_layer="eca", stem_type="deep",
                                 stem_width=32, avg_down=True)
_table["skresnet18"] = partial(ResNetConfig, "sk_basic", (2, 2, 2, 2),
                               block_args=(("rd_divisor", 16), ("rd_ratio", 1 / 8), ("split_input", True)))
_table["resnest14d"] = partial(ResNetConfig, "resnest", (1, 1, 1, 1), stem_type="deep", stem_width=32, avg_down=True,
                               block_args=(("avd", True), ("avd_first", False), ("radix", 2)))

# SE-DenseNet presets: the article's CIFAR setting (DenseNet-BC, k = 12, 24 stem channels, small inputs) at depths
# 100 and 40, and DenseNet-121's ImageNet layout with SE.
_table["sedensenet_bc100_k12"] = partial(SEDenseNetConfig, 12, (16, 16, 16))
_table["sedensenet_bc40_k12"] = partial(SEDenseNetConfig, 12, (6, 6, 6))
_table["sedensenet121"] = partial(SEDenseNetConfig, 32, (6, 12, 24, 16), num_init_features=64, num_classes=1000,
                                  small_inputs=False)
# Seed article 003's Inception network with SimAM; ECA-MobileNetV2 with the authors' kernel rule ('eq9' selectable).
_table["towernet"] = TowerNetConfig
_table["eca_mobilenetv2"] = ECAMobileNetV2Config

MODEL_CONFIGS: Mapping[str, Callable[..., AttentionConfig]] = MappingProxyType(_table)


def create_model_config(name: str, **kwargs: Any) -> AttentionConfig:
    """The config of the model registered as ``name``; ``kwargs`` override its fields (e.g. ``num_classes``)."""
    if name not in MODEL_CONFIGS:
        raise ConfigError(f"create_model: unknown model {name!r}; known: {', '.join(MODEL_CONFIGS)}")
    return MODEL_CONFIGS[name](**kwargs)


def build_model(config: AttentionConfig, classes: Mapping[type[AttentionConfig], type[Module]],
                backend: str) -> Module:
    """The module of ``classes`` (config class -> a backend's module class) built from ``config``; ``backend``
    names the backend in the error for a config it has no model for."""
    cls = classes.get(type(config))
    if cls is None:
        raise ConfigError(f"create_model: the {backend} backend has no model for {type(config).__name__}; it builds "
                          f"{', '.join(c.__name__ for c in classes)}")
    model: Module = cls.from_config(config)  # type: ignore[attr-defined]
    return model


def _config_class(name: str) -> type:
    """The config class a registered name builds (read off the registry's partial, else from a default config)."""
    factory = MODEL_CONFIGS[name]
    target = factory.func if isinstance(factory, partial) else factory
    return target if isinstance(target, type) else type(factory())


def model_factories(create_model: Callable[..., Module],
                    classes: Mapping[type[AttentionConfig], type[Any]]) -> Mapping[str, Callable[..., Module]]:
    """Registered name -> ``create_model(name, **kwargs)``, for the registered models whose config class is in
    ``classes`` (the models a backend builds)."""
    def factory(name: str) -> Callable[..., Module]:
        def build(**kwargs: Any) -> Module:
            return create_model(name, **kwargs)

        build.__name__ = build.__qualname__ = name
        build.__doc__ = f"``create_model({name!r}, **kwargs)``."
        return build

    return MappingProxyType({name: factory(name) for name in MODEL_CONFIGS if _config_class(name) in classes})
