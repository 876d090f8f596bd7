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
    """Zero-padded 'same' cross-correlation of (N, C, H, W) with (O, C / g, k, k) in g = C / w.shape[1] groups (output
    block q sees input block q), written as loops over the groups and the kernel."""
    k = w.shape[2]
    p = k // 2
    n, c, h, wd = x.shape
    g = c // w.shape[1]
    ci, co = c // g, w.shape[0] // g
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    out = np.zeros((n, w.shape[0], h, wd))
    for q in range(g):
        for i in range(k):
            for j in range(k):
                out[:, q * co:(q + 1) * co] += np.einsum("nchw,oc->nohw", xp[:, q * ci:(q + 1) * ci, i:i + h, j:j + wd],
                                                         w[q * co:(q + 1) * co, :, i, j])
    return out + b[None, :, None, None]


def _shuffle(v: np.ndarray, g: int) -> np.ndarray:
    """ShuffleNet's channel shuffle by its index rule: channel j * g + i of the result is channel i * C / g + j."""
    out = np.empty_like(v)
    per = v.shape[1] // g
    for i in range(g):
        for j in range(per):
            out[:, j * g + i] = v[:, i * per + j]
    return out


def _bn(v: np.ndarray, w: dict[str, np.ndarray], prefix: str, training: bool) -> np.ndarray:
    if training:
        m, var = v.mean(axis=(0, 2, 3)), v.var(axis=(0, 2, 3))
    else:
        m, var = w[f"{prefix}.running_mean"], w[f"{prefix}.running_var"]
    r = (slice(None), None, None)
    return (v - m[r]) / np.sqrt(var[r] + 1e-5) * w[f"{prefix}.weight"][r] + w[f"{prefix}.bias"][r]


