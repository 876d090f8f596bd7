"""Convolutional Block Attention Module: channel attention, spatial attention, and both in sequence.

Paper: Sanghyun Woo, Jongchan Park, Joon-Young Lee, In So Kweon. "CBAM: Convolutional Block Attention Module",
ECCV 2018, arXiv:1807.06521.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar

from . import ops
from .autodiff import Node
from .se import GATE_LAYERS, SqueezeMLPConfig
from .spec import (
    AttentionConfig,
    ConfigError,
    ParamSpec,
    ReducedWidthConfig,
    WeightLoadError,
    check_odd_kernel,
    prefixed,
    subtree,
)

__all__ = ["ChannelAttentionConfig", "SpatialAttentionConfig", "CBAMConfig", "CBAM_PRESETS", "SPATIAL_ORDERS",
           "CBAM_TIMM_KEYS", "cbam_keys_from_timm", "cbam_keys_to_timm"]

# Which pooled map comes first in the 2-channel input of the spatial convolution. Input channel 0 of
# ``conv.weight`` multiplies the first one. The seed articles and timm: mean first; the authors' code: max first.
SPATIAL_ORDERS = ("mean_max", "max_mean")

#: bytes per weight value in the widest dtype any backend or the reference keeps the spatial convolution in (float64)
_WEIGHT_BYTES = 8


def physical_memory_bytes() -> int | None:
    """This machine's physical memory in bytes, or ``None`` where the platform does not say (then no kernel size is
    refused for its size)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def check_spatial_kernel_memory(module: str, kernel_size: int, in_channels: int = 2) -> None:
    """Refuse a spatial kernel whose ``in_channels * k * k`` float64 weights (2 pooled maps in CBAM) exceed physical
    memory, before anything allocates them: such a module could never be built (k = 100001 asked for 80 GB before
    failing). A kernel larger than the map stays allowed, as any that fits."""
    memory = physical_memory_bytes()
    need = in_channels * kernel_size * kernel_size * _WEIGHT_BYTES
    if memory is None or need <= memory:
        return
    k_max = int((memory // (in_channels * _WEIGHT_BYTES)) ** 0.5)
    k_max -= 1 - k_max % 2  # the largest odd k whose weights fit
    raise ConfigError(f"{module}: kernel_size {kernel_size} needs {need:,} bytes for its {in_channels} x "
                      f"{kernel_size} x {kernel_size} float64 weights, more than this machine's {memory:,} bytes "
                      f"of memory; accepted: odd kernel sizes up to {k_max}")


@dataclass(frozen=True)
class ChannelAttentionConfig(SqueezeMLPConfig):
    """CBAM channel attention (Woo et al., ECCV 2018, arXiv:1807.06521, Eq. 2).

    ``y = x * gate(mlp(mean_hw(x)) + mlp(max_hw(x)))`` with one shared MLP of two 1x1 convolutions C -> rd -> C.

    Args:
        channels: input and output channels C.
        rd_ratio: reduction ratio of the hidden width (1/16).
        rd_channels: hidden width; overrides ``rd_ratio``.
        rd_divisor: 1 (default, timm's CbamModule) rounds ``C * rd_ratio`` to the nearest integer, at least 1;
            ``None`` gives exactly ``C // r`` (the seed article), an error where that is 0.
        bias: biases in the MLP (seed article and timm: False; the authors' code: True).
        act_layer: ``'relu'`` or ``'silu'``. gate_layer: ``'sigmoid'`` or ``'hard_sigmoid'``.

    Shapes: input (N, C, H, W) in torch and Paddle, (N, H, W, C) in Flax; output the same shape.
    Parameters: ``fc1.weight`` (rd, C, 1, 1), ``fc2.weight`` (C, rd, 1, 1), and with bias ``fc1.bias``, ``fc2.bias``.
    """

    module_name: ClassVar[str] = "ChannelAttention"

    rd_divisor: int | None = 1
    bias: bool = False

    def reference_forward(self, x: Node, params: Mapping[str, Node], training: bool = False,
                          taps: dict[str, Node] | None = None) -> Node:
        avg, mx = self.mlp(ops.mean(x, (2, 3)), params), self.mlp(ops.amax(x, (2, 3)), params)
        g = ops.activation(self.gate_layer, ops.add(avg, mx))
        if taps is not None:
            taps["gate"] = g
        return ops.mul(x, g)


@dataclass(frozen=True)
class SpatialAttentionConfig(AttentionConfig):
    """CBAM spatial attention (Woo et al., ECCV 2018, arXiv:1807.06521, Eq. 3).

    ``y = x * gate(norm(conv_kxk(cat(mean_c(x), max_c(x)))))``, the convolution 2 -> 1 channels, zero padded by k // 2
    on every side so that H and W are kept.

    Args:
        channels: expected C, checked on input; ``None`` accepts any channel count (the weights do not depend on C).
        kernel_size: odd and positive; the paper uses 7 (3 is the other common choice). One whose 2 * k * k float64
            weights exceed the machine's physical memory is a ``ConfigError`` (:func:`check_spatial_kernel_memory`).
        order: ``'mean_max'`` (seed article, timm: the mean map is input channel 0 of the convolution) or
            ``'max_mean'`` (the authors' code).
        bias: a bias on the convolution (False everywhere upstream).
        norm: BatchNorm on the 1-channel map after the convolution (timm and the authors' code: True; the seed
            article: False).
        bn_eps: BatchNorm epsilon (1e-5). bn_momentum: torch convention, the weight of the new batch (0.1);
            backends whose convention is the weight of the running value use 1 - bn_momentum.
        gate_layer: ``'sigmoid'`` or ``'hard_sigmoid'``.

    BatchNorm, the project's one convention (torch's), in every backend: training normalises with the batch
    mean and the biased batch variance; evaluation with the running statistics. After a training forward, with
    m = bn_momentum and count = N*H*W, ``running_mean <- (1 - m) * running_mean + m * batch_mean`` and
    ``running_var <- (1 - m) * running_var + m * biased_var * count / (count - 1)`` (the unbiased variance, as
    torch stores it; Paddle's and Flax's own BatchNorm store the biased one, so those backends carry their own
    layer). Training needs count > 1: a batch with one value per channel is an ``InputShapeError``.

    Shapes: input (N, C, H, W) in torch and Paddle, (N, H, W, C) in Flax; output the same shape.
    Parameters: ``conv.weight`` (1, 2, k, k); with bias ``conv.bias`` (1,); with norm ``bn.weight``, ``bn.bias``
    and the state ``bn.running_mean``, ``bn.running_var``, each (1,).
    """

    module_name: ClassVar[str] = "SpatialAttention"
    half_in_float32: ClassVar[bool] = True  # attn_core.precision: half inputs computed in float32

    channels: int | None = None
    kernel_size: int = 7
    order: str = "mean_max"
    bias: bool = False
    norm: bool = False
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    gate_layer: str = "sigmoid"

    def __post_init__(self) -> None:
        self._check_positive_ints("channels", optional=True)
        check_odd_kernel(self.module_name, "kernel_size", self.kernel_size,
                         "3 or 7 in the paper; padding k // 2 then keeps H and W")
        check_spatial_kernel_memory(self.module_name, int(self.kernel_size))
        self._check_choices(order=SPATIAL_ORDERS)
        self._check_flags("bias", "norm")
        self._check_choices(gate_layer=GATE_LAYERS)
        self._check_batch_norm_fields()

    @property
    def padding(self) -> int:
        return int(self.kernel_size) // 2

    def param_table(self) -> tuple[ParamSpec, ...]:
        k = int(self.kernel_size)
        table = [ParamSpec("conv.weight", (1, 2, k, k), "conv_weight")]
        if self.bias:
            table.append(ParamSpec("conv.bias", (1,), "conv_bias"))
        if self.norm:
            table += [ParamSpec("bn.weight", (1,), "bn_weight"), ParamSpec("bn.bias", (1,), "bn_bias"),
                      ParamSpec("bn.running_mean", (1,), "bn_mean"), ParamSpec("bn.running_var", (1,), "bn_var")]
        return tuple(table)

    def reference_forward(self, x: Node, params: Mapping[str, Node], training: bool = False,
                          taps: dict[str, Node] | None = None) -> Node:
        pooled = [ops.mean(x, 1), ops.amax(x, 1)]
        if self.order == "max_mean":
            pooled.reverse()
        z = ops.conv2d(ops.concat(pooled, 1), params["conv.weight"], params.get("conv.bias"), padding=self.padding)
        if self.norm:
            z = ops.batch_norm(z, params["bn.weight"], params["bn.bias"], params["bn.running_mean"],
                               params["bn.running_var"], training=training, eps=self.bn_eps,
                               momentum=self.bn_momentum)
        g = ops.activation(self.gate_layer, z)
        if taps is not None:
            taps["gate"] = g
        return ops.mul(x, g)


# Named forms found upstream (see the porting notes). Use as ``CBAM(channels, **CBAM_PRESETS['timm'])``.
CBAM_PRESETS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    # the seed articles: floor C // r, MLP without bias, cat([mean, max]), no BatchNorm
    "article": MappingProxyType(dict(rd_divisor=None, mlp_bias=False, spatial_order="mean_max", spatial_norm=False)),
    # timm CbamModule: rounded width (divisor 1), no MLP bias, mean first, BatchNorm after the 7x7 convolution
    "timm": MappingProxyType(dict(rd_divisor=1, mlp_bias=False, spatial_order="mean_max", spatial_norm=True)),
    # the authors' code (Jongchan/attention-module): Linear with bias, cat([max, mean]), conv + BatchNorm
    "original": MappingProxyType(dict(rd_divisor=None, mlp_bias=True, spatial_order="max_mean", spatial_norm=True)),
})


