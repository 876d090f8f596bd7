"""Every model port refuses, in training, a BatchNorm input with one value per channel, with the project's
InputShapeError naming the model and the layer, in all three backends (attn_core.check_batch_norm_input).

The layer each case names is worked out by hand from the strides: ResNet-18 at 32 x 32 (stem /2, max pool /2,
layer2 /2, layer3 /2) reaches layer4.0 at 2 x 2, whose strided conv1 makes 1 x 1 maps for bn1, the first BatchNorm
after it in the forward order; SE-DenseNet with the small-input stem at 4 x 4 halves twice in the transitions, so
denseblock3's first layer (norm1) sees 1 x 1 maps; ECA-MobileNetV2 at 32 x 32 is halved five times (stem and the
first blocks of stages 2, 3, 4 and 6), and features.14 (stage 6's first, stride 2) is where its depthwise
BatchNorm (conv.1.1) first sees 1 x 1 maps. Evaluation (running statistics) takes the same inputs.
"""

from __future__ import annotations

import numpy as np
import pytest

from attn_core import InputShapeError
from attn_core.models import SEDenseNetConfig, create_model_config

from .. import _fw

FWS = _fw.FRAMEWORKS

CASES = {
    "resnet18": (lambda: create_model_config("resnet18", num_classes=10), (1, 3, 32, 32), r"ResNet: layer4\.0\.bn1"),
    "sedensenet": (lambda: SEDenseNetConfig(4, (1, 1, 1), num_init_features=8, small_inputs=True, num_classes=3),
                   (1, 3, 4, 4), r"SEDenseNet: features\.denseblock3\.denselayer1\.norm1"),
    "sedensenet-efficient": (lambda: SEDenseNetConfig(4, (1, 1, 1), num_init_features=8, small_inputs=True,
                                                      num_classes=3, efficient=True),
                             (1, 3, 4, 4), r"SEDenseNet: features\.denseblock3\.denselayer1\.norm1"),
    "eca_mobilenetv2": (lambda: create_model_config("eca_mobilenetv2", num_classes=4, width_mult=0.25),
                        (1, 3, 32, 32), r"ECAMobileNetV2: features\.14\.conv\.1\.1"),
}


def _run(fw: str, config, x: np.ndarray, train: bool) -> tuple[int, ...]:
    """The output shape of a training (one step) or evaluation forward of the model of ``config`` on ``x``."""
    runner = _fw.runner(fw)
    model, variables = runner.build_model(config, config.init_weights(np.random.default_rng(1), np.float32))
    if train:
        return runner.train_forward(model, variables, x)[0].shape
    return runner.forward(model, variables, x).shape


def _params() -> list[object]:
    """Every case in every framework; in Flax, whose jax.jit compiles the whole network, only the tiny efficient
    DenseNet is in the fast tier."""
    return [pytest.param(case, fw, id=f"{case}-{fw}",
                         marks=(pytest.mark.slow,) if fw == "flax" and case != "sedensenet-efficient" else ())
            for case in sorted(CASES) for fw in FWS]


@pytest.mark.parametrize("case,fw", _params())
def test_one_value_per_channel_in_training_names_model_and_layer(fw, case):
    make, shape, where = CASES[case]
    config = make()
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    with pytest.raises(InputShapeError, match=where + r": BatchNorm in training needs more than one value per "
                                                     r"channel, got input shape \(1, "):
        _run(fw, config, x, train=True)
    assert _run(fw, config, x, train=False) == (1, config.num_classes)
