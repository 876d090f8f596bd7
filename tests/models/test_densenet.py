"""SE-DenseNet in the torch, Paddle and Flax backends: parameters, constructor, weights, and the efficient mode.

The numbers against the float64 reference of attn_core.models are the model cases'
(tests/models/test_model_conformance.py, the efficient mode included). Here the efficient mode (checkpointed
bottlenecks) is held to the plain mode's numbers (bitwise in torch and Paddle) and, since a checkpoint that silently
stops checkpointing gives the same numbers (pytorch/vision issue 2221), the recomputation itself is observed: torch
and Paddle run each bottleneck twice per training step (the forward pre-hook of ``conv1``), and Flax's traced
gradient holds one ``remat`` per dense layer that recomputes ``norm1``. Sizes are tiny (growth 4, two blocks of at
most two layers, 9x7 and 21x19 inputs) to keep the file fast.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any

import numpy as np
import pytest

from attn_core import ConfigError
from attn_core.frameworks import FRAMEWORK_INFO
from attn_core.models import MODEL_CONFIGS, SEDenseNetConfig, create_model_config

from .._fw import FRAMEWORKS, backend, runner, tensor
from ._structure import assert_state_dict_is_the_table

FWS = FRAMEWORKS
STATEFUL = ("torch", "paddle")  # modules that hold their weights and submodules (Flax's are variables beside it)
NUM_CLASSES = 5
# (config, NCHW input shape): CIFAR-style stem on an odd, non-square input (the transition pools 9x7 to 4x3), and the
# ImageNet stem (7x7/2 convolution, BatchNorm, 3x3/2 max pooling) on a batch of 1 (21x19 -> 11x10 -> 6x5 -> 3x2)
CASES: dict[str, tuple[SEDenseNetConfig, tuple[int, ...]]] = {
    "small": (SEDenseNetConfig(4, (2, 2), num_init_features=8, num_classes=NUM_CLASSES), (2, 3, 9, 7)),
    "imagenet": (SEDenseNetConfig(4, (2, 1), num_init_features=8, num_classes=NUM_CLASSES, small_inputs=False),
                 (1, 3, 21, 19)),
}


# ------------------------------------------------------------------------------------------------ helpers
def _seed(*parts: Any) -> int:
    return sum((i + 1) * sum(map(ord, str(p))) for i, p in enumerate(parts))


@functools.cache
def _data(case: str) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Canonical float64 weights, an NCHW input whose mean is not 0, and an output cotangent, seeded by case."""
    config, shape = CASES[case]
    rng = np.random.default_rng(_seed("densenet", case))
    weights = config.init_weights(rng)
    x = rng.standard_normal(shape) + 0.5
    cotangent = rng.standard_normal((shape[0], NUM_CLASSES))
    return weights, x, cotangent


