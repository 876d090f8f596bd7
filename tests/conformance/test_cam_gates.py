"""Attention gates of every registered module (issue 15): which modules have one, and each backend's gate against
the float64 reference's tap of the same name, from one small eval case per module."""

from __future__ import annotations

import numpy as np
import pytest

from attn_core import cam
from attn_core.registry import CONFIGS
from conformance.cases import CASES, Case

#: the registered modules whose output is their input times a gate, by hand from each module's math
GATED = ("se", "eca", "ca", "sa", "cbam", "simam", "coord", "scoord", "ela", "strip", "ese", "ecam", "ceca", "lcbam",
         "sk", "splat", "ge", "gc", "srm", "triplet", "bam", "gct", "shuffle", "psa", "gam")


def _case(key: str) -> Case:
    """The module's first eval case of the conformance suite (its smallest documented form)."""
    return next(c for c in CASES if c.module == key and not c.training)


def test_the_modules_with_gates() -> None:
    with_gates = tuple(k for k in CONFIGS if cam.module_gates(_case(k).config()))
    assert with_gates == GATED
    assert set(cam.NO_GATE) == set(CONFIGS) - set(GATED)  # every other module says why it has none
    # GlobalContext gates only with fuse_scale: timm's GlobalContextAdd (gca) adds its context
    assert cam.module_gates(CONFIGS["gc"](16, fuse_add=True, fuse_scale=False)) == {}
    for k in GATED:
        assert set(g.rpartition(".")[2] for g in cam.module_gates(_case(k).config())) <= set(cam.GATE_NAMES), k


@pytest.mark.parametrize("key", GATED)
def test_reference_gates_have_their_kinds_shape(key: str) -> None:
    case = _case(key)
    config = case.config()
    weights, x, _ = case.data(config)
    gates = cam.reference_gates(config, weights, x)
    n, c, h, w = x.shape
    c = c // 2 if key == "shuffle" else c  # each group's channel half is gated by one branch
    out = config.reference(weights, x).shape[1]
    branches = {"sk": getattr(config, "num_paths", 0), "splat": getattr(config, "radix", 0)}.get(key, 0)
    shapes = {"channel": (n, c, 1, 1), "spatial": (n, 1, h, w), "full": (n, c, h, w), "height": (n, c, h, 1),
              "width": (n, c, 1, w), "branch": (n, branches * out, 1, 1)}
    assert list(gates) == list(cam.gate_layers(config))
    for name, kind in cam.gate_layers(config).items():
        assert gates[name].shape == shapes[kind], (name, kind)


@pytest.mark.parametrize("fw", ["torch", "paddle", pytest.param("flax", marks=pytest.mark.slow(
    reason="Flax traces each module afresh: about a second a module"))])
@pytest.mark.parametrize("key", GATED)
def test_attention_maps_of_every_gated_module_are_the_reference_gates(fw: str, key: str) -> None:
    from tests._fw import runner as get

    runner = get(fw)
    case = _case(key)
    config = case.config()
    weights, x, _ = case.data(config)
    want = cam.reference_gates(config, weights, x)
    module, variables = runner.load(runner._project_module(key, config)[0], weights, "float32")
    got = runner.attention_maps(module, variables, x.astype("float32"), config)
    assert list(got) == list(want)
    for name in want:
        assert got[name].shape == want[name].shape, name
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5, err_msg=name)


#: one small ResNet per gated module kind that a registered model holds (the SK and SplitAttn convolutions too);
#: the first two, the rotated (triplet) and the branch (SplitAttn) gates, in every backend (fast in torch, about a
#: second each), the rest in torch (every module's gate is checked in every backend above)
GATED_MODELS = ("tripletresnet18", "resnest14d", "srmresnet18", "skresnet18", "psaresnet18", "bamresnet18",
                "shuffleresnet18", "sedensenet_bc40_k12", "towernet")
#: TowerNet takes H and W from 255 to 510; a CIFAR DenseNet keeps 16 x 16 to its first transition
_SIZES = {"towernet": 255, "sedensenet_bc40_k12": 16}
_SLOW = pytest.mark.slow(reason="a ResNet-18 forward with hooks and a float64 reference per gated module")


@pytest.mark.parametrize("fw,model", [pytest.param(fw, m, marks=() if fw == "torch" and i < 2 else _SLOW)
                                      for fw in ("torch", "paddle", "flax") for i, m in enumerate(GATED_MODELS)
                                      if fw == "torch" or i < 2 or m in _SIZES])
def test_attention_maps_of_models_are_each_modules_reference_gates(fw: str, model: str) -> None:
    # each gate of a whole network equals the reference gate of its module on the input that module received
    from attn_core.models import create_model_config
    from attn_core.spec import subtree
    from tests._fw import runner as get

    runner = get(fw)
    config = create_model_config(model, num_classes=3)
    rng = np.random.default_rng(5)
    weights = config.init_weights(rng)
    size = _SIZES.get(model, 32)
    x = rng.standard_normal((1, 3, size, size))
    module, variables = runner.load(runner._models().model_from_config(config), weights, "float64")
    gates = runner.attention_maps(module, variables, x, config)
    modules = cam.gated_modules(config)
    io = runner.layer_io(module, variables, x, [name for name, _ in modules])
    want = {}
    for name, attn in modules:
        for gate, value in cam.reference_gates(attn, subtree(weights, name), io[name][0]).items():
            want[cam.gate_name(name, gate)] = value
    assert list(gates) == list(want) == list(cam.gate_layers(config)) and want
    for name, value in want.items():
        np.testing.assert_allclose(gates[name], value, rtol=1e-9, atol=1e-12, err_msg=name)
