"""PSA (Liu et al., 2021): the float64 reference by hand and by finite differences; the authors' PSA_p and PSA_s
(DeLightCMU/PSA, transcribed as published) as the peers of the 'parallel' and 'sequential' presets in torch, Paddle
and Flax; External-Attention-pytorch's copy of the paper's two forms as the peer of the 'paper_*' presets (with its
biases); the forms held apart by the check at the stage where they differ; two axis bugs of copies caught; and every
error the config raises."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

from attn_core import PSA_PRESETS, ConfigError, PSAConfig
from attn_core.autodiff import Node
from benchmarks.peers.published_torch import psa as _authors_psa

from .._fw import FRAMEWORKS, backend, runner
from .._gradcheck import assert_reference_vjp
from .._timm import canonical, randomise, torch_step

RTOL = 1e-10


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


def _softmax(v: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(v - v.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _ln(v: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """LayerNorm of (N, K) over K, eps 1e-5."""
    mu = v.mean(axis=1, keepdims=True)
    return (v - mu) / np.sqrt(((v - mu) ** 2).mean(axis=1, keepdims=True) + 1e-5) * weight + bias


def _by_hand(w: dict[str, np.ndarray], x: np.ndarray, form: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """PSA written out with einsum over (N, C, P = H*W): the output and the (N, C) channel logits."""
    n, c, h, wd = x.shape
    xf = x.reshape(n, c, h * wd)

    def conv(name: str, v: np.ndarray) -> np.ndarray:  # a 1x1 convolution of (N, C_in, P)
        out = np.einsum("oc,ncp->nop", w[f"{name}.weight"][:, :, 0, 0], v)
        return out + w[f"{name}.bias"][None, :, None] if f"{name}.bias" in w else out

    weights = _softmax(conv("conv_q_right", xf)[:, 0], 1)  # (N, P)
    ctx = np.einsum("nip,np->ni", conv("conv_v_right", xf), weights)[:, :, None]  # (N, Ci, 1)
    if form["channel_up"] == "linear":
        z = conv("conv_up", ctx)[:, :, 0]
        if form["channel_norm"]:
            z = _ln(z, w["ln.weight"], w["ln.bias"])
    else:
        hid = _ln(conv("conv_up.0", ctx)[:, :, 0], w["conv_up.1.weight"][:, 0, 0], w["conv_up.1.bias"][:, 0, 0])
        z = conv("conv_up.3", np.maximum(hid, 0.0)[:, :, None])[:, :, 0]
    x_ch = xf * _sigmoid(z)[:, :, None]
    s = xf if form["mode"] == "parallel" else x_ch
    q, v = conv("conv_q_left", s).mean(axis=2), conv("conv_v_left", s)  # (N, Ci), (N, Ci, P)
    if form["spatial_softmax"] == "query":
        logits = np.einsum("ni,nip->np", _softmax(q, 1), v)
    elif form["spatial_softmax"] == "context":
        logits = _softmax(np.einsum("ni,nip->np", q, v), 1)
    else:
        logits = np.einsum("ni,nip->np", q, _softmax(v, 2))
    gated = s * _sigmoid(logits)[:, None, :]
    out = x_ch + gated if form["mode"] == "parallel" else gated
    return out.reshape(n, c, h, wd), z


# ------------------------------------------------------------------------------------------ by hand
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("preset", list(PSA_PRESETS))
def test_by_hand(preset, bias):
    cfg = PSAConfig(8, **PSA_PRESETS[preset], bias=bias)
    rng = np.random.default_rng(7)
    w = cfg.init_weights(rng)
    x = rng.standard_normal((2, 8, 2, 3)) * 1.5 + 0.5
    want, z = _by_hand(w, x, dict(PSA_PRESETS[preset]))
    np.testing.assert_allclose(cfg.reference(w, x), want, rtol=1e-12)
    taps: dict[str, Node] = {}
    cfg.reference_forward(Node(x), {k: Node(v) for k, v in w.items()}, False, taps)
    np.testing.assert_allclose(taps["psa_channel_logits"].value[:, :, 0, 0], z, rtol=1e-12)
    np.testing.assert_allclose(taps["psa_channel_weights"].value.sum(axis=2), 1.0, rtol=1e-13)


def test_widths_and_the_default():
    """Ci = C // 2 (odd C floors, as the authors' code), Cr = Ci // ratio; the default is the authors' PSA_p, whose
    Cityscapes checkpoint (HRNetV2-OCR+PSA(p)) is the one users load."""
    assert (PSAConfig(9).inter_channels, PSAConfig(16, ratio=4).up_channels) == (4, 2)
    assert set(PSA_PRESETS) == {"parallel", "sequential", "paper_parallel", "paper_sequential"}
    assert PSAConfig(8) == PSAConfig(8, **PSA_PRESETS["parallel"])
    assert len({PSAConfig(8, **form) for form in PSA_PRESETS.values()}) == 4
    with pytest.raises(TypeError):
        PSA_PRESETS["parallel"]["mode"] = "sequential"  # type: ignore[index] - read-only


def test_one_position_makes_the_hw_softmaxes_one():
    """On a 1x1 map PSA_p's spatial logits are softmax over one position: 1, a gate of sigmoid(1)."""
    cfg = PSAConfig(6)
    w = cfg.init_weights(np.random.default_rng(1))
    taps: dict[str, Node] = {}
    cfg.reference_forward(Node(np.random.default_rng(2).standard_normal((2, 6, 1, 1))),
                          {k: Node(v) for k, v in w.items()}, False, taps)
    np.testing.assert_allclose(taps["psa_spatial_logits"].value, 1.0, rtol=1e-15)


