"""Polarized Self-Attention in Flax. The math and its documentation: :class:`attn_core.PSAConfig`."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from attn_core import PSAConfig

from ._base import AttentionModule
from ._layers import pointwise

_KAIMING = nn.initializers.variance_scaling(2.0, "fan_in", "normal")  # the authors' kaiming_normal (fan in)


def _layer_norm(h: jax.Array, weight: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
    """LayerNorm of ``h`` (N, 1, 1, C) over C with the two-pass variance; ``weight``, ``bias`` (C,)."""
    centred = h - jnp.mean(h, axis=-1, keepdims=True)
    var = jnp.mean(centred * centred, axis=-1, keepdims=True)
    return centred * jax.lax.rsqrt(var + eps) * weight.astype(h.dtype) + bias.astype(h.dtype)


class _Affine(nn.Module):
    """The affine of a LayerNorm: parameters ``names`` (torch's ``weight``, ``bias`` or Flax's ``scale``, ``bias``) of
    ``shape``, ones and zeros, returned flattened."""

    shape: tuple[int, ...]
    names: tuple[str, str] = ("weight", "bias")

    @nn.compact
    def __call__(self) -> tuple[jax.Array, jax.Array]:
        weight = self.param(self.names[0], nn.initializers.ones, self.shape, jnp.float32)
        bias = self.param(self.names[1], nn.initializers.zeros, self.shape, jnp.float32)
        return weight.reshape(-1), bias.reshape(-1)


class _Bottleneck(nn.Module):
    """PSA_s's ``conv_up``: ``0`` a 1x1 convolution Ci -> Cr with bias, ``1`` torch's ``nn.LayerNorm([Cr, 1, 1])``
    (``weight``, ``bias`` of that shape), ReLU, ``3`` a 1x1 convolution Cr -> C with bias."""

    hidden: int
    channels: int
    eps: float
    dtype: Any

    @nn.compact
    def __call__(self, v: jax.Array) -> jax.Array:
        h = pointwise(self.hidden, True, "0", self.dtype)(v)
        weight, bias = _Affine((self.hidden, 1, 1), name="1")()
        h = _layer_norm(h, weight, bias, self.eps)
        return pointwise(self.channels, True, "3", self.dtype)(jax.nn.relu(h))


class PSA(AttentionModule):
    __doc__ = PSAConfig.__doc__
    _config_cls = PSAConfig

    channels: int
    mode: str = "parallel"
    channel_up: str = "linear"
    channel_norm: bool = False
    spatial_softmax: str = "context"
    ratio: int = 4
    ln_eps: float = 1e-5
    bias: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg, dt, xc = self.prepare(x, train)
        c, ci = cfg.channels, cfg.inter_channels
        convs = {name: pointwise(width, cfg.bias, name, dt, kernel_init=_KAIMING) for name, width in (
            ("conv_q_right", 1), ("conv_v_right", ci), ("conv_q_left", ci), ("conv_v_left", ci))}
        if cfg.channel_up == "linear":
            up = pointwise(c, cfg.bias, "conv_up", dt)
        else:
            up = _Bottleneck(cfg.up_channels, c, cfg.ln_eps, dt, name="conv_up")
        ln = _Affine((c,), ("scale", "bias"), name="ln") if cfg.channel_norm else None

        def channel_logits(s: jax.Array) -> jax.Array:
            n, h, w, _ = s.shape
            v = convs["conv_v_right"](s).reshape(n, h * w, ci)
            q = jax.nn.softmax(convs["conv_q_right"](s).reshape(n, h * w, 1), axis=1)
            z = up(jnp.einsum("npc,npo->noc", v, q)[:, :, None, :])  # (N, 1, 1, C)
            if ln is not None:
                weight, bias = ln()
                z = _layer_norm(z, weight, bias, cfg.ln_eps)
            return z

        def spatial_gate(s: jax.Array) -> jax.Array:
            n, h, w, _ = s.shape
            q = jnp.mean(convs["conv_q_left"](s), axis=(1, 2))  # (N, Ci)
            v = convs["conv_v_left"](s).reshape(n, h * w, ci)
            if cfg.spatial_softmax == "query":
                logits = jnp.einsum("nc,npc->np", jax.nn.softmax(q, axis=-1), v)
            elif cfg.spatial_softmax == "context":
                logits = jax.nn.softmax(jnp.einsum("nc,npc->np", q, v), axis=-1)
            else:
                logits = jnp.einsum("nc,npc->np", q, jax.nn.softmax(v, axis=1))
            return jax.nn.sigmoid(logits.reshape(n, h, w, 1))

        x_ch = xc * self.expose_gate(jax.nn.sigmoid(channel_logits(xc)), "psa_channel_gate")
        if cfg.mode == "parallel":
            y = x_ch + xc * self.expose_gate(spatial_gate(xc), "psa_spatial_gate")
        else:
            y = x_ch * self.expose_gate(spatial_gate(x_ch), "psa_spatial_gate")
        return y.astype(x.dtype)
