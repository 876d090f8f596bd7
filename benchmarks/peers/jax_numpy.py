"""PEER CODE (not the project's): the seed articles' modules transcribed to jax.numpy, on NHWC input.

Pure functions ``f(params, x)`` as one writes them without Flax: global pooling with ``jnp.mean`` / ``jnp.max``,
the MLP as matrix products, convolutions with ``jax.lax.conv_general_dilated``. Each follows its seed line for line
(seed 001/002 SE: ``Linear(C, C // r, bias=False)``; 002 CBAM: 1x1-conv MLP without bias, ``cat([mean, max])``,
a k x k convolution, no BatchNorm; 004 ECA; 003 SimAM with ``n = h * w - 1``). ``params_*`` build each function's
parameters from the project's canonical weights (torch layout).
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


# ------------------------------------------------------------------------------- canonical weights -> peers
def _mlp(w: Mapping[str, np.ndarray], prefix: str = "") -> Params:
    return {"w1": jnp.asarray(w[prefix + "fc1.weight"][:, :, 0, 0].T),   # (C, rd)
            "w2": jnp.asarray(w[prefix + "fc2.weight"][:, :, 0, 0].T)}   # (rd, C)


def _spatial(w: Mapping[str, np.ndarray], prefix: str = "") -> Params:
    return {"kernel": jnp.asarray(np.transpose(w[prefix + "conv.weight"], (2, 3, 1, 0)))}  # OIHW -> HWIO


PARAMS: Mapping[str, Callable[[Mapping[str, np.ndarray]], Params]] = {
    "se": _mlp,
    "ca": _mlp,
    "sa": _spatial,
    "cbam": lambda w: {"ca": _mlp(w, "channel."), "sa": _spatial(w, "spatial.")},
    "eca": lambda w: {"kernel": jnp.asarray(w["conv.weight"])},
    "simam": lambda w: {},
}
FUNCTIONS: Mapping[str, Callable[[Params, jax.Array], jax.Array]] = {
    "se": se, "ca": channel_attention, "sa": spatial_attention, "cbam": cbam, "eca": eca, "simam": simam}
