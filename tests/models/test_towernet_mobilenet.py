"""TowerNet (seed article 003) and ECA-MobileNetV2 in the torch, Paddle and Flax backends: parameters, structure,
constructors, input checks, dropout, ``to_static``, and the port of the article.

The numbers against the float64 reference of ``attn_core.models`` are the model cases'
(tests/models/test_model_conformance.py). The port of the article is held to seed article 003's own Paddle code
(``simam_module``, ``Inception``, ``BasicConv2d``, ``TowerNet``), re-typed as published in
benchmarks/peers/seed_paddle.py.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from attn_core import ConfigError, InputShapeError
from attn_core.frameworks import FRAMEWORK_INFO
from attn_core.models import ECAMobileNetV2Config, TowerNetConfig, create_model_config

from .._fw import FRAMEWORKS, backend, runner
from ._structure import assert_state_dict_is_the_table

TOWER_SHAPE = (1, 3, 256, 256)  # the article's input size (the reference takes about a second)
MOBILE_CLASSES = 10
MOBILE_TRAIN = dict(num_classes=MOBILE_CLASSES, width_mult=0.25, dropout=0.0)
CLASS_NAMES = {"towernet": "TowerNet", "eca_mobilenetv2": "ECAMobileNetV2"}
CONFIG_CLASSES = {"towernet": TowerNetConfig, "eca_mobilenetv2": ECAMobileNetV2Config}
STATEFUL = ("torch", "paddle")  # modules that hold their weights (Flax's are variables beside the module)


# ------------------------------------------------------------------------------------------------ helpers
def _seed(*parts: Any) -> int:
    return sum((i + 1) * sum(map(ord, str(p))) for i, p in enumerate(parts))


def _kwargs(name: str) -> dict[str, Any]:
    return {"num_classes": MOBILE_CLASSES} if name == "eca_mobilenetv2" else {}


def _case(name: str, shape: tuple[int, ...]) -> tuple[Any, dict[str, np.ndarray], np.ndarray]:
    """Config, seeded canonical float64 weights and an NCHW input whose mean is not 0."""
    config = create_model_config(name, **_kwargs(name))
    rng = np.random.default_rng(_seed(name, shape))
    return config, config.init_weights(rng), rng.standard_normal(shape) + 0.25


def _close(got: np.ndarray, want: np.ndarray, what: str, rtol: float = 1e-9) -> None:
    """Elementwise within rtol, with rtol times the array's scale as the floor for entries near 0."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(float(np.abs(want).max()), 1e-300),
                               err_msg=what)


def _nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))


# ------------------------------------------------------------------------------------------ structure and API
@pytest.mark.parametrize("fw", STATEFUL)
@pytest.mark.parametrize("name", ("towernet", "eca_mobilenetv2"))
def test_state_dict_keys_are_the_canonical_table(fw, name):
    assert_state_dict_is_the_table(fw, backend(fw).create_model(name, **_kwargs(name)),
                                   create_model_config(name, **_kwargs(name)))


@pytest.mark.parametrize("name", ("towernet", "eca_mobilenetv2"))
def test_torch_and_paddle_have_the_same_module_tree(name):
    def tree(fw: str) -> list[tuple[str, str]]:
        model = backend(fw).create_model(name, **_kwargs(name))
        items = [("", model), *runner(fw).submodules(model).items()]
        return [(n, type(m).__name__.lower()) for n, m in items]  # Conv2d / Conv2D -> conv2d

    assert tree("torch") == tree("paddle")


