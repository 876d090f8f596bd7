"""SRM (Lee et al., ICCV 2019): the float64 reference by hand and by finite differences, the authors' SRMLayer
(transcribed as published) as the peer of the 'official' preset in torch, Paddle and Flax, the 'paper' preset held
apart from it by the check, the Conv1d copy's missing epsilon caught, and every error the config raises."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from attn_core import SRM_PRESETS, ConfigError, InputShapeError, SRMConfig
from attn_core.autodiff import Node
from benchmarks.peers.published_torch import srm_layer as _authors_srm

from .._fw import FRAMEWORKS, backend, runner
from .._gradcheck import assert_reference_vjp
from .._timm import canonical, randomise, torch_step

RTOL = 1e-10


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


def _by_hand(w: dict[str, np.ndarray], x: np.ndarray, unbiased: bool,
             training: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SRM written out: the output, the (N, C) style integration z, and the (N, C) standard deviations."""
    n, c, h, wd = x.shape
    flat = x.reshape(n, c, h * wd)
    mu = flat.mean(axis=2)
    var = ((flat - mu[:, :, None]) ** 2).sum(axis=2) / (h * wd - 1 if unbiased else h * wd)
    std = np.sqrt(var + 1e-5)
    z = w["cfc"][None, :, 0] * mu + w["cfc"][None, :, 1] * std
    m, v = (z.mean(axis=0), z.var(axis=0)) if training else (w["bn.running_mean"], w["bn.running_var"])
    zh = (z - m) / np.sqrt(v + 1e-5) * w["bn.weight"] + w["bn.bias"]
    return x * _sigmoid(zh)[:, :, None, None], z, std


# ------------------------------------------------------------------------------------------ by hand
@pytest.mark.parametrize("preset", ["paper", "official"])
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_by_hand(preset, training):
    cfg = SRMConfig(4, **SRM_PRESETS[preset])
    rng = np.random.default_rng(7)
    w = cfg.init_weights(rng)
    x = rng.standard_normal((3, 4, 2, 3)) * 1.5 + 0.5
    want, z, std = _by_hand(w, x, preset == "official", training)
    np.testing.assert_allclose(cfg.reference(w, x, training), want, rtol=1e-13)
    taps: dict[str, Node] = {}
    cfg.reference_forward(Node(x), {k: Node(v) for k, v in w.items()}, training, taps)
    np.testing.assert_allclose(taps["style"].value[:, :, 1], std, rtol=1e-13)
    np.testing.assert_allclose(taps["style"].value[:, :, 0], x.mean(axis=(2, 3)), rtol=1e-13)
    if training:  # torch's convention: the unbiased variance of the N = 3 values of z enters the running variance
        state = cfg.reference_state(w, x)
        np.testing.assert_allclose(state["bn.running_mean"], 0.9 * w["bn.running_mean"] + 0.1 * z.mean(axis=0),
                                   rtol=1e-13)
        np.testing.assert_allclose(state["bn.running_var"], 0.9 * w["bn.running_var"] + 0.1 * z.var(axis=0, ddof=1),
                                   rtol=1e-13)


def test_the_two_standard_deviations_differ_by_the_bessel_factor():
    """On a map without epsilon's influence (large variance) the official std is the paper's times
    sqrt(HW / (HW - 1)): 6 positions, sqrt(6 / 5)."""
    x = np.random.default_rng(3).standard_normal((2, 3, 2, 3)) * 100.0
    stds = []
    for preset in ("paper", "official"):
        cfg = SRMConfig(3, **SRM_PRESETS[preset])
        taps: dict[str, Node] = {}
        w = cfg.init_weights(np.random.default_rng(0))
        cfg.reference_forward(Node(x), {k: Node(v) for k, v in w.items()}, False, taps)
        stds.append(taps["style"].value[:, :, 1])
    np.testing.assert_allclose(stds[1] / stds[0], np.sqrt(6 / 5), rtol=1e-9)


def test_paper_form_at_1x1_is_sqrt_eps():
    cfg = SRMConfig(2)
    w = cfg.init_weights(np.random.default_rng(1))
    x = np.random.default_rng(2).standard_normal((2, 2, 1, 1))
    want, _, std = _by_hand(w, x, False, False)
    np.testing.assert_allclose(std, np.sqrt(1e-5), rtol=1e-13)
    np.testing.assert_allclose(cfg.reference(w, x), want, rtol=1e-13)


# ------------------------------------------------------------------------------------ VJPs by finite differences
VJP_CASES = [
    ("paper-eval", SRMConfig(3), (2, 3, 2, 3), False),
    ("paper-train", SRMConfig(3), (3, 3, 3, 2), True),
    ("official-train", SRMConfig(2, **SRM_PRESETS["official"]), (3, 2, 2, 2), True),
    ("official-eval-b1", SRMConfig(2, **SRM_PRESETS["official"]), (1, 2, 1, 3), False),
]


