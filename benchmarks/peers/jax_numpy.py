"""PEER CODE (not the project's): the seed articles' modules and timm's modules transcribed to jax.numpy, on NHWC
input.

Pure functions ``f(params, x)`` as one writes them without Flax: global pooling with ``jnp.mean`` / ``jnp.max``,
the MLP as matrix products, convolutions with ``jax.lax.conv_general_dilated``. Each seed follows its seed line for
line (seed 001/002 SE: ``Linear(C, C // r, bias=False)``; 002 CBAM: 1x1-conv MLP without bias, ``cat([mean, max])``,
a k x k convolution, no BatchNorm; 004 ECA; 003 SimAM with ``n = h * w - 1``). The modules timm names by a
``create_attn`` key beyond those (``TIMM_FUNCTIONS``) follow timm 1.0.31's ``timm/layers`` forwards with timm's
defaults, on timm's own parameter names. ``PARAMS`` build each function's parameters from the project's canonical
weights (torch layout).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Params = dict[str, Any]


def se(params: Params, x: jax.Array) -> jax.Array:
    """Seed 001/002 SE: ``y = sigmoid(relu(mean_hw(x) @ w1) @ w2)``; ``x * y``."""
    y = jnp.mean(x, axis=(1, 2))                               # (N, C)
    y = jax.nn.sigmoid(jax.nn.relu(y @ params["w1"]) @ params["w2"])
    return x * y[:, None, None, :]


def _channel_gate(params: Params, x: jax.Array) -> jax.Array:
    def mlp(v: jax.Array) -> jax.Array:
        return jax.nn.relu(v @ params["w1"]) @ params["w2"]
    return jax.nn.sigmoid(mlp(jnp.mean(x, axis=(1, 2))) + mlp(jnp.max(x, axis=(1, 2))))[:, None, None, :]


def _spatial_gate(params: Params, x: jax.Array) -> jax.Array:
    pooled = jnp.concatenate([jnp.mean(x, axis=3, keepdims=True), jnp.max(x, axis=3, keepdims=True)], axis=3)
    k = params["kernel"].shape[0]
    z = jax.lax.conv_general_dilated(pooled, params["kernel"], (1, 1), [(k // 2, k // 2)] * 2,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jax.nn.sigmoid(z)


def channel_attention(params: Params, x: jax.Array) -> jax.Array:
    """Seed 002 ``ChannelAttention`` applied as its CBAM does: ``x * ca(x)``."""
    return x * _channel_gate(params, x)


def spatial_attention(params: Params, x: jax.Array) -> jax.Array:
    """Seed 002 ``SpatialAttention`` applied as its CBAM does: ``x * sa(x)``."""
    return x * _spatial_gate(params, x)


def cbam(params: Params, x: jax.Array) -> jax.Array:
    """Seed 002 ``CBAM``: ``out = x * ca(x)``; ``out * sa(out)``."""
    out = x * _channel_gate(params["ca"], x)
    return out * _spatial_gate(params["sa"], out)


def eca(params: Params, x: jax.Array) -> jax.Array:
    """Seed 004 ``eca_layer``: a 1-D convolution over the pooled channels, as (N, 1, C) with kernel (1, 1, k)."""
    y = jnp.mean(x, axis=(1, 2))[:, None, :]                   # (N, 1, C)
    k = params["kernel"].shape[-1]
    y = jax.lax.conv_general_dilated(y, params["kernel"], (1,), [((k - 1) // 2, (k - 1) // 2)],
                                     dimension_numbers=("NCH", "OIH", "NCH"))
    return x * jax.nn.sigmoid(y[:, 0, :])[:, None, None, :]


def simam(params: Params, x: jax.Array, e_lambda: float = 1e-4) -> jax.Array:
    """Seed 003 ``simam_module``, NHWC."""
    b, h, w, c = x.shape
    n = w * h - 1
    x_minus_mu_square = (x - x.mean(axis=(1, 2), keepdims=True)) ** 2
    y = x_minus_mu_square / (4 * (x_minus_mu_square.sum(axis=(1, 2), keepdims=True) / n + e_lambda)) + 0.5
    return x * jax.nn.sigmoid(y)


# ------------------------------------------------------------------------- timm's modules, transcribed
# timm/layers/*.py (timm 1.0.31) forward by forward, on NHWC input: ``nn.Conv2d`` / ``nn.Conv1d`` are
# ``lax.conv_general_dilated``, an axis of NCHW is its place in NHWC, the parameters are timm's own (the canonical
# names), HWIO / WIO / (in, out) as :func:`timm_params` lays them out. ``train`` runs BatchNorm on the batch
# statistics (and bat's Dropout2d) as ``module.train()`` does; the running statistics are not updated (a pure
# function has nowhere to keep them).
def _conv(x: jax.Array, w: jax.Array, b: jax.Array | None = None, padding: tuple[int, int] = (0, 0),
          dilation: int = 1, groups: int = 1) -> jax.Array:
    """``F.conv2d`` on NHWC with an HWIO kernel, stride 1."""
    y = jax.lax.conv_general_dilated(x, w, (1, 1), [(padding[0], padding[0]), (padding[1], padding[1])],
                                     rhs_dilation=(dilation, dilation), feature_group_count=groups,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y if b is None else y + b


def _conv1d(y: jax.Array, w: jax.Array, b: jax.Array | None = None, padding: int = 0) -> jax.Array:
    """``F.conv1d`` on (N, L, C) with a (K, I, O) kernel."""
    out = jax.lax.conv_general_dilated(y, w, (1,), [(padding, padding)], dimension_numbers=("NWC", "WIO", "NWC"))
    return out if b is None else out + b


def _batch_norm(p: Params, name: str, x: jax.Array, train: bool, eps: float = 1e-5) -> jax.Array:
    """``nn.BatchNorm2d``: the running statistics in eval, the batch's (biased variance) in training."""
    if train:
        mean, var = jnp.mean(x, axis=(0, 1, 2)), jnp.var(x, axis=(0, 1, 2))
    else:
        mean, var = p[name + ".running_mean"], p[name + ".running_var"]
    return (x - mean) / jnp.sqrt(var + eps) * p[name + ".weight"] + p[name + ".bias"]