def _close(got: np.ndarray, want: np.ndarray, what: str, rtol: float) -> None:
    """Elementwise within rtol, with an absolute floor of rtol times the array's scale (two runs of one model)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(float(np.abs(want).max()), 1e-300),
                               err_msg=what)


def _load(fw: str, config: SEDenseNetConfig, weights: dict[str, np.ndarray], dtype: str | None = None
          ) -> tuple[Any, Any]:
    """``(module, variables)`` of ``config`` holding ``weights`` (in ``dtype``; by default the backend's)."""
    return runner(fw).load(backend(fw).SEDenseNet.from_config(config), weights, dtype)


def _count_bottlenecks(fw: str, model: Any) -> list[int]:
    """A counter of bottleneck runs: the forward pre-hook of every dense layer's ``conv1`` (torch and Paddle, whose
    modules hold their submodules). (A post-hook would miss torch's recomputation, which stops once the last tensor
    the backward needs is saved, before conv1 returns.)"""
    calls = [0]

    def hook(*_: Any) -> None:
        calls[0] += 1

    dense_layer = backend(fw).densenet.DenseLayer
    for layer in runner(fw).submodules(model).values():
        if isinstance(layer, dense_layer):
            layer.conv1.register_forward_pre_hook(hook)  # the same call in torch and Paddle
    return calls


@dataclasses.dataclass
class Step:
    """One training step's results in canonical form: output, input gradient (NCHW), parameter gradients and the
    running statistics after the step; ``calls``: bottleneck runs (when counted)."""

    y: np.ndarray
    dx: np.ndarray
    grads: dict[str, np.ndarray]
    state: dict[str, np.ndarray]
    calls: int | None = None


def _train_step(fw: str, config: SEDenseNetConfig, weights: dict[str, np.ndarray], x: np.ndarray,
                cotangent: np.ndarray, dtype: str = "float64", seed: int = 0, count: bool = False) -> Step:
    """Forward in training mode and back-propagate ``cotangent`` in the framework's default mode (framework RNG
    seeded by ``seed``, for dropout); ``count``: count the bottleneck runs (torch and Paddle)."""
    r = runner(fw)
    module, variables = _load(fw, config, weights)
    calls = _count_bottlenecks(fw, module) if count else None
    r.seed(seed)
    out = r.execute(r.wrap(module, config, {}, variables), weights, x, cotangent, dtype, training=True,
                    mode=r.default_mode)
    return Step(out.y, out.dx, out.dparams, out.state, None if calls is None else calls[0])


def _compiles(fw: str) -> bool:
    """Whether the framework's default mode compiles (jax.jit): a training step then compiles the network."""
    return FRAMEWORK_INFO[fw].default_mode == "compiled"


# ------------------------------------------------------------------------------------------- structure
@pytest.mark.parametrize("fw", STATEFUL)
@pytest.mark.parametrize("efficient", (False, True), ids=("plain", "efficient"))
def test_parameter_names_are_the_canonical_table_in_both_modes(fw, efficient):
    config = CASES["imagenet"][0].replace(efficient=efficient)
    assert_state_dict_is_the_table(fw, backend(fw).SEDenseNet.from_config(config), config)


@pytest.mark.parametrize("efficient", (False, True), ids=("plain", "efficient"))
def test_flax_variables_are_the_canonical_table_in_both_modes(efficient):
    import jax
    import jax.numpy as jnp

    config = CASES["imagenet"][0].replace(efficient=efficient)
    bf = backend("flax")
    model = bf.SEDenseNet.from_config(config)
    init = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 21, 19, 3), jnp.float32))
    loaded = bf.load_weights(model, config.init_weights(np.random.default_rng(0)))
    assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(init)
    assert (jax.tree_util.tree_map(lambda a: tuple(a.shape), loaded)
            == jax.tree_util.tree_map(lambda a: tuple(a.shape), init))
    assert sorted(init["params"]) == ["classifier", "features"]
    assert sorted(init["params"]["features"]) == ["conv0", "denseblock1", "denseblock2", "norm0", "norm_final",
                                                  "transition1"]
    layer = init["params"]["features"]["denseblock1"]["denselayer2"]
    assert sorted(layer) == ["conv1", "conv2", "norm1", "norm2", "se"]
    assert layer["conv1"]["kernel"].shape == (1, 1, 12, 16)  # HWIO: 8 + 4 channels in, bn_size * 4 out


@pytest.mark.parametrize("fw", STATEFUL)
def test_constructor_arguments_are_the_configs_fields(fw):
    fields = [f for f in dataclasses.fields(SEDenseNetConfig) if f.init]
    params = list(inspect.signature(backend(fw).SEDenseNet.__init__).parameters.values())[1:]
    assert [p.name for p in params] == [f.name for f in fields]
    for p, f in zip(params, fields, strict=True):
        assert p.default == (inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default), p.name


def test_flax_dataclass_fields_are_the_configs_fields():
    """A linen module is a dataclass: its fields are the constructor (``parent`` and ``name`` are linen's own)."""
    fields = [f for f in dataclasses.fields(SEDenseNetConfig) if f.init]
    params = [f for f in dataclasses.fields(backend("flax").SEDenseNet) if f.init and f.name not in ("parent", "name")]
    assert [p.name for p in params] == [f.name for f in fields]
    assert [p.default for p in params] == [f.default for f in fields]