@pytest.mark.parametrize("name,cfg,shape,training", VJP_CASES, ids=[c[0] for c in VJP_CASES])
def test_reference_vjp_matches_finite_differences(name, cfg, shape, training):
    rng = np.random.default_rng(sum(map(ord, name)))
    weights = cfg.init_weights(rng)
    x = rng.standard_normal(shape)
    assert_reference_vjp(name, cfg, weights, x, rng.standard_normal(shape), training)


# ------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("kwargs,message", [
    (dict(channels=0), "SRM: channels must be a positive integer, got 0"),
    (dict(channels=4, unbiased="yes"), "SRM: unbiased must be one of True, False; got 'yes'"),
    (dict(channels=4, eps=-1e-5), "SRM: eps must be a non-negative finite number, got -1e-05"),
    (dict(channels=4, bn_eps=0.0), "SRM: bn_eps must be a positive finite number, got 0.0"),
    (dict(channels=4, bn_momentum=1.5), r"SRM: bn_momentum \(torch convention: weight of the new batch\) must be in"),
])
def test_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SRMConfig(**kwargs)


def test_input_errors():
    official = SRMConfig(4, **SRM_PRESETS["official"])
    w = official.init_weights(np.random.default_rng(0))
    with pytest.raises(InputShapeError, match=r"SRM: the unbiased variance of the style pooling .* needs H\*W > 1"):
        official.reference(w, np.ones((2, 4, 1, 1)))
    with pytest.raises(InputShapeError, match=r"SRM: BatchNorm in training needs more than one value per channel"):
        SRMConfig(4).reference(w, np.ones((1, 4, 5, 5)), training=True)  # N = 1: one style value per channel
    module = backend("torch").SRM(4, **SRM_PRESETS["official"]).double()
    import torch

    with pytest.raises(InputShapeError, match="needs H\\*W > 1"):
        module(torch.ones(2, 4, 1, 1, dtype=torch.float64))


# ------------------------------------------------------------------------------------ the authors' SRMLayer
# (benchmarks/peers/published_torch.py, imported above: the one transcription, the benchmarks' torch peer too)


def _authors_module(channels: int, seed: int) -> Any:
    module = _authors_srm()(channels).double()
    randomise(module, seed)
    return module


@pytest.mark.parametrize("channels,shape", [(16, (2, 16, 7, 5)), (8, (3, 8, 1, 4))])
def test_official_preset_equals_the_authors_srm(channels, shape):
    """The authors' state_dict loads strictly into ``SRM(C, **SRM_PRESETS['official'])``; outputs, input gradients
    and running statistics agree in eval and training (float64), and the float64 reference gives the same."""
    import copy

    authors = _authors_module(channels, channels)
    ours = backend("torch").SRM(channels, **SRM_PRESETS["official"]).double()
    ours.load_state_dict(copy.deepcopy(authors.state_dict()), strict=True)
    weights = canonical(authors)
    rng = np.random.default_rng(channels)
    x = rng.standard_normal(shape) * 1.5 + rng.uniform(-1, 1, (1, channels, 1, 1))
    cot = rng.standard_normal(shape)
    for training in (False, True):
        ref = SRMConfig(channels, **SRM_PRESETS["official"]).reference(canonical(ours), x, training)
        (y_a, dx_a, g_a, s_a), (y_o, dx_o, g_o, s_o) = (torch_step(m, x, cot, training) for m in (authors, ours))
        np.testing.assert_allclose(y_o, y_a, rtol=RTOL, atol=1e-14)
        np.testing.assert_allclose(ref, y_a, rtol=RTOL, atol=1e-14)
        np.testing.assert_allclose(dx_o, dx_a, rtol=RTOL, atol=1e-13)
        for name in g_a:
            np.testing.assert_allclose(g_o[name], g_a[name], rtol=1e-9, atol=1e-12, err_msg=name)
        for name in s_a:
            np.testing.assert_allclose(s_o[name], s_a[name], rtol=RTOL, err_msg=name)
    assert set(weights) == {p.name for p in SRMConfig(channels).param_table()}


