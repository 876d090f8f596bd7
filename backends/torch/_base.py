"""What every torch module shares: its config, input checks and the activation table."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from attn_core import AttentionConfig
from attn_core.precision import COMPUTE_DTYPES, FLOAT_DTYPES

#: input dtype -> compute dtype for low-precision inputs (attn_core.precision: half computes in float32)
COMPUTE: dict[torch.dtype, torch.dtype] = {getattr(torch, k): getattr(torch, v) for k, v in COMPUTE_DTYPES.items()}


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
    gradient to record, the plain mean (an autograd Function costs about 20 us a call, a fifth of ``x * s`` on
    8x64x56x56)."""
    return _Mean.apply(x, (2, 3), False) if _records_grad(x) else x.mean((2, 3))


def mean_c(x: torch.Tensor) -> torch.Tensor:
    """The mean over the channels of ``x`` (N, C, H, W) -> (N, 1, H, W); its backward as in :class:`_Mean`."""
    return _Mean.apply(x, (1,), True) if _records_grad(x) else x.mean(1, keepdim=True)


def pointwise_as(layer: nn.Conv2d, v: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """The 1x1 convolution ``layer`` on pooled features ``v`` of shape (N, C_in), as the matrix product it is:
    (N, C_out). ``F.linear`` rather than the convolution: oneDNN's convolution of a 1x1 map costs about as much as a
    whole pass over a 56x56 feature map (benchmarks/RESULTS.md). ``dtype`` as in :func:`conv_as`."""
    dtype = dtype or (v.dtype if layer.weight.dtype != v.dtype else None)
    weight, bias = layer.weight.flatten(1), layer.bias
    if dtype is not None:
        weight, bias = weight.to(dtype), None if bias is None else bias.to(dtype)
    return F.linear(v, weight, bias)


def conv1d_as(layer: nn.Conv1d, s: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """ECA's single-channel, bias-free 1-D convolution ``layer`` over the channel axis of ``s`` (N, C) -> (N, C),
    as zero padding, a sliding window and a dot product with the kernel (a quarter of ``F.conv1d``'s time on such
    a short row). ``dtype`` as in :func:`conv_as`."""
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

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "silu": F.silu,
    "sigmoid": torch.sigmoid,
    "hard_sigmoid": lambda x: F.relu6(x + 3.0) / 6.0,
}
# hard_sigmoid is written out because F.hardsigmoid's backward multiplies by a float32 1/6 even in float64
# (a relative gradient error of 3e-8 that the float64 conformance rows catch).


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def device_dtypes(x: torch.Tensor) -> tuple[str, ...]:
    """The dtypes torch computes the modules in on ``x``'s device: every floating one on CPU and CUDA; MPS has no
    float64."""
    return FLOAT_DTYPES if x.device.type != "mps" else tuple(d for d in FLOAT_DTYPES if d != "float64")


class AttentionModule(nn.Module):
    """Base class: holds the attn_core config that decided every hyperparameter of the module."""

    config: AttentionConfig

    @classmethod
    def from_config(cls, config: AttentionConfig) -> "AttentionModule":
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.init})

    def _param_tensors(self) -> tuple[torch.Tensor, ...]:
        """The module's floating parameters, listed once: ``.to()``, ``.double()`` and ``load_state_dict`` change
        them in place (the same objects), so their dtypes are read afresh each call at the cost of a tuple."""
        params = self.__dict__.get("_params")
        if params is None:
            params = self.__dict__["_params"] = tuple(p for p in self.parameters() if p.is_floating_point())
        return params

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> "AttentionModule":
        self.__dict__.pop("_params", None)  # a conversion that swaps the parameter objects: list them again
        return super()._apply(fn, *args, **kwargs)

    def check_input(self, x: Any) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{self.config.module_name}: expected a torch.Tensor, got {type(x).__name__}")
        # the check depends on the shape and dtype of the input and the parameters only: the last combination that
        # passed is not checked again (the check costs about 15 us a call, a tenth of x * s on 8x64x56x56)
        param_dtypes = tuple(p.dtype for p in self._param_tensors())
        key = (x.shape, x.dtype, param_dtypes)
        if self.__dict__.get("_checked_input") == key:
            return
        self.config.check_input(tuple(x.shape), _name(x.dtype), x.is_floating_point(),
                                param_dtypes={_name(d) for d in param_dtypes}, device_dtypes=device_dtypes(x),
                                framework="torch")
        self.__dict__["_checked_input"] = key

    def extra_repr(self) -> str:
        return ", ".join(f"{f.name}={getattr(self.config, f.name)!r}"
                         for f in dataclasses.fields(self.config) if f.init)
