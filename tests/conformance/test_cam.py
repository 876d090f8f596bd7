"""Class activation maps: attn_core.cam's NumPy pieces against torch, hand calculation and pytorch-grad-cam's
formulas; each backend's layer gradient and maps against the float64 reference (issue 15)."""

from __future__ import annotations

import numpy as np
import pytest

from attn_core import cam
from attn_core.models import create_model_config


def _model(name: str, size: int = 32, classes: int = 5, seed: int = 0
           ) -> tuple[object, dict[str, np.ndarray], np.ndarray]:
    config = create_model_config(name, num_classes=classes)
    rng = np.random.default_rng(seed)
    weights = config.init_weights(rng)
    x = rng.standard_normal((2, 3, size, size))
    return config, weights, x


# ------------------------------------------------------------------------------------- post-processing
@pytest.mark.parametrize("shape,size", [((2, 3), (7, 9)), ((4, 4), (32, 32)), ((1, 5), (3, 5)), ((3, 3), (3, 3))])
def test_resize_matches_torch_bilinear(shape: tuple[int, int], size: tuple[int, int]) -> None:
    torch = pytest.importorskip("torch")
    maps = np.random.default_rng(1).standard_normal((2, *shape))
    want = torch.nn.functional.interpolate(torch.from_numpy(maps)[:, None], size=size, mode="bilinear",
                                           align_corners=False)[:, 0].numpy()
    np.testing.assert_allclose(cam.resize_bilinear(maps, size), want, rtol=0, atol=1e-12)


def test_resize_refuses_downsampling() -> None:
    with pytest.raises(ValueError, match="only upsamples"):
        cam.resize_bilinear(np.zeros((1, 8, 8)), (4, 8))


def test_postprocess_by_hand() -> None:
    raw = np.array([[[-1.0, 0.0], [1.0, 3.0]]])
    # ReLU -> [[0, 0], [1, 3]]; min 0, max 3 -> divided by 3 + 1e-7
    np.testing.assert_allclose(cam.postprocess(raw), [[[0, 0], [1 / (3 + 1e-7), 3 / (3 + 1e-7)]]], rtol=1e-15)
    np.testing.assert_array_equal(cam.postprocess(raw, normalise=False), [[[0, 0], [1, 3]]])
    # a constant map stays 0 (min-max's eps), as pytorch-grad-cam's scale_cam_image gives
    np.testing.assert_array_equal(cam.postprocess(np.full((1, 2, 2), 5.0)), np.zeros((1, 2, 2)))
    assert cam.postprocess(raw, (4, 4)).shape == (1, 4, 4)


def test_gradcampp_weights_by_hand() -> None:
    # pytorch-grad-cam's grad_cam_plusplus.py: alpha = g^2 / (2 g^2 + sum(A) g^3 + 1e-6), 0 where g == 0,
    # weights = sum(relu(g) * alpha)
    a = np.array([[[[1.0, 2.0], [0.0, 1.0]]]])          # sum(A) = 4
    g = np.array([[[[1.0, -1.0], [0.0, 2.0]]]])
    alpha = [1 / (2 + 4 + 1e-6), 0.0, 0.0, 4 / (8 + 32 + 1e-6)]  # the -1 gradient is cut by relu(g)
    want = 1.0 * alpha[0] + 2.0 * alpha[3]
    np.testing.assert_allclose(cam.gradcampp_weights(a, g), [[want]], rtol=1e-15)
    np.testing.assert_allclose(cam.gradcam_weights(g), [[0.5]], rtol=1e-15)


