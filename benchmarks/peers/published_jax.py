"""PEER CODE (not the project's): the published torch code of the modules timm lacks (``published_torch``)
transcribed to jax.numpy, on NHWC input.

Pure functions ``f(params, x, train=False)`` forward by forward, as :mod:`.jax_numpy` writes timm's: an axis of
NCHW is its place in NHWC, ``nn.Conv2d`` is ``lax.conv_general_dilated`` (HWIO), ``nn.Linear`` a matrix product,
the parameters the published state_dict's (the canonical names) laid out by :func:`params`. ``train`` runs
BatchNorm on the batch statistics, as ``module.train()`` does; the running statistics are not updated (a pure
function has nowhere to keep them). A module's hyperparameters come from the project config of the form the peer
computes (:func:`build`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .jax_numpy import Params, _batch_norm, _conv, _conv_norm_act


def srm(p: Params, x: jax.Array, train: bool = False, eps: float = 1e-5) -> jax.Array:
    """The authors' ``SRMLayer``: mean and unbiased std (+ eps under the root) per channel, the channel-wise fully
    connected ``cfc``, BatchNorm, sigmoid."""
    n, h, w, c = x.shape
    flat = x.reshape(n, h * w, c)
    channel_mean = jnp.mean(flat, axis=1)
    channel_std = jnp.sqrt(jnp.var(flat, axis=1, ddof=1) + eps)
    z = channel_mean * p["cfc"][:, 0] + channel_std * p["cfc"][:, 1]   # sum over the (mean, std) pair
    z_hat = _batch_norm(p, "bn", z[:, None, None, :], train)
    return x * jax.nn.sigmoid(z_hat)


def gct(p: Params, x: jax.Array, epsilon: float = 1e-5, mode: str = "l2", after_relu: bool = False) -> jax.Array:
    """The authors' ``GCT``."""
    if mode == "l2":
        embedding = jnp.sqrt(jnp.sum(x ** 2, axis=(1, 2), keepdims=True) + epsilon) * p["alpha"]
        norm = p["gamma"] / jnp.sqrt(jnp.mean(embedding ** 2, axis=3, keepdims=True) + epsilon)
    elif mode == "l1":
        _x = x if after_relu else jnp.abs(x)
        embedding = jnp.sum(_x, axis=(1, 2), keepdims=True) * p["alpha"]
        norm = p["gamma"] / (jnp.mean(jnp.abs(embedding), axis=3, keepdims=True) + epsilon)
    else:
        raise ValueError(f"Unknown mode! {mode!r}")
    gate = 1.0 + jnp.tanh(embedding * norm + p["beta"])
    return x * gate