#: CBAM's spatial parameters (with ``spatial_norm``, as in the 'timm' preset) -> the name timm's ``CbamModule`` gives
#: them in its ``state_dict``: timm's spatial half keeps its convolution and BatchNorm in one ``ConvNormAct``
#: (``spatial.conv``), the project's side by side, which its checkpoints and models already use. torch's BatchNorm
#: counter is included, as both ``state_dict`` hold it.
CBAM_TIMM_KEYS: Mapping[str, str] = MappingProxyType({
    "spatial.conv.weight": "spatial.conv.conv.weight",
    "spatial.bn.weight": "spatial.conv.bn.weight",
    "spatial.bn.bias": "spatial.conv.bn.bias",
    "spatial.bn.running_mean": "spatial.conv.bn.running_mean",
    "spatial.bn.running_var": "spatial.conv.bn.running_var",
    "spatial.bn.num_batches_tracked": "spatial.conv.bn.num_batches_tracked",
})

_V = TypeVar("_V")


def _rename(state_dict: Mapping[str, _V], mapping: Mapping[str, str], other: Mapping[str, str],
            direction: str) -> dict[str, _V]:
    """``state_dict`` with every key equal to a key of ``mapping``, or ending in ``'.'`` and one, renamed to its value
    (a CBAM inside a model is renamed under its prefix). Keys named as in ``other`` (the convention being left) and
    renames onto a key already there are refused, all in one :class:`WeightLoadError`."""
    out: dict[str, _V] = {}
    wrong: list[str] = []
    for key, value in state_dict.items():
        new = key
        for src, dst in mapping.items():
            if key == src or key.endswith("." + src):
                new = key[:len(key) - len(src)] + dst
                break
        else:
            if any(key == o or key.endswith("." + o) for o in other):
                wrong.append(key)
        if new in out:
            wrong.append(key)
        out[new] = value
    if wrong:
        # listed as unexpected: already named the other way, or a second key onto one name
        raise WeightLoadError(f"CBAM (key map {direction})", [], wrong, [])
    return out


