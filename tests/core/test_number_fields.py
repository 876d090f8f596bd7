"""Numbers accepted by every config: NumPy real scalars for float fields, NumPy integers for int fields, stored as
plain Python numbers (attn_core.spec.coerce_numbers)."""

from __future__ import annotations

import dataclasses
import json
from fractions import Fraction

import numpy as np
import pytest

from attn_core import CONFIGS, ConfigError
from attn_core.models.registry import MODEL_CONFIGS
from attn_core.spec import as_int, as_real

FLOAT_TYPES = (np.float16, np.float32, np.float64)
INT_TYPES = (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)

# registry name -> {field: a valid value of that field}; the values are exact in float16 and fit int8/uint8
VALID = {
    "se": {"channels": 32, "rd_ratio": 0.25, "rd_channels": 6, "rd_divisor": 4},
    "eca": {"channels": 64, "kernel_size": 5, "gamma": 2.0, "beta": 1.0},
    "ca": {"channels": 32, "rd_ratio": 0.25, "rd_channels": 6, "rd_divisor": 2},
    "sa": {"channels": 16, "kernel_size": 3, "bn_eps": 0.0009765625, "bn_momentum": 0.125},
    "cbam": {"channels": 32, "rd_ratio": 0.25, "rd_channels": 6, "rd_divisor": 2, "spatial_kernel_size": 3,
             "bn_eps": 0.0009765625, "bn_momentum": 0.125},
    "simam": {"channels": 8, "e_lambda": 0.0001220703125},  # 2^-13
    "coord": {"channels": 32, "rd_ratio": 0.25, "rd_channels": 6, "rd_divisor": 4, "se_factor": 0.5, "rd_min": 4,
              "bn_eps": 0.0009765625, "bn_momentum": 0.125},
    "scoord": {"channels": 32, "rd_ratio": 0.25, "rd_channels": 6, "rd_divisor": 4, "se_factor": 0.5, "rd_min": 4},
    "ela": {"channels": 16, "kernel_size": 5, "norm_groups": 4, "norm_eps": 0.0009765625},
    "strip": {"channels": 8, "kernel_size": 5},
    "ese": {"channels": 8},
    "ecam": {"channels": 64, "kernel_size": 5, "gamma": 2.0, "beta": 1.0, "rd_ratio": 0.25, "rd_channels": 6,
             "rd_divisor": 4},
    "ceca": {"channels": 16, "kernel_size": 5, "gamma": 2.0, "beta": 1.0},
    "lcbam": {"channels": 32, "rd_ratio": 0.25, "rd_channels": 6, "rd_divisor": 2, "spatial_kernel_size": 3,
              "bn_eps": 0.0009765625, "bn_momentum": 0.125},
    "nl": {"channels": 32, "rd_ratio": 0.25, "rd_channels": 6, "rd_divisor": 4},
    "bat": {"channels": 32, "block_size": 2, "groups": 2, "rd_ratio": 0.25, "rd_channels": 6, "rd_divisor": 4,
            "drop_rate": 0.25},
    "ge": {"channels": 32, "extent": 4, "rd_ratio": 0.25, "rd_channels": 6, "rd_divisor": 4, "bn_eps": 0.0009765625,
           "bn_momentum": 0.125},
    "gc": {"channels": 32, "rd_ratio": 0.25, "rd_channels": 6, "rd_divisor": 4},
    "gca": {"channels": 32, "rd_ratio": 0.25, "rd_channels": 6, "rd_divisor": 4},
    "sk": {"in_channels": 16, "out_channels": 8, "stride": 2, "dilation": 2, "groups": 2, "rd_ratio": 0.25,
           "rd_channels": 6, "rd_divisor": 4, "bn_eps": 0.0009765625, "bn_momentum": 0.125},
    "splat": {"in_channels": 16, "out_channels": 8, "kernel_size": 3, "stride": 2, "padding": 1, "dilation": 2,
              "groups": 2, "radix": 2, "rd_ratio": 0.25, "rd_channels": 6, "rd_divisor": 4, "bn_eps": 0.0009765625,
              "bn_momentum": 0.125},
    "srm": {"channels": 8, "eps": 0.0009765625, "bn_eps": 0.0009765625, "bn_momentum": 0.125},
    "gct": {"channels": 8, "epsilon": 0.0009765625},
    "shuffle": {"channels": 128, "groups": 2, "gn_eps": 0.0009765625},  # 128: a multiple of twice the default 64 groups
    "triplet": {"channels": 8, "kernel_size": 3, "bn_eps": 0.0009765625, "bn_momentum": 0.125},
    "bam": {"channels": 32, "reduction_ratio": 4, "num_layers": 2, "dilation_conv_num": 1, "dilation_val": 2,
            "bn_eps": 0.0009765625, "bn_momentum": 0.125},
    "psa": {"channels": 16, "ratio": 2, "ln_eps": 0.0009765625},
    "gam": {"channels": 16, "rate": 2, "kernel_size": 3, "bn_eps": 0.0009765625, "bn_momentum": 0.125, "groups": 2,
            "shuffle_groups": 4},
}


