"""Weight interchange in every backend: export to canonical, strict load, nothing half-loaded."""

from __future__ import annotations

import numpy as np
import pytest

from attn_core import WeightLoadError, create_config

from .._fw import FRAMEWORKS, runner

CONFIGS = [
    ("se", 64, {}),
    ("se", 48, {"bias": False, "rd_divisor": None}),
    ("eca", 128, {}),
    ("ca", 32, {"bias": True}),
    ("sa", 8, {"norm": True, "bias": True}),
    ("cbam", 24, {"spatial_norm": True, "mlp_bias": True}),
]


def _module_and_export(fw, name, channels, kwargs):
    """(module, export() -> canonical dict, load(weights)) for a fresh module of this backend, through its runner:
    export reads the variables the last load returned (Flax's; None where the module holds its weights)."""
    r = runner(fw)
    module = r.backend().create_attn(name, channels, **kwargs)
    state = {"variables": None}

    def load(w):
        state["variables"] = r.load(module, w)[1]

    return module, (lambda: r.export_weights(module, state["variables"])), load


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("name,channels,kwargs", CONFIGS, ids=[f"{c[0]}{c[1]}" for c in CONFIGS])
def test_round_trip_is_exact(fw, name, channels, kwargs):
    config = create_config(name, channels, **kwargs)
    weights = config.init_weights(np.random.default_rng(7), dtype=np.float32)
    _, export, load = _module_and_export(fw, name, channels, kwargs)
    load(weights)
    got = export()
    assert sorted(got) == sorted(weights)
    for k, v in weights.items():
        assert got[k].shape == v.shape, k
        np.testing.assert_array_equal(np.asarray(got[k], dtype=np.float32), v, err_msg=k)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_strict_load_lists_every_problem_and_loads_nothing(fw):
    name, channels, kwargs = "cbam", 24, {"spatial_norm": True}
    config = create_config(name, channels, **kwargs)
    good = config.init_weights(np.random.default_rng(1), dtype=np.float32)
    _, export, load = _module_and_export(fw, name, channels, kwargs)
    load(good)
    bad = {k: v + 1 for k, v in good.items()}
    del bad["spatial.bn.running_var"]                      # missing
    bad["spatial.conv.bias"] = np.zeros(1, np.float32)     # unexpected (the config has no spatial bias)
    bad["channel.fc1.weight"] = np.zeros((2, 24, 3, 3), np.float32)  # wrong shape
    with pytest.raises(WeightLoadError) as exc:
        load(bad)
    err = exc.value
    assert err.missing == ["spatial.bn.running_var"]
    assert err.unexpected == ["spatial.conv.bias"]
    assert err.mismatched == [("channel.fc1.weight", (2, 24, 1, 1), (2, 24, 3, 3))]
    msg = str(err)
    assert "CBAM" in msg and "spatial.bn.running_var" in msg and "spatial.conv.bias" in msg and "(2, 24, 3, 3)" in msg
    # nothing of the bad dict was written: every value is still the good one
    after = export()
    for k, v in good.items():
        np.testing.assert_array_equal(np.asarray(after[k], dtype=np.float32), v, err_msg=k)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_integer_weights_are_rejected(fw):
    _, _, load = _module_and_export(fw, "eca", 128, {})
    with pytest.raises(WeightLoadError, match="conv.weight"):
        load({"conv.weight": np.ones((1, 1, 5), dtype=np.int64)})


def test_flax_load_casts_on_the_host_and_compiles_nothing(caplog):
    # jnp.asarray(a, dtype) compiled an XLA program per parameter shape: seconds for a ResNet-50's weights
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    from backends.flax import load_weights

    config = create_config("cbam", 24, spatial_norm=True)
    module = runner("flax").backend().create_attn("cbam", 24, spatial_norm=True)
    weights = config.init_weights(np.random.default_rng(3))  # float64, as the checkpoints convert
    with caplog.at_level("WARNING"), jax.log_compiles(True):
        half = load_weights(module, weights, dtype=jnp.bfloat16)
        single = load_weights(module, weights)
    assert not [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
    kernel = weights["channel.fc1.weight"].transpose(2, 3, 1, 0)  # torch's OIHW is Flax's HWIO
    got = half["params"]["channel"]["fc1"]["kernel"]
    assert got.dtype == jnp.bfloat16 and not got.weak_type
    np.testing.assert_array_equal(np.asarray(got), kernel.astype(jnp.bfloat16))  # NumPy's rounding, to nearest even
    assert single["params"]["channel"]["fc1"]["kernel"].dtype == np.float32
    with pytest.warns(UserWarning, match="CBAM: float64 weights need JAX's 64-bit mode"):
        assert load_weights(module, weights, dtype=jnp.float64)["params"]["channel"]["fc1"]["kernel"].dtype == \
            np.float32
