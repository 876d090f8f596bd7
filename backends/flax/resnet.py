"""ResNet with pluggable attention in Flax (NHWC). The architecture and its documentation: :class:`ResNetConfig`.

Everything is built from the config: the stem (``config.stem()``), one block per ``config.blocks`` entry with the
layers of ``BlockSpec.layers``, the attention configs each block carries and the head (``config.head()``). No
width, stride or padding is decided here.

Submodule names are the canonical names split on dots (what :func:`attn_core.native_location` does): block
``layer2.0`` is module ``'0'`` inside module ``'layer2'``, its shortcut ``downsample.0`` / ``downsample.1`` are
``'0'`` / ``'1'`` inside ``'downsample'``, so ``params['layer2']['0']['downsample']['0']['kernel']`` is
``layer2.0.downsample.0.weight``. Stages, shortcuts, the deep stem ``conv1`` and an SK block's ``conv2`` are
:class:`Sequential` containers, as torch's ``nn.Sequential``.

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

from attn_core import AttentionConfig, ConfigError
from attn_core.models import AvgPool, BlockSpec, ResNetConfig

from . import _layers
from ._base import AttentionModule
from ._layers import build_attention, build_layer
from ._ops import max_pool2d

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "SelectiveKernelBasic", "ResNestBottleneck", "Sequential",
           "BLOCKS", "avg_pool"]

# the stem's max pooling, as the reference's ops.max_pool2d(x, 3, 2, 1): window 3, stride 2, padding 1 (padded
# cells are -inf: flax's max_pool pads with the reduction's identity)
_POOL_WINDOW, _POOL_STRIDE, _POOL_PAD = 3, 2, 1


def avg_pool(spec: AvgPool, x: jax.Array) -> jax.Array:
    """torch's ``AvgPool2d`` of an :class:`attn_core.models.AvgPool` spec on an NHWC map: window sums over the map
    padded so that every window is whole, over each window's torch divisor (``spec.counts``), which no count rule
    of Flax's ``avg_pool`` gives for a ceil-mode window."""
    if spec.is_identity:
        return x
    h, w, k, s = x.shape[1], x.shape[2], spec.kernel_size, spec.stride
    sums = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, k, k, 1), (1, s, s, 1),
                                 ((0, 0), spec.pads(h), spec.pads(w), (0, 0)))
    return sums / jnp.asarray(spec.counts(h, w).transpose(0, 2, 3, 1), x.dtype)


def run_layer(layers: Mapping[str, Any], name: str, x: jax.Array, train: bool, bn_eps: float,
              bn_momentum: float) -> jax.Array:
    """``x`` through the layer ``name`` of ``layers`` (a layer list of the spec), or through the layers under
    ``name.`` as a :class:`Sequential` of that name (the deep stem's ``conv1``, a shortcut ``downsample``)."""
    if name not in layers:
        head = name + "."
        items = tuple((k[len(head):], v) for k, v in layers.items() if k.startswith(head))
        return Sequential(items, bn_eps, bn_momentum, name=name)(x, train)
    spec = layers[name]
    if isinstance(spec, AvgPool):
        return avg_pool(spec, x)
    if isinstance(spec, AttentionConfig):
        return build_attention(spec, name)(x, train)
    return build_layer(spec, name, train)(x)


class Sequential(_layers.Sequential):
    """Named layers applied in order, as torch's ``nn.Sequential``: a stage (``layer1``: blocks ``'0'``,
    ``'1'``, ...), a shortcut (``downsample``: ``'0'`` convolution, ``'1'`` BatchNorm; with ``avg_down`` ``'0'``
    the average pool), the deep stem ``conv1`` or an SK block's ``conv2``; the blocks are ``BlockSpec`` items."""

    def item(self, spec: Any, name: str, x: jax.Array, train: bool) -> jax.Array:
        if isinstance(spec, BlockSpec):
            return BLOCKS[spec.block](spec, self.bn_eps, self.bn_momentum, name=name)(x, train)
        if isinstance(spec, AvgPool):
            return avg_pool(spec, x)
        return super().item(spec, name, x, train)


