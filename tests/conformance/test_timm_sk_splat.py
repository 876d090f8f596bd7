"""timm's Selective Kernel convolution (``sk``) and split attention (``splat``): the float64 reference by hand and
by finite differences, equality with timm's own modules in torch, Paddle and Flax, the refused configurations, and
the conformance cases of a module whose output has other channels and another map than its input.

Both modules change channels and stride, so the hand calculations use strided, multi-channel inputs; expected
values are computed here from the equations (SKNet, arXiv:1903.06586; ResNeSt, arXiv:2004.08955) with loops and
``math.exp``, never from the code under test.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from attn_core import ConfigError, InputShapeError, SelectiveKernelConfig, SplitAttnConfig, create_config
from conformance import check
from conformance.cases import CASES, Case, cases_for

from .._fw import FRAMEWORKS, backend, runner
from .._gradcheck import assert_reference_vjp
from .._timm import canonical, timm_attn, timm_kwargs, torch_step
from ..core.test_autodiff import naive_conv2d


def sig(t: float) -> float:
    return 1.0 / (1.0 + math.exp(-t))


def softmax(values: list[float]) -> list[float]:
    e = [math.exp(v) for v in values]
    return [v / sum(e) for v in e]


def bn_eval(v: Any, w: Any, b: Any, mean: Any, var: Any, eps: float = 1e-5) -> Any:
    """BatchNorm with running statistics, per channel on axis 1 of an NCHW array."""
    def c(a: Any) -> Any:
        return np.asarray(a).reshape(1, -1, 1, 1)
    return (v - c(mean)) / np.sqrt(c(var) + eps) * c(w) + c(b)


# ------------------------------------------------------------------------------------------- by hand: sk
def test_sk_by_hand_on_a_1x1_map():
    """Two 1-channel paths on a 1x1 map: each convolution reduces to its kernel's centre."""
    cfg = SelectiveKernelConfig(2, out_channels=1, rd_channels=1)
    assert cfg.kernels == (3, 3) and cfg.dilations == (1, 2) and cfg.paddings == (1, 2)
    w = {}
    for i, (centre, scale, shift, mean, var) in enumerate([(2.0, 1.5, 0.25, 0.5, 4.0), (-1.0, 0.5, 1.0, -1.0, 1.0)]):
        k = np.zeros((1, 1, 3, 3))
        k[0, 0, 1, 1] = centre
        k[0, 0, 0, 0] = 7.0  # off-centre: reads padding only
        w |= {f"paths.{i}.conv.weight": k, f"paths.{i}.bn.weight": np.array([scale]),
              f"paths.{i}.bn.bias": np.array([shift]), f"paths.{i}.bn.running_mean": np.array([mean]),
              f"paths.{i}.bn.running_var": np.array([var])}
    w |= {"attn.fc_reduce.weight": np.full((1, 1, 1, 1), 0.5), "attn.bn.weight": np.array([2.0]),
          "attn.bn.bias": np.array([0.5]), "attn.bn.running_mean": np.array([0.25]),
          "attn.bn.running_var": np.array([0.5]), "attn.fc_select.weight": np.array([1.5, -0.75]).reshape(2, 1, 1, 1)}
    x = np.array([0.75, -2.0]).reshape(1, 2, 1, 1)
    eps = 1e-5
    u0 = max(0.0, (2.0 * 0.75 - 0.5) / math.sqrt(4.0 + eps) * 1.5 + 0.25)
    u1 = max(0.0, (-1.0 * -2.0 + 1.0) / math.sqrt(1.0 + eps) * 0.5 + 1.0)
    z = max(0.0, (0.5 * (u0 + u1) - 0.25) / math.sqrt(0.5 + eps) * 2.0 + 0.5)
    a = softmax([1.5 * z, -0.75 * z])
    want = a[0] * u0 + a[1] * u1
    np.testing.assert_allclose(cfg.reference(w, x), [[[[want]]]], rtol=1e-14)


