"""CBAM in Flax: ChannelAttention, SpatialAttention, CBAM. The math: :mod:`attn_core.cbam`."""

from __future__ import annotations

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp

from attn_core import CBAMConfig, ChannelAttentionConfig, SpatialAttentionConfig, bn_momentum_for

from ._base import ACTIVATIONS, AttentionModule, compute_dtype_of, pointwise
from ._norm import BatchNorm


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def max_with_shared_ties(x: jax.Array, axis: int | tuple[int, ...]) -> jax.Array:
    """``jnp.max(x, axis, keepdims=True)`` whose gradient goes to the maxima in equal shares (``attn_core.ops.amax``),
    and is not lost when ``x`` is computed inside the same ``jax.jit`` program.

    JAX's own rule finds the maxima as ``x == max(x)``. Under jit XLA may compute ``x`` again for that comparison, in
    another fusion that rounds differently (a contracted multiply-add, a reduction in another order), and the mask
    then misses the maximum: the gradient is lost (jax-ml/jax 3602, 40564; an optimisation barrier does not stop it
    on XLA CPU). Here the backward pass takes the maxima as ``x == max(x)`` *or* the position of ``argmax(x)``
    computed from the same ``x`` it compares: ties share the gradient as in the reference, and the maximum always
    receives it. Where both happen at once (ties, and ``x`` recomputed with other rounding) the first maximum
    receives all of it. The price is the argmax, slow on XLA CPU (about 17 passes of ``x * 2`` at 8 x 56 x 56 x 64,
    benchmarks/RESULTS.md); a cheaper exact rule was not found: every variant that compares values (a mask saved
    from the forward, an optimisation barrier, which XLA CPU drops) was recomputed and missed.
    """
    return jnp.max(x, axis=axis, keepdims=True)


def _max_fwd(x: jax.Array, axis: int | tuple[int, ...]) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    m = jnp.max(x, axis=axis, keepdims=True)
    return m, (x, m)


def _max_bwd(axis: int | tuple[int, ...], residuals: tuple[jax.Array, jax.Array], g: jax.Array) -> tuple[jax.Array]:
    x, m = residuals
    axes = tuple(sorted(a % x.ndim for a in ((axis,) if isinstance(axis, int) else axis)))
    if axes != tuple(range(axes[0], axes[-1] + 1)):
        raise ValueError(f"max_with_shared_ties: the reduced axes must be adjacent, got {axis}")
    # the reduced axes as one, (lead..., reduced, trail...), where argmax finds the first maximum
    flat = x.reshape(x.shape[:axes[0]] + (-1,) + x.shape[axes[-1] + 1:])
    first = jax.lax.broadcasted_iota(jnp.int32, flat.shape, axes[0]) == jnp.argmax(flat, axis=axes[0], keepdims=True)
    mask = (x == m) | first.reshape(x.shape)
    count = jnp.sum(mask, axis=axes, keepdims=True).astype(g.dtype)
    return (jnp.where(mask, g / count, jnp.zeros((), g.dtype)).astype(x.dtype),)


max_with_shared_ties.defvjp(_max_fwd, _max_bwd)


class ChannelAttention(AttentionModule):
    __doc__ = ChannelAttentionConfig.__doc__
    _config_cls = ChannelAttentionConfig

    channels: int
    rd_ratio: float = 1.0 / 16
    rd_channels: int | None = None
    rd_divisor: int | None = 1
    bias: bool = False
    act_layer: str = "relu"
    gate_layer: str = "sigmoid"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        self.check_input(x)
        cfg = self.config
        dt = compute_dtype_of(x)  # half: computed in float32, rounded once (attn_core.precision)
        xc = x.astype(dt)
        fc1, fc2 = pointwise(cfg.hidden, cfg.bias, "fc1", dt), pointwise(cfg.channels, cfg.bias, "fc2", dt)
        act = ACTIVATIONS[cfg.act_layer]
        avg = fc2(act(fc1(jnp.mean(xc, axis=(1, 2), keepdims=True))))
        mx = fc2(act(fc1(max_with_shared_ties(xc, (1, 2)))))
        return (xc * ACTIVATIONS[cfg.gate_layer](avg + mx).astype(dt)).astype(x.dtype)


class SpatialAttention(AttentionModule):
    __doc__ = SpatialAttentionConfig.__doc__
    _config_cls = SpatialAttentionConfig

    channels: int | None = None
    kernel_size: int = 7
    order: str = "mean_max"
    bias: bool = False
    norm: bool = False
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    gate_layer: str = "sigmoid"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        self.check_input(x)
        cfg = self.config
        if train:
            cfg.check_training_input(tuple(x.shape), layout="NHWC")
        dt = compute_dtype_of(x)  # half: computed in float32, rounded once (attn_core.precision)
        xc = x.astype(dt)
        avg, mx = jnp.mean(xc, axis=-1, keepdims=True), max_with_shared_ties(xc, -1)
        k, p = cfg.kernel_size, cfg.padding
        conv = nn.Conv(1, (k, k), padding=((p, p), (p, p)), use_bias=cfg.bias, dtype=dt, name="conv")
        z = conv(jnp.concatenate([avg, mx] if cfg.order == "mean_max" else [mx, avg], axis=-1))
        if cfg.norm:
            z = BatchNorm(use_running_average=not train, momentum=bn_momentum_for("flax", cfg.bn_momentum),
                          epsilon=cfg.bn_eps, name="bn")(z)
        return (xc * ACTIVATIONS[cfg.gate_layer](z).astype(dt)).astype(x.dtype)


class CBAM(AttentionModule):
    __doc__ = CBAMConfig.__doc__
    _config_cls = CBAMConfig

    channels: int
    rd_ratio: float = 1.0 / 16
    rd_channels: int | None = None
    rd_divisor: int | None = 1
    spatial_kernel_size: int = 7
    mlp_bias: bool = False
    spatial_order: str = "mean_max"
    spatial_bias: bool = False
    spatial_norm: bool = False
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    act_layer: str = "relu"
    gate_layer: str = "sigmoid"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        self.check_input(x)
        cfg = self.config
        if train:
            cfg.check_training_input(tuple(x.shape), layout="NHWC")
        dt = compute_dtype_of(x)  # half: both halves in float32, the output rounded once (attn_core.precision)
        x1 = ChannelAttention.from_config(cfg.channel, name="channel")(x.astype(dt), train)
        return SpatialAttention.from_config(cfg.spatial, name="spatial")(x1, train).astype(x.dtype)
