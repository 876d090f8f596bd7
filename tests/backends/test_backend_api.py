"""The three backends are mirror images: same names, arguments, defaults and parameter names."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest

from attn_core import CONFIGS, ConfigError

from .._fw import FRAMEWORKS, backend, runner

CLASSES = ("SEModule", "ECAModule", "ChannelAttention", "SpatialAttention", "CBAM", "SimAM",
           "EffectiveSEModule", "EcaMlpModule", "CecaModule", "LightCbamModule",
           "NonLocalAttn", "BatNonLocalAttn",
           "SelectiveKernel", "SplitAttn",
           "GatherExcite", "GlobalContext", "GlobalContextAdd",
           "SRM", "GCT", "ShuffleAttention",
           "TripletAttention", "BAM", "PSA", "GAM")


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
    r = runner(fw)
    got = r.constructor_arguments(r.backend().ATTN_LAYERS[key])
    want = _config_arguments(CONFIGS[key])
    assert [n for n, _ in got] == [n for n, _ in want]
    for (n, d_got), (_, d_want) in zip(got, want, strict=True):
        if d_want is inspect.Parameter.empty:
            assert d_got is inspect.Parameter.empty, n
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
    r = runner(fw)
    b = r.backend()
    cases = [
        (lambda: b.SEModule(8, rd_divisor=None), "SEModule: hidden width is 0"),
        (lambda: b.ECAModule(64, kernel_size=4), "ECAModule: kernel_size must be a positive odd integer"),
        (lambda: b.SpatialAttention(kernel_size=0), "SpatialAttention: kernel_size"),
        (lambda: b.CBAM(8, rd_divisor=None), "CBAM: ChannelAttention: hidden width is 0"),
        (lambda: b.SimAM(e_lambda=0.0), "SimAM: e_lambda"),
    ]
    for build, message in cases:
        with pytest.raises(ConfigError, match=message):
            # a module whose variables are apart from it (a linen dataclass) checks its arguments when they are made
            r.init_variables(build(), (1, 8, 4, 4), r.default_layout)


def test_parameter_names_are_the_same_everywhere():
    """Every backend exports exactly the canonical names of the spec, for a module with every kind of parameter."""
    from attn_core import CBAMConfig
    config = CBAMConfig(24, spatial_norm=True, mlp_bias=True, spatial_bias=True)
    want = {p.name: p.shape for p in config.param_table()}
    for fw in FRAMEWORKS:
        try:
            r = runner(fw)
        except pytest.skip.Exception:
            continue
        m = r.backend().CBAM.from_config(config)
        exported = r.export_weights(m, r.init_variables(m, (1, 24, 5, 5), r.default_layout))
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
    # every argument build_layer needs after the spec is a name (in Flax, of the submodule it builds)
    needed = [p for p in list(inspect.signature(layers.build_layer).parameters.values())[1:] if p.default is p.empty]
    with pytest.raises(TypeError, match="no .* layer for the layer spec str"):
        layers.build_layer("relu", *("x" for _ in needed))


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("dtype,computed", [("float16", "float32"), ("bfloat16", "float32"), ("float32", "float32")])
def test_compute_dtype_is_attn_cores(fw, dtype, computed):
    """Half inputs compute in float32, others in their own dtype (attn_core.precision), in every backend."""
    import importlib

    from attn_core.precision import compute_dtype

    assert compute_dtype(dtype) == computed
    r = runner(fw)
    ops = importlib.import_module(f"{r.backend_package}._ops")
    got = ops.compute_dtype_of(r.tensor(np.zeros((1, 2), np.float32), dtype))
    # None, the answer of torch's and Paddle's _ops for an input computed in its own dtype, stands for it
    assert (dtype if got is None else r.dtype_name(got)) == computed
