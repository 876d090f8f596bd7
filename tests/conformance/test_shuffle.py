"""Shuffle Attention (Zhang and Yang, ICASSP 2021): the float64 reference by hand and by finite differences, the
authors' sa_layer (transcribed as published) as the peer of the 'official' preset in torch, Paddle and Flax, the
paper's GroupNorm without affine held apart from it, a port without the channel shuffle and one with the two
branches swapped caught, and every error the config raises."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from attn_core import SHUFFLE_PRESETS, ConfigError, ShuffleAttentionConfig
from attn_core.autodiff import Node
from benchmarks.peers.published_torch import sa_layer as _authors_sa_layer

from .._fw import FRAMEWORKS, backend, runner
from .._gradcheck import assert_reference_vjp
from .._timm import canonical, randomise, torch_step

RTOL = 1e-10


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


def _by_hand(w: dict[str, np.ndarray], x: np.ndarray, groups: int, affine: bool) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle attention channel by channel: the output and the output before the shuffle."""
    n, c, h, wd = x.shape
    b = c // (2 * groups)
    before = np.empty_like(x)
    for i in range(n):
        for g in range(groups):
            for j in range(b):
                ch0, ch1 = g * 2 * b + j, g * 2 * b + b + j  # the j-th channel of each half of group g
                gate_c = _sigmoid(w["cweight"][0, j, 0, 0] * x[i, ch0].mean() + w["cbias"][0, j, 0, 0])
                before[i, ch0] = x[i, ch0] * gate_c
                plane = x[i, ch1]
                normed = (plane - plane.mean()) / np.sqrt(plane.var() + 1e-5)
                if affine:
                    normed = normed * w["gn.weight"][j] + w["gn.bias"][j]
                before[i, ch1] = plane * _sigmoid(w["sweight"][0, j, 0, 0] * normed + w["sbias"][0, j, 0, 0])
    after = np.empty_like(x)
    for m in range(c // 2):  # channel_shuffle(out, 2): output 2m + i is channel i * C / 2 + m
        after[:, 2 * m], after[:, 2 * m + 1] = before[:, m], before[:, c // 2 + m]
    return after, before


# ------------------------------------------------------------------------------------------ by hand
@pytest.mark.parametrize("preset", ["official", "paper"])
@pytest.mark.parametrize("channels,groups", [(8, 2), (12, 1), (6, 3)])
def test_by_hand(preset, channels, groups):
    cfg = ShuffleAttentionConfig(channels, groups, **SHUFFLE_PRESETS[preset])
    rng = np.random.default_rng(channels + groups)
    w = cfg.init_weights(rng)
    x = rng.standard_normal((2, channels, 3, 2)) * 1.5 + 0.5
    after, before = _by_hand(w, x, groups, preset == "official")
    np.testing.assert_allclose(cfg.reference(w, x), after, rtol=1e-13)
    taps: dict[str, Node] = {}
    cfg.reference_forward(Node(x), {k: Node(v) for k, v in w.items()}, False, taps)
    np.testing.assert_allclose(taps["sa_unshuffled"].value, before, rtol=1e-13)
    assert taps["sa_channel_gate"].shape == (2, channels // 2, 1, 1)
    assert taps["sa_spatial_gate"].shape == (2, channels // 2, 3, 2)


def test_parameters_follow_the_preset():
    assert [p.name for p in ShuffleAttentionConfig(256).param_table()] == [
        "cweight", "cbias", "sweight", "sbias", "gn.weight", "gn.bias"]
    assert ShuffleAttentionConfig(256).branch_channels == 2  # 256 / (2 * 64)
    paper = ShuffleAttentionConfig(256, **SHUFFLE_PRESETS["paper"])
    assert [p.name for p in paper.param_table()] == ["cweight", "cbias", "sweight", "sbias"]


# ------------------------------------------------------------------------------------ VJPs by finite differences
VJP_CASES = [
    ("official-g2", ShuffleAttentionConfig(8, 2), (2, 8, 3, 2)),
    ("paper-g1-b1", ShuffleAttentionConfig(4, 1, **SHUFFLE_PRESETS["paper"]), (1, 4, 2, 3)),
    ("official-g3-1x1", ShuffleAttentionConfig(6, 3), (2, 6, 1, 1)),
]


@pytest.mark.parametrize("name,cfg,shape", VJP_CASES, ids=[c[0] for c in VJP_CASES])
def test_reference_vjp_matches_finite_differences(name, cfg, shape):
    rng = np.random.default_rng(sum(map(ord, name)))
    weights = cfg.init_weights(rng)
    x = rng.standard_normal(shape)
    assert_reference_vjp(name, cfg, weights, x, rng.standard_normal(shape), False)


# ------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("kwargs,message", [
    (dict(channels=0), "ShuffleAttention: channels must be a positive integer, got 0"),
    (dict(channels=64, groups=0), "ShuffleAttention: groups must be a positive integer, got 0"),
    (dict(channels=64), r"ShuffleAttention: channels must be a multiple of 2 \* groups = 128 \(G groups of two "
                        r"equal halves\), got channels=64, groups=64"),
    (dict(channels=12, groups=4), r"channels must be a multiple of 2 \* groups = 8"),
    (dict(channels=8, groups=2, gn_affine="no"), "ShuffleAttention: gn_affine must be one of True, False; got 'no'"),
    (dict(channels=8, groups=2, gn_eps=0), "ShuffleAttention: gn_eps must be a positive finite number, got 0"),
])
def test_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ShuffleAttentionConfig(**kwargs)


# ------------------------------------------------------------------------------------ the authors' sa_layer
# (benchmarks/peers/published_torch.py, imported above: the one transcription, the benchmarks' torch peer too)


def _authors_module(channels: int, groups: int, seed: int) -> Any:
    module = _authors_sa_layer()(channels, groups).double()
    randomise(module, seed)
    return module


@pytest.mark.parametrize("channels,groups,shape", [(256, 64, (2, 256, 5, 3)), (32, 4, (1, 32, 7, 6)),
                                                   (16, 8, (2, 16, 1, 1))])
def test_official_preset_equals_the_authors_sa_layer(channels, groups, shape):
    """The authors' state_dict loads strictly into ``ShuffleAttention(C, G, **SHUFFLE_PRESETS['official'])``; the
    outputs and every gradient agree in float64 (no state: training is evaluation), and the reference gives the
    same."""
    import copy

    authors = _authors_module(channels, groups, channels)
    ours = backend("torch").ShuffleAttention(channels, groups, **SHUFFLE_PRESETS["official"]).double()
    ours.load_state_dict(copy.deepcopy(authors.state_dict()), strict=True)
    rng = np.random.default_rng(groups)
    x = rng.standard_normal(shape) * 1.5 + rng.uniform(-1, 1, (1, channels, 1, 1))
    cot = rng.standard_normal(shape)
    (y_a, dx_a, g_a, _), (y_o, dx_o, g_o, _) = (torch_step(m, x, cot, True) for m in (authors, ours))
    np.testing.assert_allclose(y_o, y_a, rtol=RTOL, atol=1e-14)
    np.testing.assert_allclose(dx_o, dx_a, rtol=1e-9, atol=1e-12)
    for name in g_a:
        np.testing.assert_allclose(g_o[name], g_a[name], rtol=1e-9, atol=1e-12, err_msg=name)
    config = ShuffleAttentionConfig(channels, groups)
    np.testing.assert_allclose(config.reference(canonical(authors), x), y_a, rtol=RTOL, atol=1e-14)


@pytest.mark.parametrize("fw", [f for f in FRAMEWORKS if f != "torch"])
def test_other_backends_equal_the_authors_sa_layer(fw):
    run = runner(fw)
    authors = _authors_module(24, 3, 1)
    config = ShuffleAttentionConfig(24, 3)
    x = np.random.default_rng(2).standard_normal((2, 24, 5, 4)) + 0.4
    y_a, _, _, _ = torch_step(authors, x, None, False)
    got = run.run("shuffle", config, canonical(authors), x, None, dtype="float64", training=False,
                  mode=run.default_mode)
    np.testing.assert_allclose(got.y, y_a, rtol=RTOL, atol=1e-14)


def test_authors_weights_do_not_fit_the_paper_form():
    """The paper's form has no GroupNorm affine: the authors' state_dict is refused strictly (``gn.weight``,
    ``gn.bias`` unexpected) and the check refuses the authors' module against the paper's spec before running
    (ParamMapError naming them); loaded laxly the paper form computes something else, and only with the authors'
    GroupNorm affine at its identity (1, 0) do the two agree."""
    import copy

    import torch

    from conformance import check
    from conformance.runners import ParamMapError

    bt = backend("torch")
    authors = _authors_module(16, 2, 4)
    paper = bt.ShuffleAttention(16, 2, **SHUFFLE_PRESETS["paper"]).double()
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\) in state_dict: \"gn.weight\", \"gn.bias\""):
        paper.load_state_dict(authors.state_dict())
    with pytest.raises(ParamMapError, match="gn.weight"):
        check(_authors_sa_layer()(16, 2), ShuffleAttentionConfig(16, 2, **SHUFFLE_PRESETS["paper"]))
    paper.load_state_dict(copy.deepcopy(authors.state_dict()), strict=False)
    x = torch.from_numpy(np.random.default_rng(5).standard_normal((2, 16, 4, 3)))
    y_a = authors(x).detach().numpy()
    assert np.abs(paper(x).detach().numpy() - y_a).max() > 1e-3 * np.abs(y_a).max()
    with torch.no_grad():
        authors.gn.weight.fill_(1.0)
        authors.gn.bias.zero_()
    np.testing.assert_allclose(paper(x).detach().numpy(), authors(x).detach().numpy(), rtol=RTOL, atol=1e-14)


