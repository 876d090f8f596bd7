"""BatchNorm running statistics: one convention (torch's) in the reference, every backend and the suite.

- the reference update, by hand on tiny inputs;
- each backend's SpatialAttention(norm=True) and CBAM 'timm' preset after 1 and 3 training steps on different
  batches hold the reference's statistics (k steps: the reference update applied k times), and evaluate with them;
- a training batch with one value per channel is the same InputShapeError everywhere;
- the conformance rows compare ``state:<name>`` in training, in every mode, for project and wrapped modules, and
  catch ports whose statistics are wrong while their outputs and gradients are right.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from attn_core import (
    CBAM_PRESETS,
    CBAMConfig,
    InputShapeError,
    SpatialAttentionConfig,
    bn_momentum_for,
    create_config,
    ops,
)
from attn_core.autodiff import Node
from attn_core.spec import check_batch_norm_input
from conformance import compare, reference_for, run_case, tolerance_for
from conformance.runners import MODES, get_runner

from .. import _fw
from .._broken import broken_then_whole, case_named
from .._fw import FRAMEWORKS, backend

SA_TRAIN, CBAM_TRAIN = "sa/k7-bn-train", "cbam/c24-timm-train"


pytestmark = pytest.mark.usefixtures("fresh_flax_programs")


# ------------------------------------------------------------------------------------------ the reference
def _identity_sa(momentum: float = 0.1) -> tuple[SpatialAttentionConfig, dict[str, np.ndarray]]:
    """A spatial attention on one channel whose convolution passes the mean map through (weights [1, 0], k = 1):
    with C = 1 the mean and max maps are x itself, so the BatchNorm sees z = x."""
    cfg = SpatialAttentionConfig(1, kernel_size=1, norm=True, bn_momentum=momentum)
    w = {"conv.weight": np.array([1.0, 0.0]).reshape(1, 2, 1, 1), "bn.weight": np.array([2.0]),
         "bn.bias": np.array([0.25]), "bn.running_mean": np.array([1.0]), "bn.running_var": np.array([2.0])}
    return cfg, w


def test_reference_update_by_hand():
    cfg, w = _identity_sa(momentum=0.25)
    x = np.array([1.0, 2.0, 6.0]).reshape(1, 1, 1, 3)
    # z = [1, 2, 6]: count 3, mean 3, biased variance (4 + 1 + 9) / 3 = 14/3, unbiased 14/2 = 7
    # mean <- 0.75 * 1 + 0.25 * 3 = 1.5;  var <- 0.75 * 2 + 0.25 * 7 = 3.25 (with the biased 14/3 it would be 8/3)
    state = cfg.reference_state(w, x)
    assert set(state) == {"bn.running_mean", "bn.running_var"}
    np.testing.assert_allclose(state["bn.running_mean"], [1.5], rtol=1e-15)
    np.testing.assert_allclose(state["bn.running_var"], [3.25], rtol=1e-15)
    # the inputs are left as they were
    assert w["bn.running_mean"][0] == 1.0 and w["bn.running_var"][0] == 2.0


def test_reference_update_two_channels_of_the_spatial_map_by_hand():
    # SpatialAttention(2, k=1, conv [1, -0.5]) on x (1, 2, 1, 2) = channels [1, 2] and [3, -1]:
    # mean map [2, 0.5], max map [3, 2], z = [2 - 1.5, 0.5 - 1] = [0.5, -0.5]: mean 0, biased var 0.25, count 2,
    # unbiased 0.5. Default momentum 0.1: mean <- 0.9 * 0.5 + 0 = 0.45, var <- 0.9 * 3 + 0.1 * 0.5 = 2.75.
    cfg = SpatialAttentionConfig(2, kernel_size=1, norm=True)
    w = {"conv.weight": np.array([1.0, -0.5]).reshape(1, 2, 1, 1), "bn.weight": np.array([2.0]),
         "bn.bias": np.array([0.25]), "bn.running_mean": np.array([0.5]), "bn.running_var": np.array([3.0])}
    x = np.array([[[[1.0, 2.0]], [[3.0, -1.0]]]])
    state = cfg.reference_state(w, x)
    np.testing.assert_allclose(state["bn.running_mean"], [0.45], rtol=1e-15)
    np.testing.assert_allclose(state["bn.running_var"], [2.75], rtol=1e-15)


def test_ops_record_batch_stats_and_update():
    x = Node(np.array([1.0, 2.0, 6.0, -1.0, -1.0, 5.0]).reshape(1, 2, 1, 3))  # two channels, count 3
    rm, rv = Node(np.array([0.0, 10.0])), Node(np.array([1.0, 4.0]))
    one, zero = Node(np.ones(2)), Node(np.zeros(2))
    assert ops.batch_norm(x, one, zero, rm, rv, training=True, eps=1e-5, momentum=0.5) is not None  # not recorded
    with ops.record_batch_stats() as seen:
        ops.batch_norm(x, one, zero, rm, rv, training=True, eps=1e-5, momentum=0.5)
        ops.batch_norm(x, one, zero, rm, rv, training=False, eps=1e-5, momentum=0.5)  # eval: nothing to record
    assert len(seen) == 1 and seen[0].running_mean is rm and seen[0].running_var is rv and seen[0].count == 3
    # channel 0: [1, 2, 6] mean 3, biased var 14/3; channel 1: [-1, -1, 5] mean 1, biased var (4 + 4 + 16) / 3 = 8
    np.testing.assert_allclose(seen[0].mean, [3.0, 1.0], rtol=1e-15)
    np.testing.assert_allclose(seen[0].var, [14 / 3, 8.0], rtol=1e-15)
    mean, var = ops.running_stats_update(rm.value, rv.value, seen[0], 0.5)
    # unbiased [7, 12]: mean 0.5 * [0, 10] + 0.5 * [3, 1] = [1.5, 5.5]; var 0.5 * [1, 4] + 0.5 * [7, 12] = [4, 8]
    np.testing.assert_allclose(mean, [1.5, 5.5], rtol=1e-15)
    np.testing.assert_allclose(var, [4.0, 8.0], rtol=1e-15)


def test_reference_state_of_cbam_and_of_modules_without_batch_norm():
    cfg = CBAMConfig(8, **CBAM_PRESETS["timm"])
    w = cfg.init_weights(np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((2, 8, 3, 4)) + 0.5
    state = cfg.reference_state(w, x)
    assert set(state) == {"spatial.bn.running_mean", "spatial.bn.running_var"}
    # the same as the spatial attention's own update on the channel attention's output
    sa_w = {k[len("spatial."):]: v for k, v in w.items() if k.startswith("spatial.")}
    ca_w = {k[len("channel."):]: v for k, v in w.items() if k.startswith("channel.")}
    x1 = cfg.channel.reference(ca_w, x, training=True)
    want = cfg.spatial.reference_state(sa_w, x1)
    np.testing.assert_allclose(state["spatial.bn.running_mean"], want["bn.running_mean"], rtol=1e-15)
    np.testing.assert_allclose(state["spatial.bn.running_var"], want["bn.running_var"], rtol=1e-15)
    assert CBAMConfig(8).reference_state(CBAMConfig(8).init_weights(np.random.default_rng(0)), x) == {}


# ------------------------------------------------------------------------------------- backends, k steps
CONFIGS = {
    "sa": lambda: SpatialAttentionConfig(5, kernel_size=3, norm=True),
    "cbam-timm": lambda: CBAMConfig(12, spatial_kernel_size=3, **CBAM_PRESETS["timm"]),
}
REGISTRY = {"sa": "sa", "cbam-timm": "cbam"}


def _batches(channels: int, k: int) -> list[np.ndarray]:
    """k different batches of different shapes, with a mean away from 0 and a spread away from 1."""
    rng = np.random.default_rng(7)
    shapes = [(2, channels, 5, 4), (3, channels, 4, 6), (1, channels, 3, 7)]
    return [rng.standard_normal(shapes[i % 3]) * (1.5 + i) + (0.7 - 0.4 * i) for i in range(k)]


class _Trainer:
    """One backend module in float64: load canonical weights, train on NCHW batches, read its state, evaluate."""

    def __init__(self, fw: str, name: str, config: Any, weights: dict[str, np.ndarray]) -> None:
        self.runner = _fw.runner(fw)
        module = self.runner.backend().ATTN_LAYERS[name].from_config(config)
        self.module, self.variables = self.runner.load(module, weights, "float64")

    def step(self, x: np.ndarray) -> None:
        _, self.variables = self.runner.train_forward(self.module, self.variables, x)

    def state(self) -> dict[str, np.ndarray]:
        w = self.runner.export_weights(self.module, self.variables)
        return {k: v for k, v in w.items() if "running" in k}

    def evaluate(self, x: np.ndarray) -> np.ndarray:
        return self.runner.forward(self.module, self.variables, x)


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("which", list(CONFIGS))
def test_backend_statistics_after_k_steps_and_eval_with_them(which, fw, steps):
    config = CONFIGS[which]()
    weights = config.init_weights(np.random.default_rng(3))
    channels = config.channels
    trainer = _Trainer(fw, REGISTRY[which], config, weights)
    expected = dict(weights)
    for x in _batches(channels, steps):
        trainer.step(x)
        expected.update(config.reference_state(expected, x))  # the reference update, once per step
    got = trainer.state()
    names = sorted(p.name for p in config.param_table() if not p.trainable)
    assert sorted(got) == names
    for name in names:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-12, err_msg=f"{fw} {name}")
        assert not np.allclose(expected[name], weights[name]), "the statistics must have moved"
    # evaluation uses exactly those statistics
    x_eval = np.random.default_rng(11).standard_normal((2, channels, 4, 5)) - 0.3
    np.testing.assert_allclose(trainer.evaluate(x_eval), config.reference(expected, x_eval, training=False),
                               rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------------- one value per channel
def test_check_batch_norm_input_rule():
    with pytest.raises(InputShapeError, match=r"^Mod: BatchNorm in training needs more than one value per channel, "
                                              r"got input shape \(1, 4, 1, 1\)"):
        check_batch_norm_input("Mod", (1, 4, 1, 1))
    with pytest.raises(InputShapeError, match=r"got input shape \(1, 1, 1, 4\) \(NHWC: N\*H\*W = 1\)"):
        check_batch_norm_input("Mod", (1, 1, 1, 4), "NHWC")
    for ok in [(2, 4, 1, 1), (1, 4, 1, 2), (1, 4, 2, 1), (None, 4, 1, 1), (-1, 4, 1, 1)]:
        check_batch_norm_input("Mod", ok)  # more than one value, or a size unknown at trace time
    with pytest.raises(ValueError, match="more than one value per channel"):
        ops.batch_norm(*(Node(np.ones(s)) for s in [(1, 1, 1, 1), 1, 1, 1, 1]), training=True, eps=1e-5)


def test_reference_refuses_one_value_per_channel_in_training_only():
    cfg, w = _identity_sa()
    x = np.array([3.0]).reshape(1, 1, 1, 1)
    for call in (lambda: cfg.reference(w, x, training=True), lambda: cfg.reference_state(w, x),
                 lambda: cfg.reference_vjp(w, x, np.ones_like(x), training=True)):
        with pytest.raises(InputShapeError, match="SpatialAttention: BatchNorm in training needs more than one"):
            call()
    assert np.isfinite(cfg.reference(w, x, training=False)).all()
    no_bn = SpatialAttentionConfig(1, kernel_size=1)
    assert np.isfinite(no_bn.reference({"conv.weight": w["conv.weight"]}, x, training=True)).all()


def _train_call(fw: str, name: str, kwargs: dict[str, Any], x: np.ndarray, mode: str = "eager") -> Any:
    """A training forward of the module registered as ``name`` for 4 channels on ``x``, in ``mode``."""
    config = create_config(name, 4, **kwargs)
    weights = config.init_weights(np.random.default_rng(0))
    return _fw.runner(fw).run(name, config, weights, x, None, "float32", training=True, mode=mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("name,kwargs,cls", [("sa", {"norm": True}, "SpatialAttention"),
                                             ("cbam", dict(CBAM_PRESETS["timm"]), "CBAM")], ids=["sa", "cbam"])
def test_one_value_per_channel_in_training_is_an_error_everywhere(fw, name, kwargs, cls, mode):
    x = np.random.default_rng(0).standard_normal((1, 4, 1, 1)).astype(np.float32)
    shape = tuple(_fw.nchw_to_native(fw, x).shape)  # the message gives the module's own layout
    with pytest.raises(InputShapeError) as exc:
        _train_call(fw, name, kwargs, x, mode)
    # (to_static prefixes Paddle's "In transformed code: ..." to the message, type kept)
    assert f"{cls}: BatchNorm in training needs more than one value per channel, got input shape {shape}" in \
        str(exc.value)
    # more than one value per channel trains; without BatchNorm one value trains too
    _train_call(fw, name, kwargs, np.concatenate([x, x + 1.0]))
    no_bn = {"sa": {}, "cbam": dict(CBAM_PRESETS["article"], rd_divisor=1)}[name]
    _train_call(fw, name, no_bn, x)


# ------------------------------------------------------------------------------------------- the suite
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("case_name", [SA_TRAIN, CBAM_TRAIN])
def test_training_rows_compare_every_running_statistic(case_name, fw, mode):
    backend(fw)
    case = case_named(case_name)
    row = run_case(case, get_runner(fw), "float64", mode=mode)
    names = [p.name for p in case.config().param_table() if not p.trainable]
    assert [c.quantity for c in row.comparisons if c.quantity.startswith("state:")] == [f"state:{n}" for n in names]
    assert row.status == "pass", row.message + "; ".join(f"{c.quantity} {c.detail}" for c in row.comparisons)


def test_eval_rows_and_results_carry_no_state():
    backend("torch")
    case = case_named("sa/k7-bn-eval")
    row = run_case(case, get_runner("torch"))
    assert row.status == "pass" and not any(c.quantity.startswith("state:") for c in row.comparisons)
    weights, x, cot, _ = reference_for(case)
    assert get_runner("torch").run(case.module, case.config(), weights, x, cot).state == {}


# ----------------------------------------------------------------------------------------- broken ports
@pytest.mark.parametrize("layer", ["native", "project"])
def test_paddle_momentum_left_in_torch_convention_is_caught(monkeypatch, layer):
    """``BatchNorm2D(1, momentum=0.1)``: torch's 0.1 where Paddle's convention wants 0.9, so each step keeps 10%
    of the running value. The training output and gradients do not depend on it; only the state shows it."""
    backend("paddle")
    import paddle

    import backends.paddle.cbam as cbam

    cls = paddle.nn.BatchNorm2D if layer == "native" else cbam.BatchNorm2D
    monkeypatch.setattr(cbam, "BatchNorm2D", lambda c, momentum, epsilon: cls(c, momentum=0.1, epsilon=epsilon))
    failing = broken_then_whole(monkeypatch, "paddle", SA_TRAIN)
    assert "state:bn.running_mean" in failing
    assert not {q for q in failing if not q.startswith("state:")}, failing


def test_flax_default_momentum_is_caught(monkeypatch):
    """``nn.BatchNorm`` with Flax's default momentum 0.99 (torch's 0.01) where the spec says 0.1."""
    backend("flax")
    import flax.linen as nn

    import backends.flax.cbam as cbam

    def flax_default(train: bool, eps: float, momentum: float, name: str) -> nn.Module:
        return nn.BatchNorm(use_running_average=not train, epsilon=eps, use_fast_variance=False, name=name)

    monkeypatch.setattr(cbam, "batch_norm", flax_default)
    failing = broken_then_whole(monkeypatch, "flax", SA_TRAIN)
    assert "state:bn.running_mean" in failing
    assert not {q for q in failing if not q.startswith("state:")}, failing


# Why Paddle and Flax carry their own layer: their native BatchNorm, momentum converted correctly, differs from the
# convention in the running variance alone (biased where torch stores the unbiased one).
def test_paddle_native_batch_norm_with_the_right_momentum_stores_the_biased_variance(monkeypatch):
    backend("paddle")
    import paddle

    import backends.paddle.cbam as cbam

    monkeypatch.setattr(cbam, "BatchNorm2D", lambda c, momentum, epsilon: paddle.nn.BatchNorm2D(
        c, momentum=momentum, epsilon=epsilon))
    assert broken_then_whole(monkeypatch, "paddle", CBAM_TRAIN) == {"state:spatial.bn.running_var"}


def test_flax_native_batch_norm_with_the_right_momentum_stores_the_biased_variance(monkeypatch):
    backend("flax")
    import flax.linen as nn

    import backends.flax.cbam as cbam

    monkeypatch.setattr(cbam, "batch_norm", lambda train, eps, momentum, name: nn.BatchNorm(
        use_running_average=not train, momentum=bn_momentum_for("flax", momentum), epsilon=eps,
        use_fast_variance=False, name=name))
    assert broken_then_whole(monkeypatch, "flax", CBAM_TRAIN) == {"state:spatial.bn.running_var"}


def test_statistics_never_updated_are_reported_as_such(monkeypatch):
    """A torch BatchNorm built with momentum 0 keeps its running statistics: the row says they were not updated."""
    backend("torch")
    import backends.torch.cbam as cbam

    monkeypatch.setattr(cbam, "bn_momentum_for", lambda framework, m: 0.0)
    row = run_case(case_named(SA_TRAIN), get_runner("torch"), "float32")
    bad = [c for c in row.comparisons if not c.passed]
    assert row.status == "fail" and [c.quantity for c in bad] == ["state:bn.running_mean", "state:bn.running_var"]
    assert all(c.detail.startswith("not updated by the training forward") for c in bad)


# ------------------------------------------------------------------------------------------ wrapped modules
def _torch_timm_style_sa() -> Any:
    import torch
    from torch import nn

    class HandWrittenSA(nn.Module):
        """timm-style spatial attention whose convolution and BatchNorm sit in a Sequential."""

        def __init__(self, momentum: float = 0.1) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(2, 1, 7, padding=3, bias=False), nn.BatchNorm2d(1, momentum=momentum))

        def forward(self, x):
            return x * torch.sigmoid(self.body(torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)))

    return HandWrittenSA


SA_MAP = {"conv.weight": "body.0.weight", "bn.weight": "body.1.weight", "bn.bias": "body.1.bias",
          "bn.running_mean": "body.1.running_mean", "bn.running_var": "body.1.running_var"}


@pytest.mark.parametrize("mode", MODES)
def test_wrapped_module_state_is_read_from_its_own_buffers(mode):
    backend("torch")
    runner, case = get_runner("torch"), case_named(SA_TRAIN)
    cls = _torch_timm_style_sa()
    tol = tolerance_for("float32")
    weights, x, cot, _ = reference_for(case)
    ref = case.config().reference_state(weights, x)
    for momentum, passes in ((0.1, True), (0.01, False)):
        user = cls(momentum)
        handle = runner.wrap(user, case.config(), SA_MAP)
        got = runner.execute(handle, weights, x, cot, "float32", training=True, mode=mode)
        assert sorted(got.state) == ["bn.running_mean", "bn.running_var"]
        verdicts = [compare(f"state:{k}", got.state[k], v, tol).passed for k, v in ref.items()]
        assert verdicts == [passes, passes], (momentum, got.state, ref)
        assert float(user.body[1].running_mean) == 0.0, "the user's module itself is left untouched"


def test_wrapped_flax_module_state_comes_from_the_updated_batch_stats():
    backend("flax")
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from backends.flax._norm import BatchNorm

    class FlaxSA(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            z = nn.Conv(1, (7, 7), padding=((3, 3), (3, 3)), use_bias=False, name="c")(
                jnp.concatenate([x.mean(-1, keepdims=True), x.max(-1, keepdims=True)], -1))
            z = BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name="norm")(z)
            return x * jax.nn.sigmoid(z)

    runner, case = get_runner("flax"), case_named(SA_TRAIN)
    module = FlaxSA()
    variables = module.init(jax.random.key(0), jnp.zeros((1, 4, 4, 5)))
    handle = runner.wrap(module, case.config(), {
        "conv.weight": "params/c/kernel", "bn.weight": "params/norm/scale", "bn.bias": "params/norm/bias",
        "bn.running_mean": "batch_stats/norm/mean", "bn.running_var": "batch_stats/norm/var"}, variables)
    weights, x, cot, _ = reference_for(case)
    ref = case.config().reference_state(weights, x)
    for mode in MODES:
        got = runner.execute(handle, weights, x, cot, "float64", training=True, mode=mode)
        for k, v in ref.items():
            c = compare(f"state:{k}", got.state.get(k), v, tolerance_for("float64"))
            assert c.passed, (mode, c)
    assert math.isclose(float(np.asarray(variables["batch_stats"]["norm"]["var"])[0]), 1.0)
