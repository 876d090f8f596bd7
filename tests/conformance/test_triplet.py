"""Triplet attention (Misra et al., WACV 2021): the float64 reference by hand and by finite differences, the
authors' published module (landskape-ai/triplet-attention, ``MODELS/triplet_attention.py``) as a test peer of each
preset, the porting bugs that hold the forms apart, and every hyperparameter the config refuses."""

from __future__ import annotations

import numpy as np
import pytest

from attn_core import TRIPLET_PRESETS, ConfigError, InputShapeError, TripletAttentionConfig, WeightLoadError
from attn_core.autodiff import Node
from benchmarks.peers.published_torch import triplet_attention as published
from conformance import check
from conformance.runners import ParamMapError

from .._fw import FRAMEWORKS, backend
from .._gradcheck import assert_reference_vjp
from .._timm import randomise
from ._published import assert_backend_equals_peer, assert_same_torch_step

TAPS = {"gate_cw": "ChannelGateH", "gate_hc": "ChannelGateW", "gate_hw": "SpatialGate"}


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


# ------------------------------------------------------------------------------------------ by hand
def _gate_by_hand(z: np.ndarray, w: dict[str, np.ndarray], head: str, max_first: bool = True) -> np.ndarray:
    """One branch's gate of one sample's rotation ``z`` (A, B, D), pooled over A: (B, D), with an eval BatchNorm."""
    pooled = np.stack([z.max(axis=0), z.mean(axis=0)] if max_first else [z.mean(axis=0), z.max(axis=0)])
    kernel = w[f"{head}.conv.weight"][0]  # (2, k, k)
    k = kernel.shape[-1]
    padded = np.pad(pooled, ((0, 0), (k // 2, k // 2), (k // 2, k // 2)))
    b, d = z.shape[1:]
    s = np.array([[np.sum(padded[:, i:i + k, j:j + k] * kernel) for j in range(d)] for i in range(b)])
    s = (s - w[f"{head}.bn.running_mean"]) / np.sqrt(w[f"{head}.bn.running_var"] + 1e-5) * w[f"{head}.bn.weight"] \
        + w[f"{head}.bn.bias"]
    return _sigmoid(s)


@pytest.mark.parametrize("no_spatial", [False, True], ids=["three-branches", "no-spatial"])
def test_triplet_by_hand(no_spatial):
    """Each gate by hand on one (3, 2, 4) sample: the (C, W) gate from the maximum and mean over H, the (H, C) one
    over W, the (H, W) one over C; the products averaged."""
    cfg = TripletAttentionConfig(3, kernel_size=3, no_spatial=no_spatial)
    rng = np.random.default_rng(11)
    w = cfg.init_weights(rng)
    x = rng.standard_normal((1, 3, 2, 4))
    x0 = x[0]
    g_cw = _gate_by_hand(x0.transpose(1, 0, 2), w, "ChannelGateH.spatial")  # (C, W)
    g_hc = _gate_by_hand(x0.transpose(2, 1, 0), w, "ChannelGateW.spatial")  # (H, C)
    outs = [x0 * g_cw[:, None, :], x0 * g_hc.T[:, :, None]]
    if not no_spatial:
        outs.append(x0 * _gate_by_hand(x0, w, "SpatialGate.spatial")[None])
    np.testing.assert_allclose(cfg.reference(w, x)[0], sum(outs) / len(outs), rtol=1e-13)
    taps: dict[str, Node] = {}
    cfg.reference_forward(Node(x), {k: Node(v) for k, v in w.items()}, taps=taps)
    assert list(taps) == ["gate_cw", "gate_hc"] + ([] if no_spatial else ["gate_hw"])
    np.testing.assert_allclose(taps["gate_cw"].value[0, 0], g_cw, rtol=1e-13)
    np.testing.assert_allclose(taps["gate_hc"].value[0, 0], g_hc, rtol=1e-13)


def test_zpool_order_and_momentum_by_hand():
    """``pool_order='mean_max'`` puts the mean map on input channel 0; in training each BatchNorm normalises its one
    map over the batch and moves its running mean by the authors' momentum 0.01 (torch's convention)."""
    cfg = TripletAttentionConfig(2, kernel_size=1, pool_order="mean_max")
    rng = np.random.default_rng(12)
    w = cfg.init_weights(rng)
    x = rng.standard_normal((2, 2, 3, 2))
    np.testing.assert_allclose(
        cfg.reference(w, x[:1])[0, :, :, :],
        (x[0] * _gate_by_hand(x[0].transpose(1, 0, 2), w, "ChannelGateH.spatial", False)[:, None, :]
         + x[0] * _gate_by_hand(x[0].transpose(2, 1, 0), w, "ChannelGateW.spatial", False).T[:, :, None]
         + x[0] * _gate_by_hand(x[0], w, "SpatialGate.spatial", False)[None]) / 3, rtol=1e-13)
    state = cfg.reference_state(w, x)
    kernel = w["SpatialGate.spatial.conv.weight"][0, :, 0, 0]  # (mean, max) weights of the 1x1 convolution
    s = kernel[0] * x.mean(axis=1) + kernel[1] * x.max(axis=1)  # (N, H, W)
    np.testing.assert_allclose(state["SpatialGate.spatial.bn.running_mean"],
                               0.99 * w["SpatialGate.spatial.bn.running_mean"] + 0.01 * s.mean(), rtol=1e-13)
    np.testing.assert_allclose(state["SpatialGate.spatial.bn.running_var"],
                               0.99 * w["SpatialGate.spatial.bn.running_var"] + 0.01 * s.var(ddof=1), rtol=1e-13)


def test_presets():
    assert TripletAttentionConfig(8) == TripletAttentionConfig(8, **TRIPLET_PRESETS["original"])
    names = [p.name for p in TripletAttentionConfig(8, **TRIPLET_PRESETS["no_spatial"]).param_table()]
    assert names == [f"{b}.spatial.{layer}" for b in ("ChannelGateH", "ChannelGateW")
                     for layer in ("conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var")]
    assert len(TripletAttentionConfig(8).param_table()) == 15


# ------------------------------------------------------------------------------------ VJPs by finite differences
VJP_CASES = [
    ("k3-eval", TripletAttentionConfig(3, kernel_size=3), (2, 3, 3, 4), False),
    ("k7-wider-than-the-map", TripletAttentionConfig(2), (1, 2, 3, 2), False),
    ("train-no-spatial-mean-max", TripletAttentionConfig(2, kernel_size=3, no_spatial=True, pool_order="mean_max"),
     (2, 2, 2, 3), True),
    ("train", TripletAttentionConfig(2, kernel_size=3), (2, 2, 3, 2), True),
]


@pytest.mark.parametrize("name,cfg,shape,training", VJP_CASES, ids=[c[0] for c in VJP_CASES])
def test_reference_vjp_matches_finite_differences(name, cfg, shape, training):
    rng = np.random.default_rng(sum(map(ord, name)))
    weights = cfg.init_weights(rng)
    assert_reference_vjp(name, cfg, weights, rng.standard_normal(shape), rng.standard_normal(shape), training)


# --------------------------------------------------------------------------- the published module as a peer
@pytest.mark.parametrize("preset", list(TRIPLET_PRESETS))
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_published_module_equals_its_preset(preset, training):
    """The authors' module with every parameter and BatchNorm buffer drawn at random; its state_dict loads strictly
    into the project's torch module of the matching preset, and both compute the same output, gradients and running
    statistics (float64, a non-square map)."""
    backend("torch")
    theirs = published()(16, 16, no_spatial=TRIPLET_PRESETS[preset]["no_spatial"]).double()
    state = randomise(theirs, 3)
    ours = backend("torch").create_attn("triplet", 16, **TRIPLET_PRESETS[preset]).double()
    ours.load_state_dict(state, strict=True)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 16, 7, 5)) + rng.uniform(-1, 1, (1, 16, 1, 1))
    assert_same_torch_step(theirs, ours, x, rng.standard_normal(x.shape), training)


@pytest.mark.parametrize("fw", [pytest.param(f, marks=[pytest.mark.slow] if f == "flax" else [])
                                for f in FRAMEWORKS if f != "torch"])  # Flax compiles each program
def test_other_backends_equal_the_published_module(fw):
    """Paddle and Flax, given the authors' module's weights as canonical weights, compute its output in eval and
    in training (float64), and the running statistics its BatchNorms keep (momentum 0.01)."""
    backend("torch")
    theirs = published()(8, 16).double()
    randomise(theirs, 5)
    x = np.random.default_rng(6).standard_normal((2, 8, 5, 6))
    assert_backend_equals_peer(fw, "triplet", TripletAttentionConfig(8, **TRIPLET_PRESETS["original"]), theirs, x)


@pytest.mark.slow  # four checks of the suite's cases, one of them a training step
def test_published_module_passes_the_check_of_its_preset_only():
    """``conformance.check`` of the authors' module (float32, the suite's cases, forward and backward) passes
    against the 'original' preset; against 'no_spatial' its spatial gate's parameters are refused before anything
    runs; against torch's default BatchNorm momentum (0.1) only the training step's running statistics differ."""
    backend("torch")
    theirs = published()(8, 16)
    assert check(theirs, TripletAttentionConfig(8, **TRIPLET_PRESETS["original"])).passed
    with pytest.raises(ParamMapError) as err:
        check(theirs, TripletAttentionConfig(8, **TRIPLET_PRESETS["no_spatial"]))
    assert "SpatialGate.spatial.conv.weight" in str(err.value)
    report = check(theirs, TripletAttentionConfig(8, bn_momentum=0.1))
    assert [r.case for r in report.rows if r.failed] == ["n3-6x5-train"]
    assert {d.stage for d in report.diagnoses} == {"running statistics"}
    two = published()(8, 16, no_spatial=True)
    assert check(two, TripletAttentionConfig(8, **TRIPLET_PRESETS["no_spatial"])).passed


# ------------------------------------------------------------------------------------------- porting bugs
def test_preset_weights_do_not_load_into_the_other_form():
    """A checkpoint of the three-branch form into the two-branch one and back: strict loading refuses it, naming the
    spatial gate's parameters (unexpected one way, missing the other)."""
    torch_backend = backend("torch")
    full = TripletAttentionConfig(8, **TRIPLET_PRESETS["original"])
    two = TripletAttentionConfig(8, **TRIPLET_PRESETS["no_spatial"])
    with pytest.raises(WeightLoadError, match="SpatialGate.spatial.conv.weight"):
        torch_backend.load_weights(torch_backend.TripletAttention.from_config(two), full.init_weights(
            np.random.default_rng(0)))
    with pytest.raises(WeightLoadError, match="SpatialGate.spatial.bn.running_var"):
        torch_backend.load_weights(torch_backend.TripletAttention.from_config(full), two.init_weights(
            np.random.default_rng(0)))


# torch and Paddle: Flax's check of this port ran for most of a minute; its taps are transposed from NHWC as in
# test_check.py's Flax tap tests, and its mean_max form is the suite's row of triplet/c8-k3-meanmax
@pytest.mark.parametrize("fw", [pytest.param(f, marks=[] if f == "torch" else [pytest.mark.slow])
                                for f in FRAMEWORKS if f != "flax"])
def test_zpool_in_cbam_order_is_caught_at_the_first_gate(fw):
    """A copy that reuses CBAM's spatial gate (timm and the seed articles: cat(mean, max)) for ZPool: the first
    difference is the first branch's gate, named by stage."""
    module = backend(fw).create_attn("triplet", 8, pool_order="mean_max")
    report = check(module, TripletAttentionConfig(8), taps=TAPS)
    assert not report.passed
    assert report.first_difference.stage == "C-W gate"
    assert check(module, TripletAttentionConfig(8, pool_order="mean_max"), taps=TAPS).passed


def test_paddle_momentum_left_in_torch_convention_is_caught():
    """The authors' ``momentum=0.01`` passed as is to Paddle's BatchNorm2D, whose momentum weighs the running value:
    the layer keeps 1 % of it. The forward pass agrees; the training step's running statistics are the diagnosis."""
    paddle_backend = backend("paddle")
    unconverted = paddle_backend.TripletAttention(8, bn_momentum=0.99)  # Paddle's momentum 1 - 0.99 = 0.01
    report = check(unconverted, TripletAttentionConfig(8), framework="paddle")
    assert [r.case for r in report.rows if r.failed] == ["n3-6x5-train"]
    assert {d.stage for d in report.diagnoses} == {"running statistics"}
    assert check(paddle_backend.TripletAttention(8), TripletAttentionConfig(8), framework="paddle").passed


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("kwargs,message", [
    ({"channels": 0}, "channels must be"),
    ({"kernel_size": 4}, "kernel_size must be a positive odd integer"),
    ({"kernel_size": True}, "kernel_size must be a positive odd integer"),
    ({"no_spatial": "yes"}, "no_spatial must be one of"),
    ({"pool_order": "max"}, "pool_order must be one of 'mean_max', 'max_mean'"),
    ({"bn_eps": 0.0}, "bn_eps must be a positive finite number"),
    ({"bn_momentum": 1.5}, "bn_momentum"),
])
def test_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message) as err:
        TripletAttentionConfig(**{"channels": 8, **kwargs})
    assert str(err.value).startswith("TripletAttention: ")


@pytest.mark.parametrize("shape,no_spatial", [((1, 4, 1, 1), False), ((1, 1, 1, 5), True), ((1, 1, 4, 1), True)])
def test_training_needs_more_than_one_value_per_batch_norm(shape, no_spatial):
    """Each BatchNorm sees its own map: N * H * W for the spatial gate, N * C * W and N * H * C for the others."""
    cfg = TripletAttentionConfig(None, no_spatial=no_spatial)
    with pytest.raises(InputShapeError, match="TripletAttention: BatchNorm in training"):
        cfg.check_input(shape, "float64", True, training=True)
    cfg.check_input(shape, "float64", True, training=False)
