"""Kernels and custom gradients of the torch modules: the compute dtype, casts on use, pooled means with a light
backward, the 1x1 and 1-D convolutions as matrix products, and the activation table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from attn_core.precision import FLOAT_DTYPES, compute_dtype

__all__ = ["ACTIVATIONS", "compute_dtype_of", "conv_as", "pointwise_as", "conv1d_as", "batch_norm_as", "mean_hw",
           "mean_c", "linear_as", "group_norm_as"]

# input dtype -> compute dtype, for the dtypes attn_core.precision computes in another (half in float32)
_COMPUTE: dict[torch.dtype, torch.dtype] = {getattr(torch, d): getattr(torch, compute_dtype(d)) for d in FLOAT_DTYPES
                                            if compute_dtype(d) != d}


def compute_dtype_of(x: torch.Tensor) -> torch.dtype | None:
    """The dtype the modules compute ``x`` in (:func:`attn_core.precision.compute_dtype`), None where it is ``x``'s
    own."""
    return _COMPUTE.get(x.dtype)


def conv_as(layer: nn.Module, x: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """``layer(x)`` with the layer's weight and bias cast to ``dtype`` (None: to ``x``'s dtype where they differ,
    as inside CBAM, which hands its float32 computation of a half input to its two halves)."""
    dtype = dtype or (x.dtype if layer.weight.dtype != x.dtype else None)
    if dtype is None:
        return layer(x)
    bias = None if layer.bias is None else layer.bias.to(dtype)
    conv = F.conv1d if x.dim() == 3 else F.conv2d
    return conv(x, layer.weight.to(dtype), bias, layer.stride, layer.padding, layer.dilation, layer.groups)


class _Mean(torch.autograd.Function):
    """``x.mean(dims, keepdim)`` whose backward hands back ``dy / count`` broadcast over ``dims`` as a view.
    Autograd's own mean backward writes that broadcast out as a full tensor, one more pass over the feature map,
    before adding it to the other gradient of ``x`` (that of the product with the gate)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, dims: tuple[int, ...], keepdim: bool) -> torch.Tensor:
        ctx.size, ctx.dims, ctx.keepdim = tuple(x.shape), dims, keepdim
        return x.mean(dims, keepdim=keepdim)

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        count = 1
        for d in ctx.dims:
            count *= ctx.size[d]
        g = dy / count
        if not ctx.keepdim:
            for d in sorted(ctx.dims):
                g = g.unsqueeze(d)
        return g.expand(ctx.size), None, None


def _records_grad(x: torch.Tensor) -> bool:
    return x.requires_grad and torch.is_grad_enabled()


def mean_hw(x: torch.Tensor) -> torch.Tensor:
    """The global average pool of ``x`` (N, C, H, W) -> (N, C); its backward as in :class:`_Mean`. Without a
    gradient to record, the plain mean (an autograd Function's call overhead buys nothing there)."""
    return _Mean.apply(x, (2, 3), False) if _records_grad(x) else x.mean((2, 3))


def mean_c(x: torch.Tensor) -> torch.Tensor:
    """The mean over the channels of ``x`` (N, C, H, W) -> (N, 1, H, W); its backward as in :class:`_Mean`."""
    return _Mean.apply(x, (1,), True) if _records_grad(x) else x.mean(1, keepdim=True)


def pointwise_as(layer: nn.Conv2d, v: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """The 1x1 convolution ``layer`` on pooled features ``v`` of shape (N, C_in), as the matrix product it is:
    (N, C_out). ``F.linear`` rather than the convolution: oneDNN's convolution of a 1x1 map is slow
    (benchmarks/RESULTS.md). ``dtype`` as in :func:`conv_as`."""
    dtype = dtype or (v.dtype if layer.weight.dtype != v.dtype else None)
    weight, bias = layer.weight.flatten(1), layer.bias
    if dtype is not None:
        weight, bias = weight.to(dtype), None if bias is None else bias.to(dtype)
    return F.linear(v, weight, bias)


def conv1d_as(layer: nn.Conv1d, s: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """ECA's single-channel, bias-free 1-D convolution ``layer`` over the channel axis of ``s`` (N, C) -> (N, C),
    as zero padding, a sliding window and a dot product with the kernel (faster than ``F.conv1d`` on such a short
    row). ``dtype`` as in :func:`conv_as`."""
    dtype = dtype or (s.dtype if layer.weight.dtype != s.dtype else None)
    weight = layer.weight.reshape(-1)
    if dtype is not None:
        weight = weight.to(dtype)
    p = layer.padding[0]
    return F.pad(s, (p, p)).unfold(1, weight.shape[0], 1) @ weight


def batch_norm_as(bn: nn.BatchNorm2d, x: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """``bn(x)`` computed in ``dtype`` (None: as it is). In training the updated running statistics are written back
    to the layer's own buffers, in their own dtype, once."""
    dtype = dtype or (x.dtype if bn.weight.dtype != x.dtype else None)
    if dtype is None:
        return bn(x)
    training = bn.training or not bn.track_running_stats
    mean, var = bn.running_mean.to(dtype), bn.running_var.to(dtype)
    y = F.batch_norm(x, mean, var, bn.weight.to(dtype), bn.bias.to(dtype), training, bn.momentum, bn.eps)
    if bn.training and bn.track_running_stats:
        with torch.no_grad():
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            bn.num_batches_tracked.add_(1)
    return y


def linear_as(layer: nn.Linear, x: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """``layer(x)`` (an ``nn.Linear`` on the last axis) with its weight and bias cast to ``dtype`` (as
    :func:`conv_as`)."""
    dtype = dtype or (x.dtype if layer.weight.dtype != x.dtype else None)
    if dtype is None:
        return layer(x)
    return F.linear(x, layer.weight.to(dtype), None if layer.bias is None else layer.bias.to(dtype))


def group_norm_as(norm: nn.GroupNorm, x: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """``norm(x)`` with its affine cast to ``dtype`` (as :func:`conv_as`)."""
    dtype = dtype or (x.dtype if norm.weight.dtype != x.dtype else None)
    if dtype is None:
        return norm(x)
    return F.group_norm(x, norm.num_groups, norm.weight.to(dtype), norm.bias.to(dtype), norm.eps)


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "silu": F.silu,
    "sigmoid": torch.sigmoid,
    "hard_sigmoid": lambda x: F.relu6(x + 3.0) / 6.0,
    "hard_swish": F.hardswish,
}
# hard_sigmoid is written out because F.hardsigmoid's backward multiplies by a float32 1/6 even in float64
# (a relative gradient error of 3e-8 that the float64 conformance rows catch).
