"""The catalogue of porting bugs, continued for the modules that came from timm: one plausible bug per family, each
written the way users write their ports (a copy of timm's or the authors' code with one thing changed, or a port
to Paddle or Flax), checked with ``conformance.check`` against the float64 reference of the project's config.

Each test asserts that the check fails for the stated reason (the first differing tap or stage in the diagnosis,
the cases that can see it, or the refusal before anything runs) and that the corrected port passes. The docstrings
cite where the bug comes from: an upstream issue, an upstream form the port was copied from, or a row of the porting
notes (``shared/reference/porting-notes.md``). ``docs/porting-bugs.md`` lists them in its table.
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable
from typing import Any

import pytest

from attn_core import (
    COORD_PRESETS,
    BatNonLocalAttnConfig,
    CECAConfig,
    CoordAttnConfig,
    ECAMConfig,
    EffectiveSEConfig,
    GatherExciteConfig,
    GlobalContextAddConfig,
    GlobalContextConfig,
    LightCBAMConfig,
    NonLocalAttnConfig,
    SelectiveKernelConfig,
    SplitAttnConfig,
)
from conformance import check
from conformance.runners import ParamMapError

from .._fw import backend
from .._timm import import_timm
from .test_catalogue import CASE_IDS, _eca_layer, _failing_cases, _stages
from .test_timm_coord import _authors_coordatt

TRAIN_CASE_IDS = [*CASE_IDS, "n3-6x5-train"]  # cases_for adds a training case to a module with BatchNorm
#: the dtype of the checks whose float32 rounding reaches the tolerance even for the right port: a gradient that is
#: exactly 0 (NonLocal's p.bias under an unscaled softmax), or the attention BatchNorm of a 3-sample training batch
#: (SelectiveKernel; the suite trains it on 6 samples for that reason)
FLOAT64 = ("float64",)


def _timm_layers() -> Any:
    backend("torch")
    return import_timm().layers


# ------------------------------------------------------------------------------------------------ eSE
def _paddle_ese(channels: int, gate: Callable[[Any], Any] | None = None) -> Any:
    from paddle import nn

    class Gate(nn.Layer):
        """A gate function as a layer (PaddleClas' MobileNetV3 wraps ``F.hardsigmoid`` and its slope so)."""

        def forward(self, z):
            return gate(z)

    class EffectiveSELayer(nn.Layer):
        """eSE as PaddleDetection's PP-YOLOE backbone writes it: one 1x1 convolution with bias and
        ``nn.Hardsigmoid()``, or the gate given."""

        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Conv2D(channels, channels, kernel_size=1)
            self.gate = nn.Hardsigmoid() if gate is None else Gate()

        def forward(self, x):
            return x * self.gate(self.fc(x.mean(axis=(2, 3), keepdim=True)))

    return EffectiveSELayer()


def test_paddle_ese_hard_sigmoid_with_mobilenet_slope():
    """eSE's hard sigmoid is ``relu6(z + 3) / 6`` (timm's ``hard_sigmoid``, the paper's), slope 1/6. Paddle's
    ``F.hardsigmoid`` takes the slope as an argument, and PaddleClas' MobileNetV3 SE passes ``slope=0.2``: a gate
    copied from there is another function (porting notes, section 1, row 19). The gate is the first difference, in
    every case. Paddle's default slope, which PP-YOLOE's ``EffectiveSELayer`` uses (``nn.Hardsigmoid()``), is
    0.1666667, not exactly 1/6 either: 3.3e-8 apart, inside float32's tolerance but outside float64's, so the check
    sees it only when asked for float64 rows. ``relu6(z + 3) / 6`` passes both."""
    backend("paddle")
    import paddle.nn.functional as F

    spec = EffectiveSEConfig(16)
    taps = {"gate": "gate"}
    report = check(_paddle_ese(16, lambda z: F.hardsigmoid(z, slope=0.2, offset=0.5)), spec, taps=taps)
    assert _failing_cases(report) == CASE_IDS and _stages(report) == {"gate"}
    assert {"output", "grad:input", "grad:fc.weight", "grad:fc.bias"} <= report.failing_quantities("n2-7x5")

    assert check(_paddle_ese(16), spec, taps=taps).passed
    wide = check(_paddle_ese(16), spec, dtypes=("float64",), taps=taps)
    assert not wide.passed and _stages(wide) == {"gate"}
    exact = _paddle_ese(16, lambda z: F.relu6(z + 3) / 6)
    assert check(exact, spec, dtypes=("float32", "float64"), taps=taps).passed


# ------------------------------------------------------------------------------------------------ ECA
def test_ceca_weights_in_a_zero_padded_eca():
    """timm's ``CecaModule`` pads the pooled channel row circularly (channel C - 1 neighbours channel 0) where
    ECANet's ``eca_layer`` pads with zeros. Both hold one ``conv.weight`` of shape (1, 1, k), so a ``'ceca'``
    checkpoint loads strictly into the ECANet layer a user already has, and nothing complains. Only the (k - 1) / 2
    channels at each end of the row see a different neighbourhood: the gate is the first difference, worst at
    channel 0 or C - 1, in every case (the channel row does not depend on the map's size). timm's own module, the
    corrected port, passes."""
    layers = _timm_layers()

    spec = CECAConfig(16)  # k = 3 by Eq. 9, one channel of circular padding at each end
    zero_padded = _eca_layer(3, 1)
    zero_padded.load_state_dict(layers.CecaModule(16).state_dict(), strict=True)  # silently fits
    report = check(zero_padded, spec, taps={"gate": "sigmoid"})
    assert _failing_cases(report) == CASE_IDS and _stages(report) == {"gate"}
    for d in report.diagnoses:
        assert re.search(r"worst at index \(\d+, (0|15), 0, 0\)", d.comparison.detail), d.comparison.detail
    assert check(layers.CecaModule(16), spec, taps={"gate": "gate"}).passed


def _flax_ecam(rd: int, k: int) -> Any:
    import flax.linen as fnn

    class EcaMlp(fnn.Module):
        @fnn.compact
        def __call__(self, x):  # NHWC; the channels are the length axis of both 1-D convolutions
            y = x.mean(axis=(1, 2))[:, :, None]                                          # (N, C, 1)
            h = fnn.relu(fnn.Conv(rd, (1,), name="conv")(y))                              # (N, C, rd)
            z = fnn.Conv(1, (k,), padding=(k - 1) // 2, name="conv2")(h)                  # (N, C, 1)
            return x * fnn.sigmoid(z[:, None, None, :, 0])

    return EcaMlp()


@pytest.mark.slow  # a further Flax entry: its check jit-compiles the port for every case
def test_flax_ecam_width_by_integer_division():
    """timm's ECA with an MLP (``EcaModule(use_mlp=True)``) lifts the channel row to ``make_divisible(C / 8, 8)``
    feature rows; a port that takes ``C // 8``, as the seed articles' SE takes ``C // r`` (porting notes, section 2,
    SE), agrees only where C / 8 is already a multiple of 8 that rounding keeps. At C = 32 it builds 4 rows where
    the spec has 8: the check refuses before running, naming every parameter whose shape does not fit."""
    backend("flax")
    spec = ECAMConfig(32)
    assert (spec.k, spec.hidden) == (3, 8)
    with pytest.raises(ParamMapError) as refused:
        check(_flax_ecam(32 // 8, spec.k), spec)
    assert refused.value.mismatched == [("conv.weight", (1, 1, 8), (1, 1, 4)), ("conv.bias", (8,), (4,)),
                                        ("conv2.weight", (3, 8, 1), (3, 4, 1))]
    assert check(_flax_ecam(spec.hidden, spec.k), spec).passed


# ------------------------------------------------------------------------------------------- LightCBAM
def _flax_light_cbam(rd: int, channel_pool: Callable[[Any, Any], Any]) -> Any:
    import flax.linen as fnn

    from backends.flax._norm import BatchNorm

    class LightChannelAttn(fnn.Module):
        @fnn.compact
        def __call__(self, x):  # NHWC
            pooled = channel_pool(x.mean(axis=(1, 2), keepdims=True), x.max(axis=(1, 2), keepdims=True))
            h = fnn.relu(fnn.Conv(rd, (1, 1), use_bias=False, name="fc1")(pooled))
            return x * fnn.sigmoid(fnn.Conv(x.shape[-1], (1, 1), use_bias=False, name="fc2")(h))

    class ConvBn(fnn.Module):
        @fnn.compact
        def __call__(self, x, train: bool):
            z = fnn.Conv(1, (7, 7), padding=3, use_bias=False, name="conv")(x)
            return BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name="bn")(z)

    class LightSpatialAttn(fnn.Module):
        @fnn.compact
        def __call__(self, x, train: bool):
            pooled = 0.5 * x.mean(axis=-1, keepdims=True) + 0.5 * x.max(axis=-1, keepdims=True)
            return x * fnn.sigmoid(ConvBn(name="conv")(pooled, train))

    class LightCbam(fnn.Module):
        @fnn.compact
        def __call__(self, x, train: bool = False):
            return LightSpatialAttn(name="spatial")(LightChannelAttn(name="channel")(x), train)

    return LightCbam()


@pytest.mark.slow  # a further Flax entry: its check jit-compiles the port for every case
def test_flax_light_cbam_pools_summed():
    """timm's ``LightCbamModule`` pools ``0.5 * mean + 0.5 * max`` where CBAM runs its MLP on the mean and on the
    max and sums the results; a port that keeps CBAM's sum, ``mean + max``, feeds the MLP twice the descriptor
    (porting notes, section 2, CBAM: the variants differ in how the two pools meet). The channel map is the first
    difference in every case (at 1 x 1 the mean and the max are equal, and their sum is still twice either)."""
    backend("flax")
    spec = LightCBAMConfig(32)  # hidden 32 / 16 = 2, 7x7 spatial convolution with BatchNorm
    taps = {"channel_gate": "channel", "spatial_gate": "spatial"}
    report = check(_flax_light_cbam(spec.hidden, lambda avg, mx: avg + mx), spec, taps=taps)
    assert _failing_cases(report) == TRAIN_CASE_IDS and _stages(report) == {"channel map"}
    assert "compared as x * map, i.e. 'channel_out'" in report.first_difference.comparison.detail
    assert check(_flax_light_cbam(spec.hidden, lambda avg, mx: 0.5 * avg + 0.5 * mx), spec, taps=taps).passed


# --------------------------------------------------------------------------------------------- Gather-Excite
def _flax_gather_excite(rd: int, count_include_pad: bool) -> Any:
    import flax.linen as fnn
    import jax.numpy as jnp

    class Gather(fnn.Module):
        @fnn.compact
        def __call__(self, x):  # extent 2: kernel 3, stride 2, padding 1
            return fnn.avg_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                                count_include_pad=count_include_pad)

    class ConvMlp(fnn.Module):
        @fnn.compact
        def __call__(self, x):
            return fnn.Conv(x.shape[-1], (1, 1), name="fc2")(fnn.relu(fnn.Conv(rd, (1, 1), name="fc1")(x)))

    class GatherExcite(fnn.Module):
        @fnn.compact
        def __call__(self, x):  # NHWC
            h, w = x.shape[1], x.shape[2]
            g = ConvMlp(name="mlp")(Gather(name="gather")(x))
            g = jnp.repeat(jnp.repeat(g, 2, axis=1), 2, axis=2)[:, :h, :w]  # torch's nearest resize for extent 2
            return x * fnn.sigmoid(g)

    return GatherExcite()


def test_flax_gather_excite_counts_the_padding():
    """timm's GatherExcite with extent 2 averages 3 x 3 windows at stride 2 with ``count_include_pad=False``; Flax's
    ``nn.avg_pool`` counts the padded zeros unless told not to (porting notes, section 1, row 12: torch and Flax
    default to counting them, Paddle's ``exclusive=True`` does not). Every window on the border is divided by 9
    instead of by the cells it covers: the gathered map is the first difference, in every case (at 1 x 1 the one
    window holds one cell and eight zeros)."""
    backend("flax")
    spec = GatherExciteConfig(16, extent=2, rd_ratio=0.25)
    report = check(_flax_gather_excite(spec.hidden, count_include_pad=True), spec, taps={"gather": "gather"})
    assert _failing_cases(report) == CASE_IDS and _stages(report) == {"gathered map"}
    assert "compared as the tensor (2, 16, 4, 3)" in report.first_difference.comparison.detail
    assert check(_flax_gather_excite(spec.hidden, count_include_pad=False), spec, taps={"gather": "gather"}).passed


# -------------------------------------------------------------------------------------------- Global Context
def _paddle_global_context(channels: int, rd: int, softmax_axis: int, fuse: str) -> Any:
    import paddle
    import paddle.nn.functional as F
    from paddle import nn

    class ConvMlp(nn.Layer):
        """timm's ConvMlp with its LayerNorm2d: a LayerNorm over the channels of an NCHW map."""

        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Conv2D(channels, rd, 1)
            self.norm = nn.LayerNorm(rd, epsilon=1e-6)
            self.act = nn.ReLU()
            self.fc2 = nn.Conv2D(rd, channels, 1)

        def forward(self, x):
            h = self.norm(self.fc1(x).transpose([0, 2, 3, 1])).transpose([0, 3, 1, 2])
            return self.fc2(self.act(h))


    class SoftmaxPool(nn.Layer):
        """GCNet's ``spatial_pool`` as a layer: the positions of the map weighted by the softmax of their logits."""

        def forward(self, x, logits):
            b, c, h, w = x.shape
            attn = F.softmax(logits.reshape([b, 1, h * w]), axis=softmax_axis)           # (B, 1, H * W)
            return paddle.matmul(x.reshape([b, c, h * w]), attn.transpose([0, 2, 1])).reshape([b, c, 1, 1])

    class GlobalContext(nn.Layer):
        """timm's GlobalContext in Paddle; ``fuse`` 'scale' ('gc'), 'add' ('gca') or 'add_as_scale'."""

        def __init__(self) -> None:
            super().__init__()
            self.conv_attn = nn.Conv2D(channels, 1, 1)
            self.pool = SoftmaxPool()
            if fuse == "scale":
                self.mlp_scale = ConvMlp()
            else:
                self.mlp_add = ConvMlp()
            self.gate = nn.Sigmoid()

        def forward(self, x):
            context = self.pool(x, self.conv_attn(x))
            if fuse == "scale":
                return x * self.gate(self.mlp_scale(context))
            if fuse == "add":
                return x + self.mlp_add(context)
            return x * self.gate(self.mlp_add(context))  # the add branch's MLP fused as a scale

    return GlobalContext()


def test_paddle_global_context_softmax_over_the_channel_axis():
    """GlobalContext's attention is a softmax over the H * W positions of the (B, 1, H * W) logits. Written with
    NCHW's channel axis, ``axis=1``, it normalises over an axis of length 1 and every weight is 1: the context becomes
    the sum over the map instead of a weighted mean. The same trap, a softmax over the wrong axis of a map with a
    length-1 axis, was SwiftFormer's issue 4 (a (B, H*W, 1) map) and A2S2K-ResNet's issue 4. The context is the first
    difference; at 1 x 1 the one weight is 1 on either axis, and that case passes."""
    backend("paddle")
    spec = GlobalContextConfig(24)  # rd 3, softmax pooling, scale fusion
    taps = {"context": "pool", "gate": "gate"}
    report = check(_paddle_global_context(24, spec.hidden, 1, "scale"), spec, taps=taps)
    assert _failing_cases(report) == ["n2-7x5", "n1-5x8"] and _stages(report) == {"context"}
    assert "compared as the tensor (2, 24, 1, 1)" in report.first_difference.comparison.detail
    assert check(_paddle_global_context(24, spec.hidden, -1, "scale"), spec, taps=taps).passed


def test_paddle_global_context_add_fused_as_a_scale():
    """timm's ``'gca'`` adds its MLP's output to the input (``fuse_add``), where ``'gc'`` gates the input with it; a
    port of ``'gca'`` built from a ``'gc'`` port keeps the gate. The weights fit (``mlp_add`` has ``mlp_scale``'s
    shapes) and the MLP's output, the added term, agrees with the reference: the diagnosis says every tap agrees and
    the output is where the difference is, which points at the fusion, not at the MLP."""
    backend("paddle")
    spec = GlobalContextAddConfig(24)
    taps = {"context": "pool", "add_term": "mlp_add"}
    report = check(_paddle_global_context(24, spec.hidden, -1, "add_as_scale"), spec, taps=taps)
    assert _failing_cases(report) == CASE_IDS and _stages(report) == {"output"}
    d = report.first_difference
    assert d.text.startswith("output (") and "every tap before it agrees (context, added term)" in d.text
    assert check(_paddle_global_context(24, spec.hidden, -1, "add"), spec, taps=taps).passed



# ------------------------------------------------------------------------------------------ Coordinate Attention
def test_timm_coord_weights_in_the_authors_coordatt():
    """timm's CoordAttn is not the authors' (houqb/CoordAttention ``coordatt.py``): the authors' 1x1 convolutions
    have biases, and their width is ``max(8, C // 32)`` where timm's is ``make_divisible(C / 16 * 2/3, 8)``
    (porting notes, section 5). Checking the authors' module against timm's form refuses before running: at C = 64,
    where the widths agree, the three biases are parameters no canonical one maps to (a lax load would have left
    them at their initial values); at C = 512 the widths differ too (timm 24, the authors 16). The authors' module
    passes against the authors' form, ``COORD_PRESETS['paper']``."""
    backend("torch")
    coord_att = _authors_coordatt()
    with pytest.raises(ParamMapError) as refused:
        check(coord_att(64, 64), CoordAttnConfig(64))
    assert refused.value.unexpected == ["conv1.bias", "conv_h.bias", "conv_w.bias"] and not refused.value.mismatched
    with pytest.raises(ParamMapError) as wide:
        check(coord_att(512, 512), CoordAttnConfig(512))
    assert ("conv1.weight", (24, 512, 1, 1), (16, 512, 1, 1)) in wide.value.mismatched
    assert check(coord_att(64, 64), CoordAttnConfig(64, **COORD_PRESETS["paper"])).passed


# ------------------------------------------------------------------------------------------ Selective Kernel
def test_selective_kernel_softmax_over_the_batch():
    """Selective Kernel's attention is a softmax over the paths. External-Attention-pytorch's SKAttention stacked
    the paths' weights on a new first axis, (paths, batch, C, 1, 1), and took the softmax over axis 1, the batch,
    until its issue 18. The same bug in a copy of timm's ``SelectiveKernelAttn`` (paths on axis 1) is a softmax over
    axis 0: the path softmax is the first difference, in every case (over a batch of one, every weight is 1). Checked
    in float64 (see FLOAT64)."""
    import torch

    layers = _timm_layers()

    def softmax_over_batch(self, x):
        x = x.sum(1).mean((2, 3), keepdim=True)
        x = self.fc_select(self.act(self.bn(self.fc_reduce(x))))
        b, c, h, w = x.shape
        return torch.softmax(x.view(b, self.num_paths, c // self.num_paths, h, w), dim=0)

    spec = SelectiveKernelConfig(16)
    wrong = layers.SelectiveKernel(16)
    wrong.attn.forward = types.MethodType(softmax_over_batch, wrong.attn)
    report = check(wrong, spec, taps={"path_attn": "attn"}, dtypes=FLOAT64)
    assert _failing_cases(report) == TRAIN_CASE_IDS and _stages(report) == {"path softmax"}
    assert check(layers.SelectiveKernel(16), spec, taps={"path_attn": "attn"}, dtypes=FLOAT64).passed


# ------------------------------------------------------------------------------------------ Split Attention
def test_split_attention_radix_softmax_without_the_transpose():
    """ResNeSt's ``rSoftMax`` (and timm's ``RadixSoftmax``) views the attention logits as (batch, cardinality,
    radix, -1) and transposes to put the radix first before the softmax over it. A port that views them as
    (batch, radix, cardinality, -1) directly, skipping the transpose, is right with one cardinal group (timm's
    default), where the two views are the same memory, and wrong with more: the softmax then runs over the groups.
    With ``groups=2`` the radix softmax is the first difference and the radix splits before it agree."""
    import torch.nn.functional as F

    layers = _timm_layers()

    def without_transpose(self, x):
        batch = x.size(0)
        if self.radix > 1:
            return F.softmax(x.view(batch, self.radix, self.cardinality, -1), dim=1).reshape(batch, -1)
        return x.sigmoid()

    def split_attn(**options: Any) -> Any:
        module = layers.SplitAttn(16, **options)
        module.rsoftmax.forward = types.MethodType(without_transpose, module.rsoftmax)
        return module

    taps = {"radix_splits": "act0", "radix_attn": "rsoftmax"}
    assert check(split_attn(), SplitAttnConfig(16), taps=taps).passed  # one cardinal group: the same values
    report = check(split_attn(groups=2), SplitAttnConfig(16, groups=2), taps=taps)
    assert _failing_cases(report) == CASE_IDS and _stages(report) == {"radix softmax"}
    assert "before it, the radix splits agrees" in report.first_difference.text
    assert check(layers.SplitAttn(16, groups=2), SplitAttnConfig(16, groups=2), taps=taps).passed


# ------------------------------------------------------------------------------------------------ Non-local
def _non_local(scale_of: Callable[[int, int], float]) -> Any:
    from torch import nn

    layers = _timm_layers()

    class NonLocalBlock(layers.NonLocalAttn):
        """timm's NonLocalAttn with the softmax as a submodule and the logits' scale given."""

        def __init__(self, channels: int) -> None:
            super().__init__(channels)
            self.scale = scale_of(channels, self.t.out_channels)
            self.softmax = nn.Softmax(dim=2)

        def forward(self, x):
            shortcut = x
            t, p, g = self.t(x), self.p(x), self.g(x)
            b, c, h, w = t.size()
            att = self.softmax(t.view(b, c, -1).permute(0, 2, 1).bmm(p.view(b, c, -1)) * self.scale)
            y = att.bmm(g.view(b, c, -1).permute(0, 2, 1)).permute(0, 2, 1).reshape(b, c, h, w)
            return self.norm(self.z(y)) + shortcut

    return NonLocalBlock(16)


def test_non_local_scaled_by_the_embedding_width():
    """timm's NonLocalAttn scales its logits by ``in_channels ** -0.5`` (``use_scale=True``). A port written with
    the transformer's habit, ``1 / sqrt(d_k)`` with d_k the embedding width rd, scales by ``rd ** -0.5`` (here 8
    against 16); one that drops the scale (the video non-local code's form) is timm's ``use_scale=False``. Both make
    the non-local attention the first difference wherever the map has more than one position; at 1 x 1 the softmax
    of one logit is 1 whatever the scale, and that case passes. Checked in float64 (see FLOAT64)."""
    backend("torch")
    spec = NonLocalAttnConfig(16)  # rd 8
    taps = {"nl_attention": "softmax"}
    failing = ["n2-7x5", "n1-5x8", "n3-6x5-train"]
    by_rd = check(_non_local(lambda c, rd: rd ** -0.5), spec, taps=taps, dtypes=FLOAT64)
    assert _failing_cases(by_rd) == failing and _stages(by_rd) == {"non-local attention"}
    unscaled = _non_local(lambda c, rd: 1.0)
    assert _failing_cases(check(unscaled, spec, taps=taps, dtypes=FLOAT64)) == failing
    assert check(unscaled, NonLocalAttnConfig(16, use_scale=False), taps=taps, dtypes=FLOAT64).passed
    assert check(_non_local(lambda c, rd: c ** -0.5), spec, taps=taps, dtypes=FLOAT64).passed


def test_bat_column_transform_normalised_over_its_rows():
    """BAT's bilinear transform multiplies each block of the map by P on the left and by Q on the right, so P's
    rows and Q's columns sum to 1 (timm's ``BilinearAttnTransform``, from the BA-Transform authors' code:
    ``p / p.sum(dim=3)``, ``q / q.sum(dim=2)``). A port that normalises Q with P's line, over its rows, has every
    shape right: the bilinear transform is the first difference, in every case (the cases' sizes are multiples of
    the block, 2 here, and a 2 x 2 Q already differs)."""
    import torch.nn.functional as F

    layers = _timm_layers()

    def rows_normalised(self, x):
        b, c, h, w = x.shape
        k, g = self.block_size, self.groups
        out = self.conv1(x)
        p = self.conv_p(F.adaptive_max_pool2d(out, (k, 1))).view(b, g, k, k).sigmoid()
        q = self.conv_q(F.adaptive_max_pool2d(out, (1, k))).view(b, g, k, k).sigmoid()
        p = p / p.sum(dim=3, keepdim=True)
        q = q / q.sum(dim=3, keepdim=True)  # P's normalisation, copied: Q's rows sum to 1 instead of its columns

        def per_channel(m):  # each group's matrix for its C / G channels
            return m[:, :, None].expand(b, g, c // g, k, k).reshape(b, c, k, k)

        p, q = self.resize_mat(per_channel(p), h // k), self.resize_mat(per_channel(q), w // k)
        return self.conv2(p.matmul(x).matmul(q))

    spec = BatNonLocalAttnConfig(16, block_size=2, drop_rate=0.0)
    taps = {"bat_transform": "ba", "bat_branch": "conv2"}
    wrong = layers.BatNonLocalAttn(16, block_size=2, drop_rate=0.0)
    wrong.ba.forward = types.MethodType(rows_normalised, wrong.ba)
    report = check(wrong, spec, taps=taps)
    assert len(report.failed) == len(report.rows) == 4 and _stages(report) == {"bilinear transform"}
    assert check(layers.BatNonLocalAttn(16, block_size=2, drop_rate=0.0), spec, taps=taps).passed
