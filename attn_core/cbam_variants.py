"""timm's light CBAM: both attention maps computed from the average of the mean and the max pool.

Paper: Sanghyun Woo, Jongchan Park, Joon-Young Lee, In So Kweon. "CBAM: Convolutional Block Attention Module",
ECCV 2018, arXiv:1807.06521. The light form is timm's experiment (timm/layers/cbam.py, ``LightCbamModule``), not the
paper's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from . import ops
from .autodiff import Node
from .cbam import check_spatial_kernel_memory
from .se import ACT_LAYERS, squeeze_mlp_table
from .spec import ParamSpec, ReducedWidthConfig, check_odd_kernel, prefixed, reduced_channels

__all__ = ["LightCBAMConfig"]


def _half_mean_half_max(x: Node, axis: int | tuple[int, ...]) -> Node:
    """``0.5 * mean + 0.5 * max`` over ``axis`` (kept), the one pooled map of each light gate."""
    return ops.add(ops.scale(ops.mean(x, axis), 0.5), ops.scale(ops.amax(x, axis), 0.5))


@dataclass(frozen=True)
class LightCBAMConfig(ReducedWidthConfig):
    """Light CBAM (timm's ``LightCbamModule``, registry key ``'lcbam'``; after CBAM, Woo et al., ECCV 2018,
    arXiv:1807.06521).

    ``x1 = x * sigmoid(fc2(act(fc1(p_hw))))`` with ``p_hw = 0.5 * mean_hw(x) + 0.5 * max_hw(x)``: one pass of the
    channel MLP (two 1x1 convolutions C -> rd -> C) instead of CBAM's two. Then
    ``y = x1 * sigmoid(bn(conv_kxk(p_c)))`` with ``p_c = 0.5 * mean_c(x1) + 0.5 * max_c(x1)``: a 1 -> 1 channel
    convolution without bias, zero padded by k // 2, and BatchNorm on its one channel.

    Args:
        channels: input and output channels C.
        rd_ratio, rd_channels, rd_divisor: the hidden width of the channel MLP as in CBAM's channel attention: timm
            rounds ``C * rd_ratio`` to the nearest multiple of ``rd_divisor`` (1), at least the divisor; ``None``
            floors it, an error where that is 0; ``rd_channels`` overrides both.
        spatial_kernel_size: the spatial convolution's k, odd (7).
        act_layer: ``'relu'`` (default) or ``'silu'``.
        gate_layer: ``'sigmoid'`` only: timm accepts the argument but both light gates are sigmoids whatever it
            says, so any other value is refused rather than ignored.
        mlp_bias: biases on the channel MLP (False).
        bn_eps, bn_momentum: the spatial BatchNorm's (1e-5, 0.1, torch convention: weight of the new batch), which
            timm leaves at torch's defaults. The running statistics follow the project's one convention (see
            :class:`attn_core.SpatialAttentionConfig`); training needs N*H*W > 1.

    Shapes: input (N, C, H, W) in torch and Paddle, (N, H, W, C) in Flax; output the same shape.
    Parameters (canonical, torch layout; timm's names): ``channel.fc1.weight`` (rd, C, 1, 1),
    ``channel.fc2.weight`` (C, rd, 1, 1) (with ``mlp_bias`` also ``channel.fc1.bias``, ``channel.fc2.bias``),
    ``spatial.conv.conv.weight`` (1, 1, k, k), ``spatial.conv.bn.weight``, ``spatial.conv.bn.bias`` and the state
    ``spatial.conv.bn.running_mean``, ``spatial.conv.bn.running_var``, each (1,).
    """

    module_name: ClassVar[str] = "LightCbamModule"

    rd_divisor: int | None = 1
    spatial_kernel_size: int = 7
    act_layer: str = "relu"
    gate_layer: str = "sigmoid"
    mlp_bias: bool = False
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    hidden: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        name = self.module_name
        self._check_positive_ints("channels")
        self._check_choices(act_layer=ACT_LAYERS, gate_layer=("sigmoid",))
        self._check_flags("mlp_bias")
        check_odd_kernel(name, "spatial_kernel_size", self.spatial_kernel_size,
                         "padding k // 2 then keeps H and W")
        check_spatial_kernel_memory(name, int(self.spatial_kernel_size), in_channels=1)
        self._check_batch_norm_fields()
        hidden = reduced_channels(name, self.channels, self.rd_ratio, self.rd_channels, self.rd_divisor)
        object.__setattr__(self, "hidden", hidden)

    @property
    def padding(self) -> int:
        return int(self.spatial_kernel_size) // 2

    def param_table(self) -> tuple[ParamSpec, ...]:
        k = int(self.spatial_kernel_size)
        return (*prefixed("channel", squeeze_mlp_table(self.channels, self.hidden, self.mlp_bias)),
                ParamSpec("spatial.conv.conv.weight", (1, 1, k, k), "conv_weight"),
                ParamSpec("spatial.conv.bn.weight", (1,), "bn_weight"),
                ParamSpec("spatial.conv.bn.bias", (1,), "bn_bias"),
                ParamSpec("spatial.conv.bn.running_mean", (1,), "bn_mean"),
                ParamSpec("spatial.conv.bn.running_var", (1,), "bn_var"))

    def reference_forward(self, x: Node, params: Mapping[str, Node], training: bool = False,
                          taps: dict[str, Node] | None = None) -> Node:
        h = ops.conv2d(_half_mean_half_max(x, (2, 3)), params["channel.fc1.weight"], params.get("channel.fc1.bias"))
        h = ops.conv2d(ops.activation(self.act_layer, h), params["channel.fc2.weight"],
                       params.get("channel.fc2.bias"))
        channel_gate = ops.sigmoid(h)
        x1 = ops.mul(x, channel_gate)
        z = ops.conv2d(_half_mean_half_max(x1, 1), params["spatial.conv.conv.weight"], padding=self.padding)
        z = ops.batch_norm(z, params["spatial.conv.bn.weight"], params["spatial.conv.bn.bias"],
                           params["spatial.conv.bn.running_mean"], params["spatial.conv.bn.running_var"],
                           training=training, eps=self.bn_eps, momentum=self.bn_momentum)
        spatial_gate = ops.sigmoid(z)
        if taps is not None:
            taps["channel_gate"] = channel_gate
            taps["channel_out"] = x1
            taps["spatial_gate"] = spatial_gate
        return ops.mul(x1, spatial_gate)
