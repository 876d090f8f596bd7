"""The conformance cases: for every module, the configurations and input shapes that exercise its edges.

Each case covers at least one thing a port can get wrong: non-square and odd spatial sizes, batch 1, channel
counts where ``C // 16 < 1``, where Eq. 9 of ECA gives an even value, SimAM at 1x1, both BatchNorm modes,
both concat orders, biases on and off.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from attn_core import (
    CBAM_PRESETS,
    CONFIGS,
    COORD_PRESETS,
    GCT_PRESETS,
    PSA_PRESETS,
    SHUFFLE_PRESETS,
    SRM_PRESETS,
    AttentionConfig,
    create_config,
)

from .tolerances import Tolerance, tolerance_for

__all__ = ["Case", "CASES", "MODULES", "select_cases", "cases_for", "registry_name"]


@dataclass(frozen=True)
class Case:
    """One module configuration on one input shape (NCHW), in eval or training mode."""

    module: str
    case_id: str
    shape: tuple[int, int, int, int]
    options: tuple[tuple[str, Any], ...] = ()
    training: bool = False
    note: str = ""
    #: the exact config of the case, when it was derived from one (:func:`cases_for`); else built from ``options``
    spec: AttentionConfig | None = None
    #: training steps whose running statistics are compared (the first is the one whose output and gradients are;
    #: the others run on :meth:`batches`)
    steps: int = 1
    #: a factor on the drawn input (and on the further batches): a large one saturates a softmax over paths or splits
    input_scale: float = 1.0

    #: judge elements near 0 on the scale of their quantity (:func:`conformance.suite.compare`'s ``scaled``)
    scaled = False
    #: where the reason is given when :meth:`compares_grads` is False for a dtype
    grad_note = ""

    def compares_grads(self, dtype: str) -> bool:
        """Whether this case's gradients are compared in ``dtype`` (always, for an attention module)."""
        return True

    def tolerance(self, dtype: str) -> Tolerance:
        """The tolerance of this case's comparisons in ``dtype``: the table's (:mod:`conformance.tolerances`)."""
        return tolerance_for(dtype)

    @property
    def name(self) -> str:
        return f"{self.module}/{self.case_id}"

    @property
    def seed(self) -> int:
        return zlib.crc32(self.name.encode())

    def config(self) -> AttentionConfig:
        if self.spec is not None:
            return self.spec
        return create_config(self.module, self.shape[1], **dict(self.options))

    def data(self, config: AttentionConfig | None = None) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """Seeded canonical weights, input and output cotangent, all float64.

        The input has a non-zero mean and unit-ish spread per channel, so BatchNorm and SimAM statistics are not
        trivially centred; the cotangent is standard normal.
        """
        config = config or self.config()
        rng = np.random.default_rng(self.seed)
        weights = config.init_weights(rng)
        x = rng.standard_normal(self.shape) * 1.5 + rng.uniform(-1.0, 1.0, (1, self.shape[1], 1, 1))
        x = x * self.input_scale
        cotangent = rng.standard_normal(self.output_shape(config))
        return weights, x, cotangent

    def output_shape(self, config: AttentionConfig) -> tuple[int, ...]:
        """The shape of the output (and of the cotangent): the float64 reference's on an input of the case's shape,
        since a module that changes channels or stride (sk, splat) does not keep the input's."""
        probe = config.init_weights(np.random.default_rng(0))
        return tuple(config.reference(probe, np.ones(self.shape), training=self.training).shape)

    def batches(self) -> list[np.ndarray]:
        """The inputs of training steps 2 .. ``steps`` (float64 NCHW, drawn as :meth:`data`'s input, each from
        the seed of the case's name and the step)."""
        out = []
        for step in range(2, self.steps + 1):
            rng = np.random.default_rng(zlib.crc32(f"{self.name}/step{step}".encode()))
            out.append((rng.standard_normal(self.shape) * 1.5 + rng.uniform(-1.0, 1.0, (1, self.shape[1], 1, 1)))
                       * self.input_scale)
        return out


def _c(module: str, case_id: str, shape: tuple[int, int, int, int], note: str = "", training: bool = False,
       **options: Any) -> Case:
    return Case(module, case_id, shape, tuple(sorted(options.items())), training, note)


