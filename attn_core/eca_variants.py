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
from .eca import ECAKernelConfig
from .se import ACT_LAYERS, GATE_LAYERS
from .spec import ConfigError, ParamSpec, reduced_channels

__all__ = ["ECAMConfig", "CECAConfig"]


def _channel_row(x: Node) -> Node:
    """The pooled descriptor of an NCHW ``x`` as a one-channel row (N, 1, 1, C), on which a 1-D convolution across
    the channels is a 2-D one with a (1, k) kernel."""
    n, c = x.shape[0], x.shape[1]
    return ops.reshape(ops.mean(x, (2, 3)), (n, 1, 1, c))


@dataclass(frozen=True)
class ECAMConfig(ECAKernelConfig):
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

    act_layer: str = "relu"
    gate_layer: str = "sigmoid"
    rd_ratio: float = 1.0 / 8
    rd_channels: int | None = None
    rd_divisor: int = 8
    k: int = field(init=False, compare=False)
    hidden: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        name = self.module_name
        self._check_positive_ints("channels")
        self._check_choices(act_layer=ACT_LAYERS, gate_layer=GATE_LAYERS)
        k = self._kernel()
        # timm's make_divisible with its default round_limit, and a divisor always set, as in its non-local blocks
        hidden = reduced_channels(name, self.channels, self.rd_ratio, self.rd_channels, self.rd_divisor,
                                  round_limit=0.9, divisor_optional=False)
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
class CECAConfig(ECAKernelConfig):
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

    act_layer: str | None = None
    gate_layer: str = "sigmoid"
    k: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        name = self.module_name
        self._check_positive_ints("channels")
        self._check_choices(act_layer=(None, *ACT_LAYERS), gate_layer=GATE_LAYERS)
        k = self._kernel()
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
