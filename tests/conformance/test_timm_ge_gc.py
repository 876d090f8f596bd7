"""timm's Gather-Excite (ge) and Global Context (gc, gca): the float64 references by hand and by finite differences,
which GatherExcite forms timm 1.0.31 cannot construct, equality with timm's modules (and, for the forms timm cannot
build, with timm's own forward on the submodules its constructor means to build) in torch, Paddle and Flax, the
initialisation timm gives GlobalContext, and every hyperparameter and input the configs refuse."""

from __future__ import annotations

import copy
import itertools
import math
from typing import Any

import numpy as np
import pytest

from attn_core import (
    ConfigError,
    GatherExciteConfig,
    GlobalContextAddConfig,
    GlobalContextConfig,
    InputShapeError,
    create_config,
)
from attn_core.autodiff import Node
from conformance.cases import CASES

from .._fw import FRAMEWORKS, backend, runner
from .._gradcheck import assert_reference_vjp
from .._timm import act_class, canonical, import_timm, randomise, timm_attn, timm_kwargs, torch_step

RTOL = 1e-10


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


def _relu(v: np.ndarray) -> np.ndarray:
    return np.maximum(v, 0.0)


def _mlp(w: dict[str, np.ndarray], prefix: str, v: np.ndarray) -> np.ndarray:
    """fc2(relu(fc1(v))) of 1x1 convolutions on channel vectors v (C,)."""
    h = _relu(w[f"{prefix}fc1.weight"][:, :, 0, 0] @ v + w[f"{prefix}fc1.bias"])
    return w[f"{prefix}fc2.weight"][:, :, 0, 0] @ h + w[f"{prefix}fc2.bias"]


# ------------------------------------------------------------------------------------------------ by hand
def test_ge_global_by_hand_is_se():
    """extent 0 without parameters: the mean over H, W through the MLP and the gate (timm: 'equivalent to SE')."""
    cfg = GatherExciteConfig(6, rd_channels=2)
    rng = np.random.default_rng(1)
    w = cfg.init_weights(rng)
    x = rng.standard_normal((2, 6, 3, 4))
    for n in range(2):
        gate = _sigmoid(_mlp(w, "mlp.", x[n].mean(axis=(1, 2))))
        np.testing.assert_allclose(cfg.reference(w, x)[n], x[n] * gate[:, None, None], rtol=1e-13)
    mx = GatherExciteConfig(6, use_mlp=False, add_maxpool=True)
    want = x * _sigmoid(0.5 * x.mean(axis=(2, 3), keepdims=True) + 0.5 * x.max(axis=(2, 3), keepdims=True))
    np.testing.assert_allclose(mx.reference({}, x), want, rtol=1e-13)


