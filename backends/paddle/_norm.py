"""BatchNorm2D with the project's running-statistics convention (see ``attn_core.SpatialAttentionConfig``).

Paddle's own ``nn.BatchNorm2D`` normalises a training batch as torch does, but stores the *biased* batch variance
in its running variance (torch the unbiased one), and its CPU kernel applies the momentum as a float32 attribute,
so that even a float64 layer's running statistics are off by about 2e-7 relative. This layer keeps everything
else of ``nn.BatchNorm2D``: the constructor (``momentum`` in Paddle's convention, the weight of the running value),
the names ``weight``, ``bias``, ``_mean``, ``_variance`` (so ``attn_core.native_location`` holds), evaluation,
and the fused kernel for the training output. In training the kernel writes the batch statistics into scratch
vectors (momentum 0), and the layer updates its C-long running statistics from them in its own dtype.
"""

from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle import nn

from attn_core.spec import check_batch_norm_input

from ._ops import scalar, static_shape

__all__ = ["BatchNorm2D", "label_batch_norms"]


class BatchNorm2D(nn.BatchNorm2D):
    """``paddle.nn.BatchNorm2D`` whose running variance takes the unbiased batch variance, like torch's.

    With ``k = momentum`` (Paddle's convention) and ``count = N*H*W``, a training forward sets
    ``_mean <- k * _mean + (1 - k) * batch_mean`` and
    ``_variance <- k * _variance + (1 - k) * biased_var * count / (count - 1)``; the output is Paddle's (in float64,
    the same formula from ops, with eps in float64).
    In training an input with ``count = 1`` is the project's ``InputShapeError`` naming ``self.where``
    (``attn_core.check_batch_norm_input``; :func:`label_batch_norms` names a model's layers), where Paddle's kernel
    would return the input unchanged.
    """

    where: str = "BatchNorm2D"

    def forward(self, input: paddle.Tensor) -> paddle.Tensor:  # noqa: A002 - Paddle's own argument name
        if input.dtype != self.weight.dtype:
            return self._cast_forward(input)
        if not self.training or self._use_global_stats:
            return super().forward(input)
        self._check_data_format(self._data_format)
        self._check_input_dim(input)
        check_batch_norm_input(self.where, tuple(static_shape(input)), layout=self._data_format)
        channels = int(self._mean.shape[0])
        if input.dtype == paddle.float64:
            out, batch_mean, batch_var = self._float64_training(input)
        else:
            batch_mean = paddle.zeros([channels], dtype=self._mean.dtype)
            batch_var = paddle.ones([channels], dtype=self._variance.dtype)
            # momentum 0: the kernel leaves exactly this batch's mean and biased variance in the scratch vectors
            out = F.batch_norm(input, batch_mean, batch_var, self.weight, self.bias, training=True, momentum=0.0,
                               epsilon=self._epsilon, data_format=self._data_format)
        shape = static_shape(input)
        n, h, w = (shape[0], shape[2], shape[3]) if self._data_format == "NCHW" else shape[:3]
        k = float(self._momentum)
        if min(n, h, w) < 0:  # sizes unknown until run time (to_static with a dynamic InputSpec)
            count = paddle.numel(input).astype(batch_var.dtype) / channels
            var_weight = (count / (count - 1)) * scalar(1.0 - k, batch_var)
        else:
            var_weight = self._constant((1.0 - k) * (n * h * w) / (n * h * w - 1), batch_var)
        # every operand has stop_gradient set: the update stays out of the autograd graph
        paddle.assign(self._mean * self._constant(k, batch_mean) + batch_mean * self._constant(1.0 - k, batch_mean),
                      self._mean)
        paddle.assign(self._variance * self._constant(k, batch_var) + batch_var * var_weight, self._variance)
        return out

    def _float64_training(self, x: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor, paddle.Tensor]:
        """The training output from ops, and the batch mean and biased variance (detached). Paddle's batch_norm
        kernel takes eps as a float32 attribute (1e-5 -> 9.99999975e-06), which shows in float64 where the batch
        variance is not far above eps (a few values per channel): up to 5e-7 of a gradient. Here eps is a float64
        value, and autograd differentiates the ops."""
        axes = [0, 2, 3] if self._data_format == "NCHW" else [0, 1, 2]
        shape = [1, -1, 1, 1] if self._data_format == "NCHW" else [1, 1, 1, -1]
        mean = x.mean(axes)
        centred = x - mean.reshape(shape)
        var = (centred * centred).mean(axes)
        scale = paddle.rsqrt(var + self._constant(float(self._epsilon), var)) * self.weight.astype(x.dtype)
        out = centred * scale.reshape(shape) + self.bias.astype(x.dtype).reshape(shape)
        return out, mean.detach(), var.detach()

    def _cast_forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """The layer computed in ``x``'s dtype, its parameters and running statistics cast to it: a half layer inside
        an attention module that computes its half input in float32 (attn_core.precision). In training the running
        statistics are updated in the input's dtype and written back, rounded once, to their own."""
        dt = x.dtype
        mean, var = self._mean.astype(dt), self._variance.astype(dt)
        training = self.training and not self._use_global_stats
        if training:
            check_batch_norm_input(self.where, tuple(static_shape(x)), layout=self._data_format)
        batch_mean, batch_var = (paddle.zeros_like(mean), paddle.ones_like(var)) if training else (mean, var)
        out = F.batch_norm(x, batch_mean, batch_var, self.weight.astype(dt), self.bias.astype(dt), training=training,
                           momentum=0.0, epsilon=self._epsilon, data_format=self._data_format)
        if training:
            shape = static_shape(x)
            count = shape[0] * shape[2] * shape[3] if self._data_format == "NCHW" else shape[0] * shape[1] * shape[2]
            k = float(self._momentum)
            paddle.assign((mean * k + batch_mean * (1.0 - k)).astype(self._mean.dtype), self._mean)
            paddle.assign((var * k + batch_var * ((1.0 - k) * count / (count - 1))).astype(self._variance.dtype),
                          self._variance)
        return out

    @staticmethod
    def _constant(value: float, like: paddle.Tensor) -> float | paddle.Tensor:
        """``value`` as a Python float in dygraph (exact there, and no extra op), a 0-d tensor of ``like``'s dtype in
        a static graph (where a Python float would become a float32 attribute: see ``_base.scalar``)."""
        return value if paddle.in_dynamic_mode() else scalar(value, like)


def label_batch_norms(model: nn.Layer, owner: str) -> None:
    """Name every :class:`BatchNorm2D` of ``model`` ``'<owner>: <qualified name>'`` for its errors."""
    for name, layer in model.named_sublayers():
        if isinstance(layer, BatchNorm2D):
            layer.where = f"{owner}: {name}"