def cbam_keys_from_timm(state_dict: Mapping[str, _V]) -> dict[str, _V]:
    """A ``state_dict`` (or canonical weights) of timm's ``CbamModule``, or of a model holding it, with the project's
    names: ``spatial.conv.conv.*`` -> ``spatial.conv.*``, ``spatial.conv.bn.*`` -> ``spatial.bn.*``
    (:data:`CBAM_TIMM_KEYS`); every other key is kept. The result loads strictly into the project's
    ``CBAM(C, **CBAM_PRESETS['timm'])``; a key already in the project's spatial names is a :class:`WeightLoadError`
    listing it."""
    return _rename(state_dict, {v: k for k, v in CBAM_TIMM_KEYS.items()}, CBAM_TIMM_KEYS, "from timm")


def cbam_keys_to_timm(state_dict: Mapping[str, _V]) -> dict[str, _V]:
    """The inverse of :func:`cbam_keys_from_timm`: the project's CBAM names -> timm's ``CbamModule`` names."""
    return _rename(state_dict, CBAM_TIMM_KEYS, {v: k for k, v in CBAM_TIMM_KEYS.items()}, "to timm")


@dataclass(frozen=True)
class CBAMConfig(ReducedWidthConfig):
    """CBAM (Woo et al., ECCV 2018, arXiv:1807.06521): channel attention, then spatial attention on its output.

    ``x1 = ChannelAttention(x)``; ``y = SpatialAttention(x1)``; no residual (the paper has none inside the module).

    Args:
        channels: input and output channels C.
        rd_ratio, rd_channels, rd_divisor, act_layer: of the channel attention (see ChannelAttention).
        spatial_kernel_size: the spatial convolution's k (7).
        mlp_bias: biases in the channel MLP. spatial_order, spatial_bias, spatial_norm: the spatial attention's
            ``order``, ``bias`` and ``norm``. bn_eps, bn_momentum: its BatchNorm's, torch convention.
        gate_layer: of both gates.
        Named upstream forms are in ``CBAM_PRESETS``: ``'article'``, ``'timm'``, ``'original'``.

    Shapes: input (N, C, H, W) in torch and Paddle, (N, H, W, C) in Flax; output the same shape.
    Parameters: the channel attention's under ``channel.``, the spatial attention's under ``spatial.``.
    """

    module_name: ClassVar[str] = "CBAM"

    rd_divisor: int | None = 1
    spatial_kernel_size: int = 7
    mlp_bias: bool = False
    spatial_order: str = "mean_max"
    spatial_bias: bool = False
    spatial_norm: bool = False
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    act_layer: str = "relu"
    gate_layer: str = "sigmoid"
    channel: ChannelAttentionConfig = field(init=False, compare=False, repr=False)
    spatial: SpatialAttentionConfig = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._check_positive_ints("channels")
        try:
            ca = ChannelAttentionConfig(self.channels, self.rd_ratio, self.rd_channels, self.rd_divisor,
                                        self.mlp_bias, self.act_layer, self.gate_layer)
            sa = SpatialAttentionConfig(self.channels, self.spatial_kernel_size, self.spatial_order,
                                        self.spatial_bias, self.spatial_norm, self.bn_eps, self.bn_momentum,
                                        self.gate_layer)
        except ConfigError as err:
            raise ConfigError(f"{self.module_name}: {err}") from None
        object.__setattr__(self, "channel", ca)
        object.__setattr__(self, "spatial", sa)

    @property
    def hidden(self) -> int:
        return self.channel.hidden

    def param_table(self) -> tuple[ParamSpec, ...]:
        return prefixed("channel", self.channel.param_table()) + prefixed("spatial", self.spatial.param_table())

    def reference_forward(self, x: Node, params: Mapping[str, Node], training: bool = False,
                          taps: dict[str, Node] | None = None) -> Node:
        sub_taps: dict[str, Node] = {}
        x1 = self.channel.reference_forward(x, subtree(params, "channel"), training, sub_taps)
        if taps is not None:
            taps["channel_gate"] = sub_taps["gate"]
            taps["channel_out"] = x1
        y = self.spatial.reference_forward(x1, subtree(params, "spatial"), training, sub_taps)
        if taps is not None:
            taps["spatial_gate"] = sub_taps["gate"]
        return y
