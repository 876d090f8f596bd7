"""Squeeze-and-Excitation.

Paper: Jie Hu, Li Shen, Gang Sun. "Squeeze-and-Excitation Networks", CVPR 2018, arXiv:1709.01507.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from . import ops
from .autodiff import Node
from .spec import ParamSpec, ReducedWidthConfig, reduced_channels

__all__ = ["SEConfig", "SqueezeMLPConfig", "ACT_LAYERS", "GATE_LAYERS", "squeeze_mlp_table"]

ACT_LAYERS = ("relu", "silu")
GATE_LAYERS = ("sigmoid", "hard_sigmoid")


def squeeze_mlp_table(channels: int, hidden: int, bias: bool) -> tuple[ParamSpec, ...]:
    """The parameters of a squeeze MLP, as timm names them: 1x1 convolutions ``fc1`` (C -> hidden) and ``fc2``
    (hidden -> C), each with its bias where ``bias``."""
    c, rd = channels, hidden
    table = [ParamSpec("fc1.weight", (rd, c, 1, 1), "conv_weight")]
    if bias:
        table.append(ParamSpec("fc1.bias", (rd,), "conv_bias"))
    table.append(ParamSpec("fc2.weight", (c, rd, 1, 1), "conv_weight"))
    if bias:
        table.append(ParamSpec("fc2.bias", (c,), "conv_bias"))
    return tuple(table)


@dataclass(frozen=True)
class SqueezeMLPConfig(ReducedWidthConfig):
    """What SE and CBAM's channel attention share: two 1x1 convolutions C -> hidden -> C, their fields (SE's
    defaults; a subclass redeclares those it changes), validated and sized once."""

    bias: bool = True
    act_layer: str = "relu"
    gate_layer: str = "sigmoid"
    hidden: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        self._check_positive_ints("channels")
        self._check_choices(act_layer=ACT_LAYERS, gate_layer=GATE_LAYERS)
        self._check_flags("bias")
        hidden = reduced_channels(self.module_name, self.channels, self.rd_ratio, self.rd_channels, self.rd_divisor)
        object.__setattr__(self, "hidden", hidden)

    def param_table(self) -> tuple[ParamSpec, ...]:
        return squeeze_mlp_table(self.channels, self.hidden, self.bias)

    def mlp(self, v: Node, params: Mapping[str, Node]) -> Node:
        """fc2(act(fc1(v))) on a pooled (N, C, 1, 1) descriptor."""
        h = ops.activation(self.act_layer, ops.conv2d(v, params["fc1.weight"], params.get("fc1.bias")))
        return ops.conv2d(h, params["fc2.weight"], params.get("fc2.bias"))


@dataclass(frozen=True)
class SEConfig(SqueezeMLPConfig):
    """Squeeze-and-Excitation (Hu et al., CVPR 2018, arXiv:1709.01507).

    ``y = x * gate(fc2(act(fc1(mean_hw(x)))))``, where fc1 and fc2 are 1x1 convolutions (C -> rd -> C).

    Args:
        channels: input and output channels C.
        rd_ratio: reduction ratio of the hidden width (1/16, the paper's r = 16).
        rd_channels: hidden width; overrides ``rd_ratio`` when given.
        rd_divisor: with the default 8, the hidden width is ``C * rd_ratio`` rounded to the nearest multiple of 8
            and at least 8 (timm's SEModule). ``None`` gives exactly ``C // r`` as the seed articles do; where that
            is 0 (C < 16 at r = 16) construction fails instead of gating everything by sigmoid(0) = 0.5.
        bias: biases on both 1x1 convolutions (timm and the paper: True; the seed articles: False).
        act_layer: ``'relu'`` (paper) or ``'silu'``.
        gate_layer: ``'sigmoid'`` (paper) or ``'hard_sigmoid'`` (relu6(x + 3) / 6, slope exactly 1/6).

    Shapes: input (N, C, H, W) in torch and Paddle, (N, H, W, C) in Flax; output the same shape.
    Parameters (canonical, torch layout): ``fc1.weight`` (rd, C, 1, 1), ``fc1.bias`` (rd,),
    ``fc2.weight`` (C, rd, 1, 1), ``fc2.bias`` (C,). The same names as timm's SEModule.
    """

    module_name: ClassVar[str] = "SEModule"

    def reference_forward(self, x: Node, params: Mapping[str, Node], training: bool = False,
                          taps: dict[str, Node] | None = None) -> Node:
        g = ops.activation(self.gate_layer, self.mlp(ops.mean(x, (2, 3)), params))
        if taps is not None:
            taps["gate"] = g
        return ops.mul(x, g)