def test_sk_by_hand_strided_and_dilated():
    """Stride 2, 4 -> 6 channels, a 3x3 and a dilated (5x5 as dilation 2) path on 5x7 maps: the convolutions by
    loops, timm's padding ((stride - 1) + d (k - 1)) // 2, the softmax by math.exp."""
    cfg = SelectiveKernelConfig(4, out_channels=6, stride=2, rd_channels=3)
    rng = np.random.default_rng(3)
    w = cfg.init_weights(rng)
    x = rng.standard_normal((2, 4, 5, 7))
    paths = []
    for i, (d, p) in enumerate([(1, 1), (2, 2)]):  # (1 + 2) // 2 = 1 and (1 + 4) // 2 = 2
        u = naive_conv2d(x[:, 2 * i:2 * i + 2], w[f"paths.{i}.conv.weight"], stride=2, padding=p, dilation=d)
        u = bn_eval(u, *(w[f"paths.{i}.bn.{k}"] for k in ("weight", "bias", "running_mean", "running_var")))
        paths.append(np.maximum(u, 0.0))
    assert paths[0].shape == paths[1].shape == (2, 6, 3, 4)
    s = (paths[0] + paths[1]).mean(axis=(2, 3))  # (N, 6)
    want = np.zeros_like(paths[0])
    for n in range(2):
        z = w["attn.fc_reduce.weight"][:, :, 0, 0] @ s[n]
        z = (z - w["attn.bn.running_mean"]) / np.sqrt(w["attn.bn.running_var"] + 1e-5) * w["attn.bn.weight"] \
            + w["attn.bn.bias"]
        logits = w["attn.fc_select.weight"][:, :, 0, 0] @ np.maximum(z, 0.0)  # path 0's 6, then path 1's 6
        for c in range(6):
            a = softmax([logits[c], logits[6 + c]])
            want[n, c] = a[0] * paths[0][n, c] + a[1] * paths[1][n, c]
    np.testing.assert_allclose(cfg.reference(w, x), want, rtol=1e-12)


# ---------------------------------------------------------------------------------------- by hand: splat
def _splat_1x1_weights(centres: list[float], fc1_w: Any, fc1_b: Any, fc2_w: Any, fc2_b: Any) -> dict[str, Any]:
    conv = np.zeros((len(centres), 1, 3, 3))
    conv[:, 0, 1, 1] = centres
    conv[:, 0, 2, 2] = -9.0  # off-centre: reads padding only
    return {"conv.weight": conv, "fc1.weight": np.asarray(fc1_w, dtype=float), "fc1.bias": np.asarray(fc1_b, float),
            "fc2.weight": np.asarray(fc2_w, dtype=float), "fc2.bias": np.asarray(fc2_b, dtype=float)}


def test_splat_by_hand_radix_2():
    """One cardinal group, radix 2, 1x1 map: split r reads input channel r; softmax over the two splits."""
    cfg = SplitAttnConfig(2, out_channels=1, rd_channels=1)
    assert (cfg.mid, cfg.attn_channels, cfg.pad) == (2, 2, 1)
    w = _splat_1x1_weights([1.5, -0.5], [[[[0.5]]], [[[-1.0]]]], [0.25, 2.0], np.array([[1.0, -2.0], [0.5, 0.75]])
                           .reshape(2, 2, 1, 1), [0.1, -0.2])
    x = np.array([2.0, -3.0]).reshape(1, 2, 1, 1)
    u = [max(0.0, 1.5 * 2.0), max(0.0, -0.5 * -3.0)]
    s = u[0] + u[1]
    h = [max(0.0, 0.5 * s + 0.25), max(0.0, -1.0 * s + 2.0)]
    logits = [1.0 * h[0] - 2.0 * h[1] + 0.1, 0.5 * h[0] + 0.75 * h[1] - 0.2]
    a = softmax(logits)
    np.testing.assert_allclose(cfg.reference(w, x), [[[[a[0] * u[0] + a[1] * u[1]]]]], rtol=1e-14)