def test_softmax_cotangent_is_the_probability_gradient() -> None:
    logits = np.array([[0.3, -1.2, 2.0], [1.0, 1.0, 0.0]])
    ct = cam.target_cotangent(logits, [2, 0], "softmax")

    def prob(z: np.ndarray, n: int, k: int) -> float:
        e = np.exp(z[n] - z[n].max())
        return float(e[k] / e.sum())

    h = 1e-6
    for n, k in ((0, 2), (1, 0)):
        for j in range(3):
            dz = np.zeros_like(logits)
            dz[n, j] = h
            fd = (prob(logits + dz, n, k) - prob(logits - dz, n, k)) / (2 * h)
            assert ct[n, j] == pytest.approx(fd, abs=1e-9)
    np.testing.assert_array_equal(cam.target_cotangent(logits, [2, 0]), [[0, 0, 1], [1, 0, 0]])


def test_classes_default_to_the_top_logit_and_bad_ones_are_refused() -> None:
    logits = np.array([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0]])
    assert cam.resolve_classes(logits, None) == [1, 0]
    assert cam.resolve_classes(logits, 2) == [2, 2]
    with pytest.raises(ValueError, match=r"in \[0, 3\)"):
        cam.resolve_classes(logits, 3)


# ------------------------------------------------------------------------------------- float64 reference
@pytest.mark.parametrize("name", ["resnet18", pytest.param("cbamresnet18", marks=pytest.mark.slow)])
def test_reference_gradcam_at_the_pooled_layer_is_cam_over_hw(name: str) -> None:
    # logit_k = w_k . mean_ij(A) + b_k, so dlogit_k/dA_cij = w_kc / (H W): Grad-CAM's weights are CAM's over H W
    config, weights, x = _model(name)
    cam_map = cam.reference_raw_map(config, weights, x, "cam", classes=[1, 3])
    grad_map = cam.reference_raw_map(config, weights, x, "gradcam", classes=[1, 3])
    h, w = cam_map.shape[1:]
    np.testing.assert_allclose(grad_map, cam_map / (h * w), rtol=1e-10, atol=1e-14)
    # CAM's map averaged over H, W plus the bias is the logit (Zhou et al.'s decomposition)
    logits = config.reference(weights, x)
    np.testing.assert_allclose(cam_map.mean(axis=(1, 2)) + weights["fc.bias"][[1, 3]], logits[[0, 1], [1, 3]],
                               rtol=1e-10)


def test_reference_layer_gradient_matches_finite_differences() -> None:
    config, weights, x = _model("resnet18", size=32, seed=3)
    grad, chosen = cam.reference_layer_gradient(config, weights, x[:1], "layer3.1", target="softmax")
    # perturbing layer3.1's output by d moves the target by <gradient, d>: checked through the rest of the net,
    # layer4 and the head, from the tapped activation
    from attn_core.autodiff import Node
    from attn_core.models.resnet import ResNetConfig
    assert isinstance(config, ResNetConfig)
    params = {k: Node(v) for k, v in weights.items()}

    def target(act: np.ndarray) -> float:
        z = Node(act)
        for b in config.blocks:
            if b.name.startswith("layer4"):
                z = config._block_forward(b, z, params, False)
        from attn_core import ops
        logits = config.head()(ops.mean(z, (2, 3), keepdims=False), params, "fc").value
        e = np.exp(logits[0] - logits[0].max())
        return float(e[chosen[0]] / e.sum())

    d = np.random.default_rng(4).standard_normal(grad.activation.shape)
    h = 1e-5
    fd = (target(grad.activation + h * d) - target(grad.activation - h * d)) / (2 * h)
    assert float((grad.gradient * d).sum()) == pytest.approx(fd, rel=1e-6)


def test_reference_unknown_layer_lists_the_available_ones() -> None:
    config, weights, x = _model("resnet18")
    with pytest.raises(ValueError, match=r"unknown layer 'layer9'.*available: layer1\.0, layer1\.1"):
        cam.reference_layer_gradient(config, weights, x, "layer9")
    with pytest.raises(ValueError, match="cam is defined at the pooled layer 'layer4.1' only"):
        cam.reference_raw_map(config, weights, x, "cam", layer="layer3.1")