def test_check_passes_the_authors_sa_layer():
    """In float64 the authors' sa_layer passes the check against the 'official' preset in every case. (In float32
    torch's GroupNorm kernel leaves rounding noise at 1 x 1, where the exact normalised map is 0 and 1 / sqrt(eps)
    magnifies it: the sum behind grad:sweight, whose terms cancel, misses the float32 tolerance there, while the
    7 x 5 and 5 x 8 cases pass.)"""
    from conformance import check

    report = check(_authors_sa_layer()(16, 2), ShuffleAttentionConfig(16, 2), dtypes=("float64",))
    assert report.passed, str(report)
    report = check(_authors_sa_layer()(16, 2), ShuffleAttentionConfig(16, 2))
    assert {r.case for r in report.rows if not r.failed} >= {"n2-7x5", "n1-5x8"}


# ------------------------------------------------------------------------------------ ports that go wrong
def test_port_without_the_channel_shuffle_is_caught():
    """The authors' sa_layer with its last line dropped (the gated groups returned unshuffled): FAIL on the output
    in every case, the 1 x 1 one included (the shuffle moves channels, not positions)."""
    from conformance import check

    class NoShuffle(_authors_sa_layer()):  # type: ignore[misc]
        @staticmethod
        def channel_shuffle(x, groups):
            return x

    report = check(NoShuffle(16, 2), ShuffleAttentionConfig(16, 2))
    assert not report.passed and all(r.failed for r in report.rows)
    assert report.diagnosis("n2-7x5").stage == "output"


