"""The ResNet family in every backend: parameters, structure, API and weights, and parity with timm.

The numbers against the float64 reference of attn_core.models are the model cases'
(tests/models/test_model_conformance.py); parity here is with timm's own ``seresnet50`` and ``resnet50``
(pytorch-image-models, ``timm.models.resnet``).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any

import numpy as np
import pytest

from attn_core import ConfigError, InputDtypeError, InputShapeError, WeightLoadError
from attn_core.models import MODEL_CONFIGS, ResNetConfig, create_model_config

from .._fw import FRAMEWORKS, backend, runner, tensor
from .._timm import import_timm
from ._structure import assert_state_dict_is_the_table

STATEFUL = ("torch", "paddle")  # modules that hold their weights (Flax's are variables beside the module)
NUM_CLASSES = 10
MODELS = ("resnet18", "seresnet18", "ecaresnet18", "cbamresnet18", "simamresnet18", "resnet50", "seresnet50")
RESNET_NAMES = tuple(f"{a}resnet{d}" for a in ("", "se", "eca", "cbam", "simam") for d in (18, 34, 50, 101))


def _seed(*parts: Any) -> int:
    return sum((i + 1) * sum(map(ord, str(p))) for i, p in enumerate(parts))


@functools.cache
def _config(name: str) -> ResNetConfig:
    return create_model_config(name, num_classes=NUM_CLASSES)


def _model(fw: str, name: str, **kwargs: Any) -> Any:
    kwargs.setdefault("num_classes", NUM_CLASSES)
    return backend(fw).create_model(name, **kwargs)


# ------------------------------------------------------------------------------------------- structure
@pytest.mark.parametrize("fw", STATEFUL)
@pytest.mark.parametrize("name", ("resnet18", "cbamresnet18", "simamresnet18", "seresnet50", "ecaresnet50"))
def test_state_dict_keys_are_the_canonical_table(fw, name):
    assert_state_dict_is_the_table(fw, _model(fw, name), _config(name))


# each model jit-compiles its Flax init: the fast tier keeps the plain ResNet-18
@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n == "resnet18" else (pytest.mark.slow,))
                                  for n in MODELS])
def test_flax_variables_are_those_of_init_and_round_trip_exactly(name):
    import jax
    import jax.numpy as jnp

    bf = backend("flax")
    model = _model("flax", name)
    config = model.config
    init = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3), jnp.float32))
    for dtype in (np.float32, np.float64):
        weights = config.init_weights(np.random.default_rng(3), dtype=dtype)
        with jax.enable_x64(True):
            variables = bf.load_weights(model, weights, dtype=None)
            assert jax.tree_util.tree_structure(variables) == jax.tree_util.tree_structure(init)
            shapes = jax.tree_util.tree_map(lambda a: tuple(a.shape), variables)
            assert shapes == jax.tree_util.tree_map(lambda a: tuple(a.shape), init)
            got = bf.export_weights(model, variables)
        assert list(got) == list(weights)
        for k, v in weights.items():
            assert got[k].dtype == v.dtype, k
            np.testing.assert_array_equal(got[k], v, err_msg=k)
    # the canonical names are the model's; the first and last few spelt out
    names = [s.name for s in config.param_table()]
    assert names[:2] == ["conv1.weight", "bn1.weight"] and names[-2:] == ["fc.weight", "fc.bias"]


def test_flax_native_paths_are_the_canonical_names_split_on_dots():
    bf = backend("flax")
    model = _model("flax", "seresnet50")
    variables = bf.load_weights(model, model.config.init_weights(np.random.default_rng(0)))
    params, stats = variables["params"], variables["batch_stats"]
    assert sorted(params) == ["bn1", "conv1", "fc", "layer1", "layer2", "layer3", "layer4"]
    block = params["layer2"]["0"]
    assert sorted(block) == ["bn1", "bn2", "bn3", "conv1", "conv2", "conv3", "downsample", "se"]
    assert block["conv2"]["kernel"].shape == (3, 3, 128, 128)            # HWIO
    assert block["downsample"]["0"]["kernel"].shape == (1, 1, 256, 512)
    assert block["se"]["fc1"]["kernel"].shape == (1, 1, 512, 32)
    assert params["fc"]["kernel"].shape == (2048, NUM_CLASSES)           # Dense: [in, out]
    assert stats["layer4"]["2"]["bn3"]["var"].shape == (2048,)


@pytest.mark.parametrize("fw", STATEFUL)
def test_attention_sits_where_the_spec_puts_it(fw):
    b = backend(fw)
    for name, se_cls, simam in (("resnet18", None, False), ("seresnet18", "SEModule", False),
                                ("ecaresnet18", "ECAModule", False), ("cbamresnet18", "CBAM", False),
                                ("simamresnet18", None, True)):
        model = _model(fw, name)
        for spec in model.config.blocks:
            stage, _, index = spec.name.partition(".")
            block = getattr(model, stage)[int(index)]
            assert type(block).__name__ == {"basic": "BasicBlock", "bottleneck": "Bottleneck"}[spec.block]
            assert (None if block.se is None else type(block.se).__name__) == se_cls, spec.name
            assert (block.simam is not None) == simam, spec.name
            if block.se is not None:
                assert block.se.config == spec.attn
            assert (block.downsample is not None) == spec.downsample
    cbam_block = _model(fw, "cbamresnet18").layer3[0]
    assert cbam_block.se.spatial.bn is not None  # timm's CbamModule: BatchNorm after the spatial convolution
    assert isinstance(_model(fw, "resnet50").layer1[0], b.Bottleneck)


def test_torch_and_paddle_have_the_same_module_tree():
    """The same attribute names and layer kinds in both backends (the Flax port mirrors them too)."""
    def tree(fw: str) -> list[tuple[str, str]]:
        model = _model(fw, "cbamresnet50")
        items = [("", model), *runner(fw).submodules(model).items()]
        return sorted((n, type(m).__name__.lower()) for n, m in items)  # Conv2d / Conv2D -> conv2d

    assert tree("torch") == tree("paddle")


# ------------------------------------------------------------------------------------------------- the API
def _config_fields() -> list[tuple[str, Any]]:
    return [(f.name, f.default) for f in dataclasses.fields(ResNetConfig) if f.init]


@pytest.mark.parametrize("fw", STATEFUL)
def test_constructor_arguments_are_the_configs_fields(fw):
    params = list(inspect.signature(backend(fw).ResNet.__init__).parameters.values())[1:]
    got = [(p.name, dataclasses.MISSING if p.default is inspect.Parameter.empty else p.default) for p in params]
    assert got == _config_fields()


def test_flax_dataclass_fields_are_the_configs_fields():
    """A linen module is a dataclass: its fields are the constructor (``parent`` and ``name`` are linen's own)."""
    b = backend("flax")
    got = [(f.name, f.default) for f in dataclasses.fields(b.ResNet) if f.init and f.name not in ("parent", "name")]
    assert got == _config_fields()
    assert "train" in inspect.signature(b.ResNet.__call__).parameters


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_constructor_mirrors_the_config(fw):
    b = backend(fw)
    assert b.ResNet.__doc__ == ResNetConfig.__doc__
    model = b.ResNet("basic", [1, 1, 1, 1], num_classes=7, in_chans=1, attn_layer="eca", bn_eps=1e-3,
                     bn_momentum=0.2)
    assert model.config == ResNetConfig("basic", (1, 1, 1, 1), 7, 1, "eca", (), 1e-3, 0.2)
    assert b.ResNet.from_config(model.config).config == model.config


def _configured_resnet(fw: str) -> Any:
    return backend(fw).ResNet("basic", [1, 1, 1, 1], num_classes=7, in_chans=1, attn_layer="eca", bn_eps=1e-3,
                              bn_momentum=0.2)


@pytest.mark.parametrize("fw", STATEFUL)
def test_from_config_builds_the_same_state_dict(fw):
    model = _configured_resnet(fw)
    assert list(backend(fw).ResNet.from_config(model.config).state_dict()) == list(model.state_dict())


def test_torch_constructor_sets_every_batch_norm():
    bn = _configured_resnet("torch").layer2[0].bn1
    assert (bn.eps, bn.momentum) == (1e-3, 0.2)


def test_paddle_constructor_sets_every_batch_norm():
    """Paddle's momentum is the weight of the old statistic."""
    bn = _configured_resnet("paddle").layer2[0].bn1
    assert (bn._epsilon, bn._momentum) == (1e-3, pytest.approx(0.8))


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_create_model(fw):
    b = backend(fw)
    assert set(RESNET_NAMES) <= set(b.MODELS) <= set(MODEL_CONFIGS)
    model = b.MODELS["seresnet18"](num_classes=3)
    assert isinstance(model, b.ResNet) and model.config == create_model_config("seresnet18", num_classes=3)
    assert b.create_model("ecaresnet50", in_chans=1).config == create_model_config("ecaresnet50", in_chans=1)
    with pytest.raises(ConfigError, match=r"unknown model 'seresnet19'.*known: resnet18, resnet34"):
        b.create_model("seresnet19")
    with pytest.raises(ConfigError, match="num_classes"):
        b.create_model("resnet18", num_classes=0)


def test_flax_attn_kwargs_are_normalised_and_hashable():
    bf = backend("flax")
    a = bf.ResNet("basic", [2, 2, 2, 2], attn_layer="se", attn_kwargs={"rd_ratio": 0.25, "bias": False})
    b = bf.ResNet("basic", (2, 2, 2, 2), attn_layer="se", attn_kwargs=(("bias", False), ("rd_ratio", 0.25)))
    assert a.layers == (2, 2, 2, 2) and a.attn_kwargs == (("bias", False), ("rd_ratio", 0.25))
    assert a == b and hash(a) == hash(b)
    assert a.config.blocks[0].attn.hidden == 16


@pytest.mark.parametrize("fw", STATEFUL)
def test_input_checks(fw):
    b = backend(fw)
    model = _model(fw, "resnet18")
    model.eval()
    x = np.zeros((2, 4, 32, 32), np.float32)
    with pytest.raises(InputShapeError, match=r"ResNet: expected 3 channels"):
        model(tensor(fw, x))
    with pytest.raises(InputShapeError, match=r"ResNet: expected a 4-D"):
        model(tensor(fw, x[0]))
    with pytest.raises(InputDtypeError, match=r"ResNet: expected a floating-point input"):
        model(tensor(fw, np.zeros((1, 3, 8, 8), np.int64)))
    with pytest.raises(TypeError, match="ResNet"):
        model(x)
    gray = b.create_model("resnet18", num_classes=2, in_chans=1)
    gray.eval()
    assert tuple(gray(tensor(fw, np.ones((1, 1, 16, 16), np.float32))).shape) == (1, 2)


def test_flax_bad_configs_and_inputs_raise_clear_errors():
    import jax
    import jax.numpy as jnp

    bf = backend("flax")
    with pytest.raises(ConfigError, match="ResNet: block must be one of"):
        bf.ResNet("wide", (2, 2, 2, 2))
    with pytest.raises(ConfigError, match="unknown attention 'halo'"):
        bf.ResNet("basic", (2, 2, 2, 2), attn_layer="halo")
    block = _model("flax", "resnet50").config.blocks[0]
    with pytest.raises(ConfigError, match=r"BasicBlock: got a spec of a 'bottleneck' block \(layer1.0\)"):
        bf.BasicBlock(block)
    with pytest.raises(TypeError, match="Bottleneck: expected a BlockSpec, got Conv"):
        bf.Bottleneck(block.layers(1e-5, 0.1)["conv1"])
    model = _model("flax", "resnet18")
    with pytest.raises(InputShapeError, match=r"expected 3 channels \(a NHWC input"):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 3, 32, 32)))
    # in training every BatchNorm needs more than one value per channel: layer4 of a 1x32x32 input is 1x1
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    with pytest.raises(InputShapeError, match=r"ResNet: layer4\.0\.bn1: BatchNorm in training needs more than one"):
        jax.eval_shape(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]), variables,
                       jnp.zeros((1, 32, 32, 3)))
    with pytest.raises(ValueError, match="more than one value"):
        model.config.reference_vjp(model.config.init_weights(np.random.default_rng(0)), np.zeros((1, 3, 32, 32)),
                                   np.zeros((1, NUM_CLASSES)), training=True)


