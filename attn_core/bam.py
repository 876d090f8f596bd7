"""Bottleneck Attention Module: a channel and a spatial branch combined into one 3-D gate, applied as a residual.

Paper: Jongchan Park, Sanghyun Woo, Joon-Young Lee, In So Kweon. "BAM: Bottleneck Attention Module", BMVC 2018,
arXiv:1807.06514. Not in timm; the reference code is the authors' (github.com/Jongchan/attention-module,
``MODELS/bam.py``, class ``BAM``), whose ``state_dict`` names are the canonical names here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

from . import ops
from .autodiff import Node
from .spec import AttentionConfig, ConfigError, ParamSpec, check_batch_norm_after

__all__ = ["BAMConfig", "BAM_PRESETS", "BAM_COMBINES", "bam_layer_names"]

#: how the two branches meet before the sigmoid: the authors' code multiplies them, the paper (Eq. 2) adds them
BAM_COMBINES = ("product", "sum")

# Named forms found upstream. Use as ``BAM(channels, **BAM_PRESETS['paper'])``.
BAM_PRESETS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    # the authors' code (MODELS/bam.py, whose ResNet-50 + BAM checkpoint the README publishes):
    # 1 + sigmoid(channel * spatial)
    "original": MappingProxyType(dict(combine="product", num_layers=1, dilation_conv_num=2, dilation_val=4)),
    # the paper, Eq. 2: 1 + sigmoid(channel + spatial), the same layers
    "paper": MappingProxyType(dict(combine="sum", num_layers=1, dilation_conv_num=2, dilation_val=4)),
})


def bam_layer_names(num_layers: int, dilation_conv_num: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The authors' layer names, in order: the channel branch's Linear/BatchNorm1d pairs then its last Linear
    (under ``channel_att.gate_c.``), and the spatial branch's convolution/BatchNorm pairs then its last convolution
    (under ``spatial_att.gate_s.``). A pair is two consecutive names; the last name of each is the output layer."""
    channel = [n for i in range(num_layers) for n in (f"gate_c_fc_{i}", f"gate_c_bn_{i + 1}")] + ["gate_c_fc_final"]
    spatial = ["gate_s_conv_reduce0", "gate_s_bn_reduce0"]
    spatial += [n for i in range(dilation_conv_num) for n in (f"gate_s_conv_di_{i}", f"gate_s_bn_di_{i}")]
    return tuple(channel), tuple(spatial + ["gate_s_conv_final"])


def _bn_specs(name: str, width: int) -> list[ParamSpec]:
    return [ParamSpec(f"{name}.weight", (width,), "bn_weight"), ParamSpec(f"{name}.bias", (width,), "bn_bias"),
            ParamSpec(f"{name}.running_mean", (width,), "bn_mean"),
            ParamSpec(f"{name}.running_var", (width,), "bn_var")]


