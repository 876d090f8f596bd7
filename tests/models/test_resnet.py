"""The ResNet family in the torch and Paddle backends, against the float64 reference of attn_core.models and timm.

Expected values come only from ``ResNetConfig.reference`` / ``reference_vjp`` (NumPy float64, exact VJPs) and,
for parity, from timm's own ``seresnet50`` and ``resnet50`` (pytorch-image-models, ``timm.models.resnet``).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any

import numpy as np
import pytest

from attn_core import ConfigError, InputDtypeError, InputShapeError, WeightLoadError, from_native, native_location
from attn_core.models import MODEL_CONFIGS, ResNetConfig, create_model_config

from .._fw import backend
from .._timm import import_timm

FWS = ("torch", "paddle")
NUM_CLASSES = 10
SHAPES = ((2, 3, 32, 32), (1, 3, 33, 47))  # even and odd sizes; batch 1 (layer4 is then 2x2, so BatchNorm trains)
RESNET18S = ("resnet18", "seresnet18", "ecaresnet18", "cbamresnet18", "simamresnet18")
EVAL_MODELS = RESNET18S + ("resnet50", "seresnet50")
RESNET_NAMES = tuple(f"{a}resnet{d}" for a in ("", "se", "eca", "cbam", "simam") for d in (18, 34, 50, 101))


# ------------------------------------------------------------------------------------------------ helpers
def _seed(*parts: Any) -> int:
    return sum((i + 1) * sum(map(ord, str(p))) for i, p in enumerate(parts))


@functools.lru_cache(maxsize=None)
def _config(name: str) -> ResNetConfig:
    return create_model_config(name, num_classes=NUM_CLASSES)


@functools.lru_cache(maxsize=None)
def _case(name: str, shape: tuple[int, ...]) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Canonical float64 weights, an input and an output cotangent, seeded by model and shape."""
    rng = np.random.default_rng(_seed(name, shape))
    weights = _config(name).init_weights(rng)
    x = rng.standard_normal(shape)
    cotangent = rng.standard_normal((shape[0], NUM_CLASSES))
    return weights, x, cotangent


@functools.lru_cache(maxsize=None)
def _reference_eval(name: str, shape: tuple[int, ...]) -> np.ndarray:
    weights, x, _ = _case(name, shape)
    return _config(name).reference(weights, x)


@functools.lru_cache(maxsize=None)
def _reference_train(name: str, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    weights, x, cotangent = _case(name, shape)
    return _config(name).reference_vjp(weights, x, cotangent, training=True)


def _close(got: np.ndarray, want: np.ndarray, what: str, rtol: float = 1e-9) -> None:
    """float64 agreement: elementwise within rtol, with an absolute floor of rtol times the array's scale."""
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(float(np.abs(want).max()), 1e-300),
                               err_msg=what)


def _native_key(fw: str, spec: Any) -> str:
    return ".".join(native_location(fw, spec)[1])


def _model(fw: str, name: str, **kwargs: Any) -> Any:
    kwargs.setdefault("num_classes", NUM_CLASSES)
    return backend(fw).create_model(name, **kwargs)


@functools.lru_cache(maxsize=None)
def _float64_module(fw: str, name: str) -> Any:
    model = _model(fw, name)
    if fw == "torch":
        model.double()
    else:
        model.to(dtype="float64")
    return model


def _float64_model(fw: str, name: str, weights: dict[str, np.ndarray], training: bool) -> Any:
    """The float64 model of (fw, name), built once per session: every test loads all of its weights and state
    (strictly) and starts without gradients, so no test sees what another left."""
    model = backend(fw).load_weights(_float64_module(fw, name), weights)
    for p in model.parameters():
        if fw == "torch":
            p.grad = None
        else:
            p.clear_gradient(set_to_zero=False)
    if training:
        model.train()
    else:
        model.eval()
    return model


