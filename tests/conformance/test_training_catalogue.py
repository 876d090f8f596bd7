"""The training-bug catalogue (issue 14, docs/porting-bugs.md): each fact of the issue written as the broken training
port a user writes, caught by ``conformance.check_training`` with a diagnosis naming the quantity and the step; the
corrected port passes. A small SE-DenseNet (two layers per block, growth 8) at 4 x 3 x 16 x 16 in float64 keeps
every check to seconds; its 4 x 4 last maps keep the batch statistics well conditioned."""

from __future__ import annotations

import json
from typing import Any

import pytest

from attn_core.models.densenet import SEDenseNetConfig
from attn_core.spec import ConfigError
from attn_core.training import OptimizerConfig, ScheduleConfig
from conformance import check_training

SPEC = SEDenseNetConfig(growth_rate=8, block_config=(2, 2, 2), num_init_features=16, num_classes=10)
STEPS = 4
SGD = OptimizerConfig("sgd", lr=2.0 ** -5, momentum=0.875, weight_decay=2.0 ** -8)
STEP_LR = ScheduleConfig("step", step_size=2, gamma=0.5)


# ------------------------------------------------------------------------------------------------ torch
def _torch(bn_momentum: float | None = None) -> Any:
    torch = pytest.importorskip("torch")
    from backends.torch.models import model_from_config

    model = model_from_config(SPEC).double()
    if bn_momentum is not None:
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = bn_momentum
    return model


def _torch_groups(model: Any, decay_norms: bool) -> list[dict[str, Any]]:
    """timm's parameter groups (no decay on biases and 1-D parameters), or one decayed group."""
    if decay_norms:
        return [{"params": list(model.parameters()), "weight_decay": SGD.weight_decay}]
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and not n.endswith(".bias")]
    rest = [p for n, p in model.named_parameters() if not (p.ndim > 1 and not n.endswith(".bias"))]
    return [{"params": decay, "weight_decay": SGD.weight_decay}, {"params": rest, "weight_decay": 0.0}]


def _torch_loop(model: Any, opt: Any, sched: Any, scheduler_first: bool = False) -> Any:
    import torch.nn.functional as F

    def train_step(x: Any, y: Any) -> Any:
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        if scheduler_first:
            sched.step()
        opt.step()
        if not scheduler_first:
            sched.step()
        return loss

    return train_step


def _torch_check(decay_norms: bool = False, scheduler_first: bool = False, bn_momentum: float | None = None,
                 schedule: ScheduleConfig = STEP_LR, make_sched: Any = None) -> Any:
    import torch

    model = _torch(bn_momentum)
    opt = torch.optim.SGD(_torch_groups(model, decay_norms), lr=SGD.lr, momentum=SGD.momentum)
    sched = make_sched(opt) if make_sched else torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    return check_training(_torch_loop(model, opt, sched, scheduler_first), model, SPEC, SGD, schedule,
                          "no_bias_no_norm", STEPS, optim=opt)


def test_the_correct_torch_loop_passes_and_reports_every_quantity():
    report = _torch_check()
    assert report.passed, str(report)
    quantities = {c.quantity for c in report.per_step[0]}
    assert {"loss", "lr", "grad:features.conv0.weight", "param:classifier.weight",
            "optim:classifier.weight.momentum_buffer",
            "state:features.denseblock1.denselayer1.norm1.running_mean"} <= quantities
    assert len(report.per_step) == STEPS and "PASS" in str(report)


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before:UserWarning")
@pytest.mark.slow(reason="a torch trajectory past the first lr change; the fast tier keeps the step-1 diagnoses")
def test_scheduler_stepped_before_the_optimizer_shows_in_the_parameters_when_the_lr_changes():
    d = _torch_check(scheduler_first=True).diagnosis
    # StepLR halves the rate after 2 epochs: the second update already uses the third step's rate
    assert d is not None and (d.step, d.stage) == (2, "parameter"), d
    assert "gradient, learning rate, optimizer state agree at this step" in d.text
    assert "learning rate of step 3 at step 2" in d.text and "scheduler.step() before optimizer.step()" in d.text


