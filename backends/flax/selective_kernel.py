"""Selective Kernel convolution in Flax. The math and its documentation: :class:`attn_core.SelectiveKernelConfig`."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from attn_core import SelectiveKernelConfig

from ._base import AttentionModule
from ._layers import batch_norm, conv, pointwise
from ._ops import ACTIVATIONS


class ConvNormAct(nn.Module):
    """One path: convolution (no bias), BatchNorm, activation; the names of timm's ``ConvNormAct`` (``conv``,
    ``bn``), computing in ``dtype``."""

    cfg: SelectiveKernelConfig
    index: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg, i = self.cfg, self.index
        k, p, d = cfg.kernels[i], cfg.paddings[i], cfg.dilations[i]
        u = conv(cfg.out, k, "conv", stride=cfg.stride, padding=p, dilation=d, groups=cfg.conv_groups, bias=False,
                 dtype=self.dtype)(x)
        u = batch_norm(train, cfg.bn_eps, cfg.bn_momentum, "bn")(u)
        return ACTIVATIONS[cfg.act_layer](u)


class Paths(nn.Module):
    """The container ``paths`` whose submodules ``'0'``, ``'1'``, ... are the paths (timm's ``nn.ModuleList``)."""

    cfg: SelectiveKernelConfig
    dtype: Any = None

    @nn.compact
    def __call__(self, inputs: tuple[jax.Array, ...], train: bool = False) -> list[jax.Array]:
        return [ConvNormAct(self.cfg, i, self.dtype, name=str(i))(xi, train) for i, xi in enumerate(inputs)]


class SelectiveKernelAttn(nn.Module):
    """The attention over the stacked paths (N, H', W', P, C): their softmax weights (N, 1, 1, P, C), timm's names
    (``fc_reduce``, ``bn``, ``fc_select``)."""

    cfg: SelectiveKernelConfig
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg = self.cfg
        s = jnp.mean(x.sum(axis=3), axis=(1, 2), keepdims=True)
        z = pointwise(cfg.attn_channels, False, "fc_reduce", self.dtype)(s)
        z = batch_norm(train, cfg.bn_eps, cfg.bn_momentum, "bn")(z)
        logits = pointwise(cfg.out * cfg.num_paths, False, "fc_select", self.dtype)(jax.nn.relu(z))
        return jax.nn.softmax(logits.reshape(logits.shape[:3] + (cfg.num_paths, cfg.out)), axis=3)


class SelectiveKernel(AttentionModule):
    __doc__ = SelectiveKernelConfig.__doc__
    _config_cls = SelectiveKernelConfig

    in_channels: int
    out_channels: int | None = None
    kernel_size: int | tuple[int, ...] | None = None
    stride: int = 1
    dilation: int = 1
    groups: int = 1
    rd_ratio: float = 1.0 / 16
    rd_channels: int | None = None
    rd_divisor: int = 8
    keep_3x3: bool = True
    split_input: bool = True
    act_layer: str = "relu"
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg, dt, xc = self.prepare(x, train)
        p = cfg.num_paths
        inputs = tuple(jnp.split(xc, p, axis=-1)) if cfg.split_input else (xc,) * p
        stacked = jnp.stack(Paths(cfg, dt, name="paths")(inputs, train), axis=3)  # (N, H', W', P, C)
        a = SelectiveKernelAttn(cfg, dt, name="attn")(stacked, train)
        if self.is_mutable_collection("intermediates"):  # (N, 1, 1, P * C), path-major as torch's (N, P * C, 1, 1)
            self.expose_gate(a.reshape(a.shape[0], 1, 1, -1), "path_attn")
        return (stacked * a.astype(dt)).sum(axis=3).astype(x.dtype)
