"""The reverse-mode differentiator and every operation of attn_core.ops.

Forward values are checked against NumPy expressions or loops written out here; vector-Jacobian products are
checked against central finite differences of the forward value in float64 (step 1e-6), with inputs kept away
from the kinks of relu, hard_sigmoid and amax.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from attn_core import ops
from attn_core.autodiff import Node, backward

STEP = 1e-6
RTOL = 1e-6


# ------------------------------------------------------------------------------------------------- helpers
def numeric_vjp(build, arrays, cot, step=STEP):
    """Central finite differences of L = sum(build(*nodes).value * cot) with respect to every array."""
    arrays = [np.array(a, dtype=np.float64) for a in arrays]

    def loss(arrs):
        return float(np.sum(build(*[Node(a) for a in arrs]).value * cot))

    grads = []
    for k, a in enumerate(arrays):
        g = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            plus = [x.copy() for x in arrays]
            minus = [x.copy() for x in arrays]
            plus[k][idx] += step
            minus[k][idx] -= step
            g[idx] = (loss(plus) - loss(minus)) / (2 * step)
        grads.append(g)
    return grads


def analytic_vjp(build, arrays, cot):
    nodes = [Node(np.array(a, dtype=np.float64)) for a in arrays]
    out = build(*nodes)
    return backward(out, cot, nodes)


def assert_vjp_matches_fd(build, arrays, seed=0):
    """Check every input's VJP against finite differences, with a random cotangent."""
    out_shape = build(*[Node(np.array(a, dtype=np.float64)) for a in arrays]).shape
    cot = np.random.default_rng(seed).standard_normal(out_shape)
    got = analytic_vjp(build, arrays, cot)
    want = numeric_vjp(build, arrays, cot)
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.shape == np.shape(arrays[k]), f"input {k}: gradient shape {g.shape} != {np.shape(arrays[k])}"
        scale = max(1.0, float(np.abs(w).max()))
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=1e-7 * scale, err_msg=f"input {k}")


def away_from(rng, shape, lo, hi, kinks, margin=1e-2):
    """Uniform values in [lo, hi] at least ``margin`` from every kink."""
    v = rng.uniform(lo, hi, shape)
    for k in kinks:
        close = np.abs(v - k) < margin
        v[close] = k + np.where(v[close] >= k, margin, -margin) * 5
    for k in kinks:
        assert np.all(np.abs(v - k) >= margin)
    return v


def distinct(rng, shape):
    """Values with no ties, spaced at least 0.05 apart (so amax has a unique maximiser under a 1e-6 step)."""
    n = int(np.prod(shape))
    v = (rng.permutation(n) - n / 2) * 0.05 + 0.01
    return v.reshape(shape)


def naive_conv2d(x, w, b=None, stride=1, padding=0, groups=1, dilation=1):
    """Cross-correlation by plain loops, torch's conv2d semantics (zero padding, grouped channels, dilation)."""
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
    n, c, h, wd = x.shape
    o, ci, kh, kw = w.shape
    xp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw))
    xp[:, :, ph:ph + h, pw:pw + wd] = x
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out_per_group = o // groups
    out = np.zeros((n, o, ho, wo))
    for nn in range(n):
        for oo in range(o):
            g = oo // out_per_group
            for i in range(ho):
                for j in range(wo):
                    acc = 0.0 if b is None else b[oo]
                    for cc in range(ci):
                        for a in range(kh):
                            for bb in range(kw):
                                acc += xp[nn, g * ci + cc, i * sh + a * dh, j * sw + bb * dw] * w[oo, cc, a, bb]
                    out[nn, oo, i, j] = acc
    return out


def hand_sigmoid(v):
    return np.vectorize(lambda t: 1.0 / (1.0 + math.exp(-t)))(v)


# ------------------------------------------------------------------------------------------- elementwise
BROADCAST_SHAPES = [
    ((2, 3, 4), (2, 3, 4)),
    ((2, 3, 4), (3, 1)),
    ((1, 3, 1), (2, 1, 4)),
    ((2, 3, 4), ()),
    ((4,), (3, 1)),
]


@pytest.mark.parametrize("sa,sb", BROADCAST_SHAPES)
def test_add_forward_and_vjp(sa, sb):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    np.testing.assert_array_equal(ops.add(Node(a), Node(b)).value, a + b)
    assert_vjp_matches_fd(ops.add, [a, b])