def test_flax_forward_features_is_the_last_stage():
    import jax
    import jax.numpy as jnp

    bf = backend("flax")
    model = _model("flax", "seresnet18")
    variables = bf.load_weights(model, model.config.init_weights(np.random.default_rng(0)))
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 33, 47, 3)), jnp.float32)
    features, y = jax.jit(lambda v, xx: (model.apply(v, xx, method="forward_features"), model.apply(v, xx)))(
        variables, x)
    assert features.shape == (2, 2, 2, model.config.num_features)
    head = variables["params"]["fc"]
    logits = jnp.mean(features, axis=(1, 2)) @ head["kernel"] + head["bias"]
    np.testing.assert_allclose(np.asarray(y), np.asarray(logits), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------- weights
@pytest.mark.parametrize("fw", STATEFUL)
@pytest.mark.parametrize("name", ("seresnet18", "cbamresnet18", "resnet50"))
def test_export_lists_exactly_the_canonical_names(fw, name):
    b = backend(fw)
    config = _config(name)
    weights = config.init_weights(np.random.default_rng(_seed("export", name)), dtype=np.float32)
    model = b.load_weights(_model(fw, name), weights)
    got = b.export_weights(model)
    assert list(got) == [p.name for p in config.param_table()]
    for k, v in weights.items():
        assert got[k].dtype == np.float32 and got[k].shape == v.shape, k
        np.testing.assert_array_equal(got[k], v, err_msg=k)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_strict_load_lists_every_problem_and_loads_nothing(fw):
    b = backend(fw)
    config = _config("seresnet18")
    good = config.init_weights(np.random.default_rng(3), dtype=np.float32)
    model = _model(fw, "seresnet18")
    loaded = b.load_weights(model, good)
    bad = {k: v + 1 for k, v in good.items()}
    del bad["layer2.0.downsample.1.running_var"]                        # missing
    bad["layer1.0.simam.weight"] = np.zeros(3, np.float32)              # unexpected
    bad["fc.weight"] = np.zeros((512, NUM_CLASSES), np.float32)         # [in, out]: Paddle's layout, not canonical
    with pytest.raises(WeightLoadError) as exc:
        b.load_weights(model, bad)
    err = exc.value
    assert err.missing == ["layer2.0.downsample.1.running_var"]
    assert err.unexpected == ["layer1.0.simam.weight"]
    assert err.mismatched == [("fc.weight", (NUM_CLASSES, 512), (512, NUM_CLASSES))]
    assert str(err).startswith("ResNet: weights do not fit; nothing was loaded.")
    if loaded is model:  # a module that holds its weights still holds the good ones
        after = b.export_weights(model)
        for k, v in good.items():
            np.testing.assert_array_equal(after[k], v, err_msg=k)


# ------------------------------------------------------------------------------------------ timm parity
@functools.cache
def _timm_model(name: str, num_classes: int) -> Any:
    """timm's model in eval mode, built once; tests that load weights into it restore timm's own afterwards."""
    timm = import_timm()
    return timm.create_model(name, pretrained=False, num_classes=num_classes).eval()


@pytest.mark.parametrize("name", ("seresnet50", "resnet50"))
def test_timm_state_dict_keys_and_shapes(name):
    backend("torch")
    for num_classes in (1000, NUM_CLASSES):
        theirs = {k: tuple(v.shape) for k, v in _timm_model(name, num_classes).state_dict().items()}
        ours = {k: tuple(v.shape) for k, v in _model("torch", name, num_classes=num_classes).state_dict().items()}
        assert ours == theirs, (sorted(set(ours) ^ set(theirs)),
                                [(k, ours[k], theirs[k]) for k in ours if k in theirs and ours[k] != theirs[k]])
        assert list(ours) == list(theirs)


@pytest.mark.slow  # full-size timm checkpoints
@pytest.mark.parametrize("name", ("seresnet50", "resnet50"))
def test_timm_checkpoints_load_both_ways_and_give_the_same_logits(name):
    import torch

    b = backend("torch")
    x = torch.tensor(np.random.default_rng(_seed("timm", name)).standard_normal((2, 3, 64, 64)), dtype=torch.float32)
    theirs = _timm_model(name, NUM_CLASSES)
    timm_state = {k: v.clone() for k, v in theirs.state_dict().items()}
    try:
        # timm -> ours (timm's own initialisation)
        ours = _model("torch", name).eval()
        ours.load_state_dict(theirs.state_dict(), strict=True)
        with torch.no_grad():
            np.testing.assert_allclose(ours(x).numpy(), theirs(x).numpy(), rtol=1e-5, atol=1e-5)
        # ours -> timm, with the project's seeded weights (no zero-initialised last BatchNorm: every path counts)
        b.load_weights(ours, _config(name).init_weights(np.random.default_rng(5), dtype=np.float32))
        theirs.load_state_dict(ours.state_dict(), strict=True)
        with torch.no_grad():
            y_ours, y_theirs = ours(x).numpy(), theirs(x).numpy()
        assert np.abs(y_theirs).max() > 1e-2  # the logits are not trivially zero
        np.testing.assert_allclose(y_ours, y_theirs, rtol=1e-5, atol=1e-5 * np.abs(y_theirs).max())
    finally:
        theirs.load_state_dict(timm_state, strict=True)
