"""timm's eSE, ECA variants and light CBAM (``ese``, ``ecam``, ``ceca``, ``lcbam``), and the 'timm' CBAM preset
against timm's ``CbamModule``: the float64 reference by hand and by finite differences, equality with timm 1.0
(every parameter and BatchNorm buffer drawn at random, timm's ``state_dict`` loaded strictly) in torch and, through
the canonical weights, in Paddle and Flax, and every ConfigError of the configs."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from attn_core import (
    CBAM_PRESETS,
    CBAM_TIMM_KEYS,
    CONFIGS,
    CBAMConfig,
    CECAConfig,
    ConfigError,
    ECAMConfig,
    EffectiveSEConfig,
    LightCBAMConfig,
    WeightLoadError,
    cbam,
    cbam_keys_from_timm,
    cbam_keys_to_timm,
    create_config,
    make_divisible,
)
from attn_core.frameworks import FRAMEWORK_INFO

from .._fw import FRAMEWORKS, backend, runner
from .._gradcheck import assert_reference_vjp
from .._timm import canonical, import_timm, randomise, timm_kwargs, torch_step

RTOL = 1e-10


def _sig(t: float) -> float:
    return 1.0 / (1.0 + math.exp(-t))


def _hsig(t: float) -> float:
    return min(max(t + 3.0, 0.0), 6.0) / 6.0


# ------------------------------------------------------------------------------------------ widths and kernels
def test_ecam_width_is_timms_make_divisible_with_its_round_limit():
    """timm sizes the MLP rows as make_divisible(C / 8, 8) with the default round_limit 0.9, unlike SE and CBAM's
    0: C = 88 gives 11 -> 8, which loses over 10 %, so 16."""
    assert ECAMConfig(88).hidden == 16 and make_divisible(11.0, 8, round_limit=0.0) == 8
    assert [ECAMConfig(c).hidden for c in (8, 64, 72, 100, 256)] == [8, 8, 16, 16, 32]
    assert ECAMConfig(64, rd_ratio=0.25, rd_divisor=4).hidden == 16
    assert ECAMConfig(64, rd_channels=5).hidden == 5


def test_widths_and_kernels_are_timms_for_every_channel_count():
    import_timm()
    from timm.layers import create_attn

    for c in range(1, 260, 7):
        ecam, ceca = create_attn("ecam", c), create_attn("ceca", c)
        assert (ecam.conv.out_channels, ecam.conv2.kernel_size[0]) == (ECAMConfig(c).hidden, ECAMConfig(c).k), c
        assert ceca.conv.kernel_size[0] == CECAConfig(c).k, c
        lcbam = create_attn("lcbam", c)
        assert lcbam.channel.fc1.out_channels == LightCBAMConfig(c).hidden, c


# ---------------------------------------------------------------------------------------- reference by hand
def test_ese_by_hand():
    # channel 0: mean 3, max 6; channel 1: mean -1, max 4
    x = np.array([[[[1.0, 2.0], [3.0, 6.0]], [[-2.0, 0.0], [4.0, -6.0]]]])
    w = {"fc.weight": np.array([[0.5, -1.0], [2.0, 0.25]]).reshape(2, 2, 1, 1), "fc.bias": np.array([0.1, -0.2])}
    # z = W s + b: [0.5*3 + 1 + 0.1, 6 - 0.25 - 0.2] = [2.6, 5.55]; the hard sigmoid clips the second to 1
    want = x * np.array([5.6 / 6.0, 1.0]).reshape(1, 2, 1, 1)
    np.testing.assert_allclose(EffectiveSEConfig(2).reference(w, x), want, rtol=1e-14)
    # add_maxpool: s = [(3 + 6) / 2, (-1 + 4) / 2] = [4.5, 1.5]; z = [2.25 - 1.5 + 0.1, 9 + 0.375 - 0.2]
    want = x * np.array([_hsig(0.85), _hsig(9.175)]).reshape(1, 2, 1, 1)
    np.testing.assert_allclose(EffectiveSEConfig(2, add_maxpool=True).reference(w, x), want, rtol=1e-14)
    want = x * np.array([_sig(0.85), _sig(9.175)]).reshape(1, 2, 1, 1)
    got = EffectiveSEConfig(2, add_maxpool=True, gate_layer="sigmoid").reference(w, x)
    np.testing.assert_allclose(got, want, rtol=1e-14)


def test_ecam_by_hand():
    x = np.array([[[[0.0, 2.0]], [[-1.0, -3.0]], [[3.0, 3.0]]]])  # channel means s = [1, -2, 3]
    w = {"conv.weight": np.array([1.0, -1.0]).reshape(2, 1, 1), "conv.bias": np.array([0.0, 0.5]),
         "conv2.weight": np.array([[1.0, 2.0, 0.0], [0.0, 1.0, -1.0]]).reshape(1, 2, 3),
         "conv2.bias": np.array([0.1])}
    # rows h0 = relu(s) = [1, 0, 3], h1 = relu(0.5 - s) = [0, 2.5, 0]; zero padded by one at each end,
    # z_c = sum_r w2[r, 0] h_r[c - 1] + w2[r, 1] h_r[c] + w2[r, 2] h_r[c + 1] + 0.1
    z = [2.0 - 2.5 + 0.1, 1.0 + 2.5 + 0.1, 6.0 + 0.0 + 0.1]
    cfg = ECAMConfig(3, kernel_size=3, rd_channels=2)
    want = x * np.array([_sig(t) for t in z]).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(cfg.reference(w, x), want, rtol=1e-14)
    want = x * np.array([_hsig(t) for t in z]).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(cfg.replace(gate_layer="hard_sigmoid").reference(w, x), want, rtol=1e-14)


def test_ceca_by_hand_wraps_the_channel_row():
    s = [1.0, 2.0, -1.0, 4.0]
    x = np.array(s).reshape(1, 4, 1, 1)
    w = {"conv.weight": np.array([0.5, 1.0, -2.0]).reshape(1, 1, 3)}
    # z_c = 0.5 s[c - 1] + s[c] - 2 s[c + 1], indices mod 4 (zero padding would give -3 and 3.5 at the ends)
    z = [0.5 * 4 + 1 - 4, 0.5 * 1 + 2 + 2, 0.5 * 2 - 1 - 8, 0.5 * -1 + 4 - 2]
    assert z == [-1.0, 4.5, -8.0, 1.5]
    want = x * np.array([_sig(t) for t in z]).reshape(1, 4, 1, 1)
    np.testing.assert_allclose(CECAConfig(4, kernel_size=3).reference(w, x), want, rtol=1e-14)
    # act_layer given: a bias of -3 and no activation (a ReLU would make z_2 = -11 a gate of 0.5)
    biased = {**w, "conv.bias": np.array([-3.0])}
    want = x * np.array([_sig(t - 3.0) for t in z]).reshape(1, 4, 1, 1)
    np.testing.assert_allclose(CECAConfig(4, kernel_size=3, act_layer="relu").reference(biased, x), want,
                               rtol=1e-14)


def test_ceca_padding_as_wide_as_the_row_wraps_it_entirely():
    s0, s1 = 2.0, -1.0
    x = np.array([s0, s1]).reshape(1, 2, 1, 1)
    k = np.array([1.0, -2.0, 0.5, 3.0, -1.0])
    # padded row [s0, s1, s0, s1, s0, s1]: window c starts at c
    z = [k[0] * s0 + k[1] * s1 + k[2] * s0 + k[3] * s1 + k[4] * s0,
         k[0] * s1 + k[1] * s0 + k[2] * s1 + k[3] * s0 + k[4] * s1]
    want = x * np.array([_sig(t) for t in z]).reshape(1, 2, 1, 1)
    got = CECAConfig(2, kernel_size=5).reference({"conv.weight": k.reshape(1, 1, 5)}, x)
    np.testing.assert_allclose(got, want, rtol=1e-14)


def test_lcbam_by_hand_eval():
    x = np.array([[[[1.0, 3.0]], [[-2.0, 2.0]]]])  # (1, 2, 1, 2)
    w = {"channel.fc1.weight": np.array([1.0, -1.0]).reshape(1, 2, 1, 1),
         "channel.fc2.weight": np.array([2.0, -1.0]).reshape(2, 1, 1, 1),
         "spatial.conv.conv.weight": np.array([2.0]).reshape(1, 1, 1, 1),
         "spatial.conv.bn.weight": np.array([1.5]), "spatial.conv.bn.bias": np.array([-0.25]),
         "spatial.conv.bn.running_mean": np.array([0.5]), "spatial.conv.bn.running_var": np.array([4.0])}
    # pooled 0.5 mean + 0.5 max: [0.5 * 2 + 0.5 * 3, 0.5 * 0 + 0.5 * 2] = [2.5, 1]; fc1: 1.5; fc2: [3, -1.5]
    cg = [_sig(3.0), _sig(-1.5)]
    x1 = [[1.0 * cg[0], 3.0 * cg[0]], [-2.0 * cg[1], 2.0 * cg[1]]]
    want = np.zeros_like(x)
    for j in range(2):
        q = 0.5 * (x1[0][j] + x1[1][j]) / 2 + 0.5 * max(x1[0][j], x1[1][j])
        sg = _sig((2.0 * q - 0.5) / math.sqrt(4.0 + 1e-5) * 1.5 - 0.25)
        want[0, 0, 0, j], want[0, 1, 0, j] = x1[0][j] * sg, x1[1][j] * sg
    cfg = LightCBAMConfig(2, rd_channels=1, spatial_kernel_size=1)
    np.testing.assert_allclose(cfg.reference(w, x), want, rtol=1e-14)


# -------------------------------------------------------------------------- VJPs against finite differences
VJP_CASES = [
    ("ese", EffectiveSEConfig(4), (2, 4, 3, 2), False),
    ("ese-maxpool-sigmoid", EffectiveSEConfig(4, add_maxpool=True, gate_layer="sigmoid"), (2, 4, 3, 2), False),
    ("ecam", ECAMConfig(6, kernel_size=3, rd_channels=2), (2, 6, 3, 2), False),
    ("ecam-silu-hsig-k5", ECAMConfig(5, kernel_size=5, act_layer="silu", gate_layer="hard_sigmoid", rd_channels=3),
     (1, 5, 2, 3), False),
    ("ceca", CECAConfig(5, kernel_size=3), (2, 5, 3, 2), False),
    ("ceca-bias-wrap", CECAConfig(2, kernel_size=5, act_layer="relu"), (2, 2, 3, 2), False),
    ("lcbam-eval", LightCBAMConfig(4, rd_channels=2, spatial_kernel_size=3, mlp_bias=True), (2, 4, 3, 4), False),
    ("lcbam-train", LightCBAMConfig(4, rd_channels=2, spatial_kernel_size=3, mlp_bias=True), (2, 4, 3, 4), True),
]


@pytest.mark.parametrize("name,cfg,shape,training", VJP_CASES, ids=[c[0] for c in VJP_CASES])
def test_reference_vjp_matches_finite_differences(name, cfg, shape, training):
    rng = np.random.default_rng(sum(map(ord, name)))
    weights = cfg.init_weights(rng)
    x = rng.standard_normal(shape)
    assert np.diff(np.sort(x.ravel())).min() > 2e-6  # no ties for the max pools under the step
    assert_reference_vjp(name, cfg, weights, x, rng.standard_normal(shape), training)


# ------------------------------------------------------------------------------------------- equal to timm
def _timm_kwargs(key: str, options: dict[str, Any]) -> dict[str, Any]:
    """timm's arguments for the project's: timm's CBAM modules call ``act_layer(inplace=True)``, so they take the
    class; the ECA variants take the name (``create_act_layer``)."""
    out = timm_kwargs(options) if key in ("lcbam", "cbam") else dict(options)
    if key == "cbam":  # timm's CbamModule has the 'timm' preset's order and BatchNorm built in
        for name in ("spatial_order", "spatial_norm"):
            assert out.pop(name) == CBAM_PRESETS["timm"][name]
    return out


# key, channels, the project's options, input shape
TIMM_CASES = [
    ("ese", 16, {}, (2, 16, 7, 5)),
    ("ese", 8, {"add_maxpool": True}, (1, 8, 4, 7)),
    ("ese", 6, {"gate_layer": "sigmoid"}, (3, 6, 1, 1)),
    ("ecam", 88, {}, (2, 88, 5, 3)),
    ("ecam", 128, {"act_layer": "silu", "gate_layer": "hard_sigmoid"}, (1, 128, 3, 4)),
    ("ecam", 12, {"rd_channels": 3}, (2, 12, 1, 1)),
    ("ceca", 16, {}, (2, 16, 7, 5)),
    ("ceca", 128, {"act_layer": "relu"}, (1, 128, 4, 3)),
    ("ceca", 3, {"gate_layer": "hard_sigmoid"}, (2, 3, 1, 1)),
    ("lcbam", 32, {}, (2, 32, 7, 5)),
    ("lcbam", 8, {"mlp_bias": True, "spatial_kernel_size": 3}, (1, 8, 5, 6)),
    ("lcbam", 24, {"act_layer": "silu"}, (3, 24, 2, 3)),
    ("cbam", 24, dict(CBAM_PRESETS["timm"]), (2, 24, 5, 6)),
    ("cbam", 32, {**CBAM_PRESETS["timm"], "mlp_bias": True, "spatial_kernel_size": 3}, (1, 32, 3, 7)),
]
TIMM_IDS = [f"{k}-c{c}-" + "-".join(f"{n}={v}" for n, v in o.items() if CBAM_PRESETS["timm"].get(n) != v)
            for k, c, o, _ in TIMM_CASES]
# in Paddle and Flax the first case of each key is in the fast tier, the others (seconds each) in the slow one
_FIRST = {k: i for i, (k, *_) in reversed(list(enumerate(TIMM_CASES)))}
TIMM_PARAMS_SLOW_AFTER_FIRST = [pytest.param(*case, id=ident, marks=() if _FIRST[case[0]] == i else pytest.mark.slow)
                                for i, (case, ident) in enumerate(zip(TIMM_CASES, TIMM_IDS, strict=True))]


class _TimmRun:
    """timm's module with random weights, and what it computes in float64: eval output, training output, the
    running statistics after that training step, and the eval gradients of a fixed cotangent."""

    def __init__(self, key: str, channels: int, options: dict[str, Any], shape: tuple[int, ...]):
        rng = np.random.default_rng(sum(map(ord, f"{key}{channels}{sorted(options.items())}")))
        self.module = import_timm().layers.create_attn(key, channels, **_timm_kwargs(key, options)).double()
        self.state = randomise(self.module, rng, fan_in_scaled=True)
        self.x = rng.standard_normal(shape) * 1.5 + rng.uniform(-1.0, 1.0, (1, shape[1], 1, 1))
        self.cot = rng.standard_normal(shape)
        self.y_eval, self.dx, self.grads, _ = torch_step(self.module, self.x, self.cot, training=False)
        self.y_train = torch_step(self.module, self.x, None, training=True)[0]
        self.state_after = {k: v.numpy().copy() for k, v in self.module.state_dict().items()}


def _grad_tolerance(config: Any, want: np.ndarray) -> dict[str, float]:
    """How close a gradient must be to timm's: float64 closeness, except through a hard sigmoid, whose backward in
    torch (``F.hardsigmoid``, which timm's gate uses) multiplies by a float32 1/6 even in float64: a relative
    error of 3e-8 on what passes the gate (the project's own gradients match the float64 reference instead)."""
    if getattr(config, "gate_layer", "") == "hard_sigmoid":
        return {"rtol": 1e-6, "atol": 1e-7 * max(1.0, float(np.abs(want).max()))}
    return {"rtol": 1e-9, "atol": 1e-13}


def _project_names(key: str, names: dict[str, Any]) -> dict[str, Any]:
    return cbam_keys_from_timm(names) if key == "cbam" else dict(names)


@pytest.mark.parametrize("key,channels,options,shape", TIMM_CASES, ids=TIMM_IDS)
def test_torch_loads_timms_state_dict_strictly_and_computes_the_same(key, channels, options, shape):
    b = backend("torch")
    theirs = _TimmRun(key, channels, options, shape)
    config = create_config(key, channels, **options)
    # the canonical parameters are timm's state_dict entries (for CBAM through its documented key map)
    assert config.param_shapes() == {k: v.shape for k, v in _project_names(key, canonical(theirs.state)).items()}
    ours = b.create_attn(key, channels, **options).double()
    ours.load_state_dict(_project_names(key, theirs.state), strict=True)
    y, dx, grads, _ = torch_step(ours, theirs.x, theirs.cot, training=False)
    np.testing.assert_allclose(y, theirs.y_eval, rtol=RTOL, atol=1e-14)
    np.testing.assert_allclose(dx, theirs.dx, **_grad_tolerance(config, theirs.dx))
    for name, g in _project_names(key, theirs.grads).items():
        np.testing.assert_allclose(grads[name], g, err_msg=name, **_grad_tolerance(config, g))
    _, dx_ref, grads_ref = config.reference_vjp(_project_names(key, canonical(theirs.state)), theirs.x, theirs.cot)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-9, atol=1e-13)
    for name, g in grads_ref.items():
        np.testing.assert_allclose(grads[name], g, rtol=1e-9, atol=1e-13, err_msg=name)
    y_train = torch_step(ours, theirs.x, None, training=True)[0]
    np.testing.assert_allclose(y_train, theirs.y_train, rtol=RTOL, atol=1e-14)
    after = {k: v.numpy() for k, v in ours.state_dict().items()}
    for name, value in _project_names(key, theirs.state_after).items():
        np.testing.assert_allclose(after[name], value, rtol=1e-12, err_msg=name)
    if config.has_batch_norm:  # the step moved the statistics, so the comparison above could fail
        moved = [k for k in theirs.state if k.endswith("running_var")]
        assert moved and not np.allclose(theirs.state_after[moved[0]], theirs.state[moved[0]].numpy())


# timm's state_dict as canonical weights, in each framework whose own state is not them (torch's is: the test above
# loads timm's state_dict itself)
@pytest.mark.parametrize("fw", [f for f in FRAMEWORKS if not FRAMEWORK_INFO[f].native_is_canonical])
@pytest.mark.parametrize("key,channels,options,shape", TIMM_PARAMS_SLOW_AFTER_FIRST)
def test_paddle_and_flax_compute_timms_output_from_its_weights(fw, key, channels, options, shape):
    r = runner(fw)
    theirs = _TimmRun(key, channels, options, shape)
    config = create_config(key, channels, **options)
    weights = _project_names(key, canonical(theirs.state))
    handle = r.build_handle(key, config)
    got = r.execute(handle, weights, theirs.x, theirs.cot, "float64", training=False, mode=r.default_mode)
    np.testing.assert_allclose(got.y, theirs.y_eval, rtol=RTOL, atol=1e-14)
    np.testing.assert_allclose(got.dx, theirs.dx, **_grad_tolerance(config, theirs.dx))
    for name, g in _project_names(key, theirs.grads).items():
        np.testing.assert_allclose(got.dparams[name], g, err_msg=name, **_grad_tolerance(config, g))
    got = r.execute(handle, weights, theirs.x, None, "float64", training=True, mode=r.default_mode)
    np.testing.assert_allclose(got.y, theirs.y_train, rtol=RTOL, atol=1e-14)
    after = _project_names(key, theirs.state_after)
    assert sorted(got.state) == sorted(p.name for p in config.param_table() if not p.trainable)
    for name, value in got.state.items():
        np.testing.assert_allclose(value, after[name], rtol=1e-12, err_msg=name)


def test_ceca_kernel_as_wide_as_twice_the_channels_plus_one_is_timms():
    """timm takes an explicit kernel only without the channels; k = 5 on C = 2 pads the whole row at each end."""
    import torch

    b = backend("torch")
    import_timm()
    from timm.layers.eca import CecaModule

    theirs = CecaModule(channels=None, kernel_size=5).double()
    state = randomise(theirs, np.random.default_rng(4), fan_in_scaled=True)
    ours = b.CecaModule(2, kernel_size=5).double()
    ours.load_state_dict(state, strict=True)
    x = torch.tensor(np.random.default_rng(5).standard_normal((2, 2, 3, 4)))
    np.testing.assert_allclose(ours(x).detach().numpy(), theirs(x).detach().numpy(), rtol=RTOL)
    np.testing.assert_allclose(ours(x).detach().numpy(),
                               CECAConfig(2, kernel_size=5).reference(canonical(state), x.numpy()), rtol=RTOL)


# ---------------------------------------------------------------------------------------- CBAM's key map
def test_cbam_timm_preset_state_dict_goes_to_timm_and_back_strictly():
    import torch

    b = backend("torch")
    import_timm()
    from timm.layers.cbam import CbamModule

    ours = b.CBAM(16, **CBAM_PRESETS["timm"]).double()
    b.load_weights(ours, CBAMConfig(16, **CBAM_PRESETS["timm"]).init_weights(np.random.default_rng(2)))
    theirs = CbamModule(16).double().eval()
    theirs.load_state_dict(cbam_keys_to_timm(ours.state_dict()), strict=True)
    ours.eval()
    x = torch.tensor(np.random.default_rng(3).standard_normal((2, 16, 5, 4)))
    np.testing.assert_allclose(ours(x).detach().numpy(), theirs(x).detach().numpy(), rtol=RTOL)
    assert cbam_keys_from_timm(cbam_keys_to_timm(ours.state_dict())).keys() == ours.state_dict().keys()
    assert set(CBAM_TIMM_KEYS.values()) <= set(theirs.state_dict())
    assert set(CBAM_TIMM_KEYS) <= set(ours.state_dict())


def test_cbam_key_map_renames_under_a_prefix_and_refuses_the_other_names():
    renamed = cbam_keys_from_timm({"layer1.0.se.spatial.conv.conv.weight": 1, "layer1.0.se.channel.fc1.weight": 2,
                                   "spatial.conv.bn.running_var": 3})
    assert renamed == {"layer1.0.se.spatial.conv.weight": 1, "layer1.0.se.channel.fc1.weight": 2,
                       "spatial.bn.running_var": 3}
    assert cbam_keys_to_timm(renamed) == {"layer1.0.se.spatial.conv.conv.weight": 1,
                                          "layer1.0.se.channel.fc1.weight": 2, "spatial.conv.bn.running_var": 3}
    with pytest.raises(WeightLoadError, match=r"^CBAM \(key map from timm\): .*\n  unexpected: spatial\.bn\.bias$"):
        cbam_keys_from_timm({"spatial.conv.conv.weight": 1, "spatial.bn.bias": 2})
    with pytest.raises(WeightLoadError, match=r"unexpected: spatial\.conv\.bn\.weight$"):
        cbam_keys_to_timm({"spatial.conv.bn.weight": 1})


# ----------------------------------------------------------------------------------- registry and backends
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_create_attn_builds_timms_classes(fw):
    b = backend(fw)
    names = {"ese": "EffectiveSEModule", "ecam": "EcaMlpModule", "ceca": "CecaModule", "lcbam": "LightCbamModule"}
    for key, name in names.items():
        assert CONFIGS[key].module_name == name
        m = b.create_attn(key.upper(), 16)
        assert type(m).__name__ == name and m.config == create_config(key, 16)
    assert b.create_attn("ecam", 88).config.hidden == 16


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_backends_refuse_what_the_configs_refuse(fw):
    r = runner(fw)
    b = r.backend()
    for build, message in [
        (lambda: b.EffectiveSEModule(8, gate_layer="relu"), "EffectiveSEModule: gate_layer"),
        (lambda: b.EcaMlpModule(8, kernel_size=4), "EcaMlpModule: kernel_size must be a positive odd"),
        (lambda: b.CecaModule(2, kernel_size=7), "CecaModule: kernel_size 7 pads 3 channels"),
        (lambda: b.LightCbamModule(8, gate_layer="hard_sigmoid"), "LightCbamModule: gate_layer"),
    ]:
        with pytest.raises(ConfigError, match=message):
            # a module whose variables are apart from it (a linen dataclass) checks its arguments when they are made
            r.init_variables(build(), (1, 8, 4, 4), r.default_layout)


# ------------------------------------------------------------------------------------------- ConfigErrors
CONFIG_ERRORS = [
    (lambda: EffectiveSEConfig(0), r"^EffectiveSEModule: channels must be a positive integer, got 0$"),
    (lambda: EffectiveSEConfig(8, add_maxpool="yes"), r"^EffectiveSEModule: add_maxpool must be one of True"),
    (lambda: EffectiveSEConfig(8, gate_layer="relu"),
     r"^EffectiveSEModule: gate_layer must be one of 'sigmoid', 'hard_sigmoid'; got 'relu'$"),
    (lambda: ECAMConfig(-4), r"^EcaMlpModule: channels must be a positive integer, got -4$"),
    (lambda: ECAMConfig(8, act_layer="gelu"), r"^EcaMlpModule: act_layer must be one of 'relu', 'silu'; got"),
    (lambda: ECAMConfig(8, gate_layer="tanh"), r"^EcaMlpModule: gate_layer must be one of"),
    (lambda: ECAMConfig(8, kernel_size=4), r"^EcaMlpModule: kernel_size must be a positive odd integer .*got 4$"),
    (lambda: ECAMConfig(8, gamma=0), r"^EcaMlpModule: gamma must be a positive finite number, got 0$"),
    (lambda: ECAMConfig(8, beta=math.inf), r"^EcaMlpModule: beta must be a finite number, got inf$"),
    (lambda: ECAMConfig(8, rd_channels=0), r"^EcaMlpModule: rd_channels must be a positive integer, got 0$"),
    (lambda: ECAMConfig(8, rd_ratio=0.0), r"^EcaMlpModule: rd_ratio must be a positive finite number, got 0.0$"),
    (lambda: ECAMConfig(8, rd_divisor=0), r"^EcaMlpModule: rd_divisor must be a positive integer, got 0$"),
    (lambda: CECAConfig(0), r"^CecaModule: channels must be a positive integer, got 0$"),
    (lambda: CECAConfig(8, act_layer="gelu"), r"^CecaModule: act_layer must be one of None, 'relu', 'silu'; got"),
    (lambda: CECAConfig(8, gate_layer="relu"), r"^CecaModule: gate_layer must be one of"),
    (lambda: CECAConfig(8, kernel_size=0), r"^CecaModule: kernel_size must be a positive odd integer"),
    (lambda: CECAConfig(8, gamma=-1.0), r"^CecaModule: gamma must be a positive finite number, got -1.0$"),
    (lambda: CECAConfig(8, beta="1"), r"^CecaModule: beta must be a finite number, got '1'$"),
    (lambda: CECAConfig(2, kernel_size=7),
     r"^CecaModule: kernel_size 7 pads 3 channels circularly at each end, more than the 2 channels there are "
     r"\(the row may wrap around once at most\); accepted: kernel sizes up to 5$"),
    (lambda: LightCBAMConfig(0), r"^LightCbamModule: channels must be a positive integer, got 0$"),
    (lambda: LightCBAMConfig(8, act_layer="hard_swish"), r"^LightCbamModule: act_layer must be one of"),
    (lambda: LightCBAMConfig(8, gate_layer="hard_sigmoid"),
     r"^LightCbamModule: gate_layer must be one of 'sigmoid'; got 'hard_sigmoid'$"),
    (lambda: LightCBAMConfig(8, mlp_bias=None), r"^LightCbamModule: mlp_bias must be one of True, False; got None$"),
    (lambda: LightCBAMConfig(8, spatial_kernel_size=6),
     r"^LightCbamModule: spatial_kernel_size must be a positive odd integer .*got 6$"),
    (lambda: LightCBAMConfig(8, bn_eps=0.0), r"^LightCbamModule: bn_eps must be a positive finite number, got 0.0$"),
    (lambda: LightCBAMConfig(8, bn_momentum=1.5), r"^LightCbamModule: bn_momentum .* must be in \[0, 1\], got 1.5$"),
    (lambda: LightCBAMConfig(8, rd_divisor=None), r"^LightCbamModule: hidden width is 0: channels=8"),
    (lambda: LightCBAMConfig(8, rd_channels=0), r"^LightCbamModule: rd_channels must be a positive integer, got 0$"),
    (lambda: LightCBAMConfig(8, rd_ratio=-0.5), r"^LightCbamModule: rd_ratio must be a positive finite number"),
]


@pytest.mark.parametrize("build,message", CONFIG_ERRORS, ids=[m.split(":")[0].strip("^") + f"-{i}"
                                                               for i, (_, m) in enumerate(CONFIG_ERRORS)])
def test_config_errors(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_lcbam_kernel_whose_weights_exceed_memory_is_refused(monkeypatch):
    # 1 MiB: 1 * k * k * 8 bytes <= 1048576 holds for k <= 362, so 361 is the largest odd k that fits
    monkeypatch.setattr(cbam, "physical_memory_bytes", lambda: 1 << 20)
    assert LightCBAMConfig(8, spatial_kernel_size=361).spatial_kernel_size == 361
    with pytest.raises(ConfigError, match=r"^LightCbamModule: kernel_size 363 needs 1,054,152 bytes for its 1 x 363 "
                                          r"x 363 float64 weights.*odd kernel sizes up to 361$"):
        LightCBAMConfig(8, spatial_kernel_size=363)