def test_add_broadcast_vjp_by_hand():
    # a (2, 3) + b (3,): dL/db_j = sum_i cot_ij, dL/da = cot.
    a, b = Node(np.zeros((2, 3))), Node(np.zeros(3))
    cot = np.array([[1.0, 2.0, 3.0], [10.0, 20.0, 30.0]])
    da, db = backward(ops.add(a, b), cot, [a, b])
    np.testing.assert_array_equal(da, cot)
    np.testing.assert_array_equal(db, [11.0, 22.0, 33.0])


@pytest.mark.parametrize("sa,sb", BROADCAST_SHAPES)
def test_sub_forward_and_vjp(sa, sb):
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    np.testing.assert_array_equal(ops.sub(Node(a), Node(b)).value, a - b)
    assert_vjp_matches_fd(ops.sub, [a, b])


@pytest.mark.parametrize("sa,sb", BROADCAST_SHAPES)
def test_mul_forward_and_vjp(sa, sb):
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    np.testing.assert_array_equal(ops.mul(Node(a), Node(b)).value, a * b)
    assert_vjp_matches_fd(ops.mul, [a, b])


@pytest.mark.parametrize("sa,sb", BROADCAST_SHAPES)
def test_div_forward_and_vjp(sa, sb):
    rng = np.random.default_rng(4)
    a = rng.standard_normal(sa)
    b = rng.uniform(0.5, 2.0, sb) * rng.choice([-1.0, 1.0], sb)  # away from 0
    np.testing.assert_allclose(ops.div(Node(a), Node(b)).value, a / b, rtol=1e-15)
    assert_vjp_matches_fd(ops.div, [a, b])


def test_div_vjp_by_hand():
    # d(a/b)/da = 1/b, d(a/b)/db = -a/b^2: a = 3, b = 2 -> 0.5 and -0.75.
    a, b = Node(np.array([3.0])), Node(np.array([2.0]))
    da, db = backward(ops.div(a, b), np.array([1.0]), [a, b])
    assert da[0] == pytest.approx(0.5, rel=1e-15)
    assert db[0] == pytest.approx(-0.75, rel=1e-15)


def test_scale_and_add_scalar():
    rng = np.random.default_rng(5)
    a = rng.standard_normal((3, 5))
    np.testing.assert_allclose(ops.scale(Node(a), -2.5).value, a * -2.5, rtol=1e-15)
    np.testing.assert_allclose(ops.add_scalar(Node(a), 0.75).value, a + 0.75, rtol=1e-15)
    assert_vjp_matches_fd(lambda x: ops.scale(x, -2.5), [a])
    assert_vjp_matches_fd(lambda x: ops.add_scalar(x, 0.75), [a])


def test_square_and_sqrt():
    rng = np.random.default_rng(6)
    a = rng.standard_normal((3, 5))
    pos = rng.uniform(0.5, 3.0, (3, 5))
    np.testing.assert_allclose(ops.square(Node(a)).value, a * a, rtol=1e-15)
    np.testing.assert_allclose(ops.sqrt(Node(pos)).value, np.sqrt(pos), rtol=1e-15)
    assert_vjp_matches_fd(ops.square, [a])
    assert_vjp_matches_fd(ops.sqrt, [pos])


def test_square_sqrt_vjp_by_hand():
    x = Node(np.array([3.0, 4.0]))
    (g,) = backward(ops.square(x), np.ones(2), [x])
    np.testing.assert_array_equal(g, [6.0, 8.0])
    (g,) = backward(ops.sqrt(x), np.ones(2), [x])  # 1 / (2 sqrt(x))
    np.testing.assert_allclose(g, [1 / (2 * math.sqrt(3.0)), 0.25], rtol=1e-15)


def test_relu_forward_and_vjp():
    rng = np.random.default_rng(7)
    a = away_from(rng, (4, 6), -2.0, 2.0, [0.0])
    np.testing.assert_array_equal(ops.relu(Node(a)).value, np.where(a > 0, a, 0.0))
    assert_vjp_matches_fd(ops.relu, [a])
    x = Node(np.array([-1.5, 2.0]))
    (g,) = backward(ops.relu(x), np.array([7.0, 7.0]), [x])
    np.testing.assert_array_equal(g, [0.0, 7.0])


def test_sigmoid_forward_and_vjp():
    rng = np.random.default_rng(8)
    a = rng.uniform(-6, 6, (4, 6))
    np.testing.assert_allclose(ops.sigmoid(Node(a)).value, hand_sigmoid(a), rtol=1e-14, atol=1e-16)
    assert_vjp_matches_fd(ops.sigmoid, [a])
    # sigmoid(0) = 1/2, sigmoid'(0) = 1/4
    x = Node(np.array([0.0]))
    s = ops.sigmoid(x)
    assert s.value[0] == 0.5
    assert backward(s, np.array([1.0]), [x])[0][0] == 0.25