def test_decay_on_batchnorm_and_biases_shows_in_the_momentum_buffer_of_a_bias_or_norm_at_step_1():
    d = _torch_check(decay_norms=True).diagnosis
    assert d is not None and (d.step, d.stage) == (1, "optimizer state"), d
    name = d.quantity.removeprefix("optim:").removesuffix(".momentum_buffer")
    assert name.endswith(".bias") or ".norm" in name, d.quantity


@pytest.mark.slow(reason="a further torch trajectory; the fast tier keeps the decay on BatchNorm's")
def test_batchnorm_momentum_unconverted_shows_in_the_running_statistics_at_step_1():
    d = _torch_check(bn_momentum=0.9).diagnosis  # Paddle's / Flax's 0.9 given to torch, whose 0.1 is the same
    assert d is not None and (d.step, d.stage) == (1, "running statistics"), d
    assert d.quantity.startswith("state:") and d.quantity.endswith(("running_mean", "running_var"))


@pytest.mark.slow(reason="two 4-step torch trajectories")
def test_cosine_past_t_max_rising_in_torch_where_the_source_held_its_floor():
    import torch

    held = ScheduleConfig("cosine", t_max=2, eta_min=2.0 ** -8, after_t_max="hold")
    report = _torch_check(schedule=held, make_sched=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=2, eta_min=2.0 ** -8))
    d = report.diagnosis
    # epochs 0..2 agree (the floor is reached at T_max); at epoch 3, the 4th step, torch has risen again
    assert d is not None and (d.step, d.stage, d.quantity) == (4, "learning rate", "lr"), d
    cycling = ScheduleConfig("cosine", t_max=2, eta_min=2.0 ** -8, after_t_max="cycle")
    assert _torch_check(schedule=cycling, make_sched=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=2, eta_min=2.0 ** -8)).passed


def test_a_summed_loss_shows_in_the_loss_at_step_1_before_anything_it_scales():
    import torch
    import torch.nn.functional as F

    model = _torch()
    opt = torch.optim.SGD(_torch_groups(model, False), lr=SGD.lr, momentum=SGD.momentum)

    def summed(x: Any, y: Any) -> Any:  # the reference's loss is the batch mean
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y, reduction="sum")
        loss.backward()
        opt.step()
        return loss

    d = check_training(summed, model, SPEC, SGD, None, "no_bias_no_norm", 2, optim=opt).diagnosis
    assert d is not None and (d.step, d.stage, d.quantity) == (1, "loss", "loss"), d


# ------------------------------------------------------------------------------------------------ bad input
def test_unknown_optimizer_schedule_and_decay_rule_are_config_errors():
    model = _torch()
    with pytest.raises(ConfigError, match="rmsprop"):
        check_training(lambda x, y: 0.0, model, SPEC, {"name": "rmsprop", "lr": 0.1})
    with pytest.raises(ConfigError, match="linear"):
        check_training(lambda x, y: 0.0, model, SPEC, SGD, {"name": "linear"})
    with pytest.raises(ConfigError, match="momentum"):
        check_training(lambda x, y: 0.0, model, SPEC, {"name": "sgd", "lr": 0.1, "momentum": 1.0})
    with pytest.raises(ConfigError, match="lr"):
        check_training(lambda x, y: 0.0, model, SPEC, {"name": "sgd", "lr": -0.1})
    with pytest.raises(ConfigError, match="decay rule"):
        check_training(lambda x, y: 0.0, model, SPEC, SGD, decay="no_norm", steps=1)


def test_a_step_that_does_not_update_the_parameters_is_an_error_naming_it():
    import torch.nn.functional as F

    model = _torch()

    def forgot_the_update(x: Any, y: Any) -> Any:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    with pytest.raises(ValueError, match="forgot_the_update did not change any parameter"):
        check_training(forgot_the_update, model, SPEC, SGD, steps=1)


