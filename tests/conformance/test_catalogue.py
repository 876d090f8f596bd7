"""A catalogue of porting bugs, each written the way users write their ports: outside the library, in the test.

Every entry is a deliberately wrong port of one attention module (or of the code that loads its weights), checked
with ``conformance.check`` against the float64 reference of an ``attn_core`` spec. Each test asserts that the check
FAILS for the right reason (the quantity, tap or refusal the report names) and that the corrected port PASSES.
Each docstring cites where the bug comes from: a row of the porting notes (``shared/reference/porting-notes.md``,
section 1 table rows by number, section 2 by module) or an upstream issue. The README's "Checking your own port"
section lists them in a table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from attn_core import (
    CBAM_PRESETS,
    CBAMConfig,
    ConfigError,
    ECAConfig,
    SEConfig,
    SimAMConfig,
    SpatialAttentionConfig,
    WeightLoadError,
)
from conformance import check
from conformance.runners import ParamMapError

from .._fw import backend

ARTICLE_CBAM = CBAMConfig(32, **CBAM_PRESETS["article"])  # the seed article: hidden 32 // 16 = 2, mean first, no BN
SEED_CBAM_MAP = {"channel.fc1.weight": "ca.fc1.weight", "channel.fc2.weight": "ca.fc2.weight",
                 "spatial.conv.weight": "sa.conv1.weight"}
SEED_CBAM_TAPS = {"channel_gate": "ca", "spatial_gate": "sa"}  # the seed's submodules return the maps themselves
CASE_IDS = ["n2-7x5", "n1-5x8", "n2-1x1"]


def _failing_cases(report: Any) -> list[str]:
    return [r.case for r in report.rows if r.failed]


def _stages(report: Any) -> set[str]:
    return {d.stage for d in report.diagnoses}


# ------------------------------------------------------------------------------------------ seed CBAM
def _seed_cbam(ca_forward: Callable[..., Any] | None = None, sa_forward: Callable[..., Any] | None = None) -> Any:
    """The seed article's CBAM (benchmarks/peers/seed_torch.py: ChannelAttention with 1x1 convolutions,
    SpatialAttention with conv1), with optionally one forward replaced the way a copy-paste goes wrong."""
    import types

    from benchmarks.peers.seed_torch import CBAM

    cbam = CBAM(32, 16, 7)
    if ca_forward is not None:
        cbam.ca.forward = types.MethodType(ca_forward, cbam.ca)
    if sa_forward is not None:
        cbam.sa.forward = types.MethodType(sa_forward, cbam.sa)
    return cbam


def test_cbam_avg_plus_avg():
    """``sigmoid(avg + avg)``: a copy-paste bug seen in public CBAM copies (porting notes, section 2, CBAM:
    "Copy-paste bugs seen in public copies"). The channel map is the first difference; at 1 x 1 the mean and the
    max of a map are the same value, so that case cannot see it: the non-trivial spatial sizes do."""
    backend("torch")

    def avg_avg(self, x):
        avg_out = self.fc2(self.relu1(self.fc1(self.avg_pool(x))))
        max_out = self.fc2(self.relu1(self.fc1(self.avg_pool(x))))  # max_pool -> avg_pool
        out = avg_out + max_out
        return self.sigmoid(out)

    report = check(_seed_cbam(ca_forward=avg_avg), ARTICLE_CBAM, param_map=SEED_CBAM_MAP, taps=SEED_CBAM_TAPS)
    assert not report.passed and _failing_cases(report) == ["n2-7x5", "n1-5x8"]
    assert _stages(report) == {"channel map"}
    d = report.first_difference
    assert d.quantity == "tap:channel_gate" and "compared as the map (2, 32, 1, 1)" in d.comparison.detail
    assert {"output", "grad:input", "grad:channel.fc1.weight"} <= report.failing_quantities("n2-7x5")
    assert check(_seed_cbam(), ARTICLE_CBAM, param_map=SEED_CBAM_MAP, taps=SEED_CBAM_TAPS).passed


def test_cbam_spatial_sigmoid_missing():
    """The spatial map returned without its sigmoid: another copy-paste bug of public CBAM copies (porting notes,
    section 2, CBAM). The channel map agrees; the spatial map is the first difference."""
    backend("torch")
    import torch

    def no_sigmoid(self, x):
        avg_out = torch.mean(x, dim=1, keepdim=True)
        max_out, _ = torch.max(x, dim=1, keepdim=True)
        x = torch.cat([avg_out, max_out], dim=1)
        return self.conv1(x)

    report = check(_seed_cbam(sa_forward=no_sigmoid), ARTICLE_CBAM, param_map=SEED_CBAM_MAP, taps=SEED_CBAM_TAPS)
    assert _failing_cases(report) == CASE_IDS and _stages(report) == {"spatial map"}
    d = report.first_difference
    assert [c.passed for c in d.taps] == [True, False] and "before it, the channel map agrees" in d.text
    assert "grad:spatial.conv.weight" in report.failing_quantities("n2-7x5")


def test_cbam_spatial_concat_order_swapped():
    """``cat([max, mean])`` where the spec says ``cat([mean, max])``: the seed articles and timm put the mean map
    first, the authors' code (Jongchan/attention-module) the max map (porting notes, section 2, CBAM). Input channel
    0 of the 7x7 convolution then multiplies the other map: the spatial map differs. The same port is right
    against the authors' order, ``spatial_order='max_mean'``: the spec decides, and says so."""
    backend("torch")
    import torch

    def max_first(self, x):
        avg_out = torch.mean(x, dim=1, keepdim=True)
        max_out, _ = torch.max(x, dim=1, keepdim=True)
        x = torch.cat([max_out, avg_out], dim=1)
        x = self.conv1(x)
        return self.sigmoid(x)

    swapped = _seed_cbam(sa_forward=max_first)
    report = check(swapped, ARTICLE_CBAM, param_map=SEED_CBAM_MAP, taps=SEED_CBAM_TAPS)
    assert _failing_cases(report) == CASE_IDS and _stages(report) == {"spatial map"}
    assert report.first_difference.taps[0].passed  # the channel map agrees
    assert check(swapped, ARTICLE_CBAM.replace(spatial_order="max_mean"), param_map=SEED_CBAM_MAP).passed
    assert check(_seed_cbam(), ARTICLE_CBAM, param_map=SEED_CBAM_MAP).passed


