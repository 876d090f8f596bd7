"""The neutral training spec (:mod:`attn_core.training`) as ``paddle.optimizer`` and ``paddle.optimizer.lr`` objects.

The mirror images are ``backends/torch/optim.py`` and ``backends/flax/optim.py``: the same functions and
arguments, each checked against :class:`attn_core.training.ReferenceOptimizer` in
``tests/backends/test_optim_converters.py``.

What the conversion has to get right:

- ``paddle.optimizer.Momentum`` defaults to momentum 0.9 (torch's SGD to 0): it is always passed explicitly, and
  SGD without momentum is ``paddle.optimizer.SGD``, which keeps no velocity (as torch keeps no buffer).
- Coupled weight decay (SGD, Adam) is a parameter group's float ``weight_decay``, which Paddle turns into an
  ``L2Decay`` on each parameter (fused into the Momentum kernel, added to the gradient for SGD and Adam); the
  parameters the decay rule excludes sit in a group with ``weight_decay=0.0``.
- AdamW's decay is decoupled; ``apply_decay_param_fun`` receives Paddle's internal ``param.name``
  (``linear_0.w_0``), not the structured name, so the excluded structured names are mapped to it.
- The Momentum kernel takes the momentum and the L2 coefficient, the AdamW kernel its decay coefficient, as
  float32 attributes: a float64 run drifts from the float64 reference (by about 1e-7 of the update per step for
  momentum 0.9) unless those values are exactly representable in float32 (0.875, 2**-7). Adam's betas and
  epsilon, and the learning rate (a tensor of the parameters' dtype), reach the kernels in float64.
- Paddle's schedulers count epochs like torch's; the cosine schedule rises again past ``T_max`` as torch's does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import paddle
from paddle import nn
from paddle.optimizer import lr as lr_sched

from attn_core.spec import ConfigError
from attn_core.training import OptimizerConfig, ScheduleConfig, decay_mask, learning_rate

__all__ = ["create_optimizer", "optimizer_state", "current_lr"]

# Paddle's accumulator names -> torch's slot names (the beta-power accumulators have no torch counterpart: torch
# keeps the step count instead)
SLOT_NAMES = {"velocity": "momentum_buffer", "moment1": "exp_avg", "moment2": "exp_avg_sq"}


def trainable(module: nn.Layer) -> dict[str, Any]:
    """The parameters an optimizer updates, under their structured names."""
    return {name: p for name, p in module.named_parameters() if not p.stop_gradient}


def create_optimizer(module: nn.Layer, optimizer: OptimizerConfig, schedule: ScheduleConfig | None = None,
                     decay: str = "all") -> tuple[paddle.optimizer.Optimizer, lr_sched.LRScheduler]:
    """A ``paddle.optimizer`` optimizer over ``module``'s trainable parameters and its learning-rate scheduler.

    Call ``optimizer.step()`` every update and ``scheduler.step()`` after every ``schedule.steps_per_epoch``
    updates (Paddle's schedulers count epochs). SGD with dampening has no Paddle counterpart and is refused.
    """
    schedule = schedule if schedule is not None else ScheduleConfig()
    params = trainable(module)
    if not params:
        raise ConfigError(f"create_optimizer: {type(module).__name__} has no trainable parameters")
    if optimizer.name == "sgd" and optimizer.dampening != 0:
        raise ConfigError(f"create_optimizer: Paddle's Momentum has no dampening, got {optimizer.dampening!r}")
    mask = decay_mask(decay, {name: tuple(p.shape) for name, p in params.items()})
    scheduler = _scheduler(optimizer, schedule)
    opt: paddle.optimizer.Optimizer
    if optimizer.decoupled:
        decayed = {p.name for name, p in params.items() if mask[name]}
        for p in params.values():
            # a parameter keeps the L2Decay an earlier optimizer's group gave it, which AdamW would add on top
            p.regularizer = None
        opt = paddle.optimizer.AdamW(
            learning_rate=scheduler, beta1=optimizer.betas[0], beta2=optimizer.betas[1], epsilon=optimizer.eps,
            parameters=list(params.values()), weight_decay=optimizer.weight_decay,
            apply_decay_param_fun=lambda name: name in decayed)
        return opt, scheduler
    groups = [{"params": [p for name, p in params.items() if mask[name] == flag],
               "weight_decay": float(optimizer.weight_decay) if flag else 0.0} for flag in (True, False)]
    groups = [g for g in groups if g["params"]]
    if optimizer.name == "adam":
        opt = paddle.optimizer.Adam(learning_rate=scheduler, beta1=optimizer.betas[0], beta2=optimizer.betas[1],
                                    epsilon=optimizer.eps, parameters=groups)
    elif optimizer.momentum == 0:
        opt = paddle.optimizer.SGD(learning_rate=scheduler, parameters=groups)
    else:
        opt = paddle.optimizer.Momentum(learning_rate=scheduler, momentum=optimizer.momentum,
                                        use_nesterov=optimizer.nesterov, parameters=groups)
    return opt, scheduler


def _factor(optimizer: OptimizerConfig, schedule: ScheduleConfig) -> Callable[[int], float]:
    """The reference's closed form as a LambdaDecay factor, for what Paddle's schedulers cannot express."""
    def factor(epoch: int) -> float:
        return learning_rate(optimizer, schedule, epoch) / optimizer.lr if optimizer.lr else 0.0
    return factor


def _scheduler(optimizer: OptimizerConfig, schedule: ScheduleConfig) -> lr_sched.LRScheduler:
    lr = float(optimizer.lr)
    per_epoch = dataclasses.replace(schedule, steps_per_epoch=1)  # Paddle's scheduler is stepped once per epoch
    # Paddle refuses gamma >= 1 and a warm-up that starts at lr (end_lr must exceed start_lr); the closed form
    # then stands in
    if (schedule.name in ("step", "multistep") and schedule.gamma >= 1) or (
            schedule.warmup_epochs and (schedule.warmup_start_factor == 1 or lr == 0)):
        return lr_sched.LambdaDecay(lr, _factor(optimizer, per_epoch))
    main_only = dataclasses.replace(per_epoch, warmup_epochs=0)
    main: lr_sched.LRScheduler
    if schedule.name == "step" and schedule.step_size is not None:
        main = lr_sched.StepDecay(lr, step_size=schedule.step_size, gamma=schedule.gamma)
    elif schedule.name == "multistep":
        main = lr_sched.MultiStepDecay(lr, milestones=list(schedule.milestones), gamma=schedule.gamma)
    elif schedule.name == "cosine" and schedule.t_max is not None and schedule.after_t_max == "cycle":
        main = lr_sched.CosineAnnealingDecay(lr, T_max=schedule.t_max, eta_min=float(schedule.eta_min))
    elif schedule.name == "cosine":
        main = lr_sched.LambdaDecay(lr, _factor(optimizer, main_only))  # Paddle has no cosine that holds its floor
    else:
        main = lr_sched.LambdaDecay(lr, lambda epoch: 1.0)
    if not schedule.warmup_epochs:
        return main
    return lr_sched.LinearWarmup(main, warmup_steps=schedule.warmup_epochs,
                                 start_lr=lr * schedule.warmup_start_factor, end_lr=lr)


def optimizer_state(module: nn.Layer, opt: paddle.optimizer.Optimizer) -> dict[str, dict[str, np.ndarray]]:
    """Each trainable parameter's optimizer state under torch's slot names (``momentum_buffer``; ``exp_avg``,
    ``exp_avg_sq``), native layout, copies in the parameter's dtype; ``{}`` before the first step or for SGD."""
    # Paddle exposes its accumulators only as ``_accumulators`` (accumulator name -> param.name -> tensor)
    accumulators = getattr(opt, "_accumulators", {})
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, p in trainable(module).items():
        out[name] = {slot: accumulators[acc][p.name].numpy().copy() for acc, slot in SLOT_NAMES.items()
                     if p.name in accumulators.get(acc, {})}
    return out


def current_lr(opt: paddle.optimizer.Optimizer) -> float:
    """The learning rate the next ``opt.step()`` uses."""
    return float(opt.get_lr())