def _conv_norm_act(p: Params, name: str, x: jax.Array, train: bool, padding: int = 0, dilation: int = 1,
                   apply_act: bool = True) -> jax.Array:
    """timm's ``ConvNormAct``: convolution without bias, ``BatchNormAct2d`` (ReLU unless ``apply_act=False``)."""
    y = _batch_norm(p, name + ".bn", _conv(x, p[name + ".conv.weight"], None, (padding, padding), dilation), train)
    return jax.nn.relu(y) if apply_act else y


def effective_se(p: Params, x: jax.Array, add_maxpool: bool = False) -> jax.Array:
    """timm ``EffectiveSEModule``."""
    x_se = jnp.mean(x, axis=(1, 2), keepdims=True)
    if add_maxpool:
        x_se = 0.5 * x_se + 0.5 * jnp.max(x, axis=(1, 2), keepdims=True)
    x_se = _conv(x_se, p["fc.weight"], p["fc.bias"])
    return x * jax.nn.hard_sigmoid(x_se)


def eca_mlp(p: Params, x: jax.Array) -> jax.Array:
    """timm ``EcaModule(use_mlp=True)`` (``'ecam'``): timm's (N, 1, C) is (N, C, 1) channels-last."""
    y = jnp.mean(x, axis=(1, 2))[:, :, None]
    y = _conv1d(y, p["conv.weight"], p["conv.bias"])
    y = jax.nn.relu(y)
    k = p["conv2.weight"].shape[0]
    y = _conv1d(y, p["conv2.weight"], p["conv2.bias"], (k - 1) // 2)
    return x * jax.nn.sigmoid(y).reshape(x.shape[0], 1, 1, -1)


def circular_eca(p: Params, x: jax.Array) -> jax.Array:
    """timm ``CecaModule``: ECA whose 1-D convolution pads the channels circularly."""
    y = jnp.mean(x, axis=(1, 2))[:, :, None]
    padding = (p["conv.weight"].shape[0] - 1) // 2
    y = jnp.pad(y, ((0, 0), (padding, padding), (0, 0)), mode="wrap")
    y = _conv1d(y, p["conv.weight"], p.get("conv.bias"))
    return x * jax.nn.sigmoid(y).reshape(x.shape[0], 1, 1, -1)


def light_cbam(p: Params, x: jax.Array, train: bool = False) -> jax.Array:
    """timm ``LightCbamModule``: ``LightChannelAttn`` then ``LightSpatialAttn``."""
    x_pool = 0.5 * jnp.mean(x, axis=(1, 2), keepdims=True) + 0.5 * jnp.max(x, axis=(1, 2), keepdims=True)
    x_attn = _conv(jax.nn.relu(_conv(x_pool, p["channel.fc1.weight"], p.get("channel.fc1.bias"))),
                   p["channel.fc2.weight"], p.get("channel.fc2.bias"))
    x = x * jax.nn.sigmoid(x_attn)
    x_attn = 0.5 * jnp.mean(x, axis=3, keepdims=True) + 0.5 * jnp.max(x, axis=3, keepdims=True)
    k = p["spatial.conv.conv.weight"].shape[0]
    x_attn = _conv_norm_act(p, "spatial.conv", x_attn, train, padding=k // 2, apply_act=False)
    return x * jax.nn.sigmoid(x_attn)


def _conv_mlp(p: Params, name: str, x: jax.Array, norm: bool = False) -> jax.Array:
    """timm ``ConvMlp``: fc1, norm (``LayerNorm2d`` where given, eps 1e-6), ReLU, fc2."""
    x = _conv(x, p[name + ".fc1.weight"], p[name + ".fc1.bias"])
    if norm:
        mean, var = jnp.mean(x, axis=3, keepdims=True), jnp.var(x, axis=3, keepdims=True)
        x = (x - mean) / jnp.sqrt(var + 1e-6) * p[name + ".norm.weight"] + p[name + ".norm.bias"]
    return _conv(jax.nn.relu(x), p[name + ".fc2.weight"], p[name + ".fc2.bias"])


def gather_excite(p: Params, x: jax.Array, add_maxpool: bool = False) -> jax.Array:
    """timm ``GatherExcite`` with its defaults (the global extent, no gather parameters, the MLP)."""
    x_ge = jnp.mean(x, axis=(1, 2), keepdims=True)
    if add_maxpool:
        x_ge = 0.5 * x_ge + 0.5 * jnp.max(x, axis=(1, 2), keepdims=True)
    x_ge = _conv_mlp(p, "mlp", x_ge)
    return x * jax.nn.sigmoid(x_ge)


def global_context(p: Params, x: jax.Array) -> jax.Array:
    """timm ``GlobalContext`` (``'gc'``; ``'gca'`` is ``fuse_add=True, fuse_scale=False``: its parameters say
    which MLPs there are)."""
    b, h, w, c = x.shape
    if "conv_attn.weight" in p:
        attn = _conv(x, p["conv_attn.weight"], p["conv_attn.bias"]).reshape(b, h * w, 1)
        attn = jax.nn.softmax(attn, axis=1)
        context = jnp.swapaxes(x.reshape(b, h * w, c), 1, 2) @ attn      # (B, C, 1)
        context = context.reshape(b, 1, 1, c)
    else:
        context = jnp.mean(x, axis=(1, 2), keepdims=True)
    if "mlp_scale.fc1.weight" in p:
        x = x * jax.nn.sigmoid(_conv_mlp(p, "mlp_scale", context, norm=True))
    if "mlp_add.fc1.weight" in p:
        x = x + _conv_mlp(p, "mlp_add", context, norm=True)
    return x


def coord_attn(p: Params, x: jax.Array, train: bool = False) -> jax.Array:
    """timm ``CoordAttn``: the two strips concatenated along H (timm's dim 2, axis 1 here)."""
    identity = x
    _, h, w, _ = x.shape
    x_h = jnp.mean(x, axis=2, keepdims=True)                     # (N, H, 1, C)
    x_w = jnp.swapaxes(jnp.mean(x, axis=1, keepdims=True), 1, 2)  # (N, W, 1, C)
    y = jnp.concatenate([x_h, x_w], axis=1)
    y = _conv(y, p["conv1.weight"], p.get("conv1.bias"))
    y = _batch_norm(p, "bn1", y, train)
    y = jax.nn.hard_swish(y)
    x_h, x_w = y[:, :h], jnp.swapaxes(y[:, h:h + w], 1, 2)
    a_h = jax.nn.sigmoid(_conv(x_h, p["conv_h.weight"], p.get("conv_h.bias")))
    a_w = jax.nn.sigmoid(_conv(x_w, p["conv_w.weight"], p.get("conv_w.bias")))
    return identity * a_w * a_h


def simple_coord_attn(p: Params, x: jax.Array) -> jax.Array:
    """timm ``SimpleCoordAttn``: the strips through ``nn.Linear`` layers."""
    x_h = jax.nn.silu(jnp.mean(x, axis=2) @ p["fc1.weight"] + p["fc1.bias"])   # (N, H, rd)
    x_w = jax.nn.silu(jnp.mean(x, axis=1) @ p["fc1.weight"] + p["fc1.bias"])   # (N, W, rd)
    a_h = (x_h @ p["fc_h.weight"] + p["fc_h.bias"])[:, :, None, :]              # (N, H, 1, C)
    a_w = (x_w @ p["fc_w.weight"] + p["fc_w.bias"])[:, None, :, :]              # (N, 1, W, C)
    return x * jax.nn.sigmoid(a_h + a_w)


def _strip_convs(p: Params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The strip means and their depthwise (k, 1) and (1, k) convolutions, as ``EfficientLocalAttn`` and
    ``StripAttn`` both open."""
    c, k = x.shape[3], p["conv_h.weight"].shape[0]
    x_h = _conv(jnp.mean(x, axis=2, keepdims=True), p["conv_h.weight"], p.get("conv_h.bias"), (k // 2, 0), groups=c)
    x_w = _conv(jnp.mean(x, axis=1, keepdims=True), p["conv_w.weight"], p.get("conv_w.bias"), (0, k // 2), groups=c)
    return x_h, x_w


def efficient_local_attn(p: Params, x: jax.Array) -> jax.Array:
    """timm ``EfficientLocalAttn``: ``GroupNorm1`` (one group, eps 1e-5) and SiLU on each strip."""
    def group_norm1(name: str, y: jax.Array) -> jax.Array:
        mean, var = jnp.mean(y, axis=(1, 2, 3), keepdims=True), jnp.var(y, axis=(1, 2, 3), keepdims=True)
        return (y - mean) / jnp.sqrt(var + 1e-5) * p[name + ".weight"] + p[name + ".bias"]

    x_h, x_w = _strip_convs(p, x)
    x_h = jax.nn.silu(group_norm1("norm_h", x_h))
    x_w = jax.nn.silu(group_norm1("norm_w", x_w))
    return x * jax.nn.sigmoid(x_h) * jax.nn.sigmoid(x_w)


def strip_attn(p: Params, x: jax.Array) -> jax.Array:
    """timm ``StripAttn``."""
    x_h, x_w = _strip_convs(p, x)
    return x * jax.nn.sigmoid(x_h + x_w)


def selective_kernel(p: Params, x: jax.Array, kernel_size: tuple[int, ...] = (3, 5),
                     train: bool = False) -> jax.Array:
    """timm ``SelectiveKernel`` (``keep_3x3``, ``split_input``): 3 x 3 paths dilated (k - 1) // 2."""
    dilations = [(k - 1) // 2 for k in kernel_size]
    x_split = jnp.split(x, len(kernel_size), axis=3)
    x_paths = [_conv_norm_act(p, f"paths.{i}", x_split[i], train, padding=d, dilation=d)
               for i, d in enumerate(dilations)]
    x = jnp.stack(x_paths, axis=1)                                # (N, paths, H, W, C)
    a = jnp.mean(jnp.sum(x, axis=1), axis=(1, 2), keepdims=True)
    a = _conv(a, p["attn.fc_reduce.weight"])
    a = jax.nn.relu(_batch_norm(p, "attn.bn", a, train))
    a = _conv(a, p["attn.fc_select.weight"])                      # (N, 1, 1, paths * C)
    n, c = a.shape[0], x.shape[-1]
    a = jax.nn.softmax(a.reshape(n, len(kernel_size), 1, 1, c), axis=1)
    return jnp.sum(x * a, axis=1)


def split_attn(p: Params, x: jax.Array, radix: int = 2, groups: int = 1) -> jax.Array:
    """timm ``SplitAttn`` (no norm layer, its default)."""
    k = p["conv.weight"].shape[0]
    x = jax.nn.relu(_conv(x, p["conv.weight"], p.get("conv.bias"), (k // 2, k // 2), groups=groups * radix))
    b, h, w, rc = x.shape
    if radix > 1:
        x = x.reshape(b, h, w, radix, rc // radix)
        x_gap = jnp.sum(x, axis=3)
    else:
        x_gap = x
    x_gap = jnp.mean(x_gap, axis=(1, 2), keepdims=True)
    x_gap = jax.nn.relu(_conv(x_gap, p["fc1.weight"], p["fc1.bias"], groups=groups))
    x_attn = _conv(x_gap, p["fc2.weight"], p["fc2.bias"], groups=groups)
    if radix > 1:  # RadixSoftmax
        x_attn = jax.nn.softmax(jnp.swapaxes(x_attn.reshape(b, groups, radix, -1), 1, 2), axis=1).reshape(b, -1)
        return jnp.sum(x * x_attn.reshape(b, 1, 1, radix, rc // radix), axis=3)
    return x * jax.nn.sigmoid(x_attn)


def non_local(p: Params, x: jax.Array, use_scale: bool = True, train: bool = False) -> jax.Array:
    """timm ``NonLocalAttn``: (N, HW, rd) @ (N, rd, HW) dot products, softmax, BatchNorm, plus the input."""
    shortcut = x
    b, h, w, c_in = x.shape
    scale = c_in ** -0.5 if use_scale else 1.0
    t = _conv(x, p["t.weight"], p["t.bias"])
    p_ = _conv(x, p["p.weight"], p["p.bias"])
    g = _conv(x, p["g.weight"], p["g.bias"])
    c = t.shape[-1]
    att = t.reshape(b, h * w, c) @ jnp.swapaxes(p_.reshape(b, h * w, c), 1, 2) * scale
    att = jax.nn.softmax(att, axis=2)
    y = (att @ g.reshape(b, h * w, c)).reshape(b, h, w, c)
    y = _conv(y, p["z.weight"], p["z.bias"])
    return _batch_norm(p, "norm", y, train) + shortcut


def _resize_mat(m: jax.Array, t: int) -> jax.Array:
    """timm ``BilinearAttnTransform.resize_mat``: each (block, block) matrix becomes its Kronecker product with
    the t x t identity."""
    if t <= 1:
        return m
    b, c, s, _ = m.shape
    return (m[:, :, :, None, :, None] * jnp.eye(t, dtype=m.dtype)[:, None, :]).reshape(b, c, s * t, s * t)


def bat(p: Params, x: jax.Array, block_size: int = 7, groups: int = 2, drop_rate: float = 0.2,
        train: bool = False) -> jax.Array:
    """timm ``BatNonLocalAttn``: conv1, ``BilinearAttnTransform``, conv2, Dropout2d, plus the input."""
    xl = _conv_norm_act(p, "conv1", x, train)
    b, h, w, c = xl.shape
    out = _conv_norm_act(p, "ba.conv1", xl, train)                                     # (B, H, W, groups)
    rp = jnp.max(out.reshape(b, block_size, h // block_size, w, groups), axis=(2, 3))[:, :, None, :]
    cp = jnp.max(out.reshape(b, h, block_size, w // block_size, groups), axis=(1, 3))[:, None, :, :]
    p_ = jax.nn.sigmoid(_conv(rp, p["ba.conv_p.weight"], p["ba.conv_p.bias"]).reshape(b, groups, block_size,
                                                                                      block_size))
    q = jax.nn.sigmoid(_conv(cp, p["ba.conv_q.weight"], p["ba.conv_q.bias"]).reshape(b, groups, block_size,
                                                                                     block_size))
    p_ = p_ / jnp.sum(p_, axis=3, keepdims=True)
    q = q / jnp.sum(q, axis=2, keepdims=True)
    shape = (b, groups, c // groups, block_size, block_size)
    p_ = jnp.broadcast_to(p_[:, :, None], shape).reshape(b, c, block_size, block_size)
    q = jnp.broadcast_to(q[:, :, None], shape).reshape(b, c, block_size, block_size)
    p_ = _resize_mat(p_, h // block_size)
    q = _resize_mat(q, w // block_size)
    y = jnp.einsum("bchk,bkwc->bhwc", p_, xl)                                          # p.matmul(x)
    y = jnp.einsum("bhkc,bckw->bhwc", y, q)                                            # .matmul(q)
    y = _conv_norm_act(p, "ba.conv2", y, train)
    y = _conv_norm_act(p, "conv2", y, train)
    if train and drop_rate > 0:  # a fixed key: the same channels dropped at every call, enough to time it
        keep = jax.random.bernoulli(jax.random.key(0), 1.0 - drop_rate, (y.shape[0], 1, 1, y.shape[3]))
        y = jnp.where(keep, y / (1.0 - drop_rate), 0.0)
    return y + x


# ------------------------------------------------------------------------------- canonical weights -> peers
def _mlp(w: Mapping[str, np.ndarray], prefix: str = "") -> Params:
    return {"w1": jnp.asarray(w[prefix + "fc1.weight"][:, :, 0, 0].T),   # (C, rd)
            "w2": jnp.asarray(w[prefix + "fc2.weight"][:, :, 0, 0].T)}   # (rd, C)


def _spatial(w: Mapping[str, np.ndarray], prefix: str = "") -> Params:
    return {"kernel": jnp.asarray(np.transpose(w[prefix + "conv.weight"], (2, 3, 1, 0)))}  # OIHW -> HWIO


def timm_params(w: Mapping[str, np.ndarray]) -> Params:
    """timm's state_dict (the canonical weights) in the layouts above: convolutions OIHW -> HWIO and OIK -> KIO,
    ``nn.Linear`` (out, in) -> (in, out), vectors as they are."""
    order = {4: (2, 3, 1, 0), 3: (2, 1, 0), 2: (1, 0), 1: (0,)}
    return {k: jnp.asarray(np.transpose(v, order[v.ndim])) for k, v in w.items()}


#: the timm transcriptions, by registry key (``create_attn(key, C)`` in timm)
TIMM_FUNCTIONS: Mapping[str, Callable[..., jax.Array]] = {
    "ese": effective_se, "ecam": eca_mlp, "ceca": circular_eca, "lcbam": light_cbam, "ge": gather_excite,
    "gc": global_context, "gca": global_context, "coord": coord_attn, "scoord": simple_coord_attn,
    "ela": efficient_local_attn, "strip": strip_attn, "sk": selective_kernel, "splat": split_attn, "nl": non_local,
    "bat": bat}
#: those whose forward differs in training (BatchNorm on the batch, bat's dropout): they take ``train``
TRAINS: frozenset[str] = frozenset({"lcbam", "coord", "sk", "nl", "bat"})

PARAMS: Mapping[str, Callable[[Mapping[str, np.ndarray]], Params]] = {
    "se": _mlp,
    "ca": _mlp,
    "sa": _spatial,
    "cbam": lambda w: {"ca": _mlp(w, "channel."), "sa": _spatial(w, "spatial.")},
    "eca": lambda w: {"kernel": jnp.asarray(w["conv.weight"])},
    "simam": lambda w: {},
    **{key: timm_params for key in TIMM_FUNCTIONS},
}
FUNCTIONS: Mapping[str, Callable[..., jax.Array]] = {
    "se": se, "ca": channel_attention, "sa": spatial_attention, "cbam": cbam, "eca": eca, "simam": simam,
    **TIMM_FUNCTIONS}
