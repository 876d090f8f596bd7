"""timm's NonLocalAttn ('nl') and BatNonLocalAttn ('bat'): the float64 reference by hand and against finite
differences, every backend equal to timm on random weights, the dropout decision, and every refusal.

Dropout (BatNonLocalAttn's Dropout2d) is random, so the training comparisons of the conformance cases use
``drop_rate=0``; here, with ``drop_rate > 0``, the torch module equals timm's under the same seed, and in every
framework the output equals the reference given the channel mask read back from that output, with the channels
zeroed at about the rate and the kept ones scaled by 1 / (1 - p).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from attn_core import BatNonLocalAttnConfig, ConfigError, InputShapeError, NonLocalAttnConfig, create_config
from attn_core.autodiff import Node, backward
from attn_core.non_local import BN_EPS

from .._fw import FRAMEWORKS, backend, runner
from .._gradcheck import assert_fd_close, fd_grad
from .._timm import canonical, timm_attn, timm_kwargs, torch_step

EPS = BN_EPS


def _relu(v):
    return np.maximum(v, 0.0)


def _bn_eval(z, w, prefix):
    """BatchNorm on running statistics over axis 1 of an NCHW array, written out."""
    shape = (1, -1, 1, 1)
    return ((z - w[f"{prefix}.running_mean"].reshape(shape)) / np.sqrt(w[f"{prefix}.running_var"].reshape(shape) + EPS)
            * w[f"{prefix}.weight"].reshape(shape) + w[f"{prefix}.bias"].reshape(shape))


def _bn_train(z, w, prefix):
    """BatchNorm on the batch's mean and biased variance over N, H, W."""
    shape = (1, -1, 1, 1)
    mu = z.mean(axis=(0, 2, 3), keepdims=True)
    var = ((z - mu) ** 2).mean(axis=(0, 2, 3), keepdims=True)
    return (z - mu) / np.sqrt(var + EPS) * w[f"{prefix}.weight"].reshape(shape) + w[f"{prefix}.bias"].reshape(shape)


def _conv1x1(x, weight, bias=None):
    out = np.einsum("oc,nchw->nohw", weight[:, :, 0, 0], x)
    return out if bias is None else out + bias.reshape(1, -1, 1, 1)


# ------------------------------------------------------------------------------------- reference by hand
def test_non_local_two_positions_by_hand():
    """C = 2, rd = 1, a 1 x 2 map: every number of the block written out with scalars."""
    cfg = NonLocalAttnConfig(2, rd_channels=1)
    w = {"t.weight": np.array([0.5, -1.0]).reshape(1, 2, 1, 1), "t.bias": np.array([0.25]),
         "p.weight": np.array([1.5, 0.5]).reshape(1, 2, 1, 1), "p.bias": np.array([-0.5]),
         "g.weight": np.array([-0.75, 2.0]).reshape(1, 2, 1, 1), "g.bias": np.array([0.125]),
         "z.weight": np.array([1.0, -2.0]).reshape(2, 1, 1, 1), "z.bias": np.array([0.5, -0.25]),
         "norm.weight": np.array([0.8, 1.2]), "norm.bias": np.array([0.1, -0.3]),
         "norm.running_mean": np.array([0.2, -0.1]), "norm.running_var": np.array([1.5, 0.6])}
    x = np.array([[1.0, -2.0], [0.5, 3.0]]).reshape(1, 2, 1, 2)  # channel c, position i
    pos = [(x[0, 0, 0, i], x[0, 1, 0, i]) for i in range(2)]
    theta = [0.5 * a - 1.0 * b + 0.25 for a, b in pos]
    phi = [1.5 * a + 0.5 * b - 0.5 for a, b in pos]
    g = [-0.75 * a + 2.0 * b + 0.125 for a, b in pos]
    s = 2 ** -0.5
    want = np.zeros_like(x)
    for i in range(2):
        e = [math.exp(theta[i] * phi[j] * s) for j in range(2)]
        ctx = (e[0] * g[0] + e[1] * g[1]) / (e[0] + e[1])
        for c, (zw, zb, gamma, beta, mean, var) in enumerate([(1.0, 0.5, 0.8, 0.1, 0.2, 1.5),
                                                               (-2.0, -0.25, 1.2, -0.3, -0.1, 0.6)]):
            want[0, c, 0, i] = x[0, c, 0, i] + (zw * ctx + zb - mean) / math.sqrt(var + EPS) * gamma + beta
    np.testing.assert_allclose(cfg.reference(w, x), want, rtol=1e-13)
    # without the scale the logits are the plain dot products
    e0 = [math.exp(theta[0] * phi[j]) for j in range(2)]
    ctx0 = (e0[0] * g[0] + e0[1] * g[1]) / sum(e0)
    got = NonLocalAttnConfig(2, use_scale=False, rd_channels=1).reference(w, x)
    assert got[0, 0, 0, 0] == pytest.approx(x[0, 0, 0, 0] + (ctx0 + 0.5 - 0.2) / math.sqrt(1.5 + EPS) * 0.8 + 0.1,
                                            rel=1e-13)


