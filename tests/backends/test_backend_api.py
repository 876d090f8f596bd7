"""The three backends are mirror images: same names, arguments, defaults and parameter names."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest

from attn_core import CONFIGS, ConfigError

from .._fw import FRAMEWORKS, backend

CLASSES = ("SEModule", "ECAModule", "ChannelAttention", "SpatialAttention", "CBAM", "SimAM",
           "EffectiveSEModule", "EcaMlpModule", "CecaModule", "LightCbamModule",
           "NonLocalAttn", "BatNonLocalAttn",
           "GatherExcite", "GlobalContext", "GlobalContextAdd")


def _arguments(fw, cls):
    """(name, default) of the constructor arguments: __init__ in torch/Paddle, the dataclass fields in Flax."""
    if fw == "flax":
        fields = [f for f in dataclasses.fields(cls) if f.init and f.name not in ("parent", "name")]
        return [(f.name, f.default) for f in fields]
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    return [(p.name, p.default) for p in params]


def _config_arguments(config_cls):
    return [(f.name, f.default if f.default is not dataclasses.MISSING else inspect.Parameter.empty)
            for f in dataclasses.fields(config_cls) if f.init]


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_registry_matches_the_spec(fw):
    b = backend(fw)
    assert set(b.ATTN_LAYERS) == set(CONFIGS)
    for key, cls in b.ATTN_LAYERS.items():
        assert cls.__name__ == CONFIGS[key].module_name
        assert cls.__doc__ == CONFIGS[key].__doc__
    assert {c for c in CLASSES} <= set(dir(b))


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("key", sorted(CONFIGS))
def test_arguments_mirror_the_config(fw, key):
    """Argument names, order and defaults of every backend class are the config's fields."""
    b = backend(fw)
    got = _arguments(fw, b.ATTN_LAYERS[key])
    want = _config_arguments(CONFIGS[key])
    assert [n for n, _ in got] == [n for n, _ in want]
    for (n, d_got), (_, d_want) in zip(got, want, strict=True):
        if d_want is inspect.Parameter.empty:
            assert d_got in (inspect.Parameter.empty, dataclasses.MISSING), n
        else:
            assert d_got == d_want, n


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_create_attn(fw):
    b = backend(fw)
    m = b.create_attn("cbam", 32, spatial_kernel_size=3)
    assert type(m).__name__ == "CBAM" and m.config.spatial.kernel_size == 3 and m.config.hidden == 2
    assert type(b.create_attn("Channel", 16)).__name__ == "ChannelAttention"
    with pytest.raises(ConfigError, match="unknown attention 'nope'.*se, eca, ca, sa, cbam, simam"):
        b.create_attn("nope", 8)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_impossible_hyperparameters(fw):
    b = backend(fw)
    cases = [
        (lambda: b.SEModule(8, rd_divisor=None), "SEModule: hidden width is 0"),
        (lambda: b.ECAModule(64, kernel_size=4), "ECAModule: kernel_size must be a positive odd integer"),
        (lambda: b.SpatialAttention(kernel_size=0), "SpatialAttention: kernel_size"),
        (lambda: b.CBAM(8, rd_divisor=None), "CBAM: ChannelAttention: hidden width is 0"),
        (lambda: b.SimAM(e_lambda=0.0), "SimAM: e_lambda"),
    ]
    for build, message in cases:
        with pytest.raises(ConfigError, match=message):
            m = build()
            if fw == "flax":  # linen modules are dataclasses: construction is lazy until bound
                import jax
                import jax.numpy as jnp
                m.init(jax.random.key(0), jnp.ones((1, 4, 4, 8)))


def test_parameter_names_are_the_same_everywhere():
    """Every backend exports exactly the canonical names of the spec, for a module with every kind of parameter."""
    from attn_core import CBAMConfig
    config = CBAMConfig(24, spatial_norm=True, mlp_bias=True, spatial_bias=True)
    want = {p.name: p.shape for p in config.param_table()}
    for fw in FRAMEWORKS:
        try:
            b = backend(fw)
        except pytest.skip.Exception:
            continue
        m = b.CBAM.from_config(config)
        if fw == "flax":
            import jax
            import jax.numpy as jnp
            exported = b.export_weights(m, m.init(jax.random.key(0), jnp.ones((1, 5, 5, 24))))
        else:
            exported = b.export_weights(m)
        assert {k: tuple(np.shape(v)) for k, v in exported.items()} == want, fw


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_shared_layers_and_ops_have_the_same_names(fw):
    """Every backend's _layers builds specs under the same names and its _ops has the same activation table."""
    import importlib

    backend(fw)
    layers = importlib.import_module(f"backends.{fw}._layers")
    ops = importlib.import_module(f"backends.{fw}._ops")
    assert {"build_layer", "build_attention"} <= set(layers.__all__)
    assert set(ops.ACTIVATIONS) == {"relu", "silu", "sigmoid", "hard_sigmoid", "hard_swish"}
    with pytest.raises(TypeError, match="no .* layer for the layer spec str"):
        layers.build_layer("relu", "x") if fw == "flax" else layers.build_layer("relu")


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("dtype,computed", [("float16", "float32"), ("bfloat16", "float32"), ("float32", "float32")])
def test_compute_dtype_is_attn_cores(fw, dtype, computed):
    """Half inputs compute in float32, others in their own dtype (attn_core.precision), in every backend."""
    import importlib

    from attn_core.precision import compute_dtype

    assert compute_dtype(dtype) == computed
    backend(fw)
    ops = importlib.import_module(f"backends.{fw}._ops")
    x = np.zeros((1, 2), np.float32)
    if fw == "torch":
        import torch
        got = ops.compute_dtype_of(torch.from_numpy(x).to(getattr(torch, dtype)))
        want = None if computed == dtype else getattr(torch, computed)
    elif fw == "paddle":
        import paddle
        got = ops.compute_dtype_of(paddle.to_tensor(x).astype(dtype))
        want = None if computed == dtype else getattr(paddle, computed)
    else:
        import jax.numpy as jnp
        got, want = ops.compute_dtype_of(jnp.asarray(x, dtype)), jnp.dtype(computed)
    assert got == want
