"""SimAM, a parameter-free 3-D attention.

Paper: Lingxiao Yang, Ru-Yuan Zhang, Lida Li, Xiaohua Xie. "SimAM: A Simple, Parameter-Free Attention Module for
Convolutional Neural Networks", ICML 2021, PMLR 139:11863-11874.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping

import numpy as np

from . import ops
from .autodiff import Node
from .spec import AttentionConfig, ConfigError, ParamSpec, check_positive_int

__all__ = ["SimAMConfig", "simam_denominator_count"]


def simam_denominator_count(h: int, w: int) -> int:
    """The divisor of the energy's variance term: ``n = H * W - 1``, taken as 1 when H * W = 1.

    At H * W = 1 every ``d = (x - mean)^2`` is exactly 0, so the formula's 0 / 0 has the limit 0 and the gate is
    sigmoid(0.5); dividing the zero sum by 1 instead of 0 gives exactly that, with no NaN, in every framework.
    """
    return max(h * w - 1, 1)


@dataclass(frozen=True)
class SimAMConfig(AttentionConfig):
    """SimAM (Yang et al., ICML 2021): parameter-free attention from an energy function per neuron.

    With ``n = H*W - 1``, ``d = (x - mean_hw(x))^2`` and ``v = sum_hw(d) / n``:
    ``y = x * sigmoid(d / (4 * (v + e_lambda)) + 0.5)``. At H*W = 1 the gate is sigmoid(0.5) (see
    :func:`simam_denominator_count`).

    Args:
        channels: expected C, checked on input; ``None`` accepts any channel count (the math has no parameters).
        e_lambda: the regulariser lambda, 1e-4 by default (the paper's default; its own ImageNet runs used 0.1).

    Shapes: input (N, C, H, W) in torch and Paddle, (N, H, W, C) in Flax; output the same shape.
    Parameters: none.
    """

    module_name: ClassVar[str] = "SimAM"

    channels: int | None = None
    e_lambda: float = 1e-4

    def __post_init__(self) -> None:
        check_positive_int(self.module_name, "channels", self.channels, allow_none=True)
        if isinstance(self.e_lambda, bool) or not isinstance(self.e_lambda, (int, float)) \
                or not np.isfinite(self.e_lambda) or self.e_lambda <= 0:
            raise ConfigError(f"{self.module_name}: e_lambda must be a positive finite number, got {self.e_lambda!r}")

    def param_table(self) -> tuple[ParamSpec, ...]:
        return ()

    def reference_forward(self, x: Node, params: Mapping[str, Node], training: bool = False,
                          taps: dict[str, Node] | None = None) -> Node:
        h, w = x.shape[2], x.shape[3]
        n = simam_denominator_count(h, w)
        d = ops.square(ops.sub(x, ops.mean(x, (2, 3))))
        v = ops.scale(ops.sum(d, (2, 3)), 1.0 / n)
        e = ops.add_scalar(ops.div(d, ops.scale(ops.add_scalar(v, self.e_lambda), 4.0)), 0.5)
        g = ops.sigmoid(e)
        if taps is not None:
            taps["gate"] = g
        return ops.mul(x, g)
