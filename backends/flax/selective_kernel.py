"""Selective Kernel convolution in Flax. The math and its documentation: :class:`attn_core.SelectiveKernelConfig`."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from attn_core import SelectiveKernelConfig, bn_momentum_for

from ._base import AttentionModule
from ._layers import pointwise
from ._norm import BatchNorm
from ._ops import ACTIVATIONS, compute_dtype_of


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
        u = nn.Conv(cfg.out, (k, k), strides=(cfg.stride, cfg.stride), padding=((p, p), (p, p)),
                    kernel_dilation=(d, d), feature_group_count=cfg.conv_groups, use_bias=False, dtype=self.dtype,
                    name="conv")(x)
        u = BatchNorm(use_running_average=not train, momentum=bn_momentum_for("flax", cfg.bn_momentum),
                      epsilon=cfg.bn_eps, name="bn")(u)
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
        z = BatchNorm(use_running_average=not train, momentum=bn_momentum_for("flax", cfg.bn_momentum),
                      epsilon=cfg.bn_eps, name="bn")(z)
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
        self.check_input(x)
        cfg = self.config
        if train:  # each BatchNorm needs more than one value per channel (attn_core's rule and message)
            cfg.check_training_input(tuple(x.shape), layout="NHWC")
        dt = compute_dtype_of(x)  # half: computed in float32, rounded once (attn_core.precision)
        xc = x.astype(dt)
        p = cfg.num_paths
        inputs = tuple(jnp.split(xc, p, axis=-1)) if cfg.split_input else (xc,) * p
        stacked = jnp.stack(Paths(cfg, dt, name="paths")(inputs, train), axis=3)  # (N, H', W', P, C)
        a = SelectiveKernelAttn(cfg, dt, name="attn")(stacked, train)
        return (stacked * a.astype(dt)).sum(axis=3).astype(x.dtype)
