"""Model specs in attn_core: structure against published counts and hand-derived facts, reference gradients
against finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from attn_core import ConfigError, InputShapeError
from attn_core.autodiff import Node
from attn_core.models import (
    MODEL_CONFIGS,
    ECAMobileNetV2Config,
    ResNetConfig,
    SEDenseNetConfig,
    TowerNetConfig,
    create_model_config,
)


def _count(config, skip: str = "") -> int:
    return sum(int(np.prod(p.shape)) for p in config.param_table()
               if p.trainable and not (skip and skip in p.name))


# torchvision's model documentation lists these parameter counts (num_params); timm's model card: seresnet50 28.09M.
@pytest.mark.parametrize("name,params", [("resnet18", 11_689_512), ("resnet34", 21_797_672),
                                         ("resnet50", 25_557_032), ("resnet101", 44_549_160),
                                         ("seresnet50", 28_088_024)])
def test_resnet_parameter_counts_match_published(name, params):
    assert _count(create_model_config(name)) == params


def test_densenet121_and_mobilenetv2_counts_without_attention_match_torchvision():
    # torchvision densenet121: 7,978,856; mobilenet_v2: 3,504,872
    assert _count(create_model_config("sedensenet121"), skip=".se.") == 7_978_856
    eca = ECAMobileNetV2Config()
    n_eca = sum(int(np.prod(p.shape)) for p in eca.param_table() if len(p.shape) == 3)
    assert _count(eca) - n_eca == 3_504_872


def test_seresnet50_se_widths_are_timms():
    """timm SEModule: hidden = make_divisible(C / 16, 8): 256 -> 16, 512 -> 32, 1024 -> 64, 2048 -> 128."""
    shapes = create_model_config("seresnet50").param_shapes()
    assert shapes["layer1.0.se.fc1.weight"] == (16, 256, 1, 1)
    assert shapes["layer2.3.se.fc2.weight"] == (512, 32, 1, 1)
    assert shapes["layer3.5.se.fc1.bias"] == (64,)
    assert shapes["layer4.2.se.fc1.weight"] == (128, 2048, 1, 1)
    assert shapes["layer1.0.downsample.0.weight"] == (256, 64, 1, 1)   # 64 -> 256 needs a projection
    assert "layer1.1.downsample.0.weight" not in shapes
    assert shapes["fc.weight"] == (1000, 2048)


def test_resnet_attention_positions():
    cfg = create_model_config("simamresnet18")
    assert all(b.simam is not None and b.simam.channels == b.planes and b.attn is None for b in cfg.blocks)
    cfg = create_model_config("cbamresnet50")
    assert all(b.attn.spatial.norm and b.attn.channels == b.out_channels for b in cfg.blocks)
    assert [b.stride for b in cfg.blocks] == [1, 1, 1, 2, 1, 1, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1]
    with pytest.raises(ConfigError, match="attn_layer: create_attn: unknown attention 'halo'"):
        ResNetConfig("basic", (1, 1, 1, 1), attn_layer="halo")
    # any registered attention goes where timm puts it: after the last BatchNorm, under ``se``
    cfg = ResNetConfig("basic", (1, 1, 1, 1), attn_layer="ca")
    assert all(b.attn.channels == b.out_channels and b.simam is None for b in cfg.blocks)


def test_mobilenetv2_eca_kernels():
    # the authors' rule '1 if c <= 96 else 3' over the stages (16x1, 24x2, 32x3, 64x4, 96x3, 160x3, 320x1)
    assert [b.eca.k for b in ECAMobileNetV2Config().blocks] == [1] * 13 + [3] * 4
    # Eq. 9 on the output channels: 16..96 -> 3, 160 and 320 -> 5
    assert [b.eca.k for b in ECAMobileNetV2Config(eca_kernel="eq9").blocks] == [3] * 13 + [5] * 4
    blocks = ECAMobileNetV2Config().blocks
    assert [b.residual for b in blocks[:4]] == [False, False, True, False]
    assert blocks[0].eca_name == "features.1.conv.3" and blocks[1].eca_name == "features.2.conv.4"


def test_densenet_widths_by_hand():
    cfg = create_model_config("sedensenet_bc40_k12")
    # 24 + 6 * 12 = 96 -> 48; 48 + 72 = 120 -> 60; 60 + 72 = 132
    assert [t.out_channels for t in cfg.transitions] == [48, 60] and cfg.num_features == 132
    assert cfg.dense_layers[0].se.hidden == 8                            # rounded to at least 8
    with pytest.raises(ConfigError, match="hidden width is 0"):
        SEDenseNetConfig(12, (2, 2), attn_kwargs={"rd_divisor": None})   # the article's 12 // 16 = 0


def test_towernet_input_size_rule():
    cfg = TowerNetConfig()
    for ok in ((1, 3, 256, 256), (1, 3, 510, 255)):
        cfg.check_input(ok, "float32", True)
    for bad in ((1, 3, 64, 64), (1, 3, 256, 511), (1, 3, 254, 256)):  # 511 leaves b6 a 2x2 map, 254 a 0x0 one
        with pytest.raises(InputShapeError, match="from 255 to 510"):
            cfg.check_input(bad, "float32", True)
    assert len(MODEL_CONFIGS) == 42  # 20 ResNets, 3 of timm, 14 with the modules timm lacks, 5 others


def _directional_check(config, x_shape, training, seed=0, directions=2):
    """<reference gradient, v> equals the central difference of sum(y * ct) along v (params and input together)."""
    rng = np.random.default_rng(seed)
    weights = config.init_weights(rng)
    x = rng.standard_normal(x_shape)
    y0 = config.reference(weights, x, training=training)
    ct = rng.standard_normal(y0.shape)
    _, dx, dp = config.reference_vjp(weights, x, ct, training=training)
    trainable = [p.name for p in config.param_table() if p.trainable]
    for _ in range(directions):
        vx = rng.standard_normal(x.shape)
        vp = {k: rng.standard_normal(weights[k].shape) for k in trainable}
        h = 1e-8  # train-mode BatchNorm on small batches curves sharply: 1e-6 is off by 2e-4 relative

        def loss(sign, h=h, vp=vp, vx=vx):
            w = dict(weights)
            for k in trainable:
                w[k] = weights[k] + sign * h * vp[k]
            return float(np.sum(config.reference(w, x + sign * h * vx, training=training) * ct))

        fd = (loss(1) - loss(-1)) / (2 * h)
        analytic = float(np.sum(dx * vx) + sum(np.sum(dp[k] * vp[k]) for k in trainable))
        np.testing.assert_allclose(analytic, fd, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("config,shape,training", [
    (ResNetConfig("basic", (1, 1, 1, 1), num_classes=5, attn_layer="se"), (2, 3, 20, 17), True),
    (ResNetConfig("bottleneck", (1, 1, 1, 1), num_classes=5, attn_layer="cbam",
                  attn_kwargs={"spatial_norm": True}), (2, 3, 16, 16), False),
    (ResNetConfig("basic", (1, 1, 1, 1), num_classes=5, attn_layer="simam"), (2, 3, 16, 16), True),
    (SEDenseNetConfig(4, (2, 2), num_init_features=8, num_classes=5), (2, 3, 9, 8), True),
    (SEDenseNetConfig(4, (2, 1), num_init_features=8, num_classes=5, small_inputs=False), (2, 3, 19, 17), True),
    (ECAMobileNetV2Config(num_classes=5, width_mult=0.25, dropout=0.0), (2, 3, 17, 16), True),
], ids=["se-resnet-basic-train", "cbam-resnet-bottleneck-eval", "simam-resnet-train", "sedensenet-small",
        "sedensenet-imagenet-stem", "eca-mobilenetv2"])
def test_model_reference_gradients_match_finite_differences(config, shape, training):
    _directional_check(config, shape, training)


def test_towernet_reference_gradient_matches_finite_differences():
    _directional_check(TowerNetConfig(num_classes=4), (1, 3, 256, 256), False, directions=1)


def test_max_pool_gradient_goes_to_the_first_maximum():
    from attn_core import ops
    from attn_core.autodiff import backward
    x = Node(np.array([[[[1.0, 3.0], [3.0, 0.0]]]]))    # a tie between (0, 1) and (1, 0)
    y = ops.max_pool2d(x, 2, 2)
    (g,) = backward(y, np.ones((1, 1, 1, 1)), [x])
    np.testing.assert_array_equal(g, [[[[0.0, 1.0], [0.0, 0.0]]]])   # torch's choice: first in row-major order


def test_build_model_and_factories_follow_the_backend_class_table():
    """The framework-free part of every backend's create_model: a config class the table lacks is refused naming the
    backend and what it builds; the factories cover exactly the registered names whose config class it has."""
    from attn_core.models import build_model, model_factories

    class Built:
        @classmethod
        def from_config(cls, config):
            return ("built", config)

    table = {TowerNetConfig: Built}
    config = TowerNetConfig(num_classes=3)
    assert build_model(config, table, "Test") == ("built", config)
    with pytest.raises(ConfigError, match="the Test backend has no model for ResNetConfig; it builds TowerNetConfig$"):
        build_model(create_model_config("resnet18"), table, "Test")
    factories = model_factories(lambda name, **kw: (name, kw), table)
    assert list(factories) == ["towernet"]
    assert factories["towernet"](num_classes=3) == ("towernet", {"num_classes": 3})
    assert factories["towernet"].__name__ == "towernet"
    every = model_factories(lambda name, **kw: name, {ResNetConfig: Built, SEDenseNetConfig: Built,
                                                      TowerNetConfig: Built, ECAMobileNetV2Config: Built})
    assert set(every) == set(MODEL_CONFIGS)
