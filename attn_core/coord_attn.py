"""Coordinate attention and timm's strip-pooling variants: CoordAttn, SimpleCoordAttn, EfficientLocalAttn, StripAttn.

Papers:

- Qibin Hou, Daquan Zhou, Jiashi Feng. "Coordinate Attention for Efficient Mobile Network Design", CVPR 2021,
  arXiv:2103.02907 (timm ``CoordAttn``; the authors' code: github.com/houqb/CoordAttention, ``coordatt.py``).
- Wei Xu, Yi Wan. "ELA: Efficient Local Attention for Deep Convolutional Neural Networks", arXiv:2403.01123 (timm
  ``EfficientLocalAttn``, whose docstring names that arXiv id under another title).
- timm's own ``SimpleCoordAttn`` and ``StripAttn`` (timm/layers/coord_attn.py), with no paper of their own.

All four pool the map into two directional strips, ``mean_w(x)`` (N, C, H, 1) and ``mean_h(x)`` (N, C, 1, W), and
gate the input by functions of them; they differ in what runs on the strips (see each config).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from types import MappingProxyType
from typing import Any, ClassVar

from . import ops
from .autodiff import Node
from .se import GATE_LAYERS
from .spec import (
    AttentionConfig,
    ConfigError,
    ParamSpec,
    ReducedWidthConfig,
    check_batch_norm_after,
    check_odd_kernel,
    check_positive_int,
    is_real,
    make_divisible,
)

__all__ = ["CoordAttnConfig", "SimpleCoordAttnConfig", "EfficientLocalAttnConfig", "StripAttnConfig",
           "COORD_PRESETS", "COORD_ACT_LAYERS", "coord_hidden"]

#: the bottleneck activations of CoordAttn and SimpleCoordAttn (timm's defaults: hard_swish and silu)
COORD_ACT_LAYERS = ("relu", "silu", "hard_swish")
#: the activations of EfficientLocalAttn; None is none at all (the ELA paper's listing has none before the gate)
ELA_ACT_LAYERS = (*COORD_ACT_LAYERS, None)

# Named forms of CoordAttn found upstream. Use as ``CoordAttn(channels, **COORD_PRESETS['paper'])``.
COORD_PRESETS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    # timm CoordAttn (the default): width C / 16 * 2/3 rounded to a multiple of 8 (at least 8), no conv biases
    "timm": MappingProxyType(dict(rd_ratio=1.0 / 16, rd_divisor=8, se_factor=2.0 / 3, rd_min=None, bias=False)),
    # the authors' coordatt.py: mip = max(8, C // 32), every 1x1 convolution with a bias
    "paper": MappingProxyType(dict(rd_ratio=1.0 / 32, rd_divisor=None, se_factor=1.0, rd_min=8, bias=True)),
})


def coord_hidden(module: str, channels: int, rd_ratio: float, se_factor: float, rd_channels: int | None,
                 rd_divisor: int | None, rd_min: int | None) -> int:
    """The bottleneck width of CoordAttn and SimpleCoordAttn.

    ``rd_channels`` wins when given. Otherwise, with ``v = channels * rd_ratio * se_factor`` (timm's float
    expression, in its order): ``rd_divisor`` set gives timm's ``make_divisible(v, rd_divisor, rd_min,
    round_limit=0)``, the nearest multiple of the divisor and at least ``rd_min`` (default: the divisor);
    ``rd_divisor=None`` gives ``max(rd_min, floor(v))`` computed exactly, which with ``rd_ratio=1/32,
    se_factor=1, rd_min=8`` is the authors' ``max(8, C // 32)``; without ``rd_min`` a floor of 0 is an error.
    """
    if rd_channels is not None:
        check_positive_int(module, "rd_channels", rd_channels)
        return int(rd_channels)
    for name, value in (("rd_ratio", rd_ratio), ("se_factor", se_factor)):
        if not (is_real(value) and value > 0):
            raise ConfigError(f"{module}: {name} must be a positive finite number, got {value!r}")
    check_positive_int(module, "rd_divisor", rd_divisor, allow_none=True)
    check_positive_int(module, "rd_min", rd_min, allow_none=True)
    if rd_divisor is not None:
        return make_divisible(channels * rd_ratio * se_factor, int(rd_divisor), rd_min, round_limit=0.0)
    exact = Fraction(float(rd_ratio)).limit_denominator(1 << 20) * Fraction(float(se_factor)).limit_denominator(1 << 20)
    hidden = max(int(channels * exact), rd_min or 0)
    if hidden < 1:
        raise ConfigError(f"{module}: hidden width is 0: channels={channels} with rd_ratio={rd_ratio:g}, "
                          f"se_factor={se_factor:g} and rd_divisor=None gives floor({channels} * {exact}) = 0; pass "
                          f"rd_min, rd_divisor (timm rounding), a larger rd_ratio, or rd_channels")
    return hidden


def _strips(x: Node) -> tuple[Node, Node]:
    """The directional means of ``x`` (N, C, H, W): over W, (N, C, H, 1), and over H, (N, C, 1, W)."""
    return ops.mean(x, 3), ops.mean(x, 2)


def _with_skip(x: Node, out: Node, has_skip: bool) -> Node:
    return ops.add(out, x) if has_skip else out


def _gated_hw(x: Node, a_h: Node, a_w: Node, w_first: bool, has_skip: bool, taps: dict[str, Node] | None) -> Node:
    """``x`` times the two directional gates, in the order of the module's timm forward (``w_first``: ``x * a_w *
    a_h``), which the float rounding follows; the gates go to ``taps``."""
    if taps is not None:
        taps["gate_h"] = a_h
        taps["gate_w"] = a_w
    first, second = (a_w, a_h) if w_first else (a_h, a_w)
    return _with_skip(x, ops.mul(ops.mul(x, first), second), has_skip)


def _strip_conv_table(channels: int, k: int, bias: bool) -> list[ParamSpec]:
    """The depthwise strip convolutions of ELA and StripAttn: ``conv_h`` (C, 1, k, 1) and ``conv_w`` (C, 1, 1, k),
    each with its bias where ``bias``."""
    table = []
    for branch, shape in (("h", (channels, 1, k, 1)), ("w", (channels, 1, 1, k))):
        table.append(ParamSpec(f"conv_{branch}.weight", shape, "conv_weight"))
        if bias:
            table.append(ParamSpec(f"conv_{branch}.bias", (channels,), "conv_bias"))
    return table


def _act(name: str | None, a: Node) -> Node:
    return a if name is None else ops.activation(name, a)


@dataclass(frozen=True)
class CoordAttnConfig(ReducedWidthConfig):
    """Coordinate attention (Hou et al., CVPR 2021, arXiv:2103.02907), timm's ``CoordAttn``.

    With ``s_h = mean_w(x)`` (N, C, H, 1) and ``s_w = mean_h(x)`` laid out as (N, C, W, 1):
    ``y = act(bn1(conv1(cat_H(s_h, s_w))))`` (N, rd, H + W, 1), split back into ``y_h`` (H rows) and ``y_w`` (W rows,
    laid out as (N, rd, 1, W)); ``out = x * gate(conv_w(y_w)) * gate(conv_h(y_h))``, plus ``x`` with ``has_skip``.
    conv1, conv_h, conv_w are 1x1 convolutions C -> rd -> C. The BatchNorm sees the two strips as one map of
    N * (H + W) values per channel, in training too.

    Args:
        channels: input and output channels C.
        rd_ratio, se_factor, rd_divisor, rd_channels, rd_min: the width rd (:func:`coord_hidden`). timm's default
            is ``C / 16 * 2/3`` rounded to a multiple of 8, at least 8 (C = 64 gives 8, C = 256 gives 8, C = 512
            gives 24); the authors' code has ``max(8, C // 32)`` (``COORD_PRESETS['paper']``).
        bias: biases on the three 1x1 convolutions (timm: False; the authors' code: True).
        act_layer: ``'hard_swish'`` (x * relu6(x + 3) / 6, both upstreams), ``'silu'`` or ``'relu'``.
        norm_layer: ``'batchnorm'`` (both upstreams) or ``None`` (no normalisation).
        gate_layer: ``'sigmoid'`` or ``'hard_sigmoid'``.
        has_skip: add the input to the output (timm's option; False upstream by default).
        bn_eps, bn_momentum: the BatchNorm's, torch convention (1e-5, 0.1).
        Named upstream forms are in ``COORD_PRESETS``: ``'timm'`` (the default) and ``'paper'``. They are not
        interchangeable: their widths and biases differ, so neither's weights fit the other's layers.

    BatchNorm follows the project's convention (see ``SpatialAttentionConfig``). Its input has N * (H + W) > 1
    values per channel for every input, so a training batch of one 1 x 1 map is accepted, as in timm.

    Shapes: input (N, C, H, W) in torch and Paddle, (N, H, W, C) in Flax; output the same shape.
    Parameters: ``conv1.weight`` (rd, C, 1, 1), ``conv_h.weight`` and ``conv_w.weight`` (C, rd, 1, 1), with bias
    ``conv1.bias`` (rd,), ``conv_h.bias``, ``conv_w.bias`` (C,); with norm ``bn1.weight``, ``bn1.bias`` and the
    state ``bn1.running_mean``, ``bn1.running_var`` (rd,). The names of timm's ``state_dict``.
    """

    module_name: ClassVar[str] = "CoordAttn"

    se_factor: float = 2.0 / 3
    bias: bool = False
    act_layer: str = "hard_swish"
    norm_layer: str | None = "batchnorm"
    gate_layer: str = "sigmoid"
    has_skip: bool = False
    rd_min: int | None = None
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    hidden: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        name = self.module_name
        self._check_positive_ints("channels")
        self._check_flags("bias")
        self._check_choices(act_layer=COORD_ACT_LAYERS, norm_layer=("batchnorm", None), gate_layer=GATE_LAYERS)
        self._check_flags("has_skip")
        self._check_batch_norm_fields()
        hidden = coord_hidden(name, self.channels, self.rd_ratio, self.se_factor, self.rd_channels,
                              self.rd_divisor, self.rd_min)
        object.__setattr__(self, "hidden", hidden)

    def param_table(self) -> tuple[ParamSpec, ...]:
        c, rd = self.channels, self.hidden
        table = [ParamSpec("conv1.weight", (rd, c, 1, 1), "conv_weight")]
        if self.bias:
            table.append(ParamSpec("conv1.bias", (rd,), "conv_bias"))
        if self.norm_layer is not None:
            table += [ParamSpec("bn1.weight", (rd,), "bn_weight"), ParamSpec("bn1.bias", (rd,), "bn_bias"),
                      ParamSpec("bn1.running_mean", (rd,), "bn_mean"), ParamSpec("bn1.running_var", (rd,), "bn_var")]
        for branch in ("conv_h", "conv_w"):
            table.append(ParamSpec(f"{branch}.weight", (c, rd, 1, 1), "conv_weight"))
            if self.bias:
                table.append(ParamSpec(f"{branch}.bias", (c,), "conv_bias"))
        return tuple(table)

    def check_training_input(self, shape: Sequence[int | None], layout: str = "NCHW") -> None:
        """The BatchNorm's own input is (N, rd, H + W, 1): checked on that, not on the module's input."""
        if self.norm_layer is not None:
            check_batch_norm_after(self.module_name, shape, layout, self.hidden, lambda h, w: (h + w, 1))

    def reference_forward(self, x: Node, params: Mapping[str, Node], training: bool = False,
                          taps: dict[str, Node] | None = None) -> Node:
        h = x.shape[2]
        s_h, s_w = _strips(x)
        y = ops.conv2d(ops.concat([s_h, ops.transpose(s_w, (0, 1, 3, 2))], 2), params["conv1.weight"],
                       params.get("conv1.bias"))
        if self.norm_layer is not None:
            y = ops.batch_norm(y, params["bn1.weight"], params["bn1.bias"], params["bn1.running_mean"],
                               params["bn1.running_var"], training=training, eps=self.bn_eps,
                               momentum=self.bn_momentum)
        y = ops.activation(self.act_layer, y)
        y_h = ops.take(y, 2, 0, h)
        y_w = ops.transpose(ops.take(y, 2, h, y.shape[2]), (0, 1, 3, 2))
        a_h = ops.activation(self.gate_layer, ops.conv2d(y_h, params["conv_h.weight"], params.get("conv_h.bias")))
        a_w = ops.activation(self.gate_layer, ops.conv2d(y_w, params["conv_w.weight"], params.get("conv_w.bias")))
        return _gated_hw(x, a_h, a_w, True, self.has_skip, taps)


@dataclass(frozen=True)
class SimpleCoordAttnConfig(ReducedWidthConfig):
    """timm's ``SimpleCoordAttn``: coordinate attention with Linear layers, no norm, and one gate of a sum.

    With the strips as rows, ``r_h = act(fc1(mean_w(x)^T))`` (N, H, rd) and ``r_w = act(fc1(mean_h(x)^T))`` (N, W,
    rd), one shared ``fc1`` (C -> rd); ``out = x * gate(fc_h(r_h)^T[..., None] + fc_w(r_w)^T[..., None, :])``, the
    (N, C, H, 1) and (N, C, 1, W) logits broadcast to (N, C, H, W) before the gate; plus ``x`` with ``has_skip``.

    Args:
        channels: input and output channels C.
        rd_ratio (0.25), se_factor (2/3), rd_divisor (8), rd_channels, rd_min: the width rd (:func:`coord_hidden`;
            timm: ``C / 4 * 2/3`` rounded to a multiple of 8, at least 8).
        bias: biases on the three Linear layers (timm: True).
        act_layer: ``'silu'`` (timm), ``'hard_swish'`` or ``'relu'``. gate_layer: ``'sigmoid'`` or
            ``'hard_sigmoid'``. has_skip: add the input to the output.

    Shapes: input (N, C, H, W) in torch and Paddle, (N, H, W, C) in Flax; output the same shape.
    Parameters (torch Linear layout [out, in]): ``fc1.weight`` (rd, C), ``fc_h.weight`` and ``fc_w.weight`` (C, rd),
    with bias ``fc1.bias`` (rd,), ``fc_h.bias``, ``fc_w.bias`` (C,).
    """

    module_name: ClassVar[str] = "SimpleCoordAttn"

    rd_ratio: float = 0.25
    se_factor: float = 2.0 / 3
    bias: bool = True
    act_layer: str = "silu"
    gate_layer: str = "sigmoid"
    has_skip: bool = False
    rd_min: int | None = None
    hidden: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        name = self.module_name
        self._check_positive_ints("channels")
        self._check_flags("bias")
        self._check_choices(act_layer=COORD_ACT_LAYERS, gate_layer=GATE_LAYERS)
        self._check_flags("has_skip")
        hidden = coord_hidden(name, self.channels, self.rd_ratio, self.se_factor, self.rd_channels,
                              self.rd_divisor, self.rd_min)
        object.__setattr__(self, "hidden", hidden)

    def param_table(self) -> tuple[ParamSpec, ...]:
        c, rd = self.channels, self.hidden
        table = []
        for name, shape in (("fc1", (rd, c)), ("fc_h", (c, rd)), ("fc_w", (c, rd))):
            table.append(ParamSpec(f"{name}.weight", shape, "linear_weight"))
            if self.bias:
                table.append(ParamSpec(f"{name}.bias", (shape[0],), "linear_bias"))
        return tuple(table)

    def _rows(self, strip: Node, params: Mapping[str, Node], head: str) -> Node:
        """``head(act(fc1(rows)))`` of a strip (N, C, L) taken as N * L rows of C: (N, C, L)."""
        n, c, length = strip.shape
        rows = ops.reshape(ops.transpose(strip, (0, 2, 1)), (n * length, c))
        r = _act(self.act_layer, ops.linear(rows, params["fc1.weight"], params.get("fc1.bias")))
        a = ops.linear(r, params[f"{head}.weight"], params.get(f"{head}.bias"))
        return ops.transpose(ops.reshape(a, (n, length, c)), (0, 2, 1))

    def reference_forward(self, x: Node, params: Mapping[str, Node], training: bool = False,
                          taps: dict[str, Node] | None = None) -> Node:
        n, c, h, w = x.shape
        a_h = ops.reshape(self._rows(ops.mean(x, 3, keepdims=False), params, "fc_h"), (n, c, h, 1))
        a_w = ops.reshape(self._rows(ops.mean(x, 2, keepdims=False), params, "fc_w"), (n, c, 1, w))
        g = ops.activation(self.gate_layer, ops.add(a_h, a_w))
        if taps is not None:
            taps["gate"] = g
        return _with_skip(x, ops.mul(x, g), self.has_skip)


@dataclass(frozen=True)
class EfficientLocalAttnConfig(AttentionConfig):
    """Efficient local attention (Xu and Wan, arXiv:2403.01123), timm's ``EfficientLocalAttn``.

    ``a_h = gate(act(norm_h(conv_h(mean_w(x)))))`` (N, C, H, 1), ``a_w = gate(act(norm_w(conv_w(mean_h(x)))))``
    (N, C, 1, W), ``out = x * a_h * a_w``, plus ``x`` with ``has_skip``. conv_h is a depthwise (k, 1) convolution
    along H, conv_w a depthwise (1, k) one along W, each zero padded by k // 2 so that H and W are kept. timm's norm
    is ``GroupNorm1``, a GroupNorm with one group: it normalises each sample's whole strip, over all C channels and
    all H (or W) positions together, then applies a per-channel affine. ``norm_groups`` generalises it.

    Args:
        channels: input and output channels C.
        kernel_size: odd and positive (7): an even kernel padded by k // 2 makes the strip one longer than the map.
        bias: biases on the two depthwise convolutions (timm: False).
        act_layer: ``'silu'`` (timm), ``'hard_swish'``, ``'relu'`` or ``None`` (no activation before the gate, as
            in the paper's listing).
        gate_layer: ``'sigmoid'`` or ``'hard_sigmoid'``.
        norm_layer: ``'groupnorm'`` (timm) or ``None``. norm_groups: its groups, which must divide C (timm: 1; the
            paper's listing: 16). norm_eps: its epsilon (1e-5, torch's default).
        has_skip: add the input to the output.

    Shapes: input (N, C, H, W) in torch and Paddle, (N, H, W, C) in Flax; output the same shape.
    Parameters: ``conv_h.weight`` (C, 1, k, 1), ``conv_w.weight`` (C, 1, 1, k), with bias ``conv_h.bias`` and
    ``conv_w.bias`` (C,); with norm ``norm_h.weight``, ``norm_h.bias``, ``norm_w.weight``, ``norm_w.bias`` (C,).
    """

    module_name: ClassVar[str] = "EfficientLocalAttn"
    half_in_float32: ClassVar[bool] = True  # attn_core.precision: half inputs computed in float32

    channels: int
    kernel_size: int = 7
    bias: bool = False
    act_layer: str | None = "silu"
    gate_layer: str = "sigmoid"
    norm_layer: str | None = "groupnorm"
    has_skip: bool = False
    norm_groups: int = 1
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        name = self.module_name
        self._check_positive_ints("channels")
        check_odd_kernel(name, "kernel_size", self.kernel_size,
                         "padding k // 2 keeps the strip's length only for an odd k")
        self._check_flags("bias")
        self._check_choices(act_layer=ELA_ACT_LAYERS, gate_layer=GATE_LAYERS, norm_layer=("groupnorm", None))
        self._check_flags("has_skip")
        self._check_positive_ints("norm_groups")
        if self.channels % self.norm_groups:
            raise ConfigError(f"{name}: norm_groups {self.norm_groups} does not divide channels {self.channels}")
        self._check_positive_reals("norm_eps")

    @property
    def padding(self) -> int:
        return int(self.kernel_size) // 2

    def param_table(self) -> tuple[ParamSpec, ...]:
        c = self.channels
        table = _strip_conv_table(c, int(self.kernel_size), self.bias)
        if self.norm_layer is not None:
            # the GroupNorm affine lives where BatchNorm's does in every framework (Flax: params scale and bias)
            for branch in ("h", "w"):
                table += [ParamSpec(f"norm_{branch}.weight", (c,), "bn_weight"),
                          ParamSpec(f"norm_{branch}.bias", (c,), "bn_bias")]
        return tuple(table)

    def _branch(self, strip: Node, params: Mapping[str, Node], branch: str, padding: tuple[int, int]) -> Node:
        z = ops.conv2d(strip, params[f"conv_{branch}.weight"], params.get(f"conv_{branch}.bias"), padding=padding,
                       groups=self.channels)
        if self.norm_layer is not None:
            z = ops.group_norm(z, self.norm_groups, params[f"norm_{branch}.weight"], params[f"norm_{branch}.bias"],
                               self.norm_eps)
        return ops.activation(self.gate_layer, _act(self.act_layer, z))

    def reference_forward(self, x: Node, params: Mapping[str, Node], training: bool = False,
                          taps: dict[str, Node] | None = None) -> Node:
        s_h, s_w = _strips(x)
        a_h = self._branch(s_h, params, "h", (self.padding, 0))
        a_w = self._branch(s_w, params, "w", (0, self.padding))
        return _gated_hw(x, a_h, a_w, False, self.has_skip, taps)


@dataclass(frozen=True)
class StripAttnConfig(AttentionConfig):
    """timm's ``StripAttn``: ``out = x * gate(conv_h(mean_w(x)) + conv_w(mean_h(x)))``, the (N, C, H, 1) and
    (N, C, 1, W) strips broadcast to (N, C, H, W) before the gate; plus ``x`` with ``has_skip``.

    Args:
        channels: input and output channels C.
        use_conv: the depthwise strip convolutions, (k, 1) along H and (1, k) along W, zero padded by k // 2; without
            them the strips are added as they are and the module has no parameters.
        kernel_size: odd and positive (3), used only with ``use_conv``.
        bias: biases on the two convolutions (timm: False).
        gate_layer: ``'sigmoid'`` or ``'hard_sigmoid'``. has_skip: add the input to the output.

    Shapes: input (N, C, H, W) in torch and Paddle, (N, H, W, C) in Flax; output the same shape.
    Parameters (with ``use_conv``): ``conv_h.weight`` (C, 1, k, 1), ``conv_w.weight`` (C, 1, 1, k), with bias
    ``conv_h.bias`` and ``conv_w.bias`` (C,).
    """

    module_name: ClassVar[str] = "StripAttn"
    half_in_float32: ClassVar[bool] = True  # attn_core.precision: half inputs computed in float32

    channels: int
    use_conv: bool = True
    kernel_size: int = 3
    bias: bool = False
    gate_layer: str = "sigmoid"
    has_skip: bool = False

    def __post_init__(self) -> None:
        name = self.module_name
        self._check_positive_ints("channels")
        self._check_flags("use_conv")
        if self.use_conv:
            check_odd_kernel(name, "kernel_size", self.kernel_size,
                             "padding k // 2 keeps the strip's length only for an odd k")
        self._check_flags("bias")
        self._check_choices(gate_layer=GATE_LAYERS)
        self._check_flags("has_skip")

    @property
    def padding(self) -> int:
        return int(self.kernel_size) // 2

    def param_table(self) -> tuple[ParamSpec, ...]:
        if not self.use_conv:
            return ()
        return tuple(_strip_conv_table(self.channels, int(self.kernel_size), self.bias))

    def reference_forward(self, x: Node, params: Mapping[str, Node], training: bool = False,
                          taps: dict[str, Node] | None = None) -> Node:
        s_h, s_w = _strips(x)
        if self.use_conv:
            p = self.padding
            s_h = ops.conv2d(s_h, params["conv_h.weight"], params.get("conv_h.bias"), padding=(p, 0),
                             groups=self.channels)
            s_w = ops.conv2d(s_w, params["conv_w.weight"], params.get("conv_w.bias"), padding=(0, p),
                             groups=self.channels)
        g = ops.activation(self.gate_layer, ops.add(s_h, s_w))
        if taps is not None:
            taps["gate"] = g
        return _with_skip(x, ops.mul(x, g), self.has_skip)
