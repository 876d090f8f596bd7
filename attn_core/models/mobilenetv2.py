"""ECA-MobileNetV2: MobileNetV2 with ECA at the end of every inverted residual.

Papers: Mark Sandler, Andrew Howard, Menglong Zhu, Andrey Zhmoginov, Liang-Chieh Chen. "MobileNetV2: Inverted
Residuals and Linear Bottlenecks", CVPR 2018, arXiv:1801.04381; ECA: Wang et al., CVPR 2020, arXiv:1910.03151.
Structure and names follow the ECA authors' ``models/eca_mobilenetv2.py`` (BangguWu/ECANet): ECA after the
pw-linear BatchNorm, inside ``conv``, before the residual add; kernel size ``1 if c <= 96 else 3`` of the stage's
nominal width c (the code says ``<=``: the 96-channel stage gets 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar

from .. import ops
from ..autodiff import Node
from ..eca import ECAConfig
from ..spec import AttentionConfig, ConfigError, ParamSpec, check_choice, check_positive_int, is_real
from .layers import BatchNorm, Conv, Linear, subtree

__all__ = ["ECAMobileNetV2Config", "InvertedResidualSpec", "INVERTED_RESIDUAL_SETTING", "ECA_KERNEL_RULES"]

# t (expansion), c (width), n (repeats), s (first stride): Table 2 of the MobileNetV2 paper
INVERTED_RESIDUAL_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                             (6, 160, 3, 2), (6, 320, 1, 1))
ECA_KERNEL_RULES = ("authors", "eq9")


def _relu6(x: Node) -> Node:
    return ops.sub(ops.relu(x), ops.relu(ops.add_scalar(x, -6.0)))  # min(max(x, 0), 6)


@dataclass(frozen=True)
class InvertedResidualSpec:
    """One inverted residual: [pw 1x1 + BN + ReLU6] (if t != 1), dw 3x3 + BN + ReLU6, pw-linear 1x1 + BN, ECA."""

    name: str          # 'features.3'
    in_channels: int
    hidden: int
    out_channels: int
    stride: int
    expand: bool
    residual: bool
    eca: ECAConfig

    def layers(self, eps: float, momentum: float) -> dict[str, Any]:
        """Sub-layer name (relative to ``name``) -> layer, in forward order; ReLU6 follows each ``.0`` conv/BN pair
        that is a ConvBNReLU (``conv.0`` and, with expansion, ``conv.1``)."""
        bn = partial(BatchNorm, eps=eps, momentum=momentum)
        out: dict[str, Any] = {}
        i = 0
        if self.expand:
            out["conv.0.0"], out["conv.0.1"] = Conv(self.in_channels, self.hidden, 1), bn(self.hidden)
            i = 1
        out[f"conv.{i}.0"] = Conv(self.hidden, self.hidden, 3, self.stride, 1, groups=self.hidden)
        out[f"conv.{i}.1"] = bn(self.hidden)
        out[f"conv.{i + 1}"] = Conv(self.hidden, self.out_channels, 1)
        out[f"conv.{i + 2}"] = bn(self.out_channels)
        return out

    @property
    def eca_name(self) -> str:
        return f"{self.name}.conv.{4 if self.expand else 3}"


@dataclass(frozen=True)
class ECAMobileNetV2Config(AttentionConfig):
    """ECA-MobileNetV2 (Sandler et al. 2018 with ECA, Wang et al. 2020), as the ECA authors' code builds it.

    Args:
        num_classes: outputs of ``classifier.1``.
        width_mult: width multiplier; widths are ``int(c * width_mult)`` as in the authors' code (no rounding to 8).
        eca_kernel: ``'authors'`` (1 if the stage's nominal width c <= 96 else 3) or ``'eq9'`` (Eq. 9 of the ECA
            paper on the block's output channels: 3 up to 96, then 5).
        dropout: of the classifier in training (0.25 in the authors' code; a random mask: conformance uses eval or 0).
        in_chans: input channels.
        bn_eps, bn_momentum: of every BatchNorm (torch's convention for the momentum).

    Shapes: input (N, in_chans, H, W) in torch and Paddle, (N, H, W, in_chans) in Flax; output (N, num_classes).
    Parameters: the authors' torch names: ``features.0.{0,1}``, ``features.{1-17}.conv.*`` with ECA at
    ``conv.3`` (t = 1) or ``conv.4``, ``features.18.{0,1}``, ``classifier.1``.
    """

    module_name: ClassVar[str] = "ECAMobileNetV2"

    num_classes: int = 1000
    width_mult: float = 1.0
    eca_kernel: str = "authors"
    dropout: float = 0.25
    in_chans: int = 3
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    blocks: tuple[InvertedResidualSpec, ...] = field(init=False, compare=False, repr=False)
    stem_channels: int = field(init=False, compare=False, repr=False)
    last_channels: int = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        name = self.module_name
        check_positive_int(name, "num_classes", self.num_classes)
        check_positive_int(name, "in_chans", self.in_chans)
        check_choice(name, "eca_kernel", self.eca_kernel, ECA_KERNEL_RULES)
        if not (is_real(self.width_mult) and self.width_mult > 0):
            raise ConfigError(f"{name}: width_mult must be positive, got {self.width_mult!r}")
        if not (is_real(self.dropout) and 0 <= self.dropout < 1):
            raise ConfigError(f"{name}: dropout must be in [0, 1), got {self.dropout!r}")
        w = float(self.width_mult)
        in_ch = int(32 * w)
        if in_ch < 1:
            raise ConfigError(f"{name}: width_mult={w} leaves the stem with no channels")
        object.__setattr__(self, "stem_channels", in_ch)
        blocks = []
        index = 1
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            out = int(c * w)
            if out < 1:
                raise ConfigError(f"{name}: width_mult={w} leaves a stage of width {c} with no channels")
            k = (1 if c <= 96 else 3) if self.eca_kernel == "authors" else None
            for i in range(n):
                stride = s if i == 0 else 1
                hidden = int(round(in_ch * t))
                blocks.append(InvertedResidualSpec(f"features.{index}", in_ch, hidden, out, stride, t != 1,
                                                   stride == 1 and in_ch == out, ECAConfig(out, kernel_size=k)))
                in_ch = out
                index += 1
        object.__setattr__(self, "blocks", tuple(blocks))
        object.__setattr__(self, "last_channels", int(1280 * max(1.0, w)))

    @property
    def channels_required(self) -> int:
        return self.in_chans

    def stem(self) -> dict[str, Any]:
        return {"features.0.0": Conv(self.in_chans, self.stem_channels, 3, 2, 1),
                "features.0.1": BatchNorm(self.stem_channels, self.bn_eps, self.bn_momentum)}

    def last(self) -> dict[str, Any]:
        i = len(self.blocks) + 1
        return {f"features.{i}.0": Conv(self.blocks[-1].out_channels, self.last_channels, 1),
                f"features.{i}.1": BatchNorm(self.last_channels, self.bn_eps, self.bn_momentum)}

    def head(self) -> Linear:
        return Linear(self.last_channels, self.num_classes)

    def param_table(self) -> tuple[ParamSpec, ...]:
        table: list[ParamSpec] = []
        for n, layer in self.stem().items():
            table += layer.params(n)
        for b in self.blocks:
            for n, layer in b.layers(self.bn_eps, self.bn_momentum).items():
                table += layer.params(f"{b.name}.{n}")
            table += [ParamSpec(f"{b.eca_name}.{p.name}", p.shape, p.role) for p in b.eca.param_table()]
        for n, layer in self.last().items():
            table += layer.params(n)
        table += self.head().params("classifier.1")
        return tuple(table)

    def reference_forward(self, x: Node, params: Mapping[str, Node], training: bool = False,
                          taps: dict[str, Node] | None = None) -> Node:
        if training and self.dropout > 0:
            raise ConfigError(f"{self.module_name}: the reference cannot reproduce dropout's random mask; use "
                              f"dropout=0 or evaluation mode")

        def conv_bn(pairs: dict[str, Any], conv: str, bn: str, y: Node) -> Node:
            out: Node = pairs[bn](pairs[conv](y, params, conv), params, bn, training)
            return out

        stem = self.stem()
        x = _relu6(conv_bn(stem, "features.0.0", "features.0.1", x))
        for b in self.blocks:
            ls = {f"{b.name}.{k}": v for k, v in b.layers(self.bn_eps, self.bn_momentum).items()}
            names = list(ls)
            y = x
            for j in range(0, len(names) - 2, 2):       # the ConvBNReLU pairs
                y = _relu6(conv_bn(ls, names[j], names[j + 1], y))
            y = conv_bn(ls, names[-2], names[-1], y)     # pw-linear + BN
            y = b.eca.reference_forward(y, subtree(params, b.eca_name), training)
            x = ops.add(x, y) if b.residual else y
            if taps is not None:
                taps[b.name] = x
        last = self.last()
        c, bn = list(last)
        x = _relu6(conv_bn(last, c, bn, x))
        if taps is not None:  # the pooled feature map, where CAM is defined (attn_core.cam)
            taps[c.rpartition(".")[0]] = x
        return self.head()(ops.mean(x, (2, 3), keepdims=False), params, "classifier.1")
