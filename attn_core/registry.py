"""The names under which every backend registers its modules, and the configs behind them."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from .bam import BAMConfig
from .cbam import CBAMConfig, ChannelAttentionConfig, SpatialAttentionConfig
from .cbam_variants import LightCBAMConfig
from .coord_attn import CoordAttnConfig, EfficientLocalAttnConfig, SimpleCoordAttnConfig, StripAttnConfig
from .eca import ECAConfig
from .eca_variants import CECAConfig, ECAMConfig
from .gam import GAMConfig
from .gather_excite import GatherExciteConfig
from .gct import GCTConfig
from .global_context import GlobalContextAddConfig, GlobalContextConfig
from .non_local import BatNonLocalAttnConfig, NonLocalAttnConfig
from .psa import PSAConfig
from .se import SEConfig
from .se_variants import EffectiveSEConfig
from .selective_kernel import SelectiveKernelConfig
from .shuffle import ShuffleAttentionConfig
from .simam import SimAMConfig
from .spec import AttentionConfig, ConfigError
from .split_attn import SplitAttnConfig
from .srm import SRMConfig
from .triplet import TripletAttentionConfig

__all__ = ["CONFIGS", "TIMM_KEYS", "create_config", "resolve_name"]

CONFIGS: Mapping[str, type[AttentionConfig]] = MappingProxyType({
    "se": SEConfig,
    "eca": ECAConfig,
    "ca": ChannelAttentionConfig,
    "sa": SpatialAttentionConfig,
    "cbam": CBAMConfig,
    "simam": SimAMConfig,
    "coord": CoordAttnConfig,
    "scoord": SimpleCoordAttnConfig,
    "ela": EfficientLocalAttnConfig,
    "strip": StripAttnConfig,
    "ese": EffectiveSEConfig,
    "ecam": ECAMConfig,
    "ceca": CECAConfig,
    "lcbam": LightCBAMConfig,
    "sk": SelectiveKernelConfig,
    "splat": SplitAttnConfig,
    "nl": NonLocalAttnConfig,
    "bat": BatNonLocalAttnConfig,
    "ge": GatherExciteConfig,
    "gc": GlobalContextConfig,
    "gca": GlobalContextAddConfig,
    "srm": SRMConfig,
    "triplet": TripletAttentionConfig,
    "bam": BAMConfig,
    "gct": GCTConfig,
    "shuffle": ShuffleAttentionConfig,
    "psa": PSAConfig,
    "gam": GAMConfig,
})

#: the registered keys that timm's ``get_attn`` (timm/layers/create_attn.py) builds under the same name, whose
#: parameters the project names as timm's state_dict does; timm's lambda, bottleneck and halo are not registered
TIMM_KEYS: tuple[str, ...] = ("se", "ese", "eca", "ecam", "ceca", "ge", "gc", "gca", "cbam", "lcbam", "coord", "scoord",
                              "ela", "strip", "sk", "splat", "nl", "bat")

_ALIASES = MappingProxyType({"channel": "ca", "spatial": "sa", "channel_attention": "ca",
                             "spatial_attention": "sa"})


def resolve_name(name: str) -> str:
    """The registry key for ``name`` (case-insensitive, with a few long aliases); an error lists the known ones."""
    if not isinstance(name, str):
        raise ConfigError(f"create_attn: the attention name must be a string, got {name!r}")
    key = name.lower()
    key = _ALIASES.get(key, key)
    if key not in CONFIGS:
        raise ConfigError(f"create_attn: unknown attention {name!r}; known: {', '.join(CONFIGS)}")
    return key


def create_config(name: str, channels: int | None, **kwargs: Any) -> AttentionConfig:
    """The config of attention ``name`` for ``channels`` input channels."""
    config_class: Any = CONFIGS[resolve_name(name)]  # every registered config takes channels first
    config: AttentionConfig = config_class(channels, **kwargs)
    return config
