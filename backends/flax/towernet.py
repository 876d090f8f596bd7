"""TowerNet of seed article 003 in Flax (NHWC). The architecture and its documentation: :class:`TowerNetConfig`.

Everything is built from the config: the stage items of ``config.stages()`` (convolutions, BatchNorms, ReLU,
'pool', 'simam' = ``config.simam``, Inception blocks of ``InceptionSpec.layers()``) and ``config.head()``. The
parameter-free steps are those of ``TowerNetConfig.reference_forward``: 'pool' is max pooling 2x2 / 2, the Inception
pool route max pooling 3x3 / 1 with explicit padding 1 (padded cells are -inf: ``flax.linen.max_pool`` pads with
the reduction's identity, as the reference and torch do), then average pooling 2x2 / 2 and the reference's flatten
of the NCHW map (``reshape(n, -1)`` after moving the channels in front, so the order is the spec's at any size).

Submodule names are the canonical names split on dots (what :func:`attn_core.native_location` does):
``params['b1']['0']['0']['kernel']`` is ``b1.0.0.weight``, ``batch_stats['b4']['0']['1']['mean']`` is
``b4.0.1.running_mean``, ``params['b5']['3']['route5x5_3']['bias']`` is ``b5.3.route5x5_3.bias``, ``params['b6']``
the classifier. Layers are made by ``_layers.build_layer`` (BatchNorm: the project's,
:class:`backends.flax._norm.BatchNorm`); in training each BatchNorm first checks that it sees more than one value
per channel, an InputShapeError naming the layer (``TowerNet: b1.0.1``).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from attn_core.models import InceptionSpec, TowerNetConfig

from ._base import AttentionModule
from ._layers import Sequential, build_layer
from ._ops import max_pool2d

__all__ = ["TowerNet", "Inception", "Stage"]


def _max_pool(x: jax.Array, kernel: int, stride: int, padding: int) -> jax.Array:
    """``ops.max_pool2d(x, kernel, stride, padding)`` of the reference on NHWC: floor mode, -inf padding."""
    return max_pool2d(x, kernel, stride, padding)


class Inception(nn.Module):
    """Four routes of an :class:`attn_core.models.InceptionSpec`, concatenated on channels in order: 1x1; 1x1 -> 3x3;
    1x1 -> 5x5; max pool 3x3 / 1 padding 1 -> 1x1; a ReLU after every convolution."""

    spec: InceptionSpec

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        c = self.spec.layers()

        def conv(name: str, y: jax.Array) -> jax.Array:
            return jax.nn.relu(build_layer(c[name], name)(y))

        r1 = conv("route1x1_1", x)
        r2 = conv("route3x3_2", conv("route1x1_2", x))
        r3 = conv("route5x5_3", conv("route1x1_3", x))
        r4 = conv("route1x1_4", _max_pool(x, 3, 1, 1))  # the spec's pool route: ops.max_pool2d(x, 3, 1, 1)
        return jnp.concatenate([r1, r2, r3, r4], axis=-1)


class Stage(Sequential):
    """Items of ``TowerNetConfig.stages()`` applied in order, as torch's nested ``nn.Sequential``
    (:class:`backends.flax._layers.Sequential`): ``InceptionSpec`` items and ``'pool'`` besides the layer specs,
    ``config.simam`` and ``'relu'``."""

    def item(self, spec: Any, name: str, x: jax.Array, train: bool) -> jax.Array:
        if isinstance(spec, InceptionSpec):
            return Inception(spec, name=name)(x, train)
        if spec == "pool":
            return _max_pool(x, 2, 2, 0)  # ops.max_pool2d(x, 2, 2) of the reference
        return super().item(spec, name, x, train)


class TowerNet(AttentionModule):
    __doc__ = TowerNetConfig.__doc__
    _config_cls = TowerNetConfig

    in_chans: int = 3
    num_classes: int = 16
    e_lambda: float = 1e-4
    bn_eps: float = 1e-3
    bn_momentum: float = 0.1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        self.check_input(x)  # NHWC: H and W from 256 to 511 (TowerNetConfig.check_input)
        cfg = self.config
        for stage, items in cfg.stages().items():
            items = tuple((rel, cfg.simam if spec == "simam" else spec) for rel, spec in items)
            x = Stage(items, name=stage)(x, train)
        # ops.avg_pool2d(x, 2, 2) of the reference; window_shape by keyword, as jax2onnx 0.17's patched avg_pool
        # takes the input alone positionally
        x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
        x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)  # ops.reshape(x, (n, -1)) of the NCHW map
        return build_layer(cfg.head(), "b6")(x)