def test_module_trees_follow_the_specs():
    import torch

    bt = backend("torch")
    tower = bt.create_model("towernet")
    assert [type(m).__name__ for m in tower.b1[0]] == ["Conv2d", "BatchNorm2d", "ReLU"]
    assert [type(m).__name__ for m in tower.b5] == ["Inception", "MaxPool2d", "SimAM", "Inception", "MaxPool2d",
                                                    "SimAM", "Inception"]
    assert type(tower.b3[2]).__name__ == "SimAM" and tower.b3[2].config == tower.config.simam
    assert (tower.b1[0][1].eps, tower.b1[0][1].momentum) == (1e-3, 0.1)
    mobile = bt.create_model("eca_mobilenetv2", width_mult=0.5, eca_kernel="eq9")
    cfg = mobile.config
    for spec in cfg.blocks:
        block = mobile.features[int(spec.name.rpartition(".")[2])]
        assert block.use_res_connect == spec.residual, spec.name
        depthwise = block.conv[1 if spec.expand else 0][0]
        assert (depthwise.groups, depthwise.in_channels, depthwise.stride) == (spec.hidden, spec.hidden,
                                                                                (spec.stride, spec.stride))
        assert isinstance(block.conv[1 if spec.expand else 0][2], torch.nn.ReLU6)
        eca = block.get_submodule(spec.eca_name[len(spec.name) + 1:])
        assert type(eca).__name__ == "ECAModule" and eca.config == spec.eca, spec.name
    assert isinstance(mobile.classifier[0], torch.nn.Dropout) and mobile.classifier[0].p == cfg.dropout


def _config_fields(name: str) -> list[tuple[str, Any]]:
    return [(f.name, f.default) for f in dataclasses.fields(CONFIG_CLASSES[name]) if f.init]


@pytest.mark.parametrize("fw", STATEFUL)
@pytest.mark.parametrize("name", ("towernet", "eca_mobilenetv2"))
def test_constructor_arguments_are_the_configs_fields(fw, name):
    cls = getattr(backend(fw), CLASS_NAMES[name])
    got = [(p.name, p.default) for p in list(inspect.signature(cls.__init__).parameters.values())[1:]]
    assert got == _config_fields(name)


@pytest.mark.parametrize("name", ("towernet", "eca_mobilenetv2"))
def test_flax_dataclass_fields_are_the_configs_fields(name):
    """A linen module is a dataclass: its fields are the constructor (``parent`` and ``name`` are linen's own)."""
    cls = getattr(backend("flax"), CLASS_NAMES[name])
    got = [(f.name, f.default) for f in dataclasses.fields(cls) if f.init and f.name not in ("parent", "name")]
    assert got == _config_fields(name)


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("name", ("towernet", "eca_mobilenetv2"))
def test_constructor_mirrors_the_config(fw, name):
    b = backend(fw)
    cls, config_cls = getattr(b, CLASS_NAMES[name]), CONFIG_CLASSES[name]
    assert cls.__doc__ == config_cls.__doc__
    assert importlib.import_module(f"backends.{fw}.models").MODEL_CLASSES[config_cls] is cls
    assert name in b.MODELS
    if name == "towernet":
        model = cls(1, 5, e_lambda=1e-3, bn_eps=1e-4, bn_momentum=0.2)
        assert model.config == TowerNetConfig(1, 5, 1e-3, 1e-4, 0.2)
    else:
        model = cls(7, 0.5, "eq9", 0.1, 1, 1e-3, 0.2)
        assert model.config == ECAMobileNetV2Config(7, 0.5, "eq9", 0.1, 1, 1e-3, 0.2)
    assert cls.from_config(model.config).config == model.config
    assert b.create_model(name, **_kwargs(name)).config == create_model_config(name, **_kwargs(name))
    with pytest.raises(ConfigError, match="num_classes"):
        b.create_model(name, num_classes=0)