def test_non_local_single_position_is_g_through_z():
    """One position: the softmax is 1, so the context is g(x) itself (training BatchNorm over the batch)."""
    cfg = NonLocalAttnConfig(8)
    rng = np.random.default_rng(3)
    w = cfg.init_weights(rng)
    x = rng.standard_normal((3, 8, 1, 1))
    ctx = _conv1x1(x, w["g.weight"], w["g.bias"])
    z = _conv1x1(ctx, w["z.weight"], w["z.bias"])
    np.testing.assert_allclose(cfg.reference(w, x), x + _bn_eval(z, w, "norm"), rtol=1e-12)
    np.testing.assert_allclose(cfg.reference(w, x, training=True), x + _bn_train(z, w, "norm"), rtol=1e-12)


def _bat_by_loops(cfg, w, x, training):
    """timm's BatNonLocalAttn restated with loops (drop_rate 0): the max pools, conv_p / conv_q as sums, the
    normalisations, and resize_mat's Kronecker product with the identity index by index."""
    bn = _bn_train if training else _bn_eval
    act = _relu if cfg.act_layer == "relu" else (lambda v: v / (1 + np.exp(-v)))

    def cna(v, prefix):
        return act(bn(_conv1x1(v, w[f"{prefix}.conv.weight"]), w, f"{prefix}.bn"))

    n, _, h, wd = x.shape
    b, g, rd = cfg.block_size, cfg.groups, cfg.hidden
    t, s = h // b, wd // b
    u = cna(x, "conv1")
    o = cna(u, "ba.conv1")
    p = np.zeros((n, b * b * g))
    q = np.zeros((n, b * b * g))
    for k in range(n):
        rows = np.array([[o[k, gi, i * t:(i + 1) * t, :].max() for i in range(b)] for gi in range(g)])
        cols = np.array([[o[k, gi, :, j * s:(j + 1) * s].max() for j in range(b)] for gi in range(g)])
        for out in range(b * b * g):
            p[k, out] = w["ba.conv_p.bias"][out] + sum(w["ba.conv_p.weight"][out, gi, i, 0] * rows[gi, i]
                                                       for gi in range(g) for i in range(b))
            q[k, out] = w["ba.conv_q.bias"][out] + sum(w["ba.conv_q.weight"][out, gi, 0, j] * cols[gi, j]
                                                       for gi in range(g) for j in range(b))
    p = 1 / (1 + np.exp(-p.reshape(n, g, b, b)))
    q = 1 / (1 + np.exp(-q.reshape(n, g, b, b)))
    p = p / p.sum(axis=3, keepdims=True)
    q = q / q.sum(axis=2, keepdims=True)
    v = np.zeros_like(u)
    for k in range(n):
        for c in range(rd):
            gi = c // (rd // g)
            big_p = np.array([[p[k, gi, r // t, r2 // t] * (r % t == r2 % t) for r2 in range(h)] for r in range(h)])
            big_q = np.array([[q[k, gi, r // s, r2 // s] * (r % s == r2 % s) for r2 in range(wd)]
                              for r in range(wd)])
            v[k, c] = big_p @ u[k, c] @ big_q
    return x + cna(cna(v, "ba.conv2"), "conv2")


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("cfg,shape", [
    (BatNonLocalAttnConfig(4, block_size=2, groups=2, rd_channels=4, drop_rate=0.0), (2, 4, 4, 6)),
    (BatNonLocalAttnConfig(6, block_size=3, groups=1, rd_channels=2, drop_rate=0.0, act_layer="silu"), (1, 6, 3, 9)),
], ids=["b2-g2", "b3-silu"])
def test_bat_by_loops(cfg, shape, training):
    rng = np.random.default_rng(5)
    w = cfg.init_weights(rng)
    x = rng.standard_normal(shape)
    np.testing.assert_allclose(cfg.reference(w, x, training=training), _bat_by_loops(cfg, w, x, training),
                               rtol=1e-12, atol=1e-12)


def test_bat_block_size_one_is_three_conv_blocks():
    """block_size 1: P = Q = [[1]] and kron(1, I_H) = I, so the transform is its two conv blocks alone."""
    cfg = BatNonLocalAttnConfig(8, block_size=1, drop_rate=0.0)
    rng = np.random.default_rng(7)
    w = cfg.init_weights(rng)
    x = rng.standard_normal((2, 8, 3, 5))

    def cna(v, prefix):
        return _relu(_bn_eval(_conv1x1(v, w[f"{prefix}.conv.weight"]), w, f"{prefix}.bn"))

    np.testing.assert_allclose(cfg.reference(w, x), x + cna(cna(cna(x, "conv1"), "ba.conv2"), "conv2"), rtol=1e-12)


# ------------------------------------------------------------------------------------- VJP vs finite differences
def _forward(cfg, weights, x, training, keep):
    params = {k: Node(np.asarray(v, dtype=np.float64)) for k, v in weights.items()}
    xn = Node(np.asarray(x, dtype=np.float64))
    kw = {} if keep is None else {"keep": keep}
    return xn, params, cfg.reference_forward(xn, params, training=training, **kw)


VJP_CASES = [
    ("nl-eval", NonLocalAttnConfig(4, rd_channels=2), (2, 4, 2, 3), False, None),
    ("nl-train-noscale", NonLocalAttnConfig(4, rd_channels=3, use_scale=False), (2, 4, 3, 2), True, None),
    ("bat-eval", BatNonLocalAttnConfig(4, block_size=2, rd_channels=4), (1, 4, 4, 2), False, None),
    ("bat-train-silu", BatNonLocalAttnConfig(4, block_size=2, groups=1, rd_channels=2, drop_rate=0.0,
                                             act_layer="silu"), (2, 4, 2, 4), True, None),
    ("bat-train-dropout", BatNonLocalAttnConfig(4, block_size=1, rd_channels=2, drop_rate=0.25), (2, 4, 2, 3),
     True, np.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0]).reshape(2, 4, 1, 1)),
]


@pytest.mark.parametrize("name,cfg,shape,training,keep", VJP_CASES, ids=[c[0] for c in VJP_CASES])
def test_reference_vjp_matches_finite_differences(name, cfg, shape, training, keep):
    rng = np.random.default_rng(sum(map(ord, name)))
    weights = cfg.init_weights(rng)
    x = rng.standard_normal(shape)
    cot = rng.standard_normal(shape)
    trainable = [p.name for p in cfg.param_table() if p.trainable]
    xn, params, y = _forward(cfg, weights, x, training, keep)
    grads = backward(y, cot, [xn] + [params[k] for k in trainable])

    def loss(xv, ws):
        return float(np.sum(_forward(cfg, ws, xv, training, keep)[2].value * cot))

    assert_fd_close(grads[0], fd_grad(lambda a: loss(a, weights), x), f"{name}: dx")
    for pname, g in zip(trainable, grads[1:], strict=True):
        assert_fd_close(g, fd_grad(lambda a, pname=pname: loss(x, {**weights, pname: a}), weights[pname]),
                        f"{name}: d{pname}")


# ------------------------------------------------------------------------------------- equal to timm
def _timm_module(key, channels, options, seed):
    """timm's module, every parameter and buffer drawn at random (``timm_attn``, magnitudes 0.3 .. 1)."""
    return timm_attn(key, channels, seed, low=0.3, **timm_kwargs(options))


def _assert_equal(got, want, what, rtol=1e-10):
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale, err_msg=what)


TIMM_CASES = [
    ("nl", 16, {}, (2, 16, 5, 3)),
    ("nl", 24, {"use_scale": False, "rd_channels": 4}, (1, 24, 4, 4)),
    ("nl", 40, {"rd_ratio": 0.25, "rd_divisor": 4}, (2, 40, 3, 2)),
    ("bat", 16, {"block_size": 2, "drop_rate": 0.0}, (2, 16, 6, 4)),
    ("bat", 24, {"block_size": 3, "groups": 4, "rd_channels": 8, "drop_rate": 0.0}, (2, 24, 9, 3)),
    ("bat", 32, {"drop_rate": 0.0}, (1, 32, 7, 14)),
    ("bat", 16, {"block_size": 2, "drop_rate": 0.0, "act_layer": "silu"}, (2, 16, 4, 4)),
]
TIMM_IDS = [f"{k}-c{c}-" + "-".join(f"{n}{v}" for n, v in o.items()) for k, c, o, _ in TIMM_CASES]


def _backend_timm_cases():
    """Every framework x TIMM_CASES; in the fast tier the first case of each key in torch and Paddle, the rest (Flax
    compiles a program per case, 15-20 s) slow."""
    firsts = {next(i for i, c in enumerate(TIMM_CASES) if c[0] == key) for key in ("nl", "bat")}
    return [pytest.param(fw, *case, id=f"{fw}-{TIMM_IDS[i]}",
                         marks=() if fw != "flax" and i in firsts else (pytest.mark.slow,))
            for fw in FRAMEWORKS for i, case in enumerate(TIMM_CASES)]


def test_parameter_names_are_timms_state_dict_keys():
    for key, channels, options, _ in TIMM_CASES:
        module = _timm_module(key, channels, options, 0)
        want = {k: v.shape for k, v in canonical(module).items()}
        assert create_config(key, channels, **options).param_shapes() == want


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_every_backend_exports_timms_names(fw):
    """Each backend's module holds exactly the canonical parameters (timm's names), in their canonical shapes."""
    b = backend(fw)
    for key, channels, options, shape in TIMM_CASES[:1] + TIMM_CASES[4:5]:
        config = create_config(key, channels, **options)
        module = b.ATTN_LAYERS[key].from_config(config)
        if fw == "flax":
            import jax
            import jax.numpy as jnp

            n, c, h, w = shape
            exported = b.export_weights(module, module.init(jax.random.key(0), jnp.ones((n, h, w, c))))
        else:
            exported = b.export_weights(module)
        assert {k: tuple(np.shape(v)) for k, v in exported.items()} == config.param_shapes(), (fw, key)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("key,channels,options,shape", TIMM_CASES, ids=TIMM_IDS)
def test_torch_module_loads_timms_state_dict_and_computes_the_same(key, channels, options, shape, training):
    """timm's state_dict loaded strictly (num_batches_tracked included) into the project's torch module: the same
    output, input and parameter gradients and running statistics, in float64."""
    bt = backend("torch")
    import torch

    timm_module = _timm_module(key, channels, options, 11)
    ours = bt.create_attn(key, channels, **options).double()
    ours.load_state_dict(timm_module.state_dict(), strict=True)
    rng = np.random.default_rng(12)
    x, cot = rng.standard_normal(shape), rng.standard_normal(shape)
    y_ref, dx_ref, grads_ref, state_ref = torch_step(timm_module, x, cot, training)
    y, dx, grads, state = torch_step(ours, x, cot, training)
    _assert_equal(y, y_ref, "output")
    _assert_equal(dx, dx_ref, "grad:input")
    assert set(grads) == set(grads_ref)
    for k in grads_ref:
        _assert_equal(grads[k], grads_ref[k], f"grad:{k}")
    for k in state_ref:
        _assert_equal(state[k], state_ref[k], f"state:{k}")
    assert isinstance(ours, torch.nn.Module) and type(ours).__name__ == type(timm_module).__name__


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("fw,key,channels,options,shape", _backend_timm_cases())
def test_every_backend_equals_timm_through_canonical_weights(fw, key, channels, options, shape, training):
    """timm's state_dict as the canonical weights (its keys, minus num_batches_tracked), run through the
    framework's runner in float64: timm's output, gradients and running statistics, and the float64 reference's."""
    r = runner(fw)
    timm_module = _timm_module(key, channels, options, 21)
    weights = canonical(timm_module)  # copies: the training step updates the buffers
    rng = np.random.default_rng(22)
    x, cot = rng.standard_normal(shape), rng.standard_normal(shape)
    y_ref, dx_ref, grads_ref, state_ref = torch_step(timm_module, x, cot, training)
    config = create_config(key, channels, **options)
    _assert_equal(config.reference(weights, x, training=training), y_ref, "reference output")
    result = r.execute(r.build_handle(key, config), weights, x, cot, "float64", training, r.default_mode)
    _assert_equal(result.y, y_ref, "output")
    _assert_equal(result.dx, dx_ref, "grad:input")
    assert set(result.dparams) == set(grads_ref)
    for k in grads_ref:
        _assert_equal(result.dparams[k], grads_ref[k], f"grad:{k}")
    if training:
        assert set(result.state) == set(state_ref)
        for k in state_ref:
            _assert_equal(result.state[k], state_ref[k], f"state:{k}")


# ------------------------------------------------------------------------------------- dropout
def test_torch_dropout_is_timms_under_the_same_seed():
    """drop_rate 0.3 in training: the project's torch module draws the same Dropout2d mask as timm's from the same
    seed (one draw of (N, C, 1, 1) per forward, after the same computation), so the outputs are equal."""
    bt = backend("torch")
    import torch

    options = {"block_size": 2, "drop_rate": 0.3}
    timm_module = _timm_module("bat", 16, options, 31).train()
    ours = bt.create_attn("bat", 16, **options).double().train()
    ours.load_state_dict(timm_module.state_dict(), strict=True)
    x = torch.tensor(np.random.default_rng(32).standard_normal((4, 16, 4, 6)))
    torch.manual_seed(5)
    want = timm_module(x).detach().numpy()
    torch.manual_seed(5)
    got = ours(x).detach().numpy()
    _assert_equal(got, want, "output")
    dropped = np.all((want - x.numpy()) == 0, axis=(2, 3))
    assert 0 < dropped.sum() < dropped.size  # the seed drops some channels and keeps others


@pytest.mark.parametrize("fw", [pytest.param(fw, marks=(pytest.mark.slow,) if fw == "flax" else ())
                                for fw in FRAMEWORKS])  # Flax op by op in float64: 15-20 s
def test_dropout_zeroes_whole_channels_at_the_rate_and_scales_the_rest(fw):
    """drop_rate 0.25 in training, 8 x 32 (sample, channel) pairs: each channel of the branch is either all zero or
    the branch times 1 / (1 - p) (the branch: the reference's ``bat_branch`` tap, training statistics), about p of
    them are zero, and the reference given that mask as ``keep`` is the output."""
    r = runner(fw)
    p, shape = 0.25, (8, 32, 2, 4)
    config = BatNonLocalAttnConfig(32, block_size=2, drop_rate=p)
    rng = np.random.default_rng(41)
    weights = config.init_weights(rng)
    x = rng.standard_normal(shape)
    module, variables = r.load(backend(fw).ATTN_LAYERS["bat"].from_config(config), weights, dtype="float64")
    r.seed(3)
    y, _ = r.train_forward(module, variables, x)
    taps: dict[str, Node] = {}
    config.replace(drop_rate=0.0).reference_forward(Node(x), {k: Node(v) for k, v in weights.items()}, training=True,
                                                    taps=taps)
    branch = taps["bat_branch"].value
    seen = np.any(branch != 0, axis=(2, 3))  # a channel ReLU zeroed entirely shows no mask
    delta = y - x
    dropped = np.all(np.abs(delta) < 1e-12, axis=(2, 3)) & seen
    kept = seen & ~dropped
    np.testing.assert_allclose(delta[kept], branch[kept] / (1 - p), rtol=1e-10, atol=1e-12)
    count = int(seen.sum())
    assert count > 200
    # the number dropped is binomial(count, p): within 5 standard deviations of count * p
    assert abs(int(dropped.sum()) - count * p) < 5 * math.sqrt(count * p * (1 - p))
    keep = (~dropped).astype(np.float64)[:, :, None, None]
    want = config.reference_forward(Node(x), {k: Node(v) for k, v in weights.items()}, training=True, keep=keep)
    _assert_equal(y, want.value, "output")


def test_reference_dropout_needs_a_mask_and_leaves_the_running_statistics_alone():
    config = BatNonLocalAttnConfig(16, block_size=2, drop_rate=0.2)
    rng = np.random.default_rng(51)
    weights = config.init_weights(rng)
    x = rng.standard_normal((2, 16, 4, 4))
    with pytest.raises(ValueError, match=r"BatNonLocalAttn: in training with drop_rate 0.2 the output depends on "
                                         r"Dropout2d's random channel mask; pass it as keep"):
        config.reference(weights, x, training=True)
    with pytest.raises(ValueError, match=r"keep must be an \(N, C, 1, 1\) = \(2, 16, 1, 1\) array of 0 and 1, got "
                                         r"shape \(2, 16\)"):
        config.reference_forward(Node(x), {k: Node(v) for k, v in weights.items()}, training=True,
                                 keep=np.ones((2, 16)))
    # eval drops nothing, whatever the rate
    np.testing.assert_array_equal(config.reference(weights, x), config.replace(drop_rate=0.0).reference(weights, x))
    state = config.reference_state(weights, x)
    want = config.replace(drop_rate=0.0).reference_state(weights, x)
    assert set(state) == {p.name for p in config.param_table() if not p.trainable}
    for k in want:
        np.testing.assert_array_equal(state[k], want[k])
    # p = 1 drops every channel: the block is the identity in training
    full = config.replace(drop_rate=1.0)
    keep = np.zeros((2, 16, 1, 1))
    out = full.reference_forward(Node(x), {k: Node(v) for k, v in weights.items()}, training=True, keep=keep)
    np.testing.assert_array_equal(out.value, x)


# ------------------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("build,message", [
    (lambda: NonLocalAttnConfig(0), "NonLocalAttn: channels must be a positive integer, got 0"),
    (lambda: NonLocalAttnConfig(16, use_scale="yes"), "NonLocalAttn: use_scale must be one of True, False; got 'yes'"),
    (lambda: NonLocalAttnConfig(16, rd_ratio=0.0), "NonLocalAttn: rd_ratio must be a positive finite number, got 0.0"),
    (lambda: NonLocalAttnConfig(16, rd_ratio=math.nan), "NonLocalAttn: rd_ratio must be a positive finite number"),
    (lambda: NonLocalAttnConfig(16, rd_divisor=0), "NonLocalAttn: rd_divisor must be a positive integer, got 0"),
    (lambda: NonLocalAttnConfig(16, rd_divisor=None), "NonLocalAttn: rd_divisor must be a positive integer, got None"),
    (lambda: NonLocalAttnConfig(16, rd_channels=0), "NonLocalAttn: rd_channels must be a positive integer, got 0"),
    (lambda: BatNonLocalAttnConfig(0), "BatNonLocalAttn: channels must be a positive integer, got 0"),
    (lambda: BatNonLocalAttnConfig(16, block_size=0), "BatNonLocalAttn: block_size must be a positive integer, got 0"),
    (lambda: BatNonLocalAttnConfig(16, groups=0), "BatNonLocalAttn: groups must be a positive integer, got 0"),
    (lambda: BatNonLocalAttnConfig(16, groups=3),
     r"BatNonLocalAttn: groups 3 must divide the reduced width rd = 8 \(each group's P and Q are shared by rd / "
     r"groups channels\)"),
    (lambda: BatNonLocalAttnConfig(16, groups=16), "BatNonLocalAttn: groups 16 must divide the reduced width rd = 8"),
    (lambda: BatNonLocalAttnConfig(16, rd_ratio=-0.25), "BatNonLocalAttn: rd_ratio must be a positive finite number"),
    (lambda: BatNonLocalAttnConfig(16, rd_channels=0), "BatNonLocalAttn: rd_channels must be a positive integer"),
    (lambda: BatNonLocalAttnConfig(16, drop_rate=-0.1),
     r"BatNonLocalAttn: drop_rate must be a probability in \[0, 1\], got -0.1"),
    (lambda: BatNonLocalAttnConfig(16, drop_rate=1.5), r"BatNonLocalAttn: drop_rate must be a probability in \[0, 1\]"),
    (lambda: BatNonLocalAttnConfig(16, drop_rate=math.nan), "BatNonLocalAttn: drop_rate must be a probability"),
    (lambda: BatNonLocalAttnConfig(16, act_layer="gelu"),
     "BatNonLocalAttn: act_layer must be one of 'relu', 'silu'; got 'gelu'"),
])
def test_config_errors(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_reduced_width_is_timms_make_divisible():
    """round_limit 0.9: C * rd_ratio rounded to the nearest multiple of the divisor, at least it, and one up where
    that loses more than 10 %."""
    assert NonLocalAttnConfig(16).hidden == 8  # 2 -> at least 8
    assert NonLocalAttnConfig(88).hidden == 16  # 11 -> 8 would lose 27 %: 16
    assert NonLocalAttnConfig(160).hidden == 24  # 20 -> 24 (nearest multiple, upwards from 20 + 4)
    assert NonLocalAttnConfig(64, rd_channels=5).hidden == 5
    assert BatNonLocalAttnConfig(256).hidden == 64 and BatNonLocalAttnConfig(40).hidden == 16  # 10 -> 8 loses 20 %
    assert NonLocalAttnConfig(2048).scale == 2048 ** -0.5 and NonLocalAttnConfig(8, use_scale=False).scale == 1.0


def test_reference_refuses_a_map_that_is_not_a_multiple_of_the_block():
    config = BatNonLocalAttnConfig(16, block_size=7)
    weights = config.init_weights(np.random.default_rng(0))
    with pytest.raises(InputShapeError, match=r"BatNonLocalAttn: expected H and W to be multiples of block_size 7 "
                                              r"\(the bilinear transform cuts each into 7 blocks\), got input shape "
                                              r"\(1, 16, 14, 9\) \(NCHW: H=14, W=9\)"):
        config.reference(weights, np.zeros((1, 16, 14, 9)))
    config.check_input((None, 16, None, 21), "float32", True)  # sizes unknown at trace time are not checked


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_every_backend_refuses_a_map_that_is_not_a_multiple_of_the_block(fw):
    r = runner(fw)
    module = backend(fw).BatNonLocalAttn(16, block_size=2)
    shape = (1, 16, 4, 5)
    layout = "NHWC" if fw == "flax" else "NCHW"
    hw = "H=4, W=5"
    native = r.nchw_to_native(np.zeros(shape, dtype=np.float32))
    with pytest.raises(InputShapeError, match=rf"BatNonLocalAttn: expected H and W to be multiples of block_size 2 "
                                              rf".*\({layout}: {hw}\)"):
        r.call(module, r.tensor(np.ascontiguousarray(native)))


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_every_backend_refuses_one_value_per_channel_in_training(fw):
    r = runner(fw)
    for key, module in (("nl", backend(fw).NonLocalAttn(8)), ("bat", backend(fw).BatNonLocalAttn(8, block_size=1))):
        name = "NonLocalAttn" if key == "nl" else "BatNonLocalAttn"
        config = module.config
        weights = config.init_weights(np.random.default_rng(0), np.float32)
        module, variables = r.load(module, weights)
        with pytest.raises(InputShapeError, match=f"{name}: BatchNorm in training needs more than one value per "
                                                  "channel"):
            r.train_forward(module, variables, np.ones((1, 8, 1, 1), dtype=np.float32))


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_backends_refuse_what_the_configs_refuse(fw):
    b = backend(fw)
    with pytest.raises(ConfigError, match="BatNonLocalAttn: groups 3 must divide the reduced width rd = 8"):
        b.create_attn("bat", 16, groups=3).config  # noqa: B018 - Flax validates on construction too
    with pytest.raises(ConfigError, match="NonLocalAttn: rd_ratio must be a positive finite number"):
        b.create_attn("nl", 16, rd_ratio=-1.0).config  # noqa: B018


def test_check_diagnoses_a_port_at_the_bilinear_transform():
    """A port whose Q is normalised over its rows (as P is) instead of its columns: conformance.check, with the
    taps mapped to the submodules 'ba' and 'conv2', names the bilinear transform as the first difference; the
    project's own module passes with the same taps."""
    bt = backend("torch")
    import types

    import torch
    import torch.nn.functional as F

    from conformance import check

    spec = BatNonLocalAttnConfig(16, block_size=2, drop_rate=0.0)
    taps = {"bat_transform": "ba", "bat_branch": "conv2"}
    assert check(bt.BatNonLocalAttn.from_config(spec), spec, taps=taps).passed

    def port(q_dim):
        def forward(self, x, compute=None):  # timm's forward, resize_mat as torch.kron with the identity
            n, c, h, w = x.shape
            b, g = self.block_size, self.groups
            o = self.conv1(x, compute)
            p = torch.sigmoid(self.conv_p(F.adaptive_max_pool2d(o, (b, 1))).view(n, g, b, b))
            q = torch.sigmoid(self.conv_q(F.adaptive_max_pool2d(o, (1, b))).view(n, g, b, b))
            p, q = p / p.sum(3, keepdim=True), q / q.sum(q_dim, keepdim=True)
            eye = [torch.eye(k, dtype=x.dtype) for k in (h // b, w // b)]
            big_p = torch.kron(p.repeat_interleave(c // g, 1), eye[0])
            big_q = torch.kron(q.repeat_interleave(c // g, 1), eye[1])
            return self.conv2(big_p @ x @ big_q, compute)

        module = bt.BatNonLocalAttn.from_config(spec)
        module.ba.forward = types.MethodType(forward, module.ba)
        return module

    assert check(port(2), spec, taps=taps).passed
    report = check(port(3), spec, taps=taps)  # the bug: Q normalised over dim 3
    assert not report.passed
    d = report.first_difference
    assert d.stage == "bilinear transform" and d.quantity == "tap:bat_transform"
    assert [c.quantity for c in d.taps] == ["tap:bat_transform", "tap:bat_branch"]
