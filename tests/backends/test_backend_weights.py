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


def _trainable(r, module) -> dict[str, np.ndarray]:
    table = {p.name: p.trainable for p in module.config.param_table()}
    return {k: v for k, v in r.export_weights(module, None).items() if table[k]}


@pytest.mark.parametrize("fw", ["torch", "paddle"])
def test_skip_init_builds_zero_parameters_and_then_draws_again(fw):
    r = runner(fw)
    b = r.backend()
    with b.skip_init():
        skipped = b.create_model("seresnet18", num_classes=10)
    assert all(not np.any(v) for v in _trainable(r, skipped).values())
    with pytest.raises(KeyError), b.skip_init():
        raise KeyError("inside")
    drawn = _trainable(r, b.create_model("seresnet18", num_classes=10))
    # every convolution and linear layer draws again after the block, an exception leaving it included
    assert all(np.any(v) for k, v in drawn.items() if k.endswith("conv1.weight") or k == "fc.weight")
    # and the module built without the draw computes what its loaded weights say (the float64 reference)
    config = skipped.config
    weights = config.init_weights(np.random.default_rng(3))
    x = np.random.default_rng(4).standard_normal((2, 3, 32, 32))
    module, variables = r.build_model(config, weights, "float64")
    np.testing.assert_allclose(r.forward(module, variables, x), config.reference(weights, x), rtol=1e-9, atol=1e-12)


def test_torch_skip_init_puts_back_the_very_init_functions():
    pytest.importorskip("torch")
    from torch.nn import init

    from backends.torch import skip_init

    before = {name: getattr(init, name) for name in dir(init) if name.endswith("_") and not name.startswith("_")}
    with skip_init():
        assert init.kaiming_uniform_ is not before["kaiming_uniform_"]
    assert {name: getattr(init, name) for name in before} == before


def test_paddle_skip_init_puts_back_a_global_initializer_set_before():
    pytest.importorskip("paddle")
    import paddle

    from backends.paddle import skip_init

    paddle.nn.initializer.set_global_initializer(paddle.nn.initializer.Constant(0.5))
    try:
        with skip_init():
            assert not paddle.nn.Linear(3, 2).weight.numpy().any()
        assert (paddle.nn.Linear(3, 2).weight.numpy() == 0.5).all()
    finally:
        paddle.nn.initializer.set_global_initializer(None)
    assert paddle.nn.Linear(3, 2).weight.numpy().std() > 0


def test_flax_skip_init_changes_nothing():
    r = runner("flax")
    b = r.backend()
    with b.skip_init():
        module = b.create_attn("se", 16)
    import jax
    import jax.numpy as jnp

    kernel = module.init(jax.random.key(0), jnp.ones((1, 4, 4, 16)))["params"]["fc1"]["kernel"]
    assert np.asarray(kernel).std() > 0
