"""NumPy float64 operations with vector-Jacobian products: the reference backend.

Layouts follow the canonical convention of the project: activations NCHW, convolution weights OIHW.
Every function takes and returns :class:`~attn_core.autodiff.Node`; ``node.value`` is the plain array.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .autodiff import Node

__all__ = [
    "constant", "add", "sub", "mul", "div", "scale", "add_scalar", "square", "sqrt",
    "relu", "sigmoid", "silu", "hard_sigmoid", "hard_swish", "exp", "tanh", "activation",
    "mean", "sum", "amax", "softmax", "concat", "reshape", "transpose", "take", "split",
    "nearest_indices", "repeat_nearest", "pad", "conv2d", "max_pool2d", "avg_pool2d", "linear", "matmul",
    "batch_norm", "BatchStats", "record_batch_stats", "running_stats_update", "normalize", "group_norm",
]


def constant(value: np.ndarray) -> Node:
    return Node(np.asarray(value, dtype=np.float64))


def _unbroadcast(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``g`` over the axes that broadcasting expanded to reach ``g.shape`` from ``shape``."""
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and g.shape[axis] != 1:
            g = g.sum(axis=axis, keepdims=True)
    return g


# ---------------------------------------------------------------------------------------------- elementwise
def add(a: Node, b: Node) -> Node:
    return Node(a.value + b.value, (a, b), lambda g: (_unbroadcast(g, a.shape), _unbroadcast(g, b.shape)))


def sub(a: Node, b: Node) -> Node:
    return Node(a.value - b.value, (a, b), lambda g: (_unbroadcast(g, a.shape), _unbroadcast(-g, b.shape)))


def mul(a: Node, b: Node) -> Node:
    av, bv = a.value, b.value
    return Node(av * bv, (a, b), lambda g: (_unbroadcast(g * bv, a.shape), _unbroadcast(g * av, b.shape)))


def div(a: Node, b: Node) -> Node:
    av, bv = a.value, b.value
    out = av / bv
    return Node(out, (a, b), lambda g: (_unbroadcast(g / bv, a.shape), _unbroadcast(-g * out / bv, b.shape)))


def scale(a: Node, c: float) -> Node:
    return Node(a.value * c, (a,), lambda g: (g * c,))


def add_scalar(a: Node, c: float) -> Node:
    return Node(a.value + c, (a,), lambda g: (g,))


def square(a: Node) -> Node:
    av = a.value
    return Node(av * av, (a,), lambda g: (2.0 * g * av,))


def sqrt(a: Node) -> Node:
    out = np.sqrt(a.value)
    return Node(out, (a,), lambda g: (g / (2.0 * out),))


def relu(a: Node) -> Node:
    """max(x, 0) that keeps NaN, as torch's ReLU does (``np.where(x > 0, x, 0)`` would hide a NaN input as 0). The
    gradient is selected, not multiplied by a mask, so that an infinite one where x <= 0 is 0 and not NaN (torch,
    JAX); it passes where x > 0 and, as torch's, where x is NaN."""
    keep = ~(a.value <= 0)
    return Node(np.where(keep, a.value, 0.0), (a,), lambda g: (np.where(keep, g, 0.0),))


def _sigmoid(v: np.ndarray) -> np.ndarray:
    # exp of -|v| never overflows, and neither branch cancels: accurate relative to the value in both tails.
    e = np.exp(-np.abs(v))
    return np.asarray(np.where(v >= 0, 1.0 / (1.0 + e), e / (1.0 + e)))


def sigmoid(a: Node) -> Node:
    s = _sigmoid(a.value)
    return Node(s, (a,), lambda g: (g * s * (1.0 - s),))


def silu(a: Node) -> Node:
    s = _sigmoid(a.value)
    av = a.value
    return Node(av * s, (a,), lambda g: (g * s * (1.0 + av * (1.0 - s)),))


