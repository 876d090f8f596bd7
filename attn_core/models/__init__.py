"""Model specs built from the attention specs: parameter tables with torch / timm names and float64 references."""

from .densenet import DenseLayerSpec, SEDenseNetConfig, TransitionSpec
from .layers import BatchNorm, Conv, Linear, subtree
from .mobilenetv2 import ECA_KERNEL_RULES, ECAMobileNetV2Config, InvertedResidualSpec
from .registry import MODEL_CONFIGS, build_model, create_model_config, model_factories
from .resnet import STAGE_WIDTHS, BlockSpec, ResNetConfig
from .towernet import InceptionSpec, TowerNetConfig

__all__ = ["BatchNorm", "Conv", "Linear", "subtree", "ResNetConfig", "BlockSpec", "STAGE_WIDTHS",
           "MODEL_CONFIGS", "create_model_config", "build_model", "model_factories",
           "SEDenseNetConfig", "DenseLayerSpec", "TransitionSpec",
           "ECAMobileNetV2Config", "InvertedResidualSpec", "ECA_KERNEL_RULES", "TowerNetConfig", "InceptionSpec"]
