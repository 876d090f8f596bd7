"""ResNet with pluggable attention in Paddle, built only from :class:`attn_core.models.ResNetConfig`.

Every width, stride, padding, BatchNorm setting and attention position comes from the config (``stem()``,
``blocks`` and each ``BlockSpec.layers()``, ``head()``); this file only turns those specs into Paddle layers and
runs them in the order of ``ResNetConfig.reference_forward``. Attribute names are the torch backend's (timm's), so
the ``state_dict`` keys are the canonical names with Paddle's BatchNorm state names (``_mean``, ``_variance``;
``attn_core.native_location``); ``fc.weight`` is Paddle's [in, out] (``attn_core.layout`` converts at the edge).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import paddle
import paddle.nn.functional as F
from paddle import nn

from attn_core import AttentionConfig, ConfigError
from attn_core.models import AvgPool, BlockSpec, ResNetConfig

from .._resnet_blocks import BasicForward, BottleneckForward, ResNestForward, SelectiveKernelBasicForward
from ._base import AttentionModule
from ._layers import attach, build_attention, build_layer
from ._norm import label_batch_norms
from ._ops import static_shape

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "SelectiveKernelBasic", "ResNestBottleneck", "AvgPool2D"]


class AvgPool2D(nn.Layer):
    """torch's ``AvgPool2d`` of an :class:`attn_core.models.AvgPool` spec: window sums (a depthwise convolution of
    ones over the map padded so that every window is whole) over each window's torch divisor (``spec.counts``).
    Paddle's own pooling is not used: its float64 backward is 1e-8 off, and its divisor of a ceil-mode window that
    counts padding is not torch's."""

    def __init__(self, spec: AvgPool) -> None:
        super().__init__()
        self.spec = spec

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        spec = self.spec
        _, c, h, w = static_shape(x)
        k = spec.kernel_size
        ones = paddle.ones([c, 1, k, k], dtype=x.dtype)
        counts = paddle.to_tensor(spec.counts(h, w), dtype=x.dtype)
        return F.conv2d(x, ones, stride=spec.stride, padding=[*spec.pads(h), *spec.pads(w)], groups=c) / counts


def _build(spec: Any) -> nn.Layer:
    """The Paddle layer of one item of a layer list: a layer spec, an attention config, an average pool
    (:class:`AvgPool2D`, ``nn.Identity`` for the identity) or ``'relu'``."""
    if isinstance(spec, AttentionConfig):
        return build_attention(spec)
    if isinstance(spec, AvgPool):
        return nn.Identity() if spec.is_identity else AvgPool2D(spec)
    if spec == "relu":
        return nn.ReLU()
    return build_layer(spec)


class _Block(nn.Layer):
    """Builds the layers of one :class:`BlockSpec` under their spec names, with ``se`` (SE / ECA / CBAM) registered
    where the canonical table puts it (before ``downsample``) and ``simam`` (parameter-free)."""

    block_type: str = ""

    def __init__(self, spec: BlockSpec, bn_eps: float = 1e-5, bn_momentum: float = 0.1) -> None:
        super().__init__()
        if spec.block != self.block_type:
            raise ConfigError(f"{type(self).__name__}: got a spec of a {spec.block!r} block ({spec.name})")
        self.spec = spec
        se = build_attention(spec.attn) if spec.attn is not None else None
        placed = False
        for name, layer in spec.layers(bn_eps, bn_momentum).items():
            if name.startswith("downsample.") and not placed:
                self.se, placed = se, True
            attach(self, name, _build(layer))
        if not placed:
            self.se = se
        self.simam = build_attention(spec.simam) if spec.simam is not None else None
        if not spec.downsample:
            self.downsample = None

    relu = staticmethod(F.relu)  # the shared forwards (backends._resnet_blocks) apply this framework's ReLU


class BasicBlock(BasicForward, _Block):
    """Two 3x3 convolutions (ResNet-18/34), built from a ``BlockSpec`` of block ``'basic'``."""

    block_type = "basic"


class Bottleneck(BottleneckForward, _Block):
    """1x1, 3x3 (strided), 1x1 convolutions (ResNet-50/101), built from a ``BlockSpec`` of block ``'bottleneck'``."""

    block_type = "bottleneck"


class SelectiveKernelBasic(SelectiveKernelBasicForward, _Block):
    """timm's ``SelectiveKernelBasic`` (SKNet-18/34): ``conv1`` a Selective Kernel convolution (its paths end in
    BatchNorm and ReLU), ``conv2`` a 3x3 convolution and BatchNorm (``conv2.conv``, ``conv2.bn``)."""

    block_type = "sk_basic"


class ResNestBottleneck(ResNestForward, _Block):
    """timm's ``ResNestBottleneck``: 1x1, split-attention 3x3 ``conv2`` (BatchNorm and ReLU inside), 1x1; with avd
    a 3x3 average pool takes the stride, before (``avd_first``) or after (``avd_last``) ``conv2``."""

    block_type = "resnest"

    def __init__(self, spec: BlockSpec, bn_eps: float = 1e-5, bn_momentum: float = 0.1) -> None:
        super().__init__(spec, bn_eps, bn_momentum)
        for pool in ("avd_first", "avd_last"):
            if spec.avd != pool:
                setattr(self, pool, None)


BLOCKS: dict[str, type[_Block]] = {b.block_type: b for b in (BasicBlock, Bottleneck, SelectiveKernelBasic,
                                                             ResNestBottleneck)}


class ResNet(AttentionModule):
    __doc__ = ResNetConfig.__doc__

    def __init__(self, block: str, layers: Sequence[int], num_classes: int = 1000, in_chans: int = 3,
                 attn_layer: str | None = None, attn_kwargs: Any = (), bn_eps: float = 1e-5,
                 bn_momentum: float = 0.1, stem_type: str = "", stem_width: int = 64, avg_down: bool = False,
                 block_args: Any = ()) -> None:
        super().__init__()
        self.config = cfg = ResNetConfig(block, layers, num_classes, in_chans, attn_layer, attn_kwargs, bn_eps,
                                         bn_momentum, stem_type, stem_width, avg_down, block_args)
        for name, layer in cfg.stem().items():  # the deep stem: conv1 an nn.Sequential with its ReLUs, as timm's
            attach(self, name, _build(layer))
        self.maxpool = nn.MaxPool2D(3, 2, 1)  # the stem pool of ResNetConfig.reference_forward
        for spec in cfg.blocks:  # 'layer2.0' -> self.layer2 (an nn.Sequential), its block '0'
            attach(self, spec.name, BLOCKS[spec.block](spec, cfg.bn_eps, cfg.bn_momentum))
        self.stage_names = tuple(dict.fromkeys(spec.name.rpartition(".")[0] for spec in cfg.blocks))
        self.fc = build_layer(cfg.head())
        label_batch_norms(self, type(self).__name__)

    def forward_features(self, x: paddle.Tensor) -> paddle.Tensor:
        """The last stage's feature map (N, num_features, H', W')."""
        self.check_input(x)
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        for stage in self.stage_names:
            x = getattr(self, stage)(x)
        return x

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.fc(self.forward_features(x).mean(axis=[2, 3]))
