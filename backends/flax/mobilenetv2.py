"""ECA-MobileNetV2 in Flax (NHWC). The architecture and its documentation: :class:`ECAMobileNetV2Config`.

Everything is built from the config: the stem (``config.stem()``), one inverted residual per ``config.blocks``
entry with the layers of ``InvertedResidualSpec.layers()`` and its ECA (``spec.eca`` at ``spec.eca_name``), the last
ConvBNReLU (``config.last()``) and the classifier (``config.head()`` after dropout ``config.dropout``). ReLU6 follows
each ConvBNReLU pair as in ``ECAMobileNetV2Config.reference_forward``; the depthwise convolution has
``feature_group_count`` = its groups (the hidden width).

Submodule names are the canonical names split on dots (what :func:`attn_core.native_location` does):
``params['features']['0']['0']['kernel']`` is ``features.0.0.weight``,
``params['features']['3']['conv']['1']['0']['kernel']`` the depthwise ``features.3.conv.1.0.weight``,
``params['features']['3']['conv']['4']['conv']['kernel']`` its ECA, ``params['classifier']['1']`` the Linear.
Layers are made by ``_layers.build_layer`` (BatchNorm: the project's); in training each BatchNorm first checks that
it sees more than one value per channel, an InputShapeError naming the layer
(``ECAMobileNetV2: features.18.1``).

Dropout (``classifier.0``) acts only with ``train=True`` and ``dropout > 0``, and then needs a ``'dropout'`` rng:
``model.apply(variables, x, train=True, mutable=['batch_stats'], rngs={'dropout': key})``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from attn_core.models import ECAMobileNetV2Config, InvertedResidualSpec, Linear

from ._base import AttentionModule
from ._layers import Sequential, build_layer

__all__ = ["ECAMobileNetV2", "InvertedResidual", "Layers", "Classifier"]


def _conv_bn_relu6(layers: dict[str, Any], conv: str, bn: str) -> list[tuple[str, Any]]:
    """A ConvBNReLU as items: the conv and BN under their names, ReLU6 next to them (``x.0``, ``x.1``, ``x.2``)."""
    return [(conv, layers[conv]), (bn, layers[bn]), (conv.rpartition(".")[0] + ".2", "relu6")]


class Layers(Sequential):
    """Named layers applied in order, as torch's nested ``nn.Sequential`` (:class:`backends.flax._layers.Sequential`),
    with ``InvertedResidualSpec`` items built as :class:`InvertedResidual`."""

    def item(self, spec: Any, name: str, x: jax.Array, train: bool) -> jax.Array:
        if isinstance(spec, InvertedResidualSpec):
            return InvertedResidual(spec, self.bn_eps, self.bn_momentum, name=name)(x, train)
        return super().item(spec, name, x, train)


class InvertedResidual(nn.Module):
    """One :class:`attn_core.models.InvertedResidualSpec`: ``conv`` = [1x1 ConvBNReLU6] (with expansion), 3x3
    depthwise ConvBNReLU6, 1x1 conv, BatchNorm, ECA; plus the input if ``spec.residual``."""

    spec: InvertedResidualSpec
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        b = self.spec
        layers = b.layers(self.bn_eps, self.bn_momentum)
        names = list(layers)
        items: list[tuple[str, Any]] = []
        for j in range(0, len(names) - 2, 2):        # the ConvBNReLU pairs
            items += _conv_bn_relu6(layers, names[j], names[j + 1])
        items += [(n, layers[n]) for n in names[-2:]]  # pw-linear conv and its BatchNorm
        items.append((b.eca_name[len(b.name) + 1:], b.eca))
        head = "conv."
        if not all(n.startswith(head) for n, _ in items):
            raise TypeError(f"InvertedResidual: expected every layer of {b.name} under 'conv', got "
                            f"{[n for n, _ in items]}")
        y = Layers(tuple((n[len(head):], s) for n, s in items), self.bn_eps, self.bn_momentum, name="conv")(x, train)
        return x + y if b.residual else y


class Classifier(nn.Module):
    """``classifier``: ``'0'`` dropout (training only), ``'1'`` the Linear of ``head``."""

    rate: float
    head: Linear

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = nn.Dropout(self.rate, deterministic=not train, name="0")(x)
        return build_layer(self.head, "1")(x)


class ECAMobileNetV2(AttentionModule):
    __doc__ = ECAMobileNetV2Config.__doc__
    _config_cls = ECAMobileNetV2Config

    num_classes: int = 1000
    width_mult: float = 1.0
    eca_kernel: str = "authors"
    dropout: float = 0.25
    in_chans: int = 3
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        self.check_input(x)
        cfg = self.config
        stem, last = cfg.stem(), cfg.last()
        items = _conv_bn_relu6(stem, *stem) + [(b.name, b) for b in cfg.blocks] + _conv_bn_relu6(last, *last)
        head = "features."
        x = Layers(tuple((n[len(head):], s) for n, s in items), cfg.bn_eps, cfg.bn_momentum,
                   name="features")(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return Classifier(cfg.dropout, cfg.head(), name="classifier")(x, train)