def test_port_with_the_branches_swapped_is_caught():
    """A port whose GroupNorm gate takes the first half of each group and the pooled gate the second: FAIL on the
    output in every case."""
    import torch

    from conformance import check

    class Swapped(_authors_sa_layer()):  # type: ignore[misc]
        def forward(self, x):
            b, c, h, w = x.shape
            x = x.reshape(b * self.groups, -1, h, w)
            x_1, x_0 = x.chunk(2, dim=1)
            xn = x_0 * self.sigmoid(self.cweight * self.avg_pool(x_0) + self.cbias)
            xs = x_1 * self.sigmoid(self.sweight * self.gn(x_1) + self.sbias)
            return self.channel_shuffle(torch.cat([xs, xn], dim=1).reshape(b, -1, h, w), 2)

    report = check(Swapped(16, 2), ShuffleAttentionConfig(16, 2))
    assert not report.passed and all(r.failed for r in report.rows)


def test_default_is_the_authors_form():
    """The default preset is the authors' code, whose released SA-ResNet weights hold the GroupNorm affine."""
    assert set(SHUFFLE_PRESETS) == {"official", "paper"}
    assert ShuffleAttentionConfig(128) == ShuffleAttentionConfig(128, **SHUFFLE_PRESETS["official"])
    assert ShuffleAttentionConfig(128) != ShuffleAttentionConfig(128, **SHUFFLE_PRESETS["paper"])


def test_paddle_group_norm_without_affine_is_caught():
    """Paddle's ``F.group_norm(x, groups, eps)`` without weight and bias computes the right output but a wrong input
    gradient (Paddle 3.3.1: off by a quarter of its scale; with a weight of ones and a bias of zeros it is torch's).
    The paper's form written that way FAILs the check on ``grad:input``; the project's module passes 1 and 0."""
    import paddle
    import paddle.nn.functional as F
    import torch

    from conformance import check

    bp = backend("paddle")
    x = np.random.default_rng(0).standard_normal((2, 4, 5, 8))
    w = np.random.default_rng(1).standard_normal(x.shape)
    xp = paddle.to_tensor(x, stop_gradient=False)
    (F.group_norm(xp, 4, 1e-5) * paddle.to_tensor(w)).sum().backward()
    xt = torch.tensor(x, requires_grad=True)
    (torch.nn.functional.group_norm(xt, 4, eps=1e-5) * torch.tensor(w)).sum().backward()
    if np.allclose(xp.grad.numpy(), xt.grad.numpy(), rtol=1e-9, atol=1e-12):
        pytest.skip(f"Paddle {paddle.__version__} computes group_norm's input gradient without an affine right")

    class NoAffine(bp.ShuffleAttention):  # type: ignore[misc, name-defined]
        def forward(self, x):
            cfg = self.config
            b = cfg.branch_channels
            xg = x.reshape([-1, cfg.channels // cfg.groups, 0, 0])
            x0, x1 = xg[:, :b], xg[:, b:]
            xn = x0 * F.sigmoid(self.cweight * x0.mean(axis=[2, 3], keepdim=True) + self.cbias)
            xs = x1 * F.sigmoid(self.sweight * F.group_norm(x1, b, cfg.gn_eps) + self.sbias)
            return F.channel_shuffle(paddle.concat([xn, xs], axis=1).reshape([-1, cfg.channels, 0, 0]), 2)

    spec = ShuffleAttentionConfig(16, 2, **SHUFFLE_PRESETS["paper"])
    report = check(NoAffine(16, 2, **SHUFFLE_PRESETS["paper"]), spec)
    assert not report.passed
    assert "grad:input" in report.failing_quantities("n2-7x5") and "output" not in report.failing_quantities()
    assert check(bp.ShuffleAttention(16, 2, **SHUFFLE_PRESETS["paper"]), spec).passed