def test_flax_variables_are_the_canonical_names_split_on_dots():
    import jax
    import jax.numpy as jnp

    bf = backend("flax")
    for name, hw in (("towernet", 256), ("eca_mobilenetv2", 32)):
        model = bf.create_model(name, **_kwargs(name))
        config = model.config
        init = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, hw, hw, 3), jnp.float32))
        weights = config.init_weights(np.random.default_rng(1), dtype=np.float32)
        variables = bf.load_weights(model, weights)
        assert jax.tree_util.tree_structure(variables) == jax.tree_util.tree_structure(init), name
        assert jax.tree_util.tree_map(lambda a: a.shape, variables) == jax.tree_util.tree_map(lambda a: a.shape,
                                                                                             init), name
        got = bf.export_weights(model, variables)
        assert list(got) == [p.name for p in config.param_table()]
        for k, v in weights.items():
            np.testing.assert_array_equal(got[k], v, err_msg=k)
        if name == "towernet":
            params, stats = variables["params"], variables["batch_stats"]
            assert list(params) == ["b1", "b2", "b3", "b4", "b5", "b6"]
            assert params["b1"]["0"]["0"]["kernel"].shape == (3, 3, 3, 64)            # HWIO
            assert stats["b4"]["0"]["1"]["mean"].shape == (256,)
            assert params["b5"]["6"]["route5x5_3"]["kernel"].shape == (5, 5, 16, 32)
            assert params["b6"]["kernel"].shape == (256, 16)                          # Dense: [in, out]
        else:
            params = variables["params"]
            block = config.blocks[2]  # features.3: expansion 6, 24 -> 24 channels, residual
            dw = params["features"]["3"]["conv"]["1"]["0"]["kernel"]
            assert dw.shape == (3, 3, 1, block.hidden)                               # depthwise: 1 input each
            assert params["features"]["3"]["conv"]["4"]["conv"]["kernel"].shape == (block.eca.k, 1, 1)
            assert params["classifier"]["1"]["kernel"].shape == (config.last_channels, MOBILE_CLASSES)


# ----------------------------------------------------------------------------------------------- inputs
def _eval_forwards(fw: str, name: str, **kwargs: Any) -> Callable[[tuple[int, ...]], np.ndarray]:
    """The evaluation forward of the registered model ``name`` (seeded weights) on zeros of an NCHW shape (float32)."""
    r = runner(fw)
    config = create_model_config(name, **kwargs)
    model, variables = r.build_model(config, config.init_weights(np.random.default_rng(0), np.float32))
    return lambda shape: r.forward(model, variables, np.zeros(shape, np.float32))


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_towernet_refuses_sizes_outside_255_to_510_in_its_layout(fw):
    run = _eval_forwards(fw, "towernet")
    for shape in [(1, 3, 254, 256), (1, 3, 256, 511), (1, 3, 64, 64)]:  # given in the framework's layout
        with pytest.raises(InputShapeError, match=r"TowerNet: expected H and W from 255 to 510"):
            run(shape)


def test_flax_towernet_takes_nhwc_sizes_from_255_to_510():
    import jax
    import jax.numpy as jnp

    model = backend("flax").create_model("towernet")

    def run(shape: tuple[int, ...]) -> Any:
        return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape, jnp.float32))

    for hw in (256, 300, 510):  # NHWC accepted (abstract evaluation: nothing is computed), a 1x1 map at b6
        out = run((1, hw, 400, 3))
        assert out["params"]["b6"]["kernel"].shape == (256, 16)
    with pytest.raises(InputShapeError, match=r"expected 3 channels \(a NHWC input"):
        run((1, 3, 256, 256))  # NCHW given to Flax


def _towernet_map_before_b6(size: int) -> int:
    """H (or W) of the map that b6's flatten sees, from the spec's layers: the stride-2 3x3 conv of ``b1`` (padding
    1), six 2x2 max pools (``b1`` .. ``b4``, two in ``b5``), the 2x2 average pool."""
    (_, stem), *_ = TowerNetConfig().stages()["b1"]
    s = (size + 2 * stem.padding - stem.kernel_size) // stem.stride + 1
    pools = sum(spec == "pool" for items in TowerNetConfig().stages().values() for _, spec in items)
    assert pools == 6
    return s // 2 ** pools // 2


def test_towernet_map_is_1x1_from_255_to_510():
    assert [n for n in range(200, 600) if _towernet_map_before_b6(n) == 1] == list(range(255, 511))


# the input range is what b6 needs (its 1x1 map, above): both ends are held
def test_towernet_spec_refuses_511():
    with pytest.raises(InputShapeError, match="TowerNet: expected H and W from 255 to 510"):
        TowerNetConfig().check_input((1, 3, 511, 256), "float32", True)


