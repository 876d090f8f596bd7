"""Shuffle Attention.

Paper: Qing-Long Zhang, Yu-Bin Yang. "SA-Net: Shuffle Attention for Deep Convolutional Neural Networks", ICASSP 2021,
arXiv:2102.00240. The authors' code: wofmanaf/SA-Net, ``models/sa_resnet.py`` (``sa_layer``, the weights of their
released SA-ResNet-50 and -101). timm has no shuffle attention.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

from . import ops
from .autodiff import Node
from .spec import AttentionConfig, ConfigError, ParamSpec

__all__ = ["ShuffleAttentionConfig", "SHUFFLE_PRESETS"]

#: the per-channel scales and shifts of the two branches, in the authors' order, and their initial values there
GATE_PARAMS = (("cweight", 0.0), ("cbias", 1.0), ("sweight", 0.0), ("sbias", 1.0))


@dataclass(frozen=True)
class ShuffleAttentionConfig(AttentionConfig):
    """Shuffle Attention (Zhang and Yang, ICASSP 2021, arXiv:2102.00240, Sec. 2).

    The C channels are cut into ``groups`` G groups, each into two halves x0, x1 of ``b = C / (2G)`` channels:
    ``x0 * sigmoid(cweight * mean_hw(x0) + cbias)`` (channel branch) and ``x1 * sigmoid(sweight * GN(x1) + sbias)``
    (spatial branch, GN a GroupNorm of b groups of one channel: each channel normalised over H, W), with the same
    b-long ``cweight``, ``cbias``, ``sweight``, ``sbias`` in every group. The gated halves, side by side per group,
    are then shuffled across the two halves of C (``channel_shuffle(out, 2)``: output channel ``2m + i`` is channel
    ``i * C / 2 + m`` before it).

    Args:
        channels: input and output channels C, a multiple of 2 * groups.
        groups: G (64 in the paper and the authors' code; External-Attention-pytorch's copy defaults to 8).
        gn_affine: the GroupNorm's own per-channel weight and bias (True: the authors' code, ``nn.GroupNorm``'s
            default; False: the paper, whose only parameters are the four gate vectors).
        gn_eps: the GroupNorm's epsilon (1e-5).
        Named upstream forms are in ``SHUFFLE_PRESETS``: ``'official'`` (the default), ``'paper'``.

    Shapes: input (N, C, H, W) in torch and Paddle, (N, H, W, C) in Flax; output the same shape.
    Parameters (the authors' ``state_dict``): ``cweight``, ``cbias``, ``sweight``, ``sbias``, each (1, b, 1, 1) in
    every framework, and with ``gn_affine`` ``gn.weight``, ``gn.bias``, each (b,).
    """

    module_name: ClassVar[str] = "ShuffleAttention"
    half_in_float32: ClassVar[bool] = True  # attn_core.precision: half inputs computed in float32

    channels: int
    groups: int = 64
    gn_affine: bool = True
    gn_eps: float = 1e-5
    branch_channels: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        self._check_positive_ints("channels", "groups")
        if self.channels % (2 * self.groups):
            raise ConfigError(f"{self.module_name}: channels must be a multiple of 2 * groups = {2 * self.groups} "
                              f"(G groups of two equal halves), got channels={self.channels}, groups={self.groups}")
        self._check_flags("gn_affine")
        self._check_positive_reals("gn_eps")
        object.__setattr__(self, "branch_channels", self.channels // (2 * self.groups))

    def param_table(self) -> tuple[ParamSpec, ...]:
        b = self.branch_channels
        table = [ParamSpec(name, (1, b, 1, 1), "param") for name, _ in GATE_PARAMS]
        if self.gn_affine:
            table += [ParamSpec("gn.weight", (b,), "bn_weight"), ParamSpec("gn.bias", (b,), "bn_bias")]
        return tuple(table)

    def reference_forward(self, x: Node, params: Mapping[str, Node], training: bool = False,
                          taps: dict[str, Node] | None = None) -> Node:
        n, c, h, w = x.shape
        g, b = self.groups, self.branch_channels
        xg = ops.reshape(x, (n * g, 2 * b, h, w))
        x0, x1 = ops.take(xg, 1, 0, b), ops.take(xg, 1, b, 2 * b)
        gate_c = ops.sigmoid(ops.add(ops.mul(ops.mean(x0, (2, 3)), params["cweight"]), params["cbias"]))
        normed = ops.group_norm(x1, b, params.get("gn.weight"), params.get("gn.bias"), float(self.gn_eps))
        gate_s = ops.sigmoid(ops.add(ops.mul(normed, params["sweight"]), params["sbias"]))
        out = ops.reshape(ops.concat([ops.mul(x0, gate_c), ops.mul(x1, gate_s)], 1), (n, c, h, w))
        if taps is not None:
            taps["sa_channel_gate"] = ops.reshape(gate_c, (n, c // 2, 1, 1))
            taps["sa_spatial_gate"] = ops.reshape(gate_s, (n, c // 2, h, w))
            taps["sa_unshuffled"] = out
        shuffled = ops.transpose(ops.reshape(out, (n, 2, c // 2, h, w)), (0, 2, 1, 3, 4))
        return ops.reshape(shuffled, (n, c, h, w))


# Named forms found upstream (docs/modules.md). Use as ``ShuffleAttention(channels, **SHUFFLE_PRESETS['paper'])``.
SHUFFLE_PRESETS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    # the authors' sa_layer: nn.GroupNorm with its own affine before the sweight / sbias gate
    "official": MappingProxyType(dict(gn_affine=True)),
    # the paper: W2 * GN(x1) + b2 with a GroupNorm without affine, four b-long vectors the only parameters
    "paper": MappingProxyType(dict(gn_affine=False)),
})
