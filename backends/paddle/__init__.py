"""PaddlePaddle backend: ``paddle.nn.Layer`` attention modules on NCHW input."""

try:
    import paddle as _paddle  # noqa: F401
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("backends.paddle needs PaddlePaddle, which is not installed: "
                      "pip install 'attn-modules[paddle]'") from err

from .bam import BAM
from .cbam import CBAM, ChannelAttention, SpatialAttention
from .cbam_variants import LightCbamModule
from .checkpoint import load_checkpoint, save_checkpoint
from .coord_attn import CoordAttn, EfficientLocalAttn, SimpleCoordAttn, StripAttn
from .densenet import SEDenseNet
from .eca import ECAModule
from .eca_variants import CecaModule, EcaMlpModule
from .gam import GAM
from .gather_excite import GatherExcite
from .gct import GCT
from .global_context import GlobalContext, GlobalContextAdd
from .mobilenetv2 import ECAMobileNetV2
from .models import MODELS, create_model
from .non_local import BatNonLocalAttn, NonLocalAttn
from .psa import PSA
from .registry import ATTN_LAYERS, create_attn
from .resnet import BasicBlock, Bottleneck, ResNet
from .se import SEModule
from .se_variants import EffectiveSEModule
from .selective_kernel import SelectiveKernel
from .shuffle import ShuffleAttention
from .simam import SimAM
from .split_attn import SplitAttn
from .srm import SRM
from .towernet import TowerNet
from .triplet import TripletAttention
from .weights import export_weights, load_weights, skip_init

FRAMEWORK = "paddle"

__all__ = ["SEModule", "ECAModule", "ChannelAttention", "SpatialAttention", "CBAM", "SimAM",
           "EffectiveSEModule", "EcaMlpModule", "CecaModule", "LightCbamModule",
           "SelectiveKernel", "SplitAttn",
           "CoordAttn", "SimpleCoordAttn", "EfficientLocalAttn", "StripAttn",
           "ATTN_LAYERS", "create_attn", "export_weights", "load_weights", "skip_init", "save_checkpoint",
           "load_checkpoint",
           "FRAMEWORK", "NonLocalAttn", "BatNonLocalAttn",
           "GatherExcite", "GlobalContext", "GlobalContextAdd",
           "SRM", "GCT", "ShuffleAttention", "TripletAttention", "BAM", "PSA", "GAM",
           "ResNet", "BasicBlock", "Bottleneck", "TowerNet", "ECAMobileNetV2", "SEDenseNet", "MODELS", "create_model"]
