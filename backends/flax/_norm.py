"""BatchNorm with the project's running-statistics convention (see ``attn_core.SpatialAttentionConfig``).

``flax.linen.BatchNorm`` normalises a training batch as torch does, but stores the *biased* batch variance in
``batch_stats/var`` (torch the unbiased one). This module is the same layer over the last axis (NHWC) with the
same variable names (``params/scale``, ``params/bias``, ``batch_stats/mean``, ``batch_stats/var``, as
``attn_core.native_location`` has them), the same arguments as ``nn.BatchNorm`` for what it supports, and the same
dtype behaviour (statistics in at least float32, the two-pass variance of ``use_fast_variance=False``); its
running variance takes the unbiased batch variance. Like Flax's, it does not update its statistics during
``init``.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen import dtypes

from attn_core.spec import check_batch_norm_input

from ._base import AttentionModule

__all__ = ["BatchNorm"]


class BatchNorm(nn.Module):
    """BatchNorm over every axis but the last. ``momentum`` in Flax's convention (the weight of the running value;
    ``attn_core.bn_momentum_for('flax', m)``), given explicitly, as is ``epsilon``.

    Training (``use_running_average=False``) normalises with the batch mean and biased variance and, with
    ``k = momentum`` and ``count`` the number of values per channel, sets
    ``mean <- k * mean + (1 - k) * batch_mean`` and ``var <- k * var + (1 - k) * biased_var * count / (count - 1)``.
    In training an input with ``count = 1`` is the project's ``InputShapeError`` naming the model and the layer
    (``ResNet: layer4.0.bn1``; ``attn_core.check_batch_norm_input``), as torch's and Paddle's layers do.
    """

    use_running_average: bool | None = None
    momentum: float | None = None
    epsilon: float | None = None

    @nn.compact
    def __call__(self, x: jax.Array, use_running_average: bool | None = None) -> jax.Array:
        if self.momentum is None or self.epsilon is None:
            raise TypeError("BatchNorm: momentum and epsilon must be given explicitly (Flax's default momentum 0.99 "
                            "is torch's 0.01)")
        use_running_average = nn.merge_param("use_running_average", self.use_running_average, use_running_average)
        if not use_running_average:
            check_batch_norm_input(_where(self), tuple(x.shape), layout="NHWC")
        features = (x.shape[-1],)
        axes = tuple(range(x.ndim - 1))
        ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), features)
        ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), features)
        if use_running_average:
            # cast on use as in torch and Paddle: a half layer in a float32 computation (attn_core.precision)
            # normalises in float32, not with a float16 rsqrt
            wide = jnp.promote_types(x.dtype, ra_var.value.dtype)
            mean, var = ra_mean.value.astype(wide), ra_var.value.astype(wide)
        else:
            xs = x.astype(jnp.promote_types(x.dtype, jnp.float32))  # as Flax: statistics in at least float32
            mean = xs.mean(axes)
            var = jnp.square(xs - mean).mean(axes)  # biased, two-pass
            if not self.is_initializing():
                count = math.prod(x.shape[:-1])
                k = self.momentum
                ra_mean.value = k * ra_mean.value + (1 - k) * mean
                ra_var.value = k * ra_var.value + (1 - k) * (var * (count / (count - 1)))
        scale = self.param("scale", nn.initializers.ones, features, jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, features, jnp.float32)
        # Flax's _normalize, operation for operation
        y = x - mean
        mul = jax.lax.rsqrt(var + self.epsilon) * scale
        y = y * mul + bias
        return jnp.asarray(y, dtypes.canonicalize_dtype(x, scale, bias))


def _where(layer: nn.Module) -> str:
    """``'<model>: <dotted path of layer>'`` for the errors of ``layer``: the model is the nearest enclosing module of
    this package, or the ``model_name`` of a model part whose parents a lifted transform (``nn.remat``) cuts off."""
    path = ".".join(layer.path)
    owner = layer.parent
    while isinstance(owner, nn.Module):
        model = type(owner).__name__ if isinstance(owner, AttentionModule) else getattr(owner, "model_name", None)
        if model:
            return f"{model}: {path}"
        owner = owner.parent
    return path
