"""GCT (Yang et al., CVPR 2020): the float64 reference by hand and by finite differences, the authors' PyTorch GCT
(transcribed as published; their TensorFlow GCT computes the same) as the peer of the 'official' preset in torch,
Paddle and Flax for l2, l1 and after_relu, the paper's epsilon placement held apart from it, l1 for l2 and a
signed input summed as after a ReLU caught, and every error the config raises."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from attn_core import GCT_PRESETS, ConfigError, GCTConfig
from attn_core.autodiff import Node
from benchmarks.peers.published_torch import gct as _authors_gct
from conformance.cases import Case, cases_for

from .._fw import FRAMEWORKS, backend, runner
from .._gradcheck import assert_reference_vjp
from .._timm import canonical, randomise, torch_step

RTOL = 1e-10


def _by_hand(w: dict[str, np.ndarray], x: np.ndarray, mode: str, after_relu: bool,
             channel_eps: str) -> tuple[np.ndarray, np.ndarray]:
    """GCT written out per sample and channel: the output and the (N, C) embedding."""
    n, c = x.shape[:2]
    alpha, gamma, beta = (w[k].reshape(c) for k in ("alpha", "gamma", "beta"))
    eps = 1e-5
    y = np.empty_like(x)
    emb = np.empty((n, c))
    for i in range(n):
        if mode == "l2":
            s = alpha * np.array([np.sqrt(np.sum(x[i, k] ** 2) + eps) for k in range(c)])
            if channel_eps == "mean":
                denom = np.sqrt(np.mean(s ** 2) + eps)
            else:  # the paper: sqrt(sum_c s^2 + eps) / sqrt(C)
                denom = np.sqrt(np.sum(s ** 2) + eps) / np.sqrt(c)
        else:
            s = alpha * np.array([np.sum(x[i, k] if after_relu else np.abs(x[i, k])) for k in range(c)])
            denom = np.mean(np.abs(s)) + eps if channel_eps == "mean" else (np.sum(np.abs(s)) + eps) / c
        emb[i] = s
        y[i] = x[i] * (1.0 + np.tanh(gamma * s / denom + beta))[:, None, None]
    return y, emb


# ------------------------------------------------------------------------------------------ by hand
@pytest.mark.parametrize("mode,after_relu", [("l2", False), ("l1", False), ("l1", True)])
@pytest.mark.parametrize("preset", ["official", "paper"])
def test_by_hand(mode, after_relu, preset):
    cfg = GCTConfig(5, mode=mode, after_relu=after_relu, **GCT_PRESETS[preset])
    rng = np.random.default_rng(11)
    w = cfg.init_weights(rng)
    x = rng.standard_normal((2, 5, 3, 2)) * 0.01  # small: the channel normalisation's epsilon shows
    want, emb = _by_hand(w, x, mode, after_relu, GCT_PRESETS[preset]["channel_eps"])
    np.testing.assert_allclose(cfg.reference(w, x), want, rtol=1e-12)
    taps: dict[str, Node] = {}
    cfg.reference_forward(Node(x), {k: Node(v) for k, v in w.items()}, False, taps)
    np.testing.assert_allclose(taps["embedding"].value[:, :, 0, 0], emb, rtol=1e-13)


def test_epsilon_placement_matters_only_near_zero():
    """The paper's epsilon on the sum over C is the code's epsilon / C on the mean: equal to 1e-8 on unit inputs, 10 %
    apart where the embedding's mean square is of the order of epsilon."""
    official, paper = (GCTConfig(8, **GCT_PRESETS[p]) for p in ("official", "paper"))
    w = official.init_weights(np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((2, 8, 4, 5))
    ratio = paper.reference(w, x) / official.reference(w, x)
    assert np.abs(ratio - 1).max() < 1e-6
    small = x * 1e-3
    assert np.abs(paper.reference(w, small) / official.reference(w, small) - 1).max() > 1e-2


# ------------------------------------------------------------------------------------ VJPs by finite differences
VJP_CASES = [
    ("l2-official", GCTConfig(3), (2, 3, 2, 3)),
    ("l2-paper-small", GCTConfig(3, **GCT_PRESETS["paper"]), (2, 3, 3, 2)),
    ("l1", GCTConfig(4, mode="l1"), (2, 4, 2, 2)),
    ("l1-after-relu-paper", GCTConfig(3, mode="l1", after_relu=True, **GCT_PRESETS["paper"]), (1, 3, 2, 3)),
    ("l2-1x1-c1", GCTConfig(1), (2, 1, 1, 1)),
]


@pytest.mark.parametrize("name,cfg,shape", VJP_CASES, ids=[c[0] for c in VJP_CASES])
def test_reference_vjp_matches_finite_differences(name, cfg, shape):
    rng = np.random.default_rng(sum(map(ord, name)))
    weights = cfg.init_weights(rng)
    x = rng.standard_normal(shape) * (0.01 if "small" in name else 1.0)
    assert_reference_vjp(name, cfg, weights, x, rng.standard_normal(shape), False)


# ------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("kwargs,message", [
    (dict(channels=0), "GCT: channels must be a positive integer, got 0"),
    (dict(channels=4, epsilon=0.0), r"GCT: epsilon must be a positive finite number \(the l1 normalisation"),
    (dict(channels=4, epsilon=float("inf")), "GCT: epsilon must be a positive finite number"),
    (dict(channels=4, mode="l3"), "GCT: mode must be one of 'l2', 'l1'; got 'l3'"),
    (dict(channels=4, after_relu="yes"), "GCT: after_relu must be one of True, False; got 'yes'"),
    (dict(channels=4, channel_eps="both"), "GCT: channel_eps must be one of 'mean', 'sum'; got 'both'"),
])
def test_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        GCTConfig(**kwargs)


