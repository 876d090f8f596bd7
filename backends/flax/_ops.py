"""Kernels and custom gradients of the Flax modules: the compute dtype, the activation table, the maximum whose
gradient survives recomputation under jit, and SpatialAttention's convolution as an unrolled sum."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from attn_core.precision import compute_dtype

__all__ = ["ACTIVATIONS", "compute_dtype_of", "max_pool2d", "max_with_shared_ties", "one_op_spatial_conv",
           "spatial_conv", "UNROLLED_MAX_KERNEL"]

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "sigmoid": jax.nn.sigmoid,
    "hard_sigmoid": jax.nn.hard_sigmoid,  # relu6(x + 3) / 6, slope exactly 1/6
    "hard_swish": jax.nn.hard_swish,  # x * relu6(x + 3) / 6
}


def compute_dtype_of(x: jax.Array) -> Any:
    """The dtype the modules compute ``x`` in (:func:`attn_core.precision.compute_dtype`: float32 for float16 and
    bfloat16, ``x``'s own otherwise)."""
    return jnp.dtype(compute_dtype(jnp.dtype(x.dtype).name))


def max_pool2d(x: jax.Array, window: int, stride: int, padding: int) -> jax.Array:
    """``max_pool2d(x, window, stride, padding)`` of the reference on NHWC: floor mode, -inf padding. The padding
    is a pad of -inf and the pool is VALID, the same numbers as ``nn.max_pool``'s explicit padding, because
    jax2onnx 0.17 drops explicit padding pairs of ``nn.max_pool`` and an exported model computes other logits."""
    import flax.linen as nn

    if padding:
        x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)), constant_values=-jnp.inf)
    return nn.max_pool(x, window_shape=(window, window), strides=(stride, stride), padding="VALID")


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def max_with_shared_ties(x: jax.Array, axis: int | tuple[int, ...]) -> jax.Array:
    """``jnp.max(x, axis, keepdims=True)`` whose gradient goes to the maxima in equal shares (``attn_core.ops.amax``),
    and is not lost when ``x`` is computed inside the same ``jax.jit`` program.

    JAX's own rule finds the maxima as ``x == max(x)``. Under jit XLA may compute ``x`` again for that comparison, in
    another fusion that rounds differently (a contracted multiply-add, a reduction in another order), and the mask
    then misses the maximum: the gradient is lost (jax-ml/jax 3602, 40564; an optimisation barrier does not stop it
    on XLA CPU). Here the backward pass takes the maxima as ``x == max(x)`` *or* the first position equal to the
    maximum, found by a min reduction over the positions; where no position equals it (``x`` recomputed with other
    rounding), the position of ``argmax(x)`` computed from the same ``x`` it compares. Ties share the gradient as in
    the reference, and the maximum always receives it. Where both happen at once (ties, and ``x`` recomputed with
    other rounding) the first maximum receives all of it. argmax, a variadic reduction, is slow on XLA CPU, so it runs
    only in that case (``lax.cond``).
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
    size = flat.shape[axes[0]]
    iota = jax.lax.broadcasted_iota(jnp.int32, flat.shape, axes[0])
    m_flat = m.reshape(m.shape[:axes[0]] + (1,) + m.shape[axes[-1] + 1:])
    # the first position equal to the maximum, by an ordinary (vectorised) min reduction; only where x was
    # recomputed with other rounding and no position equals it, argmax (a variadic reduction, slow on XLA CPU)
    first = jnp.min(jnp.where(flat == m_flat, iota, size), axis=axes[0], keepdims=True)
    first = jax.lax.cond(jnp.any(first == size),
                         lambda: jnp.argmax(flat, axis=axes[0], keepdims=True).astype(jnp.int32), lambda: first)
    mask = (x == m) | (iota == first).reshape(x.shape)
    count = jnp.sum(mask, axis=axes, keepdims=True).astype(g.dtype)
    # multiplied by the mask, not selected: an infinite g gives NaN off the maxima, as torch and the reference do
    return ((g / count * mask.astype(g.dtype)).astype(x.dtype),)


max_with_shared_ties.defvjp(_max_fwd, _max_bwd)


def _shifted_sum(zp: jax.Array, kernel: jax.Array, height: int, width: int) -> jax.Array:
    """``sum over i, j, c of zp[:, i:i + height, j:j + width, c] * kernel[i, j, c]``: (N, height, width, 1)."""
    k = kernel.shape[0]
    acc = None
    for i in range(k):
        for j in range(k):
            for c in range(kernel.shape[2]):
                term = zp[:, i:i + height, j:j + width, c:c + 1] * kernel[i, j, c]
                acc = term if acc is None else acc + term
    return acc


def _conv_lax(z: jax.Array, kernel: jax.Array) -> jax.Array:
    p = kernel.shape[0] // 2
    return jax.lax.conv_general_dilated(z, kernel, (1, 1), ((p, p), (p, p)), dimension_numbers=("NHWC", "HWIO", "NHWC"))


#: the largest k computed by the unrolled sum; beyond it compile time and run time grow past XLA's convolution
#: (measured: benchmarks/NOTES.md, "Flax spatial convolution crossover").
UNROLLED_MAX_KERNEL = 11


_UNROLL = contextvars.ContextVar("unroll_spatial_conv", default=True)


@contextlib.contextmanager
def one_op_spatial_conv() -> Iterator[None]:
    """Within it, :func:`spatial_conv` traces as one convolution at every k: for a converter to another format
    (jax2onnx), whose own convolution is the same numbers, and whose conversion time grows with the square of the
    program's equations (each equation's check looks through the whole graph built so far). It acts when a function
    is traced: a function jitted outside it on the same shapes keeps the program traced then."""
    token = _UNROLL.set(False)
    try:
        yield
    finally:
        _UNROLL.reset(token)


def spatial_conv(z: jax.Array, kernel: jax.Array) -> jax.Array:
    """SpatialAttention's convolution of the pooled maps ``z`` (N, H, W, C_in) with ``kernel`` (k, k, C_in, 1), odd
    k, padding k // 2: (N, H, W, 1), the same numbers as ``lax.conv_general_dilated``.

    Up to k = :data:`UNROLLED_MAX_KERNEL` the unrolled sum (:func:`_unrolled_conv`), beyond it XLA's convolution:
    the unrolled program has k * k * C_in terms, so its compile and run times grow with k * k. Within
    :func:`one_op_spatial_conv`, XLA's convolution at every k.
    """
    if kernel.shape[0] <= UNROLLED_MAX_KERNEL and _UNROLL.get():
        return _unrolled_conv(z, kernel)
    return _conv_lax(z, kernel)


@jax.custom_vjp
def _unrolled_conv(z: jax.Array, kernel: jax.Array) -> jax.Array:
    """:func:`spatial_conv` as k * k * C_in shifted multiply-adds that XLA fuses into one loop: XLA CPU's convolution
    with one output channel is several times slower than the fused sum (benchmarks/RESULTS.md).
    The gradient of ``z`` is the same sum over the padded output gradient with the kernel flipped; that of the
    kernel is XLA's weight-gradient convolution (fast there).
    """
    p = kernel.shape[0] // 2
    zp = jnp.pad(z, ((0, 0), (p, p), (p, p), (0, 0)))
    return _shifted_sum(zp, kernel, z.shape[1], z.shape[2])


def _unrolled_conv_fwd(z: jax.Array, kernel: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return _unrolled_conv(z, kernel), (z, kernel)


def _unrolled_conv_bwd(residuals: tuple[jax.Array, jax.Array], g: jax.Array) -> tuple[jax.Array, jax.Array]:
    z, kernel = residuals
    p = kernel.shape[0] // 2
    gp = jnp.pad(g, ((0, 0), (p, p), (p, p), (0, 0)))
    # dz[..., c] = sum over i, j of g shifted by (k - 1 - i, k - 1 - j) times kernel[i, j, c]
    flipped = jnp.transpose(kernel[::-1, ::-1], (0, 1, 3, 2))  # (k, k, 1, C_in)
    dz = jnp.concatenate([_shifted_sum(gp, flipped[:, :, :, c:c + 1], z.shape[1], z.shape[2])
                          for c in range(z.shape[3])], axis=-1)
    dkernel = jax.vjp(lambda w: _conv_lax(z, w), kernel)[1](g)[0]
    return dz.astype(z.dtype), dkernel.astype(kernel.dtype)


_unrolled_conv.defvjp(_unrolled_conv_fwd, _unrolled_conv_bwd)