@pytest.mark.parametrize("fw", FWS)
def test_constructor_mirrors_the_config_and_create_model(fw):
    b = backend(fw)
    assert b.SEDenseNet.__doc__ == SEDenseNetConfig.__doc__
    model = b.SEDenseNet(6, [1, 2], num_init_features=4, compression=0.75, efficient=True,
                         attn_kwargs={"rd_ratio": 0.5, "bias": True})
    assert model.config == SEDenseNetConfig(6, (1, 2), 4, 0.75, efficient=True,
                                            attn_kwargs=(("bias", True), ("rd_ratio", 0.5)))
    assert b.SEDenseNet.from_config(model.config).config == model.config
    assert {"sedensenet_bc100_k12", "sedensenet_bc40_k12", "sedensenet121"} <= set(b.MODELS)
    bc40 = b.create_model("sedensenet_bc40_k12", num_classes=10, efficient=True)
    assert isinstance(bc40, b.SEDenseNet)
    assert bc40.config == create_model_config("sedensenet_bc40_k12", num_classes=10, efficient=True)
    assert b.MODELS["sedensenet121"](num_classes=3).config == MODEL_CONFIGS["sedensenet121"](num_classes=3)
    # the arrays that get gradients (not Paddle's BN statistics, which are parameters too, nor Flax's batch_stats)
    module, variables = runner(fw).load(bc40, bc40.config.init_weights(np.random.default_rng(0), np.float32))
    entries = runner(fw).native_entries(module, variables).values()
    n = sum(int(np.prod(shape)) for shape, trainable in entries if trainable)
    assert n == sum(int(np.prod(p.shape)) for p in bc40.config.param_table() if p.trainable)
    with pytest.raises(ConfigError, match="compression"):
        b.create_model("sedensenet_bc40_k12", compression=0)


# ------------------------------------------------------------------------------------------- efficient mode
# the bottleneck counts: torch and Paddle modules hold their submodules, whose hooks count the runs (Flax's
# recomputation is read from its traced gradient, test_flax_gradient_recomputes_every_bottleneck)
@pytest.mark.parametrize("fw", STATEFUL)
@pytest.mark.parametrize("case", CASES)
def test_efficient_eval_runs_each_bottleneck_once(fw, case):
    """Nothing to differentiate, nothing checkpointed."""
    config, _ = CASES[case]
    weights, x, _ = _data(case)
    model, _ = _load(fw, config.replace(efficient=True), weights, "float64")
    model.eval()
    calls = _count_bottlenecks(fw, model)
    model(tensor(fw, x))
    assert calls[0] == len(config.dense_layers)


@pytest.mark.parametrize("fw", STATEFUL)
@pytest.mark.parametrize("case", CASES)
def test_efficient_training_runs_each_bottleneck_again_in_the_backward_pass(fw, case):
    config, _ = CASES[case]
    weights, x, cotangent = _data(case)
    plain, eff = (_train_step(fw, config.replace(efficient=e), weights, x, cotangent, count=True)
                  for e in (False, True))
    n = len(config.dense_layers)
    assert (plain.calls, eff.calls) == (n, 2 * n), "each bottleneck runs once, and again in the backward pass"


#: how close one float64 training step of the efficient mode is to the plain mode's: torch runs the same kernels on
#: the same values (bitwise); Paddle's float64 BatchNorm training is built from ops (backends/paddle/_norm.py), so
#: the recomputed graph's gradients accumulate in another order, and XLA fuses Flax's recomputed graph differently
#: (both equal to float64 rounding: a few ulp, 1e-11 of an entry where a small gradient cancels)
RECOMPUTED_RTOL = {"torch": 0.0, "paddle": 1e-10, "flax": 1e-10}


# Where the default mode compiles (Flax's jax.jit), the ImageNet row is left out: each mode costs an XLA
# compilation, and its layers are the small row's; the small row compiles two networks (the slow tier)
@pytest.mark.parametrize(("fw", "case"), [pytest.param(fw, c, marks=[pytest.mark.slow] if _compiles(fw) else [])
                                          for c in CASES for fw in FWS if not (_compiles(fw) and c == "imagenet")])
def test_efficient_mode_is_the_plain_mode(fw, case):
    """One float64 training step in each mode: the same output, gradients and running statistics, and the
    recomputation does not update norm1's running statistics a second time."""
    config, _ = CASES[case]
    weights, x, cotangent = _data(case)
    plain, eff = (_train_step(fw, config.replace(efficient=e), weights, x, cotangent) for e in (False, True))
    same = functools.partial(_close, rtol=RECOMPUTED_RTOL[fw])  # rtol 0: equal bit for bit
    same(eff.y, plain.y, "output")
    same(eff.dx, plain.dx, "d/dx")
    assert sorted(eff.grads) == sorted(plain.grads) == sorted(p.name for p in config.param_table() if p.trainable)
    for k in plain.grads:
        same(eff.grads[k], plain.grads[k], f"d/d{k}")
    assert sorted(eff.state) == sorted(plain.state) == sorted(p.name for p in config.param_table() if not p.trainable)
    for k in plain.state:
        same(eff.state[k], plain.state[k], k)
        if k.endswith(".running_mean"):
            assert not np.array_equal(plain.state[k], weights[k]), f"{k} was not updated"