def test_splat_by_hand_radix_1_is_a_sigmoid_gate():
    cfg = SplitAttnConfig(1, radix=1, rd_channels=1)
    w = _splat_1x1_weights([2.0], [[[[1.5]]]], [-0.5], [[[[0.8]]]], [0.3])
    x = np.array([1.25]).reshape(1, 1, 1, 1)
    u = 2.0 * 1.25
    g = sig(0.8 * max(0.0, 1.5 * u - 0.5) + 0.3)
    np.testing.assert_allclose(cfg.reference(w, x), [[[[u * g]]]], rtol=1e-14)


def test_splat_by_hand_cardinal_groups_order_the_logits_group_major():
    """groups 2, radix 2, 4 -> 2 channels on a 1x1 map. The convolution's output is split-major (channel r * 2 + c
    is split r of channel c), fc2's logits are group-major (logit 2 g + r is group g, split r): RadixSoftmax's
    view(B, groups, radix, -1) and transpose. Output channel c = group c here (one channel per group)."""
    cfg = SplitAttnConfig(4, out_channels=2, groups=2, rd_channels=1)
    assert (cfg.mid, cfg.attn_channels) == (4, 2)
    centres = [1.0, 2.0, -1.5, 0.5]
    fc1 = np.array([0.5, -0.25]).reshape(2, 1, 1, 1)  # group g reads s_g
    fc2 = np.array([1.0, -1.0, 2.0, 0.5]).reshape(4, 1, 1, 1)  # outputs 2g, 2g + 1 read h_g
    w = _splat_1x1_weights(centres, fc1, [0.5, 1.0], fc2, [0.0, 0.1, -0.1, 0.2])
    x = np.array([1.0, -2.0, 0.5, 3.0]).reshape(1, 4, 1, 1)
    u = [max(0.0, centres[o] * x[0, o, 0, 0]) for o in range(4)]  # conv groups 4: output o reads input o
    want = []
    for c in range(2):
        s = u[c] + u[2 + c]
        h = max(0.0, fc1[c, 0, 0, 0] * s + [0.5, 1.0][c])
        logits = [fc2[2 * c + r, 0, 0, 0] * h + [0.0, 0.1, -0.1, 0.2][2 * c + r] for r in range(2)]
        a = softmax(logits)
        want.append(a[0] * u[c] + a[1] * u[2 + c])
    np.testing.assert_allclose(cfg.reference(w, x)[0, :, 0, 0], want, rtol=1e-14)


def test_splat_by_hand_strided_with_batch_norm():
    """radix 2, stride 2, BatchNorm (eval) after the convolution and fc1, on a 5x6 map: loops and math.exp."""
    cfg = SplitAttnConfig(4, out_channels=2, stride=2, norm_layer="batchnorm", rd_channels=2)
    rng = np.random.default_rng(5)
    w = cfg.init_weights(rng)
    x = rng.standard_normal((2, 4, 5, 6))
    u = naive_conv2d(x, w["conv.weight"], stride=2, padding=1, groups=2)
    u = np.maximum(bn_eval(u, *(w[f"bn0.{k}"] for k in ("weight", "bias", "running_mean", "running_var"))), 0.0)
    assert u.shape == (2, 4, 3, 3)
    want = np.zeros((2, 2, 3, 3))
    for n in range(2):
        s = (u[n, :2] + u[n, 2:]).mean(axis=(1, 2))
        h = w["fc1.weight"][:, :, 0, 0] @ s + w["fc1.bias"]
        h = np.maximum((h - w["bn1.running_mean"]) / np.sqrt(w["bn1.running_var"] + 1e-5) * w["bn1.weight"]
                       + w["bn1.bias"], 0.0)
        logits = w["fc2.weight"][:, :, 0, 0] @ h + w["fc2.bias"]  # one group: logit r * 2 + c
        for c in range(2):
            a = softmax([logits[c], logits[2 + c]])
            want[n, c] = a[0] * u[n, c] + a[1] * u[n, 2 + c]
    np.testing.assert_allclose(cfg.reference(w, x), want, rtol=1e-12)


