"""SimAM, a parameter-free 3-D attention.

Paper: Lingxiao Yang, Ru-Yuan Zhang, Lida Li, Xiaohua Xie. "SimAM: A Simple, Parameter-Free Attention Module for
Convolutional Neural Networks", ICML 2021, PMLR 139:11863-11874.

Half precision is computed in float32, by the rule of every module (:func:`attn_core.precision.compute_dtype`).
Written as the spec is, ``d = (x - mean)^2``, ``v = sum(d) / n``, ``d / (4 (v + lambda))``, the formula breaks
in float16 in three places:

- ``d`` overflows float16's 65504 once ``|x - mean| > 255.9``: inf, then inf / inf = NaN in the gate;
- the sum behind ``v`` overflows much sooner, once the channel's mean square deviation passes 65504 / (H*W), i.e.
  an ordinary standard deviation of 4.6 on a 56 x 56 map: ``v = inf`` makes every gate sigmoid(0.5), finite and
  silently wrong;
- the gradient of the division with respect to its denominator ``b = 4 (v + lambda)`` is ``-d * b^-2``, and where
  ``v = 0`` (H*W = 1, a constant channel) ``b^-2 = 6.25e6`` with the default lambda: inf in float16, times
  ``d = 0`` gives NaN.

Every backend therefore computes SimAM of a float16 or bfloat16 input in float32, the statistics, the gate and the
product ``x * gate`` alike, and rounds the result to the input's dtype once; autodiff then forms the whole backward
pass in float32 too (``cotangent * x``, 9e4 for a cotangent of 3 on an ``x`` of 3e4, would overflow float16) and
rounds only the input gradient. It is the spec's formula, unchanged: equal in exact arithmetic, no new case to reason
about, ``simam_denominator_count``'s H*W = 1 rule included. For a float16 input ``|x - mean| <= 131008``, so
``d <= 1.72e10`` and ``sum(d) <= 1.72e10 * H*W``: nothing overflows float32 for any float16 input. For bfloat16,
which has float32's exponent range, the result is finite wherever float32's result on the same values is. float32
and float64 inputs are computed in their own dtype, as before, with no cast at all.

Extreme scales, decided here for every backend (:func:`simam_deviation_scale`). The energy is invariant to the
input's scale up to ``e_lambda``, but ``d = (x - mean)^2`` and its sum are not: in float32, inputs scaled by 3e18
make ``v`` inf (every gate sigmoid(0.5)) and 1e20 makes ``d`` inf (NaN gates). So with ``s = max |x - mean|`` per
(sample, channel), taken as 1 where it is 0 (a constant map), every backend and the reference compute

    ``u = (x - mean) / s``, ``d' = u^2``, ``v' = sum(d') / n``, ``e = d' / (4 (v' + lambda / s / s)) + 0.5``,

equal to the spec's ``d / (4 (v + lambda))`` in exact arithmetic (Paddle keeps its fused instance_norm form where
the input is small enough that no square of it can overflow), with ``|u| <= 1`` and ``v' <= H*W / n``: nothing
overflows for any finite input whose ``x - mean`` is finite. ``lambda / s / s`` underflows to 0 for huge ``s``
(negligible there) and overflows to inf for tiny ``s``, where the gate is sigmoid(0.5) to the dtype's precision
anyway. ``s`` is treated as a constant by autodiff: the result does not depend on it, so its derivative is 0 and
the gradient stays exact. ``s`` is formed as ``max(max(x) - mean, mean - min(x))``, two reductions of ``x`` with
no temporary, and the mean is first clamped into ``[min(x), max(x)]``, where it lies in exact arithmetic: a rounded
mean of a constant channel (1e17 repeated: its float32 sum rounds) would otherwise leave deviations of its rounding
error that the scale-free form, rightly ignoring scale, turns into gates far from sigmoid(0.5). The clamp moves the
value only; its gradient is the mean's. The ports also form the mean as ``sum(x * p) / (H*W * p)`` with the power of two
``p`` of :func:`simam_mean_prescale`, so that the sum does not overflow for float32 inputs near the dtype's maximum
(the float64 reference's plain mean cannot overflow there); scaling by a power of two is exact, so on ordinary
inputs this is the plain mean to the bit. Cost: the min and max reductions, one division pass and the scaled copy
behind the mean.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from . import ops
from .autodiff import Node
from .spec import AttentionConfig, ConfigError, ParamSpec

__all__ = ["SimAMConfig", "simam_denominator_count", "simam_deviation_scale", "simam_mean_prescale"]


def simam_denominator_count(h: int, w: int) -> int:
    """The divisor of the energy's variance term: ``n = H * W - 1``, taken as 1 when H * W = 1.

    At H * W = 1 every ``d = (x - mean)^2`` is exactly 0, so the formula's 0 / 0 has the limit 0 and the gate is
    sigmoid(0.5); dividing the zero sum by 1 instead of 0 gives exactly that, with no NaN, in every framework.
    """
    return max(h * w - 1, 1)


def simam_mean_prescale(h: int, w: int) -> float:
    """``p = 2^-ceil(log2(H*W))``: the sum of H*W values of at most the dtype's maximum times ``p`` cannot overflow,
    and multiplying by a power of two is exact (see the module docstring)."""
    return 2.0 ** -math.ceil(math.log2(h * w))


def simam_deviation_scale(max_abs_deviation: np.ndarray) -> np.ndarray:
    """The divisor ``s`` of ``x - mean`` (see the module docstring): ``max |x - mean|`` per (sample, channel), 1 where
    that is 0 (a constant map, whose deviations are all 0 whatever they are divided by); NaN stays NaN. The ports
    apply the same rule in their own ops."""
    return np.where(max_abs_deviation == 0, 1.0, max_abs_deviation)


@dataclass(frozen=True)
class SimAMConfig(AttentionConfig):
    """SimAM (Yang et al., ICML 2021): parameter-free attention from an energy function per neuron.

    With ``n = H*W - 1``, ``d = (x - mean_hw(x))^2`` and ``v = sum_hw(d) / n``:
    ``y = x * sigmoid(d / (4 * (v + e_lambda)) + 0.5)``, computed scale-free so that it does not overflow (see
    :func:`simam_deviation_scale`). At H*W = 1 the gate is sigmoid(0.5) (see :func:`simam_denominator_count`).
    float16 and bfloat16 inputs are computed in float32 and the result rounded once, since ``d`` and its sum
    overflow float16 for ordinary activations (see :func:`attn_core.precision.compute_dtype`).

    Args:
        channels: expected C, checked on input; ``None`` accepts any channel count (the math has no parameters).
        e_lambda: the regulariser lambda, 1e-4 by default (the paper's default; its own ImageNet runs used 0.1).

    Shapes: input (N, C, H, W) in torch and Paddle, (N, H, W, C) in Flax; output the same shape.
    Parameters: none.
    """

    module_name: ClassVar[str] = "SimAM"
    half_in_float32: ClassVar[bool] = True  # attn_core.precision: half inputs computed in float32

    channels: int | None = None
    e_lambda: float = 1e-4

    def __post_init__(self) -> None:
        self._check_positive_ints("channels", optional=True)
        if isinstance(self.e_lambda, bool) or not isinstance(self.e_lambda, (int, float)) \
                or not np.isfinite(self.e_lambda) or self.e_lambda <= 0:
            raise ConfigError(f"{self.module_name}: e_lambda must be a positive finite number, got {self.e_lambda!r}")

    def param_table(self) -> tuple[ParamSpec, ...]:
        return ()

    def reference_forward(self, x: Node, params: Mapping[str, Node], training: bool = False,
                          taps: dict[str, Node] | None = None) -> Node:
        h, w = x.shape[2], x.shape[3]
        n = simam_denominator_count(h, w)
        lo, hi = x.value.min(axis=(2, 3), keepdims=True), x.value.max(axis=(2, 3), keepdims=True)
        m = ops.mean(x, (2, 3))
        clamped = np.minimum(np.maximum(m.value, lo), hi)  # the value only: its gradient is the mean's
        m = ops.add(m, ops.constant(clamped - m.value))
        dev = ops.sub(x, m)
        s = simam_deviation_scale(np.maximum(hi - clamped, clamped - lo))
        d = ops.square(ops.div(dev, ops.constant(s)))  # a constant: the result does not depend on s
        v = ops.scale(ops.sum(d, (2, 3)), 1.0 / n)
        denom = ops.scale(ops.add(v, ops.constant(self.e_lambda / s / s)), 4.0)
        e = ops.add_scalar(ops.div(d, denom), 0.5)
        g = ops.sigmoid(e)
        if taps is not None:
            taps["gate"] = g
        return ops.mul(x, g)