def test_sigmoid_large_magnitudes_are_exact():
    x = Node(np.array([1000.0, -1000.0, 800.0, -800.0]))
    s = ops.sigmoid(x)
    assert np.all(np.isfinite(s.value))
    np.testing.assert_array_equal(s.value, [1.0, 0.0, 1.0, 0.0])
    (g,) = backward(s, np.ones(4), [x])
    assert np.all(np.isfinite(g))
    np.testing.assert_array_equal(g, [0.0, 0.0, 0.0, 0.0])
    si = ops.silu(x)
    assert np.all(np.isfinite(si.value))
    np.testing.assert_array_equal(si.value, [1000.0, 0.0, 800.0, 0.0])
    (g,) = backward(si, np.ones(4), [x])
    np.testing.assert_array_equal(g, [1.0, 0.0, 1.0, 0.0])


def test_sigmoid_relative_accuracy_in_negative_tail():
    v = np.array([-30.0, -40.0])
    want = np.array([1.0 / (1.0 + math.exp(30.0)), 1.0 / (1.0 + math.exp(40.0))])  # 9.3576e-14, 4.2484e-18
    np.testing.assert_allclose(ops.sigmoid(Node(v)).value, want, rtol=1e-12, atol=0)


def test_silu_forward_and_vjp():
    rng = np.random.default_rng(9)
    a = rng.uniform(-6, 6, (4, 6))
    np.testing.assert_allclose(ops.silu(Node(a)).value, a * hand_sigmoid(a), rtol=1e-14, atol=1e-16)
    assert_vjp_matches_fd(ops.silu, [a])
    # silu'(0) = sigmoid(0) = 1/2
    x = Node(np.array([0.0]))
    assert backward(ops.silu(x), np.array([1.0]), [x])[0][0] == 0.5


def test_hard_sigmoid_forward_and_vjp():
    rng = np.random.default_rng(10)
    a = away_from(rng, (5, 8), -5.0, 5.0, [-3.0, 3.0])
    assert np.any(a < -3) and np.any(a > 3) and np.any(np.abs(a) < 3)
    np.testing.assert_allclose(ops.hard_sigmoid(Node(a)).value, np.clip(a + 3, 0, 6) / 6, rtol=1e-15, atol=1e-16)
    assert_vjp_matches_fd(ops.hard_sigmoid, [a])
    # by hand: relu6(x + 3) / 6 at -4, 0, 1.5, 4 is 0, 1/2, 3/4, 1; slope 0, 1/6, 1/6, 0
    x = Node(np.array([-4.0, 0.0, 1.5, 4.0]))
    h = ops.hard_sigmoid(x)
    np.testing.assert_allclose(h.value, [0.0, 0.5, 0.75, 1.0], rtol=1e-15)
    (g,) = backward(h, np.ones(4), [x])
    np.testing.assert_allclose(g, [0.0, 1 / 6, 1 / 6, 0.0], rtol=1e-15)
    hb = ops.hard_sigmoid(Node(np.array([-1000.0, 1000.0])))
    np.testing.assert_array_equal(hb.value, [0.0, 1.0])


@pytest.mark.parametrize("name", ["relu", "sigmoid", "silu", "hard_sigmoid"])
def test_activation_dispatch(name):
    v = np.array([-4.0, -0.5, 0.7, 3.5])
    want = {"relu": np.maximum(v, 0), "sigmoid": hand_sigmoid(v), "silu": v * hand_sigmoid(v),
            "hard_sigmoid": np.clip(v + 3, 0, 6) / 6}[name]
    np.testing.assert_allclose(ops.activation(name, Node(v)).value, want, rtol=1e-14)


# -------------------------------------------------------------------------------------------- reductions
AXES = [0, (1,), (0, 2), (1, 2, 3), -1, (0, 1, 2, 3), (2, 3)]


@pytest.mark.parametrize("keepdims", [True, False])
@pytest.mark.parametrize("axis", AXES)
def test_sum(axis, keepdims):
    a = np.random.default_rng(11).standard_normal((2, 3, 4, 5))
    out = ops.sum(Node(a), axis, keepdims=keepdims)
    np.testing.assert_allclose(out.value, np.sum(a, axis=axis, keepdims=keepdims), rtol=1e-14)
    assert_vjp_matches_fd(lambda x: ops.sum(x, axis, keepdims=keepdims), [a])