# ------------------------------------------------------------------------------------ the authors' GCT
# (benchmarks/peers/published_torch.py, imported above: the one transcription, the benchmarks' torch peer too)


MODES = [("l2", False), ("l1", False), ("l1", True)]


@pytest.mark.parametrize("mode,after_relu", MODES)
def test_official_preset_equals_the_authors_gct(mode, after_relu):
    """The authors' state_dict loads strictly into ``GCT(C, **GCT_PRESETS['official'])`` with the same mode; outputs
    and every gradient agree in float64 (no state: training is evaluation), also on small inputs, where epsilon's
    place shows, and the float64 reference gives the same."""
    import copy

    authors = _authors_gct()(12, mode=mode, after_relu=after_relu).double()
    randomise(authors, 3)
    ours = backend("torch").GCT(12, mode=mode, after_relu=after_relu, **GCT_PRESETS["official"]).double()
    ours.load_state_dict(copy.deepcopy(authors.state_dict()), strict=True)
    config = GCTConfig(12, mode=mode, after_relu=after_relu, **GCT_PRESETS["official"])
    rng = np.random.default_rng(6)
    for scale in (1.0, 1e-3):
        x = (rng.standard_normal((2, 12, 5, 4)) + rng.uniform(-1, 1, (1, 12, 1, 1))) * scale
        cot = rng.standard_normal(x.shape)
        (y_a, dx_a, g_a, _), (y_o, dx_o, g_o, _) = (torch_step(m, x, cot, True) for m in (authors, ours))
        np.testing.assert_allclose(y_o, y_a, rtol=RTOL, atol=1e-14 * scale)
        np.testing.assert_allclose(config.reference(canonical(authors), x), y_a, rtol=RTOL, atol=1e-14 * scale)
        np.testing.assert_allclose(dx_o, dx_a, rtol=1e-9, atol=1e-12)
        for name in g_a:
            np.testing.assert_allclose(g_o[name], g_a[name], rtol=1e-9, atol=1e-12 * scale, err_msg=name)


@pytest.mark.parametrize("fw", [f for f in FRAMEWORKS if f != "torch"])
@pytest.mark.parametrize("mode,after_relu", [MODES[0], pytest.param(*MODES[2], marks=pytest.mark.slow)])
def test_other_backends_equal_the_authors_gct(fw, mode, after_relu):
    run = runner(fw)
    authors = _authors_gct()(8, mode=mode, after_relu=after_relu).double()
    randomise(authors, 8)
    config = GCTConfig(8, mode=mode, after_relu=after_relu, **GCT_PRESETS["official"])
    x = np.random.default_rng(9).standard_normal((2, 8, 3, 5)) * 1e-3  # small: epsilon's place shows
    y_a, _, _, _ = torch_step(authors, x, None, False)
    got = run.run("gct", config, canonical(authors), x, None, dtype="float64", training=False, mode=run.default_mode)
    np.testing.assert_allclose(got.y, y_a, rtol=RTOL, atol=1e-17)


