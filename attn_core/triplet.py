"""Triplet attention: three CBAM-style spatial gates on the input and two rotations of it, averaged.

Paper: Diganta Misra, Trikay Nalamada, Ajay Uppili Arasanipalai, Qibin Hou. "Rotate to Attend: Convolutional Triplet
Attention Module", WACV 2021, arXiv:2010.03045. Not in timm; the reference code is the authors'
(github.com/landskape-ai/triplet-attention, ``MODELS/triplet_attention.py``, class ``TripletAttention``), whose
``state_dict`` names are the canonical names here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

from . import ops
from .autodiff import Node
from .cbam import SPATIAL_ORDERS, check_spatial_kernel_memory
from .spec import AttentionConfig, ParamSpec, check_batch_norm_input, check_odd_kernel, subtree

__all__ = ["TripletAttentionConfig", "TRIPLET_PRESETS", "TRIPLET_BRANCHES"]

#: the branches in the order of the authors' code: (submodule, reference tap, the permutation of the NCHW input
#: that the branch's gate sees; each permutation is its own inverse)
TRIPLET_BRANCHES: tuple[tuple[str, str, tuple[int, int, int, int]], ...] = (
    ("ChannelGateH", "gate_cw", (0, 2, 1, 3)),  # H on the channel axis: pooled over H, a gate over (C, W)
    ("ChannelGateW", "gate_hc", (0, 3, 2, 1)),  # W on the channel axis: pooled over W, a gate over (H, C)
    ("SpatialGate", "gate_hw", (0, 1, 2, 3)),  # CBAM's spatial gate: pooled over C, a gate over (H, W)
)

# Named forms found upstream. Use as ``TripletAttention(channels, **TRIPLET_PRESETS['original'])``.
TRIPLET_PRESETS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    # the authors' code (MODELS/triplet_attention.py; its root-level copy and External-Attention-pytorch's compute
    # the same): three branches, ZPool = cat(max, mean), 7x7 convolution without bias, BatchNorm momentum 0.01
    "original": MappingProxyType(dict(no_spatial=False, pool_order="max_mean", bn_momentum=0.01)),
    # the same code's ``no_spatial=True``: the two rotated branches only, averaged by 1/2
    "no_spatial": MappingProxyType(dict(no_spatial=True, pool_order="max_mean", bn_momentum=0.01)),
})


@dataclass(frozen=True)
class TripletAttentionConfig(AttentionConfig):
    """Triplet attention (Misra et al., WACV 2021, arXiv:2010.03045), the authors' ``TripletAttention``.

    Each branch computes ``gate(z) = sigmoid(bn(conv_kxk(cat(max_1(z), mean_1(z)))))`` (ZPool, a 2 -> 1 convolution
    zero padded by k // 2, BatchNorm of one channel) of a rotation ``z`` of the input and multiplies ``z`` by it:
    ``ChannelGateH`` on ``x.permute(0, 2, 1, 3)`` (N, H, C, W), ``ChannelGateW`` on ``x.permute(0, 3, 2, 1)``
    (N, W, H, C), ``SpatialGate`` on ``x`` itself; each product is rotated back and
    ``y = (1/3) (y_hw + y_cw + y_hc)``, or with ``no_spatial`` ``y = (1/2) (y_cw + y_hc)``.

    Args:
        channels: expected C, checked on input; ``None`` accepts any (the weights do not depend on C).
        kernel_size: odd and positive, the convolution's k (7 upstream, fixed there).
        no_spatial: leave out the spatial (H, W) branch (the authors' option; False by default).
        pool_order: ``'max_mean'`` (ZPool of the authors' code and of the paper's Eq. 1: the max map is input
            channel 0 of each convolution) or ``'mean_max'`` (CBAM's seed articles and timm's order).
        bn_eps: the BatchNorms' epsilon (1e-5). bn_momentum: torch convention, the weight of the new batch
            (0.01 in the authors' ``BasicConv``, torch's default being 0.1); Paddle and Flax layers take
            ``1 - bn_momentum`` (``attn_core.bn_momentum_for``).
        Named upstream forms are in ``TRIPLET_PRESETS``: ``'original'`` (the default) and ``'no_spatial'``.

    BatchNorm follows the project's convention (see ``SpatialAttentionConfig``); in training each BatchNorm sees
    one map per sample, N * C * W values (ChannelGateH), N * H * C (ChannelGateW) and N * H * W (SpatialGate), each
    of which must exceed 1.

    Shapes: input (N, C, H, W) in torch and Paddle, (N, H, W, C) in Flax; output the same shape.
    Parameters, for each branch ``B`` of ``ChannelGateH``, ``ChannelGateW`` and (without ``no_spatial``)
    ``SpatialGate``: ``B.spatial.conv.weight`` (1, 2, k, k), ``B.spatial.bn.weight``, ``B.spatial.bn.bias`` and
    the state ``B.spatial.bn.running_mean``, ``B.spatial.bn.running_var``, each (1,): the names of the authors'
    ``state_dict``.
    """

    module_name: ClassVar[str] = "TripletAttention"
    half_in_float32: ClassVar[bool] = True  # attn_core.precision: half inputs computed in float32

    channels: int | None = None
    kernel_size: int = 7
    no_spatial: bool = False
    pool_order: str = "max_mean"
    bn_eps: float = 1e-5
    bn_momentum: float = 0.01

    def __post_init__(self) -> None:
        name = self.module_name
        self._check_positive_ints("channels", optional=True)
        check_odd_kernel(name, "kernel_size", self.kernel_size, "7 upstream; padding k // 2 then keeps each map")
        check_spatial_kernel_memory(name, int(self.kernel_size))
        self._check_flags("no_spatial")
        self._check_choices(pool_order=SPATIAL_ORDERS)
        self._check_batch_norm_fields()

    @property
    def padding(self) -> int:
        return int(self.kernel_size) // 2

    @property
    def branches(self) -> tuple[tuple[str, str, tuple[int, int, int, int]], ...]:
        """The branches this config computes (:data:`TRIPLET_BRANCHES`, without the spatial one if ``no_spatial``)."""
        return TRIPLET_BRANCHES[:2] if self.no_spatial else TRIPLET_BRANCHES

    def param_table(self) -> tuple[ParamSpec, ...]:
        k = int(self.kernel_size)
        table = []
        for branch, _, _ in self.branches:
            head = f"{branch}.spatial"
            table += [ParamSpec(f"{head}.conv.weight", (1, 2, k, k), "conv_weight"),
                      ParamSpec(f"{head}.bn.weight", (1,), "bn_weight"), ParamSpec(f"{head}.bn.bias", (1,), "bn_bias"),
                      ParamSpec(f"{head}.bn.running_mean", (1,), "bn_mean"),
                      ParamSpec(f"{head}.bn.running_var", (1,), "bn_var")]
        return tuple(table)

    def check_training_input(self, shape: Sequence[int | None], layout: str = "NCHW") -> None:
        """Each BatchNorm's own input is one map per sample of a rotation: checked on those, not on the input."""
        if len(shape) != 4:
            return
        n, c, h, w = (shape[0], shape[1], shape[2], shape[3]) if layout == "NCHW" else \
            (shape[0], shape[3], shape[1], shape[2])
        maps = [(c, w), (h, c)] + ([] if self.no_spatial else [(h, w)])
        for a, b in maps:
            check_batch_norm_input(self.module_name, (n, 1, a, b))

    def gate(self, z: Node, params: Mapping[str, Node], training: bool) -> Node:
        """One branch's gate of ``z`` (N, A, B, D), pooled over A: (N, 1, B, D). ``params`` are the branch's
        ``spatial.*`` parameters without that prefix."""
        pooled = [ops.amax(z, 1), ops.mean(z, 1)]
        if self.pool_order == "mean_max":
            pooled.reverse()
        s = ops.conv2d(ops.concat(pooled, 1), params["conv.weight"], padding=self.padding)
        s = ops.batch_norm(s, params["bn.weight"], params["bn.bias"], params["bn.running_mean"],
                           params["bn.running_var"], training=training, eps=self.bn_eps, momentum=self.bn_momentum)
        return ops.sigmoid(s)

    def reference_forward(self, x: Node, params: Mapping[str, Node], training: bool = False,
                          taps: dict[str, Node] | None = None) -> Node:
        outs: dict[str, Node] = {}
        for branch, tap, perm in self.branches:
            z = ops.transpose(x, perm)
            g = self.gate(z, subtree(params, f"{branch}.spatial"), training)
            if taps is not None:
                taps[tap] = g
            outs[branch] = ops.transpose(ops.mul(z, g), perm)
        if self.no_spatial:
            return ops.scale(ops.add(outs["ChannelGateH"], outs["ChannelGateW"]), 0.5)
        total = ops.add(ops.add(outs["SpatialGate"], outs["ChannelGateH"]), outs["ChannelGateW"])
        return ops.scale(total, 1.0 / 3.0)
