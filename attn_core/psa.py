"""Polarized Self-Attention.

Paper: Huajun Liu, Fuqiang Liu, Xinyi Fan, Dong Huang. "Polarized Self-Attention: Towards High-quality Pixel-wise
Regression", 2021, arXiv:2107.00782. The authors' code: DeLightCMU/PSA, ``semantic-segmentation/network/PSA.py``
(``PSA_p``, ``PSA_s``). timm has no PSA.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

from . import ops
from .autodiff import Node
from .spec import AttentionConfig, ConfigError, ParamSpec

__all__ = ["PSAConfig", "PSA_PRESETS"]

MODES = ("parallel", "sequential")
CHANNEL_UPS = ("linear", "bottleneck")
#: where the spatial branch's softmax runs: over the C/2 pooled query (the paper), over the H*W positions of the
#: query-value product (PSA_p), over the H*W positions of each value channel before the product (PSA_s)
SPATIAL_SOFTMAXES = ("query", "context", "value")


@dataclass(frozen=True)
class PSAConfig(AttentionConfig):
    """PSA (Liu et al., 2021, arXiv:2107.00782): a channel-only and a spatial-only self-attention branch.

    With ``Ci = C // 2`` and 1x1 convolutions without bias ``conv_*``:
    channel branch ``w = softmax_hw(conv_q_right(x))`` (N, 1, HW), ``ctx = conv_v_right(x) @ w^T`` (N, Ci, 1, 1),
    ``z = up(ctx)`` (N, C, 1, 1), ``x_ch = x * sigmoid(z)``; ``up`` is ``conv_up`` (``channel_up='linear'``: Ci -> C,
    then, with ``channel_norm``, the paper's LayerNorm over the C channels ``ln``) or the authors' PSA_s bottleneck
    (``'bottleneck'``: ``conv_up.0`` Ci -> Ci // ratio with bias, LayerNorm over those channels ``conv_up.1``,
    ReLU, ``conv_up.3`` -> C with bias). Spatial branch on ``s``: ``q = mean_hw(conv_q_left(s))`` (N, 1, Ci),
    ``v = conv_v_left(s)`` (N, Ci, HW), logits ``softmax_c(q) @ v`` (``spatial_softmax='query'``, the paper),
    ``softmax_hw(q @ v)`` (``'context'``, PSA_p) or ``q @ softmax_hw(v)`` (``'value'``, PSA_s), (N, 1, HW);
    ``s * sigmoid(logits)``. ``mode='parallel'``: ``x_ch + x * sigmoid(logits of x)``; ``'sequential'``:
    ``s = x_ch`` and the output ``x_ch * sigmoid(logits of x_ch)``.

    Args:
        channels: input and output channels C (at least 2).
        mode, channel_up, channel_norm, spatial_softmax: the form (above); named forms in ``PSA_PRESETS``:
            ``'parallel'`` (the default, the authors' PSA_p), ``'sequential'`` (PSA_s), ``'paper_parallel'``,
            ``'paper_sequential'`` (the paper's Eq. 2-5 and Fig. 2).
        ratio: the bottleneck's reduction (4 in PSA_s).
        ln_eps: the LayerNorms' epsilon (torch's default 1e-5).
        bias: the 1x1 convolutions other than the bottleneck's have biases (False: the authors' code; True: the
            External-Attention-pytorch copy of the paper's forms, whose ``nn.Conv2d`` keep torch's default).

    Shapes: input (N, C, H, W) in torch and Paddle, (N, H, W, C) in Flax; output the same shape.
    Parameters (the authors' ``state_dict``): ``conv_q_right.weight`` (1, C, 1, 1), ``conv_v_right.weight``,
    ``conv_q_left.weight``, ``conv_v_left.weight`` (Ci, C, 1, 1); ``conv_up.weight`` (C, Ci, 1, 1) and with
    ``channel_norm`` ``ln.weight``, ``ln.bias`` (C,); or ``conv_up.0.*`` (Cr, Ci, 1, 1), (Cr,), ``conv_up.1.*``
    (Cr, 1, 1), ``conv_up.3.*`` (C, Cr, 1, 1), (C,) with ``Cr = Ci // ratio``.
    """

    module_name: ClassVar[str] = "PSA"
    half_in_float32: ClassVar[bool] = True  # attn_core.precision: half inputs computed in float32

    channels: int
    mode: str = "parallel"
    channel_up: str = "linear"
    channel_norm: bool = False
    spatial_softmax: str = "context"
    ratio: int = 4
    ln_eps: float = 1e-5
    bias: bool = False
    inter_channels: int = field(init=False, compare=False)
    up_channels: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        self._check_positive_ints("channels")
        if self.channels < 2:
            raise ConfigError(f"{self.module_name}: channels must be at least 2 (the branches are C // 2 wide), "
                              f"got {self.channels}")
        self._check_choices(mode=MODES, channel_up=CHANNEL_UPS)
        self._check_flags("channel_norm")
        self._check_choices(spatial_softmax=SPATIAL_SOFTMAXES)
        self._check_positive_ints("ratio")
        self._check_flags("bias")
        self._check_positive_reals("ln_eps")
        inter = self.channels // 2
        up = inter // self.ratio
        if self.channel_up == "bottleneck":
            if up < 1:
                raise ConfigError(f"{self.module_name}: the bottleneck's width C // 2 // ratio must be positive, got "
                                  f"{self.channels} // 2 // {self.ratio} = {up}")
            if self.channel_norm:
                raise ConfigError(f"{self.module_name}: channel_norm (the paper's LayerNorm over C) belongs to "
                                  f"channel_up='linear'; the bottleneck has its own LayerNorm")
        object.__setattr__(self, "inter_channels", inter)
        object.__setattr__(self, "up_channels", up)

    def param_table(self) -> tuple[ParamSpec, ...]:
        c, ci, cr = self.channels, self.inter_channels, self.up_channels

        def conv(name: str, c_out: int, c_in: int) -> list[ParamSpec]:
            weight = ParamSpec(f"{name}.weight", (c_out, c_in, 1, 1), "conv_weight")
            return [weight, ParamSpec(f"{name}.bias", (c_out,), "conv_bias")] if self.bias else [weight]

        table = conv("conv_q_right", 1, c) + conv("conv_v_right", ci, c)
        if self.channel_up == "linear":
            table += conv("conv_up", c, ci)
            if self.channel_norm:
                table += [ParamSpec("ln.weight", (c,), "bn_weight"), ParamSpec("ln.bias", (c,), "bn_bias")]
        else:  # the bottleneck's convolutions have biases in every form (PSA_s)
            table += [ParamSpec("conv_up.0.weight", (cr, ci, 1, 1), "conv_weight"),
                      ParamSpec("conv_up.0.bias", (cr,), "conv_bias"),
                      ParamSpec("conv_up.1.weight", (cr, 1, 1), "param"),
                      ParamSpec("conv_up.1.bias", (cr, 1, 1), "param"),
                      ParamSpec("conv_up.3.weight", (c, cr, 1, 1), "conv_weight"),
                      ParamSpec("conv_up.3.bias", (c,), "conv_bias")]
        return tuple(table + conv("conv_q_left", ci, c) + conv("conv_v_left", ci, c))

    @staticmethod
    def _conv(x: Node, params: Mapping[str, Node], name: str) -> Node:
        return ops.conv2d(x, params[f"{name}.weight"], params.get(f"{name}.bias"))

    def _channel_logits(self, x: Node, params: Mapping[str, Node], taps: dict[str, Node] | None) -> Node:
        n, _, h, w = x.shape
        ci, cr = self.inter_channels, self.up_channels
        v = ops.reshape(self._conv(x, params, "conv_v_right"), (n, ci, h * w))
        q = ops.softmax(ops.reshape(self._conv(x, params, "conv_q_right"), (n, 1, h * w)), 2)
        ctx = ops.reshape(ops.matmul(v, ops.transpose(q, (0, 2, 1))), (n, ci, 1, 1))
        if self.channel_up == "linear":
            z = self._conv(ctx, params, "conv_up")
            if self.channel_norm:  # a (N, C, 1, 1) map: one group's statistics run over C alone
                z = ops.group_norm(z, 1, params["ln.weight"], params["ln.bias"], float(self.ln_eps))
        else:
            hidden = self._conv(ctx, params, "conv_up.0")
            hidden = ops.group_norm(hidden, 1, ops.reshape(params["conv_up.1.weight"], (cr,)),
                                    ops.reshape(params["conv_up.1.bias"], (cr,)), float(self.ln_eps))
            z = self._conv(ops.relu(hidden), params, "conv_up.3")
        if taps is not None:
            taps["psa_channel_weights"] = q
            taps["psa_channel_logits"] = z
        return z

    def _spatial_logits(self, s: Node, params: Mapping[str, Node], taps: dict[str, Node] | None) -> Node:
        n, _, h, w = s.shape
        ci = self.inter_channels
        q = ops.reshape(ops.mean(self._conv(s, params, "conv_q_left"), (2, 3)), (n, 1, ci))
        v = ops.reshape(self._conv(s, params, "conv_v_left"), (n, ci, h * w))
        if self.spatial_softmax == "query":
            logits = ops.matmul(ops.softmax(q, 2), v)
        elif self.spatial_softmax == "context":
            logits = ops.softmax(ops.matmul(q, v), 2)
        else:
            logits = ops.matmul(q, ops.softmax(v, 2))
        if taps is not None:
            taps["psa_spatial_logits"] = logits
        return ops.reshape(logits, (n, 1, h, w))

    def reference_forward(self, x: Node, params: Mapping[str, Node], training: bool = False,
                          taps: dict[str, Node] | None = None) -> Node:
        gate_c = ops.sigmoid(self._channel_logits(x, params, taps))
        x_ch = ops.mul(x, gate_c)
        s = x if self.mode == "parallel" else x_ch
        gate_s = ops.sigmoid(self._spatial_logits(s, params, taps))
        if taps is not None:
            taps["psa_channel_gate"] = gate_c
            taps["psa_spatial_gate"] = gate_s
        if self.mode == "parallel":
            return ops.add(x_ch, ops.mul(x, gate_s))
        return ops.mul(x_ch, gate_s)


# Named forms found upstream (docs/modules.md). Use as ``PSA(channels, **PSA_PRESETS['sequential'])``.
PSA_PRESETS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    # the authors' PSA_p: conv_up Ci -> C without LayerNorm, the spatial softmax over H*W of the product
    "parallel": MappingProxyType(dict(mode="parallel", channel_up="linear", channel_norm=False,
                                      spatial_softmax="context")),
    # the authors' PSA_s: the ratio-4 bottleneck with LayerNorm and ReLU, the softmax over H*W of each value channel
    "sequential": MappingProxyType(dict(mode="sequential", channel_up="bottleneck", channel_norm=False,
                                        spatial_softmax="value")),
    # the paper's Eq. 2-5 / Fig. 2: Wz then LayerNorm over C, the spatial softmax over the C/2 pooled query
    "paper_parallel": MappingProxyType(dict(mode="parallel", channel_up="linear", channel_norm=True,
                                            spatial_softmax="query")),
    "paper_sequential": MappingProxyType(dict(mode="sequential", channel_up="linear", channel_norm=True,
                                              spatial_softmax="query")),
})