def _small_input_cases(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check's cases plus one on inputs scaled by 1e-3 (a suite case of the same kind exists in
    conformance.cases), where the embedding's mean square is of the order of epsilon."""
    module = sys.modules["conformance.check"]

    def with_small(spec: GCTConfig) -> tuple[Case, ...]:
        return cases_for(spec) + (Case("gct", "n2-5x4-x1e-3", (2, spec.channels, 5, 4), spec=spec,
                                       input_scale=1e-3, note="inputs x 1e-3"),)

    monkeypatch.setattr(module, "cases_for", with_small)


def test_check_holds_the_paper_placement_apart(monkeypatch):
    """``conformance.check`` of the authors' GCT: PASS against the 'official' preset; against 'paper', in float32
    (the check's default) the unit-scale cases pass (epsilon is negligible there) and the small-input case FAILs
    (diagnosis: output); in float64 every case fails on the gradients."""
    from conformance import check

    _small_input_cases(monkeypatch)
    authors = _authors_gct()(8)
    for dtype in ("float32", "float64"):
        assert check(authors, GCTConfig(8, **GCT_PRESETS["official"]), dtypes=(dtype,)).passed, dtype
    report = check(authors, GCTConfig(8, **GCT_PRESETS["paper"]))
    assert {r.case for r in report.rows if r.failed} == {"n2-5x4-x1e-3"}
    assert report.diagnosis("n2-5x4-x1e-3").stage == "output"
    report = check(authors, GCTConfig(8, **GCT_PRESETS["paper"]), dtypes=("float64",))
    assert all(r.failed for r in report.rows)


# ------------------------------------------------------------------------------------ ports that go wrong
def test_l1_port_is_caught_against_l2():
    """The authors' GCT built with mode='l1' checked against the l2 spec: FAIL on the output in every case."""
    from conformance import check

    report = check(_authors_gct()(6, mode="l1"), GCTConfig(6))
    assert not report.passed
    assert all(r.failed for r in report.rows)


def test_after_relu_on_a_signed_input_is_caught():
    """``after_relu=True`` on an input that is not after a ReLU (the cases' inputs are signed): the sum of signed
    values is not the l1 norm; the check against the plain l1 spec FAILs on the output."""
    from conformance import check

    report = check(_authors_gct()(6, mode="l1", after_relu=True), GCTConfig(6, mode="l1"))
    assert not report.passed
    assert report.diagnosis("n2-7x5").stage == "output"


def test_epsilon_outside_the_square_root_is_caught(monkeypatch):
    """A port that adds epsilon after the square root, ``gamma / (sqrt(mean_c s^2) + eps)``: FAIL on the small-input
    case, by far the most (float64)."""
    import torch

    from conformance import check

    class EpsOutside(_authors_gct()):  # type: ignore[misc]
        def forward(self, x):
            embedding = (x.pow(2).sum((2, 3), keepdim=True) + self.epsilon).pow(0.5) * self.alpha
            norm = self.gamma / (embedding.pow(2).mean(dim=1, keepdim=True).pow(0.5) + self.epsilon)
            return x * (1. + torch.tanh(embedding * norm + self.beta))

    _small_input_cases(monkeypatch)
    report = check(EpsOutside(8), GCTConfig(8), dtypes=("float64",))
    assert "n2-5x4-x1e-3" in {r.case for r in report.rows if r.failed}


def test_default_is_the_authors_form():
    """The default preset is the authors' code, which trained the released GCT-ResNet-50."""
    assert set(GCT_PRESETS) == {"official", "paper"}
    assert GCTConfig(8) == GCTConfig(8, **GCT_PRESETS["official"]) != GCTConfig(8, **GCT_PRESETS["paper"])
    assert GCTConfig(8, **GCT_PRESETS["paper"]).norm_epsilon == 1e-5 / 8
