"""The neutral training spec (:mod:`attn_core.training`) as ``torch.optim`` and ``torch.optim.lr_scheduler`` objects.

The mirror images are ``backends/paddle/optim.py`` and ``backends/flax/optim.py``: the same functions and
arguments, each checked against :class:`attn_core.training.ReferenceOptimizer` in
``tests/backends/test_optim_converters.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import (
    ConstantLR,
    CosineAnnealingLR,
    LambdaLR,
    LinearLR,
    LRScheduler,
    MultiStepLR,
    SequentialLR,
    StepLR,
)

from attn_core.spec import ConfigError
from attn_core.training import SLOTS, OptimizerConfig, ScheduleConfig, decay_mask, learning_rate

__all__ = ["create_optimizer", "optimizer_state", "current_lr"]


def trainable(module: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters an optimizer updates, under their structured names."""
    return {name: p for name, p in module.named_parameters() if p.requires_grad}


def create_optimizer(module: nn.Module, optimizer: OptimizerConfig, schedule: ScheduleConfig | None = None,
                     decay: str = "all") -> tuple[torch.optim.Optimizer, LRScheduler]:
    """A ``torch.optim`` optimizer over ``module``'s trainable parameters and its learning-rate scheduler.

    Weight decay goes to the parameters ``decay`` selects (:func:`attn_core.training.decay_mask`), the others sit in
    a second group with ``weight_decay=0``. Call ``optimizer.step()`` every update and ``scheduler.step()`` after
    every ``schedule.steps_per_epoch`` updates (torch's schedulers count epochs).
    """
    schedule = schedule if schedule is not None else ScheduleConfig()
    params = trainable(module)
    if not params:
        raise ConfigError(f"create_optimizer: {type(module).__name__} has no trainable parameters")
    mask = decay_mask(decay, {name: tuple(p.shape) for name, p in params.items()})
    groups = [{"params": [p for name, p in params.items() if mask[name] == flag],
               "weight_decay": optimizer.weight_decay if flag else 0.0} for flag in (True, False)]
    groups = [g for g in groups if g["params"]]
    opt: torch.optim.Optimizer
    if optimizer.name == "sgd":
        opt = torch.optim.SGD(groups, lr=optimizer.lr, momentum=optimizer.momentum, dampening=optimizer.dampening,
                              nesterov=optimizer.nesterov, weight_decay=0.0)
    else:
        cls = torch.optim.AdamW if optimizer.decoupled else torch.optim.Adam
        opt = cls(groups, lr=optimizer.lr, betas=optimizer.betas, eps=optimizer.eps, weight_decay=0.0)
    return opt, _scheduler(opt, optimizer, schedule)


def _hold_factor(optimizer: OptimizerConfig, main: ScheduleConfig) -> Callable[[int], float]:
    """The cosine schedule that stays at ``eta_min`` past ``t_max`` (torch has none), as a LambdaLR factor."""
    def factor(epoch: int) -> float:
        return learning_rate(optimizer, main, epoch) / optimizer.lr if optimizer.lr else 0.0
    return factor


def _scheduler(opt: torch.optim.Optimizer, optimizer: OptimizerConfig, schedule: ScheduleConfig) -> LRScheduler:
    main: LRScheduler
    if schedule.name == "step" and schedule.step_size is not None:
        main = StepLR(opt, step_size=schedule.step_size, gamma=schedule.gamma)
    elif schedule.name == "multistep":
        main = MultiStepLR(opt, milestones=list(schedule.milestones), gamma=schedule.gamma)
    elif schedule.name == "cosine" and schedule.t_max is not None and schedule.after_t_max == "cycle":
        main = CosineAnnealingLR(opt, T_max=schedule.t_max, eta_min=schedule.eta_min)
    elif schedule.name == "cosine":
        main = LambdaLR(opt, _hold_factor(optimizer, dataclasses.replace(schedule, warmup_epochs=0, steps_per_epoch=1)))
    else:
        main = ConstantLR(opt, factor=1.0, total_iters=0)
    if not schedule.warmup_epochs:
        return main
    warm = LinearLR(opt, start_factor=schedule.warmup_start_factor, end_factor=1.0,
                    total_iters=schedule.warmup_epochs)
    return SequentialLR(opt, [warm, main], milestones=[schedule.warmup_epochs])


def optimizer_state(module: nn.Module, opt: torch.optim.Optimizer) -> dict[str, dict[str, np.ndarray]]:
    """Each trainable parameter's optimizer state (torch's slot names, native layout, copies in the parameter's
    dtype); a parameter without state yet (before the first step, or SGD without momentum) maps to ``{}``."""
    slots = {s for names in SLOTS.values() for s in names}
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, p in trainable(module).items():
        state = opt.state.get(p, {})
        out[name] = {slot: v.detach().cpu().numpy().copy() for slot, v in state.items()
                     if slot in slots and v is not None}
    return out


def current_lr(opt: torch.optim.Optimizer) -> float:
    """The learning rate the next ``opt.step()`` uses."""
    return float(opt.param_groups[0]["lr"])
