"""Efficient Channel Attention.

Paper: Qilong Wang, Banggu Wu, Pengfei Zhu, Peihua Li, Wangmeng Zuo, Qinghua Hu. "ECA-Net: Efficient Channel
Attention for Deep Convolutional Neural Networks", CVPR 2020, arXiv:1910.03151.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from . import ops
from .autodiff import Node
from .spec import AttentionConfig, ConfigError, ParamSpec, check_odd_kernel, is_real

__all__ = ["ECAConfig", "ECAKernelConfig", "eca_kernel_size"]


def eca_kernel_size(channels: int, gamma: float = 2, beta: float = 1) -> int:
    """Eq. 9 of the ECA paper, as timm evaluates it: ``t = int(|log2(C) + b| / gamma)``, made odd upwards, at least 3.

    C = 16..96 gives 3, 128..1024 gives 5, 2048 gives 7; C = 128 gives t = 4, which is even, hence 5.
    """
    t = int(abs(math.log2(channels) + beta) / gamma)
    return max(t if t % 2 else t + 1, 3)


@dataclass(frozen=True)
class ECAKernelConfig(AttentionConfig):
    """Base of ECA and timm's two variants: their opening fields ``channels, kernel_size, gamma, beta``, declared
    once, and the kernel they give (:meth:`_kernel`)."""

    half_in_float32: ClassVar[bool] = True  # attn_core.precision: half inputs computed in float32

    channels: int
    kernel_size: int | None = None
    gamma: float = 2
    beta: float = 1

    def _kernel(self) -> int:
        """``kernel_size`` (odd, positive) when given, else Eq. 9 (:func:`eca_kernel_size`) with ``gamma`` and
        ``beta``; a ConfigError for any of them that does not fit."""
        if self.kernel_size is None:
            self._check_positive_reals("gamma")
            if not is_real(self.beta):
                raise ConfigError(f"{self.module_name}: beta must be a finite number, got {self.beta!r}")
            return eca_kernel_size(self.channels, self.gamma, self.beta)
        check_odd_kernel(self.module_name, "kernel_size", self.kernel_size,
                         "an even kernel cannot pad symmetrically and shifts the channels")
        return int(self.kernel_size)


@dataclass(frozen=True)
class ECAConfig(ECAKernelConfig):
    """Efficient Channel Attention (Wang et al., CVPR 2020, arXiv:1910.03151).

    ``y = x * sigmoid(conv1d_k(mean_hw(x)))``: the pooled channel descriptor is convolved across channels by one
    1-D kernel without bias, zero padded by (k - 1) / 2 at both ends so that C stays C.

    Args:
        channels: input and output channels C.
        kernel_size: odd and positive. ``None`` takes Eq. 9 (:func:`eca_kernel_size`). ECA-MobileNetV2's authors
            use 1 if C < 96 else 3, which is accepted as given.
        gamma, beta: the constants of Eq. 9 (2 and 1), used only when ``kernel_size`` is None.

    Shapes: input (N, C, H, W) in torch and Paddle, (N, H, W, C) in Flax; output the same shape.
    Parameters (canonical, torch Conv1d layout [out, in, k]): ``conv.weight`` (1, 1, k).
    """

    module_name: ClassVar[str] = "ECAModule"

    k: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        self._check_positive_ints("channels")
        object.__setattr__(self, "k", self._kernel())

    @property
    def padding(self) -> int:
        return (self.k - 1) // 2

    def param_table(self) -> tuple[ParamSpec, ...]:
        return (ParamSpec("conv.weight", (1, 1, self.k), "conv_weight"),)

    def reference_forward(self, x: Node, params: Mapping[str, Node], training: bool = False,
                          taps: dict[str, Node] | None = None) -> Node:
        n, c = x.shape[0], x.shape[1]
        s = ops.reshape(ops.mean(x, (2, 3)), (n, 1, 1, c))
        w = ops.reshape(params["conv.weight"], (1, 1, 1, self.k))
        z = ops.conv2d(s, w, padding=(0, self.padding))
        g = ops.sigmoid(ops.reshape(z, (n, c, 1, 1)))
        if taps is not None:
            taps["gate"] = g
        return ops.mul(x, g)
