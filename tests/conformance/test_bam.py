"""BAM (Park et al., BMVC 2018): the float64 reference by hand and by finite differences, the authors' published
module (Jongchan/attention-module, ``MODELS/bam.py``) as the test peer of the 'original' preset, the paper's form
held apart from it, External-Attention-pytorch's copy (a shrinking map, three dilated convolutions) reproduced as a
broken port and caught, and every hyperparameter the config refuses."""

# the authors' code is transcribed as published, percent formats, super(Class, self) and long lines included
# ruff: noqa: UP008, UP031, E501

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from attn_core import BAM_PRESETS, BAMConfig, ConfigError, InputShapeError
from attn_core.autodiff import Node
from benchmarks.peers.published_torch import bam as published
from conformance import check

from .._fw import FRAMEWORKS, backend, runner
from .._gradcheck import assert_reference_vjp
from .._timm import randomise, torch_step
from ._published import assert_backend_equals_peer, assert_same_torch_step

TAPS = {"bam_channel": "channel_att", "bam_spatial": "spatial_att", "bam_gate": "gate"}


def external_attention() -> Any:
    """External-Attention-pytorch's ``model/attention/BAM.py`` (xmu-xiaoma666, HEAD), the copy most tutorials
    paste, transcribed as published but for its imports, its ``__main__`` demo and its unused ``init_weights``. Its
    dilated convolutions are padded by 1 with dilation 2 (each shrinks the map by 2), there are three of them and
    three hidden Linear layers, and the branches are added (the paper's combination)."""
    from torch import nn

    class Flatten(nn.Module):
        def forward(self,x):
            return x.view(x.shape[0],-1)

    class ChannelAttention(nn.Module):
        def __init__(self,channel,reduction=16,num_layers=3):
            super().__init__()
            self.avgpool=nn.AdaptiveAvgPool2d(1)
            gate_channels=[channel]
            gate_channels+=[channel//reduction]*num_layers
            gate_channels+=[channel]


            self.ca=nn.Sequential()
            self.ca.add_module('flatten',Flatten())
            for i in range(len(gate_channels)-2):
                self.ca.add_module('fc%d'%i,nn.Linear(gate_channels[i],gate_channels[i+1]))
                self.ca.add_module('bn%d'%i,nn.BatchNorm1d(gate_channels[i+1]))
                self.ca.add_module('relu%d'%i,nn.ReLU())
            self.ca.add_module('last_fc',nn.Linear(gate_channels[-2],gate_channels[-1]))


        def forward(self, x) :
            res=self.avgpool(x)
            res=self.ca(res)
            res=res.unsqueeze(-1).unsqueeze(-1).expand_as(x)
            return res

    class SpatialAttention(nn.Module):
        def __init__(self,channel,reduction=16,num_layers=3,dia_val=2):
            super().__init__()
            self.sa=nn.Sequential()
            self.sa.add_module('conv_reduce1',nn.Conv2d(kernel_size=1,in_channels=channel,out_channels=channel//reduction))
            self.sa.add_module('bn_reduce1',nn.BatchNorm2d(channel//reduction))
            self.sa.add_module('relu_reduce1',nn.ReLU())
            for i in range(num_layers):
                self.sa.add_module('conv_%d'%i,nn.Conv2d(kernel_size=3,in_channels=channel//reduction,out_channels=channel//reduction,padding=1,dilation=dia_val))
                self.sa.add_module('bn_%d'%i,nn.BatchNorm2d(channel//reduction))
                self.sa.add_module('relu_%d'%i,nn.ReLU())
            self.sa.add_module('last_conv',nn.Conv2d(channel//reduction,1,kernel_size=1))

        def forward(self, x) :
            res=self.sa(x)
            res=res.expand_as(x)
            return res

    class BAMBlock(nn.Module):

        def __init__(self, channel=512,reduction=16,dia_val=2):
            super().__init__()
            self.ca=ChannelAttention(channel=channel,reduction=reduction)
            self.sa=SpatialAttention(channel=channel,reduction=reduction,dia_val=dia_val)
            self.sigmoid=nn.Sigmoid()

        def forward(self, x):
            b, c, _, _ = x.size()
            sa_out=self.sa(x)
            ca_out=self.ca(x)
            weight=self.sigmoid(sa_out+ca_out)
            out=(1+weight)*x
            return out

    return BAMBlock


#: the form External-Attention-pytorch's BAMBlock means (the layers it builds, each dilated convolution keeping the
#: map), and where it holds each canonical parameter
EXTERNAL_FORM = dict(num_layers=3, dilation_conv_num=3, dilation_val=2, combine="sum")


def _external_map(config: BAMConfig) -> dict[str, str]:
    rename = {"channel_att.gate_c.gate_c_fc_final": "ca.ca.last_fc", "spatial_att.gate_s.gate_s_conv_final":
              "sa.sa.last_conv", "spatial_att.gate_s.gate_s_conv_reduce0": "sa.sa.conv_reduce1",
              "spatial_att.gate_s.gate_s_bn_reduce0": "sa.sa.bn_reduce1"}
    for i in range(3):
        rename[f"channel_att.gate_c.gate_c_fc_{i}"] = f"ca.ca.fc{i}"
        rename[f"channel_att.gate_c.gate_c_bn_{i + 1}"] = f"ca.ca.bn{i}"
        rename[f"spatial_att.gate_s.gate_s_conv_di_{i}"] = f"sa.sa.conv_{i}"
        rename[f"spatial_att.gate_s.gate_s_bn_di_{i}"] = f"sa.sa.bn_{i}"
    out = {}
    for p in config.param_table():
        layer, _, leaf = p.name.rpartition(".")
        out[p.name] = f"{rename[layer]}.{leaf}"
    return out


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


def _bn_eval(v: np.ndarray, w: dict[str, np.ndarray], name: str, axis: int) -> np.ndarray:
    shape = [1] * v.ndim
    shape[axis] = -1

    def c(a: np.ndarray) -> np.ndarray:
        return w[f"{name}.{a}"].reshape(shape)

    return (v - c("running_mean")) / np.sqrt(c("running_var") + 1e-5) * c("weight") + c("bias")


# ------------------------------------------------------------------------------------------ by hand
@pytest.mark.parametrize("combine", ["product", "sum"])
def test_bam_by_hand(combine):
    """One (4, 3, 5) sample, r = 2, one dilated convolution (dilation 2, padding 2) written as a sum over its nine
    taps; the branches multiplied ('original') or added ('paper'), then 1 + sigmoid, times the input."""
    cfg = BAMConfig(4, reduction_ratio=2, dilation_conv_num=1, dilation_val=2, combine=combine)
    rng = np.random.default_rng(21)
    w = cfg.init_weights(rng)
    x = rng.standard_normal((1, 4, 3, 5))
    x0 = x[0]
    gc, gs = "channel_att.gate_c.", "spatial_att.gate_s."
    h = w[f"{gc}gate_c_fc_0.weight"] @ x0.mean(axis=(1, 2)) + w[f"{gc}gate_c_fc_0.bias"]
    h = np.maximum(_bn_eval(h, w, f"{gc}gate_c_bn_1", 0), 0)
    m_c = w[f"{gc}gate_c_fc_final.weight"] @ h + w[f"{gc}gate_c_fc_final.bias"]  # (C,)
    z = np.einsum("rc,chw->rhw", w[f"{gs}gate_s_conv_reduce0.weight"][:, :, 0, 0], x0) \
        + w[f"{gs}gate_s_conv_reduce0.bias"][:, None, None]
    z = np.maximum(_bn_eval(z, w, f"{gs}gate_s_bn_reduce0", 0), 0)
    zp = np.pad(z, ((0, 0), (2, 2), (2, 2)))
    kernel = w[f"{gs}gate_s_conv_di_0.weight"]  # (r, r, 3, 3)
    d = sum(np.einsum("oi,ihw->ohw", kernel[:, :, a, b], zp[:, 2 * a:2 * a + 3, 2 * b:2 * b + 5])
            for a in range(3) for b in range(3)) + w[f"{gs}gate_s_conv_di_0.bias"][:, None, None]
    d = np.maximum(_bn_eval(d, w, f"{gs}gate_s_bn_di_0", 0), 0)
    m_s = np.einsum("r,rhw->hw", w[f"{gs}gate_s_conv_final.weight"][0, :, 0, 0], d) + w[f"{gs}gate_s_conv_final.bias"]
    joint = m_c[:, None, None] * m_s[None] if combine == "product" else m_c[:, None, None] + m_s[None]
    np.testing.assert_allclose(cfg.reference(w, x)[0], x0 * (1 + _sigmoid(joint)), rtol=1e-13)
    taps: dict[str, Node] = {}
    cfg.reference_forward(Node(x), {k: Node(v) for k, v in w.items()}, taps=taps)
    assert list(taps) == ["bam_channel", "bam_spatial", "bam_gate"]
    np.testing.assert_allclose(taps["bam_channel"].value[0, :, 0, 0], m_c, rtol=1e-13)
    np.testing.assert_allclose(taps["bam_spatial"].value[0, 0], m_s, rtol=1e-13)


def test_channel_batch_norm_in_training_by_hand():
    """In training the channel branch's BatchNorm1d normalises each hidden unit over the batch alone, and its running
    statistics move by torch's momentum 0.1 with the unbiased variance of the N values."""
    cfg = BAMConfig(4, reduction_ratio=2, dilation_conv_num=0)
    rng = np.random.default_rng(22)
    w = cfg.init_weights(rng)
    x = rng.standard_normal((3, 4, 2, 2))
    gc = "channel_att.gate_c."
    h = x.mean(axis=(2, 3)) @ w[f"{gc}gate_c_fc_0.weight"].T + w[f"{gc}gate_c_fc_0.bias"]  # (N, r)
    state = cfg.reference_state(w, x)
    np.testing.assert_allclose(state[f"{gc}gate_c_bn_1.running_mean"],
                               0.9 * w[f"{gc}gate_c_bn_1.running_mean"] + 0.1 * h.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(state[f"{gc}gate_c_bn_1.running_var"],
                               0.9 * w[f"{gc}gate_c_bn_1.running_var"] + 0.1 * h.var(axis=0, ddof=1), rtol=1e-13)


def test_presets_and_names():
    assert BAMConfig(32) == BAMConfig(32, **BAM_PRESETS["original"])
    assert BAMConfig(32, **BAM_PRESETS["paper"]).param_table() == BAMConfig(32).param_table()
    names = [p.name for p in BAMConfig(32).param_table()]
    assert names[:6] == ["channel_att.gate_c.gate_c_fc_0.weight", "channel_att.gate_c.gate_c_fc_0.bias",
                         "channel_att.gate_c.gate_c_bn_1.weight", "channel_att.gate_c.gate_c_bn_1.bias",
                         "channel_att.gate_c.gate_c_bn_1.running_mean", "channel_att.gate_c.gate_c_bn_1.running_var"]
    assert "spatial_att.gate_s.gate_s_conv_di_1.weight" in names and len(names) == 8 + 6 * 3 + 2
    assert BAMConfig(64).hidden == 4 and BAMConfig(20, reduction_ratio=3).hidden == 6


# ------------------------------------------------------------------------------------ VJPs by finite differences
VJP_CASES = [
    ("product-eval", BAMConfig(4, reduction_ratio=2, dilation_conv_num=1, dilation_val=2), (2, 4, 3, 4), False),
    ("sum-train", BAMConfig(4, reduction_ratio=2, dilation_conv_num=1, combine="sum"), (3, 4, 2, 3), True),
    ("two-layers-train", BAMConfig(2, reduction_ratio=1, num_layers=2, dilation_conv_num=2, dilation_val=1),
     (2, 2, 3, 2), True),
]


@pytest.mark.parametrize("name,cfg,shape,training", VJP_CASES, ids=[c[0] for c in VJP_CASES])
def test_reference_vjp_matches_finite_differences(name, cfg, shape, training):
    rng = np.random.default_rng(sum(map(ord, name)))
    weights = cfg.init_weights(rng)
    assert_reference_vjp(name, cfg, weights, rng.standard_normal(shape), rng.standard_normal(shape), training)


# --------------------------------------------------------------------------- the published module as a peer
def _square_input(channels: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((3, channels, 6, 6)) + rng.uniform(-1, 1, (1, channels, 1, 1))


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_published_module_equals_the_original_preset(training):
    """The authors' BAM with every parameter and BatchNorm buffer drawn at random; its state_dict loads strictly into
    the project's torch module of the 'original' preset, and both compute the same output, gradients and running
    statistics (float64, on the square maps the authors' channel pooling is written for). The 'paper' preset, with
    the same weights, computes another output."""
    torch_backend = backend("torch")
    theirs = published()(32).double()
    state = randomise(theirs, 7)
    ours = torch_backend.create_attn("bam", 32, **BAM_PRESETS["original"]).double()
    ours.load_state_dict(state, strict=True)
    x = _square_input(32, 8)
    cot = np.random.default_rng(9).standard_normal(x.shape)
    assert_same_torch_step(theirs, ours, x, cot, training)
    paper = torch_backend.create_attn("bam", 32, **BAM_PRESETS["paper"]).double()
    paper.load_state_dict(state, strict=True)
    assert np.abs(torch_step(paper, x, None, training)[0] - torch_step(ours, x, None, training)[0]).max() > 1e-2


@pytest.mark.parametrize("fw", [pytest.param(f, marks=[pytest.mark.slow] if f == "flax" else [])
                                for f in FRAMEWORKS if f != "torch"])  # Flax compiles each program
def test_other_backends_equal_the_published_module(fw):
    """Paddle and Flax, given the authors' weights as canonical weights, compute the authors' output in eval and in
    training (float64), and the running statistics of its five BatchNorms."""
    backend("torch")
    theirs = published()(16).double()
    randomise(theirs, 10)
    assert_backend_equals_peer(fw, "bam", BAMConfig(16, **BAM_PRESETS["original"]), theirs, _square_input(16, 11))


def test_published_channel_gate_assumes_square_maps():
    """The authors' ``F.avg_pool2d(x, H, stride=H)`` is the global mean only where H = W: ``conformance.check``
    (the suite's non-square cases) reports ERROR where W < H (7 x 5, 6 x 5: "too small"), FAIL where H < W < 2H
    (5 x 8: it averages the left 5 x 5 square and runs; the output differs), and passes 1 x 1. The project's
    module, whose channel branch takes the mean over the whole map, passes every case."""
    backend("torch")
    report = check(published()(16), BAMConfig(16, **BAM_PRESETS["original"]))
    assert {r.case: r.status for r in report.rows} == {"n2-7x5": "error", "n1-5x8": "fail", "n2-1x1": "pass",
                                                       "n3-6x5-train": "error"}
    assert "too small" in report.diagnosis("n2-7x5").text
    ours = backend("torch").create_attn("bam", 16)
    report = check(ours, BAMConfig(16, **BAM_PRESETS["original"]), taps=TAPS)
    assert report.passed


# ------------------------------------------------------------------------------------------- porting bugs
@pytest.mark.parametrize("fw", [pytest.param(f, marks=[] if f == "torch" else [pytest.mark.slow]) for f in FRAMEWORKS])
def test_original_form_against_the_paper_preset(fw):
    """The authors' form (the product of the branches) checked against the paper's (their sum), with the same
    weights: both branches agree, the first difference is the gate they make, in every framework."""
    ours = backend(fw).create_attn("bam", 16, **BAM_PRESETS["original"])
    report = check(ours, BAMConfig(16, **BAM_PRESETS["paper"]), taps=TAPS)
    assert not report.passed and [r.case for r in report.rows if r.failed] == ["n2-7x5", "n1-5x8", "n2-1x1",
                                                                               "n3-6x5-train"]
    d = report.first_difference
    assert d.stage == "BAM gate" and [c.passed for c in d.taps] == [True, True, False]
    assert "before it, the BAM channel branch and the BAM spatial branch agree" in d.text
    paper = backend(fw).create_attn("bam", 16, **BAM_PRESETS["paper"])
    assert not check(paper, BAMConfig(16, **BAM_PRESETS["original"]), taps=TAPS).passed
    assert check(paper, BAMConfig(16, **BAM_PRESETS["paper"]), taps=TAPS).passed


def test_external_attention_copy_shrinks_the_map():
    """External-Attention-pytorch's BAMBlock pads its dilated 3x3 convolutions by 1 with dilation 2: each shrinks
    the map by 2 and the three of them by 6. On the suite's cases (at most 7 x 5) every row is an ERROR (a map of
    size <= 0); on the 7 x 7 map of its own demo the spatial branch is 1 x 1 and ``expand_as`` spreads that one
    value over the map: it runs and is wrong. The same copy with the padding its dilation needs passes."""
    backend("torch")
    import torch

    spec = BAMConfig(32, **EXTERNAL_FORM)
    block = external_attention()(32, 16, 2)
    report = check(block, spec, param_map=_external_map(spec))
    assert {r.status for r in report.rows} == {"error"} and {d.stage for d in report.diagnoses} == {"error"}
    with torch.no_grad():
        assert tuple(block.sa.sa(torch.zeros(2, 32, 7, 7)).shape) == (2, 1, 1, 1)  # before expand_as
    weights = spec.init_weights(np.random.default_rng(12))
    x = np.random.default_rng(13).standard_normal((2, 32, 7, 7))
    run = runner("torch")
    got = run.execute(run.wrap(block, spec, _external_map(spec)), weights, x, None, dtype="float64")
    assert np.abs(got.y - spec.reference(weights, x)).max() > 1e-3
    for i in range(3):
        getattr(block.sa.sa, f"conv_{i}").padding = (2, 2)
    assert check(block, spec, param_map=_external_map(spec)).passed


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("kwargs,message", [
    ({"channels": 0}, "channels must be"),
    ({"reduction_ratio": 0}, "reduction_ratio must be"),
    ({"channels": 8}, r"hidden width is 0: channels=8 // reduction_ratio=16"),
    ({"num_layers": 0}, "num_layers must be"),
    ({"dilation_conv_num": -1}, "dilation_conv_num must be a non-negative integer"),
    ({"dilation_conv_num": True}, "dilation_conv_num must be a non-negative integer"),
    ({"dilation_val": 0}, "dilation_val must be"),
    ({"combine": "max"}, "combine must be one of 'product', 'sum'"),
    ({"bn_eps": -1.0}, "bn_eps must be a positive finite number"),
    ({"bn_momentum": 2.0}, "bn_momentum"),
])
def test_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message) as err:
        BAMConfig(**{"channels": 32, **kwargs})
    assert str(err.value).startswith("BAM: ")


def test_training_needs_a_batch_of_two():
    """The channel branch's BatchNorm1d sees one value per sample: a training batch of one is refused, whatever
    the map's size."""
    cfg = BAMConfig(32)
    with pytest.raises(InputShapeError, match="BAM: BatchNorm in training"):
        cfg.check_input((1, 32, 7, 7), "float64", True, training=True)
    cfg.check_input((2, 32, 1, 1), "float64", True, training=True)
    cfg.check_input((1, 32, 7, 7), "float64", True, training=False)