def hard_sigmoid(a: Node) -> Node:
    """relu6(x + 3) / 6, the slope exactly 1/6 (Paddle's default slope is 0.1666667: see porting notes #19)."""
    av = a.value
    inside = (av > -3.0) & (av < 3.0)
    return Node(np.clip(av / 6.0 + 0.5, 0.0, 1.0), (a,), lambda g: (np.where(inside, g / 6.0, 0.0),))


def hard_swish(a: Node) -> Node:
    """x * relu6(x + 3) / 6 (torch's Hardswish; timm's ``hard_swish``)."""
    return mul(a, hard_sigmoid(a))


def exp(a: Node) -> Node:
    e = np.exp(a.value)
    return Node(e, (a,), lambda g: (g * e,))


def tanh(a: Node) -> Node:
    t = np.tanh(a.value)
    return Node(t, (a,), lambda g: (g * (1.0 - t * t),))


_ACTIVATIONS = {"relu": relu, "sigmoid": sigmoid, "silu": silu, "hard_sigmoid": hard_sigmoid,
                "hard_swish": hard_swish, "tanh": tanh}


def activation(name: str, a: Node) -> Node:
    return _ACTIVATIONS[name](a)


# ------------------------------------------------------------------------------------------------ reductions
def _axes(axis: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    return tuple(a % ndim for a in axes)


def sum(a: Node, axis: int | Sequence[int], keepdims: bool = True) -> Node:  # noqa: A001 - mirrors numpy
    axes = _axes(axis, a.value.ndim)
    out = a.value.sum(axis=axes, keepdims=keepdims)
    shape = a.shape

    def vjp(g: np.ndarray) -> tuple[np.ndarray]:
        if not keepdims:
            g = np.expand_dims(g, axes)
        return (np.broadcast_to(g, shape).copy(),)

    return Node(out, (a,), vjp)


def mean(a: Node, axis: int | Sequence[int], keepdims: bool = True) -> Node:
    axes = _axes(axis, a.value.ndim)
    count = int(np.prod([a.shape[i] for i in axes]))
    return scale(sum(a, axes, keepdims), 1.0 / count)


def amax(a: Node, axis: int | Sequence[int], keepdims: bool = True) -> Node:
    """Maximum over ``axis``; the gradient is shared equally between tied maxima."""
    axes = _axes(axis, a.value.ndim)
    out_k = a.value.max(axis=axes, keepdims=True)
    mask = a.value == out_k
    share = mask / mask.sum(axis=axes, keepdims=True)

    def vjp(g: np.ndarray) -> tuple[np.ndarray]:
        if not keepdims:
            g = np.expand_dims(g, axes)
        return (g * share,)

    return Node(out_k if keepdims else np.squeeze(out_k, axes), (a,), vjp)


def softmax(a: Node, axis: int) -> Node:
    """exp(a - max) / sum(exp(a - max)) over ``axis``; the shift is a constant, which softmax does not see."""
    shifted = sub(a, constant(a.value.max(axis=axis, keepdims=True)))
    e = exp(shifted)
    return div(e, sum(e, axis))


# ------------------------------------------------------------------------------------------------ structure
def concat(nodes: Sequence[Node], axis: int) -> Node:
    values = [n.value for n in nodes]
    splits = np.cumsum([v.shape[axis] for v in values])[:-1]
    return Node(np.concatenate(values, axis=axis), tuple(nodes), lambda g: tuple(np.split(g, splits, axis=axis)))


def reshape(a: Node, shape: Sequence[int]) -> Node:
    old = a.shape
    return Node(a.value.reshape(shape), (a,), lambda g: (g.reshape(old),))


def transpose(a: Node, axes: Sequence[int]) -> Node:
    axes = tuple(axes)
    inverse = tuple(int(i) for i in np.argsort(axes))
    return Node(np.transpose(a.value, axes), (a,), lambda g: (np.transpose(g, inverse),))


def take(a: Node, axis: int, start: int, stop: int) -> Node:
    """``a[..., start:stop, ...]`` along ``axis`` (a contiguous slice)."""
    axis %= a.value.ndim
    index = (slice(None),) * axis + (slice(start, stop),)
    shape = a.shape

    def vjp(g: np.ndarray) -> tuple[np.ndarray]:
        out = np.zeros(shape)
        out[index] = g
        return (out,)

    return Node(a.value[index], (a,), vjp)


def split(a: Node, sections: int, axis: int) -> list[Node]:
    """``a`` cut into ``sections`` equal slices along ``axis`` (as torch.split / chunk with equal sizes)."""
    size = a.shape[axis]
    if size % sections:
        raise ValueError(f"split: {size} along axis {axis} is not divisible into {sections} sections")
    step = size // sections
    return [take(a, axis, i * step, (i + 1) * step) for i in range(sections)]


def nearest_indices(size_in: int, size_out: int) -> np.ndarray:
    """The input index each of ``size_out`` outputs reads in torch's ``F.interpolate(mode='nearest')``: itself when
    the sizes are equal, ``i >> 1`` at twice the size, else ``min(floor(i * s), in - 1)`` with ``s = in / out`` and
    the product both in float32, as torch computes float32 and half inputs. That is floor(i * in / out) except where
    float32 rounds an exact integer down: in = 26, out = 44 gives output 22 input 12, not 13. (torch's float64
    kernel rounds differently for some outputs over 128 long, e.g. 50 -> 198: there its index can differ by one.)"""
    i = np.arange(size_out)
    if size_out == size_in:
        return i
    if size_out == 2 * size_in:
        return np.asarray(i // 2)
    scale = np.float32(size_in) / np.float32(size_out)
    return np.asarray(np.minimum(np.floor(i.astype(np.float32) * scale).astype(np.int64), size_in - 1))


def repeat_nearest(a: Node, size: tuple[int, int]) -> Node:
    """Nearest-neighbour resize of the last two axes to ``size``, as torch's ``F.interpolate(mode='nearest')``:
    output index i reads input index :func:`nearest_indices` (floor(i * in / out) up to torch's float32 rounding)."""
    h, w = a.shape[-2:]
    rows = nearest_indices(h, size[0])
    cols = nearest_indices(w, size[1])
    shape = a.shape

    def vjp(g: np.ndarray) -> tuple[np.ndarray]:
        out = np.zeros(shape[:-2] + (h * w,))
        flat = (rows[:, None] * w + cols[None, :]).reshape(-1)  # each output's source, as a flat H*W index
        np.add.at(out, (Ellipsis, flat), g.reshape(g.shape[:-2] + (-1,)))  # type: ignore[arg-type]
        return (out.reshape(shape),)

    return Node(a.value[..., rows[:, None], cols[None, :]], (a,), vjp)


def pad(a: Node, widths: Sequence[tuple[int, int]], mode: str = "constant") -> Node:
    """Pad every axis by ``widths`` (before, after): ``'constant'`` with zeros or ``'circular'`` (wrapping, as
    torch's ``padding_mode='circular'``; each width at most the axis' size)."""
    widths = tuple((int(lo), int(hi)) for lo, hi in widths)
    if mode not in ("constant", "circular"):
        raise ValueError(f"pad: mode must be 'constant' or 'circular', got {mode!r}")
    shape = a.shape
    if mode == "constant":
        out = np.pad(a.value, widths)
        index = tuple(slice(lo, lo + n) for (lo, _), n in zip(widths, shape, strict=True))
        return Node(out, (a,), lambda g: (g[index],))
    for (lo, hi), n in zip(widths, shape, strict=True):
        if lo > n or hi > n:
            raise ValueError(f"pad: circular padding ({lo}, {hi}) is wider than the axis ({n})")
    # the source index of every padded position, per axis
    sources = [np.arange(-lo, n + hi) % n for (lo, hi), n in zip(widths, shape, strict=True)]
    grid = np.ix_(*sources)

    def vjp(g: np.ndarray) -> tuple[np.ndarray]:
        out = np.zeros(shape)
        np.add.at(out, grid, g)
        return (out,)

    return Node(a.value[grid], (a,), vjp)


# ----------------------------------------------------------------------------------------------- convolution
def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def conv2d(
    x: Node,
    w: Node,
    b: Node | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    groups: int = 1,
    dilation: int | Sequence[int] = 1,
) -> Node:
    """Cross-correlation as torch.nn.functional.conv2d: x NCHW, w OIHW (I = C / groups), zero padding."""
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    dh, dw_ = _pair(dilation)
    xv, wv = x.value, w.value
    n, c, h, wd = xv.shape
    o, ci, kh, kw = wv.shape
    if ci * groups != c or o % groups:
        raise ValueError(f"conv2d: input channels {c} and weight {wv.shape} do not fit groups={groups}")
    xp = np.pad(xv, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    hp, wp = xp.shape[2], xp.shape[3]
    eh, ew = dh * (kh - 1) + 1, dw_ * (kw - 1) + 1  # the dilated kernel's extent
    ho, wo = (hp - eh) // sh + 1, (wp - ew) // sw + 1
    # windows: (N, C, Ho, Wo, kh, kw)
    win = np.lib.stride_tricks.sliding_window_view(xp, (eh, ew), axis=(2, 3))[:, :, ::sh, ::sw][:, :, :ho, :wo]
    win = win[..., ::dh, ::dw_]
    win_g = win.reshape(n, groups, ci, ho, wo, kh, kw)
    w_g = wv.reshape(groups, o // groups, ci, kh, kw)
    out = np.einsum("ngcijhw,gochw->ngoij", win_g, w_g, optimize=True).reshape(n, o, ho, wo)
    if b is not None:
        out = out + b.value.reshape(1, o, 1, 1)

    def vjp(g: np.ndarray) -> tuple[np.ndarray, ...]:
        g_g = g.reshape(n, groups, o // groups, ho, wo)
        dw = np.einsum("ngoij,ngcijhw->gochw", g_g, win_g, optimize=True).reshape(wv.shape)
        dxp = np.zeros_like(xp).reshape(n, groups, ci, hp, wp)
        for a in range(kh):
            for bb in range(kw):
                contrib = np.einsum("ngoij,goc->ngcij", g_g, w_g[:, :, :, a, bb], optimize=True)
                r, q = a * dh, bb * dw_
                dxp[:, :, :, r:r + sh * (ho - 1) + 1:sh, q:q + sw * (wo - 1) + 1:sw] += contrib
        dx = dxp.reshape(n, c, hp, wp)[:, :, ph:ph + h, pw:pw + wd]
        grads: list[np.ndarray] = [dx, dw]
        if b is not None:
            grads.append(g.sum(axis=(0, 2, 3)))
        return tuple(grads)

    parents = (x, w) if b is None else (x, w, b)
    return Node(out, parents, vjp)


# ---------------------------------------------------------------------------------------- pooling and dense
def _windows(xp: np.ndarray, k: tuple[int, int], s: tuple[int, int], ho: int, wo: int) -> np.ndarray:
    """(N, C, Ho, Wo, kh, kw) view of the windows of a padded NCHW array."""
    return np.lib.stride_tricks.sliding_window_view(xp, k, axis=(2, 3))[:, :, ::s[0], ::s[1]][:, :, :ho, :wo]


def _pool_geometry(x: np.ndarray, kernel: int | Sequence[int], stride: int | Sequence[int] | None,
                   padding: int | Sequence[int]) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], int, int]:
    k = _pair(kernel)
    s = _pair(stride if stride is not None else kernel)
    p = _pair(padding)
    ho = (x.shape[2] + 2 * p[0] - k[0]) // s[0] + 1
    wo = (x.shape[3] + 2 * p[1] - k[1]) // s[1] + 1
    return k, s, p, ho, wo


def max_pool2d(x: Node, kernel: int | Sequence[int], stride: int | Sequence[int] | None = None,
               padding: int | Sequence[int] = 0) -> Node:
    """Max pooling as torch's MaxPool2d (floor mode, padding by -inf); the gradient goes to the first maximum
    of each window in row-major order, as torch does."""
    k, s, p, ho, wo = _pool_geometry(x.value, kernel, stride, padding)
    xp = np.pad(x.value, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])), constant_values=-np.inf)
    win = _windows(xp, k, s, ho, wo).reshape(*xp.shape[:2], ho, wo, k[0] * k[1])
    arg = np.asarray(win.argmax(axis=-1))
    out = np.take_along_axis(win, arg[..., None], axis=-1)[..., 0]

    def vjp(g: np.ndarray) -> tuple[np.ndarray]:
        idx = np.indices(xp.shape[:2])
        n, c = idx[0], idx[1]
        i, j = np.arange(ho)[:, None] * s[0], np.arange(wo)[None, :] * s[1]
        rows = i + arg // k[1]
        cols = j + arg % k[1]
        dxp = np.zeros(xp.shape)
        np.add.at(dxp, (n[:, :, None, None], c[:, :, None, None], rows, cols), g)
        return (dxp[:, :, p[0]:p[0] + x.shape[2], p[1]:p[1] + x.shape[3]],)

    return Node(out, (x,), vjp)


