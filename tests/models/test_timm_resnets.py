"""timm's ``ecaresnet50d`` (ResNet-D: deep stem, average-pool shortcuts; ECA), ``skresnet18`` (Selective Kernel
basic blocks) and ``resnest14d`` (split-attention bottlenecks, avd) as registered models.

Fast: each parameter table is timm's ``state_dict`` (keys, order, shapes; no ``num_batches_tracked``), every
backend's state is that table, the specs' structure and refusals, the average pool against torch's, and the SK
block's float64 training row in torch and Paddle. Slow: each new block kind in a one-block-per-stage network against
the float64 reference in every backend (the suite's float64 rows, eval and training, at an odd non-square size), and
timm's own networks with every parameter and buffer at a trained network's scale (tests/_realistic.py), which load
strictly into the project's torch model and give timm's logits, and whose ``torch.save`` checkpoint converted by
``conformance.convert`` gives timm's logits in Paddle and Flax.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from typing import Any

import numpy as np
import pytest

from attn_core import ConfigError, SelectiveKernelConfig, SplitAttnConfig, to_native
from attn_core.frameworks import FRAMEWORK_INFO
from attn_core.models import AvgPool, BatchNorm, Conv, ResNetConfig, create_model_config
from attn_core.native_state import flatten_variables, native_keys
from conformance.convert import convert, verify
from conformance.model_cases import ModelCase, select_model_cases
from conformance.runners import get_runner
from conformance.suite import reference_for, reference_state_for, run_case, training_batches
from conformance.tolerances import on_scale, tolerance_for

from .._fw import FRAMEWORKS, backend
from .._realistic import realistic_weights
from .._timm import import_timm
from ._structure import assert_state_dict_is_the_table

NAMES = ("ecaresnet50d", "skresnet18", "resnest14d")
STATEFUL = ("torch", "paddle")  # modules that hold their weights (Flax's are variables beside the module)


@functools.cache
def _timm_shapes(name: str) -> list[tuple[str, tuple[int, ...]]]:
    """timm's ``state_dict`` of ``create_model(name)`` (1000 classes): (key, shape) in order, without torch's
    BatchNorm counters, which no forward pass reads."""
    timm = import_timm()
    model = timm.create_model(name, pretrained=False)
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items() if not k.endswith(".num_batches_tracked")]


# ------------------------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("name", NAMES)
def test_parameter_table_is_timms_state_dict(name):
    ours = [(p.name, p.shape) for p in create_model_config(name).param_table()]
    assert ours == _timm_shapes(name)


@pytest.mark.parametrize("fw", STATEFUL)
@pytest.mark.parametrize("name", NAMES)
def test_state_dict_is_the_parameter_table(fw, name):
    b = backend(fw)
    assert_state_dict_is_the_table(fw, b.create_model(name, num_classes=10), create_model_config(name, num_classes=10))


@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.slow] if n == "ecaresnet50d" else [])
                                  for n in NAMES])  # tracing the ResNet-50-D takes seconds
def test_flax_variables_are_the_parameter_table(name):
    import jax
    import jax.numpy as jnp

    model = backend("flax").create_model(name, num_classes=10)
    config = create_model_config(name, num_classes=10)
    init = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 27, 23, 3), jnp.float32))
    got = {k: tuple(v.shape) for k, v in flatten_variables(init).items()}
    want = {k: to_native("flax", p, np.broadcast_to(np.uint8(0), p.shape)).shape
            for k, p in native_keys("flax", config).items()}
    assert got == want


# ------------------------------------------------------------------------------------------------ specs
def test_ecaresnet50d_is_a_resnet50_d_with_eca():
    cfg = create_model_config("ecaresnet50d")
    stem = cfg.stem()
    convs = {n: (s.in_channels, s.out_channels, s.kernel_size, s.stride)
             for n, s in stem.items() if isinstance(s, Conv)}
    assert convs == {"conv1.0": (3, 32, 3, 2), "conv1.3": (32, 32, 3, 1), "conv1.6": (32, 64, 3, 1)}
    assert [n for n, s in stem.items() if s == "relu"] == ["conv1.2", "conv1.5"] and stem["bn1"].channels == 64
    assert cfg.stem_channels == 64 and cfg.num_features == 2048
    shortcuts = [b.layers(cfg.bn_eps, cfg.bn_momentum)["downsample.0"] for b in cfg.blocks if b.downsample]
    assert shortcuts[0].is_identity  # layer1.0: stride 1, 64 -> 256 channels
    assert shortcuts[1:] == [AvgPool(2, 2, ceil_mode=True, count_include_pad=False)] * 3
    # timm's EcaModule kernel: int((log2(C) + 1) / 2), made odd: 5 for 256 .. 1024 channels, 7 for 2048
    assert [b.attn.param_table()[0].shape[-1] for b in cfg.blocks if b.name.endswith(".0")] == [5, 5, 5, 7]


def test_skresnet18_blocks_are_selective_kernel_basic_blocks():
    cfg = create_model_config("skresnet18")
    sk = [b.conv for b in cfg.blocks]
    assert all(isinstance(c, SelectiveKernelConfig) and c.split_input and c.kernels == (3, 3)
               and c.dilations == (1, 2) for c in sk)
    # timm's sk_kwargs: rd_ratio 1/8 rounded to a multiple of 16, at least 16
    assert [c.attn_channels for c in sk] == [16, 16, 16, 16, 32, 32, 64, 64]
    assert [c.stride for c in sk] == [1, 1, 2, 1, 2, 1, 2, 1]
    assert cfg.stem_type == "" and not cfg.avg_down and cfg.num_features == 512


def test_resnest14d_takes_each_stride_in_an_average_pool_after_its_split_attention():
    cfg = create_model_config("resnest14d")
    assert [b.avd for b in cfg.blocks] == [None, "avd_last", "avd_last", "avd_last"]
    splat = [b.conv for b in cfg.blocks]
    assert all(isinstance(c, SplitAttnConfig) and c.stride == 1 and c.radix == 2 and c.has_norm for c in splat)
    # timm's SplitAttn: attention width make_divisible(in * radix / 4, 8, min 32)
    assert [c.attn_channels for c in splat] == [32, 64, 128, 256]
    layers = cfg.blocks[1].layers(cfg.bn_eps, cfg.bn_momentum)
    assert list(layers) == ["conv1", "bn1", "conv2", "avd_last", "conv3", "bn3", "downsample.0", "downsample.1",
                            "downsample.2"]
    assert layers["avd_last"] == AvgPool(3, 2, 1)
    first = create_model_config("resnest14d", block_args={"radix": 2, "avd": True, "avd_first": True})
    assert list(first.blocks[1].layers(1e-5, 0.1))[2:4] == ["avd_first", "conv2"]
    plain = create_model_config("resnest14d", block_args={"radix": 2})
    assert plain.blocks[1].avd is None and plain.blocks[1].conv.stride == 2


def test_the_new_fields_default_to_the_plain_resnet():
    """A 7x7 stem and strided 1x1 shortcuts, as before the ResNet-D fields: the existing models are unchanged."""
    for name in ("resnet18", "seresnet50"):
        cfg = create_model_config(name)
        assert cfg.stem() == {"conv1": Conv(3, 64, 7, 2, 3), "bn1": BatchNorm(64)}
        b = cfg.blocks[cfg.layers[0]]  # layer2.0
        layers = b.layers(cfg.bn_eps, cfg.bn_momentum)
        assert [k for k in layers if k.startswith("downsample.")] == ["downsample.0", "downsample.1"]
        assert layers["downsample.0"] == Conv(b.in_channels, b.out_channels, 1, 2)
        assert b.conv is None and b.avd is None and not b.avg_down


@pytest.mark.parametrize("kwargs,match", [
    ({"block": "resnest", "attn_layer": "se"}, "'se' does not go into 'resnest' blocks"),
    ({"block": "sk_basic", "attn_layer": "simam"}, "'simam' does not go into 'sk_basic' blocks"),
    ({"block": "basic", "block_args": {"radix": 2}}, r"block_args \['radix'\] are not arguments of 'basic' blocks; "
                                                     "they take none"),
    ({"block": "resnest", "block_args": {"rd_ratio": 0.5}}, "they take radix, avd, avd_first"),
    ({"block": "sk_basic", "block_args": {"stride": 2}}, r"block_args \['stride'\]"),
    ({"block": "resnest", "block_args": {"radix": 0}}, r"block_args\['radix'\] must be a positive integer"),
    ({"block": "resnest", "block_args": {"avd": "yes"}}, r"block_args\['avd'\] must be one of True, False"),
    ({"block": "sk_basic", "block_args": {"rd_ratio": -1}}, "layer1.0: SelectiveKernel: rd_ratio"),
    ({"block": "basic", "stem_type": "deep_tiered"}, "stem_type must be one of '', 'deep'"),
    ({"block": "basic", "stem_width": 0}, "stem_width must be a positive integer"),
    ({"block": "basic", "avg_down": "yes"}, "avg_down must be one of True, False"),
])
def test_config_errors(kwargs, match):
    kwargs = dict(kwargs)
    with pytest.raises(ConfigError, match=match):
        ResNetConfig(kwargs.pop("block"), (1, 1, 1, 1), **kwargs)


# ------------------------------------------------------------------------------------------ average pool
def _pool_by_hand(x: np.ndarray, k: int, s: int, p: int, ceil: bool, include_pad: bool) -> np.ndarray:
    """torch's AvgPool2d written out: window cells inside the input summed, divided by the window's cell count
    clipped to the input (include_pad: clipped to the padded map only)."""
    def sizes(n: int) -> list[tuple[int, int, int]]:
        out = (n + 2 * p - k + (s - 1 if ceil else 0)) // s + 1
        if ceil and (out - 1) * s >= n + p:
            out -= 1
        rows = []
        for i in range(out):
            start = i * s - p
            end = min(start + k, n + p)
            count = end - start if include_pad else min(end, n) - max(start, 0)
            rows.append((max(start, 0), min(end, n), count))
        return rows

    h, w = x.shape[2:]
    out = np.zeros(x.shape[:2] + (len(sizes(h)), len(sizes(w))))
    for i, (r0, r1, rc) in enumerate(sizes(h)):
        for j, (c0, c1, cc) in enumerate(sizes(w)):
            out[:, :, i, j] = x[:, :, r0:r1, c0:c1].sum(axis=(2, 3)) / (rc * cc)
    return out


POOLS = [AvgPool(2, 2, ceil_mode=True, count_include_pad=False), AvgPool(3, 2, 1),
         AvgPool(3, 2, 1, ceil_mode=True), AvgPool(3, 2, 1, ceil_mode=True, count_include_pad=False),
         AvgPool(2, 2), AvgPool(1, 1)]


@pytest.mark.parametrize("pool", POOLS, ids=lambda p: f"k{p.kernel_size}s{p.stride}p{p.padding}"
                         f"{'-ceil' if p.ceil_mode else ''}{'' if p.count_include_pad else '-excl'}")
def test_average_pool_reference_is_torchs(pool):
    from attn_core.autodiff import Node

    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(pool.kernel_size * 7 + pool.padding)
    for h, w in ((5, 4), (4, 7), (1, 1), (2, 3)):
        if min(pool.output_size(h), pool.output_size(w)) < 1:  # torch refuses an empty output
            continue
        x = rng.standard_normal((2, 3, h, w))
        got = pool(Node(x)).value
        np.testing.assert_allclose(got, _pool_by_hand(x, pool.kernel_size, pool.stride, pool.padding,
                                                      pool.ceil_mode, pool.count_include_pad), rtol=1e-13)
        if pool.padding * 2 <= pool.kernel_size:  # torch's own limit on the padding
            theirs = torch.nn.AvgPool2d(pool.kernel_size, pool.stride, pool.padding, ceil_mode=pool.ceil_mode,
                                        count_include_pad=pool.count_include_pad)(torch.from_numpy(x)).numpy()
            np.testing.assert_allclose(got, theirs, rtol=1e-13, atol=1e-15)
        assert got.shape[2:] == (pool.output_size(h), pool.output_size(w))


# ------------------------------------------------------------------------- each block kind, float64 rows
def _tiny(name: str, training: bool) -> ModelCase:
    """The model case of ``name`` with one block per stage (the block kind, stem and shortcuts of ``name``) at the
    odd non-square 37 x 33, where the ceil-mode shortcut pools and the avd pools meet odd maps (layer1 10 x 9 ->
    layer2 5 x 5 -> 3 x 3 -> 2 x 2) and the last BatchNorms still see 8 values per channel in training."""
    base = next(c for c in select_model_cases([name]) if c.training == training)
    shape = (2, 3, 37, 33)
    size = "n2-37x33-tiny" + ("-train" if training else "")
    return dataclasses.replace(base, case_id=size, shape=shape, spec=base.config().replace(layers=(1, 1, 1, 1)))


def _tiny_params() -> list[Any]:
    out = []
    for name in NAMES:
        for training in (False, True):
            for fw in FRAMEWORKS:
                # fast: SK-ResNet training rows in the eager frameworks; a framework whose default mode compiles
                # (jax.jit) compiles a whole network, and the bottleneck networks' float64 references take seconds
                slow = FRAMEWORK_INFO[fw].default_mode == "compiled" or not training or name != "skresnet18"
                out.append(pytest.param(name, training, fw, id=f"{name}-{'train' if training else 'eval'}-{fw}",
                                        marks=[pytest.mark.slow] if slow else []))
    return out


@functools.cache
def _tiny_reference(name: str, training: bool) -> tuple[tuple, dict[str, np.ndarray] | None]:
    case = _tiny(name, training)
    reference = reference_for(case, True, "float64")
    state = reference_state_for(case, reference[0], training_batches(case, reference[1])) if training else None
    return reference, state


@pytest.mark.parametrize("name,training,fw", _tiny_params())
def test_each_block_kind_passes_the_float64_row(name, training, fw):
    """Output, input and parameter gradients and (training) every running statistic after the case's steps, within
    the suite's float64 tolerance, in the framework's default mode."""
    backend(fw)
    runner = get_runner(fw)
    case = _tiny(name, training)
    reference, state = _tiny_reference(name, training)
    row = run_case(case, runner, "float64", reference=reference, mode=runner.default_mode, state_reference=state)
    failures = [f"{c.quantity}: {c.worst_ratio:.3g}x tolerance, {c.detail}" for c in row.comparisons if not c.passed]
    assert row.status == "pass", row.message + "\n" + "\n".join(failures[:5])
    table = case.config().param_table()
    want = {"output", "grad:input"} | {f"grad:{p.name}" for p in table if p.trainable}
    if training:
        want |= {f"state:{p.name}" for p in table if not p.trainable}
    assert {c.quantity for c in row.comparisons} == want


# ---------------------------------------------------------------------------- timm's own networks, slow
SIZE = 72  # 72 -> 36 -> 18 -> 18, 9, 5, 3: odd maps from layer3 on, where the ceil-mode pools have partial windows


@functools.cache
def _timm_realistic(name: str) -> tuple[Any, dict[str, np.ndarray], np.ndarray]:
    """(timm's ``create_model(name)`` in eval mode holding realistic canonical weights (every parameter and buffer
    drawn at a trained network's scale, logits up to 13 on the verification input), the weights, that input)."""
    import torch

    timm = import_timm()
    config = create_model_config(name)
    x = verify.input_for(config, SIZE)
    weights = realistic_weights(config, x, seed=sum(map(ord, name)))
    net = timm.create_model(name, pretrained=False).eval()
    state = net.state_dict()
    state.update({k: torch.from_numpy(v) for k, v in weights.items()})
    net.load_state_dict(state, strict=True)
    return net, weights, x


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_timms_checkpoint_loads_strictly_and_gives_timms_logits(name):
    """In float64 timm's network, the project's torch model holding timm's state_dict and the float64 reference
    agree to rounding; in float32 the project's model gives timm's logits within the suite's float32 bound."""
    torch = pytest.importorskip("torch")
    net, weights, x = _timm_realistic(name)
    ours = backend("torch").create_model(name).eval()
    ours.load_state_dict(net.state_dict(), strict=True)
    with torch.no_grad():
        theirs32 = net(torch.from_numpy(x)).numpy().astype(np.float64)
        ours32 = ours(torch.from_numpy(x)).numpy().astype(np.float64)
        theirs64 = copy.deepcopy(net).double()(torch.from_numpy(x).double()).numpy()
        ours64 = ours.double()(torch.from_numpy(x).double()).numpy()
    reference = create_model_config(name).reference(weights, x.astype(np.float64))
    assert 12.5 < np.abs(reference).max() < 13.5  # a trained network's logits, not a tolerance passing anything
    np.testing.assert_allclose(ours64, theirs64, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(theirs64, reference, rtol=1e-9, atol=1e-9)
    bound = on_scale(tolerance_for("float32"), float(np.abs(theirs32).max()))
    np.testing.assert_allclose(ours32, theirs32, rtol=bound.rtol, atol=bound.atol)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_timms_checkpoint_converts_to_paddle_and_flax_with_timms_logits(tmp_path, name):
    """timm's ``state_dict`` saved with ``torch.save``, converted by ``conformance.convert`` (which verifies the
    torch and target logits itself), read back by Paddle's and Flax's own loaders: timm's float32 logits."""
    torch = pytest.importorskip("torch")
    paddle = pytest.importorskip("paddle")
    serialization = pytest.importorskip("flax.serialization")
    net, _, x = _timm_realistic(name)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy().astype(np.float64)
    src = tmp_path / f"{name}.pth"
    torch.save(net.state_dict(), src)
    for ext in ("pdparams", "msgpack"):
        result = convert(src, tmp_path / f"{name}.{ext}", model=name, input_size=SIZE)
        assert result.difference is not None and result.difference.ok, result.verification()
    bound = on_scale(tolerance_for("float32"), float(np.abs(expected).max()))
    model = backend("paddle").create_model(name)
    model.set_state_dict(paddle.load(str(tmp_path / f"{name}.pdparams")))
    got = {"paddle": verify.logits("paddle", model, None, x)}
    fx = backend("flax").create_model(name)
    got["flax"] = verify.logits("flax", fx, serialization.msgpack_restore((tmp_path / f"{name}.msgpack").read_bytes()),
                                x)
    for fw, y in got.items():
        np.testing.assert_allclose(y, expected, rtol=bound.rtol, atol=bound.atol, err_msg=fw)
