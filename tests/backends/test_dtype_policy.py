"""One dtype policy (attn_core.precision) in every backend: an input whose compute dtype is the module's parameters'
runs and keeps its dtype; any other floating input is an InputDtypeError naming the module, both dtypes and the
conversion; the error lists only what the backend takes on this device."""

from __future__ import annotations

import numpy as np
import pytest

from attn_core import InputDtypeError
from attn_core.models import create_model_config
from attn_core.precision import FLOAT_DTYPES, accepted_input_dtypes

from .._fw import FRAMEWORKS, nchw_to_native, runner

MODULES = [("se", "SEModule"), ("eca", "ECAModule"), ("ca", "ChannelAttention"), ("sa", "SpatialAttention"),
           ("cbam", "CBAM")]
C = 16


def test_the_rule_by_hand():
    every = FLOAT_DTYPES
    assert accepted_input_dtypes({"float32"}, every) == ("float16", "bfloat16", "float32")
    assert accepted_input_dtypes({"float16"}, every) == ("float16", "bfloat16", "float32")
    assert accepted_input_dtypes({"float64"}, every) == ("float64",)
    assert accepted_input_dtypes(set(), every) == every                      # no parameters: SimAM
    assert accepted_input_dtypes({"float32", "float64"}, every) == ()        # mixed parameters take nothing
    assert accepted_input_dtypes({"float32"}, ("float32", "float64")) == ("float16", "bfloat16", "float32")
    assert accepted_input_dtypes({"float32"}, ("float32", "float64"), half_in_float32=False) == ("float32",)
    assert accepted_input_dtypes({"float64"}, ("float16", "bfloat16", "float32")) == ()


def _run(fw: str, name: str, x: np.ndarray, dtype: str, module_dtype: str) -> object:
    """``name`` with parameters in ``module_dtype`` on ``x`` given in ``dtype``: the output's dtype name."""
    r = runner(fw)
    module = r.backend().create_attn(name, C)
    module, variables = r.load(module, module.config.init_weights(np.random.default_rng(3)), dtype=module_dtype)
    xt = r.tensor(nchw_to_native(fw, x).astype(np.float32), dtype)
    return r.dtype_name(r.call(module, xt, variables).dtype)


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("name,cls", MODULES, ids=[m[0] for m in MODULES])
def test_float64_input_into_a_float32_module_is_refused_with_the_conversion(fw, name, cls):
    x = np.random.default_rng(0).standard_normal((2, C, 5, 6))
    with runner(fw).dtype_scope("float64"), pytest.raises(InputDtypeError) as exc:
        _run(fw, name, x, "float64", "float32")
    msg = str(exc.value)
    assert msg.startswith(f"{cls}: ") and "parameters are float32" in msg and "dtype float64" in msg
    assert "float16, bfloat16 or float32" in msg and "Convert the input" in msg and "float64" in msg.split("module")[-1]


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("name,cls", MODULES, ids=[m[0] for m in MODULES])
def test_float32_input_into_a_float64_module_is_refused(fw, name, cls):
    x = np.random.default_rng(1).standard_normal((2, C, 5, 6))
    with runner(fw).dtype_scope("float64"), pytest.raises(InputDtypeError) as exc:
        _run(fw, name, x, "float32", "float64")
    msg = str(exc.value)
    assert msg.startswith(f"{cls}: ") and "parameters are float64" in msg and "dtype float32" in msg
    assert "takes float64;" in msg


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("name,cls", MODULES + [("simam", "SimAM")], ids=[m[0] for m in MODULES] + ["simam"])
def test_matching_and_half_inputs_run_and_keep_their_dtype(fw, name, cls):
    """float64 in float64, float32 in float32, and half inputs into float32 or half modules (computed in float32),
    Paddle on CPU included; SimAM, without parameters, takes every dtype whatever it is told its dtype is."""
    x = np.random.default_rng(2).standard_normal((2, C, 5, 6))
    pairs = [("float32", "float32"), ("float64", "float64"), ("float16", "float32"), ("bfloat16", "float32"),
             ("float16", "float16"), ("bfloat16", "float16"), ("float32", "float16")]
    if name == "simam":
        pairs.append(("float64", "float32"))
    with runner(fw).dtype_scope("float64"):
        for dtype, module_dtype in pairs:
            assert _run(fw, name, x, dtype, module_dtype) == dtype, (dtype, module_dtype)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_integer_input_lists_only_what_the_backend_takes_here(fw):
    """Paddle on CPU and Flax without 64-bit mode: the list of a float32 module is float16, bfloat16 or float32 (not
    float64, which is the other compute dtype), and that of a float64 module float64 alone."""
    r = runner(fw)
    module = r.backend().create_attn("se", C)
    shape = (2, C, 5, 6)
    variables = r.init_variables(module, shape, r.default_layout)  # float32, where they are apart from the module
    x = r.tensor(nchw_to_native(fw, np.ones(shape, dtype=np.int32)))
    with pytest.raises(InputDtypeError, match=r"SEModule: expected a floating-point input \(float16, bfloat16 or "
                                              r"float32\), got dtype int32"):
        r.call(module, x, variables)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_a_model_takes_its_own_dtype_at_its_entry(fw):
    """The models compute in their parameters' dtype in the frameworks' own layers: a float64 input into a float32
    model is the same InputDtypeError at the entry, naming the model (never the framework's own error inside)."""
    r = runner(fw)
    config = create_model_config("seresnet18", num_classes=3)
    model, variables = r.build_model(config, config.init_weights(np.random.default_rng(0), np.float32))
    with pytest.raises(InputDtypeError, match="ResNet: its parameters are float32, so it takes float32;"):
        r.forward(model, variables, np.zeros((1, 3, 32, 32)))
