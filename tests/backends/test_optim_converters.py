"""backends/*/optim.py: the neutral training spec as torch.optim, paddle.optimizer and optax objects, each equal to
attn_core.training.ReferenceOptimizer over 15 float64 steps of given gradients, and the facts of issue 14 that a
conversion must get right."""

from __future__ import annotations

import contextlib
import inspect
import math

import numpy as np
import pytest

from attn_core import GAMConfig, from_native, native_location, to_native
from attn_core.spec import ConfigError
from attn_core.training import OptimizerConfig, ReferenceOptimizer, ScheduleConfig, learning_rate

from .._fw import FRAMEWORKS, runner
from .._timm import import_timm

STEPS = 15
# GAM has what the decay rules tell apart: 4-D convolution kernels, 2-D linear weights (transposed in Paddle and
# Flax), biases and BatchNorm scales and shifts
CONFIG = GAMConfig(8, kernel_size=3)
TRAINABLE = [s for s in CONFIG.param_table() if s.trainable]

# momentum, betas and the L2 coefficient exactly representable in float32: Paddle's kernels take them as float32
# attributes (see test_paddle_float32_attributes_drift for what other values do)
CASES = {
    "sgd_momentum_wd_step": (OptimizerConfig("sgd", lr=0.125, momentum=0.875, weight_decay=2.0 ** -7),
                             ScheduleConfig("step", step_size=4, gamma=0.5), "all"),
    "nesterov_cosine_warmup": (OptimizerConfig("sgd", lr=0.25, momentum=0.875, nesterov=True, weight_decay=2.0 ** -9),
                               ScheduleConfig("cosine", t_max=3, eta_min=1e-3, warmup_epochs=3,
                                              warmup_start_factor=0.25, steps_per_epoch=2), "no_bias_no_norm"),
    "adam": (OptimizerConfig("adam", lr=2.0 ** -6, betas=(0.875, 0.998046875), eps=1e-8, weight_decay=2.0 ** -7),
             ScheduleConfig("multistep", milestones=(3, 8), gamma=0.5), "all"),
    "adamw_all": (OptimizerConfig("adamw", lr=2.0 ** -6, betas=(0.875, 0.998046875), weight_decay=2.0 ** -4),
                  ScheduleConfig(), "all"),
    "adamw_no_bias_no_norm": (OptimizerConfig("adamw", lr=2.0 ** -6, betas=(0.875, 0.998046875),
                                              weight_decay=2.0 ** -4),
                              ScheduleConfig("cosine", t_max=6, after_t_max="hold"), "no_bias_no_norm"),
}


def _weights(seed=0):
    rng = np.random.default_rng(seed)
    out = {s.name: rng.standard_normal(s.shape) * 0.5 for s in CONFIG.param_table()}
    for s in CONFIG.param_table():
        if s.role == "bn_var":
            out[s.name] = np.abs(out[s.name]) + 0.5
    return out


def _grads(steps=STEPS, seed=1):
    rng = np.random.default_rng(seed)
    return [{s.name: rng.standard_normal(s.shape) for s in TRAINABLE} for _ in range(steps)]


def _key(fw, spec):
    return ".".join(native_location(fw, spec)[1])