@dataclass(frozen=True)
class BAMConfig(AttentionConfig):
    """BAM (Park et al., BMVC 2018, arXiv:1807.06514), the authors' ``BAM``.

    With ``r = C // reduction_ratio``:

    - channel branch ``M_c`` (N, C, 1, 1): ``mean_hw(x)``, then ``num_layers`` times Linear (-> r),
      BatchNorm1d, ReLU, then a Linear r -> C;
    - spatial branch ``M_s`` (N, 1, H, W): a 1x1 convolution C -> r, BatchNorm, ReLU, then ``dilation_conv_num``
      times a 3x3 convolution r -> r with dilation ``dilation_val`` zero padded by ``dilation_val`` (which keeps
      H and W), BatchNorm, ReLU, then a 1x1 convolution r -> 1; every convolution and Linear with a bias;
    - ``y = x * (1 + sigmoid(M_c * M_s))`` (``combine='product'``, the authors' code) or
      ``y = x * (1 + sigmoid(M_c + M_s))`` (``'sum'``, the paper's Eq. 2), both maps broadcast to (N, C, H, W).

    Args:
        channels: input and output channels C.
        reduction_ratio: r = C // reduction_ratio (16), which must be at least 1 (the authors' code builds
            zero-width layers there).
        num_layers: the hidden Linear layers of the channel branch (1 in ``BAM``).
        dilation_conv_num: the dilated 3x3 convolutions (2). dilation_val: their dilation and padding (4).
        combine: ``'product'`` or ``'sum'`` (see above).
        bn_eps, bn_momentum: every BatchNorm's, torch convention (1e-5, 0.1: torch's defaults, as upstream).
        Named upstream forms are in ``BAM_PRESETS``: ``'original'`` (the default, the authors' code, whose
        checkpoint is published) and ``'paper'``. Their parameters are the same: a checkpoint of one loads into
        the other and computes something else.

    The authors' channel branch pools with ``F.avg_pool2d(x, H, stride=H)``, the global mean only where H = W
    (for H < W < 2H it averages the left H x H square, otherwise it raises); the mean over all of H x W here is
    what it computes on the square maps it was written for.

    BatchNorm follows the project's convention (see ``SpatialAttentionConfig``). The channel branch's BatchNorm1d
    sees N values per channel, so training needs N > 1.

    Shapes: input (N, C, H, W) in torch and Paddle, (N, H, W, C) in Flax; output the same shape.
    Parameters (the authors' ``state_dict`` names): under ``channel_att.gate_c.``, ``gate_c_fc_{i}.weight``
    (r, C or r) and ``.bias`` (r,), ``gate_c_bn_{i+1}.weight``, ``.bias``, ``.running_mean``, ``.running_var``
    (r,), ``gate_c_fc_final.weight`` (C, r) and ``.bias`` (C,); under ``spatial_att.gate_s.``,
    ``gate_s_conv_reduce0.weight`` (r, C, 1, 1), ``gate_s_bn_reduce0.*`` (r,), ``gate_s_conv_di_{i}.weight``
    (r, r, 3, 3), ``gate_s_bn_di_{i}.*`` (r,), ``gate_s_conv_final.weight`` (1, r, 1, 1), each convolution with
    its ``.bias``.
    """

    module_name: ClassVar[str] = "BAM"
    half_in_float32: ClassVar[bool] = True  # attn_core.precision: half inputs computed in float32

    channels: int
    reduction_ratio: int = 16
    num_layers: int = 1
    dilation_conv_num: int = 2
    dilation_val: int = 4
    combine: str = "product"
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    hidden: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        name = self.module_name
        self._check_positive_ints("channels", "reduction_ratio", "num_layers")
        if isinstance(self.dilation_conv_num, bool) or not isinstance(self.dilation_conv_num, int) \
                or self.dilation_conv_num < 0:
            raise ConfigError(f"{name}: dilation_conv_num must be a non-negative integer, got "
                              f"{self.dilation_conv_num!r}")
        self._check_positive_ints("dilation_val")
        self._check_choices(combine=BAM_COMBINES)
        self._check_batch_norm_fields()
        hidden = self.channels // self.reduction_ratio
        if hidden < 1:
            raise ConfigError(f"{name}: hidden width is 0: channels={self.channels} // reduction_ratio="
                              f"{self.reduction_ratio} (the authors' C // r); pass a smaller reduction_ratio")
        object.__setattr__(self, "hidden", hidden)

    @property
    def layer_names(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return bam_layer_names(self.num_layers, self.dilation_conv_num)

    @property
    def spatial_layers(self) -> tuple[tuple[str, str, int, int], ...]:
        """The spatial branch's convolution/BatchNorm pairs: (convolution, BatchNorm, kernel size, dilation), the
        dilation also the padding (so that H and W are kept)."""
        _, spatial = self.layer_names
        return tuple((conv, bn, 1 if i == 0 else 3, 1 if i == 0 else int(self.dilation_val))
                     for i, (conv, bn) in enumerate(zip(spatial[0:-1:2], spatial[1:-1:2], strict=True)))

    def param_table(self) -> tuple[ParamSpec, ...]:
        c, r = self.channels, self.hidden
        head = "channel_att.gate_c."
        table: list[ParamSpec] = []
        width = c
        for i in range(self.num_layers):
            table += [ParamSpec(f"{head}gate_c_fc_{i}.weight", (r, width), "linear_weight"),
                      ParamSpec(f"{head}gate_c_fc_{i}.bias", (r,), "linear_bias")]
            table += _bn_specs(f"{head}gate_c_bn_{i + 1}", r)
            width = r
        table += [ParamSpec(f"{head}gate_c_fc_final.weight", (c, r), "linear_weight"),
                  ParamSpec(f"{head}gate_c_fc_final.bias", (c,), "linear_bias")]
        head = "spatial_att.gate_s."
        width = c
        for conv, bn, k, _ in self.spatial_layers:
            table += [ParamSpec(f"{head}{conv}.weight", (r, width, k, k), "conv_weight"),
                      ParamSpec(f"{head}{conv}.bias", (r,), "conv_bias")]
            table += _bn_specs(f"{head}{bn}", r)
            width = r
        table += [ParamSpec(f"{head}gate_s_conv_final.weight", (1, r, 1, 1), "conv_weight"),
                  ParamSpec(f"{head}gate_s_conv_final.bias", (1,), "conv_bias")]
        return tuple(table)

    def check_training_input(self, shape: Sequence[int | None], layout: str = "NCHW") -> None:
        """The channel branch's BatchNorm1d sees N values per channel (the spatial ones N * H * W, never fewer)."""
        check_batch_norm_after(self.module_name, shape, layout, self.hidden)

    def _bn(self, z: Node, params: Mapping[str, Node], name: str, training: bool) -> Node:
        return ops.batch_norm(z, params[f"{name}.weight"], params[f"{name}.bias"], params[f"{name}.running_mean"],
                              params[f"{name}.running_var"], training=training, eps=self.bn_eps,
                              momentum=self.bn_momentum)

    def channel_branch(self, x: Node, params: Mapping[str, Node], training: bool) -> Node:
        """``M_c``: (N, C, 1, 1)."""
        n = x.shape[0]
        h = ops.mean(x, (2, 3), keepdims=False)
        head = "channel_att.gate_c."
        for i in range(self.num_layers):
            h = ops.linear(h, params[f"{head}gate_c_fc_{i}.weight"], params[f"{head}gate_c_fc_{i}.bias"])
            h = ops.reshape(h, (n, self.hidden, 1, 1))  # BatchNorm1d over N, as a map of one position
            h = ops.relu(self._bn(h, params, f"{head}gate_c_bn_{i + 1}", training))
            h = ops.reshape(h, (n, self.hidden))
        h = ops.linear(h, params[f"{head}gate_c_fc_final.weight"], params[f"{head}gate_c_fc_final.bias"])
        return ops.reshape(h, (n, self.channels, 1, 1))

    def spatial_branch(self, x: Node, params: Mapping[str, Node], training: bool) -> Node:
        """``M_s``: (N, 1, H, W)."""
        head = "spatial_att.gate_s."
        z = x
        for conv, bn, k, d in self.spatial_layers:
            z = ops.conv2d(z, params[f"{head}{conv}.weight"], params[f"{head}{conv}.bias"], padding=d * (k // 2),
                           dilation=d)
            z = ops.relu(self._bn(z, params, f"{head}{bn}", training))
        return ops.conv2d(z, params[f"{head}gate_s_conv_final.weight"], params[f"{head}gate_s_conv_final.bias"])

    def reference_forward(self, x: Node, params: Mapping[str, Node], training: bool = False,
                          taps: dict[str, Node] | None = None) -> Node:
        m_c = self.channel_branch(x, params, training)
        m_s = self.spatial_branch(x, params, training)
        z = ops.mul(m_c, m_s) if self.combine == "product" else ops.add(m_c, m_s)
        gate = ops.add_scalar(ops.sigmoid(z), 1.0)
        if taps is not None:
            taps["bam_channel"] = m_c
            taps["bam_spatial"] = m_s
            taps["bam_gate"] = gate
        return ops.mul(x, gate)
