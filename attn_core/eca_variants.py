"""timm's two variants of Efficient Channel Attention: the MLP form (``'ecam'``) and circular ECA (``'ceca'``).

Paper: Qilong Wang, Banggu Wu, Pengfei Zhu, Peihua Li, Wangmeng Zuo, Qinghua Hu. "ECA-Net: Efficient Channel
Attention for Deep Convolutional Neural Networks", CVPR 2020, arXiv:1910.03151. Neither variant is in the paper:
both are timm's (timm/layers/eca.py, ``EcaModule(use_mlp=True)`` and ``CecaModule``, the latter by Chris Ha).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from . import ops
from .autodiff import Node
from .eca import eca_kernel_size
from .se import ACT_LAYERS, GATE_LAYERS
from .spec import (
    AttentionConfig,
    ConfigError,
    ParamSpec,
    check_choice,
    check_odd_kernel,
    check_positive_int,
    is_real,
    make_divisible,
)

__all__ = ["ECAMConfig", "CECAConfig"]


def _kernel(module: str, channels: int, kernel_size: int | None, gamma: float, beta: float) -> int:
    """ECA's kernel: ``kernel_size`` (odd, positive) when given, else Eq. 9 (:func:`eca_kernel_size`)."""
    if kernel_size is None:
        if not (is_real(gamma) and gamma > 0):
            raise ConfigError(f"{module}: gamma must be a positive finite number, got {gamma!r}")
        if not is_real(beta):
            raise ConfigError(f"{module}: beta must be a finite number, got {beta!r}")
        return eca_kernel_size(channels, gamma, beta)
    check_odd_kernel(module, "kernel_size", kernel_size,
                     "an even kernel cannot pad symmetrically and shifts the channels")
    return int(kernel_size)


def _channel_row(x: Node) -> Node:
    """The pooled descriptor of an NCHW ``x`` as a one-channel row (N, 1, 1, C), on which a 1-D convolution across
    the channels is a 2-D one with a (1, k) kernel."""
    n, c = x.shape[0], x.shape[1]
    return ops.reshape(ops.mean(x, (2, 3)), (n, 1, 1, c))


@dataclass(frozen=True)
class ECAMConfig(AttentionConfig):
    """ECA with a channel MLP (timm's ``EcaModule(use_mlp=True)``, registry key ``'ecam'``; not in the paper,
    arXiv:1910.03151).

    ``y = x * gate(conv2_k(act(conv_1(mean_hw(x)))))``: the pooled descriptor, a row of C values, is lifted to rd
    feature rows by a 1-D convolution of kernel 1 (1 -> rd, with bias), passed through ``act``, and brought back to
    one row by a 1-D convolution of kernel k across the channels (rd -> 1, with bias, zero padded by (k - 1) / 2).

    Args:
        channels: input and output channels C.
        kernel_size: odd and positive; ``None`` takes Eq. 9 of the paper (:func:`attn_core.eca_kernel_size`), which
            is what timm always does when it is given the channels (its own ``kernel_size`` is then ignored).
        gamma, beta: the constants of Eq. 9 (2 and 1), used only when ``kernel_size`` is None.
        act_layer: ``'relu'`` (timm's default) or ``'silu'``, between the two convolutions.
        gate_layer: ``'sigmoid'`` (default) or ``'hard_sigmoid'``.
        rd_ratio: the feature rows as a fraction of C (1/8). rd_channels: the rows; overrides ``rd_ratio``.
        rd_divisor: ``rd = make_divisible(C * rd_ratio, rd_divisor)`` as timm computes it: the nearest multiple of
            the divisor, at least the divisor, raised by one divisor where rounding lost more than 10 % (C = 88 gives
            16, not 8).

    Shapes: input (N, C, H, W) in torch and Paddle, (N, H, W, C) in Flax; output the same shape.
    Parameters (canonical, torch Conv1d layout [out, in, k]; timm's names): ``conv.weight`` (rd, 1, 1),
    ``conv.bias`` (rd,), ``conv2.weight`` (1, rd, k), ``conv2.bias`` (1,).
    """

    module_name: ClassVar[str] = "EcaMlpModule"
    half_in_float32: ClassVar[bool] = True  # attn_core.precision: half inputs computed in float32

    channels: int
    kernel_size: int | None = None
    gamma: float = 2
    beta: float = 1
    act_layer: str = "relu"
    gate_layer: str = "sigmoid"
    rd_ratio: float = 1.0 / 8
    rd_channels: int | None = None
    rd_divisor: int = 8
    k: int = field(init=False, compare=False)
    hidden: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        name = self.module_name
        check_positive_int(name, "channels", self.channels)
        check_choice(name, "act_layer", self.act_layer, ACT_LAYERS)
        check_choice(name, "gate_layer", self.gate_layer, GATE_LAYERS)
        k = _kernel(name, self.channels, self.kernel_size, self.gamma, self.beta)
        if self.rd_channels is not None:
            check_positive_int(name, "rd_channels", self.rd_channels)
            hidden = int(self.rd_channels)
        else:
            if not (is_real(self.rd_ratio) and self.rd_ratio > 0):
                raise ConfigError(f"{name}: rd_ratio must be a positive finite number, got {self.rd_ratio!r}")
            check_positive_int(name, "rd_divisor", self.rd_divisor)
            hidden = make_divisible(self.channels * float(self.rd_ratio), int(self.rd_divisor))
        object.__setattr__(self, "k", k)
        object.__setattr__(self, "hidden", hidden)

    @property
    def padding(self) -> int:
        return (self.k - 1) // 2

    def param_table(self) -> tuple[ParamSpec, ...]:
        rd = self.hidden
        return (ParamSpec("conv.weight", (rd, 1, 1), "conv_weight"), ParamSpec("conv.bias", (rd,), "conv_bias"),
                ParamSpec("conv2.weight", (1, rd, self.k), "conv_weight"), ParamSpec("conv2.bias", (1,), "conv_bias"))

    def reference_forward(self, x: Node, params: Mapping[str, Node], training: bool = False,
                          taps: dict[str, Node] | None = None) -> Node:
        n, c, rd = x.shape[0], x.shape[1], self.hidden
        s = _channel_row(x)
        h = ops.conv2d(s, ops.reshape(params["conv.weight"], (rd, 1, 1, 1)), params["conv.bias"])
        h = ops.activation(self.act_layer, h)
        z = ops.conv2d(h, ops.reshape(params["conv2.weight"], (1, rd, 1, self.k)), params["conv2.bias"],
                       padding=(0, self.padding))
        g = ops.activation(self.gate_layer, ops.reshape(z, (n, c, 1, 1)))
        if taps is not None:
            taps["gate"] = g
        return ops.mul(x, g)


