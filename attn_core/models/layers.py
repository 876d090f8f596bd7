"""The plain layers models are made of, as specs: parameter tables under a prefix and float64 reference math.

Parameter names follow torch (``weight``, ``bias``, ``running_mean``, ``running_var``), so a model's canonical
names are its torch ``state_dict`` keys (without ``num_batches_tracked``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .. import ops
from ..autodiff import Node
from ..spec import ParamSpec, subtree

__all__ = ["Conv", "BatchNorm", "Linear", "AvgPool", "subtree"]


@dataclass(frozen=True)
class Conv:
    """A 2-D convolution, OIHW weight, explicit symmetric zero padding (never 'SAME')."""

    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    groups: int = 1
    bias: bool = False

    def params(self, prefix: str) -> list[ParamSpec]:
        k = self.kernel_size
        table = [ParamSpec(f"{prefix}.weight", (self.out_channels, self.in_channels // self.groups, k, k),
                           "conv_weight")]
        if self.bias:
            table.append(ParamSpec(f"{prefix}.bias", (self.out_channels,), "conv_bias"))
        return table

    def __call__(self, x: Node, params: Mapping[str, Node], prefix: str) -> Node:
        return ops.conv2d(x, params[f"{prefix}.weight"], params.get(f"{prefix}.bias") if self.bias else None,
                          stride=self.stride, padding=self.padding, groups=self.groups)


@dataclass(frozen=True)
class BatchNorm:
    """BatchNorm2d: affine, tracked running statistics; ``momentum`` in torch's convention."""

    channels: int
    eps: float = 1e-5
    momentum: float = 0.1

    def params(self, prefix: str) -> list[ParamSpec]:
        c = (self.channels,)
        return [ParamSpec(f"{prefix}.weight", c, "bn_weight"), ParamSpec(f"{prefix}.bias", c, "bn_bias"),
                ParamSpec(f"{prefix}.running_mean", c, "bn_mean"), ParamSpec(f"{prefix}.running_var", c, "bn_var")]

    def __call__(self, x: Node, params: Mapping[str, Node], prefix: str, training: bool) -> Node:
        return ops.batch_norm(x, params[f"{prefix}.weight"], params[f"{prefix}.bias"],
                              params[f"{prefix}.running_mean"], params[f"{prefix}.running_var"],
                              training=training, eps=self.eps, momentum=self.momentum)


@dataclass(frozen=True)
class Linear:
    """A fully connected layer, torch layout [out, in]."""

    in_features: int
    out_features: int
    bias: bool = True

    def params(self, prefix: str) -> list[ParamSpec]:
        table = [ParamSpec(f"{prefix}.weight", (self.out_features, self.in_features), "linear_weight")]
        if self.bias:
            table.append(ParamSpec(f"{prefix}.bias", (self.out_features,), "linear_bias"))
        return table

    def __call__(self, x: Node, params: Mapping[str, Node], prefix: str) -> Node:
        return ops.linear(x, params[f"{prefix}.weight"], params.get(f"{prefix}.bias") if self.bias else None)


@dataclass(frozen=True)
class AvgPool:
    """2-D average pooling as torch's ``AvgPool2d(kernel_size, stride, padding, ceil_mode, count_include_pad)``;
    no parameters. A 1 x 1 window at stride 1 is the identity (timm's ``nn.Identity`` in a stride-1 shortcut).

    Each window's divisor is torch's (:meth:`counts`): with ``count_include_pad`` the window clipped to the padded
    map (the ceil mode's extra cells beyond the padding are never counted), without it clipped to the input.
    """

    kernel_size: int
    stride: int
    padding: int = 0
    ceil_mode: bool = False
    count_include_pad: bool = True

    @property
    def is_identity(self) -> bool:
        return self.kernel_size == 1 and self.stride == 1 and self.padding == 0

    def params(self, prefix: str) -> list[ParamSpec]:
        return []

    def output_size(self, size: int) -> int:
        """One spatial size after the pooling, by torch's rule (in ceil mode the last window must start inside the
        input or its left padding)."""
        k, s, p = self.kernel_size, self.stride, self.padding
        if not self.ceil_mode:
            return (size + 2 * p - k) // s + 1
        out = -(-(size + 2 * p - k) // s) + 1
        return out - 1 if (out - 1) * s >= size + p else out

    def pads(self, size: int) -> tuple[int, int]:
        """(before, after) zero padding of one axis that makes every window whole: the padding, plus the cells the
        ceil mode's last window reaches beyond it."""
        k, s, p = self.kernel_size, self.stride, self.padding
        return p, max(p, (self.output_size(size) - 1) * s + k - size - p)

    def counts(self, h: int, w: int) -> np.ndarray:
        """The divisor of each output cell for an h x w input: (1, 1, H', W'), float64."""
        k, s, p = self.kernel_size, self.stride, self.padding

        def axis(n: int) -> np.ndarray:
            starts = np.arange(self.output_size(n)) * s - p
            if self.count_include_pad:
                return np.asarray(np.minimum(starts + k, n + p) - starts)
            return np.asarray(np.minimum(starts + k, n) - np.maximum(starts, 0))

        return np.outer(axis(h), axis(w)).astype(np.float64)[None, None]

    def __call__(self, x: Node) -> Node:
        if self.is_identity:
            return x
        h, w = x.shape[2], x.shape[3]
        padded = ops.pad(x, ((0, 0), (0, 0), self.pads(h), self.pads(w)))
        sums = ops.scale(ops.avg_pool2d(padded, self.kernel_size, self.stride), float(self.kernel_size ** 2))
        return ops.div(sums, ops.constant(self.counts(h, w)))
