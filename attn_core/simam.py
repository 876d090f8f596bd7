"""SimAM, a parameter-free 3-D attention.

Paper: Lingxiao Yang, Ru-Yuan Zhang, Lida Li, Xiaohua Xie. "SimAM: A Simple, Parameter-Free Attention Module for
Convolutional Neural Networks", ICML 2021, PMLR 139:11863-11874.

Half precision, decided here once for every backend (:func:`simam_compute_dtype`). Written as the spec is,
``d = (x - mean)^2``, ``v = sum(d) / n``, ``d / (4 (v + lambda))``, the formula breaks in float16 in three places:

- ``d`` overflows float16's 65504 once ``|x - mean| > 255.9``: inf, then inf / inf = NaN in the gate;
- the sum behind ``v`` overflows much sooner, once the channel's mean square deviation passes 65504 / (H*W), i.e.
  an ordinary standard deviation of 4.6 on a 56 x 56 map: ``v = inf`` makes every gate sigmoid(0.5), finite and
  silently wrong (measured on a standard deviation of 10 at 56 x 56: 348 times the float16 tolerance, in torch
  and Flax alike);
- the gradient of the division with respect to its denominator ``b = 4 (v + lambda)`` is ``-d * b^-2``, and where
  ``v = 0`` (H*W = 1, a constant channel) ``b^-2 = 6.25e6`` with the default lambda: inf in float16, times
  ``d = 0`` gives NaN (Flax's input gradient at 1 x 1, measured).

Every backend therefore computes SimAM of a float16 or bfloat16 input in float32, the statistics, the gate and the
product ``x * gate`` alike, and rounds the result to the input's dtype once; autodiff then forms the whole backward
pass in float32 too (``cotangent * x``, 9e4 for a cotangent of 3 on an ``x`` of 3e4, would overflow float16) and
rounds only the input gradient. It is the spec's formula, unchanged: equal in exact arithmetic, no new case to reason
about, ``simam_denominator_count``'s H*W = 1 rule included. For a float16 input ``|x - mean| <= 131008``, so
``d <= 1.72e10`` and ``sum(d) <= 1.72e10 * H*W``: nothing overflows float32 for any float16 input. For bfloat16,
which has float32's exponent range, the result is finite wherever float32's result on the same values is. float32
and float64 inputs are computed in their own dtype, as before, with no cast at all.

The alternative, dividing ``x - mean`` by the channel's ``max |x - mean|`` so that ``d / (v + lambda)`` is formed from
quantities at most 1, is also exact, but costs another reduction, makes ``lambda / s^2`` overflow float16 for channels
with ``s < 3.9e-5`` (default lambda), and still rounds every intermediate and the sums to half: it fixes the overflow
but not the accuracy, and float32 does both.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar, Mapping

import numpy as np

from . import ops
from .autodiff import Node
from .precision import COMPUTE_DTYPES
from .spec import AttentionConfig, ConfigError, ParamSpec, check_positive_int

__all__ = ["SimAMConfig", "simam_denominator_count", "simam_compute_dtype", "SIMAM_COMPUTE_DTYPES"]

#: input dtype -> the dtype SimAM computes in (see the module docstring); any dtype not listed computes in its own.
SIMAM_COMPUTE_DTYPES: Mapping[str, str] = COMPUTE_DTYPES  # the rule of every module (attn_core.precision)


def simam_compute_dtype(dtype: str) -> str:
    """The dtype in which SimAM computes for an input of ``dtype`` (a name such as ``'float16'``): float32 for
    float16 and bfloat16, whose range and precision the statistics exceed; ``dtype`` itself otherwise. The result
    is cast back to ``dtype`` once, at the end."""
    return SIMAM_COMPUTE_DTYPES.get(dtype, dtype)


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
    :func:`simam_denominator_count`). float16 and bfloat16 inputs are computed in float32 and the result rounded
    once, since ``d`` and its sum overflow float16 for ordinary activations (see :func:`simam_compute_dtype`).

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