@pytest.mark.parametrize("fw", [f for f in FRAMEWORKS if f != "torch"])
def test_other_backends_equal_the_authors_srm(fw):
    """Paddle and Flax, given the authors' weights as canonical weights, compute the authors' output in eval and in
    training (float64), and their running statistics."""
    run = runner(fw)
    authors = _authors_module(12, 5)
    weights = canonical(authors)
    config = SRMConfig(12, **SRM_PRESETS["official"])
    x = np.random.default_rng(4).standard_normal((3, 12, 5, 4)) + 0.3
    for training in (False, True):  # the eval step leaves the statistics as they were for the training one
        y_a, _, _, state_a = torch_step(authors, x, None, training)
        got = run.run("srm", config, weights, x, None, dtype="float64", training=training, mode=run.default_mode)
        np.testing.assert_allclose(got.y, y_a, rtol=RTOL, atol=1e-14, err_msg=f"{fw} training={training}")
    for name in ("bn.running_mean", "bn.running_var"):
        np.testing.assert_allclose(got.state[name], state_a[name], rtol=RTOL, err_msg=name)


def test_check_passes_the_authors_srm_as_official_and_fails_it_as_paper_at_the_gate():
    """``conformance.check`` of the authors' SRMLayer (its ``activation`` submodule returns the gate): PASS against
    the 'official' preset; against the 'paper' preset (population std) FAIL, the first difference the gate."""
    from conformance import check

    authors = _authors_srm()(8)
    taps = {"gate": "activation"}
    assert check(authors, SRMConfig(8, **SRM_PRESETS["official"]), taps=taps).passed
    report = check(authors, SRMConfig(8, **SRM_PRESETS["paper"]), taps=taps)
    assert not report.passed
    first = report.diagnosis("n2-7x5")
    assert first is not None and first.stage == "gate"


def test_paper_form_given_the_authors_weights_differs():
    """The two forms hold the same parameters, so the authors' weights load into the paper form too, which computes
    something else: the population std is smaller by sqrt((HW - 1) / HW)."""
    import copy

    import torch

    authors = _authors_module(8, 2).eval()
    paper = backend("torch").SRM(8, **SRM_PRESETS["paper"]).double().eval()
    paper.load_state_dict(copy.deepcopy(authors.state_dict()), strict=True)
    x = torch.from_numpy(np.random.default_rng(5).standard_normal((2, 8, 3, 3)))
    y_a, y_p = authors(x).detach().numpy(), paper(x).detach().numpy()
    assert np.abs(y_p - y_a).max() > 1e-3 * np.abs(y_a).max()


# ------------------------------------------------------------------------------------ a published copy's bug
# The Conv1d form of SRM circulating in blog posts and attention collections (e.g. 0809zheng.github.io,
# 2020/11/03/srm.html), re-typed: a grouped Conv1d for the CFC, BatchNorm1d, and ``std()`` without the authors'
# epsilon. Peer code, kept as written.
def _conv1d_copy() -> Any:
    import torch
    import torch.nn as nn

    class SRMLayer(nn.Module):
        def __init__(self, channel, reduction=None):
            super(SRMLayer, self).__init__()  # noqa: UP008 - as published
            self.cfc = nn.Conv1d(channel, channel, kernel_size=2, bias=False, groups=channel)
            self.bn = nn.BatchNorm1d(channel)

        def forward(self, x):
            b, c, _, _ = x.size()
            mean = x.view(b, c, -1).mean(-1).unsqueeze(-1)
            std = x.view(b, c, -1).std(-1).unsqueeze(-1)
            u = torch.cat((mean, std), -1)  # (b, c, 2)
            z = self.cfc(u)  # (b, c, 1)
            z = self.bn(z)
            g = torch.sigmoid(z)
            g = g.view(b, c, 1, 1)
            return x * g.expand_as(x)

    return SRMLayer


def test_conv1d_copy_without_epsilon_is_caught():
    """The copy's CFC is a (C, 1, 2) Conv1d kernel (mapped by a reshape); its std lacks the epsilon under the square
    root: in float64 the check FAILs on the output (a relative 1e-5 / (2 var) off), in every case it runs."""
    from conformance import check

    c = 6
    to_native = (lambda a: a.reshape(c, 1, 2), lambda a: a.reshape(c, 2))
    report = check(_conv1d_copy()(c), SRMConfig(c, **SRM_PRESETS["official"]), param_map={"cfc": ("cfc.weight",
                   to_native)}, dtypes=("float64",))
    assert not report.passed
    assert "output" in report.failing_quantities("n2-7x5")
    assert report.diagnosis("n2-7x5", "float64").stage == "output"


def test_default_is_the_paper_form():
    """The default preset is the paper's: the authors released code but no weights to load."""
    assert set(SRM_PRESETS) == {"paper", "official"}
    assert SRMConfig(8) == SRMConfig(8, **SRM_PRESETS["paper"]) != SRMConfig(8, **SRM_PRESETS["official"])
    with pytest.raises(TypeError):
        SRM_PRESETS["paper"]["unbiased"] = True  # type: ignore[index] - read-only