def test_cam_layer_of_the_registered_models() -> None:
    assert cam.cam_layer(create_model_config("seresnet50")) == "layer4.2"
    assert cam.cam_layer(create_model_config("eca_mobilenetv2")) == "features.18"


# ------------------------------------------------------------------------------------- the backends
def _layer_gradient_rows() -> list[object]:
    """ResNet-18 in every backend, CBAM-ResNet-18 in torch and Paddle: Flax's float64 CBAM-ResNet-18 gradient compiles
    for half a minute, and tests/conformance/test_cam_layers.py takes Flax's gradients inside CBAM-ResNet-18."""
    slow = pytest.mark.slow
    return [pytest.param("torch", "resnet18", "layer3.1"), pytest.param("paddle", "resnet18", "layer3.1", marks=slow),
            pytest.param("flax", "resnet18", "layer3.1", marks=slow),
            pytest.param("torch", "cbamresnet18", "layer2.0", marks=slow),
            pytest.param("paddle", "cbamresnet18", "layer2.0", marks=slow)]


@pytest.mark.parametrize("fw,name,layer", _layer_gradient_rows())
def test_layer_gradient_matches_the_reference_in_float64(fw: str, name: str, layer: str) -> None:
    from tests._fw import runner as get

    runner = get(fw)
    config, weights, x = _model(name, size=40)
    ref, classes = cam.reference_layer_gradient(config, weights, x, layer, target="softmax")
    module, variables = runner.load(runner._models().model_from_config(config), weights, "float64")
    got = runner.layer_gradient(module, variables, x, layer,
                                lambda logits: cam.target_cotangent(logits, classes, "softmax"))
    for q in ("logits", "activation", "gradient"):
        want = getattr(ref, q)
        np.testing.assert_allclose(getattr(got, q), want, rtol=1e-9, atol=1e-9 * np.abs(want).max(), err_msg=q)
    with pytest.raises(ValueError, match=rf"{fw}: unknown layer 'layer9'; available: .*layer1\.0"):
        runner.layer_gradient(module, variables, x, "layer9", lambda logits: logits)


@pytest.mark.slow
def test_map_rows_pass_in_every_backend() -> None:
    from conformance.cam import CAM_MODELS, run_cam

    # every model in torch and Paddle, ResNet-18 in Flax: each Flax row jit-compiles its network's gradient for
    # seconds to a quarter of a minute (python -m conformance --cam runs every row; test_cam_gates.py and
    # test_cam_layers.py hold Flax's maps of the attention models)
    rows = run_cam(backends=["torch", "paddle"]) + run_cam(["resnet18"], ["flax"])
    assert [(r.module, r.backend) for r in rows] == [(m, fw) for m in CAM_MODELS for fw in ("torch", "paddle")] + [
        ("resnet18", "flax")]
    layers = {"resnet18": "layer4.1", "seresnet50": "layer4.2", "cbamresnet18": "layer4.1",
              "eca_mobilenetv2": "features.18"}
    for r in rows:
        assert r.status in ("pass", "skip"), (r.backend, r.message, r.comparisons)
        if r.status == "pass":
            layer = layers[r.module]
            assert [c.quantity for c in r.comparisons] == [f"map:cam@{layer}", f"map:gradcam@{layer}"]


def test_map_rows_refuse_bad_arguments() -> None:
    from conformance.cam import run_cam

    with pytest.raises(ValueError, match="unknown backend"):
        run_cam(["resnet18"], ["mxnet"])
    with pytest.raises(ValueError, match="float32 and float64, got bfloat16"):
        run_cam(["resnet18"], dtypes=["bfloat16"])