def _pool_by_hand(x: np.ndarray, e: int, how: str) -> np.ndarray:
    """Windows of 2e - 1 positions every e positions, starting e - 1 before the map, clipped to the map: their mean
    over the positions inside the map (count_include_pad=False) or their maximum."""
    n, c, h, w = x.shape
    k, pad = 2 * e - 1, e - 1
    rows = [(max(i * e - pad, 0), min(i * e - pad + k, h)) for i in range((h + 2 * pad - k) // e + 1)]
    cols = [(max(j * e - pad, 0), min(j * e - pad + k, w)) for j in range((w + 2 * pad - k) // e + 1)]
    out = np.zeros((n, c, len(rows), len(cols)))
    for i, (r0, r1) in enumerate(rows):
        for j, (c0, c1) in enumerate(cols):
            window = x[:, :, r0:r1, c0:c1]
            out[:, :, i, j] = window.mean(axis=(2, 3)) if how == "mean" else window.max(axis=(2, 3))
    return out


def _upsample_by_hand(g: np.ndarray, h: int, w: int) -> np.ndarray:
    """Output (i, j) reads gathered (floor(i * h' / h), floor(j * w' / w)) (torch's rule at these small sizes)."""
    gh, gw = g.shape[2:]
    return g[:, :, [i * gh // h for i in range(h)]][:, :, :, [j * gw // w for j in range(w)]]


@pytest.mark.parametrize("extent,shape", [(2, (2, 3, 7, 5)), (4, (1, 2, 9, 6)), (8, (2, 2, 3, 2))])
def test_ge_extent_pooling_by_hand(extent, shape):
    """extent e without parameters: the pooled map of ceil(H / e) x ceil(W / e), upsampled by nearest neighbours;
    with add_maxpool the mean of average and max pooling."""
    rng = np.random.default_rng(extent)
    x = rng.standard_normal(shape)
    h, w = shape[2:]
    g = _pool_by_hand(x, extent, "mean")
    assert g.shape[2:] == (math.ceil(h / extent), math.ceil(w / extent))
    cfg = GatherExciteConfig(shape[1], extent=extent, use_mlp=False)
    np.testing.assert_allclose(cfg.reference({}, x), x * _sigmoid(_upsample_by_hand(g, h, w)), rtol=1e-13)
    taps: dict[str, Node] = {}
    cfg.reference_forward(Node(x), {}, taps=taps)
    np.testing.assert_allclose(taps["gather"].value, g, rtol=1e-13)
    mx = GatherExciteConfig(shape[1], extent=extent, use_mlp=False, add_maxpool=True)
    both = 0.5 * g + 0.5 * _pool_by_hand(x, extent, "max")
    np.testing.assert_allclose(mx.reference({}, x), x * _sigmoid(_upsample_by_hand(both, h, w)), rtol=1e-13)


def test_ge_global_with_parameters_by_hand():
    """GE-θ global: a depthwise kernel as large as the map, unpadded, to one value per channel; BatchNorm (eval with
    the running statistics; training with the batch's, the running ones then updated with the unbiased variance)."""
    cfg = GatherExciteConfig(3, feat_size=(2, 3), extra_params=True, use_mlp=False)
    rng = np.random.default_rng(3)
    w = cfg.init_weights(rng)
    x = rng.standard_normal((4, 3, 2, 3))
    z = np.einsum("nchw,chw->nc", x, w["gather.conv1.weight"][:, 0])
    bn = {k: w[f"gather.norm1.{k}"] for k in ("weight", "bias", "running_mean", "running_var")}
    eval_gate = _sigmoid((z - bn["running_mean"]) / np.sqrt(bn["running_var"] + 1e-5) * bn["weight"] + bn["bias"])
    np.testing.assert_allclose(cfg.reference(w, x), x * eval_gate[:, :, None, None], rtol=1e-13)
    mu, var = z.mean(axis=0), z.var(axis=0)
    train_gate = _sigmoid((z - mu) / np.sqrt(var + 1e-5) * bn["weight"] + bn["bias"])
    np.testing.assert_allclose(cfg.reference(w, x, training=True), x * train_gate[:, :, None, None], rtol=1e-13)
    state = cfg.reference_state(w, x)
    np.testing.assert_allclose(state["gather.norm1.running_mean"], 0.9 * bn["running_mean"] + 0.1 * mu, rtol=1e-13)
    np.testing.assert_allclose(state["gather.norm1.running_var"], 0.9 * bn["running_var"] + 0.1 * var * 4 / 3,
                               rtol=1e-13)


def test_ge_extent_with_parameters_by_hand():
    """GE-θ extent 4: two depthwise 3x3 convolutions, stride 2, zero padding 1, each with BatchNorm, ReLU between;
    the 2x2 result through the MLP, upsampled to 4x3 (rows 0 0 1 1, columns 0 0 1)."""
    cfg = GatherExciteConfig(2, extra_params=True, extent=4, rd_channels=1)
    rng = np.random.default_rng(4)
    w = cfg.init_weights(rng)
    x = rng.standard_normal((1, 2, 4, 3))

    def dw_conv(a: np.ndarray, k: np.ndarray) -> np.ndarray:
        c, h, wd = a.shape
        p = np.pad(a, ((0, 0), (1, 1), (1, 1)))
        ho, wo = (h - 1) // 2 + 1, (wd - 1) // 2 + 1
        return np.array([[[np.sum(p[ch, 2 * i:2 * i + 3, 2 * j:2 * j + 3] * k[ch, 0]) for j in range(wo)]
                          for i in range(ho)] for ch in range(c)])

    def bn(a: np.ndarray, i: int) -> np.ndarray:
        m, v = w[f"gather.norm{i}.running_mean"], w[f"gather.norm{i}.running_var"]
        return ((a - m[:, None, None]) / np.sqrt(v[:, None, None] + 1e-5) * w[f"gather.norm{i}.weight"][:, None, None]
                + w[f"gather.norm{i}.bias"][:, None, None])

    g = bn(dw_conv(_relu(bn(dw_conv(x[0], w["gather.conv1.weight"]), 1)), w["gather.conv2.weight"]), 2)
    assert g.shape == (2, 1, 1)  # 4x3 -> 2x2 -> 1x1
    x2 = rng.standard_normal((1, 2, 8, 6))  # 8x6 -> 4x3 -> 2x2
    g2 = bn(dw_conv(_relu(bn(dw_conv(x2[0], w["gather.conv1.weight"]), 1)), w["gather.conv2.weight"]), 2)
    m = np.transpose(np.array([[_mlp(w, "mlp.", g2[:, i, j]) for j in range(2)] for i in range(2)]), (2, 0, 1))
    gate = _sigmoid(m[:, [0, 0, 0, 0, 1, 1, 1, 1]][:, :, [0, 0, 0, 1, 1, 1]])
    np.testing.assert_allclose(cfg.reference(w, x2)[0], x2[0] * gate, rtol=1e-13)
    gate1 = _sigmoid(_mlp(w, "mlp.", g[:, 0, 0]))
    np.testing.assert_allclose(cfg.reference(w, x)[0], x[0] * gate1[:, None, None], rtol=1e-13)


def _layer_norm(v: np.ndarray, w: dict[str, np.ndarray], prefix: str) -> np.ndarray:
    return (v - v.mean()) / np.sqrt(v.var() + 1e-6) * w[f"{prefix}norm.weight"] + w[f"{prefix}norm.bias"]


def _context_mlp(w: dict[str, np.ndarray], prefix: str, ctx: np.ndarray) -> np.ndarray:
    h = w[f"{prefix}fc1.weight"][:, :, 0, 0] @ ctx + w[f"{prefix}fc1.bias"]
    return w[f"{prefix}fc2.weight"][:, :, 0, 0] @ _relu(_layer_norm(h, w, prefix)) + w[f"{prefix}fc2.bias"]


def test_global_context_by_hand():
    """context = sum over positions of x weighted by softmax(conv_attn(x)); scale by gate(mlp_scale(context)), then
    add mlp_add(context); each MLP's LayerNorm normalises the rd hidden values of one sample."""
    cfg = GlobalContextConfig(5, fuse_add=True, rd_channels=3)
    rng = np.random.default_rng(5)
    w = cfg.init_weights(rng)
    x = rng.standard_normal((2, 5, 3, 4))
    for n in range(2):
        logits = np.einsum("c,chw->hw", w["conv_attn.weight"][0, :, 0, 0], x[n]) + w["conv_attn.bias"][0]
        attn = np.exp(logits) / np.exp(logits).sum()
        ctx = np.einsum("chw,hw->c", x[n], attn)
        want = x[n] * _sigmoid(_context_mlp(w, "mlp_scale.", ctx))[:, None, None] \
            + _context_mlp(w, "mlp_add.", ctx)[:, None, None]
        np.testing.assert_allclose(cfg.reference(w, x)[n], want, rtol=1e-13)
    taps: dict[str, Node] = {}
    cfg.reference_forward(Node(x), {k: Node(v) for k, v in w.items()}, taps=taps)
    assert list(taps) == ["context", "gate", "add_term"]
    gca = GlobalContextAddConfig(5, use_attn=False, rd_channels=3)
    wa = gca.init_weights(rng)
    ctx = x.mean(axis=(2, 3))
    want = x + np.stack([_context_mlp(wa, "mlp_add.", c) for c in ctx])[:, :, None, None]
    np.testing.assert_allclose(gca.reference(wa, x), want, rtol=1e-13)


def test_layer_norm_of_one_channel_leaves_the_bias():
    """rd = 1: the LayerNorm of a single value is 0, so the MLP's output is fc2(act(norm.bias)) + fc2.bias."""
    cfg = GlobalContextAddConfig(4, rd_channels=1)
    rng = np.random.default_rng(6)
    w = cfg.init_weights(rng)
    x = rng.standard_normal((2, 4, 3, 3))
    term = w["mlp_add.fc2.weight"][:, 0, 0, 0] * _relu(w["mlp_add.norm.bias"][0]) + w["mlp_add.fc2.bias"]
    np.testing.assert_allclose(cfg.reference(w, x), x + term[None, :, None, None], rtol=1e-13)


# ------------------------------------------------------------------------------------ VJPs by finite differences
VJP_CASES = [
    ("ge-global-mlp", GatherExciteConfig(4, rd_channels=2), (2, 4, 3, 2), False),
    ("ge-e2-max", GatherExciteConfig(3, extent=2, add_maxpool=True, rd_channels=2, act_layer="silu"), (1, 3, 5, 3),
     False),
    ("ge-global-params-train", GatherExciteConfig(3, feat_size=(2, 3), extra_params=True, rd_channels=2), (3, 3, 2, 3),
     True),
    ("ge-e4-params-train", GatherExciteConfig(2, extra_params=True, extent=4, use_mlp=False), (2, 2, 5, 4), True),
    ("gc", GlobalContextConfig(4, rd_channels=3), (2, 4, 3, 2), False),
    ("gc-both-mean", GlobalContextConfig(3, use_attn=False, fuse_add=True, rd_channels=2, gate_layer="hard_sigmoid"),
     (1, 3, 2, 3), False),
    ("gca", GlobalContextAddConfig(3, rd_channels=2, act_layer="silu"), (2, 3, 3, 2), False),
]


@pytest.mark.parametrize("name,cfg,shape,training", VJP_CASES, ids=[c[0] for c in VJP_CASES])
def test_reference_vjp_matches_finite_differences(name, cfg, shape, training):
    rng = np.random.default_rng(sum(map(ord, name)))
    weights = cfg.init_weights(rng)
    # spaced values: no ties for the maxima, and no pooled value at a kink of the activations
    x = (rng.permutation(math.prod(shape)).reshape(shape) - math.prod(shape) / 2) * 0.05 + 0.013
    assert_reference_vjp(name, cfg, weights, x, rng.standard_normal(shape), training)


# -------------------------------------------------------------------------- what timm 1.0.31 can build
GE_FORMS = [dict(extent=e, extra_params=p, use_mlp=m, add_maxpool=a)
            for e, p, m, a in itertools.product((0, 2, 4, 8), (False, True), (False, True), (False, True))]


def _timm_ge_kwargs(form: dict[str, Any]) -> dict[str, Any]:
    return {**form, "feat_size": (5, 3)} if form["extra_params"] and form["extent"] == 0 else dict(form)


@pytest.mark.parametrize("form", GE_FORMS, ids=lambda f: "-".join(f"{k}{int(v)}" for k, v in f.items()))
def test_which_gather_excite_forms_timm_builds(form):
    """timm 1.0.31's constructor passes ``*dd`` (the dict's keys, 'device' and 'dtype', as positional arguments)
    where it means ``**dd``: every form with the MLP (its default use_mlp=True) or with extra_params raises a
    TypeError; the parameter-free forms without the MLP build and run."""
    timm = import_timm()
    if timm.__version__ != "1.0.31":
        pytest.skip(f"the failing forms are those of timm 1.0.31, this is {timm.__version__}")
    import torch

    kwargs = _timm_ge_kwargs(form)
    if form["use_mlp"] or form["extra_params"]:
        expected = "create_conv2d" if form["extra_params"] else "ConvMlp"
        with pytest.raises(TypeError, match=f"{expected}.*got multiple values for argument"):
            timm.layers.create_attn("ge", 8, **kwargs)
    else:
        module = timm.layers.create_attn("ge", 8, **kwargs)
        assert module(torch.zeros(1, 8, 5, 3)).shape == (1, 8, 5, 3)
        assert not module.state_dict()


# ------------------------------------------------------------------------------------ timm's modules
def _timm_ge(channels: int, form: dict[str, Any]) -> Any:
    """timm's GatherExcite for ``form``: as timm builds it where it can; elsewhere its class and forward with the
    submodules its constructor means to build (``**dd`` for ``*dd``: timm's create_conv2d depthwise convolutions,
    BatchNorm2d, act_layer between, timm's ConvMlp), the global kernel unpadded (the paper's global gather, where
    create_conv2d's default would pad it by (k - 1) // 2)."""
    timm = import_timm()
    from timm.layers.create_conv2d import create_conv2d
    from timm.layers.helpers import make_divisible
    from timm.layers.mlp import ConvMlp
    from torch import nn

    act = act_class(form.get("act_layer", "relu"))
    plain = {k: v for k, v in form.items() if k not in ("extra_params", "use_mlp", "feat_size", "rd_channels",
                                                       "act_layer")}
    module = timm.layers.create_attn("ge", channels, extra_params=False, use_mlp=False, act_layer=act, **plain)
    extent = form.get("extent", 0)
    if form.get("extra_params", False):
        module.gather = nn.Sequential()
        if extent == 0:
            module.gather.add_module("conv1", create_conv2d(channels, channels, kernel_size=form["feat_size"],
                                                            stride=1, depthwise=True, padding=0))
            module.gather.add_module("norm1", nn.BatchNorm2d(channels))
        else:
            convs = int(math.log2(extent))
            for i in range(convs):
                module.gather.add_module(f"conv{i + 1}", create_conv2d(channels, channels, kernel_size=3, stride=2,
                                                                       depthwise=True))
                module.gather.add_module(f"norm{i + 1}", nn.BatchNorm2d(channels))
                if i != convs - 1:
                    module.gather.add_module(f"act{i + 1}", act(inplace=True))
    if form.get("use_mlp", True):
        rd = form.get("rd_channels") or make_divisible(channels * form.get("rd_ratio", 1 / 16), 1, round_limit=0.0)
        module.mlp = ConvMlp(channels, rd, act_layer=act)
    return module


def _timm_module(key: str, channels: int, form: dict[str, Any], seed: int) -> Any:
    """timm's module for ``key`` (``form`` in the project's arguments, which are timm's but for layer names), in
    float64, every parameter and statistic drawn at random."""
    if key != "ge":
        return timm_attn(key, channels, seed, **timm_kwargs(form))  # mlp_add.fc2.weight drawn, not timm's zeros
    module = _timm_ge(channels, form).double()
    randomise(module, seed)
    return module


# (registry key, the project's arguments = timm's, channels, input shape); the ge forms timm builds come first
TIMM_CASES = [
    ("ge", dict(use_mlp=False), 6, (2, 6, 5, 3)),
    ("ge", dict(use_mlp=False, add_maxpool=True), 6, (2, 6, 5, 3)),
    ("ge", dict(use_mlp=False, extent=2), 4, (2, 4, 7, 5)),
    ("ge", dict(use_mlp=False, extent=4, add_maxpool=True), 4, (1, 4, 9, 6)),
    ("ge", dict(use_mlp=False, extent=8), 3, (2, 3, 5, 3)),
    ("ge", {}, 16, (2, 16, 5, 3)),
    ("ge", dict(extent=2, add_maxpool=True, act_layer="silu", rd_channels=3), 8, (2, 8, 7, 5)),
    ("ge", dict(extra_params=True, feat_size=(5, 3)), 8, (3, 8, 5, 3)),
    ("ge", dict(extra_params=True, feat_size=(5, 3), use_mlp=False), 4, (2, 4, 5, 3)),
    ("ge", dict(extra_params=True, extent=2), 8, (2, 8, 7, 5)),
    ("ge", dict(extra_params=True, extent=4, act_layer="silu", rd_channels=2), 6, (2, 6, 9, 6)),
    ("ge", dict(extra_params=True, extent=8, use_mlp=False), 4, (3, 4, 7, 5)),
    ("gc", {}, 16, (2, 16, 5, 3)),
    ("gc", dict(use_attn=False), 16, (1, 16, 5, 3)),
    ("gc", dict(fuse_add=True, act_layer="silu", rd_channels=3), 8, (2, 8, 7, 5)),
    ("gc", dict(gate_layer="hard_sigmoid"), 8, (2, 8, 4, 4)),
    ("gca", {}, 16, (2, 16, 5, 3)),
    ("gca", dict(use_attn=False, rd_ratio=0.25), 12, (2, 12, 3, 4)),
    ("gca", dict(fuse_scale=True), 8, (2, 8, 5, 3)),
]
TIMM_IDS = [f"{key}-{i}" for i, (key, *_rest) in enumerate(TIMM_CASES)]
# in Paddle: one form timm builds, the global and the strided gathers with parameters, gc and gca; in Flax (seconds
# each, for the jit) the first of them; the others in the slow tier
FAST = ("ge-0", "ge-7", "ge-10", "gc-14", "gca-16")
OTHER_BACKEND_CASES = [pytest.param(case, fw, id=f"{i}-{fw}",
                                    marks=() if i == FAST[0] or (i in FAST and fw == "paddle") else (pytest.mark.slow,))
                       for case, i in zip(TIMM_CASES, TIMM_IDS, strict=True) for fw in FRAMEWORKS if fw != "torch"]


def _input(shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape) * 1.5 + rng.uniform(-1, 1, (1, shape[1], 1, 1))


@pytest.mark.parametrize("case", TIMM_CASES, ids=TIMM_IDS)
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_torch_module_equals_timm(case, training):
    """timm's state_dict loads strictly into the project's module of the same key and arguments, and both compute
    the same output, input and parameter gradients and running statistics in float64."""
    key, form, channels, shape = case
    theirs = _timm_module(key, channels, form, seed=channels + len(TIMM_IDS[TIMM_CASES.index(case)]))
    ours = backend("torch").create_attn(key, channels, **form).double()
    ours.load_state_dict(copy.deepcopy(theirs.state_dict()), strict=True)
    assert list(canonical(ours)) == [p.name for p in ours.config.param_table()]
    x = _input(shape, channels)
    cot = np.random.default_rng(1).standard_normal(shape)
    (y_t, dx_t, g_t, state_t), (y_o, dx_o, g_o, state_o) = (torch_step(m, x, cot, training) for m in (theirs, ours))
    np.testing.assert_allclose(y_o, y_t, rtol=RTOL, atol=1e-14)
    # torch's Hardsigmoid (timm's 'hard_sigmoid' gate) multiplies its gradient by a float32 1/6 even in float64
    # (backends/torch/_ops.py), an error of 3e-8 of the gradient's scale that the project's gate has not
    hsig = form.get("gate_layer") == "hard_sigmoid"
    for name, got, want in [("input", dx_o, dx_t)] + [(k, g_o[k], g_t[k]) for k in g_t]:
        atol = (1e-7 if hsig else 1e-13) * max(1.0, np.abs(want).max())
        np.testing.assert_allclose(got, want, rtol=0 if hsig else RTOL, atol=atol, err_msg=name)
    for name, value in state_t.items():
        np.testing.assert_allclose(state_o[name], value, rtol=RTOL, atol=1e-14, err_msg=name)


@pytest.mark.parametrize("case,fw", OTHER_BACKEND_CASES)
def test_other_backends_equal_timm(fw, case):
    """Paddle and Flax, given timm's weights as canonical weights, compute timm's output in eval and in training
    (float64), and the running statistics timm's BatchNorm keeps."""
    key, form, channels, shape = case
    run = runner(fw)
    theirs = _timm_module(key, channels, form, seed=channels + len(TIMM_IDS[TIMM_CASES.index(case)]))
    weights = canonical(theirs)
    config = create_config(key, channels, **form)
    x = _input(shape, channels)
    for training in (False, True):  # the eval step leaves timm's statistics as they were for the training one
        y_t, _, _, state_t = torch_step(theirs, x, None, training)
        got = run.run(key, config, weights, x, None, dtype="float64", training=training)
        np.testing.assert_allclose(got.y, y_t, rtol=RTOL, atol=1e-14, err_msg=f"{fw} training={training}")
    for name in (p.name for p in config.param_table() if not p.trainable):
        np.testing.assert_allclose(got.state[name], state_t[name], rtol=RTOL, atol=1e-14, err_msg=name)


def test_timm_would_pad_the_global_kernel():
    """What the decision on the global gather changes: timm's create_conv2d pads a (5, 3) kernel by (2, 1), so that
    the 'global' convolution keeps a 5x3 map (each position sees a part of it); unpadded it gives 1x1, the paper's."""
    import_timm()
    import torch
    from timm.layers.create_conv2d import create_conv2d

    padded = create_conv2d(4, 4, kernel_size=(5, 3), stride=1, depthwise=True)
    assert padded.padding == (2, 1) and padded(torch.zeros(1, 4, 5, 3)).shape == (1, 4, 5, 3)
    unpadded = create_conv2d(4, 4, kernel_size=(5, 3), stride=1, depthwise=True, padding=0)
    assert unpadded(torch.zeros(1, 4, 5, 3)).shape == (1, 4, 1, 1)


def test_nearest_indices_are_torch_interpolate():
    """The gathered map of ceil(H / e) rows is resized to H by the indices torch's F.interpolate reads (float32
    inputs), including the sizes where float32 rounds floor(i * in / out) down."""
    import torch
    import torch.nn.functional as F

    from attn_core.ops import nearest_indices

    for e, size in itertools.product((2, 4, 6, 8, 16), range(1, 130)):
        small = math.ceil(size / e)
        probe = torch.arange(small, dtype=torch.float32).reshape(1, 1, small, 1)
        want = F.interpolate(probe, size=(size, 1))[0, 0, :, 0].long().numpy()
        np.testing.assert_array_equal(nearest_indices(small, size), want, err_msg=f"{small} -> {size}")
    exact = (np.arange(94) * 16) // 94
    assert (nearest_indices(16, 94) != exact).any()  # e = 6 at H = 94: the first GE size where they differ
    from backends.torch.gather_excite import nearest_source

    for small, size in [(16, 94), (26, 44), (3, 7), (4, 8), (5, 5), (8, 122)]:
        np.testing.assert_array_equal(nearest_source(small, size, torch.device("cpu")).numpy(),
                                      nearest_indices(small, size))


# ----------------------------------------------------------------------------- registry and initialisation
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_registry_keys(fw):
    b = backend(fw)
    gca = b.create_attn("gca", 16)
    assert type(gca).__name__ == "GlobalContextAdd" and gca.config == GlobalContextAddConfig(16)
    assert gca.config == create_config("gca", 16) and (gca.config.fuse_add, gca.config.fuse_scale) == (True, False)
    assert type(b.create_attn("gc", 16)).__name__ == "GlobalContext"
    assert b.create_attn("ge", 16, extent=4).config == GatherExciteConfig(16, extent=4)


def _init_params(fw: str, module: Any, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    if fw == "flax":
        import jax
        import jax.numpy as jnp

        variables = module.init(jax.random.key(0), jnp.ones((shape[0], shape[2], shape[3], shape[1])))
        return backend(fw).export_weights(module, variables)
    return backend(fw).export_weights(module)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_global_context_starts_as_timm(fw):
    """As timm's reset_parameters: mlp_add.fc2.weight zero (so gca adds only fc2's bias at first), conv_attn's
    weight Kaiming-normal with std sqrt(2 / C); the conformance cases' canonical weights are drawn, none zero."""
    b = backend(fw)
    channels = 256
    w = _init_params(fw, b.create_attn("gca", channels), (1, channels, 2, 2))
    assert not np.any(w["mlp_add.fc2.weight"])
    assert 0.8 < np.std(w["conv_attn.weight"]) / math.sqrt(2 / channels) < 1.2
    assert np.any(_init_params(fw, b.create_attn("gc", 8), (1, 8, 2, 2))["mlp_scale.fc2.weight"])
    for case in (c for c in CASES if c.module in ("gc", "gca", "ge")):
        weights, _, _ = case.data()
        for name, value in weights.items():
            assert np.all(value != 0), f"{case.name}: {name} holds zeros"


# ---------------------------------------------------------------------------------------- refused
@pytest.mark.parametrize("build,message", [
    (lambda: GatherExciteConfig(0), "GatherExcite: channels must be a positive integer"),
    (lambda: GatherExciteConfig(8, extent=3), "GatherExcite: extent must be 0 .global. or a positive even integer"),
    (lambda: GatherExciteConfig(8, extent=-2), "GatherExcite: extent must be 0"),
    (lambda: GatherExciteConfig(8, extent=True), "GatherExcite: extent must be 0"),
    (lambda: GatherExciteConfig(8, extent=6, extra_params=True), "GatherExcite: extent with extra_params must be a "
                                                                 "power of two"),
    (lambda: GatherExciteConfig(8, extra_params=True), "GatherExcite: feat_size .H, W. must be given"),
    (lambda: GatherExciteConfig(8, extra_params=True, extent=2, add_maxpool=True), "GatherExcite: add_maxpool "
                                                                                   "applies to the gather without"),
    (lambda: GatherExciteConfig(8, feat_size=(5, 0)), "GatherExcite: feat_size must be a positive integer or a pair"),
    (lambda: GatherExciteConfig(8, feat_size=(5, 3, 1)), "GatherExcite: feat_size must be"),
    (lambda: GatherExciteConfig(8, feat_size=2.5), "GatherExcite: feat_size must be"),
    (lambda: GatherExciteConfig(8, use_mlp=None), "GatherExcite: use_mlp must be one of True, False"),
    (lambda: GatherExciteConfig(8, extra_params="yes"), "GatherExcite: extra_params must be one of"),
    (lambda: GatherExciteConfig(8, add_maxpool=None), "GatherExcite: add_maxpool must be one of"),
    (lambda: GatherExciteConfig(8, act_layer="gelu"), "GatherExcite: act_layer must be one of"),
    (lambda: GatherExciteConfig(8, norm_layer="layernorm"), "GatherExcite: norm_layer must be one of"),
    (lambda: GatherExciteConfig(8, gate_layer="tanh"), "GatherExcite: gate_layer must be one of"),
    (lambda: GatherExciteConfig(8, bn_eps=0.0), "GatherExcite: bn_eps must be a positive finite number"),
    (lambda: GatherExciteConfig(8, bn_momentum=1.5), "GatherExcite: bn_momentum .torch convention"),
    (lambda: GatherExciteConfig(8, rd_ratio=0.0), "GatherExcite: rd_ratio must be a positive finite number"),
    (lambda: GatherExciteConfig(8, rd_channels=0), "GatherExcite: rd_channels must be a positive integer"),
    (lambda: GatherExciteConfig(8, rd_divisor=None, rd_ratio=1 / 16), "GatherExcite: hidden width is 0"),
    (lambda: GlobalContextConfig(0), "GlobalContext: channels must be a positive integer"),
    (lambda: GlobalContextConfig(8, fuse_scale=False), "GlobalContext: at least one of fuse_add and fuse_scale"),
    (lambda: GlobalContextAddConfig(8, fuse_add=False), "GlobalContextAdd: at least one of fuse_add and fuse_scale"),
    (lambda: GlobalContextConfig(8, use_attn="no"), "GlobalContext: use_attn must be one of True, False"),
    (lambda: GlobalContextConfig(8, init_last_zero="no"), "GlobalContext: init_last_zero must be one of"),
    (lambda: GlobalContextConfig(8, fuse_add=None), "GlobalContext: fuse_add must be one of"),
    (lambda: GlobalContextConfig(8, act_layer="gelu"), "GlobalContext: act_layer must be one of"),
    (lambda: GlobalContextConfig(8, gate_layer="softmax"), "GlobalContext: gate_layer must be one of"),
    (lambda: GlobalContextConfig(8, rd_ratio=-1.0), "GlobalContext: rd_ratio must be a positive finite number"),
    (lambda: GlobalContextConfig(8, rd_channels=-3), "GlobalContext: rd_channels must be a positive integer"),
    (lambda: GlobalContextConfig(4, rd_divisor=None), "GlobalContext: hidden width is 0"),
])
def test_config_errors(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_accepted_forms():
    """An int feat_size is a square map; feat_size is kept but unused outside the global gather with parameters;
    without the MLP there is no hidden width and no rd check."""
    assert GatherExciteConfig(8, feat_size=4, extra_params=True).feat_size == (4, 4)
    assert GatherExciteConfig(8, feat_size=np.int64(4), extra_params=True) == GatherExciteConfig(
        8, feat_size=(4, 4), extra_params=True)
    assert GatherExciteConfig(8, feat_size=(7, 7), extent=2).param_table() == GatherExciteConfig(8, extent=2)\
        .param_table()
    assert GatherExciteConfig(8, use_mlp=False, rd_divisor=None).hidden == 0
    assert GatherExciteConfig(8, extra_params=True, extent=8).num_convs == 3
    assert GatherExciteConfig(8).hidden == 1 and GlobalContextConfig(16).hidden == 2  # timm: C / 16, C / 8
    assert [p.name for p in GatherExciteConfig(8, extra_params=True, extent=4, norm_layer=None).param_table()] == [
        "gather.conv1.weight", "gather.conv2.weight", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight",
        "mlp.fc2.bias"]


def test_input_errors():
    cfg = GatherExciteConfig(4, feat_size=(5, 3), extra_params=True)
    with pytest.raises(InputShapeError, match=r"GatherExcite: the global gather's depthwise kernel spans feat_size "
                                              r"\(5, 3\); expected an input of that H x W, got 6 x 3"):
        cfg.check_input((2, 4, 6, 3), "float32", True)
    with pytest.raises(InputShapeError, match="got 3 x 5"):
        cfg.check_input((2, 3, 5, 4), "float32", True, layout="NHWC")
    cfg.check_input((2, 4, None, 3), "float32", True)  # unknown sizes are not checked
    with pytest.raises(InputShapeError, match=r"GatherExcite: gather.norm1: BatchNorm in training needs more than "
                                              r"one value per channel, got input shape \(1, 4, 1, 1\)"):
        cfg.check_input((1, 4, 5, 3), "float32", True, training=True)
    cfg.check_input((2, 4, 5, 3), "float32", True, training=True)
    deep = GatherExciteConfig(4, extra_params=True, extent=8)  # 7x5 -> 4x3 -> 2x2 -> 1x1
    with pytest.raises(InputShapeError, match=r"gather.norm3: .*\(1, 4, 1, 1\)"):
        deep.check_input((1, 4, 7, 5), "float32", True, training=True)
    deep.check_input((1, 4, 9, 5), "float32", True, training=True)  # 9 -> 5 -> 3 -> 2: two values
    GatherExciteConfig(4, extent=8).check_input((1, 4, 1, 1), "float32", True, training=True)  # no BatchNorm


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_backends_refuse_the_wrong_map_for_the_global_kernel(fw):
    run = runner(fw)
    config = GatherExciteConfig(4, feat_size=(5, 3), extra_params=True)
    weights = config.init_weights(np.random.default_rng(0))
    with pytest.raises(InputShapeError, match="global gather's depthwise kernel spans feat_size"):
        run.run("ge", config, weights, np.zeros((2, 4, 5, 4)), None, dtype="float32")
    with pytest.raises(InputShapeError, match="gather.norm1: BatchNorm in training"):
        run.run("ge", config, weights, np.zeros((1, 4, 5, 3)), None, dtype="float32", training=True)
