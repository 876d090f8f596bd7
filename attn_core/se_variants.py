"""Effective Squeeze-Excitation (eSE): SE with one full-width 1x1 convolution and a hard-sigmoid gate.

Paper: Youngwan Lee, Jongyoul Park. "CenterMask: Real-Time Anchor-Free Instance Segmentation", CVPR 2020,
arXiv:1911.06667 (Section 3.2, "Effective Squeeze-Excitation"); timm class ``EffectiveSEModule``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from . import ops
from .autodiff import Node
from .se import GATE_LAYERS
from .spec import AttentionConfig, ParamSpec

__all__ = ["EffectiveSEConfig"]


@dataclass(frozen=True)
class EffectiveSEConfig(AttentionConfig):
    """Effective Squeeze-Excitation (Lee and Park, CVPR 2020, arXiv:1911.06667; timm's ``EffectiveSEModule``,
    registry key ``'ese'``).

    ``y = x * gate(fc(mean_hw(x)))`` with one 1x1 convolution C -> C with bias (no reduction, so no channel
    information is lost), and with ``add_maxpool`` the pooled descriptor ``0.5 * mean_hw(x) + 0.5 * max_hw(x)``
    (timm's experimental path, not in the paper). The gate is the hard sigmoid ``relu6(z + 3) / 6`` by default,
    its slope exactly 1/6.

    Args:
        channels: input and output channels C.
        add_maxpool: average the mean and the maximum over H, W before the convolution (False).
        gate_layer: ``'hard_sigmoid'`` (the paper and timm) or ``'sigmoid'``.

    Shapes: input (N, C, H, W) in torch and Paddle, (N, H, W, C) in Flax; output the same shape.
    Parameters (canonical, torch layout; timm's names): ``fc.weight`` (C, C, 1, 1), ``fc.bias`` (C,).
    """

    module_name: ClassVar[str] = "EffectiveSEModule"
    half_in_float32: ClassVar[bool] = True  # attn_core.precision: half inputs computed in float32

    channels: int
    add_maxpool: bool = False
    gate_layer: str = "hard_sigmoid"

    def __post_init__(self) -> None:
        self._check_positive_ints("channels")
        self._check_flags("add_maxpool")
        self._check_choices(gate_layer=GATE_LAYERS)

    def param_table(self) -> tuple[ParamSpec, ...]:
        c = self.channels
        return (ParamSpec("fc.weight", (c, c, 1, 1), "conv_weight"), ParamSpec("fc.bias", (c,), "conv_bias"))

    def reference_forward(self, x: Node, params: Mapping[str, Node], training: bool = False,
                          taps: dict[str, Node] | None = None) -> Node:
        s = ops.mean(x, (2, 3))
        if self.add_maxpool:
            s = ops.add(ops.scale(s, 0.5), ops.scale(ops.amax(x, (2, 3)), 0.5))
        g = ops.activation(self.gate_layer, ops.conv2d(s, params["fc.weight"], params["fc.bias"]))
        if taps is not None:
            taps["gate"] = g
        return ops.mul(x, g)