def test_a_step_that_raises_is_the_reports_error_at_that_step():
    def broken(x: Any, y: Any) -> Any:
        raise RuntimeError("shape mismatch")

    report = check_training(broken, _torch(), SPEC, SGD, steps=1)
    assert not report.passed and report.diagnosis is not None
    assert (report.diagnosis.step, report.diagnosis.stage) == (1, "error")
    assert "shape mismatch" in report.diagnosis.text and report.report.rows[0].status == "error"
    assert json.loads(report.to_json())["diagnosis"]["stage"] == "error"


# ------------------------------------------------------------------------------------------------ Paddle
PLAIN_SGD = OptimizerConfig("sgd", lr=2.0 ** -5)


def _paddle_check(momentum: float | None, bn_momentum: float | None = None) -> Any:
    """A ``paddle.Model`` trained by ``train_batch`` with ``paddle.optimizer.Momentum``, ``momentum`` given or left
    at Paddle's default (None), against plain SGD."""
    paddle = pytest.importorskip("paddle")
    from backends.paddle.models import model_from_config

    net = model_from_config(SPEC)
    net.to(dtype="float64")
    if bn_momentum is not None:
        for m in net.sublayers():
            if isinstance(m, paddle.nn.BatchNorm2D):
                m._momentum = bn_momentum
    kwargs = {} if momentum is None else {"momentum": momentum}
    opt = paddle.optimizer.Momentum(learning_rate=PLAIN_SGD.lr, parameters=net.parameters(), **kwargs)
    model = paddle.Model(net)
    model.prepare(opt, paddle.nn.CrossEntropyLoss())
    return check_training(lambda x, y: model.train_batch([x], [y]), net, SPEC, PLAIN_SGD, None, "all", 3,
                          optim=opt)


def test_paddle_momentum_left_at_its_default_0_9_shows_in_the_parameters_at_step_2():
    d = _paddle_check(momentum=None).diagnosis
    # the first update is the gradient itself either way; the second adds 0.9 of the first
    assert d is not None and (d.step, d.stage) == (2, "parameter"), d
    right = _paddle_check(momentum=0.0)
    assert right.passed, str(right)
    assert any("no gradients" in n for n in right.notes)  # train_batch clears them


@pytest.mark.slow(reason="a second Paddle trajectory; the fast tier keeps Paddle's momentum default")
def test_paddle_batchnorm_momentum_given_torchs_value_shows_in_the_running_statistics_at_step_1():
    d = _paddle_check(momentum=0.0, bn_momentum=0.1).diagnosis  # SPEC's torch 0.1 is Paddle's 0.9
    assert d is not None and (d.step, d.stage) == (1, "running statistics"), d


# ------------------------------------------------------------------------------------------------ Flax
# slow: each check compiles the Flax network's training step, tens of seconds on two busy cores
ADAMW = OptimizerConfig("adamw", lr=2.0 ** -8, betas=(0.875, 1.0 - 2.0 ** -10), weight_decay=2.0 ** -6)


