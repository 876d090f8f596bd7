"""Selective Kernel convolution: parallel convolution paths of different receptive fields, mixed per channel by a
softmax over the paths.

Paper: Xiang Li, Wenhai Wang, Xiaolin Hu, Jian Yang. "Selective Kernel Networks", CVPR 2019, arXiv:1903.06586.
timm: ``timm.layers.selective_kernel.SelectiveKernel`` (with ``SelectiveKernelAttn``), ``create_attn('sk', C)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from . import ops
from .autodiff import Node
from .spec import (
    AttentionConfig,
    ConfigError,
    ParamSpec,
    as_int,
    check_batch_norm_after,
    make_divisible,
)

__all__ = ["SelectiveKernelConfig", "PATH_ACTIVATIONS", "conv_output_size"]

#: activations of the convolution paths (timm's ``act_layer``); the attention's own is always ReLU, as in timm
PATH_ACTIVATIONS = ("relu", "silu")

_BN_TABLE = (("weight", "bn_weight"), ("bias", "bn_bias"), ("running_mean", "bn_mean"), ("running_var", "bn_var"))


def bn_params(prefix: str, channels: int) -> tuple[ParamSpec, ...]:
    """The four entries of a BatchNorm over ``channels`` under ``prefix`` (torch's ``state_dict`` names)."""
    return tuple(ParamSpec(f"{prefix}.{leaf}", (channels,), role) for leaf, role in _BN_TABLE)


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """One spatial size after a zero-padded convolution, as torch computes it (floor mode)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _kernel_tuple(value: Any) -> Any:
    """``kernel_size`` as given, a sequence made a tuple of plain ints (so configs compare equal however built)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return tuple(as_int(k) for k in value)
    return as_int(value)


@dataclass(frozen=True)
class SelectiveKernelConfig(AttentionConfig):
    """Selective Kernel convolution (Li et al., CVPR 2019, arXiv:1903.06586), timm's form (``SelectiveKernel``).

    Paths ``i = 1..P``: ``U_i = act(BN(conv_i(x_i)))``, each ``conv_i`` a ``k_i x k_i`` convolution with dilation
    ``d_i``, stride ``stride`` and ``groups`` groups, from ``x_i`` (the i-th of P equal channel slices of ``x`` with
    ``split_input``, else ``x`` itself) to ``out_channels``. Attention: ``s = mean_hw(sum_i U_i)``,
    ``z = relu(BN(fc_reduce(s)))``, ``a = softmax over i of fc_select(z)`` (P x out_channels logits, path-major);
    output ``sum_i a_i * U_i``. The convolution changes the channel count and, with ``stride``, the map.

    Args:
        in_channels: input channels C (the first argument of ``create_attn('sk', C)``).
        out_channels: output channels (None: ``in_channels``).
        kernel_size: one kernel per path (default ``[3, 5]``); an int ``k`` gives two ``k x k`` paths, as timm.
            Each must be odd and at least 3.
        stride: the stride of every path's convolution (padding ``((stride - 1) + d (k - 1)) // 2``, timm's).
        dilation: the module's dilation, which every path's multiplies.
        groups: groups of each path's convolution, clipped to ``out_channels`` as timm does; it must divide the
            path's input and output channels.
        rd_ratio, rd_channels, rd_divisor: the attention's hidden width, ``rd_channels`` or ``out_channels *
            rd_ratio`` rounded by timm's ``make_divisible`` (nearest multiple of ``rd_divisor``, at least it, not
            below 90 %).
        keep_3x3: every path a 3 x 3 convolution, a larger kernel ``k`` replaced by dilation ``(k - 1) // 2``
            (timm's default, SKNet's "5x5 as dilated 3x3"); False keeps ``k x k`` at the module's dilation.
        split_input: each path reads its own slice of ``in_channels / P`` channels (timm's default); False: all.
        act_layer: the paths' activation, ``'relu'`` or ``'silu'``.
        bn_eps, bn_momentum: every BatchNorm's (torch convention, the weight of the new batch).

    Shapes: input (N, in_channels, H, W) in torch and Paddle, (N, H, W, in_channels) in Flax; output (N,
    out_channels, H', W'), H' = floor((H - 1) / stride) + 1 for an odd stride's padding (the same in every path).
    Parameters (timm's ``state_dict`` keys): ``paths.<i>.conv.weight`` (out, in_path / groups, k, k) and
    ``paths.<i>.bn.*`` (out,); ``attn.fc_reduce.weight`` (rd, out, 1, 1), ``attn.bn.*`` (rd,),
    ``attn.fc_select.weight`` (P * out, rd, 1, 1). No biases.
    """

    module_name: ClassVar[str] = "SelectiveKernel"
    half_in_float32: ClassVar[bool] = True  # attn_core.precision: half inputs computed in float32

    in_channels: int
    out_channels: int | None = None
    kernel_size: int | tuple[int, ...] | None = None
    stride: int = 1
    dilation: int = 1
    groups: int = 1
    rd_ratio: float = 1.0 / 16
    rd_channels: int | None = None
    rd_divisor: int = 8
    keep_3x3: bool = True
    split_input: bool = True
    act_layer: str = "relu"
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    out: int = field(init=False, compare=False, repr=False)
    kernels: tuple[int, ...] = field(init=False, compare=False, repr=False)
    dilations: tuple[int, ...] = field(init=False, compare=False, repr=False)
    paddings: tuple[int, ...] = field(init=False, compare=False, repr=False)
    path_in: int = field(init=False, compare=False, repr=False)
    conv_groups: int = field(init=False, compare=False, repr=False)
    attn_channels: int = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        name = self.module_name
        self._check_positive_ints("in_channels")
        self._check_positive_ints("out_channels", optional=True)
        object.__setattr__(self, "kernel_size", _kernel_tuple(self.kernel_size))
        ks = self.kernel_size
        given = (3, 5) if ks is None else ks if isinstance(ks, tuple) else (ks, ks)
        if not given:
            raise ConfigError(f"{name}: kernel_size must name at least one path's kernel, got ()")
        for k in given:
            if isinstance(k, bool) or not isinstance(k, int) or k < 3 or k % 2 == 0:
                raise ConfigError(f"{name}: kernel_size must be an odd integer >= 3 or a sequence of them (one per "
                                  f"path; timm asserts k >= 3 and odd), got {self.kernel_size!r}")
        self._check_positive_ints("stride", "dilation", "groups", "rd_divisor")
        self._check_positive_ints("rd_channels", optional=True)
        self._check_positive_reals("rd_ratio")
        self._check_flags("keep_3x3", "split_input")
        self._check_choices(act_layer=PATH_ACTIVATIONS)
        self._check_batch_norm_fields()

        out = int(self.out_channels or self.in_channels)
        paths = len(given)
        if self.keep_3x3:
            dilations = tuple(self.dilation * (k - 1) // 2 for k in given)
            kernels = (3,) * paths
        else:
            dilations, kernels = (self.dilation,) * paths, tuple(given)
        if self.split_input and self.in_channels % paths:
            raise ConfigError(f"{name}: in_channels ({self.in_channels}) must be a multiple of the number of paths "
                              f"({paths}) with split_input=True (each path reads in_channels / {paths} channels)")
        path_in = self.in_channels // paths if self.split_input else self.in_channels
        groups = min(out, self.groups)  # timm clips the groups to the output channels
        if path_in % groups or out % groups:
            raise ConfigError(f"{name}: groups ({groups}) must divide each path's input channels ({path_in}) and "
                              f"out_channels ({out})")
        attn = self.rd_channels or make_divisible(out * float(self.rd_ratio), self.rd_divisor)
        for key, value in (("out", out), ("kernels", kernels), ("dilations", dilations), ("path_in", path_in),
                           ("conv_groups", groups), ("attn_channels", attn),
                           ("paddings", tuple(((self.stride - 1) + d * (k - 1)) // 2
                                              for k, d in zip(kernels, dilations, strict=True)))):
            object.__setattr__(self, key, value)

    @property
    def channels_required(self) -> int | None:
        return self.in_channels

    @property
    def num_paths(self) -> int:
        return len(self.kernels)

    def output_hw(self, h: int, w: int) -> tuple[int, int]:
        """The output's spatial size for an (h, w) input (every path gives the same)."""
        k, p, d = self.kernels[0], self.paddings[0], self.dilations[0]
        return conv_output_size(h, k, self.stride, p, d), conv_output_size(w, k, self.stride, p, d)

    def check_training_input(self, shape: Sequence[int | None], layout: str = "NCHW") -> None:
        """Each BatchNorm's own input in training: the paths' (N, out, H', W') and the attention's (N, rd, 1, 1),
        which needs N > 1 whatever the map."""
        check_batch_norm_after(f"{self.module_name}: paths.0.bn", shape, layout, self.out, self.output_hw)
        check_batch_norm_after(f"{self.module_name}: attn.bn", shape, layout, self.attn_channels)

    def param_table(self) -> tuple[ParamSpec, ...]:
        table: list[ParamSpec] = []
        for i, k in enumerate(self.kernels):
            table.append(ParamSpec(f"paths.{i}.conv.weight", (self.out, self.path_in // self.conv_groups, k, k),
                                   "conv_weight"))
            table += bn_params(f"paths.{i}.bn", self.out)
        table.append(ParamSpec("attn.fc_reduce.weight", (self.attn_channels, self.out, 1, 1), "conv_weight"))
        table += bn_params("attn.bn", self.attn_channels)
        table.append(ParamSpec("attn.fc_select.weight", (self.num_paths * self.out, self.attn_channels, 1, 1),
                               "conv_weight"))
        return tuple(table)

    def _bn(self, z: Node, params: Mapping[str, Node], prefix: str, training: bool) -> Node:
        return ops.batch_norm(z, params[f"{prefix}.weight"], params[f"{prefix}.bias"],
                              params[f"{prefix}.running_mean"], params[f"{prefix}.running_var"], training=training,
                              eps=self.bn_eps, momentum=self.bn_momentum)

    def reference_forward(self, x: Node, params: Mapping[str, Node], training: bool = False,
                          taps: dict[str, Node] | None = None) -> Node:
        p = self.num_paths
        inputs = ops.split(x, p, 1) if self.split_input else [x] * p
        paths = []
        for i, xi in enumerate(inputs):
            u = ops.conv2d(xi, params[f"paths.{i}.conv.weight"], stride=self.stride, padding=self.paddings[i],
                           groups=self.conv_groups, dilation=self.dilations[i])
            paths.append(ops.activation(self.act_layer, self._bn(u, params, f"paths.{i}.bn", training)))
        n, c, ho, wo = paths[0].shape
        stacked = ops.concat([ops.reshape(u, (n, 1, c, ho, wo)) for u in paths], 1)  # (N, P, C, H', W')
        s = ops.mean(ops.sum(stacked, 1, keepdims=False), (2, 3))  # (N, C, 1, 1)
        z = ops.conv2d(s, params["attn.fc_reduce.weight"])
        z = ops.relu(self._bn(z, params, "attn.bn", training))
        logits = ops.reshape(ops.conv2d(z, params["attn.fc_select.weight"]), (n, p, c, 1, 1))
        a = ops.softmax(logits, 1)
        if taps is not None:
            taps["paths"] = stacked
            taps["path_attn"] = a
        return ops.sum(ops.mul(stacked, a), 1, keepdims=False)
