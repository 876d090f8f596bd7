"""ECA-MobileNetV2 in Paddle, built only from :class:`attn_core.models.ECAMobileNetV2Config`.

Widths, strides, expansions, residual connections and ECA kernels come from the config (``stem()``, ``blocks`` and
each ``InvertedResidualSpec.layers()`` / ``eca_name``, ``last()``, ``head()``); this file turns them into Paddle
layers with the ECA authors' module tree (``features.0`` a ConvBNReLU ``Sequential(conv, bn, ReLU6)``,
``features.i.conv`` the inverted residual's ``Sequential`` with ECA last, ``classifier = Sequential(Dropout,
Linear)``), so the ``state_dict`` keys are the canonical names with Paddle's BatchNorm state names (``_mean``,
``_variance``); ``classifier.1.weight`` is Paddle's [in, out] (``attn_core.layout`` converts at the edge).
"""

from __future__ import annotations

import paddle
from paddle import nn

from attn_core.models import ECAMobileNetV2Config, InvertedResidualSpec

from ._base import AttentionModule
from ._layers import attach, build_attention, build_layer
from ._norm import label_batch_norms

__all__ = ["ECAMobileNetV2", "InvertedResidual"]


def _conv_bn_relu6(parent: nn.Layer, conv_name: str, bn_name: str, layers: dict) -> None:
    """Register a ConvBNReLU: the conv and BN specs under their names, ReLU6 next to them (``x.0``, ``x.1``,
    ``x.2``)."""
    attach(parent, conv_name, build_layer(layers[conv_name]))
    attach(parent, bn_name, build_layer(layers[bn_name]))
    attach(parent, conv_name.rpartition(".")[0] + ".2", nn.ReLU6())


class InvertedResidual(nn.Layer):
    """One :class:`attn_core.models.InvertedResidualSpec`: ``conv`` = [1x1 ConvBNReLU6] (with expansion), 3x3
    depthwise ConvBNReLU6, 1x1 conv, BatchNorm, ECA; plus the input if ``spec.residual``."""

    def __init__(self, spec: InvertedResidualSpec, bn_eps: float = 1e-5, bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.spec = spec
        layers = spec.layers(bn_eps, bn_momentum)
        names = list(layers)
        for j in range(0, len(names) - 2, 2):        # the ConvBNReLU pairs
            _conv_bn_relu6(self, names[j], names[j + 1], layers)
        for name in names[-2:]:                       # pw-linear conv and its BatchNorm
            attach(self, name, build_layer(layers[name]))
        # ECA last in 'conv' (registration order is the forward order of the Sequential)
        attach(self, spec.eca_name[len(spec.name) + 1:], build_attention(spec.eca))
        self.use_res_connect = spec.residual

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y = self.conv(x)
        return x + y if self.use_res_connect else y


class ECAMobileNetV2(AttentionModule):
    __doc__ = ECAMobileNetV2Config.__doc__

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, eca_kernel: str = "authors",
                 dropout: float = 0.25, in_chans: int = 3, bn_eps: float = 1e-5, bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.config = cfg = ECAMobileNetV2Config(num_classes, width_mult, eca_kernel, dropout, in_chans, bn_eps,
                                                 bn_momentum)
        stem = cfg.stem()
        _conv_bn_relu6(self, *stem, stem)             # features.0
        for spec in cfg.blocks:                       # features.1 .. features.17
            attach(self, spec.name, InvertedResidual(spec, cfg.bn_eps, cfg.bn_momentum))
        last = cfg.last()
        _conv_bn_relu6(self, *last, last)             # features.18
        attach(self, "classifier.0", nn.Dropout(cfg.dropout))
        attach(self, "classifier.1", build_layer(cfg.head()))
        label_batch_norms(self, type(self).__name__)

    def forward_features(self, x: paddle.Tensor) -> paddle.Tensor:
        """The output of the last ConvBNReLU (N, last_channels, H', W')."""
        self.check_input(x)
        return self.features(x)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.classifier(self.forward_features(x).mean(axis=[2, 3]))
