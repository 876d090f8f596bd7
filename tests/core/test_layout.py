"""Where each canonical parameter lives in torch, Paddle and Flax, and how its layout converts.

Expected facts, from the frameworks' documentation:
- torch: state_dict keys as the canonical dotted names; Conv2d weight OIHW, Conv1d OIK, Linear [out, in];
  BatchNorm2d ``weight``, ``bias``, ``running_mean``, ``running_var``; momentum weighs the new batch (0.1).
- Paddle: Conv2D weight OIHW like torch; Linear weight [in, out]; BatchNorm2D ``weight``, ``bias``, ``_mean``,
  ``_variance``; momentum weighs the running value (0.9).
- Flax linen: Conv kernel HWIO (2-D) / WIO (1-D), Dense kernel [in, out], in collection ``params`` as ``kernel``
  and ``bias``; BatchNorm ``scale`` and ``bias`` in ``params`` and ``mean`` / ``var`` in ``batch_stats``;
  momentum weighs the running value.
"""

from __future__ import annotations

import numpy as np
import pytest

from attn_core import (
    FRAMEWORKS,
    CBAMConfig,
    ParamSpec,
    SEConfig,
    SpatialAttentionConfig,
    bn_momentum_for,
    from_native,
    native_location,
    to_native,
)

SPECS = [
    ParamSpec("conv.weight", (4, 3, 2, 5), "conv_weight"),
    ParamSpec("conv1d.weight", (1, 1, 7), "conv_weight"),
    ParamSpec("conv.bias", (4,), "conv_bias"),
    ParamSpec("fc.weight", (6, 3), "linear_weight"),
    ParamSpec("fc.bias", (6,), "linear_bias"),
    ParamSpec("bn.weight", (5,), "bn_weight"),
    ParamSpec("bn.bias", (5,), "bn_bias"),
    ParamSpec("bn.running_mean", (5,), "bn_mean"),
    ParamSpec("bn.running_var", (5,), "bn_var"),
]

# native shapes by hand
NATIVE_SHAPES = {
    "torch": {s.name: s.shape for s in SPECS},
    "paddle": {**{s.name: s.shape for s in SPECS}, "fc.weight": (3, 6)},
    "flax": {**{s.name: s.shape for s in SPECS}, "conv.weight": (2, 5, 3, 4), "conv1d.weight": (7, 1, 1),
             "fc.weight": (3, 6)},
}


def test_frameworks():
    assert tuple(FRAMEWORKS) == ("torch", "paddle", "flax")


@pytest.mark.parametrize("framework", ["torch", "paddle", "flax"])
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_to_native_shape_and_round_trip(framework, spec):
    rng = np.random.default_rng(0)
    canonical = rng.standard_normal(spec.shape)
    native = to_native(framework, spec, canonical)
    assert native.shape == NATIVE_SHAPES[framework][spec.name]
    np.testing.assert_array_equal(from_native(framework, spec, native), canonical)
    # and the other way round, from an array in the native layout
    other = rng.standard_normal(NATIVE_SHAPES[framework][spec.name])
    back = from_native(framework, spec, other)
    assert back.shape == spec.shape
    np.testing.assert_array_equal(to_native(framework, spec, back), other)


def test_flax_conv2d_oihw_to_hwio_elementwise():
    spec = ParamSpec("conv.weight", (4, 3, 2, 5), "conv_weight")
    w = np.arange(4 * 3 * 2 * 5, dtype=np.float64).reshape(4, 3, 2, 5)
    k = to_native("flax", spec, w)
    assert k.shape == (2, 5, 3, 4)
    assert k.flags["C_CONTIGUOUS"]
    for o in range(4):
        for i in range(3):
            for h in range(2):
                for x in range(5):
                    assert w[o, i, h, x] == k[h, x, i, o]
    np.testing.assert_array_equal(from_native("flax", spec, k), w)


def test_flax_conv1d_oik_to_kio():
    spec = ParamSpec("conv.weight", (1, 1, 5), "conv_weight")
    w = np.array([1.0, 2.0, 3.0, 4.0, 5.0]).reshape(1, 1, 5)
    k = to_native("flax", spec, w)
    assert k.shape == (5, 1, 1)
    np.testing.assert_array_equal(k[:, 0, 0], [1.0, 2.0, 3.0, 4.0, 5.0])
    # a conv1d with several channels: w[o, i, t] == k[t, i, o]
    spec2 = ParamSpec("c.weight", (3, 2, 4), "conv_weight")
    w2 = np.arange(24.0).reshape(3, 2, 4)
    k2 = to_native("flax", spec2, w2)
    assert k2.shape == (4, 2, 3)
    for o in range(3):
        for i in range(2):
            for t in range(4):
                assert w2[o, i, t] == k2[t, i, o]


@pytest.mark.parametrize("framework", ["paddle", "flax"])
def test_linear_weight_transposed(framework):
    spec = ParamSpec("fc.weight", (2, 3), "linear_weight")
    w = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    np.testing.assert_array_equal(to_native(framework, spec, w), [[1.0, 4.0], [2.0, 5.0], [3.0, 6.0]])