def _numeric_fields(cls: type) -> dict[str, str]:
    return {f.name: f.type for f in dataclasses.fields(cls) if f.init and f.type in ("int", "float", "int | None",
                                                                                      "float | None")}


def test_every_numeric_field_of_every_module_is_in_the_table():
    """The table above covers every int and float field, so a new field cannot go untested."""
    for name, cls in CONFIGS.items():
        assert set(_numeric_fields(cls)) == set(VALID[name]), name


@pytest.mark.parametrize("name", list(VALID))
def test_numpy_scalars_in_every_numeric_field_are_stored_as_python_numbers(name):
    cls = CONFIGS[name]
    fields = _numeric_fields(cls)
    first = dataclasses.fields(cls)[0].name  # channels, or timm's in_channels (sk, splat)
    for field, value in VALID[name].items():
        # rd_channels overrides rd_ratio, and kernel_size set makes gamma/beta unused: each field on its own
        plain = cls(**({first: VALID[name][first]} if field != first else {}), **{field: value})
        kinds = INT_TYPES if fields[field].startswith("int") else FLOAT_TYPES + INT_TYPES
        for kind in kinds:
            if kind in INT_TYPES and (value != int(value) or value > np.iinfo(kind).max):  # int8: not 128
                continue
            arg = kind(value)
            cfg = cls(**({first: VALID[name][first]} if field != first else {}), **{field: arg})
            stored = getattr(cfg, field)
            assert type(stored) in (int, float), (name, field, kind, type(stored))
            assert stored == value and cfg == plain, (name, field, kind)
            assert type(stored) is (int if kind in INT_TYPES else float)
            json.dumps(stored)  # a plain number serialises


def test_simam_float32_lambda_is_accepted_as_the_issue_reports():
    cfg = CONFIGS["simam"](e_lambda=np.float32(1e-4))
    assert type(cfg.e_lambda) is float and cfg.e_lambda == float(np.float32(1e-4))


def test_fraction_is_a_real_number_too():
    assert CONFIGS["se"](32, rd_ratio=Fraction(1, 4)).rd_ratio == 0.25


@pytest.mark.parametrize("name,field,bad", [
    ("se", "channels", np.float32(32.0)),     # a float is not an int, NumPy or not
    ("se", "channels", np.bool_(True)),       # nor is a bool
    ("se", "rd_ratio", True),
    ("se", "rd_ratio", np.bool_(True)),
    ("sa", "kernel_size", np.float64(3.0)),
    ("sa", "bn_eps", np.float32(np.nan)),
    ("eca", "gamma", "2"),
    ("simam", "e_lambda", np.float16(np.inf)),
    ("simam", "e_lambda", np.int8(-1)),
])
def test_non_numbers_and_bad_numbers_are_still_refused(name, field, bad):
    cls = CONFIGS[name]
    kwargs = {"channels": VALID[name]["channels"]} if field != "channels" else {}
    with pytest.raises(ConfigError, match=field):
        cls(**kwargs, **{field: bad})


def test_model_configs_accept_numpy_scalars_in_their_number_fields():
    """The models' configs go through the same coercion: a NumPy number in num_classes and bn_eps."""
    for name, make in MODEL_CONFIGS.items():
        cfg = make()
        fields = _numeric_fields(type(cfg))
        changes = {}
        if "num_classes" in fields:
            changes["num_classes"] = np.int16(7)
        if "bn_eps" in fields:
            changes["bn_eps"] = np.float32(0.0009765625)
        if not changes:
            continue
        built = make(**changes)
        assert type(built.num_classes) is int and built.num_classes == 7, name
        if "bn_eps" in changes:
            assert type(built.bn_eps) is float and built.bn_eps == 0.0009765625, name


def test_as_int_and_as_real_by_hand():
    assert type(as_int(np.uint64(5))) is int and as_int(np.uint64(5)) == 5
    assert type(as_int(np.float32(5.0))) is np.float32  # not an integer: left for the validator to refuse
    assert type(as_real(np.float16(0.5))) is float and as_real(np.float16(0.5)) == 0.5
    assert type(as_real(np.int32(2))) is int
    assert type(as_real(np.bool_(True))) is np.bool_ and as_real(True) is True  # bools are left for the validators
    assert as_real("x") == "x"
