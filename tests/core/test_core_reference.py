"""The float64 reference forward and its VJPs.

Forward values are hand calculations on tiny inputs (sigmoid by math.exp), or the module's equations restated
in NumPy here with loops for the convolutions. Gradients are checked against central finite differences of
``config.reference`` in float64.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from attn_core import CBAMConfig, ChannelAttentionConfig, ECAConfig, SEConfig, SimAMConfig, SpatialAttentionConfig

from .._gradcheck import assert_reference_vjp


def sig(t: float) -> float:
    return 1.0 / (1.0 + math.exp(-t))


def x_of(*channels, dtype=np.float64):
    """An input (1, C, 1, W) whose channel c holds the given row."""
    return np.array(channels, dtype=dtype)[None, :, None, :]


# ---------------------------------------------------------------------------------------------------- SE
def _se_weights(dtype=np.float64):
    # fc1: 2 -> 1, fc2: 1 -> 2; every value exactly representable in float32
    return {
        "fc1.weight": np.array([0.5, -1.0], dtype=dtype).reshape(1, 2, 1, 1),
        "fc1.bias": np.array([0.25], dtype=dtype),
        "fc2.weight": np.array([2.0, -4.0], dtype=dtype).reshape(2, 1, 1, 1),
        "fc2.bias": np.array([0.125, 0.25], dtype=dtype),
    }


def test_se_by_hand():
    cfg = SEConfig(2, rd_channels=1)
    x = x_of([1.0, 3.0], [-2.0, 4.0])
    # means: 2 and 1; hidden relu(0.5*2 - 1*1 + 0.25) = 0.25
    # z = [2*0.25 + 0.125, -4*0.25 + 0.25] = [0.625, -0.75]
    g = [sig(0.625), sig(-0.75)]
    want = x_of([1.0 * g[0], 3.0 * g[0]], [-2.0 * g[1], 4.0 * g[1]])
    y = cfg.reference(_se_weights(), x)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, want, rtol=1e-14)


def test_se_relu_zeroes_negative_hidden():
    cfg = SEConfig(2, rd_channels=1)
    w = _se_weights()
    w["fc1.bias"] = np.array([-2.0])  # hidden relu(1 - 1 - 2) = 0 -> z = fc2.bias
    x = x_of([1.0, 3.0], [-2.0, 4.0])
    g = [sig(0.125), sig(0.25)]
    np.testing.assert_allclose(cfg.reference(w, x), x_of([g[0], 3 * g[0]], [-2 * g[1], 4 * g[1]]), rtol=1e-14)


def test_se_without_bias_by_hand():
    cfg = SEConfig(2, rd_channels=1, bias=False)
    w = {"fc1.weight": np.array([1.0, 0.5]).reshape(1, 2, 1, 1),
         "fc2.weight": np.array([2.0, -4.0]).reshape(2, 1, 1, 1)}
    x = x_of([1.0, 3.0], [-2.0, 4.0])
    # hidden relu(2 + 0.5) = 2.5; z = [5, -10]
    g = [sig(5.0), sig(-10.0)]
    # rtol 1e-10: the reference's sigmoid, 0.5 * (1 + tanh(v / 2)), loses ~1e-12 relative at v = -10
    np.testing.assert_allclose(cfg.reference(w, x), x_of([g[0], 3 * g[0]], [-2 * g[1], 4 * g[1]]), rtol=1e-10)


def test_se_silu_and_hard_sigmoid_by_hand():
    cfg = SEConfig(2, rd_channels=1, act_layer="silu", gate_layer="hard_sigmoid")
    x = x_of([1.0, 3.0], [-2.0, 4.0])
    h = 0.25 * sig(0.25)                    # silu(0.25)
    z = [2 * h + 0.125, -4 * h + 0.25]
    g = [min(max(t / 6 + 0.5, 0.0), 1.0) for t in z]
    np.testing.assert_allclose(cfg.reference(_se_weights(), x),
                               x_of([g[0], 3 * g[0]], [-2 * g[1], 4 * g[1]]), rtol=1e-14)


def test_reference_is_float64_for_float32_inputs():
    cfg = SEConfig(2, rd_channels=1)
    x = x_of([1.0, 3.0], [-2.0, 4.0], dtype=np.float32)
    y = cfg.reference(_se_weights(np.float32), x)
    assert y.dtype == np.float64
    g = [sig(0.625), sig(-0.75)]
    # float32 arithmetic would be off by ~1e-7 relative; the reference is exact to float64 rounding
    np.testing.assert_allclose(y, x_of([g[0], 3 * g[0]], [-2 * g[1], 4 * g[1]]), rtol=1e-14)
    _, dx, grads = cfg.reference_vjp(_se_weights(np.float32), x, np.ones((1, 2, 1, 2), dtype=np.float32))
    assert dx.dtype == np.float64
    assert all(v.dtype == np.float64 for v in grads.values())


def test_reference_float16_input():
    cfg = SimAMConfig()
    x = x_of([1.0, 3.0], dtype=np.float16)
    e = 1.0 / (4.0 * (2.0 + 1e-4)) + 0.5
    y = cfg.reference({}, x)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y.ravel(), [sig(e), 3 * sig(e)], rtol=1e-14)


# --------------------------------------------------------------------------------------------------- ECA
def test_eca_by_hand_zero_padding_both_ends():
    cfg = ECAConfig(3, kernel_size=3)
    x = x_of([0.0, 2.0], [1.0, 3.0], [-4.0, 2.0])   # channel means s = [1, 2, -1]
    w = {"conv.weight": np.array([0.5, -1.0, 2.0]).reshape(1, 1, 3)}
    # cross-correlation with one zero on each side: z_c = w0 s_{c-1} + w1 s_c + w2 s_{c+1}
    z0 = 0.5 * 0.0 + -1.0 * 1 + 2.0 * 2        # 3      (s_{-1} is padding)
    z1 = 0.5 * 1 + -1.0 * 2 + 2.0 * -1         # -3.5
    z2 = 0.5 * 2 + -1.0 * -1 + 2.0 * 0.0       # 2      (s_3 is padding)
    g = [sig(z0), sig(z1), sig(z2)]
    want = x_of([0.0, 2 * g[0]], [g[1], 3 * g[1]], [-4 * g[2], 2 * g[2]])
    np.testing.assert_allclose(cfg.reference(w, x), want, rtol=1e-14)


@pytest.mark.parametrize("kernel,zero_gate_channel", [([0.0, 0.0, 1.0], 2), ([1.0, 0.0, 0.0], 0)])
def test_eca_shift_kernels_see_padding(kernel, zero_gate_channel):
    # [0, 0, 1] reads the next channel (channel 2 reads the zero pad: gate 0.5); [1, 0, 0] the previous one
    cfg = ECAConfig(3, kernel_size=3)
    x = x_of([0.0, 2.0], [1.0, 3.0], [-4.0, 2.0])   # s = [1, 2, -1]
    s = [1.0, 2.0, -1.0]
    if zero_gate_channel == 2:
        z = [s[1], s[2], 0.0]
    else:
        z = [0.0, s[0], s[1]]
    y = cfg.reference({"conv.weight": np.array(kernel).reshape(1, 1, 3)}, x)
    gates = y[0, :, 0, 1] / x[0, :, 0, 1]
    np.testing.assert_allclose(gates, [sig(t) for t in z], rtol=1e-14)
    assert gates[zero_gate_channel] == 0.5


def test_eca_kernel5_on_three_channels():
    cfg = ECAConfig(3, kernel_size=5)  # padding 2, wider than the channels
    x = x_of([0.0, 2.0], [1.0, 3.0], [-4.0, 2.0])   # s = [1, 2, -1]
    a = [0.1, 0.2, 0.3, 0.4, 0.5]
    z0 = a[2] * 1 + a[3] * 2 + a[4] * -1
    z1 = a[1] * 1 + a[2] * 2 + a[3] * -1
    z2 = a[0] * 1 + a[1] * 2 + a[2] * -1
    y = cfg.reference({"conv.weight": np.array(a).reshape(1, 1, 5)}, x)
    np.testing.assert_allclose(y[0, :, 0, 1] / x[0, :, 0, 1], [sig(z0), sig(z1), sig(z2)], rtol=1e-13)


# ---------------------------------------------------------------------------------------- ChannelAttention
def test_channel_attention_by_hand():
    cfg = ChannelAttentionConfig(2, rd_channels=1)
    x = x_of([1.0, 5.0], [-2.0, 0.0])      # avg [3, -1], max [5, 0]
    w = {"fc1.weight": np.array([1.0, 4.0]).reshape(1, 2, 1, 1),
         "fc2.weight": np.array([0.5, -0.25]).reshape(2, 1, 1, 1)}
    # avg path: relu(3 - 4) = 0 -> [0, 0]; max path: relu(5 + 0) = 5 -> [2.5, -1.25]
    # (the relu acts on each path before the sum: relu(avg + max) would differ)
    g = [sig(2.5), sig(-1.25)]
    np.testing.assert_allclose(cfg.reference(w, x), x_of([g[0], 5 * g[0]], [-2 * g[1], 0.0]), rtol=1e-14)


def test_channel_attention_bias_counts_twice():
    cfg = ChannelAttentionConfig(2, rd_channels=1, bias=True)
    x = x_of([1.0, 5.0], [-2.0, 0.0])      # avg [3, -1], max [5, 0]
    w = {"fc1.weight": np.array([1.0, 4.0]).reshape(1, 2, 1, 1), "fc1.bias": np.array([0.5]),
         "fc2.weight": np.array([0.5, -0.25]).reshape(2, 1, 1, 1), "fc2.bias": np.array([0.1, -0.1])}
    # avg: relu(-1 + 0.5) = 0 -> [0.1, -0.1]; max: relu(5.5) -> [2.75 + 0.1, -1.375 - 0.1]
    z = [0.1 + 2.85, -0.1 - 1.475]
    g = [sig(z[0]), sig(z[1])]
    np.testing.assert_allclose(cfg.reference(w, x), x_of([g[0], 5 * g[0]], [-2 * g[1], 0.0]), rtol=1e-14)


# ---------------------------------------------------------------------------------------- SpatialAttention
# x: channel 0 [1, -3], channel 1 [3, -1]: per-pixel mean [2, -2], max [3, -1]
SA_X = x_of([1.0, -3.0], [3.0, -1.0])


def _sa_gated(z):
    g = [sig(t) for t in z]
    return x_of([1.0 * g[0], -3.0 * g[1]], [3.0 * g[0], -1.0 * g[1]])


@pytest.mark.parametrize("order,z", [
    ("mean_max", [1 * 2 - 0.5 * 3, 1 * -2 - 0.5 * -1]),   # weight 0 on mean: [0.5, -1.5]
    ("max_mean", [1 * 3 - 0.5 * 2, 1 * -1 - 0.5 * -2]),   # weight 0 on max:  [2, 0]
])
def test_spatial_attention_order_by_hand(order, z):
    cfg = SpatialAttentionConfig(2, kernel_size=1, order=order)
    w = {"conv.weight": np.array([1.0, -0.5]).reshape(1, 2, 1, 1)}
    np.testing.assert_allclose(cfg.reference(w, SA_X), _sa_gated(z), rtol=1e-14)


def test_spatial_attention_3x3_on_one_pixel_sees_only_the_centre():
    cfg = SpatialAttentionConfig(kernel_size=3)
    x = np.array([1.0, 4.0, -2.0]).reshape(1, 3, 1, 1)       # mean 1, max 4
    k = np.random.default_rng(0).standard_normal((1, 2, 3, 3)) * 10
    k[0, 0, 1, 1], k[0, 1, 1, 1] = 0.25, -0.5
    z = 0.25 * 1 - 0.5 * 4                                   # every other tap reads zero padding
    np.testing.assert_allclose(cfg.reference({"conv.weight": k}, x), x * sig(z), rtol=1e-14)


def test_spatial_attention_batch_norm_eval_by_hand():
    cfg = SpatialAttentionConfig(2, kernel_size=1, bias=True, norm=True)
    w = {"conv.weight": np.array([1.0, -0.5]).reshape(1, 2, 1, 1), "conv.bias": np.array([0.125]),
         "bn.weight": np.array([2.0]), "bn.bias": np.array([0.25]),
         "bn.running_mean": np.array([0.5]), "bn.running_var": np.array([3.0])}
    z = [0.5 + 0.125, -1.5 + 0.125]
    zn = [(t - 0.5) / math.sqrt(3.0 + 1e-5) * 2.0 + 0.25 for t in z]  # default eps 1e-5
    np.testing.assert_allclose(cfg.reference(w, SA_X, training=False), _sa_gated(zn), rtol=1e-14)


def test_spatial_attention_batch_norm_eps():
    cfg = SpatialAttentionConfig(2, kernel_size=1, norm=True, bn_eps=0.5)
    w = {"conv.weight": np.array([1.0, -0.5]).reshape(1, 2, 1, 1), "bn.weight": np.array([1.0]),
         "bn.bias": np.array([0.0]), "bn.running_mean": np.array([0.0]), "bn.running_var": np.array([0.5])}
    zn = [0.5 / 1.0, -1.5 / 1.0]  # sqrt(0.5 + 0.5) = 1
    np.testing.assert_allclose(cfg.reference(w, SA_X), _sa_gated(zn), rtol=1e-14)


def test_spatial_attention_batch_norm_train_by_hand():
    cfg = SpatialAttentionConfig(2, kernel_size=1, norm=True)
    w = {"conv.weight": np.array([1.0, -0.5]).reshape(1, 2, 1, 1),
         "bn.weight": np.array([2.0]), "bn.bias": np.array([0.25]),
         "bn.running_mean": np.array([100.0]), "bn.running_var": np.array([100.0])}  # not used in training
    # z = [0.5, -1.5]: batch mean -0.5, biased variance 1 -> xhat = [1, -1] / sqrt(1 + 1e-5)
    d = 1 / math.sqrt(1 + 1e-5)
    zn = [2 * d + 0.25, -2 * d + 0.25]
    np.testing.assert_allclose(cfg.reference(w, SA_X, training=True), _sa_gated(zn), rtol=1e-14)


# -------------------------------------------------------------------------------------------------- SimAM
def test_simam_two_pixels_by_hand():
    x = x_of([1.0, 3.0])
    # mean 2, d = [1, 1], n = H*W - 1 = 1, v = 2, e = 1 / (4 (2 + 1e-4)) + 0.5
    e = 1.0 / (4.0 * (2.0 + 1e-4)) + 0.5
    np.testing.assert_allclose(SimAMConfig().reference({}, x), x_of([sig(e), 3 * sig(e)]), rtol=1e-14)


@pytest.mark.parametrize("lam", [1e-4, 0.1])
def test_simam_three_pixels_by_hand(lam):
    x = x_of([0.0, 1.0, 5.0])
    # mean 2, d = [4, 1, 9], n = 2, v = 14 / 2 = 7; e_i = d_i / (4 (7 + lam)) + 0.5
    e = [d / (4.0 * (7.0 + lam)) + 0.5 for d in (4.0, 1.0, 9.0)]
    want = x_of([0.0, sig(e[1]), 5.0 * sig(e[2])])
    np.testing.assert_allclose(SimAMConfig(e_lambda=lam).reference({}, x), want, rtol=1e-14)


def test_simam_channels_independent():
    x = x_of([1.0, 3.0], [10.0, 10.0])   # channel 1 constant: d = 0, v = 0, e = 0.5
    e0 = 1.0 / (4.0 * (2.0 + 1e-4)) + 0.5
    want = x_of([sig(e0), 3 * sig(e0)], [10 * sig(0.5), 10 * sig(0.5)])
    np.testing.assert_allclose(SimAMConfig().reference({}, x), want, rtol=1e-14)


def test_simam_single_pixel_no_nan():
    x = np.random.default_rng(3).standard_normal((2, 3, 1, 1))
    cfg = SimAMConfig()
    y = cfg.reference({}, x)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, x * sig(0.5), rtol=1e-14)
    cot = np.random.default_rng(4).standard_normal(x.shape)
    _, dx, grads = cfg.reference_vjp({}, x, cot)
    assert grads == {}
    assert np.all(np.isfinite(dx))
    # d(mean) = 0 identically at H*W = 1, so dy/dx = sigmoid(0.5)
    np.testing.assert_allclose(dx, cot * sig(0.5), rtol=1e-14)


# --------------------------------------------------------------------------------------------------- CBAM
def test_cbam_is_spatial_after_channel():
    cfg = CBAMConfig(4, rd_channels=2, spatial_kernel_size=3, mlp_bias=True, spatial_norm=True, spatial_bias=True)
    w = cfg.init_weights(np.random.default_rng(5))
    x = np.random.default_rng(6).standard_normal((2, 4, 3, 5))
    ca = ChannelAttentionConfig(4, rd_channels=2, bias=True)
    sa = SpatialAttentionConfig(4, kernel_size=3, bias=True, norm=True)
    ca_w = {k[len("channel."):]: v for k, v in w.items() if k.startswith("channel.")}
    sa_w = {k[len("spatial."):]: v for k, v in w.items() if k.startswith("spatial.")}
    for training in (False, True):
        want = sa.reference(sa_w, ca.reference(ca_w, x, training), training)
        np.testing.assert_allclose(cfg.reference(w, x, training), want, rtol=1e-14)
    # and not the other order
    other = ca.reference(ca_w, sa.reference(sa_w, x))
    assert not np.allclose(cfg.reference(w, x), other, rtol=1e-6)


def test_cbam_by_hand_kernel1():
    cfg = CBAMConfig(2, rd_channels=1, spatial_kernel_size=1)
    x = x_of([1.0, 5.0], [-2.0, 0.0])
    w = {"channel.fc1.weight": np.array([1.0, 4.0]).reshape(1, 2, 1, 1),
         "channel.fc2.weight": np.array([0.5, -0.25]).reshape(2, 1, 1, 1),
         "spatial.conv.weight": np.array([1.0, -0.5]).reshape(1, 2, 1, 1)}
    gc = [sig(2.5), sig(-1.25)]  # as in test_channel_attention_by_hand
    x1 = [[1.0 * gc[0], 5.0 * gc[0]], [-2.0 * gc[1], 0.0]]
    gs = []
    for p in range(2):
        col = [x1[0][p], x1[1][p]]
        gs.append(sig(1.0 * (sum(col) / 2) - 0.5 * max(col)))
    y = x_of([x1[0][0] * gs[0], x1[0][1] * gs[1]], [x1[1][0] * gs[0], x1[1][1] * gs[1]])
    np.testing.assert_allclose(cfg.reference(w, x), y, rtol=1e-14)


# ---------------------------------------------------------------------------- NumPy restatements, random
def _conv_loops(x, w, pad):
    n, c, h, wd = x.shape
    o, ci, kh, kw = w.shape
    xp = np.zeros((n, c, h + 2 * pad[0], wd + 2 * pad[1]))
    xp[:, :, pad[0]:pad[0] + h, pad[1]:pad[1] + wd] = x
    ho, wo = xp.shape[2] - kh + 1, xp.shape[3] - kw + 1
    out = np.zeros((n, o, ho, wo))
    for i in range(ho):
        for j in range(wo):
            out[:, :, i, j] = np.einsum("nchw,ochw->no", xp[:, :, i:i + kh, j:j + kw], w)
    return out


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def test_random_se_matches_numpy_restatement():
    cfg = SEConfig(16, rd_channels=4)
    w = cfg.init_weights(np.random.default_rng(7))
    x = np.random.default_rng(8).standard_normal((2, 16, 3, 5))
    s = x.mean(axis=(2, 3))
    h = np.maximum(s @ w["fc1.weight"][:, :, 0, 0].T + w["fc1.bias"], 0)
    g = _sigmoid(h @ w["fc2.weight"][:, :, 0, 0].T + w["fc2.bias"])
    np.testing.assert_allclose(cfg.reference(w, x), x * g[:, :, None, None], rtol=1e-13)


def test_random_eca_matches_numpy_restatement():
    cfg = ECAConfig(10, kernel_size=5)
    w = cfg.init_weights(np.random.default_rng(9))
    x = np.random.default_rng(10).standard_normal((2, 10, 3, 5))
    s = x.mean(axis=(2, 3))
    sp = np.pad(s, ((0, 0), (2, 2)))
    k = w["conv.weight"].ravel()
    z = np.stack([sum(k[j] * sp[:, c + j] for j in range(5)) for c in range(10)], axis=1)
    np.testing.assert_allclose(cfg.reference(w, x), x * _sigmoid(z)[:, :, None, None], rtol=1e-13)


def test_random_channel_attention_matches_numpy_restatement():
    cfg = ChannelAttentionConfig(12, rd_channels=3, bias=True, act_layer="silu")
    w = cfg.init_weights(np.random.default_rng(11))
    x = np.random.default_rng(12).standard_normal((2, 12, 3, 5))

    def mlp(v):
        h = v @ w["fc1.weight"][:, :, 0, 0].T + w["fc1.bias"]
        h = h * _sigmoid(h)
        return h @ w["fc2.weight"][:, :, 0, 0].T + w["fc2.bias"]

    g = _sigmoid(mlp(x.mean(axis=(2, 3))) + mlp(x.max(axis=(2, 3))))
    np.testing.assert_allclose(cfg.reference(w, x), x * g[:, :, None, None], rtol=1e-13)


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("order", ["mean_max", "max_mean"])
def test_random_spatial_attention_matches_numpy_restatement(order, training):
    cfg = SpatialAttentionConfig(kernel_size=5, order=order, bias=True, norm=True, bn_eps=1e-3)
    w = cfg.init_weights(np.random.default_rng(13))
    x = np.random.default_rng(14).standard_normal((2, 3, 4, 7))
    maps = [x.mean(axis=1, keepdims=True), x.max(axis=1, keepdims=True)]
    if order == "max_mean":
        maps = maps[::-1]
    z = _conv_loops(np.concatenate(maps, axis=1), w["conv.weight"], (2, 2)) + w["conv.bias"][0]
    if training:
        mu, var = z.mean(), z.var()
    else:
        mu, var = w["bn.running_mean"][0], w["bn.running_var"][0]
    zn = (z - mu) / np.sqrt(var + 1e-3) * w["bn.weight"][0] + w["bn.bias"][0]
    np.testing.assert_allclose(cfg.reference(w, x, training), x * _sigmoid(zn), rtol=1e-13)


def test_random_simam_matches_numpy_restatement():
    x = np.random.default_rng(15).standard_normal((2, 3, 4, 5))
    d = (x - x.mean(axis=(2, 3), keepdims=True)) ** 2
    v = d.sum(axis=(2, 3), keepdims=True) / (4 * 5 - 1)
    want = x * _sigmoid(d / (4 * (v + 1e-4)) + 0.5)
    np.testing.assert_allclose(SimAMConfig().reference({}, x), want, rtol=1e-13)


# ---------------------------------------------------------------------------- VJPs by finite differences
VJP_CASES = [
    ("se", SEConfig(8), (2, 8, 3, 5), False),
    ("se-rd3-silu-hsig", SEConfig(6, rd_channels=3, act_layer="silu", gate_layer="hard_sigmoid"), (2, 6, 3, 5), False),
    ("se-nobias-floor", SEConfig(32, rd_divisor=None, bias=False), (1, 32, 3, 3), False),
    ("eca-k3", ECAConfig(5, kernel_size=3), (2, 5, 3, 5), False),
    ("eca-k5", ECAConfig(6, kernel_size=5), (2, 6, 5, 3), False),
    ("ca", ChannelAttentionConfig(6, rd_channels=3, bias=True), (2, 6, 3, 5), False),
    ("ca-timm", ChannelAttentionConfig(8), (2, 8, 3, 5), False),
    ("sa-eval", SpatialAttentionConfig(kernel_size=3, bias=True, norm=True), (2, 3, 5, 7), False),
    ("sa-train", SpatialAttentionConfig(kernel_size=3, bias=True, norm=True), (2, 3, 5, 7), True),
    ("sa-k7-maxmean", SpatialAttentionConfig(kernel_size=7, order="max_mean"), (1, 3, 5, 7), False),
    ("cbam-eval", CBAMConfig(4, rd_channels=2, spatial_kernel_size=3, mlp_bias=True, spatial_norm=True),
     (2, 4, 3, 5), False),
    ("cbam-train", CBAMConfig(4, rd_channels=2, spatial_kernel_size=3, mlp_bias=True, spatial_norm=True),
     (2, 4, 3, 5), True),
    ("simam", SimAMConfig(), (2, 3, 3, 5), False),
    ("simam-lam", SimAMConfig(e_lambda=0.1), (1, 2, 5, 3), False),
]


@pytest.mark.parametrize("name,cfg,shape,training", VJP_CASES, ids=[c[0] for c in VJP_CASES])
def test_reference_vjp_matches_finite_differences(name, cfg, shape, training):
    rng = np.random.default_rng(sum(map(ord, name)))
    weights = cfg.init_weights(rng)
    x = rng.standard_normal(shape)
    # no ties for the max poolings: all input values further apart than the finite-difference step
    assert np.diff(np.sort(x.ravel())).min() > 2e-6
    y = assert_reference_vjp(name, cfg, weights, x, rng.standard_normal(shape), training)
    assert y.shape == shape
