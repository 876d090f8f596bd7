"""ResNet with pluggable attention, with timm's parameter names.

Papers: Kaiming He, Xiangyu Zhang, Shaoqing Ren, Jian Sun. "Deep Residual Learning for Image Recognition",
CVPR 2016, arXiv:1512.03385 (stride on the 3x3 convolution of the bottleneck, as torchvision and timm: "ResNet v1.5").
Attention placement: SE / ECA / CBAM after the block's last BatchNorm, before the residual add, as attribute ``se``
(Hu et al. 2018; timm's ``seresnet50``); SimAM after the 3x3 convolution ``conv2`` and before ``bn2``, as attribute
``simam``, where its authors put it (Yang et al. 2021).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar

from .. import ops
from ..autodiff import Node
from ..registry import create_config, resolve_name
from ..spec import AttentionConfig, ConfigError, ParamSpec, check_choice, check_positive_int
from .layers import BatchNorm, Conv, Linear, subtree

__all__ = ["ResNetConfig", "BlockSpec", "STAGE_WIDTHS"]

STAGE_WIDTHS = (64, 128, 256, 512)
_EXPANSION = {"basic": 1, "bottleneck": 4}


@dataclass(frozen=True)
class BlockSpec:
    """One residual block, derived once from the config; the backends build exactly this."""

    name: str                      # 'layer2.0'
    block: str                     # 'basic' | 'bottleneck'
    in_channels: int
    planes: int                    # width of the 3x3 convolution
    out_channels: int
    stride: int
    downsample: bool
    attn: AttentionConfig | None   # under '<name>.se', after the last BatchNorm
    simam: AttentionConfig | None  # under '<name>.simam', after conv2, before bn2

    def layers(self, eps: float, momentum: float) -> dict[str, Any]:
        """Sub-layer name -> layer spec, in forward order (without the attention modules)."""
        bn = partial(BatchNorm, eps=eps, momentum=momentum)
        if self.block == "basic":
            out = {"conv1": Conv(self.in_channels, self.planes, 3, self.stride, 1), "bn1": bn(self.planes),
                   "conv2": Conv(self.planes, self.planes, 3, 1, 1), "bn2": bn(self.planes)}
        else:
            out = {"conv1": Conv(self.in_channels, self.planes, 1), "bn1": bn(self.planes),
                   "conv2": Conv(self.planes, self.planes, 3, self.stride, 1), "bn2": bn(self.planes),
                   "conv3": Conv(self.planes, self.out_channels, 1), "bn3": bn(self.out_channels)}
        if self.downsample:
            out["downsample.0"] = Conv(self.in_channels, self.out_channels, 1, self.stride)
            out["downsample.1"] = bn(self.out_channels)
        return out


@dataclass(frozen=True)
class ResNetConfig(AttentionConfig):
    """ResNet-18/34/50/101 with optional attention in every block (He et al., CVPR 2016).

    Args:
        block: ``'basic'`` (two 3x3 convolutions; ResNet-18/34) or ``'bottleneck'`` (1x1, 3x3, 1x1; ResNet-50/101).
        layers: blocks per stage, e.g. (3, 4, 6, 3).
        num_classes: outputs of the classifier ``fc``.
        in_chans: input channels.
        attn_layer: None, a registered attention name (``create_attn``'s, timm's ``get_attn`` keys: ``'se'``,
            ``'eca'``, ``'cbam'``, ``'gc'``, ...; after the last BatchNorm of each block, attribute ``se``, as timm's
            ResNet places it) or ``'simam'`` (after ``conv2``, before ``bn2``, attribute ``simam``).
        attn_kwargs: keyword arguments of the attention module (a mapping or pairs), e.g. ``CBAM_PRESETS['timm']``.
        bn_eps, bn_momentum: of every BatchNorm (torch's convention for the momentum).

    Shapes: input (N, in_chans, H, W) in torch and Paddle, (N, H, W, in_chans) in Flax; output (N, num_classes).
    Parameters: torch / timm ``state_dict`` names: ``conv1.weight``, ``bn1.*``, ``layer{1-4}.{i}.conv{1-3}``,
    ``...bn{1-3}``, ``...downsample.{0,1}``, ``...se.*``, ``fc.weight``, ``fc.bias``; ``seresnet50`` has exactly the
    keys and shapes of timm's ``seresnet50``.
    """

    module_name: ClassVar[str] = "ResNet"

    block: str
    layers: tuple[int, ...]
    num_classes: int = 1000
    in_chans: int = 3
    attn_layer: str | None = None
    attn_kwargs: Any = ()
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    blocks: tuple[BlockSpec, ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        name = self.module_name
        check_choice(name, "block", self.block, tuple(_EXPANSION))
        layers = tuple(self.layers) if isinstance(self.layers, (list, tuple)) else self.layers
        if not isinstance(layers, tuple) or len(layers) != 4:
            raise ConfigError(f"{name}: layers must be 4 positive block counts, got {self.layers!r}")
        for n in layers:
            check_positive_int(name, "layers[i]", n)
        object.__setattr__(self, "layers", layers)
        check_positive_int(name, "num_classes", self.num_classes)
        check_positive_int(name, "in_chans", self.in_chans)
        kwargs = dict(self.attn_kwargs.items() if isinstance(self.attn_kwargs, Mapping) else self.attn_kwargs)
        object.__setattr__(self, "attn_kwargs", tuple(sorted(kwargs.items())))
        try:
            attn = None if self.attn_layer is None else resolve_name(self.attn_layer)
        except ConfigError as err:
            raise ConfigError(f"{name}: attn_layer: {err}") from None
        expansion = _EXPANSION[self.block]
        blocks = []
        in_ch = 64
        for stage, (count, width) in enumerate(zip(layers, STAGE_WIDTHS, strict=True)):
            for i in range(count):
                stride = 2 if stage > 0 and i == 0 else 1
                out_ch = width * expansion
                try:
                    se = create_config(attn, out_ch, **kwargs) if attn not in (None, "simam") else None
                    sim = create_config(attn, width, **kwargs) if attn == "simam" else None
                except ConfigError as err:
                    raise ConfigError(f"{name}: layer{stage + 1}.{i}: {err}") from None
                if se is not None and (getattr(se, "stride", 1) != 1
                                       or (getattr(se, "out_channels", None) or out_ch) != out_ch):
                    raise ConfigError(f"{name}: attn_layer {attn!r} must keep its input's channels and size inside "
                                      f"a block; attn_kwargs {dict(kwargs)} change them")
                blocks.append(BlockSpec(f"layer{stage + 1}.{i}", self.block, in_ch, width, out_ch, stride,
                                        stride != 1 or in_ch != out_ch, se, sim))
                in_ch = out_ch
        object.__setattr__(self, "blocks", tuple(blocks))

    @property
    def channels_required(self) -> int:
        return self.in_chans

    @property
    def num_features(self) -> int:
        return STAGE_WIDTHS[-1] * _EXPANSION[self.block]

    def stem(self) -> dict[str, Any]:
        return {"conv1": Conv(self.in_chans, 64, 7, 2, 3), "bn1": BatchNorm(64, self.bn_eps, self.bn_momentum)}

    def head(self) -> Linear:
        return Linear(self.num_features, self.num_classes)

    def param_table(self) -> tuple[ParamSpec, ...]:
        table: list[ParamSpec] = []
        for name, layer in self.stem().items():
            table += layer.params(name)
        for b in self.blocks:
            layers = b.layers(self.bn_eps, self.bn_momentum)
            for name, layer in layers.items():
                if name == "downsample.0" and b.attn is not None:
                    table += [ParamSpec(f"{b.name}.se.{p.name}", p.shape, p.role) for p in b.attn.param_table()]
                table += layer.params(f"{b.name}.{name}")
            if b.attn is not None and not b.downsample:
                table += [ParamSpec(f"{b.name}.se.{p.name}", p.shape, p.role) for p in b.attn.param_table()]
        table += self.head().params("fc")
        return tuple(table)

    def reference_forward(self, x: Node, params: Mapping[str, Node], training: bool = False,
                          taps: dict[str, Node] | None = None) -> Node:
        stem = self.stem()
        x = ops.relu(stem["bn1"](stem["conv1"](x, params, "conv1"), params, "bn1", training))
        x = ops.max_pool2d(x, 3, 2, 1)
        for b in self.blocks:
            layers = b.layers(self.bn_eps, self.bn_momentum)
            p = b.name
            out = ops.relu(layers["bn1"](layers["conv1"](x, params, f"{p}.conv1"), params, f"{p}.bn1", training))
            out = layers["conv2"](out, params, f"{p}.conv2")
            if b.simam is not None:
                out = b.simam.reference_forward(out, {}, training)
            out = layers["bn2"](out, params, f"{p}.bn2", training)
            if b.block == "bottleneck":
                out = ops.relu(out)
                out = layers["bn3"](layers["conv3"](out, params, f"{p}.conv3"), params, f"{p}.bn3", training)
            if b.attn is not None:
                out = b.attn.reference_forward(out, subtree(params, f"{p}.se"), training)
            shortcut = x
            if b.downsample:
                shortcut = layers["downsample.1"](layers["downsample.0"](x, params, f"{p}.downsample.0"), params,
                                                  f"{p}.downsample.1", training)
            x = ops.relu(ops.add(out, shortcut))
            if taps is not None:
                taps[p] = x
        pooled = ops.mean(x, (2, 3), keepdims=False)
        return self.head()(pooled, params, "fc")
