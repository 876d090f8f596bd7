"""Configs of attn_core: derived hyperparameters, validation, parameter tables, input and weight checks, registry.

Expected widths and kernel sizes come from hand calculation with the published rules:
- SE (Hu et al., CVPR 2018): r = 16; timm's SEModule rounds C / 16 with ``make_divisible(v, 8, round_limit=0)``
  where ``make_divisible(v, d) = max(d, int(v + d / 2) // d * d)`` (timm/layers/helpers.py).
- ECA (Wang et al., CVPR 2020, Eq. 9) as tabulated in timm: C = 16..96 -> k = 3, 128..1024 -> 5, 2048 -> 7.
- CBAM (Woo et al., ECCV 2018): timm's CbamModule rounds C / 16 with divisor 1; the seed articles floor C // 16.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import attn_core
from attn_core import (
    CBAM_PRESETS,
    CONFIGS,
    CBAMConfig,
    CECAConfig,
    ChannelAttentionConfig,
    ConfigError,
    ECAConfig,
    ECAMConfig,
    EffectiveSEConfig,
    InputDtypeError,
    InputShapeError,
    LightCBAMConfig,
    ParamSpec,
    SEConfig,
    SimAMConfig,
    SpatialAttentionConfig,
    WeightLoadError,
    create_config,
    eca_kernel_size,
    make_divisible,
    resolve_name,
    simam_denominator_count,
)


# -------------------------------------------------------------------------------------------- make_divisible
@pytest.mark.parametrize("v,divisor,round_limit,want", [
    # max(d, int(v + d/2) // d * d), then + d if below round_limit * v
    (4.0, 8, 0.0, 8),        # int(8) // 8 * 8 = 8
    (0.5, 8, 0.0, 8),        # int(4.5) = 4 -> 0 -> at least 8
    (16.0, 8, 0.0, 16),      # int(20) // 8 * 8 = 16
    (128.0, 8, 0.0, 128),    # int(132) // 8 * 8 = 128
    (11.9, 8, 0.0, 8),       # int(15.9) = 15 -> 8
    (12.0, 8, 0.0, 16),      # int(16) -> 16
    (1.5, 1, 0.0, 2),        # int(2.0) = 2
    (0.5, 1, 0.0, 1),        # int(1.0) = 1
    (10.0, 8, 0.9, 16),      # int(14) // 8 * 8 = 8 < 0.9 * 10 -> 8 + 8
    (36.0, 8, 0.9, 40),      # int(40) -> 40
])
def test_make_divisible_by_hand(v, divisor, round_limit, want):
    assert make_divisible(v, divisor, round_limit=round_limit) == want


# ----------------------------------------------------------------------------------------------------- SE
@pytest.mark.parametrize("channels,hidden", [(64, 8), (256, 16), (2048, 128), (8, 8), (16, 8), (512, 32),
                                             (160, 8), (320, 24), (200, 16)])
def test_se_hidden_timm_rounding(channels, hidden):
    # timm SEModule: make_divisible(C / 16, 8, round_limit=0); e.g. 64 / 16 = 4 -> max(8, int(8) // 8 * 8) = 8;
    # 160 / 16 = 10 -> int(14) // 8 * 8 = 8 (make_divisible's default round_limit=0.9 would bump it to 16);
    # 320 / 16 = 20 -> int(24) = 24; 200 / 16 = 12.5 -> int(16.5) // 8 * 8 = 16
    cfg = SEConfig(channels)
    assert cfg.hidden == hidden
    assert cfg.rd_divisor == 8 and cfg.rd_ratio == 1 / 16  # the paper's r = 16


@pytest.mark.parametrize("channels,hidden", [(48, 3), (100, 6), (120, 7), (16, 1), (64, 4), (2048, 128)])
def test_se_hidden_floor_without_divisor(channels, hidden):
    # C // 16; 120 / 16 = 7.5 floors to 7 (timm's rounding would give 8)
    assert SEConfig(channels, rd_divisor=None).hidden == hidden


def test_se_120_differs_between_floor_and_timm_rounding():
    assert SEConfig(120, rd_divisor=None).hidden == 7
    assert SEConfig(120, rd_divisor=1).hidden == 8  # int(7.5 + 0.5) = 8


def test_se_floor_is_exact_for_decimal_ratios():
    # 0.57 * 100 is 56.99999999999999 in binary floating point; the exact floor of 100 * 57/100 is 57
    assert SEConfig(100, rd_ratio=0.57, rd_divisor=None).hidden == 57
    assert SEConfig(30, rd_ratio=0.1, rd_divisor=None).hidden == 3
    assert SEConfig(48, rd_ratio=1 / 3, rd_divisor=None).hidden == 16


def test_se_rd_channels_overrides():
    assert SEConfig(64, rd_channels=5).hidden == 5
    assert SEConfig(8, rd_channels=3, rd_divisor=None).hidden == 3  # no zero-width error: rd_channels wins
    assert SEConfig(64, rd_channels=100).hidden == 100


@pytest.mark.parametrize("channels", [8, 15, 1])
def test_se_zero_hidden_raises(channels):
    with pytest.raises(ConfigError) as err:
        SEConfig(channels, rd_divisor=None)
    msg = str(err.value)
    assert "SEModule" in msg
    assert "hidden width is 0" in msg
    assert f"channels={channels}" in msg


@pytest.mark.parametrize("kwargs", [
    dict(channels=0), dict(channels=-8), dict(channels=True), dict(channels=8.0), dict(channels="64"),
    dict(channels=64, rd_channels=0), dict(channels=64, rd_channels=-1), dict(channels=64, rd_channels=2.5),
    dict(channels=64, rd_ratio=0), dict(channels=64, rd_ratio=-0.5), dict(channels=64, rd_ratio=float("nan")),
    dict(channels=64, rd_ratio=float("inf")), dict(channels=64, rd_ratio=True),
    dict(channels=64, rd_divisor=0), dict(channels=64, rd_divisor=True),
    dict(channels=64, act_layer="gelu"), dict(channels=64, gate_layer="relu"), dict(channels=64, bias="yes"),
])
def test_se_invalid_raises_config_error(kwargs):
    with pytest.raises(ConfigError, match="SEModule"):
        SEConfig(**kwargs)


def test_se_accepts_numpy_integer_channels():
    assert SEConfig(np.int64(64)).hidden == 8


def test_se_param_table_by_hand():
    table = SEConfig(64).param_table()
    assert [(p.name, p.shape, p.role) for p in table] == [
        ("fc1.weight", (8, 64, 1, 1), "conv_weight"),
        ("fc1.bias", (8,), "conv_bias"),
        ("fc2.weight", (64, 8, 1, 1), "conv_weight"),
        ("fc2.bias", (64,), "conv_bias"),
    ]
    assert all(p.trainable for p in table)
    assert SEConfig(64).param_shapes() == {"fc1.weight": (8, 64, 1, 1), "fc1.bias": (8,),
                                           "fc2.weight": (64, 8, 1, 1), "fc2.bias": (64,)}


def test_se_param_table_without_bias():
    assert SEConfig(64, bias=False).param_shapes() == {"fc1.weight": (8, 64, 1, 1), "fc2.weight": (64, 8, 1, 1)}


# ---------------------------------------------------------------------------------------------------- ECA
@pytest.mark.parametrize("channels,k", [
    (16, 3), (32, 3), (64, 3), (96, 3),            # timm: 16..96 -> 3
    (128, 5), (256, 5), (512, 5), (1024, 5),       # 128..1024 -> 5 (128: t = (7 + 1) / 2 = 4, even -> 5)
    (2048, 7),                                     # t = (11 + 1) / 2 = 6 -> 7
    (8, 3),                                        # t = (3 + 1) / 2 = 2 -> 3 (at least 3)
    (1, 3),                                        # t = 0 -> 1 -> at least 3
])
def test_eca_kernel_size_eq9(channels, k):
    assert eca_kernel_size(channels) == k
    cfg = ECAConfig(channels)
    assert cfg.k == k
    assert cfg.padding == (k - 1) // 2
    assert cfg.param_table() == (ParamSpec("conv.weight", (1, 1, k), "conv_weight"),)


def test_eca_kernel_size_gamma_beta_by_hand():
    # C = 64, gamma = 1, beta = 1: t = |6 + 1| / 1 = 7 -> 7; gamma = 3, beta = 3: t = int(9 / 3) = 3
    assert eca_kernel_size(64, gamma=1, beta=1) == 7
    assert ECAConfig(64, gamma=1, beta=1).k == 7
    assert eca_kernel_size(64, gamma=3, beta=3) == 3
    # C = 4096, gamma = 2, beta = 1: t = 13 / 2 = 6.5 -> 6 -> 7
    assert eca_kernel_size(4096) == 7


def test_eca_explicit_kernel_size():
    assert ECAConfig(128, kernel_size=1).k == 1
    assert ECAConfig(128, kernel_size=1).padding == 0
    assert ECAConfig(2048, kernel_size=3).k == 3  # given wins over Eq. 9
    assert ECAConfig(3, kernel_size=9).param_shapes() == {"conv.weight": (1, 1, 9)}


@pytest.mark.parametrize("k", [2, 4, 0, -1, -3, True, False, 3.0, "3"])
def test_eca_bad_kernel_size_raises(k):
    with pytest.raises(ConfigError, match="ECAModule"):
        ECAConfig(64, kernel_size=k)


@pytest.mark.parametrize("kwargs", [dict(channels=0), dict(channels=64, gamma=0), dict(channels=64, gamma=-2)])
def test_eca_invalid_raises(kwargs):
    with pytest.raises(ConfigError, match="ECAModule"):
        ECAConfig(**kwargs)


# --------------------------------------------------------------------------------------------------- CBAM
@pytest.mark.parametrize("channels,hidden", [(8, 1), (24, 2), (64, 4), (256, 16), (40, 3), (56, 4)])
def test_channel_attention_timm_rounding(channels, hidden):
    # divisor 1: max(1, int(C/16 + 0.5)); 8 -> int(1.0) = 1, 24 -> int(2.0) = 2, 40 -> int(3.0) = 3,
    # 56 -> int(4.0) = 4
    assert ChannelAttentionConfig(channels).hidden == hidden


@pytest.mark.parametrize("channels,hidden", [(24, 1), (64, 4), (40, 2), (56, 3), (16, 1)])
def test_channel_attention_floor(channels, hidden):
    assert ChannelAttentionConfig(channels, rd_divisor=None).hidden == hidden


def test_channel_attention_zero_hidden_raises():
    with pytest.raises(ConfigError, match="ChannelAttention") as err:
        ChannelAttentionConfig(8, rd_divisor=None)
    assert "hidden width is 0" in str(err.value)


def test_channel_attention_param_table():
    assert [(p.name, p.shape, p.role) for p in ChannelAttentionConfig(32).param_table()] == [
        ("fc1.weight", (2, 32, 1, 1), "conv_weight"), ("fc2.weight", (32, 2, 1, 1), "conv_weight")]
    assert ChannelAttentionConfig(32, bias=True).param_shapes() == {
        "fc1.weight": (2, 32, 1, 1), "fc1.bias": (2,), "fc2.weight": (32, 2, 1, 1), "fc2.bias": (32,)}


@pytest.mark.parametrize("k", [3, 5, 7, 1])
def test_spatial_attention_kernel_ok(k):
    cfg = SpatialAttentionConfig(kernel_size=k)
    assert cfg.padding == k // 2
    assert cfg.param_shapes() == {"conv.weight": (1, 2, k, k)}


@pytest.mark.parametrize("k", [4, 0, -1, 2, True, 7.0])
def test_spatial_attention_kernel_rejected(k):
    with pytest.raises(ConfigError, match="SpatialAttention"):
        SpatialAttentionConfig(kernel_size=k)


@pytest.mark.parametrize("order", ["mean_max", "max_mean"])
def test_spatial_attention_order_ok(order):
    assert SpatialAttentionConfig(order=order).order == order


@pytest.mark.parametrize("kwargs", [
    dict(order="avg_max"), dict(order="max_avg"), dict(order="MEAN_MAX"), dict(bn_eps=0), dict(bn_eps=-1e-5),
    dict(bn_eps=float("nan")), dict(bn_momentum=1.5), dict(bn_momentum=-0.1), dict(gate_layer="tanh"),
    dict(channels=0), dict(norm="yes"),
])
def test_spatial_attention_invalid(kwargs):
    with pytest.raises(ConfigError, match="SpatialAttention"):
        SpatialAttentionConfig(**kwargs)


def test_spatial_attention_param_table_with_norm_and_bias():
    table = SpatialAttentionConfig(kernel_size=3, bias=True, norm=True).param_table()
    assert [(p.name, p.shape, p.role, p.trainable) for p in table] == [
        ("conv.weight", (1, 2, 3, 3), "conv_weight", True),
        ("conv.bias", (1,), "conv_bias", True),
        ("bn.weight", (1,), "bn_weight", True),
        ("bn.bias", (1,), "bn_bias", True),
        ("bn.running_mean", (1,), "bn_mean", False),
        ("bn.running_var", (1,), "bn_var", False),
    ]


def test_cbam_param_table_prefixes():
    cfg = CBAMConfig(32, spatial_kernel_size=3, spatial_norm=True)
    assert [(p.name, p.shape, p.role) for p in cfg.param_table()] == [
        ("channel.fc1.weight", (2, 32, 1, 1), "conv_weight"),
        ("channel.fc2.weight", (32, 2, 1, 1), "conv_weight"),
        ("spatial.conv.weight", (1, 2, 3, 3), "conv_weight"),
        ("spatial.bn.weight", (1,), "bn_weight"),
        ("spatial.bn.bias", (1,), "bn_bias"),
        ("spatial.bn.running_mean", (1,), "bn_mean"),
        ("spatial.bn.running_var", (1,), "bn_var"),
    ]
    assert cfg.hidden == 2
    assert cfg.channel == ChannelAttentionConfig(32)
    assert cfg.spatial == SpatialAttentionConfig(32, kernel_size=3, norm=True)


@pytest.mark.parametrize("kwargs,sub", [
    (dict(channels=8, rd_divisor=None), "ChannelAttention"),
    (dict(channels=64, spatial_kernel_size=4), "SpatialAttention"),
    (dict(channels=64, spatial_order="avg_max"), "SpatialAttention"),
    (dict(channels=64, act_layer="gelu"), "ChannelAttention"),
    (dict(channels=64, bn_momentum=2.0), "SpatialAttention"),
])
def test_cbam_propagates_errors(kwargs, sub):
    with pytest.raises(ConfigError) as err:
        CBAMConfig(**kwargs)
    assert "CBAM" in str(err.value)
    assert sub in str(err.value)


def test_cbam_channels_validated():
    with pytest.raises(ConfigError, match="CBAM"):
        CBAMConfig(0)


def test_cbam_presets_build_the_published_forms():
    assert set(CBAM_PRESETS) == {"article", "timm", "original"}
    # C = 24: floor 24 // 16 = 1; timm's rounding int(1.5 + 0.5) = 2
    article = CBAMConfig(24, **CBAM_PRESETS["article"])
    timm = CBAMConfig(24, **CBAM_PRESETS["timm"])
    original = CBAMConfig(24, **CBAM_PRESETS["original"])
    assert (article.hidden, timm.hidden, original.hidden) == (1, 2, 1)
    # timm CbamModule: no MLP bias, mean map first, BatchNorm after the spatial conv
    assert timm.param_shapes() == {
        "channel.fc1.weight": (2, 24, 1, 1), "channel.fc2.weight": (24, 2, 1, 1),
        "spatial.conv.weight": (1, 2, 7, 7), "spatial.bn.weight": (1,), "spatial.bn.bias": (1,),
        "spatial.bn.running_mean": (1,), "spatial.bn.running_var": (1,)}
    assert timm.spatial.order == "mean_max"
    # the seed articles: no bias, no BatchNorm
    assert article.param_shapes() == {
        "channel.fc1.weight": (1, 24, 1, 1), "channel.fc2.weight": (24, 1, 1, 1), "spatial.conv.weight": (1, 2, 7, 7)}
    # the authors' code (Jongchan/attention-module): Linear with bias, cat([max, mean]), conv + BatchNorm
    assert set(original.param_shapes()) == {
        "channel.fc1.weight", "channel.fc1.bias", "channel.fc2.weight", "channel.fc2.bias",
        "spatial.conv.weight", "spatial.bn.weight", "spatial.bn.bias", "spatial.bn.running_mean",
        "spatial.bn.running_var"}
    assert original.spatial.order == "max_mean"
    with pytest.raises(TypeError):
        CBAM_PRESETS["timm"]["spatial_norm"] = False  # read-only
    # the article form cannot build a zero-width MLP
    with pytest.raises(ConfigError, match="CBAM"):
        CBAMConfig(8, **CBAM_PRESETS["article"])


# -------------------------------------------------------------------------------------------------- SimAM
@pytest.mark.parametrize("lam", [0, 0.0, -1e-4, float("inf"), float("nan"), True, "1e-4", None])
def test_simam_e_lambda_must_be_positive_finite(lam):
    with pytest.raises(ConfigError, match="SimAM"):
        SimAMConfig(e_lambda=lam)


def test_simam_defaults_and_table():
    assert SimAMConfig().e_lambda == 1e-4  # the paper's default
    assert SimAMConfig(e_lambda=0.1).e_lambda == 0.1
    assert SimAMConfig(16).param_table() == ()
    assert SimAMConfig().param_shapes() == {}


@pytest.mark.parametrize("h,w,n", [(1, 1, 1), (1, 2, 1), (3, 5, 14), (7, 7, 48)])
def test_simam_denominator_count(h, w, n):
    assert simam_denominator_count(h, w) == n  # H * W - 1, at least 1


# ----------------------------------------------------------------------------------- frozen and hashable
ALL_CONFIGS = [
    SEConfig(64), ECAConfig(64), ChannelAttentionConfig(64), SpatialAttentionConfig(64, kernel_size=3),
    CBAMConfig(64), SimAMConfig(64),
]


@pytest.mark.parametrize("cfg", ALL_CONFIGS, ids=lambda c: type(c).__name__)
def test_configs_are_frozen(cfg):
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.channels = 128
    assert cfg.channels == 64


def test_derived_fields_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        SEConfig(64).hidden = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        ECAConfig(64).k = 9


def test_configs_equal_and_hash_by_value():
    assert SEConfig(64) == SEConfig(64)
    assert hash(SEConfig(64)) == hash(SEConfig(64))
    assert len({SEConfig(64), SEConfig(64), SEConfig(128)}) == 2
    assert SEConfig(64) != SEConfig(128)
    assert SEConfig(64) != SEConfig(64, bias=False)
    assert SEConfig(64) != ChannelAttentionConfig(64)  # different module, same fields
    assert CBAMConfig(64) == CBAMConfig(64) and hash(CBAMConfig(64)) == hash(CBAMConfig(64))
    assert CBAMConfig(64) != CBAMConfig(64, spatial_norm=True)
    assert {ECAConfig(256): "x"}[ECAConfig(256)] == "x"
    assert SimAMConfig() == SimAMConfig(None, 1e-4)


def test_replace_revalidates_and_rederives():
    cfg = SEConfig(64)
    assert cfg.replace(channels=2048).hidden == 128
    assert cfg.hidden == 8
    with pytest.raises(ConfigError):
        cfg.replace(rd_divisor=None, channels=8)


# -------------------------------------------------------------------------------------------- ParamSpec
def test_param_spec_properties():
    p = ParamSpec("channel.fc1.weight", (2, 32, 1, 1), "conv_weight")
    assert p.module_path == "channel.fc1"
    assert p.trainable
    assert not ParamSpec("bn.running_var", (1,), "bn_var").trainable
    assert not ParamSpec("bn.running_mean", (1,), "bn_mean").trainable
    assert ParamSpec("bn.weight", (1,), "bn_weight").trainable


# ------------------------------------------------------------------------------------------- check_input
def test_error_classes():
    assert issubclass(ConfigError, ValueError)
    assert issubclass(InputShapeError, ValueError)
    assert issubclass(InputDtypeError, TypeError)
    assert issubclass(WeightLoadError, ValueError)


def test_check_input_accepts_good_inputs():
    cfg = SEConfig(64)
    cfg.check_input((2, 64, 5, 7), "float32", True)
    cfg.check_input((2, 5, 7, 64), "float16", True, layout="NHWC")
    SimAMConfig().check_input((1, 3, 1, 1), "float64", True)  # any channel count
    SpatialAttentionConfig().check_input((1, 17, 4, 4), "bfloat16", True)


@pytest.mark.parametrize("shape", [(2, 64, 5), (64, 5, 5, 5, 1), (64,), ()])
def test_check_input_wrong_rank(shape):
    with pytest.raises(InputShapeError) as err:
        SEConfig(64).check_input(shape, "float32", True)
    msg = str(err.value)
    assert "SEModule" in msg
    assert "(N, C, H, W)" in msg and "C=64" in msg
    assert f"{len(shape)}-D" in msg


def test_check_input_wrong_rank_message_shows_shape():
    with pytest.raises(InputShapeError) as err:
        SEConfig(64).check_input((2, 64, 5), "float32", True)
    assert "(2, 64, 5)" in str(err.value)


def test_check_input_wrong_channels_nchw():
    with pytest.raises(InputShapeError) as err:
        SEConfig(64).check_input((2, 32, 5, 5), "float32", True)
    msg = str(err.value)
    assert "SEModule" in msg and "64" in msg and "(2, 32, 5, 5)" in msg and "32 channels" in msg


def test_check_input_wrong_channels_nhwc():
    cfg = ECAConfig(64)
    with pytest.raises(InputShapeError) as err:
        cfg.check_input((2, 5, 5, 32), "float32", True, layout="NHWC")
    msg = str(err.value)
    assert "ECAModule" in msg and "(N, H, W, C)" in msg and "(2, 5, 5, 32)" in msg and "32 channels" in msg
    # NHWC checks axis 3, not axis 1: 64 at axis 1 is H
    with pytest.raises(InputShapeError):
        cfg.check_input((2, 64, 5, 5), "float32", True, layout="NHWC")
    cfg.check_input((2, 5, 3, 64), "float32", True, layout="NHWC")


@pytest.mark.parametrize("cfg", [CBAMConfig(16), ChannelAttentionConfig(16), SpatialAttentionConfig(16),
                                 SimAMConfig(16)], ids=lambda c: type(c).__name__)
def test_check_input_channels_for_every_module(cfg):
    with pytest.raises(InputShapeError, match=cfg.module_name):
        cfg.check_input((1, 15, 3, 3), "float32", True)


@pytest.mark.parametrize("shape", [(0, 64, 5, 5), (2, 64, 0, 5), (2, 64, 5, 0)])
def test_check_input_zero_size(shape):
    with pytest.raises(InputShapeError) as err:
        SEConfig(64).check_input(shape, "float32", True)
    msg = str(err.value)
    assert "SEModule" in msg and "non-empty" in msg
    assert "(" + ", ".join(map(str, shape)) + ")" in msg


def test_check_input_zero_channels_without_expected_channels():
    with pytest.raises(InputShapeError, match="SimAM"):
        SimAMConfig().check_input((1, 0, 3, 3), "float32", True)


@pytest.mark.parametrize("dtype", ["int32", "int64", "bool", "uint8"])
def test_check_input_non_float_dtype(dtype):
    with pytest.raises(InputDtypeError) as err:
        SEConfig(64).check_input((2, 64, 5, 5), dtype, False)
    msg = str(err.value)
    assert "SEModule" in msg and dtype in msg and "floating-point" in msg


@pytest.mark.parametrize("shape", [(None, 64, None, None), (-1, 64, -1, -1), (None, None, 5, 5), (2, -1, 5, 5),
                                   (None, None, None, None)])
def test_check_input_unknown_dims_not_checked(shape):
    SEConfig(64).check_input(shape, "float32", True)


def test_check_input_known_dims_checked_beside_unknown():
    with pytest.raises(InputShapeError):
        SEConfig(64).check_input((None, 3, None, None), "float32", True)
    with pytest.raises(InputShapeError):
        SEConfig(64).check_input((None, 64, 0, None), "float32", True)
    with pytest.raises(InputShapeError):
        SEConfig(64).check_input((None, 64, None), "float32", True)


def test_reference_rejects_integer_input():
    cfg = SimAMConfig()
    with pytest.raises(InputDtypeError, match="int64"):
        cfg.reference({}, np.ones((1, 2, 3, 3), dtype=np.int64))
    with pytest.raises(InputShapeError):
        cfg.reference({}, np.ones((2, 3, 3)))


# ----------------------------------------------------------------------------------------- check_weights
def _se_weights():
    return {"fc1.weight": np.zeros((8, 64, 1, 1)), "fc1.bias": np.zeros(8),
            "fc2.weight": np.zeros((64, 8, 1, 1)), "fc2.bias": np.zeros(64)}


def test_check_weights_accepts_good_weights():
    SEConfig(64).check_weights(_se_weights())
    w = _se_weights()
    w["fc1.weight"] = w["fc1.weight"].astype(np.float16)
    SEConfig(64).check_weights(w)


def test_check_weights_reports_every_problem_at_once():
    w = _se_weights()
    del w["fc1.bias"]                                        # missing
    w["fc3.weight"] = np.zeros((1,))                         # unexpected
    w["aaa"] = np.zeros((1,))                                # unexpected
    w["fc2.weight"] = np.zeros((64, 8))                      # wrong shape
    w["fc1.weight"] = np.zeros((8, 64, 1, 1), dtype=np.int32)  # integer dtype
    with pytest.raises(WeightLoadError) as err:
        SEConfig(64).check_weights(w)
    e = err.value
    assert e.module == "SEModule"
    assert e.missing == ["fc1.bias"]
    assert sorted(e.unexpected) == ["aaa", "fc3.weight"]
    assert e.mismatched == [("fc2.weight", (64, 8, 1, 1), (64, 8))]
    assert e.bad_dtype == ["fc1.weight"]
    msg = str(e)
    for piece in ("SEModule", "fc1.bias", "fc3.weight", "aaa", "fc2.weight", "(64, 8, 1, 1)", "(64, 8)",
                  "fc1.weight"):
        assert piece in msg


@pytest.mark.parametrize("dtype", [np.int64, np.bool_, np.complex128, np.uint8])
def test_check_weights_rejects_non_real_float(dtype):
    w = _se_weights()
    w["fc2.bias"] = np.zeros(64, dtype=dtype)
    with pytest.raises(WeightLoadError) as err:
        SEConfig(64).check_weights(w)
    assert err.value.bad_dtype == ["fc2.bias"]
    assert err.value.missing == [] and err.value.unexpected == [] and err.value.mismatched == []


def test_check_weights_empty_table():
    SimAMConfig().check_weights({})
    with pytest.raises(WeightLoadError) as err:
        SimAMConfig().check_weights({"x": np.zeros(1)})
    assert err.value.unexpected == ["x"]


def test_check_weights_cbam_names():
    cfg = CBAMConfig(32, spatial_kernel_size=3)
    with pytest.raises(WeightLoadError) as err:
        cfg.check_weights({"fc1.weight": np.zeros((2, 32, 1, 1))})
    assert err.value.module == "CBAM"
    assert err.value.missing == ["channel.fc1.weight", "channel.fc2.weight", "spatial.conv.weight"]
    assert err.value.unexpected == ["fc1.weight"]


# ------------------------------------------------------------------------------------------- init_weights
@pytest.mark.parametrize("cfg", [SEConfig(64), ECAConfig(64), CBAMConfig(32, spatial_norm=True, mlp_bias=True),
                                 SpatialAttentionConfig(kernel_size=3, norm=True, bias=True)],
                         ids=lambda c: type(c).__name__)
def test_init_weights_fit_the_table(cfg):
    w = cfg.init_weights(np.random.default_rng(0), dtype=np.float32)
    cfg.check_weights(w)
    assert all(v.dtype == np.float32 for v in w.values())
    w2 = cfg.init_weights(np.random.default_rng(0))
    for name, v in w2.items():
        np.testing.assert_allclose(v, w[name], rtol=1e-6)  # same seed, same draws
    for p in cfg.param_table():
        if p.role == "bn_var":
            assert np.all(w2[p.name] >= 0.5)
        if p.role == "bn_weight":
            assert np.all(w2[p.name] >= 0.5)


def test_init_weights_conv_within_documented_bound():
    """The docstring's bound: uniform(+-2/sqrt(fan_in)), twice torch's default, and actually using that range."""
    cfg = ECAConfig(64, kernel_size=9)   # fan_in = 1 * 9: bound 2/3
    w = cfg.init_weights(np.random.default_rng(0))["conv.weight"]
    big = SEConfig(64).init_weights(np.random.default_rng(1))["fc2.weight"]  # fan_in 8: bound 2/sqrt(8)
    assert np.abs(w).max() <= 2 / 3
    assert 1 / np.sqrt(8) < np.abs(big).max() <= 2 / np.sqrt(8)


# ----------------------------------------------------------------------------------------------- registry
@pytest.mark.parametrize("name,key", [
    ("se", "se"), ("SE", "se"), ("eca", "eca"), ("ECA", "eca"), ("ca", "ca"), ("channel", "ca"),
    ("channel_attention", "ca"), ("Channel_Attention", "ca"), ("sa", "sa"), ("spatial", "sa"),
    ("spatial_attention", "sa"), ("cbam", "cbam"), ("CBAM", "cbam"), ("simam", "simam"), ("SimAM", "simam"),
])
def test_resolve_name(name, key):
    assert resolve_name(name) == key


@pytest.mark.parametrize("name", ["foo", "", "se_module", "halo"])  # halo: a timm key that is not attention here
def test_resolve_name_unknown_lists_known(name):
    with pytest.raises(ConfigError) as err:
        resolve_name(name)
    msg = str(err.value)
    assert repr(name) in msg
    for known in ("se", "eca", "ca", "sa", "cbam", "simam"):
        assert known in msg
    assert "se, eca, ca, sa, cbam, simam" in msg


@pytest.mark.parametrize("name", [3, None, b"se"])
def test_resolve_name_non_string(name):
    with pytest.raises(ConfigError):
        resolve_name(name)


def test_registry_classes():
    # the catalogue grows by timm's keys; these entries are fixed
    assert dict(CONFIGS).items() >= {"se": SEConfig, "eca": ECAConfig, "ca": ChannelAttentionConfig,
                                     "sa": SpatialAttentionConfig, "cbam": CBAMConfig, "simam": SimAMConfig,
                                     "ese": EffectiveSEConfig, "ecam": ECAMConfig, "ceca": CECAConfig,
                                     "lcbam": LightCBAMConfig}.items()


def test_create_config():
    assert create_config("SE", 64) == SEConfig(64)
    assert create_config("se", 64).hidden == 8
    assert create_config("se", 64, rd_divisor=None).hidden == 4
    assert create_config("eca", 256).k == 5
    ca = create_config("channel_attention", 32)
    assert isinstance(ca, ChannelAttentionConfig) and ca.hidden == 2
    sa = create_config("spatial", None, kernel_size=3)
    assert isinstance(sa, SpatialAttentionConfig) and sa.channels is None and sa.kernel_size == 3
    assert create_config("cbam", 24, **CBAM_PRESETS["timm"]).hidden == 2
    assert create_config("simam", None) == SimAMConfig()
    with pytest.raises(ConfigError):
        create_config("nope", 64)
    with pytest.raises(ConfigError, match="ECAModule"):
        create_config("eca", 64, kernel_size=4)


def test_public_api_names():
    for name in attn_core.__all__:
        assert hasattr(attn_core, name), name


@pytest.mark.parametrize("beta", [float("nan"), "1"])
def test_eca_bad_beta_raises_config_error(beta):
    with pytest.raises(ConfigError, match="ECAModule"):
        ECAConfig(64, beta=beta)


@pytest.mark.parametrize("make", [lambda: ECAConfig(64, kernel_size=np.int64(3)),
                                  lambda: SpatialAttentionConfig(kernel_size=np.int64(7))],
                         ids=["eca", "spatial"])
def test_kernel_size_accepts_numpy_integers_like_channels(make):
    cfg = make()
    assert cfg.param_table()[0].shape[-1] in (3, 7)