def test_towernet_spec_accepts_255():
    TowerNetConfig().check_input((1, 3, 255, 256), "float32", True)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_mobilenet_input_checks(fw):
    layout = FRAMEWORK_INFO[fw].layout
    with pytest.raises(InputShapeError, match=rf"ECAMobileNetV2: expected 3 channels \(a {layout} input"):
        _eval_forwards(fw, "eca_mobilenetv2", num_classes=3, width_mult=0.25)((1, 4, 16, 16))  # 4 channels


def test_flax_mobilenet_one_value_per_channel_is_an_error_naming_the_layer():
    """A training batch of 1 at 32x32: ``features.14`` (stride 2) makes 1x1 maps, and its depthwise BatchNorm is
    the first to see one value per channel (traced only: nothing is computed)."""
    import jax
    import jax.numpy as jnp

    bf = backend("flax")
    config = ECAMobileNetV2Config(**MOBILE_TRAIN)
    model = bf.ECAMobileNetV2.from_config(config)
    variables = bf.load_weights(model, config.init_weights(np.random.default_rng(0), dtype=np.float32))
    with pytest.raises(InputShapeError, match=r"ECAMobileNetV2: features\.14\.conv\.1\.1.*more than one value"):
        jax.eval_shape(lambda v, xi: model.apply(v, xi, train=True, mutable=["batch_stats"]), variables,
                       jnp.zeros((1, 32, 32, 3), jnp.float32))
    y = jax.eval_shape(lambda v, xi: model.apply(v, xi, train=False), variables, jnp.zeros((1, 32, 32, 3)))
    assert y.shape == (1, MOBILE_CLASSES)  # evaluation takes it


def _dropout_case() -> tuple[ECAMobileNetV2Config, dict[str, np.ndarray], np.ndarray]:
    config = ECAMobileNetV2Config(num_classes=4, width_mult=0.25, dropout=0.5)
    weights = config.init_weights(np.random.default_rng(0), dtype=np.float32)
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    return config, weights, x


@pytest.mark.parametrize("fw", STATEFUL)
def test_mobilenet_dropout_acts_in_training_only(fw):
    """classifier.0 drops features in training (p = config.dropout) and is the identity in evaluation."""
    config, weights, x = _dropout_case()
    want = config.reference(weights, x)
    r = runner(fw)
    model, variables = r.build_model(config, weights)
    _close(r.forward(model, variables, x), want, f"{fw} eval", 1e-4)
    _close(r.forward(model, variables, x), want, f"{fw} eval, again", 1e-4)
    r.seed(0)
    a, variables = r.train_forward(model, variables, x)
    r.seed(1)
    assert not np.allclose(a, r.train_forward(model, variables, x)[0])


def test_flax_mobilenet_dropout_needs_an_rng_and_acts_in_training_only():
    """classifier.0 drops features in training (p = config.dropout) and is the identity in evaluation; Flax then
    needs a 'dropout' rng."""
    import flax
    import jax
    import jax.numpy as jnp

    config, weights, x = _dropout_case()
    b = backend("flax")
    model = b.ECAMobileNetV2.from_config(config)
    bf_mobile = importlib.import_module("backends.flax.mobilenetv2")
    variables = b.load_weights(model, weights)
    xx = jnp.asarray(_nhwc(x))
    # the model's evaluation output is the model cases' (test_model_conformance); compiling its training forward
    # takes half a minute on CPU, so it is traced here, and the classifier run
    with pytest.raises(flax.errors.InvalidRngError, match="dropout"):
        jax.eval_shape(lambda v, xi: model.apply(v, xi, train=True, mutable=["batch_stats"]), variables, xx)
    y, state = jax.eval_shape(lambda v, xi, k: model.apply(v, xi, train=True, mutable=["batch_stats"],
                                                           rngs={"dropout": k}), variables, xx, jax.random.key(0))
    assert y.shape == (2, 4) and set(state) == {"batch_stats"}
    classifier = bf_mobile.Classifier(config.dropout, config.head())
    head = {"params": {"1": variables["params"]["classifier"]["1"]}}
    f = jnp.asarray(np.random.default_rng(2).standard_normal((2, config.last_channels)), jnp.float32)
    _close(np.asarray(classifier.apply(head, f)), np.asarray(f) @ weights["classifier.1.weight"].T
           + weights["classifier.1.bias"], "flax classifier in evaluation", 1e-5)
    a = classifier.apply(head, f, train=True, rngs={"dropout": jax.random.key(1)})
    c = classifier.apply(head, f, train=True, rngs={"dropout": jax.random.key(2)})
    assert not np.allclose(np.asarray(a), np.asarray(c))


