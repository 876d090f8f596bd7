"""SE-DenseNet in Flax (NHWC). The architecture and its documentation: :class:`SEDenseNetConfig`.

Everything is built from the config: the stem (``config.stem()``), one dense layer per ``config.dense_layers``
entry with the layers of ``DenseLayerSpec.layers()`` and its SE config, one transition per ``config.transitions``
entry, ``config.final_norm()`` and ``config.head()``, each layer spec made by ``_layers.build_layer``. No width,
stride or padding is decided here.

Submodule names are the canonical names split on dots (what :func:`attn_core.native_location` does):
``features.denseblock2.denselayer3.conv1.weight`` is ``params['features']['denseblock2']['denselayer3']['conv1']
['kernel']``, ``features.transition1.norm.running_var`` is ``batch_stats['features']['transition1']['norm']
['var']``, ``classifier.weight`` is ``params['classifier']['kernel']``.

``efficient=True`` (Pleiss et al., arXiv:1707.06990) applies ``nn.remat`` (Flax's lifted ``jax.checkpoint``) to
the dense layer's ``bottleneck`` method (concat -> norm1 -> ReLU -> conv1), so that its activations are recomputed
in the backward pass rather than kept. The lifted method runs in the dense layer's own scope, so the variables keep
their paths in both modes; the running statistics come out of the forward once. Both modes give the same outputs,
gradients and statistics (``tests/models/test_densenet.py``, which also finds the recomputation in the traced gradient).
What XLA then does with it is the compiler's: ``benchmarks/DENSENET_MEMORY.md`` has the CPU figures.

Training: ``model.apply(variables, x, train=True, mutable=['batch_stats'])``, plus ``rngs={'dropout': key}``
when ``drop_rate > 0``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from attn_core.models import DenseLayerSpec, SEDenseNetConfig, TransitionSpec

from ._base import AttentionModule
from ._layers import build_layer
from ._ops import max_pool2d
from .se import SEModule

__all__ = ["SEDenseNet", "DenseLayer", "DenseBlock", "Transition"]

# the ImageNet stem's max pooling, as the reference's ops.max_pool2d(x, 3, 2, 1) (padded cells are -inf: flax's
# max_pool pads with the reduction's identity); the transitions' average pooling, as ops.avg_pool2d(x, 2, 2)
_POOL_WINDOW, _POOL_STRIDE, _POOL_PAD = 3, 2, 1
_TRANSITION_POOL = 2


def _leaf(dotted: str) -> str:
    """The last part of a canonical name: the submodule name inside its parent ('...denseblock1' -> 'denseblock1')."""
    return dotted.rpartition(".")[2]


class DenseLayer(nn.Module):
    """One :class:`DenseLayerSpec`: BN-ReLU-Conv1x1 (the bottleneck), BN-ReLU-Conv3x3, SE, dropout in training.

    Called on the tuple of the block input and every earlier layer's output (NHWC); returns ``growth_rate``
    channels.
    """

    spec: DenseLayerSpec
    drop_rate: float = 0.0
    efficient: bool = False
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1

    model_name: ClassVar[str] = "SEDenseNet"  # for its BatchNorms' errors, whose parents nn.remat cuts off here

    def bottleneck(self, train: bool, *features: jax.Array) -> jax.Array:
        """concat -> norm1 -> ReLU -> conv1 (what the efficient mode recomputes in the backward pass). Its layers
        are made in this module's scope, in either mode."""
        layers = self.spec.layers(self.bn_eps, self.bn_momentum)
        x = jnp.concatenate(features, axis=-1) if len(features) > 1 else features[0]
        return build_layer(layers["conv1"], "conv1")(jax.nn.relu(build_layer(layers["norm1"], "norm1", train)(x)))

    @nn.compact
    def __call__(self, features: tuple[jax.Array, ...], train: bool = False) -> jax.Array:
        if self.efficient:  # static_argnums counts self: 1 is train
            h = nn.remat(type(self).bottleneck, static_argnums=(1,))(self, train, *features)
        else:
            h = self.bottleneck(train, *features)
        layers = self.spec.layers(self.bn_eps, self.bn_momentum)
        h = build_layer(layers["conv2"], "conv2")(jax.nn.relu(build_layer(layers["norm2"], "norm2", train)(h)))
        h = SEModule.from_config(self.spec.se, name="se")(h, train)
        if self.drop_rate > 0:
            h = nn.Dropout(self.drop_rate, deterministic=not train)(h)
        return h


