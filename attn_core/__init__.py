"""attn_core: the framework-neutral specification of the attention modules.

One frozen config per module (validated hyperparameters, derived widths and kernel sizes, the canonical
parameter table) and a NumPy float64 reference forward with exact vector-Jacobian products. Imports NumPy only.
"""

from .bam import BAM_PRESETS, BAMConfig
from .cbam import (
    CBAM_PRESETS,
    CBAM_TIMM_KEYS,
    CBAMConfig,
    ChannelAttentionConfig,
    SpatialAttentionConfig,
    cbam_keys_from_timm,
    cbam_keys_to_timm,
)
from .cbam_variants import LightCBAMConfig
from .coord_attn import (
    COORD_PRESETS,
    CoordAttnConfig,
    EfficientLocalAttnConfig,
    SimpleCoordAttnConfig,
    StripAttnConfig,
)
from .eca import ECAConfig, eca_kernel_size
from .eca_variants import CECAConfig, ECAMConfig
from .gam import GAM_PRESETS, GAMConfig
from .gather_excite import GatherExciteConfig
from .gct import GCT_PRESETS, GCTConfig
from .global_context import GlobalContextAddConfig, GlobalContextConfig
from .layout import FRAMEWORKS, bn_momentum_for, from_native, native_location, to_native
from .non_local import BatNonLocalAttnConfig, NonLocalAttnConfig
from .psa import PSA_PRESETS, PSAConfig
from .registry import CONFIGS, TIMM_KEYS, create_config, resolve_name
from .se import SEConfig
from .se_variants import EffectiveSEConfig
from .selective_kernel import SelectiveKernelConfig
from .shuffle import SHUFFLE_PRESETS, ShuffleAttentionConfig
from .simam import SimAMConfig, simam_denominator_count
from .spec import (
    AttentionConfig,
    ConfigError,
    InputDtypeError,
    InputShapeError,
    ParamSpec,
    WeightLoadError,
    make_divisible,
    reduced_channels,
)
from .split_attn import SplitAttnConfig
from .srm import SRM_PRESETS, SRMConfig
from .triplet import TRIPLET_PRESETS, TripletAttentionConfig

__all__ = [
    "AttentionConfig", "ParamSpec", "ConfigError", "InputShapeError", "InputDtypeError", "WeightLoadError",
    "SEConfig", "ECAConfig", "ChannelAttentionConfig", "SpatialAttentionConfig", "CBAMConfig", "SimAMConfig",
    "NonLocalAttnConfig", "BatNonLocalAttnConfig",
    "CoordAttnConfig", "SimpleCoordAttnConfig", "EfficientLocalAttnConfig", "StripAttnConfig", "COORD_PRESETS",
    "SelectiveKernelConfig", "SplitAttnConfig",
    "EffectiveSEConfig", "ECAMConfig", "CECAConfig", "LightCBAMConfig",
    "GatherExciteConfig", "GlobalContextConfig", "GlobalContextAddConfig",
    "SRMConfig", "SRM_PRESETS", "GCTConfig", "GCT_PRESETS", "ShuffleAttentionConfig", "SHUFFLE_PRESETS",
    "TripletAttentionConfig", "TRIPLET_PRESETS", "BAMConfig", "BAM_PRESETS",
    "PSAConfig", "PSA_PRESETS", "GAMConfig", "GAM_PRESETS",
    "CBAM_TIMM_KEYS", "cbam_keys_from_timm", "cbam_keys_to_timm",
    "CBAM_PRESETS", "CONFIGS", "TIMM_KEYS", "create_config", "resolve_name",
    "eca_kernel_size", "simam_denominator_count", "make_divisible", "reduced_channels",
    "FRAMEWORKS", "native_location", "to_native", "from_native", "bn_momentum_for",
]

__version__ = "0.1.0"
