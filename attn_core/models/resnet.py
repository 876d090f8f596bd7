"""ResNet with pluggable attention, with timm's parameter names; its ResNet-D, SKNet and ResNeSt forms.

Papers: Kaiming He, Xiangyu Zhang, Shaoqing Ren, Jian Sun. "Deep Residual Learning for Image Recognition",
CVPR 2016, arXiv:1512.03385 (stride on the 3x3 convolution of the bottleneck, as torchvision and timm: "ResNet v1.5").
Tong He, Zhi Zhang, Hang Zhang, Zhongyue Zhang, Junyuan Xie, Mu Li. "Bag of Tricks for Image Classification with
Convolutional Neural Networks", CVPR 2019, arXiv:1812.01187 (ResNet-D: the deep stem, three 3x3 convolutions, and
the shortcut's stride taken by a 2x2 average pool before its 1x1 convolution; timm's ``stem_type='deep'``,
``avg_down=True``).
Xiang Li, Wenhai Wang, Xiaolin Hu, Jian Yang. "Selective Kernel Networks", CVPR 2019, arXiv:1903.06586 (timm's
``SelectiveKernelBasic``: the basic block's first 3x3 convolution a Selective Kernel convolution).
Hang Zhang et al. "ResNeSt: Split-Attention Networks", arXiv:2004.08955 (timm's ``ResNestBottleneck``: the
bottleneck's 3x3 convolution a split-attention convolution, its stride taken by a 3x3 average pool, "avd").
Attention placement: SE / ECA / CBAM after the block's last BatchNorm, before the residual add, as attribute ``se``
(Hu et al. 2018; timm's ``seresnet50``); SimAM after the 3x3 convolution ``conv2`` and before ``bn2``, as attribute
``simam``, where its authors put it (Yang et al. 2021).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar

from .. import ops
from ..autodiff import Node
from ..registry import create_config, resolve_name
from ..selective_kernel import SelectiveKernelConfig
from ..spec import AttentionConfig, ConfigError, ParamSpec, check_choice, check_positive_int, prefixed
from ..split_attn import SplitAttnConfig
from .layers import AvgPool, BatchNorm, Conv, Linear, subtree

__all__ = ["ResNetConfig", "BlockSpec", "STAGE_WIDTHS", "BLOCK_TYPES", "STEM_TYPES"]

STAGE_WIDTHS = (64, 128, 256, 512)
_EXPANSION = {"basic": 1, "bottleneck": 4, "sk_basic": 1, "resnest": 4}
#: the residual blocks: timm's BasicBlock, Bottleneck, SelectiveKernelBasic and ResNestBottleneck
BLOCK_TYPES: tuple[str, ...] = tuple(_EXPANSION)
#: '' (one 7x7 convolution, 64 channels) or 'deep' (three 3x3 convolutions: stem_width, stem_width, 2 stem_width)
STEM_TYPES = ("", "deep")
# the block_args of 'sk_basic' are SelectiveKernel's own arguments (timm's sk_kwargs) but for what the block decides
_SK_OWN = ("in_channels", "out_channels", "stride", "dilation", "bn_eps", "bn_momentum")
_SK_ARGS = tuple(f.name for f in dataclasses.fields(SelectiveKernelConfig) if f.init and f.name not in _SK_OWN)
# the block_args of 'resnest' and their defaults (timm's ResNestBottleneck's)
_RESNEST_ARGS: Mapping[str, Any] = {"radix": 1, "avd": False, "avd_first": False}


def _pairs(value: Any) -> dict[str, Any]:
    """A mapping or pairs as a dict whose list values are tuples (hashable, as Flax's module fields must be)."""
    items = dict(value.items() if isinstance(value, Mapping) else value)
    return {k: tuple(v) if isinstance(v, list) else v for k, v in items.items()}


def layer_params(layer: Any, prefix: str) -> list[ParamSpec]:
    """The parameter entries of one item of a layer list (a layer spec, an attention config, ``'relu'``)."""
    if isinstance(layer, AttentionConfig):
        return list(prefixed(prefix, layer.param_table()))
    if isinstance(layer, str):
        return []
    params: list[ParamSpec] = layer.params(prefix)
    return params


def apply_layer(layer: Any, x: Node, params: Mapping[str, Node], prefix: str, training: bool) -> Node:
    """The float64 reference of one item of a layer list, its parameters under ``prefix``."""
    if isinstance(layer, Conv):
        return layer(x, params, prefix)
    if isinstance(layer, BatchNorm):
        return layer(x, params, prefix, training)
    if isinstance(layer, AvgPool):
        return layer(x)
    if isinstance(layer, AttentionConfig):
        return layer.reference_forward(x, subtree(params, prefix), training)
    if layer == "relu":
        return ops.relu(x)
    raise TypeError(f"no reference for the layer {layer!r} ({prefix})")


@dataclass(frozen=True)
class BlockSpec:
    """One residual block, derived once from the config; the backends build exactly this."""

    name: str                      # 'layer2.0'
    block: str                     # one of BLOCK_TYPES
    in_channels: int
    planes: int                    # width of the 3x3 convolution
    out_channels: int
    stride: int
    downsample: bool
    attn: AttentionConfig | None   # under '<name>.se', after the last BatchNorm
    simam: AttentionConfig | None  # under '<name>.simam', after conv2, before bn2
    conv: AttentionConfig | None = None  # 'sk_basic': SelectiveKernel as conv1; 'resnest': SplitAttn as conv2
    avd: str | None = None         # 'resnest': 'avd_first' / 'avd_last', the 3x3 average pool taking the stride
    avg_down: bool = False         # the shortcut: 2x2 average pool (the stride), then the 1x1 convolution

    def layers(self, eps: float, momentum: float) -> dict[str, Any]:
        """Sub-layer name -> layer spec or attention config, in forward order (without ``se`` and ``simam``); the
        shortcut's under ``downsample.*``."""
        bn = partial(BatchNorm, eps=eps, momentum=momentum)
        if self.block == "basic":
            out = {"conv1": Conv(self.in_channels, self.planes, 3, self.stride, 1), "bn1": bn(self.planes),
                   "conv2": Conv(self.planes, self.planes, 3, 1, 1), "bn2": bn(self.planes)}
        elif self.block == "bottleneck":
            out = {"conv1": Conv(self.in_channels, self.planes, 1), "bn1": bn(self.planes),
                   "conv2": Conv(self.planes, self.planes, 3, self.stride, 1), "bn2": bn(self.planes),
                   "conv3": Conv(self.planes, self.out_channels, 1), "bn3": bn(self.out_channels)}
        elif self.block == "sk_basic":  # timm's ConvNormAct without its activation: conv2.conv, conv2.bn
            out = {"conv1": self.conv, "conv2.conv": Conv(self.planes, self.out_channels, 3, 1, 1),
                   "conv2.bn": bn(self.out_channels)}
        else:
            out = {"conv1": Conv(self.in_channels, self.planes, 1), "bn1": bn(self.planes)}
            if self.avd == "avd_first":
                out["avd_first"] = AvgPool(3, self.stride, 1)
            out["conv2"] = self.conv
            if self.avd == "avd_last":
                out["avd_last"] = AvgPool(3, self.stride, 1)
            out.update(conv3=Conv(self.planes, self.out_channels, 1), bn3=bn(self.out_channels))
        if self.downsample and self.avg_down:
            # timm's downsample_avg: nn.Identity at stride 1, else AvgPool2d(2, stride, ceil_mode=True,
            # count_include_pad=False)
            pool = AvgPool(2, self.stride, ceil_mode=True, count_include_pad=False) if self.stride != 1 else \
                AvgPool(1, 1)
            out.update({"downsample.0": pool, "downsample.1": Conv(self.in_channels, self.out_channels, 1),
                        "downsample.2": bn(self.out_channels)})
        elif self.downsample:
            out["downsample.0"] = Conv(self.in_channels, self.out_channels, 1, self.stride)
            out["downsample.1"] = bn(self.out_channels)
        return out


@dataclass(frozen=True)
class ResNetConfig(AttentionConfig):
    """ResNet-18/34/50/101 with optional attention in every block (He et al., CVPR 2016), and timm's ResNet-D stem
    and shortcut (``ecaresnet50d``), Selective Kernel basic blocks (``skresnet18``) and ResNeSt bottlenecks
    (``resnest14d``).

    Args:
        block: ``'basic'`` (two 3x3 convolutions; ResNet-18/34), ``'bottleneck'`` (1x1, 3x3, 1x1; ResNet-50/101),
            ``'sk_basic'`` (timm's ``SelectiveKernelBasic``: ``conv1`` a Selective Kernel convolution with its
            paths' BatchNorm and ReLU, then ``conv2`` = 3x3 convolution ``conv2.conv`` and BatchNorm ``conv2.bn``)
            or ``'resnest'`` (timm's ``ResNestBottleneck``: 1x1, split-attention 3x3 ``conv2`` with BatchNorm,
            1x1; at a stride with ``avd`` a 3x3 / stride / padding 1 average pool takes the stride, before
            (``avd_first``) or after ``conv2``).
        layers: blocks per stage, e.g. (3, 4, 6, 3).
        num_classes: outputs of the classifier ``fc``.
        in_chans: input channels.
        attn_layer: None, a registered attention name (``create_attn``'s, timm's ``get_attn`` keys: ``'se'``,
            ``'eca'``, ``'cbam'``, ``'gc'``, ...; after the last BatchNorm of each block, attribute ``se``, as timm's
            ResNet places it) or ``'simam'`` (after ``conv2``, before ``bn2``, attribute ``simam``; basic and
            bottleneck blocks). ``'resnest'`` blocks take none (timm asserts it).
        attn_kwargs: keyword arguments of the attention module (a mapping or pairs), e.g. ``CBAM_PRESETS['timm']``.
        bn_eps, bn_momentum: of every BatchNorm (torch's convention for the momentum).
        stem_type: ``''`` (``conv1`` 7x7 / 2, 64 channels) or ``'deep'`` (``conv1`` = 3x3 / 2 convolution, BatchNorm,
            ReLU, 3x3, BatchNorm, ReLU, 3x3 under ``conv1.0`` .. ``conv1.6``, widths ``stem_width``,
            ``stem_width``, ``2 stem_width``); then ``bn1``, ReLU and the 3x3 / 2 max pool.
        stem_width: the deep stem's width (the plain stem is always 64 wide, as timm's).
        avg_down: each shortcut that changes the stride or width is ``downsample.0`` = 2x2 average pool at the
            stride (ceil mode, padding not counted; the identity at stride 1), ``downsample.1`` 1x1 convolution,
            ``downsample.2`` BatchNorm, instead of a strided 1x1 convolution and BatchNorm (ResNet-D).
        block_args: the block's own arguments (a mapping or pairs): for ``'sk_basic'`` the Selective Kernel's
            (timm's ``sk_kwargs``: ``rd_ratio``, ``rd_divisor``, ``split_input``, ``kernel_size``, ...); for
            ``'resnest'`` ``radix`` (1), ``avd`` (False), ``avd_first`` (False); none for the others.

    Shapes: input (N, in_chans, H, W) in torch and Paddle, (N, H, W, in_chans) in Flax; output (N, num_classes).
    Parameters: torch / timm ``state_dict`` names: ``conv1.weight`` (or ``conv1.{0,1,3,4,6}.*``), ``bn1.*``,
    ``layer{1-4}.{i}.conv{1-3}``, ``...bn{1-3}``, ``...downsample.{0,1,2}``, ``...se.*``, ``fc.weight``,
    ``fc.bias``; ``seresnet50``, ``ecaresnet50d``, ``skresnet18`` and ``resnest14d`` have exactly the keys and
    shapes of timm's models of those names.
    """

    module_name: ClassVar[str] = "ResNet"

    block: str
    layers: tuple[int, ...]
    num_classes: int = 1000
    in_chans: int = 3
    attn_layer: str | None = None
    attn_kwargs: Any = ()
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    stem_type: str = ""
    stem_width: int = 64
    avg_down: bool = False
    block_args: Any = ()
    blocks: tuple[BlockSpec, ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        name = self.module_name
        check_choice(name, "block", self.block, BLOCK_TYPES)
        layers = tuple(self.layers) if isinstance(self.layers, (list, tuple)) else self.layers
        if not isinstance(layers, tuple) or len(layers) != 4:
            raise ConfigError(f"{name}: layers must be 4 positive block counts, got {self.layers!r}")
        for n in layers:
            check_positive_int(name, "layers[i]", n)
        object.__setattr__(self, "layers", layers)
        check_positive_int(name, "num_classes", self.num_classes)
        check_positive_int(name, "in_chans", self.in_chans)
        check_choice(name, "stem_type", self.stem_type, STEM_TYPES)
        check_positive_int(name, "stem_width", self.stem_width)
        check_choice(name, "avg_down", self.avg_down, (True, False))
        kwargs = dict(self.attn_kwargs.items() if isinstance(self.attn_kwargs, Mapping) else self.attn_kwargs)
        object.__setattr__(self, "attn_kwargs", tuple(sorted(kwargs.items())))
        block_args = _pairs(self.block_args)
        object.__setattr__(self, "block_args", tuple(sorted(block_args.items())))
        try:
            attn = None if self.attn_layer is None else resolve_name(self.attn_layer)
        except ConfigError as err:
            raise ConfigError(f"{name}: attn_layer: {err}") from None
        if attn is not None and (self.block == "resnest" or (attn == "simam" and self.block == "sk_basic")):
            why = "timm's ResNestBottleneck takes none" if self.block == "resnest" else "it has no bn2"
            raise ConfigError(f"{name}: attn_layer {attn!r} does not go into {self.block!r} blocks ({why})")
        known = {"sk_basic": _SK_ARGS, "resnest": tuple(_RESNEST_ARGS)}.get(self.block, ())
        unknown = sorted(set(block_args) - set(known))
        if unknown:
            raise ConfigError(f"{name}: block_args {unknown} are not arguments of {self.block!r} blocks; they take "
                              f"{', '.join(known) if known else 'none'}")
        if self.block == "resnest":
            block_args = {**_RESNEST_ARGS, **block_args}
            check_positive_int(name, "block_args['radix']", block_args["radix"])
            for flag in ("avd", "avd_first"):
                check_choice(name, f"block_args[{flag!r}]", block_args[flag], (True, False))
        expansion = _EXPANSION[self.block]
        blocks = []
        in_ch = self.stem_channels
        for stage, (count, width) in enumerate(zip(layers, STAGE_WIDTHS, strict=True)):
            for i in range(count):
                stride = 2 if stage > 0 and i == 0 else 1
                out_ch = width * expansion
                where = f"layer{stage + 1}.{i}"
                try:
                    se = create_config(attn, out_ch, **kwargs) if attn not in (None, "simam") else None
                    sim = create_config(attn, width, **kwargs) if attn == "simam" else None
                    conv, avd = self._conv(in_ch, width, stride, block_args)
                except ConfigError as err:
                    raise ConfigError(f"{name}: {where}: {err}") from None
                if se is not None and (getattr(se, "stride", 1) != 1
                                       or (getattr(se, "out_channels", None) or out_ch) != out_ch):
                    raise ConfigError(f"{name}: attn_layer {attn!r} must keep its input's channels and size inside "
                                      f"a block; attn_kwargs {dict(kwargs)} change them")
                blocks.append(BlockSpec(where, self.block, in_ch, width, out_ch, stride,
                                        stride != 1 or in_ch != out_ch, se, sim, conv, avd, self.avg_down))
                in_ch = out_ch
        object.__setattr__(self, "blocks", tuple(blocks))

    def _conv(self, in_ch: int, width: int, stride: int, args: Mapping[str, Any]
              ) -> tuple[AttentionConfig | None, str | None]:
        """The block's attention convolution (SelectiveKernel in 'sk_basic', SplitAttn in 'resnest') and which
        average pool takes a 'resnest' block's stride (timm's avd)."""
        if self.block == "sk_basic":
            return SelectiveKernelConfig(in_ch, width, stride=stride, bn_eps=self.bn_eps,
                                         bn_momentum=self.bn_momentum, **args), None
        if self.block != "resnest":
            return None, None
        avd = None if not args["avd"] or stride == 1 else "avd_first" if args["avd_first"] else "avd_last"
        conv = SplitAttnConfig(width, width, 3, 1 if avd else stride, 1, radix=args["radix"],
                               norm_layer="batchnorm", bn_eps=self.bn_eps, bn_momentum=self.bn_momentum)
        return conv, avd

    @property
    def channels_required(self) -> int:
        return self.in_chans

    @property
    def stem_channels(self) -> int:
        """The stem's output channels: ``2 stem_width`` for the deep stem, else 64."""
        return 2 * self.stem_width if self.stem_type == "deep" else 64

    @property
    def num_features(self) -> int:
        return STAGE_WIDTHS[-1] * _EXPANSION[self.block]

    def stem(self) -> dict[str, Any]:
        """The stem's layers in order (``'relu'`` between the deep stem's convolutions), up to ``bn1``; its ReLU
        and the 3x3 / 2 max pool follow."""
        bn = partial(BatchNorm, eps=self.bn_eps, momentum=self.bn_momentum)
        out = self.stem_channels
        if self.stem_type == "deep":
            w = self.stem_width
            return {"conv1.0": Conv(self.in_chans, w, 3, 2, 1), "conv1.1": bn(w), "conv1.2": "relu",
                    "conv1.3": Conv(w, w, 3, 1, 1), "conv1.4": bn(w), "conv1.5": "relu",
                    "conv1.6": Conv(w, out, 3, 1, 1), "bn1": bn(out)}
        return {"conv1": Conv(self.in_chans, out, 7, 2, 3), "bn1": bn(out)}

    def head(self) -> Linear:
        return Linear(self.num_features, self.num_classes)

    def param_table(self) -> tuple[ParamSpec, ...]:
        table: list[ParamSpec] = []
        for name, layer in self.stem().items():
            table += layer_params(layer, name)
        for b in self.blocks:
            layers = b.layers(self.bn_eps, self.bn_momentum)
            for name, layer in layers.items():
                if name == "downsample.0" and b.attn is not None:
                    table += prefixed(f"{b.name}.se", b.attn.param_table())
                table += layer_params(layer, f"{b.name}.{name}")
            if b.attn is not None and not b.downsample:
                table += prefixed(f"{b.name}.se", b.attn.param_table())
        table += self.head().params("fc")
        return tuple(table)

    def _block_forward(self, b: BlockSpec, x: Node, params: Mapping[str, Node], training: bool,
                       taps: dict[str, Node] | None = None) -> Node:
        """One block; ``taps`` gets the output of each attention module in it under its canonical path (Grad-CAM
        can target it: attn_core.cam)."""
        layers = b.layers(self.bn_eps, self.bn_momentum)

        def tap(name: str, z: Node) -> Node:
            if taps is not None:
                taps[f"{b.name}.{name}"] = z
            return z

        def run(name: str, z: Node) -> Node:
            out = apply_layer(layers[name], z, params, f"{b.name}.{name}", training)
            return tap(name, out) if isinstance(layers[name], AttentionConfig) else out

        if b.block == "sk_basic":
            out = run("conv2.bn", run("conv2.conv", run("conv1", x)))  # the SK convolution's paths end in ReLU
        elif b.block == "resnest":
            out = ops.relu(run("bn1", run("conv1", x)))
            out = run("avd_first", out) if "avd_first" in layers else out
            out = run("conv2", out)  # SplitAttn: BatchNorm and ReLU inside, none after (timm's act2 is Identity)
            out = run("avd_last", out) if "avd_last" in layers else out
            out = run("bn3", run("conv3", out))
        else:
            out = run("conv2", ops.relu(run("bn1", run("conv1", x))))
            if b.simam is not None:
                out = tap("simam", b.simam.reference_forward(out, {}, training))
            out = run("bn2", out)
            if b.block == "bottleneck":
                out = run("bn3", run("conv3", ops.relu(out)))
        if b.attn is not None:
            out = tap("se", b.attn.reference_forward(out, subtree(params, f"{b.name}.se"), training))
        shortcut = x
        for name in layers:
            if name.startswith("downsample."):
                shortcut = run(name, shortcut)
        return ops.relu(ops.add(out, shortcut))

    def reference_forward(self, x: Node, params: Mapping[str, Node], training: bool = False,
                          taps: dict[str, Node] | None = None) -> Node:
        for name, layer in self.stem().items():
            x = apply_layer(layer, x, params, name, training)
        x = ops.max_pool2d(ops.relu(x), 3, 2, 1)
        for b in self.blocks:
            x = self._block_forward(b, x, params, training, taps)
            if taps is not None:
                taps[b.name] = x
        pooled = ops.mean(x, (2, 3), keepdims=False)
        return self.head()(pooled, params, "fc")