@pytest.mark.parametrize("keepdims", [True, False])
@pytest.mark.parametrize("axis", AXES)
def test_mean(axis, keepdims):
    a = np.random.default_rng(12).standard_normal((2, 3, 4, 5))
    out = ops.mean(Node(a), axis, keepdims=keepdims)
    np.testing.assert_allclose(out.value, np.mean(a, axis=axis, keepdims=keepdims), rtol=1e-13)
    assert_vjp_matches_fd(lambda x: ops.mean(x, axis, keepdims=keepdims), [a])


@pytest.mark.parametrize("keepdims", [True, False])
@pytest.mark.parametrize("axis", AXES)
def test_amax(axis, keepdims):
    a = distinct(np.random.default_rng(13), (2, 3, 4, 5))
    out = ops.amax(Node(a), axis, keepdims=keepdims)
    np.testing.assert_array_equal(out.value, np.amax(a, axis=axis, keepdims=keepdims))
    assert_vjp_matches_fd(lambda x: ops.amax(x, axis, keepdims=keepdims), [a])


def test_reduction_vjps_by_hand():
    x = Node(np.array([[1.0, 5.0, 2.0], [7.0, 0.0, 3.0]]))
    cot = np.array([10.0, 100.0])
    (g,) = backward(ops.sum(x, 1, keepdims=False), cot, [x])
    np.testing.assert_array_equal(g, [[10, 10, 10], [100, 100, 100]])
    (g,) = backward(ops.mean(x, 1, keepdims=False), cot, [x])
    np.testing.assert_allclose(g, [[10 / 3] * 3, [100 / 3] * 3], rtol=1e-15)
    (g,) = backward(ops.amax(x, 1, keepdims=False), cot, [x])
    np.testing.assert_array_equal(g, [[0, 10, 0], [100, 0, 0]])


def test_amax_shares_gradient_between_ties():
    x = Node(np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]]))
    out = ops.amax(x, 1, keepdims=True)
    np.testing.assert_array_equal(out.value, [[3.0], [2.0]])
    (g,) = backward(out, np.array([[1.0], [3.0]]), [x])
    np.testing.assert_allclose(g, [[0.0, 0.5, 0.5], [1.0, 1.0, 1.0]], rtol=1e-15)


# --------------------------------------------------------------------------------------------- structure
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concat(axis):
    rng = np.random.default_rng(14)
    shapes = {0: [(1, 3, 2), (2, 3, 2), (3, 3, 2)], 1: [(2, 1, 2), (2, 4, 2), (2, 2, 2)],
              -1: [(2, 3, 1), (2, 3, 3), (2, 3, 2)]}[axis]
    arrays = [rng.standard_normal(s) for s in shapes]
    np.testing.assert_array_equal(ops.concat([Node(a) for a in arrays], axis).value,
                                  np.concatenate(arrays, axis=axis))
    assert_vjp_matches_fd(lambda *ns: ops.concat(list(ns), axis), arrays)


def test_concat_vjp_by_hand():
    a, b = Node(np.zeros((1, 2))), Node(np.zeros((1, 1)))
    da, db = backward(ops.concat([a, b], 1), np.array([[1.0, 2.0, 3.0]]), [a, b])
    np.testing.assert_array_equal(da, [[1.0, 2.0]])
    np.testing.assert_array_equal(db, [[3.0]])


def test_reshape():
    a = np.random.default_rng(15).standard_normal((2, 3, 4))
    np.testing.assert_array_equal(ops.reshape(Node(a), (4, 6)).value, a.reshape(4, 6))
    assert_vjp_matches_fd(lambda x: ops.reshape(x, (4, 1, 6)), [a])
    assert_vjp_matches_fd(lambda x: ops.reshape(x, (-1,)), [a])


# ------------------------------------------------------------------------------------------- convolution
CONV_CASES = [
    dict(stride=s, padding=p, groups=g, bias=b, dilation=1)
    for s in (1, 2) for p in (0, 1, (0, 2)) for g in (1, 2) for b in (True, False)
] + [dict(stride=s, padding=p, groups=g, bias=False, dilation=d)  # dilated, as selective kernel's branches
     for s in (1, 2) for p in (2, (1, 3)) for g in (1, 2) for d in (2, (2, 1))]


def CONV_ID(c):  # noqa: N802 - used as a constant in the parametrisations
    return "s{stride}-p{padding}-g{groups}-b{bias}-d{dilation}".format(**c)


