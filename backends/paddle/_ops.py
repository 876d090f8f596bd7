"""Kernels and custom gradients of the Paddle modules: the compute dtype, exact constants in static graphs, the
activation table, casts on use, the pooled mean and the shared-maximum gradient."""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable, Iterator
from typing import Any

import paddle
import paddle.nn.functional as F
from paddle import nn
from paddle.autograd import PyLayer

from attn_core.precision import FLOAT_DTYPES, compute_dtype

__all__ = ["ACTIVATIONS", "compute_dtype_of", "scalar", "static_shape", "mean_hw", "conv_as", "amax",
           "linear_as", "group_norm", "group_norm_as", "expand_gate", "channel_shuffle", "exportable_ops"]

# input dtype -> compute dtype, for the dtypes attn_core.precision computes in another (half in float32), which also
# makes them run on CPU, whose build has kernels only to cast half tensors
_COMPUTE: dict[Any, Any] = {getattr(paddle, d): getattr(paddle, compute_dtype(d)) for d in FLOAT_DTYPES
                            if compute_dtype(d) != d}


def compute_dtype_of(x: paddle.Tensor) -> Any:
    """The dtype the modules compute ``x`` in (:func:`attn_core.precision.compute_dtype`), None where it is ``x``'s
    own."""
    return _COMPUTE.get(x.dtype)


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


_EXPORTABLE = contextvars.ContextVar("exportable_ops", default=False)


@contextlib.contextmanager
def exportable_ops() -> Iterator[None]:
    """Within it, the modules trace with operators that a converter of the saved program reads as they are:
    ReLU as a select (paddle2onnx 2.1 writes ``hardtanh`` as a clip to [-1, 1], dropping its bounds), the
    maximum as ``max``, without its PyLayer (paddle2onnx converts neither a PyLayer nor ``amax``, and an inference
    program needs no backward), and the gates, channel shuffles and GroupNorms of :func:`expand_gate`,
    :func:`channel_shuffle` and :func:`group_norm`.
    The same numbers, NaN kept; for ``paddle.jit.save``, which traces the forward within the block."""
    token = _EXPORTABLE.set(True)
    try:
        yield
    finally:
        _EXPORTABLE.reset(token)


def _relu(x: paddle.Tensor) -> paddle.Tensor:
    """max(x, 0) that keeps NaN (the project's NaN policy, torch's ReLU): ``F.relu`` maps NaN to 0 and so hid a NaN
    input of SE or channel attention; ``hardtanh(x, 0, inf)`` keeps it at the cost of ``F.relu`` (``maximum`` with a
    zero tensor is slower on the pooled rows). Within :func:`exportable_ops`, ``where(x < 0, 0, x)``."""
    if _EXPORTABLE.get():
        return paddle.where(x < 0, paddle.zeros_like(x), x)
    return F.hardtanh(x, 0.0, math.inf)


ACTIVATIONS: dict[str, Callable[[paddle.Tensor], paddle.Tensor]] = {
    "relu": _relu,
    "silu": F.silu,
    "sigmoid": F.sigmoid,
    "hard_sigmoid": _hard_sigmoid,
    "hard_swish": F.hardswish,
}


def mean_hw(x: paddle.Tensor) -> paddle.Tensor:
    """The mean of ``x`` (N, C, H, W) over H, W, kept as (N, C, 1, 1): ``adaptive_avg_pool2d``, whose backward on CPU
    is faster than ``mean``'s, except in float64, where the pool misses the float64 conformance tolerance (rtol 1e-7)
    and ``mean`` is used."""
    if x.dtype == paddle.float64:
        return x.mean(axis=[2, 3], keepdim=True)
    return F.adaptive_avg_pool2d(x, 1)




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


def linear_as(layer: nn.Linear, x: paddle.Tensor, dtype: Any = None) -> paddle.Tensor:
    """``layer(x)`` (an ``nn.Linear`` on the last axis) with its weight and bias cast to ``dtype`` (as
    :func:`conv_as`)."""
    dtype = dtype or (x.dtype if layer.weight.dtype != x.dtype else None)
    if dtype is None:
        return layer(x)
    return F.linear(x, layer.weight.astype(dtype), None if layer.bias is None else layer.bias.astype(dtype))


