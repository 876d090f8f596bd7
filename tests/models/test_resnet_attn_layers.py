"""ResNet's ``attn_layer`` takes every registered attention, placed as timm's ResNet places it (``self.se`` after the
last BatchNorm of each block): for each key timm has (``attn_core.TIMM_KEYS``), timm's ``ResNet(BasicBlock,
[1, 1, 1, 1], block_args=dict(attn_layer=key))`` (pytorch-image-models, ``timm.models.resnet``) with every parameter
and BatchNorm buffer drawn at random loads strictly into the project's torch ResNet of that key, and both give the
float64 reference's logits; the project's ResNet with any other key gives the reference's logits.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest

from attn_core import CBAM_PRESETS, CONFIGS, TIMM_KEYS, ConfigError, cbam_keys_from_timm
from attn_core.autodiff import Node
from attn_core.models import ResNetConfig

from .._fw import backend
from .._timm import import_timm

NUM_CLASSES = 5
SHAPE = (2, 3, 64, 64)  # stages at 16, 16, 8, 4 and 2: every map a multiple of BAT's block size 2
#: attention arguments for this small network, the same in timm (through a partial) and here
KWARGS: dict[str, dict[str, Any]] = {"bat": {"block_size": 2}, "cbam": dict(CBAM_PRESETS["timm"]),
                                     "shuffle": {"groups": 8}}  # its default 64 groups need 128 channels
#: the keys whose modules sit in the ``se`` position (SimAM has its own place; ca and sa are CBAM's halves)
KEYS = tuple(k for k in CONFIGS if k not in ("simam", "ca", "sa"))
FAST = ("se", "gc", "sk")


def _timm_attn(key: str) -> Any:
    """What timm's ResNet takes as ``attn_layer`` for ``key``: the key, or its class with this file's arguments."""
    if key not in KWARGS or key == "cbam":
        return key
    from timm.layers.create_attn import get_attn

    return functools.partial(get_attn(key), **KWARGS[key])


def _randomise(state: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Every floating entry drawn at random (variances in [0.5, 1.5]; zero-initialised layers hide bugs)."""
    out = {}
    for k, v in state.items():
        if not v.is_floating_point():
            out[k] = v.numpy()
        elif k.endswith("running_var"):
            out[k] = rng.uniform(0.5, 1.5, tuple(v.shape))
        else:
            out[k] = rng.standard_normal(tuple(v.shape)) * 0.3
    return out


@pytest.mark.parametrize("key", [pytest.param(k, marks=() if k in FAST else (pytest.mark.slow,)) for k in KEYS])
def test_resnet_with_each_attention_equals_timm_and_the_reference(key: str) -> None:
    timm = import_timm()
    backend("torch")
    import torch
    from timm.models.resnet import BasicBlock, ResNet

    from backends.torch import ResNet as ProjectResNet

    torch.manual_seed(0)
    rng = np.random.default_rng(sum(map(ord, key)))
    config = ResNetConfig("basic", (1, 1, 1, 1), num_classes=NUM_CLASSES, attn_layer=key,
                          attn_kwargs=KWARGS.get(key, {}))
    ours = ProjectResNet("basic", (1, 1, 1, 1), num_classes=NUM_CLASSES, attn_layer=key,
                         attn_kwargs=KWARGS.get(key, {})).double().eval()
    theirs = None  # a key timm does not have (srm, gct, ...) is compared with the reference alone
    if key in TIMM_KEYS:
        try:
            theirs = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=NUM_CLASSES,
                            block_args={"attn_layer": _timm_attn(key)}).double().eval()
        except TypeError:  # timm 1.0.31 cannot build GatherExcite's default (docs/modules.md): the reference alone
            pass
    if theirs is not None:
        state = _randomise(theirs.state_dict(), rng)
        theirs.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
        canonical = cbam_keys_from_timm(state) if key == "cbam" else state
    else:
        canonical = _randomise({k: v for k, v in ours.state_dict().items()}, rng)
    ours.load_state_dict({k: torch.from_numpy(v) for k, v in canonical.items()}, strict=True)

    x = rng.standard_normal(SHAPE)
    params = {p.name: Node(canonical[p.name]) for p in config.param_table()}
    want = config.reference_forward(Node(x), params, training=False).value
    scale = float(np.abs(want).max())
    with torch.no_grad():
        np.testing.assert_allclose(ours(torch.from_numpy(x)).numpy(), want, rtol=1e-9, atol=1e-9 * scale,
                                   err_msg=f"project {key}")
        if theirs is not None:
            np.testing.assert_allclose(theirs(torch.from_numpy(x)).numpy(), want, rtol=1e-9, atol=1e-9 * scale,
                                       err_msg=f"timm {key}")
    assert theirs is not None or key not in TIMM_KEYS or (key == "ge" and timm.__version__.startswith("1.0.")), key


def test_attn_layer_that_changes_the_block_shape_or_is_unknown_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"ResNet: attn_layer 'sk' must keep its input's channels and size"):
        ResNetConfig("basic", (1, 1, 1, 1), attn_layer="sk", attn_kwargs={"stride": 2})
    with pytest.raises(ConfigError, match=r"ResNet: attn_layer: create_attn: unknown attention 'nope'; known: se"):
        ResNetConfig("basic", (1, 1, 1, 1), attn_layer="nope")
