"""Global Attention Mechanism.

Paper: Yichao Liu, Zongru Shao, Nico Hoffmann. "Global Attention Mechanism: Retain Information to Enhance
Channel-Spatial Interactions", 2021, arXiv:2112.05561. The authors published no code; the form here is the paper's
Fig. 2-4 and Eqs. 1-2, which the copy circulating in detection tutorials (z1069614715/objectdetection_script,
``cv-attention/GAM.py``) computes under the names used here. For ResNet-50 the paper adopts "group convolution with
channel shuffle [...] to avoid a significant parameter increase" without giving the number of groups: the
``'grouped'`` preset takes 4 for both, the blog copies' ``groups=rate`` and ``channel_shuffle(x, 4)``. timm has no GAM.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

from . import ops
from .autodiff import Node
from .spec import AttentionConfig, ConfigError, ParamSpec, check_odd_kernel

__all__ = ["GAMConfig", "GAM_PRESETS"]


@dataclass(frozen=True)
class GAMConfig(AttentionConfig):
    """GAM (Liu et al., 2021, arXiv:2112.05561): a channel MLP on every position, then two 7x7 convolutions.

    With ``Cr = int(C / rate)``: ``a = mlp(x permuted to (N, H, W, C))`` permuted back, the MLP
    ``channel_attention`` = Linear C -> Cr, ReLU, Linear Cr -> C (both with bias); ``x1 = x * sigmoid(a)``;
    ``s = BN(conv(ReLU(BN(conv(x1)))))`` with ``spatial_attention`` = k x k convolution C -> Cr (bias, padding
    k // 2), BatchNorm, ReLU, k x k convolution Cr -> C, BatchNorm; ``y = x1 * sigmoid(shuffle(s))``, where the
    two convolutions have ``groups`` groups and ``shuffle`` is ShuffleNet's channel shuffle with ``shuffle_groups``
    groups (channel ``j * g + i`` of the result is channel ``i * C / g + j``; 1: none).

    Args:
        channels: input and output channels C.
        rate: the reduction r of both sub-modules (4, the paper's; ``int(C / rate)`` must be positive).
        kernel_size: the spatial convolutions' kernel (7, the paper's; odd, zero padding k // 2 keeps the map).
        bn_eps, bn_momentum: the two BatchNorms' (1e-5, 0.1, torch's convention).
        groups: the groups of both spatial convolutions (1: full convolutions, as the paper draws them; must divide
            C and Cr).
        shuffle_groups: the channel shuffle of the spatial logits (1: none; must divide C).
        Named forms in ``GAM_PRESETS``: ``'paper'`` (the default: full convolutions, no shuffle) and ``'grouped'``
        (the paper's ResNet-50 form: 4 groups and a shuffle of 4 groups; the paper gives no number, 4 is the blog
        copies' ``groups=rate``, docs/modules.md).

    Training: the BatchNorms see N*H*W values per channel, so training needs more than one.

    Shapes: input (N, C, H, W) in torch and Paddle, (N, H, W, C) in Flax; output the same shape.
    Parameters (the copy's ``state_dict``): ``channel_attention.0.weight`` (Cr, C), ``.0.bias`` (Cr,),
    ``channel_attention.2.weight`` (C, Cr), ``.2.bias`` (C,); ``spatial_attention.0.weight`` (Cr, C, k, k), ``.0.bias``,
    ``spatial_attention.1.*`` (Cr,), ``spatial_attention.3.weight`` (C, Cr, k, k), ``.3.bias``,
    ``spatial_attention.4.*`` (C,) (BatchNorm weight, bias, running mean and variance); both convolution weights'
    second axis is divided by ``groups``.
    """

    module_name: ClassVar[str] = "GAM"
    half_in_float32: ClassVar[bool] = True  # attn_core.precision: half inputs computed in float32

    channels: int
    rate: float = 4
    kernel_size: int = 7
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    groups: int = 1
    shuffle_groups: int = 1
    hidden: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        self._check_positive_ints("channels", "groups", "shuffle_groups")
        self._check_positive_reals("rate")
        check_odd_kernel(self.module_name, "kernel_size", self.kernel_size, "padding k // 2 keeps the map's size")
        self._check_batch_norm_fields()
        hidden = int(self.channels / self.rate)
        if hidden < 1:
            raise ConfigError(f"{self.module_name}: the hidden width int(channels / rate) must be positive, got "
                              f"int({self.channels} / {self.rate}) = {hidden}")
        if self.channels % self.groups or hidden % self.groups:
            raise ConfigError(f"{self.module_name}: groups must divide channels and the hidden width int(channels / "
                              f"rate), got groups={self.groups}, channels={self.channels}, hidden={hidden}")
        if self.channels % self.shuffle_groups:
            raise ConfigError(f"{self.module_name}: shuffle_groups must divide channels, got "
                              f"shuffle_groups={self.shuffle_groups}, channels={self.channels}")
        object.__setattr__(self, "hidden", hidden)

    def layers(self) -> tuple[tuple[str, Any], ...]:
        """The layers under their canonical names, in order (``'relu'`` between them): the backends build them."""
        from .models.layers import BatchNorm, Conv, Linear  # here: attn_core.models imports this module (registry)

        c, r, k, g = self.channels, self.hidden, self.kernel_size, self.groups
        bn = dict(eps=self.bn_eps, momentum=self.bn_momentum)
        return (("channel_attention.0", Linear(c, r)), ("channel_attention.1", "relu"),
                ("channel_attention.2", Linear(r, c)),
                ("spatial_attention.0", Conv(c, r, k, padding=k // 2, groups=g, bias=True)),
                ("spatial_attention.1", BatchNorm(r, **bn)), ("spatial_attention.2", "relu"),
                ("spatial_attention.3", Conv(r, c, k, padding=k // 2, groups=g, bias=True)),
                ("spatial_attention.4", BatchNorm(c, **bn)))

    def param_table(self) -> tuple[ParamSpec, ...]:
        return tuple(spec for name, layer in self.layers() if not isinstance(layer, str) for spec in layer.params(name))

    def reference_forward(self, x: Node, params: Mapping[str, Node], training: bool = False,
                          taps: dict[str, Node] | None = None) -> Node:
        n, c, h, w = x.shape
        p = params
        rows = ops.reshape(ops.transpose(x, (0, 2, 3, 1)), (n * h * w, c))  # the paper's permutation
        hidden = ops.relu(ops.linear(rows, p["channel_attention.0.weight"], p["channel_attention.0.bias"]))
        a = ops.linear(hidden, p["channel_attention.2.weight"], p["channel_attention.2.bias"])
        gate_c = ops.sigmoid(ops.transpose(ops.reshape(a, (n, h, w, c)), (0, 3, 1, 2)))
        x1 = ops.mul(x, gate_c)
        from .models.layers import BatchNorm  # here, as in layers()

        s = x1
        for name, layer in self.layers()[3:]:  # the spatial sub-module's layers
            if isinstance(layer, str):
                s = ops.relu(s)
            elif isinstance(layer, BatchNorm):
                s = layer(s, params, name, training)
            else:
                s = layer(s, params, name)
        g, logits = self.shuffle_groups, s
        if g > 1:  # the shuffle commutes with the sigmoid: the copies shuffle the gate, this the logits
            s = ops.reshape(ops.transpose(ops.reshape(s, (n, g, c // g, h, w)), (0, 2, 1, 3, 4)), (n, c, h, w))
        gate_s = ops.sigmoid(s)
        if taps is not None:
            taps["gam_channel_gate"] = gate_c
            taps["gam_spatial_logits"] = logits  # before the shuffle: what every copy's spatial_attention returns
            taps["gam_spatial_gate"] = gate_s
        return ops.mul(x1, gate_s)


# Named forms found upstream (docs/modules.md). Use as ``GAM(channels, **GAM_PRESETS['paper'])``.
GAM_PRESETS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    # the paper's Fig. 2-4: r = 4 in both sub-modules, 7x7 convolutions, BatchNorm after each
    "paper": MappingProxyType(dict(rate=4, kernel_size=7, groups=1, shuffle_groups=1)),
    # the paper's ResNet-50 ("group convolution with channel shuffle"); 4 groups is a choice, the paper
    # names none: the blog copies' groups=rate for both convolutions and channel_shuffle(gate, 4)
    "grouped": MappingProxyType(dict(rate=4, kernel_size=7, groups=4, shuffle_groups=4)),
})
