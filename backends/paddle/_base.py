"""What every Paddle module shares: its config, input checks and the activation table."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import paddle
import paddle.nn.functional as F
from paddle import nn

from attn_core import AttentionConfig


def scalar(value: float, like: paddle.Tensor) -> paddle.Tensor:
    """``value`` as a 0-d tensor of ``like``'s dtype. In a static graph (to_static) ``x + 1e-4`` and ``x / 3`` become
    scale ops with float32 attributes, 1e-12 and 6e-9 off in float64; dygraph and tensors are exact."""
    return paddle.full([], value, dtype=like.dtype)


def _hard_sigmoid(x: paddle.Tensor) -> paddle.Tensor:
    """relu6(x + 3) / 6. Paddle's default slope is 0.1666667, so 1/6 is passed; the op keeps it as a float32
    attribute, exact for float32 but 1.5e-8 off in float64, where relu6(x + 3) / 6 is computed instead."""
    if x.dtype == paddle.float64:
        return F.relu6(x + 3.0) / scalar(6.0, x)
    return F.hardsigmoid(x, slope=1.0 / 6.0, offset=0.5)


def _relu(x: paddle.Tensor) -> paddle.Tensor:
    """max(x, 0) that keeps NaN (the project's NaN policy, torch's ReLU): ``F.relu`` maps NaN to 0 and so hid a NaN
    input of SE or channel attention; ``hardtanh(x, 0, inf)`` keeps it at the cost of ``F.relu`` (``maximum`` with a
    zero tensor costs 5x more on the pooled rows)."""
    return F.hardtanh(x, 0.0, math.inf)


ACTIVATIONS: dict[str, Callable[[paddle.Tensor], paddle.Tensor]] = {
    "relu": _relu,
    "silu": F.silu,
    "sigmoid": F.sigmoid,
    "hard_sigmoid": _hard_sigmoid,
}


def mean_hw(x: paddle.Tensor) -> paddle.Tensor:
    """The mean of ``x`` (N, C, H, W) over H, W, kept as (N, C, 1, 1): ``adaptive_avg_pool2d``, whose backward on CPU
    is 5x faster than ``mean``'s (8 x 64 x 56 x 56), except in float64, where the pool misses the float64
    conformance tolerance (rtol 1e-7) and ``mean`` is used."""
    if x.dtype == paddle.float64:
        return x.mean(axis=[2, 3], keepdim=True)
    return F.adaptive_avg_pool2d(x, 1)


@paddle.jit.not_to_static
def static_shape(x: paddle.Tensor) -> tuple[int, ...]:
    """The sizes of ``x`` known when the graph is built: all in dygraph, -1 for those unknown until run time under
    ``paddle.jit.to_static`` (not transformed, so that they stay ints rather than become tensors)."""
    return tuple(int(s) for s in x.shape)


class AttentionModule(nn.Layer):
    """Base class: holds the attn_core config that decided every hyperparameter of the module."""

    config: AttentionConfig

    @classmethod
    def from_config(cls, config: AttentionConfig) -> "AttentionModule":
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.init})

    # Run as is under paddle.jit.to_static (SOT cannot trace methods of the frozen config); there x is a static
    # Value whose shape holds -1 for sizes unknown until run time, which attn_core does not check.
    @paddle.jit.marker.unified
    def check_input(self, x: Any) -> None:
        if not isinstance(x, (paddle.Tensor, paddle.pir.Value, paddle.static.Variable)):
            raise TypeError(f"{self.config.module_name}: expected a paddle.Tensor, got {type(x).__name__}")
        # the check depends on the shape and dtype only: the last pair that passed is not checked again
        key = (tuple(x.shape), x.dtype)
        if self.__dict__.get("_checked_input") == key:
            return
        self.config.check_input(key[0], str(x.dtype).removeprefix("paddle."), paddle.is_floating_point(x))
        self.__dict__["_checked_input"] = key

    def extra_repr(self) -> str:
        return ", ".join(f"{f.name}={getattr(self.config, f.name)!r}"
                         for f in dataclasses.fields(self.config) if f.init)