class Trainer:
    """The converter's objects of one framework on GAM in float64, stepped with given canonical gradients; reads
    back canonical parameters, optimizer state and the learning rate."""

    def __init__(self, fw, optimizer, schedule, decay):
        self.fw, self.r, self.schedule = fw, runner(fw), schedule or ScheduleConfig()
        module, variables = self.r.load(self.r.backend().GAM(8, kernel_size=3), _weights(), dtype="float64")
        self.module, self.updates = module, 0
        if fw == "torch":
            from backends.torch.optim import create_optimizer
            self.opt, self.sched = create_optimizer(module, optimizer, schedule, decay)
        elif fw == "paddle":
            from backends.paddle.optim import create_optimizer
            self.opt, self.sched = create_optimizer(module, optimizer, schedule, decay)
        else:
            import jax

            from backends.flax.optim import create_optimizer
            with jax.enable_x64(True):
                self.params = variables["params"]
                self.tx = create_optimizer(self.params, optimizer, schedule, decay)
                self.opt_state = self.tx.init(self.params)

    def x64(self):
        import jax
        return jax.enable_x64(True) if self.fw == "flax" else contextlib.nullcontext()

    def step(self, grads):
        native = {_key(self.fw, s): to_native(self.fw, s, grads[s.name]) for s in TRAINABLE}
        if self.fw == "torch":
            import torch
            for name, p in self.module.named_parameters():
                p.grad = torch.from_numpy(native[name].copy())
            self.opt.step()
        elif self.fw == "paddle":
            import paddle

            from backends.paddle.optim import trainable
            # d/dp sum(p * g) is g exactly: Paddle's gradients are set through its own autograd
            loss = sum((p * paddle.to_tensor(native[n])).sum() for n, p in trainable(self.module).items())
            loss.backward()
            self.opt.step()
            self.opt.clear_grad()
        else:
            import jax
            import optax

            from backends.flax.optim import flat_params
            with self.x64():
                paths = list(flat_params(self.params))
                leaves = [np.asarray(native[p]) for p in paths]
                tree = jax.tree.unflatten(jax.tree.structure(self.params), leaves)
                updates, self.opt_state = self.tx.update(tree, self.opt_state, self.params)
                self.params = optax.apply_updates(self.params, updates)
        self.updates += 1
        if self.fw != "flax" and self.updates % self.schedule.steps_per_epoch == 0:
            self.sched.step()

    def params_canonical(self):
        if self.fw == "flax":
            from backends.flax.optim import flat_params
            flat = {k: np.asarray(v) for k, v in flat_params(self.params).items()}
        else:
            flat = {n: np.array(p.numpy()) if self.fw == "paddle" else p.detach().numpy().copy()
                    for n, p in self.module.named_parameters()}
        return {s.name: from_native(self.fw, s, flat[_key(self.fw, s)]) for s in TRAINABLE}

    def state_canonical(self):
        if self.fw == "torch":
            from backends.torch.optim import optimizer_state
            state = optimizer_state(self.module, self.opt)
        elif self.fw == "paddle":
            from backends.paddle.optim import optimizer_state
            state = optimizer_state(self.module, self.opt)
        else:
            from backends.flax.optim import optimizer_state
            state = optimizer_state(self.opt_state, self.params)
        return {s.name: {slot: from_native(self.fw, s, v) for slot, v in state[_key(self.fw, s)].items()}
                for s in TRAINABLE}

    def lr(self):
        if self.fw == "torch":
            from backends.torch.optim import current_lr
            return current_lr(self.opt)
        if self.fw == "paddle":
            from backends.paddle.optim import current_lr
            return current_lr(self.opt)
        from backends.flax.optim import current_lr
        return current_lr(self.opt_state)


def _trajectory_error(fw, optimizer, schedule, decay, steps=STEPS):
    """The largest difference, over every step, of parameters, optimizer state and lr from the reference."""
    trainer = Trainer(fw, optimizer, schedule, decay)
    ref = ReferenceOptimizer(optimizer, schedule, decay, {s.name: _weights()[s.name] for s in TRAINABLE})
    worst = {"param": 0.0, "state": 0.0, "lr": 0.0}
    for k, grads in enumerate(_grads(steps)):
        worst["lr"] = max(worst["lr"], abs(trainer.lr() - ref.lr) / ref.lr if ref.lr else abs(trainer.lr()))
        trainer.step(grads)
        ref.step(grads)
        got, want = trainer.params_canonical(), ref.params
        worst["param"] = max(worst["param"], max(float(np.abs(got[n] - want[n]).max()) for n in want))
        got_state, want_state = trainer.state_canonical(), ref.state
        for name, slots in want_state.items():
            assert set(got_state[name]) == set(slots), (fw, name, k)
            for slot, v in slots.items():
                worst["state"] = max(worst["state"], float(np.abs(got_state[name][slot] - v).max()))
    return worst


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_converter_follows_the_reference(fw, case):
    optimizer, schedule, decay = CASES[case]
    worst = _trajectory_error(fw, optimizer, schedule, decay)
    assert worst["param"] <= 1e-12 and worst["state"] <= 1e-12 and worst["lr"] <= 1e-13, worst


