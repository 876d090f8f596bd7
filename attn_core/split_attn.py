"""Split attention (Splat): a grouped convolution into ``radix`` splits per cardinal group, mixed per channel by a
softmax over the radix (a sigmoid gate at radix 1).

Paper: Hang Zhang, Chongruo Wu, Zhongyue Zhang, Yi Zhu, Haibin Lin, Zhi Zhang, Yue Sun, Tong He, Jonas Mueller,
R. Manmatha, Mu Li, Alexander Smola. "ResNeSt: Split-Attention Networks", CVPRW 2022, arXiv:2004.08955.
timm: ``timm.layers.split_attn.SplitAttn`` (with ``RadixSoftmax``), ``create_attn('splat', C)``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from . import ops
from .autodiff import Node
from .precision import FLOAT_DTYPES
from .selective_kernel import PATH_ACTIVATIONS, bn_params, conv_output_size
from .spec import (
    AttentionConfig,
    ConfigError,
    InputShapeError,
    ParamSpec,
    check_batch_norm_after,
    make_divisible,
)

__all__ = ["SplitAttnConfig", "NORM_LAYERS"]

#: ``norm_layer``: None (timm's default: no normalisation) or BatchNorm after the convolution and after fc1
NORM_LAYERS = (None, "batchnorm")


@dataclass(frozen=True)
class SplitAttnConfig(AttentionConfig):
    """Split attention (Zhang et al., ResNeSt, arXiv:2004.08955), timm's form (``SplitAttn``).

    ``U = act(norm(conv(x)))``: a ``k x k`` convolution from ``in_channels`` to ``radix * out_channels`` in
    ``groups * radix`` groups, whose output is ``radix`` splits ``U_r`` of ``out_channels`` (split-major).
    ``s = mean_hw(sum_r U_r)``; ``a = fc2(act(norm(fc1(s))))`` (1 x 1 convolutions with bias, ``groups`` groups),
    C' = ``radix * out_channels`` logits ordered (cardinal group, split, channel); ``RadixSoftmax``: a softmax over
    the splits within each cardinal group (radix > 1) or a sigmoid (radix 1). Output ``sum_r a_r * U_r``.

    Args:
        in_channels: input channels C (the first argument of ``create_attn('splat', C)``).
        out_channels: output channels (None: ``in_channels``).
        kernel_size, stride, padding, dilation: of the convolution; padding None is ``kernel_size // 2``.
        groups: the cardinality; ``groups * radix`` must divide ``in_channels``, ``groups`` must divide
            ``out_channels`` and the attention width.
        bias: a bias on the convolution (fc1 and fc2 always have one, as in timm).
        radix: splits per cardinal group (2; 1 makes the softmax a sigmoid gate).
        rd_ratio, rd_channels, rd_divisor: the attention width: ``rd_channels * radix``, or ``in_channels * radix
            * rd_ratio`` rounded by timm's ``make_divisible`` (multiple of ``rd_divisor``, at least 32).
        act_layer: ``'relu'`` or ``'silu'`` (after the convolution and after fc1).
        norm_layer: None (timm's default) or ``'batchnorm'`` (ResNeSt: ``bn0`` after the convolution, ``bn1``
            after fc1). bn_eps, bn_momentum: theirs (torch convention, the weight of the new batch).

    Shapes: input (N, in_channels, H, W) in torch and Paddle, (N, H, W, in_channels) in Flax; output (N,
    out_channels, H', W') with the convolution's H', W' (a map too small for it is an ``InputShapeError``).
    Parameters (timm's ``state_dict`` keys): ``conv.weight`` (radix * out, in / (groups * radix), k, k), with bias
    ``conv.bias``; ``fc1.weight`` (attn, out / groups, 1, 1), ``fc1.bias``; ``fc2.weight`` (radix * out, attn /
    groups, 1, 1), ``fc2.bias``; with BatchNorm ``bn0.*`` (radix * out,) and ``bn1.*`` (attn,).
    """

    module_name: ClassVar[str] = "SplitAttn"
    half_in_float32: ClassVar[bool] = True  # attn_core.precision: half inputs computed in float32

    in_channels: int
    out_channels: int | None = None
    kernel_size: int = 3
    stride: int = 1
    padding: int | None = None
    dilation: int = 1
    groups: int = 1
    bias: bool = False
    radix: int = 2
    rd_ratio: float = 0.25
    rd_channels: int | None = None
    rd_divisor: int = 8
    act_layer: str = "relu"
    norm_layer: str | None = None
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    out: int = field(init=False, compare=False, repr=False)
    mid: int = field(init=False, compare=False, repr=False)
    attn_channels: int = field(init=False, compare=False, repr=False)
    pad: int = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        name = self.module_name
        self._check_positive_ints("in_channels")
        self._check_positive_ints("out_channels", optional=True)
        self._check_positive_ints("kernel_size", "stride", "dilation", "groups", "radix", "rd_divisor")
        if self.padding is not None and (isinstance(self.padding, bool) or not isinstance(self.padding, int)
                                         or self.padding < 0):
            raise ConfigError(f"{name}: padding must be None or a non-negative integer, got {self.padding!r}")
        self._check_positive_ints("rd_channels", optional=True)
        self._check_positive_reals("rd_ratio")
        self._check_flags("bias")
        self._check_choices(act_layer=PATH_ACTIVATIONS, norm_layer=NORM_LAYERS)
        self._check_batch_norm_fields()

        out = int(self.out_channels or self.in_channels)
        groups, radix = int(self.groups), int(self.radix)
        if self.in_channels % (groups * radix):
            raise ConfigError(f"{name}: in_channels ({self.in_channels}) must be a multiple of groups * radix "
                              f"({groups} * {radix}), the groups of the convolution")
        if out % groups:
            raise ConfigError(f"{name}: out_channels ({out}) must be a multiple of groups ({groups})")
        if self.rd_channels is None:
            attn = make_divisible(self.in_channels * radix * float(self.rd_ratio), self.rd_divisor, min_value=32)
        else:
            attn = int(self.rd_channels) * radix
        if attn % groups:
            raise ConfigError(f"{name}: the attention width ({attn}) must be a multiple of groups ({groups}), the "
                              f"groups of fc1 and fc2")
        pad = self.kernel_size // 2 if self.padding is None else int(self.padding)
        for key, value in (("out", out), ("mid", out * radix), ("attn_channels", attn), ("pad", pad)):
            object.__setattr__(self, key, value)

    @property
    def channels_required(self) -> int | None:
        return self.in_channels

    @property
    def has_norm(self) -> bool:
        return self.norm_layer is not None

    def output_hw(self, h: int, w: int) -> tuple[int, int]:
        """The output's spatial size for an (h, w) input."""
        k, s, p, d = self.kernel_size, self.stride, self.pad, self.dilation
        return conv_output_size(h, k, s, p, d), conv_output_size(w, k, s, p, d)

    def check_input(self, shape: Sequence[int | None], dtype: str, is_floating: bool,
                    layout: str = "NCHW", training: bool = False, param_dtypes: Collection[str] = (),
                    device_dtypes: Sequence[str] = FLOAT_DTYPES, framework: str | None = None) -> None:
        """:meth:`AttentionConfig.check_input`, and a map the convolution leaves empty is an ``InputShapeError``."""
        super().check_input(shape, dtype, is_floating, layout, training, param_dtypes, device_dtypes, framework)
        hw = [None if (s is None or int(s) < 0) else int(s) for s in
              ((shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2]))]
        reach = self.dilation * (self.kernel_size - 1) + 1
        for axis, size in zip(("H", "W"), hw, strict=True):
            if size is not None and size + 2 * self.pad < reach:
                raise InputShapeError(f"{self.module_name}: {axis} = {size} is too small for the {self.kernel_size} x "
                                      f"{self.kernel_size} convolution (dilation {self.dilation}, padding "
                                      f"{self.pad}): it needs {axis} >= {reach - 2 * self.pad}")

    def check_training_input(self, shape: Sequence[int | None], layout: str = "NCHW") -> None:
        """With BatchNorm, each one's own input in training: ``bn0``'s (N, radix * out, H', W') and ``bn1``'s
        (N, attn, 1, 1), which needs N > 1 whatever the map."""
        if not self.has_norm:
            return
        check_batch_norm_after(f"{self.module_name}: bn0", shape, layout, self.mid, self.output_hw)
        check_batch_norm_after(f"{self.module_name}: bn1", shape, layout, self.attn_channels)

    def param_table(self) -> tuple[ParamSpec, ...]:
        k = self.kernel_size
        table = [ParamSpec("conv.weight", (self.mid, self.in_channels // (self.groups * self.radix), k, k),
                           "conv_weight")]
        if self.bias:
            table.append(ParamSpec("conv.bias", (self.mid,), "conv_bias"))
        if self.has_norm:
            table += bn_params("bn0", self.mid)
        table += [ParamSpec("fc1.weight", (self.attn_channels, self.out // self.groups, 1, 1), "conv_weight"),
                  ParamSpec("fc1.bias", (self.attn_channels,), "conv_bias")]
        if self.has_norm:
            table += bn_params("bn1", self.attn_channels)
        table += [ParamSpec("fc2.weight", (self.mid, self.attn_channels // self.groups, 1, 1), "conv_weight"),
                  ParamSpec("fc2.bias", (self.mid,), "conv_bias")]
        return tuple(table)

    def _norm(self, z: Node, params: Mapping[str, Node], prefix: str, training: bool) -> Node:
        if not self.has_norm:
            return z
        return ops.batch_norm(z, params[f"{prefix}.weight"], params[f"{prefix}.bias"],
                              params[f"{prefix}.running_mean"], params[f"{prefix}.running_var"], training=training,
                              eps=self.bn_eps, momentum=self.bn_momentum)

    def reference_forward(self, x: Node, params: Mapping[str, Node], training: bool = False,
                          taps: dict[str, Node] | None = None) -> Node:
        r, g, c = self.radix, self.groups, self.out
        u = ops.conv2d(x, params["conv.weight"], params.get("conv.bias"), stride=self.stride, padding=self.pad,
                       groups=g * r, dilation=self.dilation)
        u = ops.activation(self.act_layer, self._norm(u, params, "bn0", training))
        n, _, ho, wo = u.shape
        splits = ops.reshape(u, (n, r, c, ho, wo))  # split-major, as timm's reshape
        s = ops.mean(ops.sum(splits, 1, keepdims=False), (2, 3))  # (N, C, 1, 1)
        z = ops.conv2d(s, params["fc1.weight"], params["fc1.bias"], groups=g)
        z = ops.activation(self.act_layer, self._norm(z, params, "bn1", training))
        logits = ops.conv2d(z, params["fc2.weight"], params["fc2.bias"], groups=g)  # (N, R*C, 1, 1), group-major
        if r > 1:
            per_group = ops.softmax(ops.reshape(logits, (n, g, r, c // g)), 2)
            a = ops.reshape(ops.transpose(per_group, (0, 2, 1, 3)), (n, r, c, 1, 1))  # split-major, as the splits
        else:
            a = ops.reshape(ops.sigmoid(logits), (n, 1, c, 1, 1))
        if taps is not None:
            taps["radix_splits"] = u
            taps["radix_attn"] = ops.reshape(a, (n, r * c, 1, 1))
        return ops.sum(ops.mul(splits, a), 1, keepdims=False)