def sa_layer(p: Params, x: jax.Array, groups: int = 64) -> jax.Array:
    """The authors' ``sa_layer``: torch's ``reshape(b * groups, -1, h, w)`` is (b, h, w, groups, C / groups) here;
    the GroupNorm has one channel per group, so it normalises each channel over H, W (eps 1e-5)."""
    b, h, w, c = x.shape
    x = x.reshape(b, h, w, groups, c // groups)
    half = c // groups // 2
    x_0, x_1 = x[..., :half], x[..., half:]
    xn = jnp.mean(x_0, axis=(1, 2), keepdims=True)
    xn = p["cweight"] * xn + p["cbias"]
    xn = x_0 * jax.nn.sigmoid(xn)
    mean, var = jnp.mean(x_1, axis=(1, 2), keepdims=True), jnp.var(x_1, axis=(1, 2), keepdims=True)
    xs = (x_1 - mean) / jnp.sqrt(var + 1e-5) * p["gn.weight"] + p["gn.bias"]
    xs = p["sweight"] * xs + p["sbias"]
    xs = x_1 * jax.nn.sigmoid(xs)
    out = jnp.concatenate([xn, xs], axis=-1).reshape(b, h, w, c)
    # channel_shuffle(out, 2): (2, C / 2) channels read as (C / 2, 2)
    return jnp.swapaxes(out.reshape(b, h, w, 2, c // 2), 3, 4).reshape(b, h, w, c)


def triplet(p: Params, x: jax.Array, no_spatial: bool = False, train: bool = False) -> jax.Array:
    """The authors' ``TripletAttention``: each ``SpatialGate`` pools ``cat(max, mean)`` over one axis and runs a 7x7
    ``BasicConv`` (no bias, BatchNorm, no ReLU) over the other two; the permutations of the published forward are
    which axes those are: ChannelGateH pools H and convolves (C, W), ChannelGateW pools W and convolves (H, C)."""
    def gate(name: str, pooled_max: jax.Array, pooled_mean: jax.Array) -> jax.Array:
        z = jnp.stack([pooled_max, pooled_mean], axis=-1)     # (N, A, B, 2): the conv's two spatial axes A, B
        k = p[name + ".spatial.conv.weight"].shape[0]
        return jax.nn.sigmoid(_conv_norm_act(p, name + ".spatial", z, train, padding=(k - 1) // 2,
                                             apply_act=False))[..., 0]
    s_h = gate("ChannelGateH", jnp.swapaxes(jnp.max(x, axis=1), 1, 2), jnp.swapaxes(jnp.mean(x, axis=1), 1, 2))
    x_out11 = x * jnp.swapaxes(s_h, 1, 2)[:, None, :, :]    # (N, C, W) -> (N, 1, W, C)
    s_w = gate("ChannelGateW", jnp.max(x, axis=2), jnp.mean(x, axis=2))
    x_out21 = x * s_w[:, :, None, :]                         # (N, H, C) -> (N, H, 1, C)
    if not no_spatial:
        x_out = x * gate("SpatialGate", jnp.max(x, axis=3), jnp.mean(x, axis=3))[..., None]
        return (1 / 3) * (x_out + x_out11 + x_out21)
    return (1 / 2) * (x_out11 + x_out21)


def bam(p: Params, x: jax.Array, num_layers: int = 1, dilation_conv_num: int = 2, dilation_val: int = 4,
        train: bool = False) -> jax.Array:
    """The authors' ``BAM``: ``1 + sigmoid(channel_att(x) * spatial_att(x))``, times x. The channel gate's
    ``avg_pool2d(x, H, stride=H)`` is a window of H x H (the global mean on a square map), flattened in NCHW order."""
    n, h, w, c = x.shape
    pooled = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, h, h, 1), (1, h, h, 1), "VALID") / (h * h)
    y = jnp.transpose(pooled, (0, 3, 1, 2)).reshape(n, -1)
    pre = "channel_att.gate_c.gate_c_"
    for i in range(num_layers):
        y = y @ p[f"{pre}fc_{i}.weight"] + p[f"{pre}fc_{i}.bias"]
        y = jax.nn.relu(_batch_norm(p, f"{pre}bn_{i + 1}", y[:, None, None, :], train)[:, 0, 0, :])
    channel = (y @ p[f"{pre}fc_final.weight"] + p[f"{pre}fc_final.bias"])[:, None, None, :]
    pre = "spatial_att.gate_s.gate_s_"
    s = _conv(x, p[f"{pre}conv_reduce0.weight"], p[f"{pre}conv_reduce0.bias"])
    s = jax.nn.relu(_batch_norm(p, f"{pre}bn_reduce0", s, train))
    for i in range(dilation_conv_num):
        s = _conv(s, p[f"{pre}conv_di_{i}.weight"], p[f"{pre}conv_di_{i}.bias"], (dilation_val, dilation_val),
                  dilation_val)
        s = jax.nn.relu(_batch_norm(p, f"{pre}bn_di_{i}", s, train))
    spatial = _conv(s, p[f"{pre}conv_final.weight"], p[f"{pre}conv_final.bias"])   # (N, H, W, 1)
    att = 1 + jax.nn.sigmoid(channel * spatial)
    return att * x


def _psa_channel_branch(p: Params, x: jax.Array, bottleneck: bool) -> jax.Array:
    """``spatial_pool`` of the authors' PSA (the channel-only branch): a softmax over the positions weighs
    ``conv_v_right``'s values, ``conv_up`` (PSA_s: conv, LayerNorm over its k channels, ReLU, conv) then sigmoid."""
    n, h, w, _ = x.shape
    input_x = _conv(x, p["conv_v_right.weight"]).reshape(n, h * w, -1)
    context_mask = jax.nn.softmax(_conv(x, p["conv_q_right.weight"]).reshape(n, h * w), axis=1)
    context = jnp.einsum("npi,np->ni", input_x, context_mask)[:, None, None, :]
    if bottleneck:
        z = _conv(context, p["conv_up.0.weight"], p["conv_up.0.bias"])
        mean, var = jnp.mean(z, axis=3, keepdims=True), jnp.var(z, axis=3, keepdims=True)
        z = (z - mean) / jnp.sqrt(var + 1e-5) * p["conv_up.1.weight"] + p["conv_up.1.bias"]
        context = _conv(jax.nn.relu(z), p["conv_up.3.weight"], p["conv_up.3.bias"])
    else:
        context = _conv(context, p["conv_up.weight"])
    return x * jax.nn.sigmoid(context)


def _psa_spatial_branch(p: Params, x: jax.Array, softmax_theta: bool) -> jax.Array:
    """``channel_pool`` of the authors' PSA (the spatial-only branch): the pooled ``conv_q_left`` against
    ``conv_v_left`` at every position, a softmax over the positions after the product (PSA_p) or over theta's
    positions before it (PSA_s), then sigmoid."""
    n, h, w, _ = x.shape
    avg_x = jnp.mean(_conv(x, p["conv_q_left.weight"]), axis=(1, 2))          # (N, Ci)
    theta_x = _conv(x, p["conv_v_left.weight"]).reshape(n, h * w, -1)          # (N, P, Ci)
    if softmax_theta:
        theta_x = jax.nn.softmax(theta_x, axis=1)
    context = jnp.einsum("ni,npi->np", avg_x, theta_x)
    if not softmax_theta:
        context = jax.nn.softmax(context, axis=1)
    return x * jax.nn.sigmoid(context.reshape(n, h, w, 1))


def psa_p(p: Params, x: jax.Array) -> jax.Array:
    """The authors' ``PSA_p``: the two branches on x, added."""
    return _psa_spatial_branch(p, x, False) + _psa_channel_branch(p, x, False)


def psa_s(p: Params, x: jax.Array) -> jax.Array:
    """The authors' ``PSA_s``: the channel branch, then the spatial branch on its output."""
    return _psa_spatial_branch(p, _psa_channel_branch(p, x, True), True)


def gam(p: Params, x: jax.Array, train: bool = False) -> jax.Array:
    """The tutorials' ``GAM_Attention``: the channel MLP on each position's C values (NHWC is already its
    ``permute(0, 2, 3, 1)``), then two 7x7 convolutions with BatchNorm."""
    hid = jax.nn.relu(x @ p["channel_attention.0.weight"] + p["channel_attention.0.bias"])
    x = x * jax.nn.sigmoid(hid @ p["channel_attention.2.weight"] + p["channel_attention.2.bias"])
    k = p["spatial_attention.0.weight"].shape[0]
    s = _conv(x, p["spatial_attention.0.weight"], p["spatial_attention.0.bias"], (k // 2, k // 2))
    s = jax.nn.relu(_batch_norm(p, "spatial_attention.1", s, train))
    s = _conv(s, p["spatial_attention.3.weight"], p["spatial_attention.3.bias"], (k // 2, k // 2))
    s = _batch_norm(p, "spatial_attention.4", s, train)
    return x * jax.nn.sigmoid(s)


# ------------------------------------------------------------------------------- canonical weights -> peers
def params(w: Mapping[str, np.ndarray]) -> Params:
    """The published state_dict (the canonical weights) in the layouts above: a bare (1, C, 1, 1) parameter (GCT's,
    sa_layer's) as (1, 1, 1, C), SRM's ``cfc`` as it is; a submodule's convolution OIHW -> HWIO, ``nn.Linear``
    (out, in) -> (in, out), ``LayerNorm([k, 1, 1])``'s (k, 1, 1) as k values, vectors as they are."""
    order = {4: (2, 3, 1, 0), 2: (1, 0), 1: (0,)}
    out = {}
    for key, v in w.items():
        if "." not in key:   # a parameter of the module itself: broadcast against NCHW as it is written
            out[key] = jnp.asarray(np.transpose(v, (0, 2, 3, 1)) if v.ndim == 4 else v)
        elif v.ndim == 3:
            out[key] = jnp.asarray(v.reshape(-1))
        else:
            out[key] = jnp.asarray(np.transpose(v, order[v.ndim]))
    return out


#: peer key (the published class's name) -> its function for the project config of the form it computes
_FUNCTIONS: Mapping[str, Callable[[Any], Callable[..., jax.Array]]] = {
    "SRMLayer": lambda cfg: srm,
    "GCT": lambda cfg: partial(gct, epsilon=cfg.epsilon, mode=cfg.mode, after_relu=cfg.after_relu),
    "sa_layer": lambda cfg: partial(sa_layer, groups=cfg.groups),
    "TripletAttention": lambda cfg: partial(triplet, no_spatial=cfg.no_spatial),
    "BAM": lambda cfg: bam,   # the authors' BAM(C) takes no more arguments: their defaults
    "PSA_p": lambda cfg: psa_p,
    "PSA_s": lambda cfg: psa_s,
    "GAM_Attention": lambda cfg: gam,
}
KEYS: frozenset[str] = frozenset(_FUNCTIONS)
#: those whose forward differs in training (BatchNorm on the batch): they take ``train``
TRAINS: frozenset[str] = frozenset({"SRMLayer", "TripletAttention", "BAM", "GAM_Attention"})


def build(key: str, config: Any, weights: Mapping[str, np.ndarray]) -> tuple[Callable[..., jax.Array], Params]:
    """The function of peer ``key`` for the project ``config`` and its parameters from the canonical ``weights``."""
    return _FUNCTIONS[key](config), params(weights)