def _flax_check(tx: Any, optimizer: OptimizerConfig, schedule: ScheduleConfig | None = None, decay: str = "all",
                steps: int = 3) -> Any:
    """A Flax ``TrainState`` with ``batch_stats`` and a jitted step, as Flax's examples train, with ``tx``."""
    pytest.importorskip("flax")
    import jax
    import jax.numpy as jnp
    import optax
    from flax.training import train_state

    from backends.flax.models import model_from_config

    class State(train_state.TrainState):
        batch_stats: Any

    model = model_from_config(SPEC)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
    state = State.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                         batch_stats=variables["batch_stats"])

    @jax.jit
    def train_step(state: Any, x: Any, y: Any) -> tuple[Any, Any]:
        def loss_fn(params: Any) -> tuple[Any, Any]:
            logits, updates = state.apply_fn({"params": params, "batch_stats": state.batch_stats}, x, train=True,
                                             mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), updates

        (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        return state.apply_gradients(grads=grads).replace(batch_stats=updates["batch_stats"]), loss

    return check_training(train_step, model, SPEC, optimizer, schedule, decay, steps, state=state)


@pytest.mark.slow
def test_optax_adamw_at_its_default_decay_1e_4_shows_in_the_parameters_at_step_1():
    import optax

    b1, b2 = ADAMW.betas
    d = _flax_check(optax.adamw(ADAMW.lr, b1=b1, b2=b2, eps=ADAMW.eps), ADAMW, steps=1).diagnosis
    # the decay is decoupled: Adam's moments agree, the parameters do not
    assert d is not None and (d.step, d.stage) == (1, "parameter"), d
    assert "optimizer state" in d.text
    report = _flax_check(optax.adamw(ADAMW.lr, b1=b1, b2=b2, eps=ADAMW.eps, weight_decay=ADAMW.weight_decay),
                         ADAMW)
    assert report.passed, str(report)


@pytest.mark.slow
def test_adam_epsilon_inside_the_square_root_shows_in_the_parameters_at_step_1():
    import optax

    adam = OptimizerConfig("adam", lr=2.0 ** -8, betas=ADAMW.betas, eps=1e-3)  # large, so it shows in float64
    b1, b2 = adam.betas
    d = _flax_check(optax.adam(adam.lr, b1=b1, b2=b2, eps=0.0, eps_root=adam.eps), adam, steps=1).diagnosis
    assert d is not None and (d.step, d.stage) == (1, "parameter"), d
    assert _flax_check(optax.adam(adam.lr, b1=b1, b2=b2, eps=adam.eps), adam).passed


@pytest.mark.slow
def test_decoupled_decay_after_sgd_in_an_optax_chain_where_torch_couples_it():
    import optax

    sgd = OptimizerConfig("sgd", lr=2.0 ** -5, momentum=0.875, weight_decay=2.0 ** -4)
    decoupled = optax.chain(optax.sgd(sgd.lr, momentum=sgd.momentum), optax.add_decayed_weights(-sgd.lr * 2.0 ** -4))
    d = _flax_check(decoupled, sgd, steps=1).diagnosis
    # coupled decay enters the momentum buffer; optax's trace after the decay is the only buffer of the right port
    assert d is not None and (d.step, d.stage) == (1, "optimizer state"), d
    assert d.quantity.endswith(".momentum_buffer")
    coupled = optax.chain(optax.add_decayed_weights(sgd.weight_decay), optax.sgd(sgd.lr, momentum=sgd.momentum))
    assert _flax_check(coupled, sgd).passed


@pytest.mark.slow
def test_an_epoch_schedule_given_to_optax_per_update_shows_in_the_parameters_when_the_lr_changes():
    import optax

    per_epoch = ScheduleConfig("step", step_size=1, gamma=0.5, steps_per_epoch=2)  # two updates per epoch
    per_update = optax.exponential_decay(PLAIN_SGD.lr, transition_steps=1, decay_rate=0.5, staircase=True)
    d = _flax_check(optax.sgd(per_update), PLAIN_SGD, per_epoch).diagnosis
    # updates 1 and 2 are epoch 0; the per-update schedule halves the rate already at update 2
    assert d is not None and (d.step, d.stage) == (2, "parameter"), d
    assert "learning rate of step 3 at step 2" in d.text
    right = optax.exponential_decay(PLAIN_SGD.lr, transition_steps=2, decay_rate=0.5, staircase=True)
    assert _flax_check(optax.sgd(right), PLAIN_SGD, per_epoch).passed


@pytest.mark.slow
def test_the_projects_optax_chain_passes_with_its_learning_rate_compared():
    import jax
    import jax.numpy as jnp

    from backends.flax.models import model_from_config
    from backends.flax.optim import create_optimizer

    nesterov = OptimizerConfig("sgd", lr=2.0 ** -5, momentum=0.875, nesterov=True, weight_decay=2.0 ** -8)
    warm_cosine = ScheduleConfig("cosine", t_max=2, eta_min=2.0 ** -8, warmup_epochs=1, warmup_start_factor=0.5)
    params = model_from_config(SPEC).init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))["params"]
    report = _flax_check(create_optimizer(params, nesterov, warm_cosine, "no_bias_no_norm"), nesterov, warm_cosine,
                         "no_bias_no_norm")
    assert report.passed, str(report)
    assert all(any(c.quantity == "lr" for c in comps) for comps in report.per_step)