def _conv_case(case, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 4, 5, 7))          # odd, non-square spatial size
    w = rng.standard_normal((6, 4 // case["groups"], 3, 2))  # non-square kernel
    b = rng.standard_normal(6) if case["bias"] else None
    return x, w, b


@pytest.mark.parametrize("case", CONV_CASES, ids=CONV_ID)
def test_conv2d_forward_matches_loops(case):
    x, w, b = _conv_case(case, 16)
    got = ops.conv2d(Node(x), Node(w), None if b is None else Node(b), stride=case["stride"],
                     padding=case["padding"], groups=case["groups"], dilation=case["dilation"]).value
    want = naive_conv2d(x, w, b, case["stride"], case["padding"], case["groups"], case["dilation"])
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CONV_CASES, ids=CONV_ID)
def test_conv2d_vjp(case):
    x, w, b = _conv_case(case, 17)
    kw = dict(stride=case["stride"], padding=case["padding"], groups=case["groups"], dilation=case["dilation"])
    if b is None:
        assert_vjp_matches_fd(lambda xn, wn: ops.conv2d(xn, wn, None, **kw), [x, w])
    else:
        assert_vjp_matches_fd(lambda xn, wn, bn: ops.conv2d(xn, wn, bn, **kw), [x, w, b])


def test_conv2d_output_sizes_by_hand():
    # H=5, W=7, kernel 3x2: stride 1 pad 0 -> (3, 6); stride 2 pad 1 -> ((5+2-3)//2+1, (7+2-2)//2+1) = (3, 4);
    # pad (0, 2) stride 2 -> ((5-3)//2+1, (7+4-2)//2+1) = (2, 5)
    x, w = Node(np.zeros((1, 4, 5, 7))), Node(np.zeros((6, 4, 3, 2)))
    assert ops.conv2d(x, w).shape == (1, 6, 3, 6)
    assert ops.conv2d(x, w, stride=2, padding=1).shape == (1, 6, 3, 4)
    assert ops.conv2d(x, w, stride=2, padding=(0, 2)).shape == (1, 6, 2, 5)


def test_conv2d_tiny_case_by_hand():
    # x = [[1, 2, 3], [4, 5, 6], [7, 8, 9]], w = [[1, 0], [0, -1]] (a diagonal difference), bias 0.5:
    # out[i, j] = x[i, j] - x[i+1, j+1] + 0.5 = -4 + 0.5 everywhere.
    x = Node(np.arange(1.0, 10.0).reshape(1, 1, 3, 3))
    w = Node(np.array([[[[1.0, 0.0], [0.0, -1.0]]]]))
    b = Node(np.array([0.5]))
    out = ops.conv2d(x, w, b)
    np.testing.assert_array_equal(out.value, np.full((1, 1, 2, 2), -3.5))
    # with padding 1 the corner out[0, 0] sees only x[0, 0] under w[1, 1] = -1: -1 + 0.5
    out_p = ops.conv2d(x, w, b, padding=1)
    assert out_p.shape == (1, 1, 4, 4)
    assert out_p.value[0, 0, 0, 0] == -0.5
    assert out_p.value[0, 0, 3, 3] == 9.0 + 0.5  # only x[2, 2] under w[0, 0] = 1
    # gradients with cotangent 1: dL/dw[a, b] = sum of the 2x2 windows' elements at (a, b)
    dx, dw, db = backward(out, np.ones((1, 1, 2, 2)), [x, w, b])
    np.testing.assert_array_equal(dw, [[[[1 + 2 + 4 + 5, 2 + 3 + 5 + 6], [4 + 5 + 7 + 8, 5 + 6 + 8 + 9]]]])
    np.testing.assert_array_equal(db, [4.0])
    # dL/dx[i, j] = (#windows using x[i,j] at w[0,0]) * 1 - (#windows using it at w[1,1]) * 1
    np.testing.assert_array_equal(dx[0, 0], [[1, 1, 0], [1, 0, -1], [0, -1, -1]])


def test_conv2d_groups_keep_channels_apart():
    # groups=2: output 0 sees only input channel 0, output 1 only input channel 1.
    x = Node(np.stack([np.full((2, 2), 1.0), np.full((2, 2), 10.0)])[None])
    w = Node(np.array([[[[2.0]]], [[[3.0]]]]))  # (O=2, I=1, 1, 1)
    out = ops.conv2d(x, w, groups=2)
    np.testing.assert_array_equal(out.value[0, 0], np.full((2, 2), 2.0))
    np.testing.assert_array_equal(out.value[0, 1], np.full((2, 2), 30.0))


def test_conv2d_rejects_channels_that_do_not_fit_groups():
    with pytest.raises(ValueError):
        ops.conv2d(Node(np.zeros((1, 4, 3, 3))), Node(np.zeros((2, 3, 1, 1))))
    with pytest.raises(ValueError):
        ops.conv2d(Node(np.zeros((1, 4, 3, 3))), Node(np.zeros((3, 2, 1, 1))), groups=2)  # 3 % 2 != 0


def test_dilated_conv2d_by_hand():
    # a 2x2 kernel of ones at dilation 2 on a 3x3 map sums the four corners: 1 + 3 + 7 + 9
    x = Node(np.arange(1.0, 10.0).reshape(1, 1, 3, 3))
    out = ops.conv2d(x, Node(np.ones((1, 1, 2, 2))), dilation=2)
    np.testing.assert_array_equal(out.value, [[[[20.0]]]])
    (dx,) = backward(out, np.ones((1, 1, 1, 1)), [x])
    np.testing.assert_array_equal(dx[0, 0], [[1, 0, 1], [0, 0, 0], [1, 0, 1]])


# ------------------------------------------------------------------------------------- new elementwise
def test_exp_tanh_hard_swish_forward_and_vjp():
    rng = np.random.default_rng(30)
    a = away_from(rng, (3, 4), -5, 5, kinks=(-3.0, 3.0))
    np.testing.assert_allclose(ops.exp(Node(a)).value, np.vectorize(math.exp)(a), rtol=1e-15)
    np.testing.assert_allclose(ops.tanh(Node(a)).value, np.vectorize(math.tanh)(a), rtol=1e-15)
    # hard swish: x * min(max(x + 3, 0), 6) / 6; at -1: -1 * 2 / 6, at 4: 4, at -4: 0
    np.testing.assert_allclose(ops.hard_swish(Node(np.array([-4.0, -1.0, 4.0]))).value, [0.0, -1 / 3, 4.0])
    for op in (ops.exp, ops.tanh, ops.hard_swish):
        assert_vjp_matches_fd(op, [a])


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_softmax(axis):
    rng = np.random.default_rng(31)
    a = rng.standard_normal((3, 4, 5)) * 3
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    np.testing.assert_allclose(ops.softmax(Node(a), axis).value, e / e.sum(axis=axis, keepdims=True), rtol=1e-14)
    assert_vjp_matches_fd(lambda x: ops.softmax(x, axis), [a])


def test_softmax_of_huge_logits_is_finite_and_exact():
    # exp(1000) overflows; the shifted form gives softmax([1000, 999]) = [1, e^-1] / (1 + e^-1)
    got = ops.softmax(Node(np.array([[1000.0, 999.0]])), 1).value
    np.testing.assert_allclose(got, [[1 / (1 + math.exp(-1)), math.exp(-1) / (1 + math.exp(-1))]], rtol=1e-15)


def test_transpose_take_split():
    rng = np.random.default_rng(32)
    a = rng.standard_normal((2, 3, 4))
    np.testing.assert_array_equal(ops.transpose(Node(a), (2, 0, 1)).value, a.transpose(2, 0, 1))
    np.testing.assert_array_equal(ops.take(Node(a), 2, 1, 3).value, a[:, :, 1:3])
    parts = ops.split(Node(a), 2, 2)
    np.testing.assert_array_equal(np.concatenate([p.value for p in parts], axis=2), a)
    assert_vjp_matches_fd(lambda x: ops.transpose(x, (2, 0, 1)), [a])
    assert_vjp_matches_fd(lambda x: ops.take(x, 1, 1, 2), [a])
    assert_vjp_matches_fd(lambda x: ops.mul(ops.split(x, 3, 1)[0], ops.split(x, 3, 1)[2]), [a])
    with pytest.raises(ValueError, match="not divisible"):
        ops.split(Node(a), 3, 2)


def test_repeat_nearest_by_hand():
    # 2 -> 5 rows: floor(i * 2 / 5) = 0, 0, 0, 1, 1 (torch's 'nearest'); 3 -> 3 columns unchanged
    a = np.array([[[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]]])
    out = ops.repeat_nearest(Node(a), (5, 3))
    np.testing.assert_array_equal(out.value[0, 0], [[1, 2, 3], [1, 2, 3], [1, 2, 3], [4, 5, 6], [4, 5, 6]])
    (da,) = backward(out, np.ones((1, 1, 5, 3)), [out.parents[0]])
    np.testing.assert_array_equal(da[0, 0], [[3, 3, 3], [2, 2, 2]])
    small = np.random.default_rng(33).standard_normal((2, 1, 3, 2))
    assert_vjp_matches_fd(lambda x: ops.repeat_nearest(x, (7, 4)), [small])


def test_nearest_indices_round_as_torch_in_float32():
    # exact floor(i * in / out) except where float32 rounds it down: 22 * (26 / 44) = 13 exactly, 12.999999 in float32
    np.testing.assert_array_equal(ops.nearest_indices(3, 7), [0, 0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(ops.nearest_indices(4, 8), np.arange(8) >> 1)
    got = ops.nearest_indices(26, 44)
    assert got[22] == 12 and (22 * 26) // 44 == 13
    exact = (np.arange(44) * 26) // 44
    assert [i for i in range(44) if got[i] != exact[i]] == [22]


def test_pad_constant_and_circular():
    a = np.arange(1.0, 5.0).reshape(1, 4)
    np.testing.assert_array_equal(ops.pad(Node(a), ((0, 0), (1, 2))).value, [[0, 1, 2, 3, 4, 0, 0]])
    # circular: wraps around, as torch's padding_mode='circular'
    np.testing.assert_array_equal(ops.pad(Node(a), ((0, 0), (1, 2)), "circular").value, [[4, 1, 2, 3, 4, 1, 2]])
    rng = np.random.default_rng(34)
    b = rng.standard_normal((2, 3, 4))
    for mode in ("constant", "circular"):
        assert_vjp_matches_fd(lambda x, mode=mode: ops.pad(x, ((0, 0), (2, 1), (1, 3)), mode), [b])
    with pytest.raises(ValueError, match="wider than the axis"):
        ops.pad(Node(a), ((0, 0), (5, 0)), "circular")
    with pytest.raises(ValueError, match="mode"):
        ops.pad(Node(a), ((0, 0), (1, 1)), "reflect")


def test_matmul():
    rng = np.random.default_rng(35)
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 4, 5))
    want = np.stack([[[sum(a[n, i, k] * b[n, k, j] for k in range(4)) for j in range(5)] for i in range(3)]
                     for n in range(2)])
    np.testing.assert_allclose(ops.matmul(Node(a), Node(b)).value, want, rtol=1e-13)
    assert_vjp_matches_fd(ops.matmul, [a, b])


def test_normalize_and_group_norm():
    rng = np.random.default_rng(36)
    x = rng.standard_normal((2, 6, 3, 4)) * 2 + 1
    w, b = rng.uniform(0.5, 1.5, 6), rng.uniform(-0.5, 0.5, 6)
    # two groups of three channels: statistics over each group's (3, H, W) block, biased variance
    blocks = x.reshape(2, 2, 3 * 3 * 4)
    mu, var = blocks.mean(-1, keepdims=True), blocks.var(-1, keepdims=True)
    want = ((blocks - mu) / np.sqrt(var + 1e-5)).reshape(x.shape) * w[None, :, None, None] + b[None, :, None, None]
    np.testing.assert_allclose(ops.group_norm(Node(x), 2, Node(w), Node(b), 1e-5).value, want, rtol=1e-12)
    assert_vjp_matches_fd(lambda xn, wn, bn: ops.group_norm(xn, 2, wn, bn, 1e-5), [x, w, b])
    # normalize over the channel axis alone (timm's LayerNorm2d without its affine)
    c_mu, c_var = x.mean(1, keepdims=True), x.var(1, keepdims=True)
    np.testing.assert_allclose(ops.normalize(Node(x), (1,), 1e-6).value, (x - c_mu) / np.sqrt(c_var + 1e-6),
                               rtol=1e-12)
    with pytest.raises(ValueError, match="groups"):
        ops.group_norm(Node(x), 4, None, None, 1e-5)


# ----------------------------------------------------------------------------------------- normalisation
def _bn_inputs(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, 2, 3, 5))
    weight = rng.uniform(0.5, 1.5, 2)
    bias = rng.uniform(-0.5, 0.5, 2)
    rm = rng.uniform(-0.5, 0.5, 2)
    rv = rng.uniform(0.5, 2.0, 2)
    return x, weight, bias, rm, rv


