"""What every Paddle module shares: its config, input checks and the activation table."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import paddle
import paddle.nn.functional as F
from paddle import nn

from attn_core import AttentionConfig
from attn_core.precision import COMPUTE_DTYPES, FLOAT_DTYPES


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


#: input dtype -> compute dtype for low-precision inputs (attn_core.precision: half computes in float32), which also
#: makes them run on CPU, whose build has kernels only to cast half tensors
COMPUTE: dict[Any, Any] = {getattr(paddle, k): getattr(paddle, v) for k, v in COMPUTE_DTYPES.items()}


def conv_as(layer: nn.Layer, x: paddle.Tensor, dtype: Any = None) -> paddle.Tensor:
    """``layer(x)`` (a Conv1D or Conv2D) with its weight and bias cast to ``dtype`` (None: to ``x``'s dtype where they
    differ, as inside CBAM, which hands its float32 computation of a half input to its two halves)."""
    dtype = dtype or (x.dtype if layer.weight.dtype != x.dtype else None)
    if dtype is None:
        return layer(x)
    bias = None if layer.bias is None else layer.bias.astype(dtype)
    conv = F.conv1d if layer._data_format == "NCL" else F.conv2d
    return conv(x, layer.weight.astype(dtype), bias, layer._stride, layer._padding, layer._dilation, layer._groups,
                data_format=layer._data_format)


@paddle.jit.not_to_static
def static_shape(x: paddle.Tensor) -> tuple[int, ...]:
    """The sizes of ``x`` known when the graph is built: all in dygraph, -1 for those unknown until run time under
    ``paddle.jit.to_static`` (not transformed, so that they stay ints rather than become tensors)."""
    return tuple(int(s) for s in x.shape)


def _name(dtype: Any) -> str:
    return str(dtype).removeprefix("paddle.")


def device_dtypes() -> tuple[str, ...]:
    """The dtypes Paddle computes in on the current device: float32 and float64 on CPU, whose build has no float16
    or bfloat16 kernels for convolutions, reductions or activations (only casts), every floating one elsewhere.
    The attention modules compute half inputs in float32 (attn_core.precision), so they take those on CPU too."""
    if paddle.device.get_device().startswith("cpu"):
        return tuple(d for d in FLOAT_DTYPES if d not in COMPUTE_DTYPES)
    return FLOAT_DTYPES


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
        # the check depends on the shapes and dtypes only: the last combination that passed is not checked again.
        # Layer.to(dtype=...) converts the parameters in place (the same objects), so the list is made once.
        params = self.__dict__.get("_params")
        if params is None:
            params = self.__dict__["_params"] = tuple(p for p in self.parameters() if paddle.is_floating_point(p))
        param_dtypes = tuple(p.dtype for p in params)
        key = (tuple(x.shape), x.dtype, param_dtypes)
        if self.__dict__.get("_checked_input") == key:
            return
        self.config.check_input(key[0], _name(x.dtype), paddle.is_floating_point(x),
                                param_dtypes={_name(d) for d in param_dtypes}, device_dtypes=device_dtypes(),
                                framework="paddle")
        self.__dict__["_checked_input"] = key

    def extra_repr(self) -> str:
        return ", ".join(f"{f.name}={getattr(self.config, f.name)!r}"
                         for f in dataclasses.fields(self.config) if f.init)