# ------------------------------------------------------------------------------------ VJPs by finite differences
VJP_CASES = [(name, PSAConfig(8, **form, bias=name.startswith("paper")), (2, 8, 2, 3))
             for name, form in PSA_PRESETS.items()] + [("c5-b1", PSAConfig(5), (1, 5, 3, 1))]


@pytest.mark.parametrize("name,cfg,shape", VJP_CASES, ids=[c[0] for c in VJP_CASES])
def test_reference_vjp_matches_finite_differences(name, cfg, shape):
    rng = np.random.default_rng(sum(map(ord, name)))
    weights = cfg.init_weights(rng)
    x = rng.standard_normal(shape)
    assert_reference_vjp(name, cfg, weights, x, rng.standard_normal(shape), False)


# ------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("kwargs,message", [
    (dict(channels=0), "PSA: channels must be a positive integer, got 0"),
    (dict(channels=1), r"PSA: channels must be at least 2 \(the branches are C // 2 wide\), got 1"),
    (dict(channels=8, mode="both"), "PSA: mode must be one of 'parallel', 'sequential'; got 'both'"),
    (dict(channels=8, channel_up="mlp"), "PSA: channel_up must be one of 'linear', 'bottleneck'; got 'mlp'"),
    (dict(channels=8, channel_norm="yes"), "PSA: channel_norm must be one of True, False; got 'yes'"),
    (dict(channels=8, spatial_softmax="hw"), "PSA: spatial_softmax must be one of 'query', 'context', 'value'; got"),
    (dict(channels=8, ratio=0), "PSA: ratio must be a positive integer, got 0"),
    (dict(channels=8, ln_eps=0.0), "PSA: ln_eps must be a positive finite number, got 0.0"),
    (dict(channels=8, bias=1.5), "PSA: bias must be one of True, False; got 1.5"),
    (dict(channels=6, channel_up="bottleneck"), r"PSA: the bottleneck's width C // 2 // ratio must be positive, got "
                                                r"6 // 2 // 4 = 0"),
    (dict(channels=16, channel_up="bottleneck", channel_norm=True), "PSA: channel_norm .* belongs to channel_up="),
])
def test_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        PSAConfig(**kwargs)


# ------------------------------------------------------------------------------------ the authors' PSA_p, PSA_s
# (benchmarks/peers/published_torch.py, imported above: the one transcription, the benchmarks' torch peer too)


def _authors_module(preset: str, channels: int, seed: int) -> Any:
    psa_p, psa_s = _authors_psa()
    module = (psa_p if preset == "parallel" else psa_s)(channels, channels).double()
    randomise(module, seed)
    return module


@pytest.mark.parametrize("preset,channels,shape", [("parallel", 16, (2, 16, 7, 5)), ("parallel", 9, (3, 9, 1, 4)),
                                                   ("sequential", 16, (2, 16, 5, 6)),
                                                   ("sequential", 24, (1, 24, 3, 3))])