_ARTICLE = dict(CBAM_PRESETS["article"])
_TIMM = dict(CBAM_PRESETS["timm"])
_ORIGINAL = dict(CBAM_PRESETS["original"])
_COORD_PAPER = dict(COORD_PRESETS["paper"])
_SRM_OFFICIAL = dict(SRM_PRESETS["official"])
_GCT_PAPER = dict(GCT_PRESETS["paper"])
_SHUFFLE_PAPER = dict(SHUFFLE_PRESETS["paper"])
_PSA = {name: dict(form) for name, form in PSA_PRESETS.items()}

CASES: tuple[Case, ...] = (
    # SE
    _c("se", "c64-timm", (2, 64, 7, 5), "timm defaults: hidden 8, biases"),
    _c("se", "c8-b1", (1, 8, 3, 4), "C // 16 = 0: timm rounding gives hidden 8"),
    _c("se", "c48-article", (2, 48, 5, 9), "seed article: hidden exactly 48 // 16 = 3, no bias",
       rd_divisor=None, bias=False),
    _c("se", "c24-silu-hsig", (2, 24, 6, 3), "silu and hard sigmoid", act_layer="silu", gate_layer="hard_sigmoid"),
    _c("se", "c16-1x1", (3, 16, 1, 1), "1x1 spatial"),
    # ECA
    _c("eca", "c128-k5", (2, 128, 5, 3), "Eq. 9 gives t = 4 (even) -> k = 5"),
    _c("eca", "c8-k3-b1", (1, 8, 4, 7), "Eq. 9 gives t = 2 (even) -> 3"),
    _c("eca", "c2048-k7", (1, 2048, 2, 3), "Eq. 9 gives 7"),
    _c("eca", "c64-k1", (2, 64, 3, 5), "authors' MobileNetV2 choice k = 1", kernel_size=1),
    _c("eca", "c12-k9", (2, 12, 3, 3), "kernel wider than half the channels", kernel_size=9),
    # CBAM channel attention
    _c("ca", "c8-b1", (1, 8, 5, 3), "C // 16 = 0: rounded to hidden 1"),
    _c("ca", "c32-bias", (2, 32, 4, 7), "MLP biases (authors' code)", bias=True),
    # CBAM spatial attention
    _c("sa", "k7", (2, 6, 9, 5), "seed article: mean first, no BatchNorm"),
    _c("sa", "k3-maxfirst-b1", (1, 4, 6, 11), "authors' order: max first", kernel_size=3, order="max_mean"),
    _c("sa", "k7-bn-eval", (2, 5, 8, 6), "timm: BatchNorm, running statistics", norm=True),
    _c("sa", "k7-bn-train", (3, 5, 7, 4), "timm: BatchNorm on batch statistics", training=True, norm=True),
    _c("sa", "k5-bias-3x2", (2, 3, 3, 2), "kernel larger than the map, conv bias", kernel_size=5, bias=True),
    # CBAM
    _c("cbam", "c32-article", (2, 32, 7, 9), "seed article preset", **_ARTICLE),
    _c("cbam", "c24-timm-eval", (2, 24, 5, 6), "timm preset, eval", **_TIMM),
    _c("cbam", "c24-timm-train", (2, 24, 5, 6), "timm preset, training", training=True, **_TIMM),
    _c("cbam", "c48-original", (1, 48, 6, 5), "authors' code preset", **_ORIGINAL),
    _c("cbam", "c8-default-k3", (2, 8, 4, 4), "C // 16 = 0, default rounding", spatial_kernel_size=3),
    # SimAM
    _c("simam", "7x5", (2, 3, 7, 5), "odd, non-square"),
    _c("simam", "1x1", (2, 4, 1, 1), "H*W = 1: gate sigmoid(0.5), no NaN"),
    _c("simam", "1x6-b1", (1, 3, 1, 6), "a single row"),
    _c("simam", "lambda0.1", (2, 5, 4, 4), "the authors' ImageNet lambda", e_lambda=0.1),
    # timm's EffectiveSEModule
    _c("ese", "c16", (2, 16, 7, 5), "timm defaults: C -> C with bias, hard sigmoid"),
    _c("ese", "c8-maxpool-b1", (1, 8, 4, 7), "add_maxpool: 0.5 mean + 0.5 max", add_maxpool=True),
    _c("ese", "c6-sigmoid-1x1", (3, 6, 1, 1), "sigmoid gate, 1x1 spatial", gate_layer="sigmoid"),
    # timm's EcaModule(use_mlp=True)
    _c("ecam", "c88-rd16", (2, 88, 5, 3), "make_divisible(11, 8) = 16: rounding to 8 loses over 10 %"),
    _c("ecam", "c128-k5-b1", (1, 128, 3, 4), "Eq. 9 gives t = 4 (even) -> k = 5"),
    _c("ecam", "c12-k9-silu", (2, 12, 3, 3), "kernel wider than half the channels, silu, hard sigmoid, rd 3",
       kernel_size=9, act_layer="silu", gate_layer="hard_sigmoid", rd_channels=3),
    _c("ecam", "c16-1x1", (2, 16, 1, 1), "1x1 spatial"),
    # timm's CecaModule
    _c("ceca", "c16-k3", (2, 16, 7, 5), "Eq. 9 gives 3: channels 15 and 0 are neighbours"),
    _c("ceca", "c128-k5-bias-b1", (1, 128, 4, 3), "act_layer given: a conv bias, no activation", act_layer="relu"),
    _c("ceca", "c4-k9-wrap", (2, 4, 3, 5), "padding 4 = C: the row wraps around entirely", kernel_size=9),
    _c("ceca", "c3-hsig-1x1", (2, 3, 1, 1), "hard sigmoid, 1x1 spatial", gate_layer="hard_sigmoid"),
    # timm's LightCbamModule
    _c("lcbam", "c32-eval", (2, 32, 7, 5), "timm defaults, BatchNorm on running statistics"),
    _c("lcbam", "c32-train", (2, 32, 7, 5), "BatchNorm on batch statistics", training=True),
    _c("lcbam", "c8-bias-k3-b1", (1, 8, 5, 6), "MLP biases, 3x3, batch 1", mlp_bias=True, spatial_kernel_size=3),
    _c("lcbam", "c24-2x3-train", (3, 24, 2, 3), "7x7 kernel wider than the map, training", training=True),
    _c("lcbam", "c16-silu-1x1", (2, 16, 1, 1), "silu, 1x1 spatial", act_layer="silu"),
    # timm's CoordAttn
    _c("coord", "c64-timm", (2, 64, 7, 5), "timm defaults: rd 8, no conv bias, BatchNorm on running statistics"),
    _c("coord", "c48-train", (3, 48, 6, 5), "BatchNorm on batch statistics over N * (H + W)", training=True),
    _c("coord", "c40-paper-b1", (1, 40, 5, 8), "the authors' code: max(8, C // 32) = 8, conv biases",
       **_COORD_PAPER),
    _c("coord", "c24-1x1-train", (2, 24, 1, 1), "1x1 trains: the BatchNorm sees N * (H + W) = 4 values per channel",
       training=True),
    _c("coord", "c16-skip", (2, 16, 4, 9), "no norm, silu, hard sigmoid, skip", norm_layer=None, act_layer="silu",
       gate_layer="hard_sigmoid", has_skip=True),
    # timm's SimpleCoordAttn
    _c("scoord", "c32-timm", (2, 32, 7, 5), "timm defaults: Linear with bias, rd 8, silu"),
    _c("scoord", "c12-b1", (1, 12, 3, 8), "batch 1, H != W: the H and W heads cannot be swapped"),
    _c("scoord", "c8-1x1-skip", (2, 8, 1, 1), "1x1, no bias, hard swish, hard sigmoid, skip", bias=False,
       act_layer="hard_swish", gate_layer="hard_sigmoid", has_skip=True),
    # timm's EfficientLocalAttn
    _c("ela", "c16-k7-3x5", (2, 16, 3, 5), "timm defaults; the 7-tap kernel is longer than both strips"),
    _c("ela", "c32-g16-b1", (1, 32, 6, 9), "the paper's GroupNorm(16, C) and no activation", norm_groups=16,
       act_layer=None),
    _c("ela", "c8-k3-bias-1x1", (2, 8, 1, 1), "1x1: one-value strips, conv bias", kernel_size=3, bias=True),
    _c("ela", "c12-nonorm-skip", (2, 12, 5, 4), "no norm, hard swish, skip", norm_layer=None,
       act_layer="hard_swish", has_skip=True),
    # timm's StripAttn
    _c("strip", "c8-k3", (2, 8, 7, 5), "timm defaults"),
    _c("strip", "c6-k5-bias-b1", (1, 6, 3, 4), "kernel longer than the H strip, conv bias", kernel_size=5, bias=True),
    _c("strip", "c4-noconv-1x1", (2, 4, 1, 1), "use_conv=False: no parameters, 1x1", use_conv=False),
    _c("strip", "c5-hsig-skip", (2, 5, 4, 6), "hard sigmoid, skip", gate_layer="hard_sigmoid", has_skip=True),
    # timm's NonLocalAttn: softmax over the H*W positions, BatchNorm after z, residual
    _c("nl", "c16-7x5", (2, 16, 7, 5), "timm defaults: rd make_divisible(2, 8) = 8, scale C ** -0.5"),
    _c("nl", "c16-train", (3, 16, 5, 4), "BatchNorm on batch statistics", training=True),
    _c("nl", "c12-rd4-b1", (1, 12, 3, 8), "batch 1, rd_channels 4", rd_channels=4),
    _c("nl", "c8-noscale", (2, 8, 3, 4), "use_scale=False: unscaled logits, the largest weight 0.87 on average",
       use_scale=False),
    _c("nl", "c8-1x1-b1", (1, 8, 1, 1), "one position: the softmax is 1"),
    _c("nl", "c24-1x1-train", (3, 24, 1, 1), "one position per sample, BatchNorm over the batch", training=True,
       rd_ratio=0.5),
    # timm's BatNonLocalAttn: H and W multiples of block_size; the training cases drop nothing (drop_rate=0)
    _c("bat", "c16-b2-eval", (2, 16, 6, 4), "block 2 (t = 3, s = 2), dropout inactive in eval", block_size=2),
    _c("bat", "c16-b2-train", (3, 16, 4, 6), "BatchNorm on batch statistics, drop_rate 0", training=True,
       block_size=2, drop_rate=0.0),
    _c("bat", "c24-b3-g4-b1", (1, 24, 9, 3), "groups 4 of rd 8, W = block (no resize), batch 1", block_size=3,
       groups=4, rd_channels=8),
    _c("bat", "c32-b7-timm", (1, 32, 7, 14), "timm's block_size 7, groups 2"),
    _c("bat", "c8-b1-1x1-train", (4, 8, 1, 1), "block 1 at 1x1: P = Q = 1, BatchNorm over 4 values",
       training=True, block_size=1, drop_rate=0.0),
    _c("bat", "c16-silu-train", (2, 16, 6, 9), "silu, groups 4, block 3, training", training=True, block_size=3,
       groups=4, act_layer="silu", drop_rate=0.0),
    # timm's SelectiveKernel: the output has out_channels and the strided map
    _c("sk", "c8-timm", (2, 8, 7, 5), "timm defaults: 3x3 and dilated 3x3 paths on input halves, BatchNorm eval"),
    _c("sk", "c8-train", (6, 8, 5, 3), "BatchNorm on batch statistics in the paths and the attention", training=True),
    _c("sk", "c12-o16-s2-train", (6, 12, 7, 6), "three paths, 12 -> 16 channels, stride 2, training",
       training=True, kernel_size=(3, 5, 7), out_channels=16, stride=2),
    _c("sk", "c6-k357-b1", (1, 6, 5, 8), "keep_3x3=False: a 7x7 kernel wider than the map, whole input, groups 2",
       kernel_size=(3, 5, 7), keep_3x3=False, split_input=False, groups=2),
    _c("sk", "c8-s2-1x1", (2, 8, 1, 1), "1x1 map, stride 2, dilation 2", stride=2, dilation=2),
    _c("sk", "c4-dw-silu-rd3", (2, 4, 3, 3), "depthwise paths (groups 4 on the whole input), silu, rd_channels 3",
       split_input=False, groups=4, act_layer="silu", rd_channels=3),
    Case("sk", "c8-x4-softmax", (2, 8, 6, 7), note="input x 4: a softmax over the paths from 0.001 to 0.999",
         input_scale=4.0),
    # timm's SplitAttn: the output has out_channels and the strided map
    _c("splat", "c8-timm", (2, 8, 7, 5), "timm defaults: radix 2, no norm, attention width 32"),
    _c("splat", "c8-r1", (2, 8, 5, 6), "radix 1: a sigmoid gate", radix=1),
    _c("splat", "c12-g2-bn-train", (6, 12, 3, 2), "ResNeSt form: cardinality 2, BatchNorm on batch statistics",
       training=True, groups=2, norm_layer="batchnorm"),
    _c("splat", "c8-o16-s2-bn", (2, 8, 7, 5), "8 -> 16 channels, stride 2, BatchNorm eval", out_channels=16,
       stride=2, norm_layer="batchnorm"),
    _c("splat", "c6-r3-g2-b1", (1, 6, 4, 7), "radix 3 in 2 cardinal groups, conv bias, silu, batch 1", radix=3,
       groups=2, bias=True, act_layer="silu"),
    _c("splat", "c4-r4-1x1", (2, 4, 1, 1), "radix 4, the 3x3 kernel wider than a 1x1 map", radix=4),
    _c("splat", "c8-k5-d2-s2-train", (6, 8, 7, 5), "5x5, dilation 2, padding 4, stride 2, radix 1, training",
       training=True, kernel_size=5, dilation=2, padding=4, stride=2, radix=1, norm_layer="batchnorm"),
    Case("splat", "c8-g2-x4-softmax", (2, 8, 6, 7), (("groups", 2),),
         note="input x 4: a radix softmax from 0.001 to 0.999", input_scale=4.0),
    # timm's GatherExcite: timm 1.0.31 builds only the forms without the MLP and without parameters
    _c("ge", "c16-timm", (2, 16, 7, 5), "timm defaults: global mean, MLP 16 -> 1 -> 16"),
    _c("ge", "c8-e2-b1", (1, 8, 7, 5), "extent 2 without MLP (a form timm builds): 3x3 stride 2, upsampled 4x3",
       extent=2, use_mlp=False),
    _c("ge", "c12-e4-max-silu", (2, 12, 9, 6), "extent 4 averaged with max pooling, silu, hard sigmoid", extent=4,
       add_maxpool=True, act_layer="silu", gate_layer="hard_sigmoid"),
    _c("ge", "c8-e8-1x1", (2, 8, 1, 1), "extent 8 on 1x1: a 15x15 window, no resize", extent=8),
    _c("ge", "c16-max-1x1", (3, 16, 1, 1), "global mean and max at 1x1", add_maxpool=True),
    _c("ge", "c8-global-eval", (2, 8, 5, 3), "global depthwise kernel 5x3 on the 5x3 map, BatchNorm eval",
       extra_params=True, feat_size=(5, 3)),
    _c("ge", "c8-global-train", (3, 8, 5, 3), "global kernel, BatchNorm on N = 3 values per channel",
       training=True, extra_params=True, feat_size=(5, 3)),
    _c("ge", "c12-e4-train", (2, 12, 7, 5), "two stride-2 depthwise convolutions, BatchNorm, relu between",
       training=True, extra_params=True, extent=4),
    _c("ge", "c6-e2-nonorm-b1", (1, 6, 6, 9), "one depthwise convolution without BatchNorm, no MLP",
       extra_params=True, extent=2, norm_layer=None, use_mlp=False),
    _c("ge", "c8-e8-3x2-train", (2, 8, 3, 2), "three 3x3 convolutions wider than the map down to 1x1, training",
       training=True, extra_params=True, extent=8),
    # timm's GlobalContext ('gc': scale) and its 'gca' (add)
    _c("gc", "c32-timm", (2, 32, 7, 5), "timm defaults: softmax pooling, LayerNorm MLP 32 -> 4 -> 32, scale"),
    Case("gc", "c32-x8-softmax", (2, 32, 6, 7), note="input x 8: logits of tens, a near one-hot softmax",
         input_scale=8.0),
    _c("gc", "c8-mean-b1", (1, 8, 5, 8), "use_attn=False: the mean as context, batch 1", use_attn=False),
    _c("gc", "c8-1x1", (2, 8, 1, 1), "one position: the softmax is 1"),
    _c("gc", "c24-both-silu", (2, 24, 4, 6), "add and scale, silu, hard sigmoid", fuse_add=True, act_layer="silu",
       gate_layer="hard_sigmoid"),
    _c("gc", "c8-rd1", (2, 8, 3, 3), "rd 1: the LayerNorm of one channel is 0, the MLP its bias", rd_channels=1),
    _c("gca", "c32-timm", (2, 32, 7, 5), "timm's gca: softmax pooling, the MLP's output added"),
    _c("gca", "c24-mean-b1", (1, 24, 6, 5), "use_attn=False, batch 1, rd 3", use_attn=False),
    Case("gca", "c8-x8-softmax", (2, 8, 5, 7), note="input x 8: a near one-hot softmax", input_scale=8.0),
    _c("gca", "c8-1x1", (2, 8, 1, 1), "one position"),
    # SRM (not in timm): the paper's population std and the authors' unbiased one (SRM_PRESETS)
    _c("srm", "c16-paper", (2, 16, 7, 5), "the paper: std over H*W, BatchNorm on running statistics"),
    _c("srm", "c12-official-b1", (1, 12, 5, 8), "the authors' code: unbiased std (H*W - 1), batch 1",
       **_SRM_OFFICIAL),
    _c("srm", "c8-train", (4, 8, 6, 5), "BatchNorm on batch statistics: N = 4 values per channel", training=True),
    _c("srm", "c8-official-train", (3, 8, 3, 2), "the authors' code in training", training=True, **_SRM_OFFICIAL),
    _c("srm", "c6-1x1", (2, 6, 1, 1), "the paper at 1x1: std sqrt(eps)"),
    # GCT (not in timm): epsilon on the channel mean (the authors' code) or sum (the paper), l2 and l1 (GCT_PRESETS)
    _c("gct", "c16-official", (2, 16, 7, 5), "the authors' code: l2, epsilon on the mean over C"),
    _c("gct", "c12-paper-b1", (1, 12, 5, 8), "the paper's Eq. 2: epsilon on the sum over C, batch 1", **_GCT_PAPER),
    _c("gct", "c8-l1", (2, 8, 6, 3), "l1: sum_hw |x|, normalised by mean_c |s| + epsilon", mode="l1"),
    _c("gct", "c8-l1-relu-paper", (2, 8, 4, 5), "l1 after_relu: the signed sum (a negative input stays negative)",
       mode="l1", after_relu=True, **_GCT_PAPER),
    _c("gct", "c6-1x1", (2, 6, 1, 1), "1x1: the l2 norm of one value"),
    _c("gct", "c1-7x5", (2, 1, 7, 5), "one channel: the normalised embedding is gamma * s / sqrt(s^2 + epsilon)"),
    Case("gct", "c8-x1e-3", (2, 8, 5, 4), note="inputs x 1e-3: the embedding's mean square near epsilon, whose place "
         "shows", input_scale=1e-3),
    Case("gct", "c8-x1e-3-paper", (2, 8, 5, 4), tuple(_GCT_PAPER.items()), note="the paper's epsilon near 0",
         input_scale=1e-3),
    # ShuffleAttention (not in timm): GroupNorm with its affine (the authors' code) or without (the paper)
    _c("shuffle", "c32-g4", (2, 32, 7, 5), "the authors' code, 4 groups of two 4-channel halves", groups=4),
    _c("shuffle", "c16-g2-paper-b1", (1, 16, 5, 8), "the paper: GroupNorm without affine, batch 1", groups=2,
       **_SHUFFLE_PAPER),
    _c("shuffle", "c128-g64", (2, 128, 3, 4), "the default 64 groups: one channel per half"),
    _c("shuffle", "c8-g1-1x1", (2, 8, 1, 1), "one group, 1x1: the normalised map is 0, the spatial gate sigmoid(sbias)",
       groups=1),
    # triplet (the authors' BatchNorm momentum 0.01) and BAM
    _c("triplet", "c16-original", (2, 16, 7, 5), "the authors' form: three branches, 7x7 wider than the W = 5 map"),
    _c("triplet", "c8-train", (3, 8, 6, 5), "three BatchNorms on batch statistics, momentum 0.01", training=True),
    _c("triplet", "c6-nospatial-b1", (1, 6, 5, 8), "the two rotated branches only, batch 1", no_spatial=True),
    _c("triplet", "c4-1x1-train", (4, 4, 1, 1), "1x1 in training: the spatial BatchNorm sees N = 4 values",
       training=True),
    _c("triplet", "c8-k3-meanmax", (2, 8, 4, 9), "3x3, CBAM's pooling order", kernel_size=3, pool_order="mean_max"),
    _c("triplet", "c3-3x2", (2, 3, 3, 2), "a 7x7 kernel wider than every rotation of the map"),
    _c("bam", "c32-original", (2, 32, 7, 5), "the authors' form: r = 2, dilation 4 wider than the map"),
    _c("bam", "c16-paper-train", (6, 16, 4, 3), "the paper's sum, five BatchNorms on batch statistics",
       training=True, combine="sum", reduction_ratio=4),
    _c("bam", "c16-r4-b1", (1, 16, 5, 8), "r = 4, batch 1", reduction_ratio=4),
    _c("bam", "c8-1x1-train", (6, 8, 1, 1), "1x1 in training: every BatchNorm sees N = 6 values", training=True,
       reduction_ratio=2),
    _c("bam", "c24-deep", (2, 24, 9, 7), "two hidden Linear layers, three 3x3 convolutions at dilation 2",
       reduction_ratio=6, num_layers=2, dilation_conv_num=3, dilation_val=2),
    # PSA (not in timm): the authors' PSA_p (the default) and PSA_s, the paper's two forms (PSA_PRESETS)
    _c("psa", "c16-parallel", (2, 16, 7, 5), "the authors' PSA_p: softmax over H*W of the spatial product"),
    _c("psa", "c16-sequential-b1", (1, 16, 5, 8), "the authors' PSA_s: ratio-4 bottleneck (Cr = 2), batch 1",
       **_PSA["sequential"]),
    _c("psa", "c12-paper-parallel", (2, 12, 6, 3), "the paper: LayerNorm over C, softmax over the C/2 query",
       **_PSA["paper_parallel"]),
    _c("psa", "c8-paper-sequential", (2, 8, 4, 5), "the paper's sequential form", **_PSA["paper_sequential"]),
    _c("psa", "c9-odd", (2, 9, 3, 4), "odd C: the branches are C // 2 = 4 wide"),
    _c("psa", "c6-1x1", (2, 6, 1, 1), "one position: both H*W softmaxes are 1"),
    _c("psa", "c10-paper-bias", (2, 10, 4, 3), "External-Attention-pytorch's copy: the paper's form, biases",
       bias=True, **_PSA["paper_sequential"]),
    Case("psa", "c8-x8-softmax", (2, 8, 5, 7), tuple(_PSA["paper_parallel"].items()),
         note="input x 8: near one-hot softmaxes", input_scale=8.0),
    # GAM (not in timm, no authors' code): the paper's form (GAM_PRESETS['paper']), then its grouped ResNet-50 form
    _c("gam", "c16-paper", (2, 16, 7, 5), "r = 4, 7x7 convolutions wider than the W = 5 map, running statistics"),
    _c("gam", "c8-train", (3, 8, 4, 5), "two BatchNorms on batch statistics", training=True),
    _c("gam", "c12-r3-b1", (1, 12, 5, 8), "r = 3, batch 1", rate=3),
    _c("gam", "c8-k3-1x1-train", (4, 8, 1, 1), "3x3 at 1x1 in training: each BatchNorm sees N = 4 values",
       training=True, kernel_size=3),
    # GAM_PRESETS['grouped'] (the paper's ResNet-50: grouped 7x7 convolutions, a channel shuffle of the spatial gate)
    _c("gam", "c16-grouped", (2, 16, 7, 5), "4 groups (Cr = 4: one channel per group) and a shuffle of 4 groups",
       groups=4, shuffle_groups=4),
    _c("gam", "c24-g2-s3-train", (3, 24, 4, 5), "2 groups, a shuffle of 3 groups, BatchNorms on batch statistics",
       training=True, groups=2, shuffle_groups=3),
)

