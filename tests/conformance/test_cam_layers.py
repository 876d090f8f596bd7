"""Grad-CAM at an attention submodule's output, and the CAM layers of the DenseNets and TowerNet (issue 15)."""

from __future__ import annotations

import numpy as np
import pytest

from attn_core import cam
from attn_core.models import create_model_config


def _model(name: str, size: int, seed: int = 0) -> tuple[object, dict[str, np.ndarray], np.ndarray]:
    config = create_model_config(name, num_classes=4)
    rng = np.random.default_rng(seed)
    return config, config.init_weights(rng), rng.standard_normal((2, 3, size, size))


def test_reference_taps_the_attention_submodules_of_a_resnet() -> None:
    config, weights, x = _model("cbamresnet18", 32)
    names = cam.layer_names(config, weights, x)
    # each block's attention output before the block's own, in data-flow order
    assert names[:4] == ["layer1.0.se", "layer1.0", "layer1.1.se", "layer1.1"]
    config, weights, x = _model("skresnet18", 32)
    assert cam.layer_names(config, weights, x)[:2] == ["layer1.0.conv1", "layer1.0"]


def test_reference_gradcam_at_an_attention_output_by_hand() -> None:
    # SE's output feeds the block's residual sum and ReLU: where that ReLU is active, d(target)/d(se output) is
    # d(target)/d(block output), the gradient one layer further on
    config, weights, x = _model("seresnet18", 32, seed=2)
    at_se, classes = cam.reference_layer_gradient(config, weights, x, "layer4.1.se", classes=1)
    at_block, _ = cam.reference_layer_gradient(config, weights, x, "layer4.1", classes=1)
    active = at_block.activation > 0
    assert active.any() and (~active).any()
    np.testing.assert_allclose(at_se.gradient[active], at_block.gradient[active], rtol=1e-12, atol=0)
    np.testing.assert_array_equal(at_se.gradient[~active], 0.0)
    assert classes == [1, 1]


@pytest.mark.parametrize("fw", ["torch", pytest.param("paddle", marks=pytest.mark.slow(reason="a ResNet-18 VJP")),
                                pytest.param("flax", marks=pytest.mark.slow(reason="a ResNet-18 traced"))])
@pytest.mark.parametrize("name,layer", [("cbamresnet18", "layer4.1.se"), ("simamresnet18", "layer3.0.simam")])
def test_layer_gradient_at_an_attention_output_matches_the_reference(fw: str, name: str, layer: str) -> None:
    from tests._fw import runner as get

    runner = get(fw)
    config, weights, x = _model(name, 40)
    ref, classes = cam.reference_layer_gradient(config, weights, x, layer)
    module, variables = runner.load(runner._models().model_from_config(config), weights, "float64")
    got = runner.layer_gradient(module, variables, x, layer, lambda logits: cam.target_cotangent(logits, classes))
    for q in ("logits", "activation", "gradient"):
        want = getattr(ref, q)
        np.testing.assert_allclose(getattr(got, q), want, rtol=1e-9, atol=1e-9 * np.abs(want).max(), err_msg=q)
    raw = cam.raw_map("gradcam", got, classes)
    np.testing.assert_allclose(raw, cam.reference_raw_map(config, weights, x, "gradcam", layer, classes), rtol=1e-8,
                               atol=1e-10 * np.abs(raw).max())


# ------------------------------------------------------------------------------- SE-DenseNet and TowerNet
def test_densenet_and_towernet_have_a_gradcam_layer_and_no_cam() -> None:
    from attn_core.spec import ConfigError

    config, weights, x = _model("sedensenet_bc40_k12", 13)
    assert cam.cam_layer(config) == "features.norm_final"
    assert cam.methods_for(config) == ("gradcam", "gradcampp")
    assert cam.methods_for(create_model_config("resnet18")) == cam.METHODS
    assert cam.cam_layer(create_model_config("towernet")) == "b5"
    # the reference taps the last BatchNorm before its ReLU, as the backends' submodule outputs it
    grad, _ = cam.reference_layer_gradient(config, weights, x, "features.norm_final")
    assert (grad.activation < 0).any()
    with pytest.raises(ConfigError, match="cam is not defined for SEDenseNetConfig: its classifier pools relu"):
        cam.reference_raw_map(config, weights, x, "cam")
    with pytest.raises(ConfigError, match="cam is not defined for TowerNetConfig"):
        cam.classifier_weight(create_model_config("towernet"), {})


@pytest.mark.slow(reason="an SE-DenseNet-BC-40 and a TowerNet map in each framework, about 15 s each")
@pytest.mark.parametrize("model,layer", [("sedensenet_bc40_k12", "features.norm_final"), ("towernet", "b5")])
def test_densenet_and_towernet_map_rows_pass_in_every_backend(model: str, layer: str) -> None:
    from conformance.cam import run_cam

    rows = run_cam([model])
    assert [r.backend for r in rows] == ["torch", "paddle", "flax"]
    for r in rows:
        assert r.status in ("pass", "skip"), (r.backend, r.message, r.comparisons)
        if r.status == "pass":
            assert [c.quantity for c in r.comparisons] == [f"map:gradcam@{layer}"]