def test_torch_and_paddle_keep_conv_layout():
    spec = ParamSpec("conv.weight", (4, 3, 2, 5), "conv_weight")
    w = np.random.default_rng(1).standard_normal((4, 3, 2, 5))
    np.testing.assert_array_equal(to_native("torch", spec, w), w)
    np.testing.assert_array_equal(to_native("paddle", spec, w), w)
    lin = ParamSpec("fc.weight", (2, 3), "linear_weight")
    np.testing.assert_array_equal(to_native("torch", lin, np.eye(2, 3)), np.eye(2, 3))


# ------------------------------------------------------------------------------------------ native_location
def test_native_location_se():
    table = {p.name: p for p in SEConfig(64).param_table()}
    assert native_location("torch", table["fc1.weight"]) == ("state_dict", ("fc1", "weight"))
    assert native_location("paddle", table["fc1.weight"]) == ("state_dict", ("fc1", "weight"))
    assert native_location("flax", table["fc1.weight"]) == ("params", ("fc1", "kernel"))
    assert native_location("torch", table["fc2.bias"]) == ("state_dict", ("fc2", "bias"))
    assert native_location("flax", table["fc2.bias"]) == ("params", ("fc2", "bias"))


def test_native_location_batch_norm():
    table = {p.name: p for p in SpatialAttentionConfig(kernel_size=3, norm=True).param_table()}
    want = {
        "bn.weight": {"torch": ("state_dict", ("bn", "weight")), "paddle": ("state_dict", ("bn", "weight")),
                      "flax": ("params", ("bn", "scale"))},
        "bn.bias": {"torch": ("state_dict", ("bn", "bias")), "paddle": ("state_dict", ("bn", "bias")),
                    "flax": ("params", ("bn", "bias"))},
        "bn.running_mean": {"torch": ("state_dict", ("bn", "running_mean")), "paddle": ("state_dict", ("bn", "_mean")),
                            "flax": ("batch_stats", ("bn", "mean"))},
        "bn.running_var": {"torch": ("state_dict", ("bn", "running_var")),
                           "paddle": ("state_dict", ("bn", "_variance")), "flax": ("batch_stats", ("bn", "var"))},
        "conv.weight": {"torch": ("state_dict", ("conv", "weight")), "paddle": ("state_dict", ("conv", "weight")),
                        "flax": ("params", ("conv", "kernel"))},
    }
    for name, by_fw in want.items():
        for fw, loc in by_fw.items():
            assert native_location(fw, table[name]) == loc, (name, fw)


def test_native_location_nested_cbam():
    table = {p.name: p for p in CBAMConfig(32, spatial_norm=True).param_table()}
    assert native_location("flax", table["spatial.bn.running_var"]) == ("batch_stats", ("spatial", "bn", "var"))
    assert native_location("paddle", table["spatial.bn.running_mean"]) == ("state_dict", ("spatial", "bn", "_mean"))
    assert native_location("torch", table["channel.fc1.weight"]) == ("state_dict", ("channel", "fc1", "weight"))
    assert native_location("flax", table["channel.fc2.weight"]) == ("params", ("channel", "fc2", "kernel"))


def test_native_location_top_level_name():
    spec = ParamSpec("weight", (3,), "bn_weight")
    assert native_location("torch", spec) == ("state_dict", ("weight",))
    assert native_location("flax", spec) == ("params", ("scale",))


def test_native_location_linear_roles():
    assert native_location("flax", ParamSpec("fc.weight", (2, 3), "linear_weight")) == ("params", ("fc", "kernel"))
    assert native_location("flax", ParamSpec("fc.bias", (2,), "linear_bias")) == ("params", ("fc", "bias"))
    fc = ParamSpec("fc.weight", (2, 3), "linear_weight")
    assert native_location("paddle", fc) == ("state_dict", ("fc", "weight"))


# ------------------------------------------------------------------------------------------------- momentum
def test_bn_momentum_for():
    assert bn_momentum_for("torch", 0.1) == 0.1
    assert bn_momentum_for("paddle", 0.1) == pytest.approx(0.9, abs=1e-15)
    assert bn_momentum_for("flax", 0.1) == pytest.approx(0.9, abs=1e-15)
    assert bn_momentum_for("flax", 0.01) == pytest.approx(0.99, abs=1e-15)
    assert bn_momentum_for("paddle", 0.0) == 1.0
    assert bn_momentum_for("torch", 0.3) == 0.3


# ------------------------------------------------------------------------------------------ unknown framework
@pytest.mark.parametrize("call", [
    lambda fw: native_location(fw, SPECS[0]),
    lambda fw: to_native(fw, SPECS[0], np.zeros(SPECS[0].shape)),
    lambda fw: from_native(fw, SPECS[0], np.zeros(SPECS[0].shape)),
    lambda fw: bn_momentum_for(fw, 0.1),
], ids=["native_location", "to_native", "from_native", "bn_momentum_for"])
@pytest.mark.parametrize("fw", ["jax", "Torch", "tensorflow", ""])
def test_unknown_framework_raises(call, fw):
    with pytest.raises(ValueError) as err:
        call(fw)
    msg = str(err.value)
    assert repr(fw) in msg
    assert "torch" in msg and "paddle" in msg and "flax" in msg