def _input(fw: str, x: np.ndarray, requires_grad: bool = False) -> Any:
    if fw == "torch":
        import torch
        return torch.tensor(x, requires_grad=requires_grad)
    import paddle
    return paddle.to_tensor(x, stop_gradient=not requires_grad)


def _numpy(fw: str, t: Any) -> np.ndarray:
    return t.detach().cpu().numpy() if fw == "torch" else t.numpy()


def _state_keys(fw: str, model: Any) -> list[str]:
    return list(model.state_dict())


# ------------------------------------------------------------------------------------------- structure
@pytest.mark.parametrize("fw", FWS)
@pytest.mark.parametrize("name", ("resnet18", "cbamresnet18", "simamresnet18", "seresnet50", "ecaresnet50"))
def test_state_dict_keys_are_the_canonical_table(fw, name):
    config = _config(name)
    model = _model(fw, name)
    table = config.param_table()
    want = [_native_key(fw, p) for p in table]
    if fw == "torch":  # torch adds one num_batches_tracked buffer after each BatchNorm's running_var
        want = [k for p in table for k in ([_native_key(fw, p)] + (
            [p.module_path + ".num_batches_tracked"] if p.role == "bn_var" else []))]
    assert _state_keys(fw, model) == want
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for p in table:
        native = tuple(p.shape[::-1]) if (fw == "paddle" and p.role == "linear_weight") else p.shape
        assert shapes[_native_key(fw, p)] == native, p.name


@pytest.mark.parametrize("fw", FWS)
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


@pytest.mark.parametrize("fw", FWS)
def test_constructor_mirrors_the_config(fw):
    b = backend(fw)
    params = list(inspect.signature(b.ResNet.__init__).parameters.values())[1:]
    fields = [f for f in dataclasses.fields(ResNetConfig) if f.init]
    assert [p.name for p in params] == [f.name for f in fields]
    for p, f in zip(params, fields):
        want = inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default
        assert p.default == want, p.name
    assert b.ResNet.__doc__ == ResNetConfig.__doc__
    model = b.ResNet("basic", [1, 1, 1, 1], num_classes=7, in_chans=1, attn_layer="eca", bn_eps=1e-3,
                     bn_momentum=0.2)
    assert model.config == ResNetConfig("basic", (1, 1, 1, 1), 7, 1, "eca", (), 1e-3, 0.2)
    again = b.ResNet.from_config(model.config)
    assert again.config == model.config
    assert _state_keys(fw, again) == _state_keys(fw, model)
    bn = model.layer2[0].bn1
    if fw == "torch":
        assert (bn.eps, bn.momentum) == (1e-3, 0.2)
    else:
        assert (bn._epsilon, bn._momentum) == (1e-3, pytest.approx(0.8))


def test_torch_and_paddle_have_the_same_module_tree():
    """The same attribute names and layer kinds in both backends (the Flax port mirrors them too)."""
    def tree(fw: str) -> list[tuple[str, str]]:
        model = _model(fw, "cbamresnet50")
        items = model.named_modules() if fw == "torch" else model.named_sublayers(include_self=True)
        return sorted((n, type(m).__name__.lower()) for n, m in items)  # Conv2d / Conv2D -> conv2d

    backend("torch"), backend("paddle")
    assert tree("torch") == tree("paddle")


@pytest.mark.parametrize("fw", FWS)
def test_create_model(fw):
    b = backend(fw)
    assert set(RESNET_NAMES) <= set(b.MODELS) <= set(MODEL_CONFIGS)
    model = b.MODELS["seresnet18"](num_classes=3)
    assert model.config == create_model_config("seresnet18", num_classes=3)
    assert b.create_model("ecaresnet50", in_chans=1).config == create_model_config("ecaresnet50", in_chans=1)
    with pytest.raises(ConfigError, match=r"unknown model 'seresnet19'.*known: resnet18, resnet34"):
        b.create_model("seresnet19")
    with pytest.raises(ConfigError, match="num_classes"):
        b.create_model("resnet18", num_classes=0)