@dataclass(frozen=True)
class CECAConfig(AttentionConfig):
    """Circular ECA (timm's ``CecaModule``, registry key ``'ceca'``; ECA of arXiv:1910.03151 with the channel row
    padded circularly instead of with zeros).

    ``y = x * gate(conv_k(circular_pad(mean_hw(x))))``: the pooled row of C values is extended by (k - 1) / 2 values
    at each end taken from the other end (channel C - 1 neighbours channel 0), then convolved by one 1-D kernel
    without padding, so every channel sees k real neighbours.

    Args:
        channels: input and output channels C.
        kernel_size: odd and positive; ``None`` takes Eq. 9 (:func:`attn_core.eca_kernel_size`), which is what timm
            always does when it is given the channels. The padding (k - 1) / 2 may not exceed C: the row wraps
            around at most once, as torch's circular padding (and so timm) allows.
        gamma, beta: the constants of Eq. 9 (2 and 1), used only when ``kernel_size`` is None.
        act_layer: ``None`` (default) or ``'relu'`` / ``'silu'``; as in timm 1.0, a given ``act_layer`` only gives
            the convolution a bias, and no activation is applied.
        gate_layer: ``'sigmoid'`` (default) or ``'hard_sigmoid'``.

    Shapes: input (N, C, H, W) in torch and Paddle, (N, H, W, C) in Flax; output the same shape.
    Parameters (canonical, torch Conv1d layout [out, in, k]; timm's names): ``conv.weight`` (1, 1, k), and
    ``conv.bias`` (1,) when ``act_layer`` is given.
    """

    module_name: ClassVar[str] = "CecaModule"
    half_in_float32: ClassVar[bool] = True  # attn_core.precision: half inputs computed in float32

    channels: int
    kernel_size: int | None = None
    gamma: float = 2
    beta: float = 1
    act_layer: str | None = None
    gate_layer: str = "sigmoid"
    k: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        name = self.module_name
        check_positive_int(name, "channels", self.channels)
        check_choice(name, "act_layer", self.act_layer, (None, *ACT_LAYERS))
        check_choice(name, "gate_layer", self.gate_layer, GATE_LAYERS)
        k = _kernel(name, self.channels, self.kernel_size, self.gamma, self.beta)
        if (k - 1) // 2 > self.channels:
            raise ConfigError(f"{name}: kernel_size {k} pads {(k - 1) // 2} channels circularly at each end, more "
                              f"than the {self.channels} channels there are (the row may wrap around once at "
                              f"most); accepted: kernel sizes up to {2 * self.channels + 1}")
        object.__setattr__(self, "k", k)

    @property
    def padding(self) -> int:
        return (self.k - 1) // 2

    @property
    def bias(self) -> bool:
        """Whether the convolution has a bias: timm gives it one exactly when an ``act_layer`` is named."""
        return self.act_layer is not None

    def param_table(self) -> tuple[ParamSpec, ...]:
        table = [ParamSpec("conv.weight", (1, 1, self.k), "conv_weight")]
        if self.bias:
            table.append(ParamSpec("conv.bias", (1,), "conv_bias"))
        return tuple(table)

    def reference_forward(self, x: Node, params: Mapping[str, Node], training: bool = False,
                          taps: dict[str, Node] | None = None) -> Node:
        n, c, p = x.shape[0], x.shape[1], self.padding
        s = ops.pad(_channel_row(x), ((0, 0), (0, 0), (0, 0), (p, p)), mode="circular")
        z = ops.conv2d(s, ops.reshape(params["conv.weight"], (1, 1, 1, self.k)), params.get("conv.bias"))
        g = ops.activation(self.gate_layer, ops.reshape(z, (n, c, 1, 1)))
        if taps is not None:
            taps["gate"] = g
        return ops.mul(x, g)