def test_presets_equal_the_authors_code(preset, channels, shape):
    """The authors' state_dict loads strictly into ``PSA(C, **PSA_PRESETS[preset])``; outputs, input and parameter
    gradients agree in eval and training (float64), and the float64 reference gives the same."""
    authors = _authors_module(preset, channels, channels)
    ours = backend("torch").PSA(channels, **PSA_PRESETS[preset]).double()
    ours.load_state_dict(copy.deepcopy(authors.state_dict()), strict=True)
    rng = np.random.default_rng(channels)
    x = rng.standard_normal(shape) * 1.5 + rng.uniform(-1, 1, (1, channels, 1, 1))
    cot = rng.standard_normal(shape)
    ref = PSAConfig(channels, **PSA_PRESETS[preset]).reference(canonical(authors), x)
    for training in (False, True):
        (y_a, dx_a, g_a, _), (y_o, dx_o, g_o, _) = (torch_step(m, x, cot, training) for m in (authors, ours))
        np.testing.assert_allclose(y_o, y_a, rtol=RTOL, atol=1e-14)
        np.testing.assert_allclose(ref, y_a, rtol=RTOL, atol=1e-14)
        np.testing.assert_allclose(dx_o, dx_a, rtol=RTOL, atol=1e-13)
        for name in g_a:
            np.testing.assert_allclose(g_o[name], g_a[name], rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("fw", [f for f in FRAMEWORKS if f != "torch"])
@pytest.mark.parametrize("preset", ["parallel", "sequential"])
def test_other_backends_equal_the_authors_code(fw, preset):
    """Paddle and Flax, given the authors' weights as canonical weights, compute the authors' output (float64)."""
    run = runner(fw)
    authors = _authors_module(preset, 16, 5)
    x = np.random.default_rng(4).standard_normal((3, 16, 5, 4)) + 0.3
    y_a, _, _, _ = torch_step(authors, x, None, False)
    got = run.run("psa", PSAConfig(16, **PSA_PRESETS[preset]), canonical(authors), x, None, dtype="float64",
                  training=False, mode=run.default_mode)
    np.testing.assert_allclose(got.y, y_a, rtol=RTOL, atol=1e-14, err_msg=fw)


# ------------------------------------------------------------------ External-Attention-pytorch's copy of the paper
# xmu-xiaoma666/External-Attention-pytorch, model/attention/PolarizedSelfAttention.py: the paper's two forms (LayerNorm
# over C, the spatial softmax over the C/2 query), with torch's default biases. Re-typed as published (the spatial
# part of both classes is the same code; the sequential one feeds it channel_out).
def _copy_psa(sequential: bool) -> Any:
    import torch
    from torch import nn

    class PolarizedSelfAttention(nn.Module):
        def __init__(self, channel=512):
            super().__init__()
            self.ch_wv=nn.Conv2d(channel,channel//2,kernel_size=(1,1))  # noqa: E225,E226,E231 - as published
            self.ch_wq=nn.Conv2d(channel,1,kernel_size=(1,1))  # noqa: E225,E231 - as published
            self.softmax_channel=nn.Softmax(1)  # noqa: E225 - as published
            self.softmax_spatial=nn.Softmax(-1)  # noqa: E225 - as published
            self.ch_wz=nn.Conv2d(channel//2,channel,kernel_size=(1,1))  # noqa: E225,E226,E231 - as published
            self.ln=nn.LayerNorm(channel)  # noqa: E225 - as published
            self.sigmoid=nn.Sigmoid()  # noqa: E225 - as published
            self.sp_wv=nn.Conv2d(channel,channel//2,kernel_size=(1,1))  # noqa: E225,E226,E231 - as published
            self.sp_wq=nn.Conv2d(channel,channel//2,kernel_size=(1,1))  # noqa: E225,E226,E231 - as published
            self.agp=nn.AdaptiveAvgPool2d((1,1))  # noqa: E225,E231 - as published

        def forward(self, x):
            b, c, h, w = x.size()
            channel_wv=self.ch_wv(x)  # noqa: E225 - as published
            channel_wq=self.ch_wq(x)  # noqa: E225 - as published
            channel_wv=channel_wv.reshape(b,c//2,-1)  # noqa: E225,E226,E231 - as published
            channel_wq=channel_wq.reshape(b,-1,1)  # noqa: E225,E231 - as published
            channel_wq=self.softmax_channel(channel_wq)  # noqa: E225 - as published
            channel_wz=torch.matmul(channel_wv,channel_wq).unsqueeze(-1)  # noqa: E225,E231 - as published
            channel_weight=self.sigmoid(self.ln(self.ch_wz(channel_wz).reshape(b,c,1).permute(0,2,1))).permute(0,2,1).reshape(b,c,1,1)  # noqa: E225,E231,E501 - as published
            channel_out=channel_weight*x  # noqa: E225,E226 - as published
            s = channel_out if sequential else x
            spatial_wv=self.sp_wv(s)  # noqa: E225 - as published
            spatial_wq=self.sp_wq(s)  # noqa: E225 - as published
            spatial_wq=self.agp(spatial_wq)  # noqa: E225 - as published
            spatial_wv=spatial_wv.reshape(b,c//2,-1)  # noqa: E225,E226,E231 - as published
            spatial_wq=spatial_wq.permute(0,2,3,1).reshape(b,1,c//2)  # noqa: E225,E226,E231 - as published
            spatial_wq=self.softmax_spatial(spatial_wq)  # noqa: E225 - as published
            spatial_wz=torch.matmul(spatial_wq,spatial_wv)  # noqa: E225,E231 - as published
            spatial_weight=self.sigmoid(spatial_wz.reshape(b,1,h,w))  # noqa: E225,E231 - as published
            if sequential:
                return spatial_weight*channel_out  # noqa: E226 - as published
            spatial_out=spatial_weight*x  # noqa: E225,E226 - as published
            out=spatial_out+channel_out  # noqa: E225 - as published
            return out

    return PolarizedSelfAttention


#: the copy's layer -> the authors' (the project's canonical) name
COPY_NAMES = {"ch_wq": "conv_q_right", "ch_wv": "conv_v_right", "ch_wz": "conv_up", "ln": "ln",
              "sp_wq": "conv_q_left", "sp_wv": "conv_v_left"}
COPY_TAPS = {"psa_channel_weights": "softmax_channel", "psa_channel_logits": "ln"}


def _renamed(state: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in state.items():
        layer, _, leaf = key.partition(".")
        out[f"{COPY_NAMES[layer]}.{leaf}"] = value
    return out


def _param_map(config: PSAConfig) -> dict[str, str]:
    back = {v: k for k, v in COPY_NAMES.items()}
    return {p.name: f"{back[p.module_path]}.{p.name.rpartition('.')[2]}" for p in config.param_table()}


@pytest.mark.parametrize("preset", ["paper_parallel", "paper_sequential"])
def test_paper_presets_equal_the_external_attention_copy(preset):
    """The copy's weights, renamed, load strictly into ``PSA(C, **PSA_PRESETS[preset], bias=True)``; outputs and
    gradients agree (float64), and the reference and the other backends give the same output."""
    module = _copy_psa(preset == "paper_sequential")(12).double()
    randomise(module, 3)
    ours = backend("torch").PSA(12, **PSA_PRESETS[preset], bias=True).double()
    ours.load_state_dict(_renamed(copy.deepcopy(module.state_dict())), strict=True)
    rng = np.random.default_rng(8)
    x, cot = rng.standard_normal((2, 12, 5, 3)), rng.standard_normal((2, 12, 5, 3))
    (y_c, dx_c, g_c, _), (y_o, dx_o, g_o, _) = (torch_step(m, x, cot, False) for m in (module, ours))
    np.testing.assert_allclose(y_o, y_c, rtol=RTOL, atol=1e-14)
    np.testing.assert_allclose(dx_o, dx_c, rtol=RTOL, atol=1e-13)
    for name, grad in _renamed(g_c).items():
        np.testing.assert_allclose(g_o[name], grad, rtol=1e-9, atol=1e-12, err_msg=name)
    config = PSAConfig(12, **PSA_PRESETS[preset], bias=True)
    weights = canonical(_renamed(module.state_dict()))
    np.testing.assert_allclose(config.reference(weights, x), y_c, rtol=RTOL, atol=1e-14)
    for fw in FRAMEWORKS:
        if fw != "torch":
            run = runner(fw)
            got = run.run("psa", config, weights, x, None, dtype="float64", training=False, mode=run.default_mode)
            np.testing.assert_allclose(got.y, y_c, rtol=RTOL, atol=1e-14, err_msg=fw)


# ------------------------------------------------------------------------------------------ the forms held apart
def test_each_other_preset_refuses_or_differs():
    """The authors' PSA_p weights: refused by the presets that hold other parameters (PSA_s's bottleneck, the paper's
    LayerNorm); where two forms hold the same parameters (the paper's parallel and sequential), the outputs differ."""
    import torch

    authors = _authors_module("parallel", 16, 1)
    for preset in ("sequential", "paper_parallel", "paper_sequential"):
        other = backend("torch").PSA(16, **PSA_PRESETS[preset]).double()
        with pytest.raises(RuntimeError, match="Missing key"):
            other.load_state_dict(copy.deepcopy(authors.state_dict()), strict=True)
    x = torch.from_numpy(np.random.default_rng(5).standard_normal((2, 16, 4, 3)))
    par = backend("torch").PSA(16, **PSA_PRESETS["paper_parallel"]).double()
    randomise(par, 2)
    seq = backend("torch").PSA(16, **PSA_PRESETS["paper_sequential"]).double()
    seq.load_state_dict(par.state_dict(), strict=True)
    y_p, y_s = par(x).detach().numpy(), seq(x).detach().numpy()
    assert np.abs(y_p - y_s).max() > 1e-2 * np.abs(y_p).max()


def test_check_passes_psa_p_and_fails_it_at_the_spatial_logits_as_the_paper_softmax():
    """``conformance.check`` of the authors' PSA_p (its ``softmax_left`` returns the spatial logits): PASS as
    'parallel'; as the same form with the paper's spatial softmax over the C/2 query, FAIL with the channel branch
    agreeing and the first difference the spatial logits."""
    from conformance import check

    psa_p, _ = _authors_psa()
    taps = {"psa_channel_weights": "softmax_right", "psa_channel_logits": "conv_up",
            "psa_spatial_logits": "softmax_left"}
    assert check(psa_p(8, 8), PSAConfig(8, **PSA_PRESETS["parallel"]), taps=taps).passed
    report = check(psa_p(8, 8), PSAConfig(8, spatial_softmax="query"), taps=taps)
    assert not report.passed
    first = report.diagnosis("n2-7x5")
    assert first is not None and first.stage == "PSA spatial logits"


def test_check_fails_the_paper_parallel_copy_as_sequential_after_the_channel_branch():
    """External-Attention-pytorch's parallel class checked as 'paper_sequential' (same parameters): the channel
    branch agrees, the first difference is the output, where the spatial branch reads x rather than x_ch."""
    from conformance import check

    config = PSAConfig(8, **PSA_PRESETS["paper_parallel"], bias=True)
    assert check(_copy_psa(False)(8), config, param_map=_param_map(config), taps=COPY_TAPS).passed
    wrong = PSAConfig(8, **PSA_PRESETS["paper_sequential"], bias=True)
    report = check(_copy_psa(False)(8), wrong, param_map=_param_map(wrong), taps=COPY_TAPS)
    assert not report.passed
    assert report.diagnosis("n2-7x5").stage == "output"


# ------------------------------------------------------------------------------------ copies' axis bugs
def _broken_copy(bug: str) -> Any:
    """The copy's parallel class with one bug: 'channel_softmax_axis', its channel query (N, HW, 1) softmaxed over the
    size-1 axis (``nn.Softmax(-1)``: every weight 1); 'no_layer_norm', the paper's LayerNorm over C left out (the
    authors' channel branch in the paper's form)."""
    from torch import nn

    module = _copy_psa(False)(8)
    if bug == "channel_softmax_axis":
        module.softmax_channel = nn.Softmax(-1)
    else:
        module.ln.forward = lambda v: v  # the layer's parameters stay: the weights still load
    return module


@pytest.mark.parametrize("bug,stage", [("channel_softmax_axis", "PSA channel softmax"),
                                       ("no_layer_norm", "PSA channel logits")])
def test_copy_axis_bugs_are_caught_at_their_stage(bug, stage):
    from conformance import check

    config = PSAConfig(8, **PSA_PRESETS["paper_parallel"], bias=True)
    report = check(_broken_copy(bug), config, param_map=_param_map(config), taps=COPY_TAPS, dtypes=("float64",))
    assert not report.passed
    assert report.diagnosis("n2-7x5", "float64").stage == stage
