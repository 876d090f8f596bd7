"""GAM (Liu et al., 2021): the float64 reference by hand and by finite differences, the copy of the paper's form that
detection tutorials use (transcribed as published) as the peer of the 'paper' preset in torch, Paddle and Flax, the
check diagnosing a copy without the channel sigmoid and one with another rate, and every error the config raises."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

from attn_core import GAM_PRESETS, ConfigError, GAMConfig, InputShapeError
from attn_core.autodiff import Node
from benchmarks.peers.published_torch import gam_attention as _copy_gam

from .._fw import FRAMEWORKS, backend, runner
from .._gradcheck import assert_reference_vjp
from .._timm import canonical, randomise, torch_step

RTOL = 1e-10


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Zero-padded 'same' cross-correlation of (N, C, H, W) with (O, C, k, k), written as loops over the kernel."""
    k = w.shape[2]
    p = k // 2
    n, _, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    out = np.zeros((n, w.shape[0], h, wd))
    for i in range(k):
        for j in range(k):
            out += np.einsum("nchw,oc->nohw", xp[:, :, i:i + h, j:j + wd], w[:, :, i, j])
    return out + b[None, :, None, None]


def _bn(v: np.ndarray, w: dict[str, np.ndarray], prefix: str, training: bool) -> np.ndarray:
    if training:
        m, var = v.mean(axis=(0, 2, 3)), v.var(axis=(0, 2, 3))
    else:
        m, var = w[f"{prefix}.running_mean"], w[f"{prefix}.running_var"]
    r = (slice(None), None, None)
    return (v - m[r]) / np.sqrt(var[r] + 1e-5) * w[f"{prefix}.weight"][r] + w[f"{prefix}.bias"][r]


def _by_hand(w: dict[str, np.ndarray], x: np.ndarray, training: bool) -> tuple[np.ndarray, np.ndarray]:
    """GAM written out: the output and the channel gate."""
    rows = x.transpose(0, 2, 3, 1)  # (N, H, W, C): the MLP acts on each position's C values
    hid = np.maximum(rows @ w["channel_attention.0.weight"].T + w["channel_attention.0.bias"], 0.0)
    gate_c = _sigmoid(hid @ w["channel_attention.2.weight"].T + w["channel_attention.2.bias"]).transpose(0, 3, 1, 2)
    x1 = x * gate_c
    s = np.maximum(_bn(_conv(x1, w["spatial_attention.0.weight"], w["spatial_attention.0.bias"]), w,
                       "spatial_attention.1", training), 0.0)
    s = _bn(_conv(s, w["spatial_attention.3.weight"], w["spatial_attention.3.bias"]), w, "spatial_attention.4",
            training)
    return x1 * _sigmoid(s), gate_c


# ------------------------------------------------------------------------------------------ by hand
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_by_hand(training):
    cfg = GAMConfig(8, **GAM_PRESETS["paper"])
    rng = np.random.default_rng(7)
    w = cfg.init_weights(rng)
    x = rng.standard_normal((2, 8, 3, 4)) * 1.5 + 0.5
    want, gate_c = _by_hand(w, x, training)
    np.testing.assert_allclose(cfg.reference(w, x, training), want, rtol=1e-12)
    taps: dict[str, Node] = {}
    cfg.reference_forward(Node(x), {k: Node(v) for k, v in w.items()}, training, taps)
    np.testing.assert_allclose(taps["gam_channel_gate"].value, gate_c, rtol=1e-12)


def test_widths_and_the_default():
    """Cr = int(C / rate), as the copies compute it; the one preset is the paper's and is the default."""
    assert (GAMConfig(16).hidden, GAMConfig(12, rate=5).hidden, GAMConfig(6, rate=1.5).hidden) == (4, 2, 4)
    assert GAMConfig(8) == GAMConfig(8, **GAM_PRESETS["paper"])
    assert [p.shape for p in GAMConfig(8).param_table()][:5] == [(2, 8), (2,), (8, 2), (8,), (2, 8, 7, 7)]


# ------------------------------------------------------------------------------------ VJPs by finite differences
VJP_CASES = [("eval", GAMConfig(4, rate=2, kernel_size=3), (2, 4, 3, 2), False),
             ("train", GAMConfig(4, rate=2, kernel_size=3), (2, 4, 2, 3), True),
             ("k5-b1", GAMConfig(3, rate=1, kernel_size=5), (1, 3, 2, 2), False)]


@pytest.mark.parametrize("name,cfg,shape,training", VJP_CASES, ids=[c[0] for c in VJP_CASES])
def test_reference_vjp_matches_finite_differences(name, cfg, shape, training):
    rng = np.random.default_rng(sum(map(ord, name)))
    weights = cfg.init_weights(rng)
    x = rng.standard_normal(shape)
    assert_reference_vjp(name, cfg, weights, x, rng.standard_normal(shape), training)


