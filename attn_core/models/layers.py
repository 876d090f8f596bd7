"""The plain layers models are made of, as specs: parameter tables under a prefix and float64 reference math.

Parameter names follow torch (``weight``, ``bias``, ``running_mean``, ``running_var``), so a model's canonical
names are its torch ``state_dict`` keys (without ``num_batches_tracked``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .. import ops
from ..autodiff import Node
from ..spec import ParamSpec, subtree

__all__ = ["Conv", "BatchNorm", "Linear", "subtree"]


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
