"""TowerNet of seed article 003 in Paddle, built only from :class:`attn_core.models.TowerNetConfig`.

Every width, kernel, stride, padding and BatchNorm setting comes from the config (``stages()``, each
``InceptionSpec.layers()``, ``head()``); the parameter-free steps are those of ``TowerNetConfig.reference_forward``
('pool': max pooling 2x2 / 2; 'simam': ``config.simam``; the Inception pool route 3x3 / 1 padding 1; average
pooling 2 then flatten). The module tree is the article's: ``b1`` .. ``b5`` are ``nn.Sequential`` stages whose
children sit under the spec's relative names (``b1.0`` the BasicConv2d ``Sequential(conv, bn, relu)``, ``b1.1`` its
pool, ``b3.2`` its SimAM), ``b6`` the classifier, so the ``state_dict`` keys are the canonical names with Paddle's
BatchNorm state names (``_mean``, ``_variance``; ``attn_core.native_location``); ``b6.weight`` is Paddle's
[in, out] (``attn_core.layout`` converts at the edge). The article's own ``TowerNet`` loads the same state dict.
"""

from __future__ import annotations

from typing import Any

import paddle
import paddle.nn.functional as F
from paddle import nn

from attn_core.models import BatchNorm, Conv, InceptionSpec, TowerNetConfig

from ._base import AttentionModule
from ._layers import attach, build_attention, build_layer
from ._norm import label_batch_norms

__all__ = ["TowerNet", "Inception"]


class Inception(nn.Layer):
    """Four routes of an :class:`attn_core.models.InceptionSpec`, concatenated on channels in order: 1x1; 1x1 -> 3x3;
    1x1 -> 5x5; max pool 3x3 / 1 padding 1 -> 1x1; a ReLU after every convolution."""

    def __init__(self, spec: InceptionSpec) -> None:
        super().__init__()
        self.spec = spec
        for name, conv in spec.layers().items():
            attach(self, name, build_layer(conv))
        # the pool route of the spec's _inception: ops.max_pool2d(x, 3, 1, 1) (the article's route3x3_4)
        self.route3x3_4 = nn.MaxPool2D(3, 1, 1)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        r1 = F.relu(self.route1x1_1(x))
        r2 = F.relu(self.route3x3_2(F.relu(self.route1x1_2(x))))
        r3 = F.relu(self.route5x5_3(F.relu(self.route1x1_3(x))))
        r4 = F.relu(self.route1x1_4(self.route3x3_4(x)))
        return paddle.concat([r1, r2, r3, r4], axis=1)


def _stage_item(spec: Any, config: TowerNetConfig) -> nn.Layer:
    """The Paddle layer of one item of ``TowerNetConfig.stages()``."""
    if isinstance(spec, (Conv, BatchNorm)):
        return build_layer(spec)
    if isinstance(spec, InceptionSpec):
        return Inception(spec)
    if spec == "relu":
        return nn.ReLU()
    if spec == "pool":
        return nn.MaxPool2D(2, 2)  # ops.max_pool2d(x, 2, 2) of the reference
    if spec == "simam":
        return build_attention(config.simam)
    raise TypeError(f"TowerNet: no Paddle layer for the stage item {spec!r}")


class TowerNet(AttentionModule):
    __doc__ = TowerNetConfig.__doc__

    def __init__(self, in_chans: int = 3, num_classes: int = 16, e_lambda: float = 1e-4, bn_eps: float = 1e-3,
                 bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.config = cfg = TowerNetConfig(in_chans, num_classes, e_lambda, bn_eps, bn_momentum)
        # Items are registered in the spec's order, so each stage's nn.Sequential runs them in that order.
        for stage, items in cfg.stages().items():
            for rel, spec in items:
                attach(self, f"{stage}.{rel}", _stage_item(spec, cfg))
        self.stage_names = tuple(cfg.stages())
        self.avgpool = nn.AvgPool2D(2, 2)  # ops.avg_pool2d(x, 2, 2) of the reference
        self.b6 = build_layer(cfg.head())
        label_batch_norms(self, type(self).__name__)

    def forward_features(self, x: paddle.Tensor) -> paddle.Tensor:
        """The output of ``b5`` (N, 256, H', W'); H' = W' = 2 for inputs of 256 to 511."""
        self.check_input(x)
        for stage in self.stage_names:
            x = getattr(self, stage)(x)
        return x

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.avgpool(self.forward_features(x))
        return self.b6(paddle.flatten(x, start_axis=1))  # ops.reshape(x, (n, -1)) of the reference