def _by_hand(w: dict[str, np.ndarray], x: np.ndarray, training: bool,
             shuffle_groups: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """GAM written out (the convolutions' groups read from the weights' shapes): the output and the channel gate."""
    rows = x.transpose(0, 2, 3, 1)  # (N, H, W, C): the MLP acts on each position's C values
    hid = np.maximum(rows @ w["channel_attention.0.weight"].T + w["channel_attention.0.bias"], 0.0)
    gate_c = _sigmoid(hid @ w["channel_attention.2.weight"].T + w["channel_attention.2.bias"]).transpose(0, 3, 1, 2)
    x1 = x * gate_c
    s = np.maximum(_bn(_conv(x1, w["spatial_attention.0.weight"], w["spatial_attention.0.bias"]), w,
                       "spatial_attention.1", training), 0.0)
    s = _bn(_conv(s, w["spatial_attention.3.weight"], w["spatial_attention.3.bias"]), w, "spatial_attention.4",
            training)
    return x1 * _shuffle(_sigmoid(s), shuffle_groups), gate_c


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


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_grouped_by_hand(training):
    """The 'grouped' preset at C = 32 (Cr = 8): 4 groups of 8 -> 2 and 2 -> 8 channels, a shuffle of 4 groups."""
    cfg = GAMConfig(32, **GAM_PRESETS["grouped"])
    rng = np.random.default_rng(11)
    w = cfg.init_weights(rng)
    assert (w["spatial_attention.0.weight"].shape, w["spatial_attention.3.weight"].shape) == ((8, 8, 7, 7),
                                                                                           (32, 2, 7, 7))
    x = rng.standard_normal((2, 32, 3, 4)) * 1.5 + 0.5
    want, _ = _by_hand(w, x, training, shuffle_groups=4)
    np.testing.assert_allclose(cfg.reference(w, x, training), want, rtol=1e-12)
    unshuffled, _ = _by_hand(w, x, training)
    assert not np.allclose(want, unshuffled)  # the shuffle moves every gate but those of channels 0 and C - 1


def test_widths_and_the_default():
    """Cr = int(C / rate), as the copies compute it; the one preset is the paper's and is the default."""
    assert (GAMConfig(16).hidden, GAMConfig(12, rate=5).hidden, GAMConfig(6, rate=1.5).hidden) == (4, 2, 4)
    assert GAMConfig(8) == GAMConfig(8, **GAM_PRESETS["paper"])
    assert set(GAM_PRESETS) == {"paper", "grouped"}
    assert [p.shape for p in GAMConfig(8).param_table()][:5] == [(2, 8), (2,), (8, 2), (8,), (2, 8, 7, 7)]


# ------------------------------------------------------------------------------------ VJPs by finite differences
VJP_CASES = [("eval", GAMConfig(4, rate=2, kernel_size=3), (2, 4, 3, 2), False),
             ("train", GAMConfig(4, rate=2, kernel_size=3), (2, 4, 2, 3), True),
             ("k5-b1", GAMConfig(3, rate=1, kernel_size=5), (1, 3, 2, 2), False),
             ("grouped-eval", GAMConfig(8, rate=2, kernel_size=3, groups=2, shuffle_groups=4), (2, 8, 3, 2), False),
             ("grouped-train", GAMConfig(6, rate=2, kernel_size=3, groups=3, shuffle_groups=2), (2, 6, 2, 3), True)]


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
    (dict(channels=8, groups=0), "GAM: groups must be a positive integer, got 0"),
    (dict(channels=8, shuffle_groups=0), "GAM: shuffle_groups must be a positive integer, got 0"),
    (dict(channels=12, groups=2), r"GAM: groups must divide channels and the hidden width int\(channels / rate\), "
                                  r"got groups=2, channels=12, hidden=3"),
    (dict(channels=18, rate=2, groups=4), "got groups=4, channels=18, hidden=9"),
    (dict(channels=8, shuffle_groups=3), "GAM: shuffle_groups must divide channels, got shuffle_groups=3, channels=8"),
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


# ------------------------------------------------------------------------------ the grouped form ('grouped')
def _grouped_copy() -> Any:
    """The blog copies' ``GAM_Attention(c1, c2, group=True, rate=4)`` (z1069614715/objectdetection_script and its
    forks), transcribed with the one change the paper needs: the channel gate's sigmoid (Eq. 1), which these copies
    drop (the check catches that bug: ``test_check_passes_the_copy_and_catches_a_missing_channel_sigmoid``)."""
    import torch
    from torch import nn

    def channel_shuffle(x: Any, groups: int = 2) -> Any:
        b, c, h, w = x.size()
        out = x.view(b, groups, c // groups, h, w).permute(0, 2, 1, 3, 4).contiguous()
        return out.view(b, c, h, w)

    class GAM_Attention(nn.Module):  # noqa: N801 - as published
        def __init__(self, c1: int, c2: int, group: bool = True, rate: int = 4) -> None:
            super().__init__()
            self.channel_attention = nn.Sequential(nn.Linear(c1, int(c1 / rate)), nn.ReLU(inplace=True),
                                                   nn.Linear(int(c1 / rate), c1))
            self.spatial_attention = nn.Sequential(
                nn.Conv2d(c1, c1 // rate, kernel_size=7, padding=3, groups=rate) if group
                else nn.Conv2d(c1, int(c1 / rate), kernel_size=7, padding=3),
                nn.BatchNorm2d(int(c1 / rate)), nn.ReLU(inplace=True),
                nn.Conv2d(c1 // rate, c2, kernel_size=7, padding=3, groups=rate) if group
                else nn.Conv2d(int(c1 / rate), c2, kernel_size=7, padding=3),
                nn.BatchNorm2d(c2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, c, h, w = x.shape
            x_permute = x.permute(0, 2, 3, 1).view(b, -1, c)
            x_att_permute = self.channel_attention(x_permute).view(b, h, w, c)
            x_channel_att = x_att_permute.permute(0, 3, 1, 2).sigmoid()  # the paper's sigmoid, restored
            x = x * x_channel_att
            x_spatial_att = self.spatial_attention(x).sigmoid()
            x_spatial_att = channel_shuffle(x_spatial_att, 4)  # last shuffle
            return x * x_spatial_att

    return GAM_Attention


def test_grouped_preset_equals_the_grouped_copy():
    """The grouped copy's state_dict loads strictly into ``GAM(C, **GAM_PRESETS['grouped'])``; outputs, gradients and
    running statistics agree in eval and training (float64) in torch, and Paddle and Flax given its weights as
    canonical weights compute its output and statistics; the paper's preset refuses its weights by shape."""
    module = _grouped_copy()(16, 16).double()
    randomise(module, 3)
    ours = backend("torch").GAM(16, **GAM_PRESETS["grouped"]).double()
    ours.load_state_dict(copy.deepcopy(module.state_dict()), strict=True)
    weights = canonical(module)
    rng = np.random.default_rng(16)
    x, cot = rng.standard_normal((3, 16, 5, 4)) * 1.5, rng.standard_normal((3, 16, 5, 4))
    for training in (False, True):
        (y_a, dx_a, g_a, s_a), (y_o, dx_o, g_o, s_o) = (torch_step(m, x, cot, training) for m in (module, ours))
        np.testing.assert_allclose(y_o, y_a, rtol=RTOL, atol=1e-14)
        np.testing.assert_allclose(dx_o, dx_a, rtol=RTOL, atol=1e-13)
        for name in g_a:
            np.testing.assert_allclose(g_o[name], g_a[name], rtol=1e-9, atol=1e-12, err_msg=name)
        for fw in FRAMEWORKS[1:] if FRAMEWORKS[0] == "torch" else FRAMEWORKS:
            run = runner(fw)
            got = run.run("gam", GAMConfig(16, **GAM_PRESETS["grouped"]), weights, x, None, dtype="float64",
                          training=training, mode=run.default_mode)
            np.testing.assert_allclose(got.y, y_a, rtol=RTOL, atol=1e-14, err_msg=f"{fw} training={training}")
            for name in s_a if training else ():  # eval reports no state
                np.testing.assert_allclose(got.state[name], s_a[name], rtol=RTOL, err_msg=f"{fw}: {name}")
    with pytest.raises(RuntimeError, match="size mismatch for spatial_attention.0.weight"):
        backend("torch").GAM(16).double().load_state_dict(module.state_dict(), strict=True)


def test_a_missing_shuffle_is_caught_after_the_spatial_logits():
    """The grouped copy with its shuffle left out has the grouped preset's weights, so it loads; the check FAILs it at
    the output, while the spatial logits, before the shuffle (the copy's ``spatial_attention``), agree."""
    from conformance import check

    class NoShuffle(_grouped_copy()):
        def forward(self, x: Any) -> Any:
            b, c, h, w = x.shape
            att = self.channel_attention(x.permute(0, 2, 3, 1).reshape(b, -1, c)).view(b, h, w, c)
            x = x * att.permute(0, 3, 1, 2).sigmoid()
            return x * self.spatial_attention(x).sigmoid()

    config = GAMConfig(16, **GAM_PRESETS["grouped"])
    taps = {"gam_spatial_logits": "spatial_attention"}
    assert check(_grouped_copy()(16, 16), config, taps=taps, dtypes=("float64",)).passed
    report = check(NoShuffle(16, 16), config, taps=taps, dtypes=("float64",))
    assert not report.passed
    diagnosis = report.diagnosis("n2-7x5", "float64")
    assert diagnosis.stage == "output" and [c.passed for c in diagnosis.taps] == [True]


def test_gamresnet50_is_the_grouped_form():
    """gamresnet50 puts GAM_PRESETS['grouped'] in every bottleneck: 158,924,584 trainable parameters, counted here by
    hand (the full convolutions would give 528,621,352; ResNet-50 alone has 25,557,032)."""
    from attn_core.models import create_model_config

    config = create_model_config("gamresnet50")
    trainable = {p.name: p.shape for p in config.param_table() if p.trainable}
    # by hand: per block of C output channels, the MLP 2 * C * C/4 + C/4 + C; the convolutions in 4 groups,
    # C/4 x (C/4) x 7 x 7 and C x (C/16) x 7 x 7, with biases C/4 + C; the BatchNorms' weights and biases 2 (C/4 + C)
    gam = sum(n * (c * c // 2 + c // 4 + c + c * c // 16 * 49 * 2 + c // 4 + c + 2 * (c // 4 + c))
              for n, c in ((3, 256), (4, 512), (6, 1024), (3, 2048)))
    base = sum(int(np.prod(p.shape)) for p in create_model_config("resnet50").param_table() if p.trainable)
    assert (base, gam) == (25_557_032, 133_367_552)
    assert sum(int(np.prod(s)) for s in trainable.values()) == base + gam == 158_924_584
    assert trainable["layer4.2.se.spatial_attention.3.weight"] == (2048, 128, 7, 7)
    assert trainable["layer1.0.se.spatial_attention.0.weight"] == (64, 64, 7, 7)


@pytest.mark.slow(reason="builds a whole ResNet-50 per framework (abstractly: no weights), 4-11 s each")
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_gamresnet50_builds_abstractly(fw):
    """The whole gamresnet50 in each framework with no weights allocated (torch's meta device, Paddle's LazyGuard,
    Flax's eval_shape of init): as many trainable values as the config's 158,924,584, grouped as the config says."""
    from attn_core.models import create_model_config

    want = sum(int(np.prod(p.shape)) for p in create_model_config("gamresnet50").param_table() if p.trainable)
    if fw == "torch":
        import torch

        with torch.device("meta"):
            model = backend(fw).create_model("gamresnet50")
        sizes = {k: tuple(v.shape) for k, v in model.named_parameters()}
        assert sizes["layer4.2.se.spatial_attention.3.weight"] == (2048, 128, 7, 7)
    elif fw == "paddle":
        import paddle

        with paddle.LazyGuard():
            model = backend(fw).create_model("gamresnet50")
        # Paddle's BatchNorm statistics are parameters too, that no gradient reaches
        sizes = {k: tuple(v.shape) for k, v in model.named_parameters() if not v.stop_gradient}
        assert sizes["layer4.2.se.spatial_attention.3.weight"] == (2048, 128, 7, 7)
    else:
        import jax
        import jax.numpy as jnp

        model = backend(fw).create_model("gamresnet50")
        shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3), jnp.float32)))
        sizes = {"/".join(str(getattr(k, "key", k)) for k in path): tuple(v.shape)
                 for path, v in jax.tree_util.tree_flatten_with_path(shapes["params"])[0]}
    assert sum(int(np.prod(s)) for s in sizes.values()) == want == 158_924_584