@pytest.mark.parametrize("fw", ["torch", "flax"])
def test_dampening_follows_the_reference(fw):
    """torch's first buffer is the undamped gradient; optax's trace has no dampening, so Flax uses damped_trace
    (Paddle has no dampening and refuses it: test_paddle_refuses_dampening)."""
    opt = OptimizerConfig("sgd", lr=0.125, momentum=0.875, dampening=0.25, weight_decay=2.0 ** -7)
    worst = _trajectory_error(fw, opt, ScheduleConfig("step", step_size=5, gamma=0.5), "no_bias_no_norm")
    assert worst["param"] <= 1e-12 and worst["state"] <= 1e-12 and worst["lr"] <= 1e-13, worst


def test_the_three_converters_mirror_each_other():
    """Same functions, same arguments after the first (a module in torch and Paddle, a parameter pytree in Flax),
    same defaults; the neutral config's defaults, never a framework's."""
    import importlib

    shared = ("create_optimizer", "optimizer_state", "current_lr")
    signatures = {}
    for fw in FRAMEWORKS:
        runner(fw)
        mod = importlib.import_module(f"backends.{fw}.optim")
        assert set(shared) <= set(mod.__all__), fw
        params = list(inspect.signature(mod.create_optimizer).parameters.values())
        signatures[fw] = [(p.name, p.default) for p in params[1:]]
    assert signatures["torch"] == signatures["paddle"] == signatures["flax"] == [
        ("optimizer", inspect.Parameter.empty), ("schedule", None), ("decay", "all")]


# ---------------------------------------------------------------------------------------------- issue 14 facts
def test_paddle_momentum_defaults_to_0_9():
    runner("paddle")
    import paddle

    from backends.paddle.optim import create_optimizer
    assert inspect.signature(paddle.optimizer.Momentum).parameters["momentum"].default == 0.9
    module = paddle.nn.Linear(2, 2)
    opt, _ = create_optimizer(module, OptimizerConfig("sgd", lr=0.1, momentum=0.5))
    assert type(opt).__name__ == "Momentum" and opt._momentum == 0.5
    # no momentum is Paddle's SGD, which keeps no velocity (Momentum left at its default would keep 0.9)
    opt, _ = create_optimizer(module, OptimizerConfig("sgd", lr=0.1))
    assert type(opt).__name__ == "SGD"


def test_paddle_refuses_dampening():
    runner("paddle")
    import paddle

    from backends.paddle.optim import create_optimizer
    with pytest.raises(ConfigError, match="Paddle's Momentum has no dampening, got 0.5"):
        create_optimizer(paddle.nn.Linear(2, 2), OptimizerConfig("sgd", lr=0.1, momentum=0.9, dampening=0.5))


def test_paddle_float32_attributes_drift():
    """Momentum 0.9 and the L2 coefficient 1e-2 reach Paddle's Momentum kernel as float32, AdamW's coefficient
    1e-2 its kernel too: the float64 run leaves 1e-12 of the reference (the Paddle rows' bound must allow for such
    values, or take representable ones as CASES does). Adam's betas 0.9 and 0.999 arrive in float64."""
    sgd = _trajectory_error("paddle", OptimizerConfig("sgd", lr=0.1, momentum=0.9, weight_decay=1e-2), None, "all")
    assert 1e-9 < sgd["param"] < 1e-5 and sgd["lr"] == 0.0, sgd
    adamw = _trajectory_error("paddle", OptimizerConfig("adamw", lr=0.01, weight_decay=1e-2), None, "all")
    assert 1e-12 < adamw["param"] < 1e-8 and adamw["state"] <= 1e-12, adamw
    adam = _trajectory_error("paddle", OptimizerConfig("adam", lr=0.01, weight_decay=2.0 ** -7), None, "all")
    assert adam["param"] <= 1e-12 and adam["state"] <= 1e-12, adam