@pytest.mark.slow(reason="jit-compiles a Flax ResNet-18 map row")
def test_map_rows_catch_a_wrong_classifier_and_a_wrong_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    from conformance.cam import run_cam
    from conformance.runners import get_runner
    from tests._fw import runner as get

    torch_runner, flax_runner = get("torch"), get("flax")
    export = type(torch_runner).export_weights

    def swapped(self: object, module: object, variables: object) -> dict[str, np.ndarray]:
        weights = export(torch_runner, module, variables)
        return {**weights, "fc.weight": weights["fc.weight"][::-1]}  # the classes' rows in reverse order

    monkeypatch.setattr(type(torch_runner), "export_weights", swapped)
    def untransposed(logits: object, activation: object, gradient: object) -> cam.LayerGradient:
        return cam.LayerGradient(*(flax_runner.to_numpy(a, "float64") for a in (logits, activation, gradient)))

    # a Flax port whose activation and gradient stay NHWC: (N, H, W, C) read as NCHW
    monkeypatch.setattr(flax_runner, "_layer_result", untransposed)
    rows = {r.backend: r for r in run_cam(["resnet18"], ["torch", "flax"])}
    assert get_runner("torch") is torch_runner
    assert [c.passed for c in rows["torch"].comparisons] == [False, True]  # CAM fails, Grad-CAM does not read fc
    assert rows["torch"].status == "fail"
    assert rows["flax"].status == "error"
    assert "do not fit an NCHW activation of shape (2, 3, 2, 512)" in rows["flax"].message


def test_cam_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    from conformance.__main__ import main

    pytest.importorskip("torch")
    assert main(["--cam", "cbamresnet18", "--backends", "torch", "--dtypes", "float64", "-q"]) == 0
    assert "1 passed, 0 failed" in capsys.readouterr().out
    for argv, message in ((["--cam", "nosuch"], "unknown model 'nosuch'"),
                          (["--cam", "resnet18", "--dtypes", "float16"], "--cam runs float32 and float64")):
        with pytest.raises(SystemExit):
            main(argv)
        assert message in capsys.readouterr().err


# ------------------------------------------------------------------------------------- attention gates
def test_gate_layers_by_hand() -> None:
    assert cam.gate_layers(create_model_config("cbamresnet18"))["layer4.1.se.spatial"] == "spatial"
    assert cam.gate_layers(create_model_config("resnet18")) == {}


@pytest.mark.parametrize("fw", ["torch", pytest.param("paddle", marks=pytest.mark.slow),
                                pytest.param("flax", marks=pytest.mark.slow)])