def avg_pool2d(x: Node, kernel: int | Sequence[int], stride: int | Sequence[int] | None = None,
               padding: int | Sequence[int] = 0) -> Node:
    """Average pooling as torch's AvgPool2d with count_include_pad=True (padded zeros count), floor mode."""
    k, s, p, ho, wo = _pool_geometry(x.value, kernel, stride, padding)
    c = x.shape[1]
    w = np.zeros((c, 1, k[0], k[1]))
    w[:] = 1.0 / (k[0] * k[1])
    return conv2d(x, constant(w), stride=s, padding=p, groups=c)


def linear(x: Node, w: Node, b: Node | None = None) -> Node:
    """``x @ w.T + b`` with x (N, in) and w (out, in), torch's Linear layout."""
    xv, wv = x.value, w.value
    out = xv @ wv.T
    if b is not None:
        out = out + b.value

    def vjp(g: np.ndarray) -> tuple[np.ndarray, ...]:
        grads = [g @ wv, g.T @ xv]
        if b is not None:
            grads.append(g.sum(axis=0))
        return tuple(grads)

    return Node(out, (x, w) if b is None else (x, w, b), vjp)


def matmul(a: Node, b: Node) -> Node:
    """Batched matrix product over the last two axes (leading axes equal, as torch.bmm / ``@``)."""
    av, bv = a.value, b.value
    return Node(av @ bv, (a, b), lambda g: (g @ np.swapaxes(bv, -1, -2), np.swapaxes(av, -1, -2) @ g))