# ------------------------------------------------------------------------------ VJP by finite differences
VJP_CASES = [
    ("sk-eval-s2", SelectiveKernelConfig(4, out_channels=2, stride=2, rd_channels=2), (2, 4, 5, 4), False),
    ("sk-train-k35", SelectiveKernelConfig(2, out_channels=3, kernel_size=(3, 5), keep_3x3=False, rd_channels=2),
     (2, 2, 4, 5), True),
    ("splat-r2-train-s2", SplitAttnConfig(4, out_channels=2, stride=2, norm_layer="batchnorm", rd_channels=1),
     (3, 4, 5, 4), True),
    ("splat-r1-eval", SplitAttnConfig(2, radix=1, rd_channels=2, bias=True, act_layer="silu"), (2, 2, 3, 4),
     False),
    ("splat-r3-g2-eval", SplitAttnConfig(6, out_channels=4, groups=2, radix=3, rd_channels=2), (1, 6, 3, 3),
     False),
]


@pytest.mark.parametrize("name,cfg,shape,training", VJP_CASES, ids=[c[0] for c in VJP_CASES])
def test_reference_vjp_matches_finite_differences(name, cfg, shape, training):
    rng = np.random.default_rng(sum(map(ord, name)))
    weights = cfg.init_weights(rng)
    x = rng.standard_normal(shape)
    y0 = cfg.reference(weights, x, training)
    y = assert_reference_vjp(name, cfg, weights, x, rng.standard_normal(y0.shape), training)
    np.testing.assert_array_equal(y, y0)


# -------------------------------------------------------------------------------------------- equal to timm
TIMM_CASES = [
    ("sk", 8, {}),
    ("sk", 12, {"out_channels": 16, "stride": 2, "rd_channels": 6}),
    ("sk", 6, {"kernel_size": [3, 5, 7], "keep_3x3": False, "split_input": False, "groups": 2, "act_layer": "silu"}),
    ("sk", 8, {"kernel_size": 5, "dilation": 2, "groups": 8, "out_channels": 4}),  # groups clipped to out_channels
    ("splat", 8, {}),
    ("splat", 8, {"radix": 1, "out_channels": 4}),
    ("splat", 8, {"groups": 2, "stride": 2, "out_channels": 16, "norm_layer": "batchnorm"}),
    ("splat", 12, {"radix": 4, "groups": 3, "rd_channels": 3, "bias": True}),
    ("splat", 6, {"kernel_size": 5, "dilation": 2, "padding": 4, "act_layer": "silu", "norm_layer": "batchnorm",
                  "radix": 3, "groups": 2, "rd_ratio": 0.5, "rd_divisor": 4}),
]
TIMM_IDS = [f"{k}-c{c}-" + "-".join(f"{a}{b}" for a, b in kw.items()) for k, c, kw in TIMM_CASES]
#: the cases Paddle runs in the fast tier (one strided, channel-changing form of each key) and Flax the first of
#: them in eval (each Flax row jit-compiles its own programs); the rest are slow
FAST_THROUGH_WEIGHTS = (1, 6)
THROUGH_WEIGHTS = [pytest.param(*case, training, fw, id=f"{name}-{'train' if training else 'eval'}-{fw}",
                                marks=() if i in FAST_THROUGH_WEIGHTS and (fw == "paddle" or (
                                    i == FAST_THROUGH_WEIGHTS[0] and not training)) else pytest.mark.slow)
                   for i, (case, name) in enumerate(zip(TIMM_CASES, TIMM_IDS, strict=True))
                   for training in (False, True) for fw in FRAMEWORKS if fw != "torch"]


def _timm_kwargs(kw: dict[str, Any]) -> dict[str, Any]:
    """The project's string options as timm's layer classes."""
    from torch import nn

    out = timm_kwargs(kw)
    if "norm_layer" in out:
        out["norm_layer"] = nn.BatchNorm2d
    return out