class DenseBlock(nn.Module):
    """Dense layers (``specs``), each fed the block input and every earlier layer's output; returns their
    concatenation."""

    specs: tuple[DenseLayerSpec, ...]
    drop_rate: float = 0.0
    efficient: bool = False
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        features = [x]
        for spec in self.specs:
            layer = DenseLayer(spec, self.drop_rate, self.efficient, self.bn_eps, self.bn_momentum,
                               name=_leaf(spec.name))
            features.append(layer(tuple(features), train))
        return jnp.concatenate(features, axis=-1)


class Transition(nn.Module):
    """One :class:`TransitionSpec`: BN-ReLU-Conv1x1, then 2x2 average pooling."""

    spec: TransitionSpec
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        layers = self.spec.layers(self.bn_eps, self.bn_momentum)
        x = build_layer(layers["conv"], "conv")(jax.nn.relu(build_layer(layers["norm"], "norm", train)(x)))
        # window_shape by keyword: jax2onnx 0.17's patched avg_pool takes the input alone positionally
        window = (_TRANSITION_POOL, _TRANSITION_POOL)
        return nn.avg_pool(x, window_shape=window, strides=window)


class _Features(nn.Module):
    """The canonical ``features`` container: stem, dense blocks and transitions, ``norm_final`` (without the
    ReLU that follows it)."""

    config: SEDenseNetConfig

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg = self.config
        stem = cfg.stem()
        x = build_layer(stem["features.conv0"], "conv0")(x)
        if not cfg.small_inputs:
            x = jax.nn.relu(build_layer(stem["features.norm0"], "norm0", train)(x))
            x = max_pool2d(x, _POOL_WINDOW, _POOL_STRIDE, _POOL_PAD)
        # the reference's pairing: block 'features.denseblock{b}' is followed by 'features.transition{b}', if any
        transitions = {t.name.replace("transition", "denseblock"): t for t in cfg.transitions}
        blocks = list(dict.fromkeys(cfg.block_of(layer) for layer in cfg.dense_layers))
        for block in blocks:
            specs = tuple(d for d in cfg.dense_layers if cfg.block_of(d) == block)
            x = DenseBlock(specs, cfg.drop_rate, cfg.efficient, cfg.bn_eps, cfg.bn_momentum,
                           name=_leaf(block))(x, train)
            if block in transitions:
                t = transitions[block]
                x = Transition(t, cfg.bn_eps, cfg.bn_momentum, name=_leaf(t.name))(x, train)
        return build_layer(cfg.final_norm(), "norm_final", train)(x)


class SEDenseNet(AttentionModule):
    __doc__ = SEDenseNetConfig.__doc__
    _config_cls = SEDenseNetConfig

    growth_rate: int
    block_config: tuple[int, ...]
    num_init_features: int = 24
    compression: float = 0.5
    bn_size: int = 4
    drop_rate: float = 0.0
    num_classes: int = 10
    small_inputs: bool = True
    efficient: bool = False
    in_chans: int = 3
    attn_kwargs: Any = (("bias", False),)
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1

    def __post_init__(self) -> None:
        # the config's normal form (block_config a tuple, attn_kwargs sorted pairs): hashable, as linen needs
        config = self.config
        object.__setattr__(self, "block_config", config.block_config)
        object.__setattr__(self, "attn_kwargs", config.attn_kwargs)
        super().__post_init__()

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits (N, num_classes) of an NHWC input."""
        return self._forward(x, train, head=True)

    def forward_features(self, x: jax.Array, train: bool = False) -> jax.Array:
        """The features after ``norm_final`` and its ReLU, (N, H', W', num_features): ``model.apply(variables, x,
        method='forward_features')``."""
        return self._forward(x, train, head=False)

    @nn.compact
    def _forward(self, x: jax.Array, train: bool, head: bool) -> jax.Array:
        self.check_input(x)
        cfg = self.config
        x = jax.nn.relu(_Features(cfg, name="features")(x, train))
        if not head:
            return x
        return build_layer(cfg.head(), "classifier")(jnp.mean(x, axis=(1, 2)))
