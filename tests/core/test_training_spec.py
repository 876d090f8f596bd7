"""The neutral training spec (attn_core/training.py): hand calculations on a few steps, and torch.optim with
torch.optim.lr_scheduler (the upstream implementation the reference follows) over 20 float64 steps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from attn_core.spec import ConfigError
from attn_core.training import (
    GradientMismatchError,
    OptimizerConfig,
    ReferenceOptimizer,
    ScheduleConfig,
    decay_mask,
    learning_rate,
    softmax_cross_entropy,
)

SHAPES = {"conv.weight": (3, 2, 1, 1), "bn.weight": (3,), "fc.weight": (4, 3), "fc.bias": (4,)}


def _one(optimizer, steps_grads, p0=1.0, decay="all", schedule=None, name="w"):
    """The scalar-parameter trajectory of the reference for the given gradients."""
    ref = ReferenceOptimizer(optimizer, schedule, decay, {name: np.array([p0])})
    out = []
    for g in steps_grads:
        ref.step({name: np.array([g])})
        out.append(float(ref.params[name][0]))
    return out, ref


# ------------------------------------------------------------------------------------------ hand calculations
def test_sgd_momentum_dampening_and_coupled_decay_by_hand():
    opt = OptimizerConfig("sgd", lr=0.1, momentum=0.5, dampening=0.5, weight_decay=0.1)
    got, ref = _one(opt, [1.0, 1.0])
    # step 1: g = 1 + 0.1*1 = 1.1; the first buffer is the gradient itself, undamped (torch); p = 1 - 0.11
    # step 2: g = 1 + 0.1*0.89 = 1.089; buf = 0.5*1.1 + 0.5*1.089 = 1.0945; p = 0.89 - 0.10945
    assert got == pytest.approx([0.89, 0.78055], rel=1e-15)
    assert ref.state["w"]["momentum_buffer"] == pytest.approx([1.0945], rel=1e-15)
    assert ref.steps == 2


def test_sgd_nesterov_by_hand():
    got, ref = _one(OptimizerConfig("sgd", lr=0.1, momentum=0.5, nesterov=True), [1.0, 1.0])
    # step 1: buf = 1, update g + 0.5*buf = 1.5; step 2: buf = 0.5 + 1 = 1.5, update 1 + 0.75 = 1.75
    assert got == pytest.approx([0.85, 0.675], rel=1e-15)
    assert ref.state["w"]["momentum_buffer"] == pytest.approx([1.5], rel=1e-15)


def test_plain_sgd_keeps_no_buffer():
    got, ref = _one(OptimizerConfig("sgd", lr=0.5), [1.0, -3.0])
    assert got == [0.5, 2.0]
    assert ref.state == {"w": {}}


def test_adam_by_hand():
    opt = OptimizerConfig("adam", lr=0.1, betas=(0.5, 0.75), eps=1e-300)
    got, ref = _one(opt, [2.0, -2.0])
    # step 1: m = 1, v = 1, bias corrections 0.5 and 0.25: p = 1 - 0.1/0.5 * 1/(1/0.5) = 0.9
    # step 2: m = 1 + 0.5*(-2 - 1) = -0.5, v = 0.75 + 0.25*4 = 1.75, corrections 0.75 and 0.4375:
    #         p = 0.9 + 0.1/0.75 * 0.5/(sqrt(1.75)/sqrt(0.4375)) = 0.9 + 0.1/0.75 * 0.25
    assert got == pytest.approx([0.9, 0.9 + 0.1 / 0.75 * 0.25], rel=1e-15)
    assert ref.state["w"]["exp_avg"] == pytest.approx([-0.5], rel=1e-15)
    assert ref.state["w"]["exp_avg_sq"] == pytest.approx([1.75], rel=1e-15)


def test_adam_coupled_and_adamw_decoupled_decay_by_hand():
    # coupled: g = 2 + 0.5*1 = 2.5; Adam's first step is lr * sign(g), so the decay changes only the moments
    got, ref = _one(OptimizerConfig("adam", lr=0.1, betas=(0.5, 0.75), eps=1e-300, weight_decay=0.5), [2.0])
    assert got == pytest.approx([0.9], rel=1e-15)
    assert ref.state["w"]["exp_avg"] == pytest.approx([1.25], rel=1e-15)
    # decoupled: p = 1 * (1 - 0.1*0.5) = 0.95, then the same Adam step
    got, ref = _one(OptimizerConfig("adamw", lr=0.1, betas=(0.5, 0.75), eps=1e-300, weight_decay=0.5), [2.0])
    assert got == pytest.approx([0.85], rel=1e-15)
    assert ref.state["w"]["exp_avg"] == pytest.approx([1.0], rel=1e-15)
    # a bias under timm's rule is not decayed at all
    got, _ = _one(OptimizerConfig("adamw", lr=0.1, betas=(0.5, 0.75), eps=1e-300, weight_decay=0.5), [2.0],
                  decay="no_bias_no_norm", name="fc.bias")
    assert got == pytest.approx([0.9], rel=1e-15)


def test_schedules_by_hand():
    lr = OptimizerConfig("sgd", lr=1.0)
    step = ScheduleConfig("step", step_size=2, gamma=0.5)
    assert [learning_rate(lr, step, k) for k in range(6)] == [1, 1, 0.5, 0.5, 0.25, 0.25]
    multi = ScheduleConfig("multistep", milestones=(1, 3), gamma=0.1)
    assert [learning_rate(lr, multi, k) for k in range(5)] == pytest.approx([1, 0.1, 0.1, 0.01, 0.01], rel=1e-15)
    assert learning_rate(lr, None, 7) == learning_rate(lr, ScheduleConfig(), 7) == 1.0
    per_epoch = ScheduleConfig("step", step_size=1, gamma=0.5, steps_per_epoch=3)
    assert [learning_rate(lr, per_epoch, k) for k in range(7)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]


def test_cosine_past_t_max_both_ways():
    opt = OptimizerConfig("sgd", lr=1.0)
    c = (1 + math.cos(math.pi / 4)) / 2
    cycle = ScheduleConfig("cosine", t_max=4, eta_min=0.0)
    hold = ScheduleConfig("cosine", t_max=4, eta_min=0.0, after_t_max="hold")
    assert [learning_rate(opt, cycle, k) for k in range(9)] == pytest.approx(
        [1, c, 0.5, 1 - c, 0, 1 - c, 0.5, c, 1], rel=1e-15, abs=1e-16)
    assert [learning_rate(opt, hold, k) for k in range(9)] == pytest.approx(
        [1, c, 0.5, 1 - c, 0, 0, 0, 0, 0], rel=1e-15, abs=1e-16)
    floor = ScheduleConfig("cosine", t_max=4, eta_min=0.25, after_t_max="hold")
    assert learning_rate(opt, floor, 2) == pytest.approx(0.625, rel=1e-15)
    assert learning_rate(opt, floor, 100) == 0.25


def test_warmup_boundaries():
    opt = OptimizerConfig("sgd", lr=2.0)
    warm = ScheduleConfig("constant", warmup_epochs=2, warmup_start_factor=0.25)
    # from 0.25*lr, linearly towards lr, reaching it exactly when the main schedule starts at its epoch 0
    assert [learning_rate(opt, warm, k) for k in range(4)] == [0.5, 1.25, 2.0, 2.0]
    cos = ScheduleConfig("cosine", t_max=2, warmup_epochs=2, warmup_start_factor=0.25, steps_per_epoch=2)
    assert [learning_rate(opt, cos, k) for k in range(10)] == pytest.approx(
        [0.5, 0.5, 1.25, 1.25, 2.0, 2.0, 1.0, 1.0, 0.0, 0.0], rel=1e-15, abs=1e-16)
    step = ScheduleConfig("step", step_size=1, gamma=0.5, warmup_epochs=1, warmup_start_factor=0.5)
    assert [learning_rate(opt, step, k) for k in range(4)] == [1.0, 2.0, 1.0, 0.5]


def test_adamw_with_warmup_by_hand():
    opt = OptimizerConfig("adamw", lr=0.1, betas=(0.5, 0.75), eps=1e-300, weight_decay=0.5)
    warm = ScheduleConfig(warmup_epochs=1, warmup_start_factor=0.5)
    got, _ = _one(opt, [2.0, 2.0], schedule=warm)
    # step 1 at lr 0.05: p = 1 * (1 - 0.05*0.5) = 0.975, then Adam's first step 0.05 * sign(g)
    # step 2 at lr 0.1: p = 0.925 * (1 - 0.1*0.5) = 0.87875; m = 1.5, v = 1.75, corrected 2 and 4: step 0.1 * 2/2
    assert got == pytest.approx([0.925, 0.77875], rel=1e-15)


def test_reference_lr_is_the_next_steps():
    ref = ReferenceOptimizer(OptimizerConfig("sgd", lr=1.0), ScheduleConfig("step", step_size=1, gamma=0.5), "all",
                             {"w": np.zeros(1)})
    assert ref.lr == 1.0
    ref.step({"w": np.ones(1)})
    assert ref.lr == 0.5 and ref.params["w"][0] == -1.0
    ref.step({"w": np.ones(1)})
    assert ref.params["w"][0] == -1.5


# ------------------------------------------------------------------------------------------------ decay rules
def test_decay_mask_rules():
    assert decay_mask("all", SHAPES) == dict.fromkeys(SHAPES, True)
    assert decay_mask("no_bias_no_norm", SHAPES) == {
        "conv.weight": True, "bn.weight": False, "fc.weight": True, "fc.bias": False}
    # a 2-D parameter named *.bias is still a bias (timm tests the name as well as the rank); a scalar has ndim 0
    assert decay_mask("no_bias_no_norm", {"head.bias": (2, 2), "head.weight": (2, 2), "w": ()}) == {
        "head.bias": False, "head.weight": True, "w": False}
    # no 1-D parameter and no bias: the rule excludes nothing, which a model without biases or norms is
    assert decay_mask("no_bias_no_norm", {"conv.weight": (3, 3, 1, 1)}) == {"conv.weight": True}


def test_decay_mask_errors():
    with pytest.raises(ConfigError, match="decay rule must be one of 'all', 'no_bias_no_norm', got 'timm'"):
        decay_mask("timm", SHAPES)
    with pytest.raises(ConfigError, match="decay rule 'all' matches no parameter"):
        decay_mask("all", {})
    with pytest.raises(ConfigError, match="matches no parameter"):
        ReferenceOptimizer(OptimizerConfig("sgd", lr=0.1), None, "no_bias_no_norm", {})


@pytest.mark.parametrize("optimizer", [
    OptimizerConfig("sgd", lr=0.1, momentum=0.5, nesterov=True, weight_decay=0.1),
    OptimizerConfig("adamw", lr=0.1, weight_decay=0.1)])
def test_an_optimizer_resumed_from_its_state_and_step_count_continues_as_the_original(optimizer):
    # what conformance.training.reference_step_from relies on: the state and the step count are all there is
    schedule = ScheduleConfig("cosine", t_max=4, warmup_epochs=1, warmup_start_factor=0.5)
    rng = np.random.default_rng(3)
    grads = [{k: rng.standard_normal(s) for k, s in SHAPES.items()} for _ in range(3)]
    whole = ReferenceOptimizer(optimizer, schedule, "no_bias_no_norm", {k: np.ones(s) for k, s in SHAPES.items()})
    for g in grads[:2]:
        whole.step(g)
    resumed = ReferenceOptimizer(optimizer, schedule, "no_bias_no_norm", whole.params, state=whole.state, steps=2)
    assert resumed.lr == whole.lr != learning_rate(optimizer, schedule, 0)
    whole.step(grads[2])
    resumed.step(grads[2])
    for name in SHAPES:
        np.testing.assert_array_equal(resumed.params[name], whole.params[name])
    fresh = ReferenceOptimizer(optimizer, schedule, "no_bias_no_norm", resumed.params)
    assert fresh.state != {} and all(not slots for slots in fresh.state.values())  # a fresh one has no buffers


@pytest.mark.parametrize("optimizer", [
    OptimizerConfig("sgd", lr=0.1, momentum=0.5, nesterov=True, weight_decay=0.1),
    OptimizerConfig("adam", lr=0.1, weight_decay=0.1)])
def test_what_the_optimizer_hands_out_is_read_only_and_never_changes(optimizer):
    # params and state are the optimizer's own arrays, not copies: a later step must not alter those handed out
    # before it, nor may a caller alter the optimizer through them, nor may the optimizer alter the caller's inputs
    start, grad = np.array([1.0, 2.0]), np.array([0.5, -1.0])
    ref = ReferenceOptimizer(optimizer, None, "all", {"w": start})
    ref.step({"w": grad})
    params, state = ref.params, ref.state
    kept = params["w"].copy(), {slot: v.copy() for slot, v in state["w"].items()}
    ref.step({"w": grad})
    np.testing.assert_array_equal(params["w"], kept[0])
    for slot, v in state["w"].items():
        np.testing.assert_array_equal(v, kept[1][slot])
    assert not np.array_equal(ref.params["w"], kept[0])
    with pytest.raises(ValueError, match="read-only"):
        params["w"][0] = 0.0
    with pytest.raises(ValueError, match="read-only"):
        next(iter(state["w"].values()))[0] = 0.0
    np.testing.assert_array_equal(start, [1.0, 2.0])
    np.testing.assert_array_equal(grad, [0.5, -1.0])


def test_a_resumed_optimizer_refuses_a_negative_step_count_and_state_of_unknown_parameters():
    opt = OptimizerConfig("sgd", lr=0.1, momentum=0.5)
    with pytest.raises(ConfigError, match="steps must be at least 0, got -1"):
        ReferenceOptimizer(opt, None, "all", {"w": np.ones(2)}, steps=-1)
    with pytest.raises(ConfigError, match="state for parameters it does not hold: v"):
        ReferenceOptimizer(opt, None, "all", {"w": np.ones(2)}, state={"v": {"momentum_buffer": np.ones(2)}})


# --------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kwargs, message", [
    (dict(name="lamb", lr=0.1), "name must be one of 'sgd', 'adam', 'adamw', got 'lamb'"),
    (dict(name="sgd", lr=-0.1), r"lr must be in \[0, inf\), got -0.1"),
    (dict(name="sgd", lr=float("nan")), "lr must be a finite real number"),
    (dict(name="sgd", lr=0.1, momentum=1.0), r"momentum must be in \[0, 1\), got 1.0"),
    (dict(name="sgd", lr=0.1, momentum=-0.1), r"momentum must be in \[0, 1\)"),
    (dict(name="sgd", lr=0.1, nesterov=True), "nesterov needs momentum > 0"),
    (dict(name="sgd", lr=0.1, momentum=0.9, nesterov=True, dampening=0.1), "nesterov needs dampening 0"),
    (dict(name="sgd", lr=0.1, nesterov=1), "nesterov must be a bool"),
    (dict(name="sgd", lr=0.1, dampening=1.5), r"dampening must be in \[0, 1\]"),
    (dict(name="adam", lr=0.1, betas=(0.9, 1.0)), r"betas\[1\] must be in \[0, 1\), got 1.0"),
    (dict(name="adam", lr=0.1, betas=(-0.1, 0.9)), r"betas\[0\] must be in \[0, 1\)"),
    (dict(name="adam", lr=0.1, betas=(0.9,)), "betas must be a pair"),
    (dict(name="adam", lr=0.1, eps=0.0), r"eps must be in \(0, inf\), got 0.0"),
    (dict(name="adamw", lr=0.1, weight_decay=-1e-2), r"weight_decay must be in \[0, inf\)"),
    (dict(name="adam", lr=0.1, momentum=0.9), "momentum is SGD's; adam takes betas"),
])
def test_optimizer_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match="OptimizerConfig: .*" + message):
        OptimizerConfig(**kwargs)


def test_optimizer_config_lists_every_problem_at_once():
    with pytest.raises(ConfigError) as err:
        OptimizerConfig("sgd", lr=-1.0, momentum=1.5, eps=0.0)
    assert str(err.value).count(";") == 2 and "lr" in str(err.value) and "momentum" in str(err.value)


def test_optimizer_config_defaults_and_numbers():
    opt = OptimizerConfig("sgd", lr=np.float32(0.5), momentum=np.float64(0.25), betas=[np.float32(0.5), 0.75])
    assert opt == OptimizerConfig("sgd", lr=0.5, momentum=0.25, betas=(0.5, 0.75))
    assert type(opt.lr) is float and opt.betas == (0.5, 0.75)
    # written out here, never a framework's (Paddle's Momentum would be 0.9, optax's adamw decay 1e-4)
    d = OptimizerConfig("adamw", lr=1e-3)
    assert (d.momentum, d.dampening, d.nesterov, d.weight_decay, d.betas, d.eps) == (
        0.0, 0.0, False, 0.0, (0.9, 0.999), 1e-8)
    assert d.decoupled and not OptimizerConfig("adam", lr=1e-3).decoupled


@pytest.mark.parametrize("kwargs, message", [
    (dict(name="linear"), "name must be one of 'constant', 'step', 'multistep', 'cosine', got 'linear'"),
    (dict(name="step"), "the 'step' schedule needs step_size"),
    (dict(name="step", step_size=0), "step_size must be an integer >= 1, got 0"),
    (dict(name="multistep"), "the 'multistep' schedule needs milestones"),
    (dict(name="multistep", milestones=(3, 2)), "milestones must be strictly increasing"),
    (dict(name="multistep", milestones=(0, 2)), "milestones must be positive integers"),
    (dict(name="cosine"), "the 'cosine' schedule needs t_max"),
    (dict(name="cosine", t_max=0), "t_max must be an integer >= 1"),
    (dict(name="cosine", t_max=4, after_t_max="clamp"), "after_t_max must be one of 'cycle', 'hold'"),
    (dict(name="cosine", t_max=4, eta_min=-0.1), r"eta_min must be in \[0, inf\)"),
    (dict(name="step", step_size=2, gamma=0.0), r"gamma must be in \(0, inf\)"),
    (dict(name="constant", t_max=4), "t_max is the 'cosine' schedule's, not 'constant''s"),
    (dict(warmup_epochs=-1), "warmup_epochs must be an integer >= 0"),
    (dict(warmup_epochs=2, warmup_start_factor=0.0), r"warmup_start_factor must be in \(0, 1\]"),
    (dict(steps_per_epoch=0), "steps_per_epoch must be an integer >= 1"),
])
def test_schedule_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match="ScheduleConfig: .*" + message):
        ScheduleConfig(**kwargs)


def test_learning_rate_step_errors():
    with pytest.raises(ConfigError, match="step must be an integer >= 0, got -1"):
        learning_rate(OptimizerConfig("sgd", lr=0.1), None, -1)


def test_gradient_mismatch_lists_everything():
    ref = ReferenceOptimizer(OptimizerConfig("sgd", lr=0.1), None, "all", {k: np.zeros(s) for k, s in SHAPES.items()})
    grads = {"conv.weight": np.zeros((3, 2)), "bn.weight": np.zeros(3), "fc.weight": np.zeros((4, 3)),
             "head.weight": np.zeros(1)}
    with pytest.raises(GradientMismatchError) as err:
        ref.step(grads)
    text = str(err.value)
    assert "missing: fc.bias" in text and "unexpected: head.weight" in text
    assert "wrong shape: conv.weight: expected (3, 2, 1, 1), got (3, 2)" in text
    assert ref.steps == 0 and all(not v.any() for v in ref.params.values())


def test_softmax_cross_entropy_against_finite_differences():
    rng = np.random.default_rng(0)
    logits, labels = rng.standard_normal((5, 4)) * 3, np.array([0, 3, 1, 1, 2])
    loss, grad = softmax_cross_entropy(logits, labels)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert loss == pytest.approx(-np.mean(np.log(p[np.arange(5), labels])), rel=1e-14)
    h = 1e-6
    for i, j in [(0, 0), (1, 3), (4, 1)]:
        e = np.zeros_like(logits)
        e[i, j] = h
        up, down = softmax_cross_entropy(logits + e, labels)[0], softmax_cross_entropy(logits - e, labels)[0]
        numeric = (up - down) / (2 * h)
        assert grad[i, j] == pytest.approx(numeric, rel=1e-7, abs=1e-10)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\)"):
        softmax_cross_entropy(logits, np.array([0, 4, 1, 1, 2]))


# ------------------------------------------------------------------------------------ torch.optim, 20 steps
OPTIMIZERS = {
    "sgd_momentum_wd": OptimizerConfig("sgd", lr=0.1, momentum=0.9, weight_decay=1e-2),
    "sgd_dampening": OptimizerConfig("sgd", lr=0.1, momentum=0.9, dampening=0.3, weight_decay=1e-2),
    "sgd_nesterov": OptimizerConfig("sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4),
    "sgd_plain": OptimizerConfig("sgd", lr=0.1),
    "adam": OptimizerConfig("adam", lr=1e-2, weight_decay=1e-2),
    "adamw": OptimizerConfig("adamw", lr=1e-2, weight_decay=1e-2, betas=(0.8, 0.99), eps=1e-6),
}
SCHEDULES = {
    "constant": ScheduleConfig(),
    "step": ScheduleConfig("step", step_size=3, gamma=0.5),
    "multistep": ScheduleConfig("multistep", milestones=(2, 5, 9), gamma=0.3),
    "cosine_past_t_max": ScheduleConfig("cosine", t_max=6, eta_min=1e-3),
    "cosine_warmup": ScheduleConfig("cosine", t_max=8, eta_min=0.0, warmup_epochs=3, warmup_start_factor=0.2),
    "step_per_epoch": ScheduleConfig("step", step_size=2, gamma=0.5, warmup_epochs=1, steps_per_epoch=3),
}


def torch_optimizer(params, optimizer, schedule, mask):
    """torch.optim and torch.optim.lr_scheduler built by hand from the neutral config (independent of the
    project's converter, which tests/backends/test_optim_converters.py checks)."""
    import torch

    groups = [{"params": [p for k, p in params.items() if mask[k]], "weight_decay": optimizer.weight_decay},
              {"params": [p for k, p in params.items() if not mask[k]], "weight_decay": 0.0}]
    if optimizer.name == "sgd":
        opt = torch.optim.SGD(groups, lr=optimizer.lr, momentum=optimizer.momentum, dampening=optimizer.dampening,
                              nesterov=optimizer.nesterov)
    else:
        cls = torch.optim.Adam if optimizer.name == "adam" else torch.optim.AdamW
        opt = cls(groups, lr=optimizer.lr, betas=optimizer.betas, eps=optimizer.eps)
    sched = torch.optim.lr_scheduler
    if schedule.name == "step":
        main = sched.StepLR(opt, step_size=schedule.step_size, gamma=schedule.gamma)
    elif schedule.name == "multistep":
        main = sched.MultiStepLR(opt, milestones=list(schedule.milestones), gamma=schedule.gamma)
    elif schedule.name == "cosine":
        main = sched.CosineAnnealingLR(opt, T_max=schedule.t_max, eta_min=schedule.eta_min)
    else:
        main = sched.ConstantLR(opt, factor=1.0, total_iters=0)
    if schedule.warmup_epochs:
        warm = sched.LinearLR(opt, start_factor=schedule.warmup_start_factor, end_factor=1.0,
                              total_iters=schedule.warmup_epochs)
        main = sched.SequentialLR(opt, [warm, main], milestones=[schedule.warmup_epochs])
    return opt, main


@pytest.mark.parametrize("decay", ["all", "no_bias_no_norm"])
@pytest.mark.parametrize("sched_key", sorted(SCHEDULES))
@pytest.mark.parametrize("opt_key", sorted(OPTIMIZERS))
def test_against_torch_optim_20_steps(opt_key, sched_key, decay):
    torch = pytest.importorskip("torch", reason="torch.optim is the upstream the reference follows")
    optimizer, schedule = OPTIMIZERS[opt_key], SCHEDULES[sched_key]
    rng = np.random.default_rng(14)
    p0 = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    ref = ReferenceOptimizer(optimizer, schedule, decay, p0)
    params = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in p0.items()}
    opt, sched = torch_optimizer(params, optimizer, schedule, ref.mask)
    slots = ("momentum_buffer",) if optimizer.name == "sgd" else ("exp_avg", "exp_avg_sq")
    for k in range(20):
        assert opt.param_groups[0]["lr"] == pytest.approx(ref.lr, rel=1e-13, abs=1e-300), k
        grads = {name: rng.standard_normal(s) for name, s in SHAPES.items()}
        for name, p in params.items():
            p.grad = torch.tensor(grads[name])
        opt.step()
        if (k + 1) % schedule.steps_per_epoch == 0:
            sched.step()
        ref.step(grads)
        want, state = ref.params, ref.state
        for name, p in params.items():
            np.testing.assert_allclose(p.detach().numpy(), want[name], rtol=0, atol=1e-13, err_msg=f"{name} {k}")
            got_state = {s: v.numpy() for s, v in opt.state[p].items() if s in slots and v is not None}
            assert set(got_state) == set(state[name]), (name, k)
            for slot, v in got_state.items():
                np.testing.assert_allclose(v, state[name][slot], rtol=0, atol=1e-13, err_msg=f"{name} {slot} {k}")
    assert ref.steps == 20