def _randomised_timm(key: str, channels: int, kw: dict[str, Any], seed: int) -> Any:
    return timm_attn(key, channels, seed, **_timm_kwargs(kw))


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("key,channels,kw", TIMM_CASES, ids=TIMM_IDS)
def test_equal_to_timm_in_torch(key, channels, kw, training):
    b = backend("torch")
    theirs = _randomised_timm(key, channels, kw, seed=len(key) * 31 + channels)
    ours = b.create_attn(key, channels, **kw).double()
    ours.load_state_dict(theirs.state_dict(), strict=True)  # timm's keys, buffers included
    x = np.random.default_rng(channels).standard_normal((3, channels, 7, 6)) * 1.5
    ref_y = ours.config.reference(canonical(theirs), x, training)
    cot = np.random.default_rng(1).standard_normal(ref_y.shape)
    want, got = torch_step(theirs, x, cot, training), torch_step(ours, x, cot, training)
    assert got[0].shape == want[0].shape
    np.testing.assert_allclose(got[0], want[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ref_y, want[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-10, atol=1e-12)
    assert sorted(got[2]) == sorted(want[2])
    for name, g in got[2].items():
        np.testing.assert_allclose(g, want[2][name], rtol=1e-10, atol=1e-12, err_msg=name)
    if training:
        assert bool(want[3]) == ours.config.has_batch_norm
        for name, value in want[3].items():
            np.testing.assert_allclose(got[3][name], value, rtol=1e-12, err_msg=name)


@pytest.mark.parametrize("key,channels,kw,training,fw", THROUGH_WEIGHTS)
def test_equal_to_timm_through_canonical_weights(fw, key, channels, kw, training):
    """Paddle and Flax hold timm's state_dict as the canonical weights (the same names, torch's layout) and give
    timm's output, gradients and running statistics, in float64 through the runner."""
    r = runner(fw)
    theirs = _randomised_timm(key, channels, kw, seed=len(key) * 31 + channels)
    weights = canonical(theirs)
    config = create_config(key, channels, **kw)
    x = np.random.default_rng(channels).standard_normal((3, channels, 7, 6)) * 1.5
    cot = np.random.default_rng(1).standard_normal(config.reference(weights, x, training).shape)
    y, dx, grads, state = torch_step(theirs, x, cot, training)
    got = r.execute(r.build_handle(key, config), weights, x, cot, "float64", training, r.default_mode)
    np.testing.assert_allclose(got.y, y, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got.dx, dx, rtol=1e-10, atol=1e-12)
    assert sorted(got.dparams) == sorted(grads)
    for name, g in grads.items():
        # a bias before a training BatchNorm has a gradient of exactly 0, which both sides compute as cancelling sums
        np.testing.assert_allclose(got.dparams[name], g, rtol=1e-10, atol=1e-11, err_msg=name)
    if not training:
        return
    assert sorted(got.state) == sorted(state)
    for name, value in state.items():
        np.testing.assert_allclose(got.state[name], value, rtol=1e-12, err_msg=name)


@pytest.mark.parametrize("key,channels,kw", [TIMM_CASES[1], TIMM_CASES[6]], ids=[TIMM_IDS[1], TIMM_IDS[6]])
def test_timm_module_passes_conformance_check(key, channels, kw):
    """``conformance.check`` of timm's own module against the spec, the path a user's port takes; its strided
    output (other channels, another map) is compared through the reference's shape."""
    backend("torch")
    theirs = _randomised_timm(key, channels, kw, seed=7)
    report = check(theirs, create_config(key, channels, **kw), dtypes=("float64",),
                   taps={"path_attn": "attn"} if key == "sk" else {"radix_attn": "rsoftmax"})
    assert report.passed, str(report)


# --------------------------------------------------------------------------------------- refused configs
SK_ERRORS = [
    ({"in_channels": 0}, "SelectiveKernel: in_channels must be a positive integer, got 0"),
    ({"out_channels": -4}, "SelectiveKernel: out_channels must be a positive integer, got -4"),
    ({"kernel_size": 4}, r"SelectiveKernel: kernel_size must be an odd integer >= 3 .* got 4"),
    ({"kernel_size": 1}, r"SelectiveKernel: kernel_size must be an odd integer >= 3 .* got 1"),
    ({"kernel_size": [3, 4]}, r"SelectiveKernel: kernel_size must be an odd integer >= 3 .* got \(3, 4\)"),
    ({"kernel_size": 3.0}, r"SelectiveKernel: kernel_size must be an odd integer >= 3 .* got 3.0"),
    ({"kernel_size": []}, r"SelectiveKernel: kernel_size must name at least one path's kernel, got \(\)"),
    ({"stride": 0}, "SelectiveKernel: stride must be a positive integer, got 0"),
    ({"dilation": 0}, "SelectiveKernel: dilation must be a positive integer, got 0"),
    ({"groups": 0}, "SelectiveKernel: groups must be a positive integer, got 0"),
    ({"rd_divisor": 0}, "SelectiveKernel: rd_divisor must be a positive integer, got 0"),
    ({"rd_channels": 0}, "SelectiveKernel: rd_channels must be a positive integer, got 0"),
    ({"rd_ratio": 0.0}, "SelectiveKernel: rd_ratio must be a positive finite number, got 0.0"),
    ({"rd_ratio": float("nan")}, "SelectiveKernel: rd_ratio must be a positive finite number, got nan"),
    ({"keep_3x3": "yes"}, "SelectiveKernel: keep_3x3 must be one of True, False; got 'yes'"),
    ({"split_input": None}, "SelectiveKernel: split_input must be one of True, False; got None"),
    ({"act_layer": "gelu"}, "SelectiveKernel: act_layer must be one of 'relu', 'silu'; got 'gelu'"),
    ({"bn_eps": 0.0}, "SelectiveKernel: bn_eps must be a positive finite number, got 0.0"),
    ({"bn_momentum": 1.5}, r"SelectiveKernel: bn_momentum \(torch convention.*must be in \[0, 1\], got 1.5"),
    ({"in_channels": 9}, r"SelectiveKernel: in_channels \(9\) must be a multiple of the number of paths \(2\) with "
                         r"split_input=True"),
    ({"kernel_size": (3, 5, 7)}, r"SelectiveKernel: in_channels \(8\) must be a multiple of the number of paths "
                                 r"\(3\)"),
    ({"groups": 3}, r"SelectiveKernel: groups \(3\) must divide each path's input channels \(4\) and out_channels "
                    r"\(8\)"),
    ({"in_channels": 6, "groups": 3, "out_channels": 4},
     r"SelectiveKernel: groups \(3\) must divide each path's input channels \(3\) and out_channels \(4\)"),
]
SPLAT_ERRORS = [
    ({"in_channels": 0}, "SplitAttn: in_channels must be a positive integer, got 0"),
    ({"out_channels": -1}, "SplitAttn: out_channels must be a positive integer, got -1"),
    ({"kernel_size": 0}, "SplitAttn: kernel_size must be a positive integer, got 0"),
    ({"stride": 0}, "SplitAttn: stride must be a positive integer, got 0"),
    ({"dilation": 0}, "SplitAttn: dilation must be a positive integer, got 0"),
    ({"groups": 0}, "SplitAttn: groups must be a positive integer, got 0"),
    ({"radix": 0}, "SplitAttn: radix must be a positive integer, got 0"),
    ({"rd_divisor": 0}, "SplitAttn: rd_divisor must be a positive integer, got 0"),
    ({"padding": -1}, "SplitAttn: padding must be None or a non-negative integer, got -1"),
    ({"padding": 1.5}, "SplitAttn: padding must be None or a non-negative integer, got 1.5"),
    ({"rd_channels": 0}, "SplitAttn: rd_channels must be a positive integer, got 0"),
    ({"rd_ratio": -0.25}, "SplitAttn: rd_ratio must be a positive finite number, got -0.25"),
    ({"bias": "no"}, "SplitAttn: bias must be one of True, False; got 'no'"),
    ({"act_layer": "gelu"}, "SplitAttn: act_layer must be one of 'relu', 'silu'; got 'gelu'"),
    ({"norm_layer": "layernorm"}, "SplitAttn: norm_layer must be one of None, 'batchnorm'; got 'layernorm'"),
    ({"bn_eps": -1.0}, "SplitAttn: bn_eps must be a positive finite number, got -1.0"),
    ({"bn_momentum": -0.1}, r"SplitAttn: bn_momentum \(torch convention.*must be in \[0, 1\], got -0.1"),
    ({"in_channels": 6, "groups": 2}, r"SplitAttn: in_channels \(6\) must be a multiple of groups \* radix "
                                      r"\(2 \* 2\)"),
    ({"in_channels": 9, "radix": 1, "groups": 3, "out_channels": 4},
     r"SplitAttn: out_channels \(4\) must be a multiple of groups \(3\)"),
    ({"in_channels": 12, "radix": 4, "groups": 3},
     r"SplitAttn: the attention width \(32\) must be a multiple of groups \(3\)"),
    ({"in_channels": 8, "groups": 2, "rd_channels": 1, "radix": 1},
     r"SplitAttn: the attention width \(1\) must be a multiple of groups \(2\)"),
]


def _build(fw: str, key: str, kw: dict[str, Any]) -> Any:
    b = backend(fw)
    kw = dict(kw)
    channels = kw.pop("in_channels", 8)
    return b.create_attn(key, channels, **kw)


@pytest.mark.parametrize("kw,message", SK_ERRORS, ids=[str(k) for k, _ in SK_ERRORS])
def test_sk_config_errors(kw, message):
    args = {"in_channels": 8} | kw
    with pytest.raises(ConfigError, match=message):
        SelectiveKernelConfig(**args)


@pytest.mark.parametrize("kw,message", SPLAT_ERRORS, ids=[str(k) for k, _ in SPLAT_ERRORS])
def test_splat_config_errors(kw, message):
    args = {"in_channels": 8} | kw
    with pytest.raises(ConfigError, match=message):
        SplitAttnConfig(**args)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_backends_refuse_the_same(fw):
    """The groups errors, raised at construction in every backend with the config's message."""
    for key, kw, message in [("sk", {"groups": 3}, r"SelectiveKernel: groups \(3\) must divide"),
                             ("splat", {"in_channels": 6, "groups": 2}, r"SplitAttn: in_channels \(6\) must be a "
                                                                         r"multiple of groups \* radix")]:
        with pytest.raises(ConfigError, match=message):
            _build(fw, key, kw)


def test_input_shape_errors():
    """A map the convolution leaves empty, and training with one value per channel in the attention's BatchNorm
    (N = 1, which a 1x1 map after pooling always is)."""
    with pytest.raises(InputShapeError, match=r"SplitAttn: H = 2 is too small for the 3 x 3 convolution "
                                              r"\(dilation 1, padding 0\): it needs H >= 3"):
        SplitAttnConfig(4, padding=0).check_input((1, 4, 2, 5), "float64", True)
    with pytest.raises(InputShapeError, match=r"SplitAttn: W = 3 is too small .*dilation 3, padding 1.*W >= 5"):
        SplitAttnConfig(4, dilation=3).check_input((1, 9, 3, 4), "float32", True, layout="NHWC")
    SplitAttnConfig(4, padding=0).check_input((1, 4, 3, 3), "float64", True)  # 1x1 output: taken
    with pytest.raises(InputShapeError, match=r"SelectiveKernel: attn.bn: BatchNorm in training needs more than one "
                                              r"value per channel, got input shape \(1, 8, 1, 1\)"):
        SelectiveKernelConfig(8).check_input((1, 8, 6, 5), "float64", True, training=True)
    with pytest.raises(InputShapeError, match=r"SplitAttn: bn1: BatchNorm in training"):
        SplitAttnConfig(8, norm_layer="batchnorm").check_input((1, 8, 6, 5), "float64", True, training=True)
    SplitAttnConfig(8).check_input((1, 8, 6, 5), "float64", True, training=True)  # no BatchNorm: batch 1 trains


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_backends_refuse_batch_1_in_training(fw):
    r = runner(fw)
    config = SelectiveKernelConfig(4, out_channels=6, stride=2)
    weights = config.init_weights(np.random.default_rng(0))
    with pytest.raises(InputShapeError, match="SelectiveKernel: attn.bn: BatchNorm in training"):
        r.execute(r.build_handle("sk", config), weights, np.ones((1, 4, 5, 5)), None, "float64", True, "eager")


# ------------------------------------------------------------------------- configs and conformance cases
def test_derived_widths_are_timms():
    sk = SelectiveKernelConfig(64)
    assert (sk.out, sk.kernels, sk.dilations, sk.paddings, sk.path_in, sk.attn_channels) == \
        (64, (3, 3), (1, 2), (1, 2), 32, 8)
    # groups clipped to out_channels (16), the hidden width make_divisible(16 / 16, 8) = 8
    sk = SelectiveKernelConfig(32, out_channels=16, kernel_size=[3, 5, 7], keep_3x3=False, stride=2, dilation=2,
                               split_input=False, groups=64)
    assert (sk.kernels, sk.dilations, sk.paddings, sk.conv_groups, sk.attn_channels) == \
        ((3, 5, 7), (2, 2, 2), (2, 4, 6), 16, 8)
    assert sk.kernel_size == (3, 5, 7) and sk == SelectiveKernelConfig(32, 16, (3, 5, 7), 2, 2, 64,
                                                                       keep_3x3=False, split_input=False)
    sp = SplitAttnConfig(64)
    assert (sp.out, sp.mid, sp.attn_channels, sp.pad) == (64, 128, 32, 1)  # make_divisible(32, 8, min 32)
    sp = SplitAttnConfig(256, groups=2, radix=2, rd_channels=16, out_channels=128, kernel_size=5, padding=1)
    assert (sp.mid, sp.attn_channels, sp.pad) == (256, 32, 1)
    assert SplitAttnConfig(256, radix=4).attn_channels == 256


def test_output_shape_comes_from_the_reference():
    """A case's output (and cotangent) shape is the reference's: out_channels and the strided map."""
    case = Case("splat", "probe", (2, 8, 7, 5), (("out_channels", 16), ("stride", 2)))
    _, x, cot = case.data()
    assert x.shape == (2, 8, 7, 5) and cot.shape == (2, 16, 4, 3) == case.output_shape(case.config())
    se = Case("se", "probe", (2, 8, 7, 5))
    assert se.output_shape(se.config()) == (2, 8, 7, 5)


def test_cases_cover_what_the_modules_can_get_wrong():
    sk = [c for c in CASES if c.module == "sk"]
    splat = [c for c in CASES if c.module == "splat"]
    for cases in (sk, splat):
        configs = [c.config() for c in cases]
        assert any(cfg.stride == 2 for cfg in configs)
        assert any(c.training for c in cases) and any(not c.training for c in cases)
        assert any(c.shape[0] == 1 for c in cases) and any(c.shape[2:] == (1, 1) for c in cases)
        assert any(c.shape[2] != c.shape[3] and c.shape[2] % 2 for c in cases)
        assert any(cfg.out != cfg.in_channels for cfg in configs)
        assert any(c.input_scale > 1 for c in cases)  # a saturated softmax
    assert {c.config().radix for c in splat} >= {1, 2}
    assert any(c.training and c.config().has_norm for c in splat)
    assert any(max(c.config().kernels) > min(c.shape[2:]) for c in sk)  # a kernel wider than the map


def test_check_cases_of_a_strided_spec_have_its_output_shape():
    cases = cases_for(SelectiveKernelConfig(8, out_channels=4, stride=2))
    assert [c.case_id for c in cases] == ["n2-7x5", "n1-5x8", "n2-1x1", "n3-6x5-train"]
    assert [c.data()[2].shape for c in cases] == [(2, 4, 4, 3), (1, 4, 3, 4), (2, 4, 1, 1), (3, 4, 3, 3)]
