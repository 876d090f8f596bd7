"""ResNet with pluggable attention in Flax (NHWC). The architecture and its documentation: :class:`ResNetConfig`.

Everything is built from the config: the stem (``config.stem()``), one block per ``config.blocks`` entry with the
layers of ``BlockSpec.layers``, the attention configs each block carries and the head (``config.head()``). No
width, stride or padding is decided here.

Submodule names are the canonical names split on dots (what :func:`attn_core.native_location` does): block
``layer2.0`` is module ``'0'`` inside module ``'layer2'``, its shortcut ``downsample.0`` / ``downsample.1`` are
``'0'`` / ``'1'`` inside ``'downsample'``, so ``params['layer2']['0']['downsample']['0']['kernel']`` is
``layer2.0.downsample.0.weight``. Stages and shortcuts are :class:`Sequential` containers, as torch's
``nn.Sequential``.

BatchNorm: the project's :class:`backends.flax._norm.BatchNorm` (the attention modules' own), with the momentum
converted from torch's convention (:func:`attn_core.bn_momentum_for`, never Flax's default 0.99) and the config's
epsilon: train-mode outputs as torch's, and the unbiased batch variance enters the running variance, as in torch.
In training each BatchNorm checks that it sees more than one value per channel (``check_batch_norm_input``), which
deep in the network fails sooner than at the input: (1, 32, 32, 3) leaves layer4 1x1.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from attn_core import ConfigError
from attn_core.models import BlockSpec, ResNetConfig

from . import _layers
from ._base import AttentionModule
from ._layers import build_attention, build_layer

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "Sequential", "BLOCKS"]

# the stem's max pooling, as the reference's ops.max_pool2d(x, 3, 2, 1): window 3, stride 2, padding 1 (padded
# cells are -inf: flax's max_pool pads with the reduction's identity)
_POOL_WINDOW, _POOL_STRIDE, _POOL_PAD = 3, 2, 1


class Sequential(_layers.Sequential):
    """Named layers applied in order, as torch's ``nn.Sequential``: a stage (``layer1``: blocks ``'0'``,
    ``'1'``, ...) or a shortcut (``downsample``: ``'0'`` convolution, ``'1'`` BatchNorm); the blocks are
    ``BlockSpec`` items."""

    def item(self, spec: Any, name: str, x: jax.Array, train: bool) -> jax.Array:
        if isinstance(spec, BlockSpec):
            return BLOCKS[spec.block](spec, self.bn_eps, self.bn_momentum, name=name)(x, train)
        return super().item(spec, name, x, train)


class _Block(nn.Module):
    """One residual block of ``spec`` (a :class:`attn_core.models.BlockSpec`), with the model's BatchNorm
    epsilon and momentum (torch's convention)."""

    spec: BlockSpec
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1

    block_type: ClassVar[str] = ""

    def __post_init__(self) -> None:
        if not isinstance(self.spec, BlockSpec):
            raise TypeError(f"{type(self).__name__}: expected a BlockSpec, got {type(self.spec).__name__}")
        if self.spec.block != self.block_type:
            raise ConfigError(f"{type(self).__name__}: got a spec of a {self.spec.block!r} block ({self.spec.name})")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        b = self.spec
        layers = b.layers(self.bn_eps, self.bn_momentum)
        out = build_layer(layers["conv1"], "conv1")(x)
        out = jax.nn.relu(build_layer(layers["bn1"], "bn1", train)(out))
        out = build_layer(layers["conv2"], "conv2")(out)
        if b.simam is not None:
            out = build_attention(b.simam, "simam")(out, train)
        out = build_layer(layers["bn2"], "bn2", train)(out)
        if "conv3" in layers:
            out = jax.nn.relu(out)
            out = build_layer(layers["bn3"], "bn3", train)(build_layer(layers["conv3"], "conv3")(out))
        if b.attn is not None:
            out = build_attention(b.attn, "se")(out, train)
        shortcut = x
        if b.downsample:
            head = "downsample."
            items = tuple((k[len(head):], v) for k, v in layers.items() if k.startswith(head))
            shortcut = Sequential(items, self.bn_eps, self.bn_momentum, name="downsample")(x, train)
        return jax.nn.relu(out + shortcut)


class BasicBlock(_Block):
    """Two 3x3 convolutions (ResNet-18/34); attention ``se`` after ``bn2``, ``simam`` between ``conv2`` and
    ``bn2``."""

    block_type: ClassVar[str] = "basic"


class Bottleneck(_Block):
    """1x1, 3x3 (with the stride), 1x1 convolutions (ResNet-50/101); attention ``se`` after ``bn3``, ``simam``
    between ``conv2`` and ``bn2``."""

    block_type: ClassVar[str] = "bottleneck"


BLOCKS: Mapping[str, type[_Block]] = MappingProxyType({c.block_type: c for c in (BasicBlock, Bottleneck)})


class ResNet(AttentionModule):
    __doc__ = ResNetConfig.__doc__
    _config_cls = ResNetConfig

    block: str
    layers: tuple[int, ...]
    num_classes: int = 1000
    in_chans: int = 3
    attn_layer: str | None = None
    attn_kwargs: Any = ()
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1

    def __post_init__(self) -> None:
        # the config's normal form (layers a tuple, attn_kwargs sorted pairs): hashable, as linen needs
        config = self.config
        object.__setattr__(self, "layers", config.layers)
        object.__setattr__(self, "attn_kwargs", config.attn_kwargs)
        super().__post_init__()

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits (N, num_classes) of an NHWC input."""
        return self._forward(x, train, head=True)

    def forward_features(self, x: jax.Array, train: bool = False) -> jax.Array:
        """The last stage's feature map (N, H', W', num_features): ``model.apply(variables, x,
        method='forward_features')``."""
        return self._forward(x, train, head=False)

    @nn.compact
    def _forward(self, x: jax.Array, train: bool, head: bool) -> jax.Array:
        self.check_input(x)
        cfg = self.config
        stem = cfg.stem()
        x = jax.nn.relu(build_layer(stem["bn1"], "bn1", train)(build_layer(stem["conv1"], "conv1")(x)))
        x = nn.max_pool(x, (_POOL_WINDOW, _POOL_WINDOW), strides=(_POOL_STRIDE, _POOL_STRIDE),
                        padding=((_POOL_PAD, _POOL_PAD), (_POOL_PAD, _POOL_PAD)))
        # blocks 'layer2.0', 'layer2.1', ... -> Sequential 'layer2' of blocks '0', '1', ...
        stages: dict[str, list[tuple[str, BlockSpec]]] = {}
        for b in cfg.blocks:
            stage, _, index = b.name.partition(".")
            stages.setdefault(stage, []).append((index, b))
        for stage, items in stages.items():
            x = Sequential(tuple(items), cfg.bn_eps, cfg.bn_momentum, name=stage)(x, train)
        if not head:
            return x
        return build_layer(cfg.head(), "fc")(jnp.mean(x, axis=(1, 2)))