def test_optax_adamw_default_decay_is_1e_4():
    runner("flax")
    import jax
    import optax

    assert inspect.signature(optax.adamw).parameters["weight_decay"].default == 1e-4
    opt = OptimizerConfig("adamw", lr=0.01, weight_decay=1e-2)  # torch's and Paddle's default decay
    p0 = {"w": np.linspace(-1.0, 1.0, 6)}
    with jax.enable_x64(True):
        tx = optax.adamw(0.01)  # decay left at optax's default
        state, params = tx.init(p0), p0
        ref = ReferenceOptimizer(opt, None, "all", p0)
        for k in range(20):
            g = {"w": np.cos(np.arange(6.0) + k)}
            updates, state = tx.update(g, state, params)
            params = optax.apply_updates(params, updates)
            ref.step(g)
    gap = float(np.abs(np.asarray(params["w"]) - ref.params["w"]).max())
    # the missing decay is lr * (1e-2 - 1e-4) * |p| per step, about 2e-3 of |p| <= 1 over 20 steps
    assert 1e-4 < gap < 1e-2


def test_optax_decay_after_the_momentum_is_decoupled_and_drifts():
    runner("flax")
    import jax
    import optax

    from backends.flax.optim import create_optimizer
    opt = OptimizerConfig("sgd", lr=0.1, momentum=0.9, weight_decay=0.05)
    p0 = {"w": np.linspace(-1.0, 1.0, 6)}
    wrong = optax.chain(optax.trace(0.9), optax.add_decayed_weights(0.05), optax.scale_by_learning_rate(0.1))
    gaps = {}
    with jax.enable_x64(True):
        for label, tx in (("converter", create_optimizer(p0, opt)), ("after", wrong)):
            state, params = tx.init(p0), p0
            ref = ReferenceOptimizer(opt, None, "all", p0)
            for k in range(20):
                g = {"w": np.sin(np.arange(6.0) * 0.7 + k)}
                updates, state = tx.update(g, state, params)
                params = optax.apply_updates(params, updates)
                ref.step(g)
            gaps[label] = float(np.abs(np.asarray(params["w"]) - ref.params["w"]).max())
    assert gaps["converter"] <= 1e-13 and gaps["after"] > 1e-2, gaps


def test_cosine_past_t_max_torch_rises_optax_holds():
    runner("torch")
    runner("flax")
    import jax
    import optax
    import torch

    from backends.flax.optim import schedule_fn
    lr, eta_min, t_max = 0.5, 0.05, 4
    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = torch.optim.SGD([p], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t_max, eta_min=eta_min)
    torch_lrs = []
    for _ in range(3 * t_max):
        torch_lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    with jax.enable_x64(True):
        optax_fn = optax.cosine_decay_schedule(lr, decay_steps=t_max, alpha=eta_min / lr)  # alpha is a ratio
        optax_lrs = [float(optax_fn(k)) for k in range(3 * t_max)]
        cycle = schedule_fn(OptimizerConfig("sgd", lr=lr), ScheduleConfig("cosine", t_max=t_max, eta_min=eta_min))
        hold = schedule_fn(OptimizerConfig("sgd", lr=lr),
                           ScheduleConfig("cosine", t_max=t_max, eta_min=eta_min, after_t_max="hold"))
        cycle_lrs, hold_lrs = [float(cycle(k)) for k in range(3 * t_max)], [float(hold(k)) for k in range(3 * t_max)]
    np.testing.assert_allclose(torch_lrs[:t_max + 1], optax_lrs[:t_max + 1], rtol=1e-13)
    assert torch_lrs[2 * t_max] == pytest.approx(lr, rel=1e-12) and optax_lrs[2 * t_max] == pytest.approx(eta_min)
    np.testing.assert_allclose(cycle_lrs, torch_lrs, rtol=1e-12)
    np.testing.assert_allclose(hold_lrs, optax_lrs, rtol=1e-13)
    sched_cfg = ScheduleConfig("cosine", t_max=t_max, eta_min=eta_min)
    assert [learning_rate(OptimizerConfig("sgd", lr=lr), sched_cfg, k) for k in range(3 * t_max)] == pytest.approx(
        torch_lrs, rel=1e-12)