def test_batch_norm_eval_forward_and_vjp():
    x, weight, bias, rm, rv = _bn_inputs(18)
    eps = 1e-3
    out = ops.batch_norm(*(Node(a) for a in (x, weight, bias, rm, rv)), training=False, eps=eps)
    r = (1, -1, 1, 1)
    want = (x - rm.reshape(r)) / np.sqrt(rv.reshape(r) + eps) * weight.reshape(r) + bias.reshape(r)
    np.testing.assert_allclose(out.value, want, rtol=1e-13, atol=1e-15)
    assert_vjp_matches_fd(lambda *ns: ops.batch_norm(*ns, training=False, eps=eps), [x, weight, bias, rm, rv])


def test_batch_norm_train_forward_and_vjp():
    x, weight, bias, rm, rv = _bn_inputs(19)
    eps = 1e-3
    nodes = [Node(a) for a in (x, weight, bias, rm, rv)]
    out = ops.batch_norm(*nodes, training=True, eps=eps)
    r = (1, -1, 1, 1)
    mu = x.mean(axis=(0, 2, 3)).reshape(r)
    var = ((x - mu) ** 2).mean(axis=(0, 2, 3)).reshape(r)  # biased: divide by N*H*W
    want = (x - mu) / np.sqrt(var + eps) * weight.reshape(r) + bias.reshape(r)
    np.testing.assert_allclose(out.value, want, rtol=1e-13, atol=1e-15)
    assert_vjp_matches_fd(lambda xn, wn, bn: ops.batch_norm(xn, wn, bn, nodes[3], nodes[4], training=True, eps=eps),
                          [x, weight, bias])
    # the running statistics do not enter the training forward: their gradients are zeros
    _, _, _, drm, drv = backward(out, np.ones_like(out.value), nodes)
    np.testing.assert_array_equal(drm, np.zeros(2))
    np.testing.assert_array_equal(drv, np.zeros(2))


