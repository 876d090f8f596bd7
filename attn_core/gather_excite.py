"""Gather-Excite.

Paper: Jie Hu, Li Shen, Samuel Albanie, Gang Sun, Andrea Vedaldi. "Gather-Excite: Exploiting Feature Context in
Convolutional Neural Networks", NeurIPS 2018, arXiv:1810.12348. timm class: ``GatherExcite``
(timm/layers/gather_excite.py); the authors' Caffe models: github.com/hujie-frank/GENet.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from . import ops
from .autodiff import Node
from .precision import FLOAT_DTYPES
from .se import ACT_LAYERS, GATE_LAYERS
from .spec import (
    AttentionConfig,
    ConfigError,
    InputShapeError,
    ParamSpec,
    as_int,
    check_batch_norm_after,
    reduced_channels,
)

__all__ = ["GatherExciteConfig", "NORM_LAYERS", "gather_sizes"]

#: the normalisation after each gather convolution: timm builds ``nn.BatchNorm2d`` whenever ``norm_layer`` is set
NORM_LAYERS = ("batchnorm", None)


def gather_sizes(size: int, convs: int) -> list[int]:
    """The sizes of one spatial axis after each of ``convs`` stride-2, 3x3, padding-1 convolutions: ceil(s / 2)."""
    out = []
    for _ in range(convs):
        size = (size - 1) // 2 + 1
        out.append(size)
    return out


@dataclass(frozen=True)
class GatherExciteConfig(AttentionConfig):
    """Gather-Excite (Hu et al., NeurIPS 2018, arXiv:1810.12348), timm's ``GatherExcite``.

    ``y = x * gate(resize(mlp(gather(x))))``: a gather that pools every channel over a spatial extent, an optional
    MLP of two 1x1 convolutions C -> rd -> C with biases (timm's ``ConvMlp``, ``act_layer`` between), a
    nearest-neighbour resize of the gathered map back to H x W (torch's ``F.interpolate`` rule,
    :func:`attn_core.ops.nearest_indices`; none when it is 1 x 1, which broadcasts) and the gate.

    The gather, by ``extent`` and ``extra_params``:

    - ``extent=0`` without parameters (GE-θ⁻ global, SE's squeeze): ``mean_hw(x)``, with ``add_maxpool``
      ``0.5 * mean_hw(x) + 0.5 * max_hw(x)``;
    - ``extent=e > 0`` without parameters (GE-θ⁻ with extent e): average pooling with kernel 2e - 1, stride e,
      padding e - 1, the padded zeros not counted (``count_include_pad=False``), to ceil(H / e) x ceil(W / e); with
      ``add_maxpool`` the mean of that and the max pooling of the same windows;
    - ``extent=0`` with parameters (GE-θ global): a depthwise convolution without bias whose kernel is the whole
      map, ``feat_size`` (fh, fw), without padding, to 1 x 1, then BatchNorm (``gather.conv1``, ``gather.norm1``);
    - ``extent=e > 0`` with parameters (GE-θ with extent e): log2(e) depthwise 3x3 convolutions without bias,
      stride 2, padding 1 (``gather.conv<i>``), each followed by BatchNorm (``gather.norm<i>``) and all but the last
      by ``act_layer``, to ceil(H / e) x ceil(W / e).

    timm 1.0.31 cannot build the forms with parameters (``extra_params=True``) or with ``use_mlp=True`` (its
    default): its constructor passes ``*dd`` where it means ``**dd`` and raises a TypeError. These are built as that
    code means them, with one decision of its own: timm's global-extent convolution would pad by (k - 1) // 2 (its
    ``create_conv2d`` default) and so not gather globally; here it is unpadded, as the paper and the authors'
    models (a 56 x 56 depthwise kernel on the 56 x 56 map) have it, and the input must be ``feat_size`` exactly.
    The authors' GE-θ⁺ also has a ReLU between the gather's BatchNorm and the MLP; timm and this module have none.

    Args:
        channels: input and output channels C.
        feat_size: (H, W) of the input (an int: square), required by ``extent=0`` with ``extra_params`` and
            otherwise unused.
        extra_params: a gather with parameters (convolutions and BatchNorm) instead of pooling.
        extent: 0 (global) or an even extent; with ``extra_params`` a power of two (timm builds int(log2(e))
            convolutions, so its e = 6 would gather as e = 4).
        use_mlp: the 1x1-convolution MLP between gather and gate (timm: True).
        rd_ratio, rd_channels, rd_divisor: the MLP's hidden width, as SE's (timm: 1/16, rounded to a multiple of 1).
        add_maxpool: average the pooled map with max pooling (only for the gather without parameters).
        act_layer: ``'relu'`` or ``'silu'``, in the MLP and between the gather's convolutions.
        norm_layer: ``'batchnorm'`` (timm's default ``nn.BatchNorm2d``) or None: no BatchNorm in the gather.
        gate_layer: ``'sigmoid'`` or ``'hard_sigmoid'``.
        bn_eps, bn_momentum: the gather's BatchNorm (timm: 1e-5 and 0.1, torch convention).

    Shapes: input (N, C, H, W) in torch and Paddle, (N, H, W, C) in Flax; output the same shape. In training the
    last gather BatchNorm sees N x h x w values per channel (h x w the gathered size), which must be more than one.
    Parameters (canonical, timm's state_dict keys): ``gather.conv<i>.weight`` (C, 1, k, k), ``gather.norm<i>.weight``,
    ``.bias``, ``.running_mean``, ``.running_var`` (C,); ``mlp.fc1.weight`` (rd, C, 1, 1), ``mlp.fc1.bias`` (rd,),
    ``mlp.fc2.weight`` (C, rd, 1, 1), ``mlp.fc2.bias`` (C,).
    """

    module_name: ClassVar[str] = "GatherExcite"
    half_in_float32: ClassVar[bool] = True  # attn_core.precision: half inputs computed in float32

    channels: int
    feat_size: tuple[int, int] | None = None
    extra_params: bool = False
    extent: int = 0
    use_mlp: bool = True
    rd_ratio: float = 1.0 / 16
    rd_channels: int | None = None
    rd_divisor: int | None = 1
    add_maxpool: bool = False
    act_layer: str = "relu"
    norm_layer: str | None = "batchnorm"
    gate_layer: str = "sigmoid"
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    hidden: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        name = self.module_name
        self._check_positive_ints("channels")
        self._check_flags("extra_params", "use_mlp", "add_maxpool")
        self._check_choices(act_layer=ACT_LAYERS, norm_layer=NORM_LAYERS, gate_layer=GATE_LAYERS)
        e = self.extent
        if isinstance(e, (bool, np.bool_)) or not isinstance(e, (int, np.integer)) or e < 0 or e % 2:
            raise ConfigError(f"{name}: extent must be 0 (global) or a positive even integer, got {e!r}")
        if self.extra_params and e > 0 and e & (e - 1):
            raise ConfigError(f"{name}: extent with extra_params must be a power of two (log2(extent) stride-2 "
                              f"convolutions gather it), got {e}")
        if self.add_maxpool and self.extra_params:
            raise ConfigError(f"{name}: add_maxpool applies to the gather without parameters; with extra_params=True "
                              f"timm ignores it")
        object.__setattr__(self, "feat_size", self._feat_size())
        if self.extra_params and e == 0 and self.feat_size is None:
            raise ConfigError(f"{name}: feat_size (H, W) must be given for the global extent with extra_params (the "
                              f"depthwise kernel spans the whole map)")
        self._check_batch_norm_fields()
        hidden = reduced_channels(name, self.channels, self.rd_ratio, self.rd_channels, self.rd_divisor) \
            if self.use_mlp else 0
        object.__setattr__(self, "hidden", hidden)

    def _feat_size(self) -> tuple[int, int] | None:
        """``feat_size`` as a pair of plain ints (an int is a square map), validated."""
        value: Any = self.feat_size
        if value is None:
            return None
        pair = (value, value) if not isinstance(value, (tuple, list)) else tuple(value)
        pair = tuple(as_int(v) for v in pair)
        if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in pair):
            raise ConfigError(f"{self.module_name}: feat_size must be a positive integer or a pair (H, W) of them, "
                              f"got {value!r}")
        return int(pair[0]), int(pair[1])

    # ---- derived structure
    @property
    def num_convs(self) -> int:
        """The gather's convolutions: 1 for the global extent, log2(extent) otherwise, 0 without parameters."""
        if not self.extra_params:
            return 0
        return 1 if self.extent == 0 else int(math.log2(self.extent))

    @property
    def norm(self) -> bool:
        return self.norm_layer is not None

    @property
    def pool_geometry(self) -> tuple[int, int, int]:
        """(kernel, stride, padding) of the parameter-free gather with extent e: (2e - 1, e, e - 1)."""
        e = self.extent
        return 2 * e - 1, e, e - 1

    def gathered_size(self, h: int, w: int) -> tuple[int, int]:
        """The gathered map's (h, w) for an H x W input: 1 x 1 for the global extent, ceil(H / e) x ceil(W / e)."""
        if self.extent == 0:
            return 1, 1
        if self.extra_params:
            return gather_sizes(h, self.num_convs)[-1], gather_sizes(w, self.num_convs)[-1]
        k, s, p = self.pool_geometry
        return (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1

    def param_table(self) -> tuple[ParamSpec, ...]:
        c = self.channels
        table: list[ParamSpec] = []
        # the global extent's kernel is the map (feat_size, never None there: __post_init__ refuses that)
        kernel = (3, 3) if self.extent or self.feat_size is None else self.feat_size
        for i in range(1, self.num_convs + 1):
            table.append(ParamSpec(f"gather.conv{i}.weight", (c, 1, *kernel), "conv_weight"))
            if self.norm:
                table += [ParamSpec(f"gather.norm{i}.weight", (c,), "bn_weight"),
                          ParamSpec(f"gather.norm{i}.bias", (c,), "bn_bias"),
                          ParamSpec(f"gather.norm{i}.running_mean", (c,), "bn_mean"),
                          ParamSpec(f"gather.norm{i}.running_var", (c,), "bn_var")]
        if self.use_mlp:
            rd = self.hidden
            table += [ParamSpec("mlp.fc1.weight", (rd, c, 1, 1), "conv_weight"), ParamSpec("mlp.fc1.bias", (rd,),
                                                                                             "conv_bias"),
                      ParamSpec("mlp.fc2.weight", (c, rd, 1, 1), "conv_weight"), ParamSpec("mlp.fc2.bias", (c,),
                                                                                             "conv_bias")]
        return tuple(table)

    # ---- inputs
    def check_input(self, shape: Sequence[int | None], dtype: str, is_floating: bool,
                    layout: str = "NCHW", training: bool = False, param_dtypes: Collection[str] = (),
                    device_dtypes: Sequence[str] = FLOAT_DTYPES, framework: str | None = None) -> None:
        """As every module's; the global extent with parameters also needs the map to be ``feat_size``."""
        super().check_input(shape, dtype, is_floating, layout, training, param_dtypes, device_dtypes, framework)
        if not (self.extra_params and self.extent == 0 and self.feat_size is not None):
            return
        hw = tuple(shape[2:4]) if layout == "NCHW" else tuple(shape[1:3])
        known = tuple(None if (s is None or int(s) < 0) else int(s) for s in hw)
        if any(s is not None and s != f for s, f in zip(known, self.feat_size, strict=True)):
            raise InputShapeError(f"{self.module_name}: the global gather's depthwise kernel spans feat_size "
                                  f"{self.feat_size}; expected an input of that H x W, got "
                                  f"{' x '.join('?' if s is None else str(s) for s in known)}")

    def check_training_input(self, shape: Sequence[int | None], layout: str = "NCHW") -> None:
        """The last BatchNorm of the gather sees the gathered map (N, C, h, w): N * h * w must be more than 1."""
        if not self.has_batch_norm:
            return
        check_batch_norm_after(f"{self.module_name}: gather.norm{self.num_convs}", shape, layout, self.channels,
                               self.gathered_size)

    # ---- math
    def gather(self, x: Node, params: Mapping[str, Node], training: bool) -> Node:
        """The gathered map (N, C, h, w) of ``x``."""
        c = x.shape[1]
        if self.extra_params:
            g = x
            for i in range(1, self.num_convs + 1):
                stride, padding = (1, 0) if self.extent == 0 else (2, 1)
                g = ops.conv2d(g, params[f"gather.conv{i}.weight"], stride=stride, padding=padding, groups=c)
                if self.norm:
                    g = ops.batch_norm(g, params[f"gather.norm{i}.weight"], params[f"gather.norm{i}.bias"],
                                       params[f"gather.norm{i}.running_mean"], params[f"gather.norm{i}.running_var"],
                                       training=training, eps=self.bn_eps, momentum=self.bn_momentum)
                if i != self.num_convs:
                    g = ops.activation(self.act_layer, g)
            return g
        if self.extent == 0:
            g = ops.mean(x, (2, 3))
            if self.add_maxpool:
                g = ops.add(ops.scale(g, 0.5), ops.scale(ops.amax(x, (2, 3)), 0.5))
            return g
        k, s, p = self.pool_geometry
        counts = ops.constant(self.pool_counts(x.shape[2], x.shape[3]))
        g = ops.div(ops.scale(ops.avg_pool2d(x, k, s, p), float(k * k)), counts)
        if self.add_maxpool:
            g = ops.add(ops.scale(g, 0.5), ops.scale(ops.max_pool2d(x, k, s, p), 0.5))
        return g

    def pool_counts(self, h: int, w: int) -> np.ndarray:
        """The number of input (not padding) positions in each window of the parameter-free gather with extent e on
        an h x w map: (1, 1, ceil(h / e), ceil(w / e)), the divisors of ``count_include_pad=False``."""
        k, s, p = self.pool_geometry

        def axis(n: int) -> np.ndarray:
            starts = np.arange((n + 2 * p - k) // s + 1) * s - p
            return np.asarray(np.minimum(starts + k, n) - np.maximum(starts, 0))

        return np.asarray(np.outer(axis(h), axis(w)), dtype=np.float64)[None, None]

    def reference_forward(self, x: Node, params: Mapping[str, Node], training: bool = False,
                          taps: dict[str, Node] | None = None) -> Node:
        g = self.gather(x, params, training)
        if taps is not None:
            taps["gather"] = g
        if self.use_mlp:
            h = ops.activation(self.act_layer, ops.conv2d(g, params["mlp.fc1.weight"], params["mlp.fc1.bias"]))
            g = ops.conv2d(h, params["mlp.fc2.weight"], params["mlp.fc2.bias"])
        if g.shape[2:] != (1, 1):
            g = ops.repeat_nearest(g, (x.shape[2], x.shape[3]))
        gate = ops.activation(self.gate_layer, g)
        if taps is not None:
            taps["gate"] = gate
        return ops.mul(x, gate)
