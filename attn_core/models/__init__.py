"""Model specs built from the attention specs: parameter tables with torch / timm names and float64 references."""

from .densenet import DenseLayerSpec, SEDenseNetConfig, TransitionSpec
from .layers import AvgPool, BatchNorm, Conv, Linear, subtree
from .mobilenetv2 import ECA_KERNEL_RULES, ECAMobileNetV2Config, InvertedResidualSpec
from .registry import MODEL_CONFIGS, build_model, create_model_config, model_factories
from .resnet import BLOCK_TYPES, STAGE_WIDTHS, STEM_TYPES, BlockSpec, ResNetConfig
from .towernet import InceptionSpec, TowerNetConfig

__all__ = ["BatchNorm", "Conv", "Linear", "AvgPool", "subtree", "ResNetConfig", "BlockSpec", "STAGE_WIDTHS",
           "BLOCK_TYPES", "STEM_TYPES", "MODEL_CONFIGS", "create_model_config", "build_model", "model_factories",
           "SEDenseNetConfig", "DenseLayerSpec", "TransitionSpec",
           "ECAMobileNetV2Config", "InvertedResidualSpec", "ECA_KERNEL_RULES", "TowerNetConfig", "InceptionSpec"]