# ------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("kwargs,message", [
    (dict(channels=0), "GAM: channels must be a positive integer, got 0"),
    (dict(channels=8, rate=0), "GAM: rate must be a positive finite number, got 0"),
    (dict(channels=8, rate=float("inf")), "GAM: rate must be a positive finite number, got inf"),
    (dict(channels=3, rate=4), r"GAM: the hidden width int\(channels / rate\) must be positive, got int\(3 / 4\) = 0"),
    (dict(channels=8, kernel_size=6), r"GAM: kernel_size must be a positive odd integer \(padding k // 2 keeps"),
    (dict(channels=8, bn_eps=0.0), "GAM: bn_eps must be a positive finite number, got 0.0"),
    (dict(channels=8, bn_momentum=2.0), r"GAM: bn_momentum \(torch convention: weight of the new batch\) must be in"),
])
def test_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        GAMConfig(**kwargs)


def test_training_needs_more_than_one_value_per_channel():
    cfg = GAMConfig(8)
    with pytest.raises(InputShapeError, match="GAM: BatchNorm in training needs more than one value per channel"):
        cfg.reference(cfg.init_weights(np.random.default_rng(0)), np.ones((1, 8, 1, 1)), training=True)


# ------------------------------------------------------------------------------------ the tutorials' copy
# (benchmarks/peers/published_torch.py, imported above: the one transcription, the benchmarks' torch peer too)


def _copy_module(channels: int, seed: int, rate: int = 4) -> Any:
    module = _copy_gam()(channels, rate).double()
    randomise(module, seed)
    return module


@pytest.mark.parametrize("channels,shape", [(16, (2, 16, 7, 5)), (8, (3, 8, 4, 3))])
def test_paper_preset_equals_the_copy(channels, shape):
    """The copy's state_dict loads strictly into ``GAM(C, **GAM_PRESETS['paper'])``; outputs, gradients and running
    statistics agree in eval and training (float64), and the float64 reference gives the same output."""
    module = _copy_module(channels, channels)
    ours = backend("torch").GAM(channels, **GAM_PRESETS["paper"]).double()
    ours.load_state_dict(copy.deepcopy(module.state_dict()), strict=True)
    rng = np.random.default_rng(channels)
    x, cot = rng.standard_normal(shape) * 1.5, rng.standard_normal(shape)
    for training in (False, True):
        ref = GAMConfig(channels).reference(canonical(ours), x, training)
        (y_a, dx_a, g_a, s_a), (y_o, dx_o, g_o, s_o) = (torch_step(m, x, cot, training) for m in (module, ours))
        np.testing.assert_allclose(y_o, y_a, rtol=RTOL, atol=1e-14)
        np.testing.assert_allclose(ref, y_a, rtol=RTOL, atol=1e-14)
        np.testing.assert_allclose(dx_o, dx_a, rtol=RTOL, atol=1e-13)
        for name in g_a:
            np.testing.assert_allclose(g_o[name], g_a[name], rtol=1e-9, atol=1e-12, err_msg=name)
        for name in s_a:
            np.testing.assert_allclose(s_o[name], s_a[name], rtol=RTOL, err_msg=name)


@pytest.mark.parametrize("fw", [f for f in FRAMEWORKS if f != "torch"])
def test_other_backends_equal_the_copy(fw):
    run = runner(fw)
    module = _copy_module(8, 5)
    weights = canonical(module)
    x = np.random.default_rng(4).standard_normal((3, 8, 5, 4)) + 0.3
    for training in (False, True):
        y_a, _, _, state_a = torch_step(module, x, None, training)
        got = run.run("gam", GAMConfig(8), weights, x, None, dtype="float64", training=training,
                      mode=run.default_mode)
        np.testing.assert_allclose(got.y, y_a, rtol=RTOL, atol=1e-14, err_msg=f"{fw} training={training}")
    for name in ("spatial_attention.4.running_mean", "spatial_attention.4.running_var"):
        np.testing.assert_allclose(got.state[name], state_a[name], rtol=RTOL, err_msg=name)


def test_check_passes_the_copy_and_catches_a_missing_channel_sigmoid():
    """``conformance.check`` of the copy (its ``spatial_attention`` returns the spatial logits): PASS as 'paper'; the
    same copy with the channel gate's sigmoid left out FAILs with the first difference at the spatial logits, whose
    input is already wrong (the channel gate is computed inline: no submodule returns it)."""
    from conformance import check

    taps = {"gam_spatial_logits": "spatial_attention"}
    assert check(_copy_gam()(8), GAMConfig(8), taps=taps).passed
    class NoChannelSigmoid(_copy_gam()):  # the copy's forward with `.sigmoid()` dropped from the channel attention
        def forward(self, x: Any) -> Any:
            b, c, h, w = x.shape
            att = self.channel_attention(x.permute(0, 2, 3, 1).reshape(b, -1, c)).view(b, h, w, c)
            x = x * att.permute(0, 3, 1, 2)
            return x * self.spatial_attention(x).sigmoid()

    broken = NoChannelSigmoid(8)
    report = check(broken, GAMConfig(8), taps=taps, dtypes=("float64",))
    assert not report.passed
    assert report.diagnosis("n2-7x5", "float64").stage == "GAM spatial logits"


def test_another_rate_is_refused_by_shape():
    """The copy at rate 2 (hidden C / 2) does not load into the paper's r = 4: the weights' shapes differ."""
    module = _copy_module(8, 1, rate=2)
    with pytest.raises(RuntimeError, match="size mismatch"):
        backend("torch").GAM(8).double().load_state_dict(module.state_dict(), strict=True)