def test_batch_norm_train_by_hand():
    # one channel, values [1, 3]: mean 2, biased variance 1, so xhat = [-1, 1] / sqrt(1 + eps)
    x = Node(np.array([1.0, 3.0]).reshape(1, 1, 1, 2))
    one, zero = Node(np.array([2.0])), Node(np.array([0.25]))
    out = ops.batch_norm(x, one, zero, Node(np.array([100.0])), Node(np.array([100.0])), training=True, eps=1e-5)
    d = 1 / math.sqrt(1 + 1e-5)
    np.testing.assert_allclose(out.value.ravel(), [-2 * d + 0.25, 2 * d + 0.25], rtol=1e-14)


# -------------------------------------------------------------------------------------------- the graph
def test_node_used_twice_accumulates_gradient():
    # y = x * x + 3 x: dy/dx = 2 x + 3
    xv = np.array([[-1.5, 0.5, 2.0]])
    x = Node(xv)
    y = ops.add(ops.mul(x, x), ops.scale(x, 3.0))
    (g,) = backward(y, np.ones_like(xv), [x])
    np.testing.assert_allclose(g, 2 * xv + 3, rtol=1e-15)
    # add(x, x): dy/dx = 2
    (g,) = backward(ops.add(x, x), np.ones_like(xv), [x])
    np.testing.assert_array_equal(g, np.full_like(xv, 2.0))


