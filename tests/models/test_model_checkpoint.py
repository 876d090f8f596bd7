"""Every backend's save_checkpoint / load_checkpoint: one canonical file, the same logits, wrong models refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from attn_core import WeightLoadError
from attn_core.checkpoint import (
    FORMAT,
    CheckpointError,
    check_checkpoint,
    checkpoint_metadata,
    describe_model,
    load_canonical,
    save_canonical,
)
from attn_core.models import MODEL_CONFIGS, create_model_config
from conformance.tolerances import tolerance_for

from .._fw import FRAMEWORKS, backend, runner


def _model(fw, name, **kwargs):
    """``create_model(name, **kwargs)`` of ``fw`` without drawing initial weights (the backend's ``skip_init``), as
    a user about to load a checkpoint builds it: every test here loads every weight next."""
    b = backend(fw)
    with b.skip_init():
        return b.create_model(name, **kwargs)


def _save(fw, path, model, weights):
    """Build ``model`` in ``fw`` holding ``weights`` and write its checkpoint."""
    r = runner(fw)
    r.save_checkpoint(path, *r.load(model, weights))


def _load(fw, path, model):
    """(canonical weights, module, variables) of ``model`` loaded from the checkpoint at ``path``."""
    r = runner(fw)
    module, variables = r.load_checkpoint(path, model)
    return r.export_weights(module, variables), module, variables


# the smallest of each family in the fast tier; the full-size checkpoints in the slow one
SMALL = ("resnet18", "seresnet18", "eca_mobilenetv2", "sedensenet_bc40_k12", "towernet")
# GAM-ResNet-50's 159 M parameters would hold about 5 GB of float32 copies across three frameworks; its grouped GAM
# layers round-trip in the module tests (tests/conformance/test_gam.py) and its ResNet in every other ResNet-50's row
TOO_LARGE = ("gamresnet50",)
# the same layers as the family's ResNet-18 or -50 row under more blocks per stage (seconds each to build three
# times); ECA-ResNet-101 stays for the two-digit block indices (layer3.22) of the names
REPEATS = ("resnet34", "seresnet34", "ecaresnet34", "cbamresnet34", "simamresnet34", "resnet101", "seresnet101",
           "cbamresnet101", "simamresnet101")


@pytest.mark.parametrize("name", [pytest.param(n, marks=[] if n in SMALL else [pytest.mark.slow])
                                  for n in MODEL_CONFIGS if n not in TOO_LARGE + REPEATS])
def test_every_model_round_trips_from_torch_to_every_backend(tmp_path, name):
    """Seeded canonical weights -> torch -> file -> Paddle and Flax: the very same canonical arrays come back."""
    config = create_model_config(name)
    weights = config.init_weights(np.random.default_rng(1), np.float32)
    path = tmp_path / f"{name}.safetensors"
    _save("torch", path, _model("torch", name), weights)
    stored, meta = load_canonical(path)
    assert meta["model"] == name and meta["framework"] == "torch" and meta["format"] == FORMAT
    assert json.loads(meta["model_kwargs"]) == {}
    for fw in FRAMEWORKS:
        got, _, _ = _load(fw, path, _model(fw, name))
        assert sorted(got) == sorted(weights), fw
        for k, v in weights.items():
            np.testing.assert_array_equal(got[k], v, err_msg=f"{fw}: {k}")


CASES = [("resnet18", {"num_classes": 10}, 32), ("eca_mobilenetv2", {"num_classes": 10}, 32),
         ("sedensenet_bc40_k12", {}, 16)]


@pytest.mark.parametrize("name,kwargs,size", [pytest.param(*c, id=c[0], marks=[] if c[0] == "resnet18"
                                                            else [pytest.mark.slow]) for c in CASES])
def test_every_pair_of_backends_gives_the_reference_logits(tmp_path, name, kwargs, size):
    config = create_model_config(name, **kwargs)
    weights = config.init_weights(np.random.default_rng(2), np.float32)
    x = np.random.default_rng(3).standard_normal((2, 3, size, size)).astype(np.float32)
    expected = config.reference(weights, x.astype(np.float64))
    tol = tolerance_for("float32")
    for src in FRAMEWORKS:
        path = tmp_path / f"from_{src}.safetensors"
        _save(src, path, _model(src, name, **kwargs), weights)
        for dst in FRAMEWORKS:
            _, model, variables = _load(dst, path, _model(dst, name, **kwargs))
            got = runner(dst).forward(model, variables, x)
            np.testing.assert_allclose(got, expected, rtol=tol.rtol, atol=tol.atol, err_msg=f"{src} -> {dst}")


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_another_models_checkpoint_is_refused_before_loading(tmp_path, fw):
    path = tmp_path / "r18.safetensors"
    config = create_model_config("resnet18", num_classes=10)
    save_canonical(path, config.init_weights(np.random.default_rng(0), np.float32),
                   checkpoint_metadata(config, "torch"))
    for other in ("resnet34", "resnet18"):  # another model, and the same with another num_classes
        with pytest.raises(CheckpointError, match=rf'holds a resnet18 {{"num_classes": 10}}, not the {other} '):
            _load(fw, path, _model(fw, other))


def test_a_checkpoint_without_metadata_is_checked_by_its_parameters(tmp_path):
    config = create_model_config("resnet18")
    weights = config.init_weights(np.random.default_rng(0), np.float32)
    with pytest.raises(CheckpointError, match="parameters of resnet18 / simamresnet18, not of this ResNet"):
        check_checkpoint(create_model_config("seresnet18"), weights, {}, "f.safetensors")
    del weights["fc.bias"]
    weights["fc.extra"] = np.zeros(3, np.float32)
    weights["conv1.weight"] = np.zeros((64, 3, 3, 3), np.float32)
    with pytest.raises(WeightLoadError) as info:
        check_checkpoint(config, weights, {}, "f.safetensors")
    text = str(info.value)
    assert "missing: fc.bias" in text and "unexpected: fc.extra" in text
    assert "conv1.weight: expected (64, 3, 7, 7), got (64, 3, 3, 3)" in text


def test_metadata_names_the_registered_model_and_its_overrides():
    assert describe_model(create_model_config("seresnet50", num_classes=10)) == ("seresnet50", {"num_classes": 10})
    assert describe_model(create_model_config("cbamresnet18")) == ("cbamresnet18", {})
    meta = checkpoint_metadata(create_model_config("eca_mobilenetv2", eca_kernel="eq9"), "paddle")
    assert meta["model"] == "eca_mobilenetv2" and json.loads(meta["model_kwargs"]) == {"eca_kernel": "eq9"}
    assert meta["framework"] == "paddle" and meta["format_version"] == "1"


def test_a_checkpoint_fits_either_execution_mode_of_the_same_model():
    """SE-DenseNet's efficient mode recomputes in the backward pass; its weights are the same model's."""
    saved = create_model_config("sedensenet_bc40_k12", efficient=True)
    weights = saved.init_weights(np.random.default_rng(0), np.float32)
    check_checkpoint(create_model_config("sedensenet_bc40_k12"), weights, checkpoint_metadata(saved, "torch"))
    with pytest.raises(CheckpointError, match="holds a sedensenet_bc40_k12"):
        check_checkpoint(create_model_config("sedensenet_bc40_k12", bn_eps=1e-3), weights,
                         checkpoint_metadata(saved, "torch"))