@pytest.mark.parametrize("fw", FWS)
def test_input_checks(fw):
    b = backend(fw)
    model = _model(fw, "resnet18")
    model.eval()
    x = np.zeros((2, 4, 32, 32), np.float32)
    with pytest.raises(InputShapeError, match=r"ResNet: expected 3 channels"):
        model(_input(fw, x))
    with pytest.raises(InputShapeError, match=r"ResNet: expected a 4-D"):
        model(_input(fw, x[0]))
    with pytest.raises(InputDtypeError, match=r"ResNet: expected a floating-point input"):
        model(_input(fw, np.zeros((1, 3, 8, 8), np.int64)))
    with pytest.raises(TypeError, match="ResNet"):
        model(x)
    gray = b.create_model("resnet18", num_classes=2, in_chans=1)
    gray.eval()
    assert tuple(gray(_input(fw, np.ones((1, 1, 16, 16), np.float32))).shape) == (1, 2)


# -------------------------------------------------------------------------------------- against the spec
@pytest.mark.parametrize("fw", FWS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", EVAL_MODELS)
def test_eval_forward_matches_reference(fw, name, shape):
    weights, x, _ = _case(name, shape)
    model = _float64_model(fw, name, weights, training=False)
    y = _numpy(fw, model(_input(fw, x)))
    _close(y, _reference_eval(name, shape), f"{fw} {name} eval output")


# Found defect, fixed: Paddle's batch_norm kernel (forward and backward) takes epsilon as a float32 attribute, 1e-5 ->
# 9.99999975e-06. In training, where a BatchNorm's batch variance is not far above eps (layer4 of a 32x32 batch of 2
# sees N*H*W = 2 values per channel), that showed in a float64 model: up to 3e-8 of the output's scale and 5e-7 of
# a gradient's. backends/paddle/_norm.BatchNorm2D computes float64 training from ops with eps in float64, and
# Paddle is held to torch's bound.


def _check_train(fw: str, name: str, shape: tuple[int, ...], rtol: float) -> None:
    weights, x, cotangent = _case(name, shape)
    config = _config(name)
    model = _float64_model(fw, name, weights, training=True)
    xt = _input(fw, x, requires_grad=True)
    y = model(xt)
    (y * _input(fw, cotangent)).sum().backward()
    y_ref, dx_ref, dparams_ref = _reference_train(name, shape)
    _close(_numpy(fw, y), y_ref, f"{fw} {name} train output", rtol)
    _close(_numpy(fw, xt.grad), dx_ref, f"{fw} {name} d/dx", rtol)
    params = {k: v for k, v in model.named_parameters() if (v.requires_grad if fw == "torch" else not v.stop_gradient)}
    trainable = [p for p in config.param_table() if p.trainable]
    assert sorted(params) == sorted(_native_key(fw, p) for p in trainable)
    for p in trainable:
        grad = params[_native_key(fw, p)].grad
        assert grad is not None, p.name
        _close(from_native(fw, p, _numpy(fw, grad)), dparams_ref[p.name], f"{fw} {name} d/d{p.name}", rtol)


@pytest.mark.parametrize("fw", FWS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", RESNET18S)
def test_train_forward_and_gradients_match_reference(fw, name, shape):
    _check_train(fw, name, shape, 1e-9)



# ----------------------------------------------------------------------------------------------- weights
@pytest.mark.parametrize("fw", FWS)
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


@pytest.mark.parametrize("fw", FWS)
def test_strict_load_lists_every_problem_and_loads_nothing(fw):
    b = backend(fw)
    config = _config("seresnet18")
    good = config.init_weights(np.random.default_rng(3), dtype=np.float32)
    model = b.load_weights(_model(fw, "seresnet18"), good)
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
    after = b.export_weights(model)
    for k, v in good.items():
        np.testing.assert_array_equal(after[k], v, err_msg=k)


# ------------------------------------------------------------------------------------------ timm parity
@functools.lru_cache(maxsize=None)
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