def test_diamond_graph_vjp():
    # a = x^2; y = a * (a + x) = x^4 + x^3; dy/dx = 4 x^3 + 3 x^2
    xv = np.array([0.7, -1.3, 2.1])
    x = Node(xv)
    a = ops.square(x)
    y = ops.mul(a, ops.add(a, x))
    (g,) = backward(y, np.ones(3), [x])
    np.testing.assert_allclose(g, 4 * xv ** 3 + 3 * xv ** 2, rtol=1e-14)

    def build(xn):
        an = ops.square(xn)
        return ops.sigmoid(ops.mul(ops.concat([an, an], 0), ops.sub(ops.concat([an, xn], 0), ops.concat([xn, an], 0))))

    assert_vjp_matches_fd(build, [xv])


def test_gradient_with_respect_to_an_intermediate_node():
    # y = 5 * a with a = x^2: dL/da = 5 * cot
    x = Node(np.array([1.0, 2.0]))
    a = ops.square(x)
    y = ops.scale(a, 5.0)
    ga, gx = backward(y, np.array([1.0, -1.0]), [a, x])
    np.testing.assert_array_equal(ga, [5.0, -5.0])
    np.testing.assert_array_equal(gx, [10.0, -20.0])


def test_unrelated_node_gets_zeros():
    x = Node(np.array([1.0, 2.0]))
    unrelated = Node(np.full((3, 4), 7.0))
    y = ops.square(x)
    gx, gu = backward(y, np.ones(2), [x, unrelated])
    np.testing.assert_array_equal(gx, [2.0, 4.0])
    assert gu.shape == (3, 4)
    np.testing.assert_array_equal(gu, np.zeros((3, 4)))


def test_backward_rejects_wrong_cotangent_shape():
    x = Node(np.ones((2, 3)))
    with pytest.raises(ValueError):
        backward(ops.square(x), np.ones((3, 2)), [x])


def test_node_value_is_float64():
    assert Node(np.array([1, 2], dtype=np.int32)).value.dtype == np.float64
    assert Node(np.array([0.1], dtype=np.float32)).value.dtype == np.float64
    assert ops.constant([1, 2]).value.dtype == np.float64
    assert Node(np.zeros((2, 5))).shape == (2, 5)