@pytest.mark.parametrize("fw", STATEFUL)
def test_float32_with_dropout_efficient_mode_is_bitwise_the_plain_mode(fw):
    config = CASES["small"][0].replace(drop_rate=0.25)
    weights, x, cotangent = _data("small")
    weights32 = {k: v.astype(np.float32) for k, v in weights.items()}
    plain, eff = (_train_step(fw, config.replace(efficient=e), weights32, x, cotangent, "float32", seed=7,
                              count=True) for e in (False, True))
    no_drop = _train_step(fw, config.replace(drop_rate=0.0), weights32, x, cotangent, "float32")
    assert np.array_equal(plain.y.astype(np.float32), plain.y)  # computed in float32 (returned in float64)
    assert not np.array_equal(plain.y, no_drop.y)  # dropout is on
    assert eff.calls == 2 * plain.calls
    np.testing.assert_array_equal(eff.y, plain.y)
    np.testing.assert_array_equal(eff.dx, plain.dx)
    for k in plain.grads:
        np.testing.assert_array_equal(eff.grads[k], plain.grads[k], err_msg=k)
    for k in plain.state:
        np.testing.assert_array_equal(eff.state[k], plain.state[k], err_msg=k)


def _walk(jaxpr: Any) -> list[Any]:
    """Every equation of a jaxpr, those of its sub-jaxprs included."""
    eqns = []
    for eqn in jaxpr.eqns:
        eqns.append(eqn)
        for param in eqn.params.values():
            sub = getattr(param, "jaxpr", param)
            if hasattr(sub, "eqns"):
                eqns += _walk(sub)
    return eqns


def test_flax_gradient_recomputes_every_bottleneck():
    """The traced training gradient: efficient mode holds one checkpoint (jax's ``remat``) per dense layer, and
    it recomputes the bottleneck there: one more BatchNorm normalisation (``rsqrt``) per dense layer and one more
    concatenation per dense layer with more than one input than the plain mode's gradient."""
    import jax
    import jax.numpy as jnp

    bf = backend("flax")
    config, shape = CASES["small"]
    weights, x, _ = _data("small")
    counts = {}
    for eff in (False, True):
        model = bf.SEDenseNet.from_config(config.replace(efficient=eff))
        variables = bf.load_weights(model, weights)

        def grad(params: Any, xx: jax.Array, model: Any = model, variables: Any = variables) -> Any:
            def loss(p: Any) -> jax.Array:
                y, _ = model.apply({**variables, "params": p}, xx, train=True, mutable=["batch_stats"])
                return y.sum()
            return jax.grad(loss)(params)

        eqns = _walk(jax.make_jaxpr(grad)(variables["params"], jnp.asarray(np.transpose(x, (0, 2, 3, 1)),
                                                                             jnp.float32)).jaxpr)
        names = [e.primitive.name for e in eqns]
        remats = [e for e in eqns if e.primitive.name in ("remat", "remat2", "checkpoint")]
        counts[eff] = (len(remats), names.count("rsqrt"), names.count("concatenate"))
        if eff:
            assert all(e.params.get("differentiated", True) for e in remats)
    n = len(config.dense_layers)
    concatenated = sum(count - 1 for count in config.block_config)  # every layer but a block's first concatenates
    assert counts[False][0] == 0
    assert counts[True] == (n, counts[False][1] + n, counts[False][2] + concatenated)


# ----------------------------------------------------------------------------------------------- weights
@pytest.mark.parametrize("fw", FWS)
def test_export_load_round_trip_is_exact(fw):
    config = CASES["small"][0]
    for dtype in (np.float32, np.float64):
        weights = config.init_weights(np.random.default_rng(_seed("export", fw)), dtype=dtype)
        got = runner(fw).export_weights(*_load(fw, config, weights, np.dtype(dtype).name))
        assert list(got) == [p.name for p in config.param_table()]
        for k, v in weights.items():
            assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
            np.testing.assert_array_equal(got[k], v, err_msg=k)