def test_attention_maps_are_the_reference_gates_of_each_input(fw: str) -> None:
    # each gate the backend applied equals the float64 reference gate of the same module on the input it received
    from attn_core.autodiff import Node
    from attn_core.models.resnet import ResNetConfig
    from attn_core.spec import subtree
    from tests._fw import runner as get

    runner = get(fw)
    config, weights, x = _model("cbamresnet18", size=32)
    assert isinstance(config, ResNetConfig)
    module, variables = runner.load(runner._models().model_from_config(config), weights, "float64")
    gates = runner.attention_maps(module, variables, x, config)
    assert list(gates) == [f"{b.name}.se.{half}" for b in config.blocks for half in ("channel", "spatial")]
    io = runner.layer_io(module, variables, x, list(gates))
    params = {k: Node(v) for k, v in weights.items()}
    for b in config.blocks:
        assert b.attn is not None
        for half in ("channel", "spatial"):
            name = f"{b.name}.se.{half}"
            taps: dict[str, Node] = {}
            getattr(b.attn, half).reference_forward(Node(io[name][0]), subtree(params, name), False, taps)
            want = taps["gate"].value
            assert gates[name].shape == want.shape, name
            np.testing.assert_allclose(gates[name], want, rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("fw", ["torch", pytest.param("paddle", marks=pytest.mark.slow),
                                pytest.param("flax", marks=pytest.mark.slow)])  # Flax jit-compiles a network
def test_simam_gate_where_its_input_is_zero_is_the_reference_gate(fw: str) -> None:
    # conv2 of the first block zeroed for channel 0: SimAM's input there is exactly 0, where its gate
    # sigmoid(0 / (4 (0 + lambda)) + 0.5) = sigmoid(0.5) is defined and no output / input ratio could recover it
    from attn_core.autodiff import Node
    from attn_core.simam import SimAMConfig
    from tests._fw import runner as get

    runner = get(fw)
    config, weights, x = _model("simamresnet18", size=16)
    name = "layer1.0.simam"
    weights[f"{name[:-len('simam')]}conv2.weight"][0] = 0.0
    module, variables = runner.load(runner._models().model_from_config(config), weights, "float64")
    gates = runner.attention_maps(module, variables, x, config)
    assert list(gates)[0] == name and len(gates) == 8
    assert all(np.isfinite(g).all() for g in gates.values())
    inputs = runner.layer_io(module, variables, x, [name])[name][0]
    assert np.all(inputs[:, 0] == 0) and np.all(inputs[:, 1:] != 0)
    taps: dict[str, Node] = {}
    SimAMConfig(inputs.shape[1]).reference_forward(Node(inputs), {}, False, taps)
    want = taps["gate"].value
    assert gates[name].shape == want.shape == inputs.shape
    np.testing.assert_allclose(want[:, 0], 1 / (1 + np.exp(-0.5)), rtol=1e-15)
    np.testing.assert_allclose(gates[name], want, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------------------- python -m conformance.explain
def _png(path: object, size: int = 64) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y, x = np.mgrid[0:size, 0:size] / size
    plt.imsave(str(path), np.stack([x, y, 0.5 + 0.5 * np.sin(6 * x)], -1))


@pytest.mark.slow(reason="a CBAM-ResNet-18 map, its gates and three PNGs")
def test_explain_writes_the_pictures(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    from pathlib import Path

    from conformance.explain import main

    pytest.importorskip("torch")
    tmp = Path(str(tmp_path))
    _png(tmp / "img.png")
    assert main(["cbamresnet18", str(tmp / "img.png"), "--out", str(tmp / "out"), "--backends", "torch",
                 "--class", "3"]) == 0
    assert sorted(p.name for p in (tmp / "out").iterdir()) == [
        "cbamresnet18-gates.png", "cbamresnet18-gradcam-panel.png", "cbamresnet18-gradcam-torch.png"]
    assert "eval mode" in capsys.readouterr().err


@pytest.mark.parametrize("extra,message", [
    (["--layer", "layer9"], "unknown layer 'layer9'; available:"),
    (["--class", "1000"], r"in [0, 1000)"),
    (["--method", "cam", "--layer", "layer3.1"], "cam is defined at the pooled layer 'layer4.1' only"),
    (["--backends", "mxnet"], "unknown backend 'mxnet'"),
])
def test_explain_bad_input_writes_nothing(tmp_path: object, capsys: pytest.CaptureFixture[str], extra: list[str],
                                          message: str) -> None:
    from pathlib import Path

    from conformance.explain import main

    pytest.importorskip("torch")
    tmp = Path(str(tmp_path))
    _png(tmp / "img.png", 40)
    with pytest.raises(SystemExit):
        main(["resnet18", str(tmp / "img.png"), "--out", str(tmp / "out"), "--backends", "torch", *extra])
    assert message in capsys.readouterr().err
    assert not (tmp / "out").exists()


def test_explain_unreadable_image_and_wrong_size(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    from pathlib import Path

    from conformance.explain import main

    tmp = Path(str(tmp_path))
    (tmp / "bad.png").write_bytes(b"not a png")
    with pytest.raises(SystemExit):
        main(["resnet18", str(tmp / "bad.png"), "--out", str(tmp / "out")])
    assert "bad.png: not a readable image" in capsys.readouterr().err
    _png(tmp / "small.png", 40)  # TowerNet takes H and W from 255 to 510 only
    with pytest.raises(SystemExit):
        main(["towernet", str(tmp / "small.png"), "--out", str(tmp / "out"), "--backends", "torch"])
    assert "255" in capsys.readouterr().err
    assert not (tmp / "out").exists()
