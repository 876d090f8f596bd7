"""timm's coordinate attention family (coord, scoord, ela, strip): the float64 reference by hand and by finite
differences, equality with timm's own modules in torch, Paddle and Flax, the authors' CoordAtt as the 'paper'
preset, and every hyperparameter the configs refuse."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from attn_core import (
    COORD_PRESETS,
    ConfigError,
    CoordAttnConfig,
    EfficientLocalAttnConfig,
    SimpleCoordAttnConfig,
    StripAttnConfig,
    create_config,
)
from attn_core.autodiff import Node

from .._fw import FRAMEWORKS, backend, runner
from .._gradcheck import assert_reference_vjp
from .._timm import canonical, import_timm, randomise, timm_attn, timm_kwargs, torch_step

RTOL = 1e-10


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


def _silu(v: np.ndarray) -> np.ndarray:
    return v * _sigmoid(v)


def _hard_swish(v: np.ndarray) -> np.ndarray:
    return v * np.clip(v + 3.0, 0.0, 6.0) / 6.0


def _conv_strip(s: np.ndarray, w: np.ndarray) -> np.ndarray:
    """A depthwise 1-D convolution of rows ``s`` (C, L) with kernels ``w`` (C, k), zero padded by k // 2."""
    c, length = s.shape
    k = w.shape[1]
    padded = np.pad(s, ((0, 0), (k // 2, k // 2)))
    return np.array([[sum(w[ch, t] * padded[ch, i + t] for t in range(k)) for i in range(length)]
                     for ch in range(c)])


# ------------------------------------------------------------------------------------------ by hand
def test_coord_by_hand():
    """CoordAttn on one (4, 2, 3) sample with rd = 2, eval BatchNorm, written as matrix products."""
    cfg = CoordAttnConfig(4, rd_channels=2)
    rng = np.random.default_rng(1)
    w = cfg.init_weights(rng)
    x = rng.standard_normal((1, 4, 2, 3))
    s = np.concatenate([x[0].mean(axis=2), x[0].mean(axis=1)], axis=1)  # (C, H + W): H rows, then W columns
    y = w["conv1.weight"][:, :, 0, 0] @ s
    y = (y - w["bn1.running_mean"][:, None]) / np.sqrt(w["bn1.running_var"][:, None] + 1e-5) \
        * w["bn1.weight"][:, None] + w["bn1.bias"][:, None]
    y = _hard_swish(y)
    a_h = _sigmoid(w["conv_h.weight"][:, :, 0, 0] @ y[:, :2])  # (C, H)
    a_w = _sigmoid(w["conv_w.weight"][:, :, 0, 0] @ y[:, 2:])  # (C, W)
    want = x[0] * a_h[:, :, None] * a_w[:, None, :]
    np.testing.assert_allclose(cfg.reference(w, x)[0], want, rtol=1e-13)
    taps: dict[str, Node] = {}
    cfg.reference_forward(Node(x), {k: Node(v) for k, v in w.items()}, taps=taps)
    np.testing.assert_allclose(taps["gate_h"].value[0, :, :, 0], a_h, rtol=1e-13)
    np.testing.assert_allclose(taps["gate_w"].value[0, :, 0, :], a_w, rtol=1e-13)


def test_coord_training_batch_norm_by_hand():
    """In training the BatchNorm normalises each of rd channels over the N * (H + W) strip values together."""
    cfg = CoordAttnConfig(3, rd_channels=2, bias=True, has_skip=True)
    rng = np.random.default_rng(2)
    w = cfg.init_weights(rng)
    x = rng.standard_normal((2, 3, 3, 2))
    s = np.concatenate([x.mean(axis=3), x.mean(axis=2)], axis=2)  # (N, C, H + W)
    y = np.einsum("rc,ncl->nrl", w["conv1.weight"][:, :, 0, 0], s) + w["conv1.bias"][None, :, None]
    mu, var = y.mean(axis=(0, 2), keepdims=True), y.var(axis=(0, 2), keepdims=True)
    y = _hard_swish((y - mu) / np.sqrt(var + 1e-5) * w["bn1.weight"][None, :, None] + w["bn1.bias"][None, :, None])
    a_h = _sigmoid(np.einsum("cr,nrl->ncl", w["conv_h.weight"][:, :, 0, 0], y[:, :, :3]) + w["conv_h.bias"][:, None])
    a_w = _sigmoid(np.einsum("cr,nrl->ncl", w["conv_w.weight"][:, :, 0, 0], y[:, :, 3:]) + w["conv_w.bias"][:, None])
    want = x * a_h[:, :, :, None] * a_w[:, :, None, :] + x
    np.testing.assert_allclose(cfg.reference(w, x, training=True), want, rtol=1e-13)
    state = cfg.reference_state(w, x)
    count = 2 * (3 + 2)
    np.testing.assert_allclose(state["bn1.running_mean"], 0.9 * w["bn1.running_mean"] + 0.1 * mu.ravel(), rtol=1e-13)
    np.testing.assert_allclose(state["bn1.running_var"],
                               0.9 * w["bn1.running_var"] + 0.1 * var.ravel() * count / (count - 1), rtol=1e-13)


def test_simple_coord_by_hand():
    """SimpleCoordAttn: one shared fc1 on the H and the W strips, two heads, one gate of their broadcast sum."""
    cfg = SimpleCoordAttnConfig(3, rd_channels=2)
    rng = np.random.default_rng(3)
    w = cfg.init_weights(rng)
    x = rng.standard_normal((1, 3, 4, 2))
    s_h, s_w = x[0].mean(axis=2), x[0].mean(axis=1)  # (C, H), (C, W)

    def head(strip: np.ndarray, name: str) -> np.ndarray:
        r = _silu(w["fc1.weight"] @ strip + w["fc1.bias"][:, None])
        return w[f"{name}.weight"] @ r + w[f"{name}.bias"][:, None]

    g = _sigmoid(head(s_h, "fc_h")[:, :, None] + head(s_w, "fc_w")[:, None, :])
    np.testing.assert_allclose(cfg.reference(w, x)[0], x[0] * g, rtol=1e-13)


def test_efficient_local_by_hand():
    """EfficientLocalAttn: depthwise strip convolutions, then timm's GroupNorm1, which normalises each sample's whole
    strip (all C channels and all H positions at once, not each channel on its own), SiLU, sigmoid."""
    cfg = EfficientLocalAttnConfig(4, kernel_size=3)
    rng = np.random.default_rng(4)
    w = cfg.init_weights(rng)
    x = rng.standard_normal((1, 4, 3, 2))

    def gate(strip: np.ndarray, axis: str, kernel: np.ndarray, per_channel: bool = False) -> np.ndarray:
        z = _conv_strip(strip, kernel)
        axes = 1 if per_channel else None
        mu, var = z.mean(axis=axes, keepdims=True), z.var(axis=axes, keepdims=True)
        z = (z - mu) / np.sqrt(var + 1e-5) * w[f"norm_{axis}.weight"][:, None] + w[f"norm_{axis}.bias"][:, None]
        return _sigmoid(_silu(z))

    k_h, k_w = w["conv_h.weight"][:, 0, :, 0], w["conv_w.weight"][:, 0, 0, :]
    a_h, a_w = gate(x[0].mean(axis=2), "h", k_h), gate(x[0].mean(axis=1), "w", k_w)
    got = cfg.reference(w, x)[0]
    np.testing.assert_allclose(got, x[0] * a_h[:, :, None] * a_w[:, None, :], rtol=1e-13)
    # statistics per channel (a GroupNorm with C groups) would be another module
    per_channel = x[0] * gate(x[0].mean(axis=2), "h", k_h, True)[:, :, None] * gate(x[0].mean(axis=1), "w", k_w,
                                                                                    True)[:, None, :]
    assert np.abs(got - per_channel).max() > 1e-2


def test_strip_by_hand():
    cfg = StripAttnConfig(2, kernel_size=3, bias=True)
    rng = np.random.default_rng(5)
    w = cfg.init_weights(rng)
    x = rng.standard_normal((1, 2, 3, 4))
    c_h = _conv_strip(x[0].mean(axis=2), w["conv_h.weight"][:, 0, :, 0]) + w["conv_h.bias"][:, None]
    c_w = _conv_strip(x[0].mean(axis=1), w["conv_w.weight"][:, 0, 0, :]) + w["conv_w.bias"][:, None]
    np.testing.assert_allclose(cfg.reference(w, x)[0], x[0] * _sigmoid(c_h[:, :, None] + c_w[:, None, :]), rtol=1e-13)
    plain = StripAttnConfig(2, use_conv=False, has_skip=True)
    assert plain.param_table() == ()
    want = x[0] * _sigmoid(x[0].mean(axis=2)[:, :, None] + x[0].mean(axis=1)[:, None, :]) + x[0]
    np.testing.assert_allclose(plain.reference({}, x)[0], want, rtol=1e-13)


# ---------------------------------------------------------------------------------- widths and presets
@pytest.mark.parametrize("channels,timm_rd,paper_rd", [(16, 8, 8), (64, 8, 8), (256, 8, 8), (320, 16, 10),
                                                       (512, 24, 16), (1024, 40, 32)])
def test_widths_timm_and_paper(channels, timm_rd, paper_rd):
    """timm: make_divisible(C / 16 * 2/3, 8), at least 8; the authors: max(8, C // 32)."""
    assert CoordAttnConfig(channels).hidden == timm_rd
    assert CoordAttnConfig(channels, **COORD_PRESETS["paper"]).hidden == paper_rd == max(8, channels // 32)
    assert CoordAttnConfig(channels, **COORD_PRESETS["timm"]) == CoordAttnConfig(channels)


def test_hidden_width_rules():
    assert SimpleCoordAttnConfig(128).hidden == 24  # 128 / 4 * 2/3 = 21.3, rounded to the nearest multiple of 8
    assert SimpleCoordAttnConfig(64).hidden == 8  # 10.7 rounds down to 8
    assert SimpleCoordAttnConfig(8).hidden == 8  # 1.3: at least the divisor
    assert CoordAttnConfig(96, rd_min=16).hidden == 16  # make_divisible(4, 8, min_value=16)
    assert CoordAttnConfig(96, rd_divisor=None, se_factor=1.0, rd_ratio=1 / 12).hidden == 8  # exactly floor(96 / 12)
    assert CoordAttnConfig(96, rd_channels=5).hidden == 5


# ------------------------------------------------------------------------------------ VJPs by finite differences
VJP_CASES = [
    ("coord-eval", CoordAttnConfig(4, rd_channels=2, bias=True), (2, 4, 3, 2), False),
    ("coord-train-skip", CoordAttnConfig(3, rd_channels=2, has_skip=True, act_layer="silu"), (2, 3, 2, 3), True),
    ("scoord", SimpleCoordAttnConfig(3, rd_channels=2), (2, 3, 3, 2), False),
    ("ela", EfficientLocalAttnConfig(4, kernel_size=3, bias=True), (2, 4, 3, 2), False),
    ("ela-g2-hswish", EfficientLocalAttnConfig(4, kernel_size=5, norm_groups=2, act_layer="hard_swish"),
     (1, 4, 2, 3), False),
    ("strip", StripAttnConfig(3, bias=True), (2, 3, 2, 3), False),
]


@pytest.mark.parametrize("name,cfg,shape,training", VJP_CASES, ids=[c[0] for c in VJP_CASES])
def test_reference_vjp_matches_finite_differences(name, cfg, shape, training):
    rng = np.random.default_rng(sum(map(ord, name)))
    weights = cfg.init_weights(rng)
    x = rng.standard_normal(shape)
    assert_reference_vjp(name, cfg, weights, x, rng.standard_normal(shape), training)


# ----------------------------------------------------------------------------------------- equal to timm
# (registry key, timm's create_attn keyword arguments, the project's for the same module), channels
TIMM_CASES = [
    ("coord", {}, {}, 64),
    ("coord", {"bias": True, "has_skip": True, "gate_layer": "hard_sigmoid", "act_layer": "silu"},
     {"bias": True, "has_skip": True, "gate_layer": "hard_sigmoid", "act_layer": "silu"}, 40),
    ("coord", {"rd_channels": 5, "norm_layer": None}, {"rd_channels": 5, "norm_layer": None}, 12),
    ("scoord", {}, {}, 24),
    ("scoord", {"bias": False, "rd_ratio": 0.5, "has_skip": True}, {"bias": False, "rd_ratio": 0.5, "has_skip": True},
     16),
    ("ela", {}, {}, 16),
    ("ela", {"kernel_size": 3, "bias": True, "gate_layer": "hard_sigmoid"},
     {"kernel_size": 3, "bias": True, "gate_layer": "hard_sigmoid"}, 8),
    ("ela", {"norm_layer": None, "has_skip": True}, {"norm_layer": None, "has_skip": True}, 6),
    ("strip", {}, {}, 8),
    ("strip", {"kernel_size": 5, "bias": True, "has_skip": True}, {"kernel_size": 5, "bias": True, "has_skip": True},
     6),
    ("strip", {"use_conv": False}, {"use_conv": False}, 4),
]
TIMM_IDS = [f"{key}-{i}" for i, (key, *_rest) in enumerate(TIMM_CASES)]


def _first_of_each_key_fast() -> list[Any]:
    """The cases, the first of each key in the fast tier and the others slow: in Paddle and Flax each case builds
    and compiles programs of its own."""
    seen: set[str] = set()
    params = []
    for case, case_id in zip(TIMM_CASES, TIMM_IDS, strict=True):
        params.append(pytest.param(case, id=case_id, marks=[pytest.mark.slow] if case[0] in seen else []))
        seen.add(case[0])
    return params


@pytest.mark.parametrize("case", TIMM_CASES, ids=TIMM_IDS)
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_torch_module_equals_timm(case, training):
    """timm's state_dict loads strictly into the project's module of the same key, and both compute the same output,
    input gradient and running statistics in float64."""
    import copy

    key, timm_kw, our_kw, channels = case
    theirs = timm_attn(key, channels, len(key) + channels, **timm_kwargs(timm_kw))
    ours = backend("torch").create_attn(key, channels, **our_kw).double()
    ours.load_state_dict(copy.deepcopy(theirs.state_dict()), strict=True)
    assert list(canonical(ours)) == [p.name for p in ours.config.param_table()]
    rng = np.random.default_rng(channels)
    x = rng.standard_normal((2, channels, 5, 3)) + rng.uniform(-1, 1, (1, channels, 1, 1))
    cot = rng.standard_normal(x.shape)
    (y_t, dx_t, _, state_t), (y_o, dx_o, _, state_o) = (torch_step(m, x, cot, training) for m in (theirs, ours))
    np.testing.assert_allclose(y_o, y_t, rtol=RTOL, atol=1e-14)
    # torch's Hardsigmoid, which timm's 'hard_sigmoid' gate is, multiplies its gradient by a float32 1/6 even in
    # float64 (backends/torch/_ops.py): an error of 3e-8 of the gradient's scale, which the project's gate has not
    hsig = our_kw.get("gate_layer") == "hard_sigmoid"
    np.testing.assert_allclose(dx_o, dx_t, rtol=0 if hsig else RTOL, atol=1e-7 * np.abs(dx_t).max() if hsig else 1e-14)
    for name, value in state_t.items():
        np.testing.assert_allclose(state_o[name], value, rtol=RTOL, atol=1e-14, err_msg=name)


@pytest.mark.parametrize("fw", [f for f in FRAMEWORKS if f != "torch"])
@pytest.mark.parametrize("case", _first_of_each_key_fast())
def test_other_backends_equal_timm(fw, case):
    """Paddle and Flax, given timm's weights as canonical weights, compute timm's output in eval and in training
    (float64), and the running statistics timm's BatchNorm keeps."""
    key, timm_kw, our_kw, channels = case
    run = runner(fw)
    theirs = timm_attn(key, channels, len(key) + channels, **timm_kwargs(timm_kw))
    weights = canonical(theirs)
    config = create_config(key, channels, **our_kw)
    rng = np.random.default_rng(channels)
    x = rng.standard_normal((2, channels, 5, 3)) + rng.uniform(-1, 1, (1, channels, 1, 1))
    for training in (False, True):  # the eval step leaves timm's statistics as they were for the training one
        y_t, _, _, state_t = torch_step(theirs, x, None, training)
        got = run.run(key, config, weights, x, None, dtype="float64", training=training, mode=run.default_mode)
        np.testing.assert_allclose(got.y, y_t, rtol=RTOL, atol=1e-14, err_msg=f"{fw} training={training}")
    for name in (p.name for p in config.param_table() if not p.trainable):
        np.testing.assert_allclose(got.state[name], state_t[name], rtol=RTOL, atol=1e-14, err_msg=name)


def test_batch_one_1x1_trains_as_in_timm():
    """One 1 x 1 map in training: timm's BatchNorm sees its two strip values (N * (H + W) = 2), so it runs; the
    project's CoordAttn accepts it too and computes the same (its strips are equal: the output is the BatchNorm
    bias through the gates)."""
    import copy

    import torch

    theirs = timm_attn("coord", 16, 7)
    ours = backend("torch").create_attn("coord", 16).double()
    ours.load_state_dict(copy.deepcopy(theirs.state_dict()))
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 16, 1, 1)))
    theirs.train()
    ours.train()
    np.testing.assert_allclose(ours(x).detach().numpy(), theirs(x).detach().numpy(), rtol=RTOL)


def test_even_kernel_breaks_timm_and_is_refused_here():
    """timm builds an EfficientLocalAttn with an even kernel and fails on the first input (its padded strip is one
    longer than the map); the config refuses it when constructed."""
    timm = import_timm()
    import torch

    module = timm.layers.create_attn("ela", 8, kernel_size=4)
    with pytest.raises(RuntimeError):
        module(torch.zeros(1, 8, 5, 5))
    with pytest.raises(ConfigError, match="EfficientLocalAttn: kernel_size must be a positive odd integer"):
        EfficientLocalAttnConfig(8, kernel_size=4)


# ------------------------------------------------------------------------------------ the authors' CoordAtt
# The authors' code, re-typed as published: github.com/houqb/CoordAttention, coordatt.py (Hou, Zhou, Feng,
# "Coordinate Attention for Efficient Mobile Network Design", CVPR 2021). Peer code, kept as written.
def _authors_coordatt() -> Any:
    import torch
    import torch.nn as nn

    class h_sigmoid(nn.Module):
        def __init__(self, inplace=True):
            super(h_sigmoid, self).__init__()  # noqa: UP008 - as published
            self.relu = nn.ReLU6(inplace=inplace)

        def forward(self, x):
            return self.relu(x + 3) / 6

    class h_swish(nn.Module):
        def __init__(self, inplace=True):
            super(h_swish, self).__init__()  # noqa: UP008 - as published
            self.sigmoid = h_sigmoid(inplace=inplace)

        def forward(self, x):
            return x * self.sigmoid(x)

    class CoordAtt(nn.Module):
        def __init__(self, inp, oup, reduction=32):
            super(CoordAtt, self).__init__()  # noqa: UP008 - as published
            self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
            self.pool_w = nn.AdaptiveAvgPool2d((1, None))

            mip = max(8, inp // reduction)

            self.conv1 = nn.Conv2d(inp, mip, kernel_size=1, stride=1, padding=0)
            self.bn1 = nn.BatchNorm2d(mip)
            self.act = h_swish()

            self.conv_h = nn.Conv2d(mip, oup, kernel_size=1, stride=1, padding=0)
            self.conv_w = nn.Conv2d(mip, oup, kernel_size=1, stride=1, padding=0)

        def forward(self, x):
            identity = x

            n, c, h, w = x.size()
            x_h = self.pool_h(x)
            x_w = self.pool_w(x).permute(0, 1, 3, 2)

            y = torch.cat([x_h, x_w], dim=2)
            y = self.conv1(y)
            y = self.bn1(y)
            y = self.act(y)

            x_h, x_w = torch.split(y, [h, w], dim=2)
            x_w = x_w.permute(0, 1, 3, 2)

            a_h = self.conv_h(x_h).sigmoid()
            a_w = self.conv_w(x_w).sigmoid()

            out = identity * a_w * a_h

            return out

    return CoordAtt


@pytest.mark.parametrize("channels", [40, 320])
def test_paper_preset_equals_the_authors_coordatt(channels):
    """``COORD_PRESETS['paper']`` is the authors' CoordAtt: their state_dict loads strictly (mip = max(8, C // 32):
    8 and 10, conv biases) and the outputs agree in eval and training, with the running statistics."""
    import copy

    import torch

    bt = backend("torch")
    authors = _authors_coordatt()(channels, channels).double()
    randomise(authors, channels)
    ours = bt.CoordAttn(channels, **COORD_PRESETS["paper"]).double()
    ours.load_state_dict(copy.deepcopy(authors.state_dict()), strict=True)
    assert ours.config.hidden == max(8, channels // 32)
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((2, channels, 6, 5)))
    for training in (False, True):
        authors.train(training)
        ours.train(training)
        np.testing.assert_allclose(ours(x).detach().numpy(), authors(x).detach().numpy(), rtol=RTOL, atol=1e-14)
    np.testing.assert_allclose(ours.bn1.running_var.numpy(), authors.bn1.running_var.numpy(), rtol=RTOL)
    # and the float64 reference of the preset gives the same
    ref = CoordAttnConfig(channels, **COORD_PRESETS["paper"]).reference(canonical(authors), x.numpy())
    authors.eval()
    np.testing.assert_allclose(ref, authors(x).detach().numpy(), rtol=RTOL, atol=1e-14)


def test_timm_weights_do_not_fit_the_paper_form():
    """The two forms are not interchangeable. At C = 512 their widths differ (timm 24, the authors 16): timm's weights
    do not load. At C = 64 both have width 8, but the authors' convolutions have biases that timm's weights lack: a
    strict load refuses them, and a lax one leaves the paper form's own biases in place and computes something else.
    Only with those biases at zero would the two agree, which shows the forms differ in width and biases alone."""
    import torch

    bt = backend("torch")
    wide = timm_attn("coord", 512, 3)
    with pytest.raises(RuntimeError, match=r"size mismatch for conv1.weight"):
        bt.CoordAttn(512, **COORD_PRESETS["paper"]).double().load_state_dict(wide.state_dict())

    theirs = timm_attn("coord", 64, 4).eval()
    paper = bt.CoordAttn(64, **COORD_PRESETS["paper"]).double().eval()
    randomise(paper, 5)
    with pytest.raises(RuntimeError, match=r"Missing key\(s\) in state_dict: \"conv1.bias\""):
        paper.load_state_dict(theirs.state_dict())
    result = paper.load_state_dict(theirs.state_dict(), strict=False)
    assert sorted(result.missing_keys) == ["conv1.bias", "conv_h.bias", "conv_w.bias"]
    x = torch.from_numpy(np.random.default_rng(2).standard_normal((2, 64, 5, 3)))
    y_timm, y_paper = theirs(x).detach().numpy(), paper(x).detach().numpy()
    assert np.abs(y_paper - y_timm).max() > 1e-2 * np.abs(y_timm).max()
    with torch.no_grad():
        for name in result.missing_keys:
            paper.get_parameter(name).zero_()
    np.testing.assert_allclose(paper(x).detach().numpy(), y_timm, rtol=RTOL, atol=1e-14)


# The ELA paper's PyTorch code as its public copies have it (Xu and Wan, "ELA: Efficient Local Attention for Deep
# Convolutional Neural Networks", arXiv:2403.01123; the authors published no repository), re-typed. Peer code.
def _published_ela() -> Any:
    import torch
    import torch.nn as nn

    class ELA(nn.Module):
        def __init__(self, channel, kernel_size=7):
            super(ELA, self).__init__()  # noqa: UP008 - as published
            self.pad = kernel_size // 2
            self.conv = nn.Conv1d(channel, channel, kernel_size=kernel_size, padding=self.pad, groups=channel,
                                  bias=False)
            self.gn = nn.GroupNorm(16, channel)
            self.sigmoid = nn.Sigmoid()

        def forward(self, x):
            b, c, h, w = x.size()
            x_h = torch.mean(x, dim=3, keepdim=True).view(b, c, h)
            x_w = torch.mean(x, dim=2, keepdim=True).view(b, c, w)
            x_h = self.sigmoid(self.gn(self.conv(x_h))).view(b, c, h, 1)
            x_w = self.sigmoid(self.gn(self.conv(x_w))).view(b, c, 1, w)
            return x * x_h * x_w

    return ELA


def test_published_ela_is_the_groups16_form_with_shared_weights():
    """The published ELA (one convolution and one GroupNorm(16, C) for both directions, no activation) is
    ``EfficientLocalAttn(norm_groups=16, act_layer=None)`` with its weights in both directions; timm's defaults
    (GroupNorm1 and SiLU) on the same weights compute something else."""
    import torch

    bt = backend("torch")
    published = _published_ela()(32, 7).double().eval()
    randomise(published, 6)
    sd = published.state_dict()
    weights = {"conv_h.weight": sd["conv.weight"][:, :, :, None], "conv_w.weight": sd["conv.weight"][:, :, None, :]}
    for branch in ("h", "w"):
        weights |= {f"norm_{branch}.weight": sd["gn.weight"], f"norm_{branch}.bias": sd["gn.bias"]}
    x = torch.from_numpy(np.random.default_rng(3).standard_normal((2, 32, 6, 5)))
    want = published(x).detach().numpy()
    paper_form = bt.EfficientLocalAttn(32, norm_groups=16, act_layer=None).double()
    paper_form.load_state_dict(weights, strict=True)
    np.testing.assert_allclose(paper_form(x).detach().numpy(), want, rtol=RTOL, atol=1e-14)
    timm_form = bt.EfficientLocalAttn(32).double()
    timm_form.load_state_dict(weights, strict=True)
    assert np.abs(timm_form(x).detach().numpy() - want).max() > 1e-2 * np.abs(want).max()


@pytest.mark.slow
def test_paddle_coord_under_to_static_with_dynamic_sizes():
    """A static program built for any N, H and W splits the strips at each input's own height (the height is -1
    while the program is built)."""
    import paddle
    from paddle.static import InputSpec

    module = backend("paddle").CoordAttn(16)
    module.eval()
    program = paddle.jit.to_static(module, input_spec=[InputSpec([None, 16, None, None], "float32")],
                                   full_graph=True)
    rng = np.random.default_rng(8)
    for shape in ((2, 16, 5, 3), (1, 16, 4, 7)):
        x = paddle.to_tensor(rng.standard_normal(shape).astype("float32"))
        np.testing.assert_allclose(program(x).numpy(), module(x).numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_flax_half_rows_normalise_in_float32(dtype):
    """A half input is computed in float32, the module's half BatchNorm statistics cast on use (attn_core.precision):
    the half row of coord/c64-timm missed its tolerance (conv1's gradient 1.3x) while Flax's BatchNorm took the
    rsqrt of its float16 variance in float16."""
    from conformance import CASES, run_case

    case = next(c for c in CASES if c.name == "coord/c64-timm")
    row = run_case(case, runner("flax"), dtype)
    assert row.status == "pass", row.message


# --------------------------------------------------------------------------------------------- refusals
CONFIG_ERRORS = [
    (lambda: CoordAttnConfig(0), "CoordAttn: channels must be a positive integer, got 0"),
    (lambda: CoordAttnConfig(16, rd_channels=0), "CoordAttn: rd_channels must be a positive integer, got 0"),
    (lambda: CoordAttnConfig(16, rd_ratio=0.0), "CoordAttn: rd_ratio must be a positive finite number, got 0.0"),
    (lambda: CoordAttnConfig(16, se_factor=-1.0), "CoordAttn: se_factor must be a positive finite number"),
    (lambda: CoordAttnConfig(16, rd_divisor=0), "CoordAttn: rd_divisor must be a positive integer, got 0"),
    (lambda: CoordAttnConfig(16, rd_min=0), "CoordAttn: rd_min must be a positive integer, got 0"),
    (lambda: CoordAttnConfig(16, rd_divisor=None), r"CoordAttn: hidden width is 0: channels=16 .* floor\(16 \* 1/24\)"),
    (lambda: CoordAttnConfig(16, bias=2), "CoordAttn: bias must be one of True, False; got 2"),
    (lambda: CoordAttnConfig(16, act_layer="gelu"), "CoordAttn: act_layer must be one of 'relu', 'silu', 'hard_swish'"),
    (lambda: CoordAttnConfig(16, norm_layer="groupnorm"), "CoordAttn: norm_layer must be one of 'batchnorm', None"),
    (lambda: CoordAttnConfig(16, gate_layer="tanh"), "CoordAttn: gate_layer must be one of 'sigmoid', 'hard_sigmoid'"),
    (lambda: CoordAttnConfig(16, has_skip="yes"), "CoordAttn: has_skip must be one of True, False"),
    (lambda: CoordAttnConfig(16, bn_eps=0.0), "CoordAttn: bn_eps must be a positive finite number"),
    (lambda: CoordAttnConfig(16, bn_momentum=1.5), r"CoordAttn: bn_momentum \(torch convention"),
    (lambda: SimpleCoordAttnConfig(-2), "SimpleCoordAttn: channels must be a positive integer, got -2"),
    (lambda: SimpleCoordAttnConfig(16, rd_channels=-1), "SimpleCoordAttn: rd_channels must be a positive integer"),
    (lambda: SimpleCoordAttnConfig(2, rd_divisor=None), "SimpleCoordAttn: hidden width is 0"),
    (lambda: SimpleCoordAttnConfig(16, act_layer=None), "SimpleCoordAttn: act_layer must be one of"),
    (lambda: SimpleCoordAttnConfig(16, gate_layer="relu"), "SimpleCoordAttn: gate_layer must be one of"),
    (lambda: SimpleCoordAttnConfig(16, bias=None), "SimpleCoordAttn: bias must be one of True, False"),
    (lambda: SimpleCoordAttnConfig(16, has_skip="no"), "SimpleCoordAttn: has_skip must be one of True, False"),
    (lambda: EfficientLocalAttnConfig(0), "EfficientLocalAttn: channels must be a positive integer"),
    (lambda: EfficientLocalAttnConfig(8, kernel_size=6), "EfficientLocalAttn: kernel_size must be a positive odd"),
    (lambda: EfficientLocalAttnConfig(8, kernel_size=0), "EfficientLocalAttn: kernel_size must be a positive odd"),
    (lambda: EfficientLocalAttnConfig(12, norm_groups=5), "EfficientLocalAttn: norm_groups 5 does not divide"),
    (lambda: EfficientLocalAttnConfig(12, norm_groups=0), "EfficientLocalAttn: norm_groups must be a positive integer"),
    (lambda: EfficientLocalAttnConfig(12, norm_eps=-1e-5), "EfficientLocalAttn: norm_eps must be a positive finite"),
    (lambda: EfficientLocalAttnConfig(12, norm_layer="batchnorm"), "EfficientLocalAttn: norm_layer must be one of"),
    (lambda: EfficientLocalAttnConfig(12, act_layer="gelu"), "EfficientLocalAttn: act_layer must be one of"),
    (lambda: EfficientLocalAttnConfig(12, gate_layer="silu"), "EfficientLocalAttn: gate_layer must be one of"),
    (lambda: EfficientLocalAttnConfig(12, bias="no"), "EfficientLocalAttn: bias must be one of True, False"),
    (lambda: EfficientLocalAttnConfig(12, has_skip=2), "EfficientLocalAttn: has_skip must be one of True, False"),
    (lambda: StripAttnConfig(0), "StripAttn: channels must be a positive integer"),
    (lambda: StripAttnConfig(8, kernel_size=2), "StripAttn: kernel_size must be a positive odd integer"),
    (lambda: StripAttnConfig(8, use_conv="yes"), "StripAttn: use_conv must be one of True, False"),
    (lambda: StripAttnConfig(8, bias=None), "StripAttn: bias must be one of True, False"),
    (lambda: StripAttnConfig(8, gate_layer="hard_swish"), "StripAttn: gate_layer must be one of"),
    (lambda: StripAttnConfig(8, has_skip=None), "StripAttn: has_skip must be one of True, False"),
]


@pytest.mark.parametrize("build,message", CONFIG_ERRORS, ids=[m.split(":")[0] + str(i)
                                                              for i, (_, m) in enumerate(CONFIG_ERRORS)])
def test_config_errors(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_even_kernel_accepted_without_the_convolutions():
    """timm ignores kernel_size when use_conv is False, and so does the config."""
    assert StripAttnConfig(8, use_conv=False, kernel_size=2).param_table() == ()


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_backends_refuse_at_construction(fw):
    b = backend(fw)
    with pytest.raises(ConfigError, match="EfficientLocalAttn: norm_groups 3 does not divide channels 8"):
        b.EfficientLocalAttn(8, norm_groups=3)
    with pytest.raises(ConfigError, match="CoordAttn: norm_layer must be one of"):
        b.create_attn("coord", 16, norm_layer="layernorm")