# ------------------------------------------------------------------------------------------------- SE
def _paddle_se(channels: int, reduction: int) -> Any:
    from paddle import nn

    class SELayer(nn.Layer):
        """The seed SE in Paddle: ``paddle.nn.Linear`` holds its weight as [in, out]."""

        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Sequential(nn.Linear(channels, channels // reduction, bias_attr=False), nn.ReLU(),
                                    nn.Linear(channels // reduction, channels, bias_attr=False), nn.Sigmoid())

        def forward(self, x):
            b, c = x.shape[0], x.shape[1]
            y = self.fc(x.mean(axis=[2, 3]))
            return x * y.reshape([b, c, 1, 1])

    return SELayer()


def test_paddle_linear_weight_not_transposed():
    """A torch ``[out, in]`` weight loaded into ``paddle.nn.Linear`` (``[in, out]``) without ``.T`` (porting notes,
    section 1, row 1: "test with non-square shapes so a missing transpose fails on shape").

    With a non-square hidden layer (48 -> 3) the shapes refuse, loudly, before anything runs. With a square one
    (reduction 1: 16 -> 16, as in a full-width excitation) every shape fits and only the numbers are wrong: the
    silent case, which the check still catches, at the gate."""
    backend("paddle")
    untransposed = {"fc1.weight": ("fc.0.weight", "conv1x1_to_linear"),     # (O, I, 1, 1) -> (O, I): torch's
                    "fc2.weight": ("fc.2.weight", "conv1x1_to_linear")}
    transposed = {"fc1.weight": ("fc.0.weight", "conv1x1_to_linear_t"),     # (O, I, 1, 1) -> (I, O): Paddle's
                  "fc2.weight": ("fc.2.weight", "conv1x1_to_linear_t")}
    with pytest.raises(ParamMapError) as loud:
        check(_paddle_se(48, 16), SEConfig(48, rd_divisor=None, bias=False), param_map=untransposed)
    assert loud.value.mismatched == [("fc1.weight", (3, 48), (48, 3)), ("fc2.weight", (48, 3), (3, 48))]

    square = SEConfig(16, rd_channels=16, rd_divisor=None, bias=False)
    report = check(_paddle_se(16, 1), square, param_map=untransposed, taps={"gate": "fc"})
    assert _failing_cases(report) == CASE_IDS and _stages(report) == {"gate"}
    assert {"output", "grad:fc1.weight", "grad:fc2.weight"} <= report.failing_quantities("n2-7x5")
    assert "reshaped from (2, 16)" in report.first_difference.comparison.detail  # the Sequential returns (N, C)
    assert check(_paddle_se(16, 1), square, param_map=transposed, taps={"gate": "fc"}).passed
    assert check(_paddle_se(48, 16), SEConfig(48, rd_divisor=None, bias=False), param_map=transposed).passed


def _torch_se(channel: int, reduction: int, bias: bool) -> Any:
    from torch import nn

    class SELayer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.avg_pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Sequential(nn.Linear(channel, channel // reduction, bias=bias), nn.ReLU(inplace=True),
                                    nn.Linear(channel // reduction, channel, bias=bias), nn.Sigmoid())

        def forward(self, x):
            b, c, _, _ = x.size()
            y = self.avg_pool(x).view(b, c)
            y = self.fc(y).view(b, c, 1, 1)
            return x * y.expand_as(x)

    return SELayer()


def test_se_without_bias_given_a_checkpoint_with_bias():
    """The seed articles' SE has no biases (``Linear(C, C // r, bias=False)``); timm's SEModule, the paper's Caffe
    model and PaddleClas' SE_ResNet_vd have them (porting notes, section 2, SE). A checkpoint of the latter loaded
    into the former must be refused, naming the keys it cannot take; loading it with ``strict=False`` drops the
    biases without a word and the port computes something else."""
    bt = backend("torch")
    import torch

    spec = SEConfig(64)  # timm: hidden 8, biases
    ckpt = spec.init_weights(np.random.default_rng(0))
    with pytest.raises(WeightLoadError) as refused:  # the project's strict loader
        bt.load_weights(bt.SEModule(64, bias=False), ckpt)
    assert refused.value.unexpected == ["fc1.bias", "fc2.bias"] and "unexpected: fc1.bias, fc2.bias" in str(
        refused.value)

    port = _torch_se(64, 8, bias=False)
    state = {"fc.0.weight": ckpt["fc1.weight"][:, :, 0, 0], "fc.0.bias": ckpt["fc1.bias"],
             "fc.2.weight": ckpt["fc2.weight"][:, :, 0, 0], "fc.2.bias": ckpt["fc2.bias"]}
    state = {k: torch.tensor(v, dtype=torch.float32) for k, v in state.items()}
    with pytest.raises(RuntimeError, match=r'Unexpected key\(s\) in state_dict: "fc.0.bias", "fc.2.bias"'):
        port.load_state_dict(state)
    assert port.load_state_dict(state, strict=False).unexpected_keys == ["fc.0.bias", "fc.2.bias"]
    x = np.random.default_rng(1).standard_normal((2, 64, 5, 3))
    y = port(torch.tensor(x, dtype=torch.float32)).detach().double().numpy()
    assert np.abs(y - spec.reference(ckpt, x)).max() > 1e-2  # silently not the checkpoint's model

    linear = {"fc1.weight": ("fc.0.weight", "conv1x1_to_linear"), "fc2.weight": ("fc.2.weight", "conv1x1_to_linear")}
    with pytest.raises(ParamMapError) as exc:  # the check refuses too, before running
        check(port, spec, param_map=linear)
    assert exc.value.missing == ["fc1.bias", "fc2.bias"]
    fixed = _torch_se(64, 8, bias=True)
    assert check(fixed, spec, param_map={**linear, "fc1.bias": "fc.0.bias", "fc2.bias": "fc.2.bias"}).passed


def test_hard_coded_pooling_window():
    """``F.avg_pool2d(x, 7)`` in place of ``AdaptiveAvgPool2d(1)``, written to export to ONNX (pytorch issue 5310;
    porting notes, section 1, row 9): right on the 7 x 7 maps of a ResNet's last stage, an error on any other size.
    The non-square cases of the check run it on 7 x 5, 5 x 8 and 1 x 1; ``x.mean((2, 3))`` exports and is right."""
    backend("torch")
    import torch.nn.functional as F
    from torch import nn

    class SE(nn.Module):
        def __init__(self, channel: int, reduction: int = 16, window: int | None = 7) -> None:
            super().__init__()
            self.window = window
            self.fc = nn.Sequential(nn.Linear(channel, channel // reduction, bias=False), nn.ReLU(inplace=True),
                                    nn.Linear(channel // reduction, channel, bias=False), nn.Sigmoid())

        def forward(self, x):
            b, c = x.shape[:2]
            y = F.avg_pool2d(x, self.window) if self.window else x.mean((2, 3), keepdim=True)
            return x * self.fc(y.view(b, c)).view(b, c, 1, 1)

    spec = SEConfig(32, rd_divisor=None, bias=False)
    linear = {"fc1.weight": ("fc.0.weight", "conv1x1_to_linear"), "fc2.weight": ("fc.2.weight", "conv1x1_to_linear")}
    report = check(SE(32), spec, param_map=linear)
    assert [r.status for r in report.rows] == ["error"] * 3 and _stages(report) == {"error"}
    assert "Output size is too small" in report.first_difference.text
    assert check(SE(32, window=None), spec, param_map=linear).passed


# ------------------------------------------------------------------------------------------------ ECA
def _eca_layer(k_size: int, padding: int, crop: bool = False) -> Any:
    """ECANet's ``eca_layer`` (BangguWu/ECANet, models/eca_module.py), with the padding given and, optionally,
    the extra output channels of an even kernel cropped away."""
    from torch import nn

    class eca_layer(nn.Module):  # noqa: N801 - the upstream name
        def __init__(self, channel, k_size=3):
            super(eca_layer, self).__init__()  # noqa: UP008 - as published
            self.avg_pool = nn.AdaptiveAvgPool2d(1)
            self.conv = nn.Conv1d(1, 1, kernel_size=k_size, padding=padding, bias=False)
            self.sigmoid = nn.Sigmoid()

        def forward(self, x):
            y = self.avg_pool(x)
            y = self.conv(y.squeeze(-1).transpose(-1, -2))
            if crop:
                y = y[..., :x.shape[1]]
            y = y.transpose(-1, -2).unsqueeze(-1)
            y = self.sigmoid(y)
            return x * y.expand_as(x)

    return eca_layer(16, k_size)


#: a canonical (1, 1, 3) kernel in a (1, 1, 4) Conv1d with a zero tap last / first (exact inverses)
ZERO_LAST = (lambda w: np.concatenate([w, np.zeros_like(w[..., :1])], -1), lambda w: w[..., :-1])
ZERO_FIRST = (lambda w: np.concatenate([np.zeros_like(w[..., :1]), w], -1), lambda w: w[..., 1:])


def test_eca_even_kernel():
    """An even ECA kernel (ECANet issues 12, 24 and 46: users report even k breaking shapes; porting notes,
    section 2, ECA). ``padding=(k - 1) // 2`` with k = 4 gives C - 1 channels, and the module raises; the usual
    repair, padding ``k // 2`` and cropping the extra channel, runs but centres every output channel half a tap
    off: against the k = 3 spec whose kernel is the port's first three taps, each gate is shifted by one channel.
    The spec itself refuses an even kernel (``ConfigError``)."""
    backend("torch")
    with pytest.raises(ConfigError, match="even kernel cannot pad symmetrically and shifts the channels"):
        ECAConfig(16, kernel_size=4)
    spec = ECAConfig(16, kernel_size=3)
    raising = check(_eca_layer(4, (4 - 1) // 2), spec, param_map={"conv.weight": ("conv.weight", ZERO_LAST)})
    assert [r.status for r in raising.rows] == ["error"] * 3
    assert "The expanded size of the tensor (16) must match the existing size (15)" in raising.rows[0].message

    cropped = _eca_layer(4, 4 // 2, crop=True)
    report = check(cropped, spec, param_map={"conv.weight": ("conv.weight", ZERO_LAST)}, taps={"gate": "sigmoid"})
    assert _failing_cases(report) == CASE_IDS and _stages(report) == {"gate"}
    assert check(_eca_layer(3, 1), spec, taps={"gate": "sigmoid"}).passed


# ---------------------------------------------------------------------------------------------- SimAM
def _simam(n_of: Callable[[int, int], int]) -> Any:
    """The SimAM authors' ``simam_module`` (ZjjConan/SimAM), with the denominator count given."""
    import torch
    from torch import nn

    class simam_module(torch.nn.Module):  # noqa: N801 - the upstream name
        def __init__(self, channels=None, e_lambda=1e-4):
            super(simam_module, self).__init__()  # noqa: UP008 - as published
            self.activaton = nn.Sigmoid()
            self.e_lambda = e_lambda

        def forward(self, x):
            b, c, h, w = x.size()
            n = n_of(h, w)
            x_minus_mu_square = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
            y = x_minus_mu_square / (4 * (x_minus_mu_square.sum(dim=[2, 3], keepdim=True) / n + self.e_lambda)) + 0.5
            return x * self.activaton(y)

    return simam_module()


def test_simam_n_equals_hw():
    """``n = H * W`` where the paper's energy has ``n = H * W - 1`` (porting notes, section 2, SimAM). The gate is
    the first difference. The upstream code's ``n = w * h - 1`` is right everywhere but at 1 x 1, where it divides 0
    by 0 (NaN in every public copy): the check's 1 x 1 case fails on non-finite values, and the spec's limit
    (``max(H * W - 1, 1)``, gate sigmoid(0.5)) passes."""
    backend("torch")
    spec = SimAMConfig()
    report = check(_simam(lambda h, w: w * h), spec, taps={"gate": "activaton"})
    assert _failing_cases(report) == ["n2-7x5", "n1-5x8"] and _stages(report) == {"gate"}  # at 1x1 d = 0 anyway
    upstream = check(_simam(lambda h, w: w * h - 1), spec, taps={"gate": "activaton"})
    assert _failing_cases(upstream) == ["n2-1x1"]
    assert upstream.first_difference.comparison.nonfinite > 0
    assert check(_simam(lambda h, w: max(w * h - 1, 1)), spec, taps={"gate": "activaton"}).passed


@pytest.mark.slow  # torch.compile rows
def test_simam_compile_only_branch():
    """A port whose compiled path is not its eager path: a "compile-friendly" branch under
    ``torch.compiler.is_compiling()`` that takes the variance with ``unbiased=False`` (n = H * W). torchvision's
    memory-efficient DenseNet once silently stopped doing what its plain mode did (pytorch/vision issue 2221; porting
    notes, section 2, SE-DenseNet); the fix was a test that both modes give identical outputs and gradients, which is
    what ``modes=('eager', 'compiled')`` runs: each mode is its own row, the eager rows pass and the compiled ones
    fail."""
    backend("torch")
    import torch
    from torch import nn

    class SimAM(nn.Module):
        def __init__(self, e_lambda: float = 1e-4) -> None:
            super().__init__()
            self.activaton = nn.Sigmoid()
            self.e_lambda = e_lambda

        def forward(self, x):
            h, w = x.shape[2], x.shape[3]
            d = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
            if torch.compiler.is_compiling():
                v = x.var(dim=[2, 3], keepdim=True, unbiased=False)
            else:
                v = d.sum(dim=[2, 3], keepdim=True) / max(h * w - 1, 1)
            return x * self.activaton(d / (4 * (v + self.e_lambda)) + 0.5)

    report = check(SimAM(), SimAMConfig(), modes=("eager", "compiled"))
    assert [(r.mode, r.status) for r in report.rows if r.case == "n2-7x5"] == [("eager", "pass"),
                                                                              ("torch.compile", "fail")]
    assert {d.mode for d in report.diagnoses} == {"torch.compile"} and _stages(report) == {"output"}


def _flax_simam(variance: Callable[..., Any], axes: tuple[int, int] = (1, 2)) -> Any:
    import flax.linen as fnn

    class SimAM(fnn.Module):
        e_lambda: float = 1e-4

        @fnn.compact
        def __call__(self, x):  # NHWC
            d = (x - x.mean(axis=axes, keepdims=True)) ** 2
            v = variance(x, d, axes)
            return x * fnn.sigmoid(d / (4 * (v + self.e_lambda)) + 0.5)

    return SimAM()


@pytest.mark.slow  # a further Flax entry: its check jit-compiles the port for every case
def test_simam_variance_through_jnp_var_default():
    """``jnp.var`` as SimAM's ``sum(d) / n`` term: its default ``ddof=0`` divides by ``H * W``, not ``H * W - 1``
    (porting notes, section 1, row 14: ``torch.var`` and ``paddle.var`` are unbiased by default, ``jnp.var`` is
    not). ``ddof=1`` is right, except at 1 x 1, where it is 0 / 0 and the spec's limit needs ``ddof=0``."""
    backend("flax")
    import jax.numpy as jnp

    spec = SimAMConfig()
    report = check(_flax_simam(lambda x, d, ax: jnp.var(x, axis=ax, keepdims=True)), spec)
    assert _failing_cases(report) == ["n2-7x5", "n1-5x8"] and _stages(report) == {"output"}
    unbiased = check(_flax_simam(lambda x, d, ax: jnp.var(x, axis=ax, keepdims=True, ddof=1)), spec)
    assert _failing_cases(unbiased) == ["n2-1x1"]  # 0 / 0
    fixed = _flax_simam(lambda x, d, ax: jnp.var(x, axis=ax, keepdims=True,
                                                 ddof=1 if x.shape[ax[0]] * x.shape[ax[1]] > 1 else 0))
    assert check(fixed, spec).passed


def test_flax_pooling_over_nchw_axes():
    """A Flax port written with PyTorch's axes: SimAM's statistics over ``axis=(2, 3)`` of an NHWC input, i.e.
    over W and C instead of H and W (porting notes, section 1, rows 2 and 13: Flax is NHWC). SimAM has no
    parameters, so no shape refuses anything: only the numbers show it."""
    backend("flax")
    spec = SimAMConfig()

    def sum_over_n(x, d, ax):
        n = x.shape[ax[0]] * x.shape[ax[1]] - 1
        return d.sum(axis=ax, keepdims=True) / max(n, 1)

    report = check(_flax_simam(sum_over_n, axes=(2, 3)), spec)
    assert _failing_cases(report) == CASE_IDS and "output" in report.failing_quantities("n2-7x5")
    assert check(_flax_simam(sum_over_n, axes=(1, 2)), spec).passed


# ---------------------------------------------------------------------------------------------- kernels
def _flax_spatial(padding: Any = ((3, 3), (3, 3))) -> Any:
    import flax.linen as fnn
    import jax.numpy as jnp

    class SpatialAttention(fnn.Module):
        @fnn.compact
        def __call__(self, x):  # NHWC
            pooled = jnp.concatenate([x.mean(-1, keepdims=True), x.max(-1, keepdims=True)], -1)
            return x * fnn.sigmoid(fnn.Conv(1, (7, 7), padding=padding, use_bias=False, name="conv")(pooled))

    return SpatialAttention()


def test_flax_oihw_kernel_loaded_as_hwio():
    """A torch OIHW kernel put into a Flax HWIO kernel as is (porting notes, section 1, row 2: torch -> Flax is
    ``transpose(2, 3, 1, 0)``). Two ways users do it, both of which fit the shape (7, 7, 2, 1): ``reshape`` (the
    numbers scrambled) and ``.T`` (``transpose(3, 2, 1, 0)``: H and W swapped, which only a non-square
    kernel or input can show; at 1 x 1 only the centre tap counts, and it passes there)."""
    backend("flax")
    spec = SpatialAttentionConfig(kernel_size=7)
    reshaped = (lambda w: w.reshape(7, 7, 2, 1), lambda w: w.reshape(1, 2, 7, 7))
    report = check(_flax_spatial(), spec, param_map={"conv.weight": ("params/conv/kernel", reshaped)})
    assert _failing_cases(report) == CASE_IDS
    assert {"output", "grad:conv.weight"} <= report.failing_quantities("n2-7x5")
    dot_t = (lambda w: w.T, lambda w: w.T)
    report = check(_flax_spatial(), spec, param_map={"conv.weight": ("params/conv/kernel", dot_t)})
    assert _failing_cases(report) == ["n2-7x5", "n1-5x8"]
    assert check(_flax_spatial(), spec, param_map={"conv.weight": ("params/conv/kernel", "oihw_to_hwio")}).passed


def _flax_eca(k: int) -> Any:
    import flax.linen as fnn

    class ECA(fnn.Module):
        @fnn.compact
        def __call__(self, x):  # NHWC; the channels are the length axis of a 1-D convolution
            y = x.mean(axis=(1, 2))[:, :, None]                                        # (N, C, 1)
            z = fnn.Conv(1, (k,), padding="SAME", use_bias=False, name="conv")(y)       # (N, C, 1)
            return x * fnn.sigmoid(z[:, None, None, :, 0])

    return ECA()


@pytest.mark.slow  # a further Flax entry: its check jit-compiles the port for every case
def test_flax_same_padding():
    """Flax's ``padding='SAME'`` against torch's symmetric padding (porting notes, section 1, row 10: "default
    'SAME', extra padding on bottom/right").

    In these modules it CANNOT be wrong: every kernel is odd (the specs refuse even ones) and every stride 1, and
    'SAME' then pads (k - 1) / 2 on both sides, exactly torch's ``k // 2``: the first check shows a Flax spatial
    attention with Flax's default 'SAME' passing.

    The pitfall shows with an even kernel, which no spec here allows, so it is constructed: a k = 4 ECA in Flax
    with 'SAME' (pads 1 before, 2 after) and ECANet's torch layer with k = 4, padding 2 and the extra channel
    cropped (2 before, in effect). Each is checked against the k = 3 spec with the spec's kernel in three of its
    four taps, the zero tap last or first: 'SAME' matches zero-last and fails zero-first, torch's symmetric padding
    the opposite. The same four weights give gates one channel apart in the two frameworks."""
    backend("flax")
    backend("torch")
    assert check(_flax_spatial(padding="SAME"), SpatialAttentionConfig(kernel_size=7)).passed

    spec = ECAConfig(16, kernel_size=3)

    def kio(pair):  # canonical (1, 1, 3) -> (1, 1, 4) -> Flax (K, I, O) = (4, 1, 1)
        to_n, from_n = pair
        return lambda w: np.transpose(to_n(w), (2, 1, 0)), lambda w: from_n(np.transpose(w, (2, 1, 0)))

    flax_last = check(_flax_eca(4), spec, param_map={"conv.weight": ("params/conv/kernel", kio(ZERO_LAST))})
    flax_first = check(_flax_eca(4), spec, param_map={"conv.weight": ("params/conv/kernel", kio(ZERO_FIRST))})
    torch_last = check(_eca_layer(4, 2, crop=True), spec, param_map={"conv.weight": ("conv.weight", ZERO_LAST)})
    torch_first = check(_eca_layer(4, 2, crop=True), spec, param_map={"conv.weight": ("conv.weight", ZERO_FIRST)})
    assert (flax_last.passed, flax_first.passed, torch_last.passed, torch_first.passed) == (True, False, False, True)
    assert _failing_cases(flax_first) == CASE_IDS and "output" in flax_first.failing_quantities("n2-7x5")


# ---------------------------------------------------------------------------------------------- BatchNorm
BN_SPEC = SpatialAttentionConfig(kernel_size=7, norm=True)  # timm / the authors: BatchNorm after the 7x7 conv


def _paddle_spatial(make_bn: Callable[[], Any]) -> Any:
    import paddle
    import paddle.nn.functional as F
    from paddle import nn

    class SpatialAttention(nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2D(2, 1, 7, padding=3, bias_attr=False)
            self.bn = make_bn()

        def forward(self, x):
            pooled = paddle.concat([x.mean(axis=1, keepdim=True), x.max(axis=1, keepdim=True)], axis=1)
            return x * F.sigmoid(self.bn(self.conv(pooled)))

    return SpatialAttention()


def test_paddle_batchnorm_momentum_not_converted():
    """``paddle.nn.BatchNorm2D(momentum=0.1)``: torch's value passed unconverted. Paddle's momentum is the weight
    of the running value (torch's 0.1 is Paddle's 0.9; porting notes, section 1, row 4). The output and every
    gradient are right, eval and training alike; only the running statistics after a training step show it.

    With the momentum converted, Paddle's own layer still stores the *biased* batch variance in ``_variance``
    where torch (and the spec) store the unbiased one (porting notes, row 5): only ``state:bn.running_var``
    differs then. The project's ``backends.paddle`` BatchNorm2D stores torch's and passes."""
    backend("paddle")
    from paddle import nn

    from backends.paddle._norm import BatchNorm2D

    report = check(_paddle_spatial(lambda: nn.BatchNorm2D(1, momentum=0.1, epsilon=1e-5)), BN_SPEC)
    assert _failing_cases(report) == ["n3-6x5-train"] and _stages(report) == {"running statistics"}
    assert {"state:bn.running_mean", "state:bn.running_var"} == report.failing_quantities()
    assert report.first_difference.forward_equal and "running statistics differ" in report.first_difference.text
    converted = check(_paddle_spatial(lambda: nn.BatchNorm2D(1, momentum=0.9, epsilon=1e-5)), BN_SPEC)
    assert converted.failing_quantities() == {"state:bn.running_var"}
    assert check(_paddle_spatial(lambda: BatchNorm2D(1, momentum=0.9, epsilon=1e-5)), BN_SPEC).passed


def _flax_spatial_bn(make_bn: Callable[[bool], Any]) -> Any:
    import flax.linen as fnn
    import jax.numpy as jnp

    class SpatialAttention(fnn.Module):
        @fnn.compact
        def __call__(self, x, train: bool = False):  # NHWC
            pooled = jnp.concatenate([x.mean(-1, keepdims=True), x.max(-1, keepdims=True)], -1)
            z = fnn.Conv(1, (7, 7), padding=3, use_bias=False, name="conv")(pooled)
            return x * fnn.sigmoid(make_bn(train)(z))

    return SpatialAttention()


@pytest.mark.slow  # a further Flax entry: its check jit-compiles the port for every case
def test_flax_batchnorm_default_momentum():
    """``flax.linen.BatchNorm`` left at its default ``momentum=0.99`` (porting notes, section 1, row 4: "never rely
    on Flax's 0.99 default"; torch's 0.1 is Flax's 0.9). As in Paddle, outputs and gradients are right and only
    the running statistics after a training step differ; with 0.9, Flax's layer still stores the biased variance
    (row 5), and the project's ``backends.flax`` BatchNorm, which stores torch's, passes."""
    backend("flax")
    import flax.linen as fnn

    from backends.flax._norm import BatchNorm

    default = _flax_spatial_bn(lambda train: fnn.BatchNorm(use_running_average=not train, epsilon=1e-5,
                                                           use_fast_variance=False, name="bn"))
    report = check(default, BN_SPEC)
    assert _failing_cases(report) == ["n3-6x5-train"] and _stages(report) == {"running statistics"}
    assert {"state:bn.running_mean", "state:bn.running_var"} == report.failing_quantities()
    converted = _flax_spatial_bn(lambda train: fnn.BatchNorm(use_running_average=not train, momentum=0.9,
                                                             epsilon=1e-5, use_fast_variance=False, name="bn"))
    assert check(converted, BN_SPEC).failing_quantities() == {"state:bn.running_var"}
    fixed = _flax_spatial_bn(lambda train: BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                                                     name="bn"))
    assert check(fixed, BN_SPEC).passed
