"""``create_attn(name, channels, **kwargs)`` for the Flax backend; names and configs from attn_core."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from attn_core import resolve_name

from ._base import AttentionModule
from .bam import BAM
from .cbam import CBAM, ChannelAttention, SpatialAttention
from .cbam_variants import LightCbamModule
from .coord_attn import CoordAttn, EfficientLocalAttn, SimpleCoordAttn, StripAttn
from .eca import ECAModule
from .eca_variants import CecaModule, EcaMlpModule
from .gam import GAM
from .gather_excite import GatherExcite
from .gct import GCT
from .global_context import GlobalContext, GlobalContextAdd
from .non_local import BatNonLocalAttn, NonLocalAttn
from .psa import PSA
from .se import SEModule
from .se_variants import EffectiveSEModule
from .selective_kernel import SelectiveKernel
from .shuffle import ShuffleAttention
from .simam import SimAM
from .split_attn import SplitAttn
from .srm import SRM
from .triplet import TripletAttention

ATTN_LAYERS: Mapping[str, type[AttentionModule]] = MappingProxyType({
    "se": SEModule, "eca": ECAModule, "ca": ChannelAttention, "sa": SpatialAttention, "cbam": CBAM,
    "ese": EffectiveSEModule, "ecam": EcaMlpModule, "ceca": CecaModule, "lcbam": LightCbamModule,
    "coord": CoordAttn, "scoord": SimpleCoordAttn, "ela": EfficientLocalAttn, "strip": StripAttn,
    "simam": SimAM, "sk": SelectiveKernel, "splat": SplitAttn,
    "nl": NonLocalAttn, "bat": BatNonLocalAttn,
    "ge": GatherExcite, "gc": GlobalContext, "gca": GlobalContextAdd,
    "srm": SRM, "gct": GCT, "shuffle": ShuffleAttention, "psa": PSA, "gam": GAM,
    "triplet": TripletAttention, "bam": BAM,
})


def create_attn(name: str, channels: int | None, **kwargs: Any) -> AttentionModule:
    """Build the attention module registered as ``name`` (see ``attn_core.CONFIGS``) for ``channels`` channels."""
    return ATTN_LAYERS[resolve_name(name)](channels, **kwargs)