# --------------------------------------------------------------------------------------------- normalisation
def normalize(x: Node, axes: Sequence[int], eps: float) -> Node:
    """(x - mean) / sqrt(biased var + eps) over ``axes``: the core of LayerNorm and GroupNorm."""
    centred = sub(x, mean(x, axes))
    return div(centred, sqrt(add_scalar(mean(square(centred), axes), eps)))


def group_norm(x: Node, groups: int, weight: Node | None, bias: Node | None, eps: float) -> Node:
    """torch's GroupNorm of an NCHW input: statistics over each group's channels and H, W; per-channel affine.
    One group normalises over (C, H, W), which is timm's LayerNorm2d only when the statistics run over C alone,
    so that one is :func:`normalize` over axis 1 instead."""
    n, c, h, w = x.shape
    if c % groups:
        raise ValueError(f"group_norm: {c} channels do not divide into {groups} groups")
    y = reshape(normalize(reshape(x, (n, groups, c // groups, h, w)), (2, 3, 4), eps), (n, c, h, w))
    if weight is not None:
        y = mul(y, reshape(weight, (1, c, 1, 1)))
    if bias is not None:
        y = add(y, reshape(bias, (1, c, 1, 1)))
    return y


@dataclass(frozen=True)
class BatchStats:
    """What one BatchNorm saw in a training forward: its running-statistics nodes (by identity, so that a caller
    maps them back to canonical names however the params were split between sub-modules), the batch mean and
    the biased batch variance per channel, the count N*H*W behind them, and the module's momentum (torch
    convention, the weight of the new batch)."""

    running_mean: Node
    running_var: Node
    mean: np.ndarray
    var: np.ndarray
    count: int
    momentum: float | None


_RECORDER: contextvars.ContextVar[list[BatchStats] | None] = contextvars.ContextVar("batch_stats", default=None)


@contextlib.contextmanager
def record_batch_stats() -> Iterator[list[BatchStats]]:
    """Collect a :class:`BatchStats` for every training :func:`batch_norm` run inside the block, in call order."""
    seen: list[BatchStats] = []
    token = _RECORDER.set(seen)
    try:
        yield seen
    finally:
        _RECORDER.reset(token)


def running_stats_update(running_mean: np.ndarray, running_var: np.ndarray, stats: BatchStats,
                         momentum: float) -> tuple[np.ndarray, np.ndarray]:
    """The running statistics after one training step, in float64 (the convention of
    :class:`attn_core.SpatialAttentionConfig`, torch's): with ``m = momentum`` (weight of the new batch),
    ``mean <- (1 - m) mean + m batch_mean`` and ``var <- (1 - m) var + m batch_var * count / (count - 1)``."""
    if stats.count < 2:
        raise ValueError(f"running_stats_update: the unbiased variance needs more than one value per channel, "
                         f"got count {stats.count}")
    m = float(momentum)
    unbiased = stats.var * (stats.count / (stats.count - 1))
    new_mean = (1.0 - m) * np.asarray(running_mean, dtype=np.float64) + m * stats.mean
    new_var = (1.0 - m) * np.asarray(running_var, dtype=np.float64) + m * unbiased
    return new_mean, new_var


def batch_norm(
    x: Node,
    weight: Node,
    bias: Node,
    running_mean: Node,
    running_var: Node,
    training: bool,
    eps: float,
    momentum: float | None = None,
) -> Node:
    """BatchNorm over (N, H, W) of an NCHW input.

    Training normalises with the biased batch variance (as every framework does) and needs more than one value
    per channel (N*H*W > 1; a ValueError otherwise); evaluation uses the running statistics. Updating the running
    statistics is not part of the forward value: inside :func:`record_batch_stats` a training call records its
    batch statistics and ``momentum`` (torch convention), which :func:`running_stats_update` turns into the new
    running statistics (see ``AttentionConfig.reference_state``).
    """
    shape = (1, -1, 1, 1)
    if training:
        n, _, h, w = x.shape
        count = n * h * w
        if count < 2:
            raise ValueError(f"batch_norm: BatchNorm in training needs more than one value per channel, got input "
                             f"shape {tuple(x.shape)}")
        mu = mean(x, (0, 2, 3))
        centred = sub(x, mu)
        var = mean(square(centred), (0, 2, 3))
        xhat = div(centred, sqrt(add_scalar(var, eps)))
        recorder = _RECORDER.get()
        if recorder is not None:
            recorder.append(BatchStats(running_mean, running_var, mu.value.reshape(-1).copy(),
                                       var.value.reshape(-1).copy(), count, momentum))
    else:
        rm = reshape(running_mean, shape)
        rv = reshape(running_var, shape)
        xhat = div(sub(x, rm), sqrt(add_scalar(rv, eps)))
    return add(mul(xhat, reshape(weight, shape)), reshape(bias, shape))