def test_optax_schedule_counts_updates_in_epochs():
    runner("flax")
    import jax

    from backends.flax.optim import schedule_fn
    opt = OptimizerConfig("sgd", lr=1.0)
    sched = ScheduleConfig("step", step_size=2, gamma=0.5, warmup_epochs=1, warmup_start_factor=0.5,
                           steps_per_epoch=3)
    with jax.enable_x64(True):
        fn = schedule_fn(opt, sched)
        got = [float(fn(k)) for k in range(15)]
    assert got == pytest.approx([learning_rate(opt, sched, k) for k in range(15)], rel=1e-15)
    assert got[:3] == [0.5] * 3 and got[3] == 1.0 and got[9] == 0.5


def test_decay_rule_is_timms():
    """'no_bias_no_norm' puts in the decayed group exactly what timm's param_groups_weight_decay does."""
    r = runner("torch")
    import_timm()
    from timm.optim import _param_groups as timm_groups

    from attn_core.training import decay_mask
    module = r.backend().GAM(8, kernel_size=3)
    names = {id(p): n for n, p in module.named_parameters()}
    timm_decayed = {names[id(p)] for g in timm_groups.param_groups_weight_decay(module, 0.05)
                    if g["weight_decay"] > 0 for p in g["params"]}
    mask = decay_mask("no_bias_no_norm", {n: tuple(p.shape) for n, p in module.named_parameters()})
    assert timm_decayed == {n for n, flag in mask.items() if flag} and 0 < len(timm_decayed) < len(mask)


def test_timm_sgd_means_nesterov():
    """timm's optimizer name 'sgd' is Nesterov SGD: a port from a timm recipe needs nesterov=True here."""
    r = runner("torch")
    import_timm()
    import timm.optim as timm_optim
    opt = timm_optim.create_optimizer_v2(r.backend().GAM(8, kernel_size=3), "sgd", lr=0.1, momentum=0.9)
    assert opt.param_groups[0]["nesterov"] is True
    assert timm_optim.create_optimizer_v2(r.backend().GAM(8, kernel_size=3), "momentum", lr=0.1,
                                          momentum=0.9).param_groups[0]["nesterov"] is False


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_no_trainable_parameters_is_an_error(fw):
    r = runner(fw)
    opt = OptimizerConfig("sgd", lr=0.1)
    if fw == "flax":
        from backends.flax.optim import create_optimizer
        with pytest.raises(ConfigError, match="matches no parameter"):
            create_optimizer({}, opt)
        return
    module = r.backend().SimAM()  # parameter-free
    create_optimizer = __import__(f"backends.{fw}.optim", fromlist=["create_optimizer"]).create_optimizer
    with pytest.raises(ConfigError, match="SimAM has no trainable parameters"):
        create_optimizer(module, opt)


def test_cosine_cycle_formula():
    # the closed form the 'cycle' converters reproduce: back at lr after 2 * t_max epochs
    opt = OptimizerConfig("sgd", lr=0.3)
    sched = ScheduleConfig("cosine", t_max=3, eta_min=0.1)
    assert learning_rate(opt, sched, 6) == pytest.approx(0.3, rel=1e-15)
    assert learning_rate(opt, sched, 3) == pytest.approx(0.1, rel=1e-15)
    assert learning_rate(opt, sched, 4) == pytest.approx(0.1 + 0.2 * (1 + math.cos(math.pi * 4 / 3)) / 2, rel=1e-15)