class _Block(nn.Module):
    """One residual block of ``spec`` (a :class:`attn_core.models.BlockSpec`), with the model's BatchNorm
    epsilon and momentum (torch's convention): :meth:`branch`, then ``se``, plus the shortcut, then ReLU."""

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

    def run(self, layers: Mapping[str, Any], name: str, x: jax.Array, train: bool) -> jax.Array:
        return run_layer(layers, name, x, train, self.bn_eps, self.bn_momentum)

    def branch(self, layers: Mapping[str, Any], x: jax.Array, train: bool) -> jax.Array:
        """The residual branch up to its last BatchNorm (before ``se``)."""
        raise NotImplementedError

    def first_convs(self, layers: Mapping[str, Any], x: jax.Array, train: bool) -> jax.Array:
        """conv1, bn1, ReLU, conv2 and ``simam`` of the basic and bottleneck blocks."""
        out = self.run(layers, "conv2", jax.nn.relu(self.run(layers, "bn1", self.run(layers, "conv1", x, train),
                                                             train)), train)
        return out if self.spec.simam is None else build_attention(self.spec.simam, "simam")(out, train)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        b = self.spec
        layers = b.layers(self.bn_eps, self.bn_momentum)
        out = self.branch(layers, x, train)
        if b.attn is not None:
            out = build_attention(b.attn, "se")(out, train)
        shortcut = self.run(layers, "downsample", x, train) if b.downsample else x
        return jax.nn.relu(out + shortcut)


class BasicBlock(_Block):
    """Two 3x3 convolutions (ResNet-18/34); attention ``se`` after ``bn2``, ``simam`` between ``conv2`` and
    ``bn2``."""

    block_type: ClassVar[str] = "basic"

    def branch(self, layers: Mapping[str, Any], x: jax.Array, train: bool) -> jax.Array:
        return self.run(layers, "bn2", self.first_convs(layers, x, train), train)


class Bottleneck(_Block):
    """1x1, 3x3 (with the stride), 1x1 convolutions (ResNet-50/101); attention ``se`` after ``bn3``, ``simam``
    between ``conv2`` and ``bn2``."""

    block_type: ClassVar[str] = "bottleneck"

    def branch(self, layers: Mapping[str, Any], x: jax.Array, train: bool) -> jax.Array:
        out = jax.nn.relu(self.run(layers, "bn2", self.first_convs(layers, x, train), train))
        return self.run(layers, "bn3", self.run(layers, "conv3", out, train), train)


class SelectiveKernelBasic(_Block):
    """timm's ``SelectiveKernelBasic`` (SKNet-18/34): ``conv1`` a Selective Kernel convolution (its paths end in
    BatchNorm and ReLU), ``conv2`` a 3x3 convolution and BatchNorm (``conv2.conv``, ``conv2.bn``)."""

    block_type: ClassVar[str] = "sk_basic"

    def branch(self, layers: Mapping[str, Any], x: jax.Array, train: bool) -> jax.Array:
        return self.run(layers, "conv2", self.run(layers, "conv1", x, train), train)


class ResNestBottleneck(_Block):
    """timm's ``ResNestBottleneck``: 1x1, split-attention 3x3 ``conv2`` (BatchNorm and ReLU inside), 1x1; with avd
    a 3x3 average pool takes the stride, before (``avd_first``) or after (``avd_last``) ``conv2``."""

    block_type: ClassVar[str] = "resnest"

    def branch(self, layers: Mapping[str, Any], x: jax.Array, train: bool) -> jax.Array:
        out = jax.nn.relu(self.run(layers, "bn1", self.run(layers, "conv1", x, train), train))
        for name in ("avd_first", "conv2", "avd_last"):
            if name in layers:
                out = self.run(layers, name, out, train)
        return self.run(layers, "bn3", self.run(layers, "conv3", out, train), train)


BLOCKS: Mapping[str, type[_Block]] = MappingProxyType({c.block_type: c for c in (
    BasicBlock, Bottleneck, SelectiveKernelBasic, ResNestBottleneck)})


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
    stem_type: str = ""
    stem_width: int = 64
    avg_down: bool = False
    block_args: Any = ()

    def __post_init__(self) -> None:
        # the config's normal form (layers a tuple, attn_kwargs and block_args sorted pairs): hashable, as linen needs
        config = self.config
        object.__setattr__(self, "layers", config.layers)
        object.__setattr__(self, "attn_kwargs", config.attn_kwargs)
        object.__setattr__(self, "block_args", config.block_args)
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
        for name in ("conv1", "bn1"):
            x = run_layer(stem, name, x, train, cfg.bn_eps, cfg.bn_momentum)
        x = max_pool2d(jax.nn.relu(x), _POOL_WINDOW, _POOL_STRIDE, _POOL_PAD)
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