@pytest.mark.slow  # to_static compiles a whole network
@pytest.mark.parametrize("name", ("towernet", "eca_mobilenetv2"))
def test_paddle_to_static_gives_the_dygraph_output(name):
    """``paddle.jit.to_static`` (a dynamic batch, and dynamic H and W for the MobileNet): the input check runs on
    the static shapes and the graph computes what dygraph does."""
    import paddle

    bp = backend("paddle")
    kwargs = {} if name == "towernet" else {"num_classes": 3, "width_mult": 0.25}
    model = bp.create_model(name, **kwargs)
    model.eval()
    hw = [256, 256] if name == "towernet" else [None, None]
    x = paddle.to_tensor(np.random.default_rng(4).standard_normal((2, 3) + ((256, 256) if name == "towernet"
                                                                           else (40, 36))).astype(np.float32))
    with paddle.no_grad():
        want = model(x).numpy()
        static = paddle.jit.to_static(model, input_spec=[paddle.static.InputSpec([None, 3] + hw, "float32")],
                                      full_graph=True)
        np.testing.assert_allclose(static(x).numpy(), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


# ------------------------------------------------------------------------------- seed article 003's own code
def test_seed_article_towernet_gives_our_logits():
    """The article's own TowerNet, loaded with the canonical weights by renaming BatchNorm statistics
    (running_mean -> _mean, running_var -> _variance) and transposing the Linear weight to Paddle's [in, out],
    gives the logits of our Paddle TowerNet and of the float64 reference: our TowerNet is the article's."""
    import paddle

    bp = backend("paddle")
    from benchmarks.peers import seed_paddle

    config, weights, x = _case("towernet", TOWER_SHAPE)
    article = seed_paddle.TowerNet(3, 16)  # TowerNet(3, config_parameters['class_dim']) with class_dim 16
    ours = bp.create_model("towernet")
    assert config == ours.config == TowerNetConfig()  # the article's in_channel 3, class_dim 16, eps 1e-3
    assert list(article.state_dict()) == list(ours.state_dict())
    for (k, a), (_, o) in zip(article.state_dict().items(), ours.state_dict().items(), strict=True):
        assert tuple(a.shape) == tuple(o.shape), k
    rename = {"running_mean": "_mean", "running_var": "_variance"}
    state = {}
    for k, v in weights.items():
        module, _, leaf = k.rpartition(".")
        state[f"{module}.{rename.get(leaf, leaf)}"] = v.T if k == "b6.weight" else v
    article.to(dtype="float64")
    article.set_state_dict(state)
    article.eval()
    got_state = article.state_dict()
    for k, v in state.items():  # set_state_dict warns rather than fails on a mismatch: check it took everything
        np.testing.assert_array_equal(got_state[k].numpy(), v, err_msg=k)
    with paddle.no_grad():
        theirs = article(paddle.to_tensor(x)).numpy()
    _close(theirs, config.reference(weights, x), "the article's TowerNet vs the reference")
    ours.to(dtype="float64")
    ours = bp.load_weights(ours, weights)
    ours.eval()
    with paddle.no_grad():
        _close(ours(paddle.to_tensor(x)).numpy(), theirs, "our Paddle TowerNet vs the article's", 1e-12)