MODULES: tuple[str, ...] = tuple(dict.fromkeys(c.module for c in CASES))


def select_cases(modules: Iterable[str] | None = None, cases: Iterable[Case] = CASES) -> list[Case]:
    """The cases of the given modules (all when None); an unknown module name is an error listing the known."""
    return select(cases, modules, MODULES, "module")


C = TypeVar("C", bound=Case)


def select(cases: Iterable[C], names: Iterable[str] | None, known: Sequence[str], kind: str) -> list[C]:
    """The ``cases`` whose ``module`` is one of ``names`` (all when None); a name not in ``known`` is a ValueError
    listing the known ones (``kind``: what a name names, 'module' or 'model')."""
    if names is None:
        return list(cases)
    wanted = list(names)
    unknown = [m for m in wanted if m not in known]
    if unknown:
        raise ValueError(f"unknown {kind}(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return [c for c in cases if c.module in wanted]


def describe(options: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in options.items())


# ------------------------------------------------------------------------------------- cases of one spec
#: the channel count of the inputs of a spec that accepts any (SimAM, SpatialAttention with ``channels=None``)
ANY_CHANNELS = 6


def registry_name(config: AttentionConfig) -> str:
    """The registry name (``attn_core.CONFIGS``) of a config's module: ``SEConfig(...)`` -> ``'se'``."""
    for name, cls in CONFIGS.items():
        if type(config) is cls:
            return name
    raise TypeError(f"expected an attn_core config ({', '.join(c.__name__ for c in CONFIGS.values())}), "
                    f"got {type(config).__name__}")


def cases_for(config: AttentionConfig) -> tuple[Case, ...]:
    """The cases that check one fixed config (:func:`conformance.check`): its channel count is given, so they vary
    the input. Each names what it exercises:

    - ``n2-7x5``: odd, non-square H x W (a transposed kernel or swapped H/W axes shows);
    - ``n1-5x8``: batch 1, one odd and one even side;
    - ``n2-1x1``: 1 x 1 spatial (kernels wider than the map; SimAM's H*W - 1 = 0);
    - ``n3-6x5-train``: only for a module with BatchNorm, training mode: batch statistics in the output, and the
      running statistics after the step.

    BatchNorm modules run the other cases in eval mode, on the (seeded, non-trivial) running statistics. Weights,
    input and cotangent are drawn from the seed of the case's name, as for :data:`CASES`. A config whose H and W
    must be multiples of its ``spatial_multiple`` m (BatNonLocalAttn: its block_size) gets every H and W times m.
    """
    name = registry_name(config)
    c = config.channels_required or ANY_CHANNELS
    cases = [
        Case(name, "n2-7x5", (2, c, 7, 5), note="odd, non-square", spec=config),
        Case(name, "n1-5x8", (1, c, 5, 8), note="batch 1, non-square", spec=config),
        Case(name, "n2-1x1", (2, c, 1, 1), note="1x1 spatial", spec=config),
    ]
    if config.has_batch_norm:
        cases.append(Case(name, "n3-6x5-train", (3, c, 6, 5), training=True,
                          note="training: BatchNorm on batch statistics", spec=config))
    fewest = int(getattr(config, "min_positions", 1))  # SRM's unbiased std: no 1x1 map
    cases = [k for k in cases if k.shape[2] * k.shape[3] >= fewest]
    m = int(getattr(config, "spatial_multiple", 1))
    if m > 1:
        cases = [Case(k.module, k.case_id.replace(f"{k.shape[2]}x{k.shape[3]}", f"{k.shape[2] * m}x{k.shape[3] * m}"),
                      (k.shape[0], k.shape[1], k.shape[2] * m, k.shape[3] * m), training=k.training,
                      note=f"{k.note}, sizes times {m}", spec=config) for k in cases]
    return tuple(cases)
