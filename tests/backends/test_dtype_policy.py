"""One dtype policy (attn_core.precision) in every backend: an input whose compute dtype is the module's parameters'
runs and keeps its dtype; any other floating input is an InputDtypeError naming the module, both dtypes and the
conversion; the error lists only what the backend takes on this device."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from attn_core import InputDtypeError
from attn_core.precision import FLOAT_DTYPES, accepted_input_dtypes

from .._fw import FRAMEWORKS, backend, nchw_to_native

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


@contextlib.contextmanager
def _x64(fw: str):
    if fw != "flax":
        yield
        return
    import jax
    with jax.enable_x64(True):
        yield


def _run(fw: str, name: str, x: np.ndarray, dtype: str, module_dtype: str) -> object:
    """``name`` with parameters in ``module_dtype`` on ``x`` given in ``dtype``: the output's dtype name."""
    bk = backend(fw)
    module = bk.create_attn(name, C)
    x = nchw_to_native(fw, x)
    if fw == "torch":
        import torch
        module.to(getattr(torch, module_dtype))
        return str(module(torch.tensor(x.astype(np.float32)).to(getattr(torch, dtype))).dtype).removeprefix("torch.")
    if fw == "paddle":
        import paddle
        module.to(dtype=module_dtype)
        return str(module(paddle.to_tensor(x.astype(np.float32)).astype(dtype)).dtype).removeprefix("paddle.")
    import jax
    import jax.numpy as jnp
    variables = module.init(jax.random.key(0), jnp.asarray(x, dtype=jnp.float32))
    variables = jax.tree.map(lambda a: a.astype(module_dtype), variables)
    return jnp.dtype(module.apply(variables, jnp.asarray(x, dtype=dtype)).dtype).name


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("name,cls", MODULES, ids=[m[0] for m in MODULES])
def test_float64_input_into_a_float32_module_is_refused_with_the_conversion(fw, name, cls):
    x = np.random.default_rng(0).standard_normal((2, C, 5, 6))
    with _x64(fw), pytest.raises(InputDtypeError) as exc:
        _run(fw, name, x, "float64", "float32")
    msg = str(exc.value)
    assert msg.startswith(f"{cls}: ") and "parameters are float32" in msg and "dtype float64" in msg
    assert "float16, bfloat16 or float32" in msg and "Convert the input" in msg and "float64" in msg.split("module")[-1]


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("name,cls", MODULES, ids=[m[0] for m in MODULES])
def test_float32_input_into_a_float64_module_is_refused(fw, name, cls):
    x = np.random.default_rng(1).standard_normal((2, C, 5, 6))
    with _x64(fw), pytest.raises(InputDtypeError) as exc:
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
    with _x64(fw):
        for dtype, module_dtype in pairs:
            assert _run(fw, name, x, dtype, module_dtype) == dtype, (dtype, module_dtype)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_integer_input_lists_only_what_the_backend_takes_here(fw):
    """Paddle on CPU and Flax without 64-bit mode: the list of a float32 module is float16, bfloat16 or float32 (not
    float64, which is the other compute dtype), and that of a float64 module float64 alone."""
    bk = backend(fw)
    module = bk.create_attn("se", C)
    x = nchw_to_native(fw, np.ones((2, C, 5, 6), dtype=np.int32))
    if fw == "torch":
        import torch
        call = lambda: module(torch.tensor(x))  # noqa: E731
    elif fw == "paddle":
        import paddle
        call = lambda: module(paddle.to_tensor(x))  # noqa: E731
    else:
        import jax
        import jax.numpy as jnp
        variables = module.init(jax.random.key(0), jnp.asarray(x, dtype=jnp.float32))
        call = lambda: module.apply(variables, jnp.asarray(x))  # noqa: E731
    with pytest.raises(InputDtypeError, match=r"SEModule: expected a floating-point input \(float16, bfloat16 or "
                                              r"float32\), got dtype int32"):
        call()


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_a_model_takes_its_own_dtype_at_its_entry(fw):
    """The models compute in their parameters' dtype in the frameworks' own layers: a float64 input into a float32
    model is the same InputDtypeError at the entry, naming the model (never the framework's own error inside)."""
    bk = backend(fw)
    model = bk.create_model("seresnet18", num_classes=3)
    x = np.zeros((1, 3, 32, 32))
    with _x64(fw), pytest.raises(InputDtypeError, match="ResNet: its parameters are float32, so it takes float32;"):
        if fw == "torch":
            import torch
            model(torch.tensor(x))
        elif fw == "paddle":
            import paddle
            model(paddle.to_tensor(x))
        else:
            import jax
            import jax.numpy as jnp
            shape = nchw_to_native(fw, x).shape  # traced only: the check is at the entry, before any computation
            variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape, jnp.float32))
            jax.eval_shape(model.apply, variables, jnp.zeros(shape, jnp.float64))