def group_norm(x: paddle.Tensor, groups: int, eps: float, weight: paddle.Tensor,
               bias: paddle.Tensor) -> paddle.Tensor:
    """``F.group_norm`` (channels second); within :func:`exportable_ops` as its means, over each sample's groups
    (paddle2onnx 2.1 converts ``group_norm`` 0.3 off where a group holds one value per channel)."""
    if not _EXPORTABLE.get():
        return F.group_norm(x, groups, eps, weight, bias)
    y = x.reshape([0, groups, -1])
    d = y - y.mean(axis=-1, keepdim=True)
    # back by the sizes known when tracing, N copied (a shape tensor gives paddle2onnx a wrong static shape)
    sizes = static_shape(x)[1:]
    y = (d / paddle.sqrt((d * d).mean(axis=-1, keepdim=True) + scalar(eps, d)))
    y = y.reshape([0, *sizes] if sizes.count(-1) <= 1 else paddle.shape(x))
    per_channel = [1, -1] + [1] * (len(x.shape) - 2)
    return y * weight.reshape(per_channel) + bias.reshape(per_channel)


def group_norm_as(norm: nn.GroupNorm, x: paddle.Tensor, dtype: Any = None) -> paddle.Tensor:
    """``norm(x)`` (NCHW) with its affine cast to ``dtype`` (as :func:`conv_as`), through :func:`group_norm`."""
    dtype = dtype or (x.dtype if norm.weight.dtype != x.dtype else None)
    if dtype is None and not _EXPORTABLE.get():
        return norm(x)
    dtype = dtype or x.dtype
    return group_norm(x, norm._num_groups, norm._epsilon, norm.weight.astype(dtype), norm.bias.astype(dtype))


def expand_gate(gate: paddle.Tensor, x: paddle.Tensor) -> paddle.Tensor:
    """``gate`` expanded to ``x``'s shape, for the product ``x * gate``: Paddle's CPU multiply is slower broadcasting
    a gate's size-1 axis than expanding it first. Within :func:`exportable_ops` the multiply broadcasts it
    (paddle2onnx 2.1 writes ``expand_as`` with the traced batch size, which any other batch size fails)."""
    if _EXPORTABLE.get():
        return gate
    return gate.expand_as(x)


def channel_shuffle(x: paddle.Tensor, groups: int) -> paddle.Tensor:
    """``F.channel_shuffle(x, groups)`` (NCHW); within :func:`exportable_ops` as reshapes and transposes in NHWC,
    which leave N, H and W to run time (paddle2onnx 2.1 has no converter for ``channel_shuffle``)."""
    if not _EXPORTABLE.get():
        return F.channel_shuffle(x, groups)
    c = x.shape[1]
    y = x.transpose([0, 2, 3, 1]).reshape([0, 0, 0, groups, c // groups]).transpose([0, 1, 2, 4, 3])
    return y.reshape([0, 0, 0, c]).transpose([0, 3, 1, 2])


@paddle.jit.not_to_static
def static_shape(x: paddle.Tensor) -> tuple[int, ...]:
    """The sizes of ``x`` known when the graph is built: all in dygraph, -1 for those unknown until run time under
    ``paddle.jit.to_static`` (not transformed, so that they stay ints rather than become tensors)."""
    return tuple(int(s) for s in x.shape)


class _SharedMax(PyLayer):
    """``x.amax(axis, keepdim=True)`` with the same gradient (shared equally among tied maxima, attn_core's rule),
    computed as a mask of the maxima over their count, because Paddle's own ``amax`` backward on CPU is quadratic in
    the reduced size."""

    @staticmethod
    def forward(ctx: object, x: paddle.Tensor, axis: list[int]) -> paddle.Tensor:
        y = x.amax(axis=axis, keepdim=True)
        ctx.save_for_backward(x, y)
        ctx.axis = axis
        return y

    @staticmethod
    def backward(ctx: object, dy: paddle.Tensor) -> paddle.Tensor:
        x, y = ctx.saved_tensor()
        mask = (x == y).astype(x.dtype)
        return mask * (dy / mask.sum(axis=ctx.axis, keepdim=True))


def amax(x: paddle.Tensor, axis: list[int]) -> paddle.Tensor:
    """``x.amax(axis, keepdim=True)``: through :class:`_SharedMax` where a gradient is recorded, plainly where none
    is (a PyLayer's forward alone costs as much as the rest of CBAM's); within :func:`exportable_ops`, ``max``, the
    same forward, which paddle2onnx converts (it has no converter for ``amax``)."""
    if _EXPORTABLE.get():
        return x.max(axis=axis, keepdim=True)
    if paddle.is_grad_enabled() and not x.stop_gradient:
        return _SharedMax.apply(x, axis)
    return x.amax(axis=axis, keepdim=True)
