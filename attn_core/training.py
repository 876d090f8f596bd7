"""The neutral training spec: optimizer, learning-rate schedule and weight-decay rule, with a float64 reference.

Every default is written out here, never inherited from a framework, because the frameworks disagree (Paddle's
``Momentum`` defaults to momentum 0.9 where torch's SGD has 0; optax's ``adamw`` decays by 1e-4 where torch and
Paddle decay by 1e-2). The reference follows ``torch.optim`` (SGD, Adam, AdamW, single-tensor path) and
``torch.optim.lr_scheduler`` (StepLR, MultiStepLR, CosineAnnealingLR, LinearLR warm-up in a SequentialLR) operation
for operation, so that torch agrees with it to the last bits and the other frameworks' converters
(``backends/*/optim.py``) are checked against one float64 trajectory. NumPy only.
"""

from __future__ import annotations

import bisect
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .spec import ConfigError, as_int, as_real, coerce_numbers, is_real

__all__ = [
    "OPTIMIZERS", "SCHEDULES", "AFTER_T_MAX", "DECAY_RULES", "SLOTS",
    "OptimizerConfig", "ScheduleConfig", "GradientMismatchError",
    "decay_mask", "learning_rate", "ReferenceOptimizer", "softmax_cross_entropy",
]

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "multistep", "cosine")
#: what a cosine schedule does past ``t_max``: torch's and Paddle's closed form rises again ('cycle'); optax holds
#: its floor ('hold')
AFTER_T_MAX = ("cycle", "hold")
#: 'all' decays every parameter; 'no_bias_no_norm' is timm's rule (timm/optim/_param_groups.py,
#: param_groups_weight_decay): no decay on parameters with ndim <= 1 (norm scales and shifts, biases) or named *.bias
DECAY_RULES = ("all", "no_bias_no_norm")
#: the optimizer-state slots each optimizer keeps per parameter, under torch's names
SLOTS = {"sgd": ("momentum_buffer",), "adam": ("exp_avg", "exp_avg_sq"), "adamw": ("exp_avg", "exp_avg_sq")}


class GradientMismatchError(ValueError):
    """Gradients that do not fit the parameters: lists every missing, unexpected and mis-shaped entry."""


def _real(problems: list[str], name: str, value: Any, low: float | None = None, high: float | None = None,
          low_open: bool = False, high_open: bool = False) -> None:
    """Append to ``problems`` why ``value`` is not a finite real in the interval given by the bounds."""
    if not is_real(value):
        problems.append(f"{name} must be a finite real number, got {value!r}")
        return
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "-inf" if low is None else f"{low:g}"
        right = "inf" if high is None else f"{high:g}"
        opening = "(" if low_open or low is None else "["
        closing = ")" if high_open or high is None else "]"
        interval = f"{opening}{left}, {right}{closing}"
        problems.append(f"{name} must be in {interval}, got {value!r}")


def _int(problems: list[str], name: str, value: Any, minimum: int) -> None:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, int) or value < minimum:
        problems.append(f"{name} must be an integer >= {minimum}, got {value!r}")


def _choice(problems: list[str], name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        problems.append(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _raise(owner: str, problems: list[str]) -> None:
    if problems:
        raise ConfigError(f"{owner}: " + "; ".join(problems))


@dataclass(frozen=True)
class OptimizerConfig:
    """One optimizer, with torch's semantics and every default written out.

    Args:
        name: ``'sgd'``, ``'adam'`` or ``'adamw'``.
        lr: the base learning rate (what the schedule multiplies).
        momentum: SGD's momentum, in [0, 1); 0 keeps no buffer (torch's default, not Paddle's 0.9).
        dampening: SGD's dampening; the first step's buffer is the gradient itself, undamped (torch).
        nesterov: SGD's Nesterov momentum (needs momentum > 0 and dampening 0, as torch requires).
        weight_decay: for 'sgd' and 'adam' coupled (``grad + weight_decay * param``, an L2 penalty); for 'adamw'
            decoupled (``param -= lr * weight_decay * param`` before the Adam update).
        betas: Adam's (beta1, beta2), each in [0, 1).
        eps: Adam's epsilon, added outside the square root (torch, Paddle, optax's ``eps``; not ``eps_root``).
    """

    name: str
    lr: float
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def __post_init__(self) -> None:
        coerce_numbers(self)
        if isinstance(self.betas, (tuple, list)):
            object.__setattr__(self, "betas", tuple(as_real(b) for b in self.betas))
        problems: list[str] = []
        _choice(problems, "name", self.name, OPTIMIZERS)
        _real(problems, "lr", self.lr, low=0.0)
        _real(problems, "momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        _real(problems, "dampening", self.dampening, low=0.0, high=1.0)
        _real(problems, "weight_decay", self.weight_decay, low=0.0)
        _real(problems, "eps", self.eps, low=0.0, low_open=True)
        if not isinstance(self.nesterov, (bool, np.bool_)):
            problems.append(f"nesterov must be a bool, got {self.nesterov!r}")
        elif self.nesterov and not (is_real(self.momentum) and self.momentum > 0):
            problems.append("nesterov needs momentum > 0")
        if self.nesterov is True and is_real(self.dampening) and self.dampening != 0:
            problems.append(f"nesterov needs dampening 0, got {self.dampening!r}")
        if not (isinstance(self.betas, tuple) and len(self.betas) == 2):
            problems.append(f"betas must be a pair (beta1, beta2), got {self.betas!r}")
        else:
            for i, beta in enumerate(self.betas):
                _real(problems, f"betas[{i}]", beta, low=0.0, high=1.0, high_open=True)
        if self.name in ("adam", "adamw"):
            for field_name in ("momentum", "dampening"):
                if is_real(getattr(self, field_name)) and getattr(self, field_name) != 0:
                    problems.append(f"{field_name} is SGD's; {self.name} takes betas")
            if self.nesterov is True:
                problems.append(f"nesterov is SGD's; {self.name} takes betas")
        _raise("OptimizerConfig", problems)

    @property
    def decoupled(self) -> bool:
        """Whether weight decay shrinks the parameter apart from the gradient (AdamW) rather than adding to it."""
        return self.name == "adamw"


@dataclass(frozen=True)
class ScheduleConfig:
    """A learning-rate schedule counted in epochs (one ``scheduler.step()`` per epoch in torch and Paddle).

    The learning rate of epoch ``e`` is, after ``warmup_epochs`` epochs of linear warm-up from
    ``warmup_start_factor * lr`` towards ``lr`` (torch ``SequentialLR(LinearLR, main)``, Paddle
    ``LinearWarmup(main)``), the main schedule at its epoch ``e - warmup_epochs``:

    - ``'constant'``: ``lr``;
    - ``'step'``: ``lr * gamma ** (e // step_size)`` (StepLR);
    - ``'multistep'``: ``lr * gamma ** (number of milestones <= e)`` (MultiStepLR);
    - ``'cosine'``: ``eta_min + (lr - eta_min) * (1 + cos(pi * e / t_max)) / 2`` (CosineAnnealingLR); past
      ``t_max`` it rises again with ``after_t_max='cycle'`` (torch's and Paddle's closed form) or stays at
      ``eta_min`` with ``'hold'`` (optax's ``cosine_decay_schedule``, whose ``alpha`` is ``eta_min / lr``).

    ``steps_per_epoch`` converts optimizer updates to epochs: update ``k`` uses epoch ``k // steps_per_epoch``
    (optax counts updates, so its converter divides by it).
    """

    name: str = "constant"
    step_size: int | None = None
    gamma: float = 0.1
    milestones: tuple[int, ...] = ()
    t_max: int | None = None
    eta_min: float = 0.0
    after_t_max: str = "cycle"
    warmup_epochs: int = 0
    warmup_start_factor: float = 0.1
    steps_per_epoch: int = 1

    def __post_init__(self) -> None:
        coerce_numbers(self)
        if isinstance(self.milestones, (tuple, list)):
            object.__setattr__(self, "milestones", tuple(as_int(m) for m in self.milestones))
        problems: list[str] = []
        _choice(problems, "name", self.name, SCHEDULES)
        uses = {"step_size": "step", "milestones": "multistep", "t_max": "cosine"}
        for field_name, owner in uses.items():
            value = getattr(self, field_name)
            given = value is not None and value != ()
            if self.name == owner and not given:
                problems.append(f"the {owner!r} schedule needs {field_name}")
            elif self.name != owner and given and self.name in SCHEDULES:
                problems.append(f"{field_name} is the {owner!r} schedule's, not {self.name!r}'s")
        if self.name == "step" and self.step_size is not None:
            _int(problems, "step_size", self.step_size, 1)
        if self.name == "cosine" and self.t_max is not None:
            _int(problems, "t_max", self.t_max, 1)
        if self.name == "multistep" and self.milestones != ():
            if not isinstance(self.milestones, tuple) or not all(
                    isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in self.milestones):
                problems.append(f"milestones must be positive integers, got {self.milestones!r}")
            elif list(self.milestones) != sorted(set(self.milestones)):
                problems.append(f"milestones must be strictly increasing, got {self.milestones!r}")
        _real(problems, "gamma", self.gamma, low=0.0, low_open=True)
        _real(problems, "eta_min", self.eta_min, low=0.0)
        _choice(problems, "after_t_max", self.after_t_max, AFTER_T_MAX)
        _int(problems, "warmup_epochs", self.warmup_epochs, 0)
        # torch's LinearLR refuses a start factor of 0 or above 1
        _real(problems, "warmup_start_factor", self.warmup_start_factor, low=0.0, high=1.0, low_open=True)
        _int(problems, "steps_per_epoch", self.steps_per_epoch, 1)
        _raise("ScheduleConfig", problems)

    def epoch_of(self, step: int) -> int:
        """The epoch whose learning rate optimizer update number ``step`` (0-based) uses."""
        return step // self.steps_per_epoch


def decay_mask(rule: str, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, bool]:
    """Which parameters weight decay applies to under ``rule`` (one of :data:`DECAY_RULES`).

    ``'no_bias_no_norm'`` is timm's rule: no decay where ``len(shape) <= 1`` or the name ends in ``.bias``. A rule
    that decays nothing or everything is accepted (a model without biases or norms is legitimate); an empty
    ``shapes`` is refused, because a rule that matches no parameter at all means the names were not the model's
    trainable parameters.
    """
    if rule not in DECAY_RULES:
        raise ConfigError(f"decay rule must be one of {', '.join(map(repr, DECAY_RULES))}, got {rule!r}")
    if not shapes:
        raise ConfigError(f"decay rule {rule!r} matches no parameter: no parameters were given")
    if rule == "all":
        return {name: True for name in shapes}
    return {name: not (len(tuple(shape)) <= 1 or name.endswith(".bias"))
            for name, shape in shapes.items()}


def learning_rate(optimizer: OptimizerConfig, schedule: ScheduleConfig | None, step: int) -> float:
    """The learning rate optimizer update number ``step`` (0-based) uses, in float64 from the closed forms."""
    if isinstance(step, (bool, np.bool_)) or not isinstance(step, numbers.Integral) or step < 0:
        raise ConfigError(f"learning_rate: step must be an integer >= 0, got {step!r}")
    sched = schedule if schedule is not None else ScheduleConfig()
    lr = float(optimizer.lr)
    epoch = sched.epoch_of(int(step))
    if epoch < sched.warmup_epochs:
        start = sched.warmup_start_factor
        return lr * (start + (1.0 - start) * epoch / sched.warmup_epochs)
    e = epoch - sched.warmup_epochs
    if sched.name == "step" and sched.step_size is not None:  # ScheduleConfig guarantees step_size for 'step'
        return lr * sched.gamma ** (e // sched.step_size)
    if sched.name == "multistep":
        return lr * sched.gamma ** bisect.bisect_right(sched.milestones, e)
    if sched.name == "cosine" and sched.t_max is not None:  # ScheduleConfig guarantees t_max for 'cosine'
        if sched.after_t_max == "hold" and e >= sched.t_max:
            return float(sched.eta_min)
        return sched.eta_min + (lr - sched.eta_min) * (1.0 + math.cos(math.pi * e / sched.t_max)) / 2.0
    return lr


def _check_grads(params: Mapping[str, np.ndarray], grads: Mapping[str, Any]) -> None:
    missing = [k for k in params if k not in grads]
    unexpected = [k for k in grads if k not in params]
    mismatched = [(k, params[k].shape, np.shape(grads[k])) for k in params if k in grads
                  and np.shape(grads[k]) != params[k].shape]
    if not (missing or unexpected or mismatched):
        return
    lines = ["gradients do not fit the parameters; nothing was updated."]
    if missing:
        lines.append("  missing: " + ", ".join(missing))
    if unexpected:
        lines.append("  unexpected: " + ", ".join(unexpected))
    for name, want, got in mismatched:
        lines.append(f"  wrong shape: {name}: expected {want}, got {got}")
    raise GradientMismatchError("\n".join(lines))


def _frozen(a: np.ndarray) -> np.ndarray:
    """``a`` made read-only, so that the optimizer can hand out its arrays without copying them."""
    a.flags.writeable = False
    return a


def _add(fresh: np.ndarray, other: np.ndarray) -> np.ndarray:
    """``fresh + other`` into ``fresh``, a temporary nobody else holds."""
    fresh += other
    return fresh


def _lerp(start: np.ndarray, end: np.ndarray, weight: float) -> np.ndarray:
    """torch's ``lerp`` on CPU, which picks the formula by the weight so that the rounding matches."""
    out: np.ndarray = start + weight * (end - start) if weight < 0.5 else end - (end - start) * (1.0 - weight)
    return out


class ReferenceOptimizer:
    """A float64 optimizer with torch's update rules, on a copy of ``params`` (name -> array).

    ``decay`` is one of :data:`DECAY_RULES`; parameters it excludes get no weight decay (coupled or decoupled).
    ``state`` (torch's slot names) and ``steps`` resume an optimizer that has already taken ``steps`` updates.
    Call :meth:`step` with one gradient per parameter; :attr:`params`, :attr:`state` (torch's slot names),
    :attr:`lr` (the rate the next step uses) and :attr:`steps` (updates done) describe it after each step.
    """

    def __init__(self, optimizer: OptimizerConfig, schedule: ScheduleConfig | None, decay: str,
                 params: Mapping[str, np.ndarray], *, state: Mapping[str, Mapping[str, np.ndarray]] | None = None,
                 steps: int = 0):
        if not isinstance(optimizer, OptimizerConfig):
            raise ConfigError(f"ReferenceOptimizer: optimizer must be an OptimizerConfig, got {optimizer!r}")
        if schedule is not None and not isinstance(schedule, ScheduleConfig):
            raise ConfigError(f"ReferenceOptimizer: schedule must be a ScheduleConfig or None, got {schedule!r}")
        self.optimizer = optimizer
        self.schedule = schedule if schedule is not None else ScheduleConfig()
        self._params = {k: _frozen(np.array(v, dtype=np.float64, copy=True)) for k, v in params.items()}
        self.decay = decay
        self.mask = decay_mask(decay, {k: v.shape for k, v in self._params.items()})
        if steps < 0:
            raise ConfigError(f"ReferenceOptimizer: steps must be at least 0, got {steps}")
        unknown = sorted(set(state or {}) - set(self._params))
        if unknown:
            raise ConfigError(f"ReferenceOptimizer: state for parameters it does not hold: {', '.join(unknown)}")
        self._state: dict[str, dict[str, np.ndarray]] = {
            k: {slot: _frozen(np.array(v, dtype=np.float64, copy=True)) for slot, v in (state or {}).get(k, {}).items()}
            for k in self._params}
        self.steps = steps

    @property
    def params(self) -> dict[str, np.ndarray]:
        """The parameters, read-only: each step makes new arrays, so the ones returned never change."""
        return dict(self._params)

    @property
    def state(self) -> dict[str, dict[str, np.ndarray]]:
        """The slots, read-only and never changed afterwards, as :attr:`params`."""
        return {k: dict(slots) for k, slots in self._state.items()}

    @property
    def lr(self) -> float:
        return learning_rate(self.optimizer, self.schedule, self.steps)

    def step(self, grads: Mapping[str, np.ndarray]) -> None:
        _check_grads(self._params, grads)
        lr = self.lr
        for name, p in self._params.items():
            g = np.asarray(grads[name], dtype=np.float64)
            wd = self.optimizer.weight_decay if self.mask[name] else 0.0
            update = self._sgd if self.optimizer.name == "sgd" else self._adam
            self._params[name] = _frozen(update(name, p, g, lr, wd))
        self.steps += 1

    def _sgd(self, name: str, p: np.ndarray, g: np.ndarray, lr: float, wd: float) -> np.ndarray:
        o = self.optimizer
        # in-place arithmetic on fresh temporaries: the same roundings as the expressions, fewer arrays allocated
        if wd != 0:
            g = _add(wd * p, g)
        if o.momentum != 0:
            slots = self._state[name]
            # torch starts the buffer at the gradient itself, undamped
            buf = g.copy() if "momentum_buffer" not in slots else _add(
                slots["momentum_buffer"] * o.momentum, (1.0 - o.dampening) * g)
            slots["momentum_buffer"] = _frozen(buf)
            g = _add(o.momentum * buf, g) if o.nesterov else buf
        return _add(g * (-lr), p)

    def _adam(self, name: str, p: np.ndarray, g: np.ndarray, lr: float, wd: float) -> np.ndarray:
        o = self.optimizer
        beta1, beta2 = o.betas
        if wd != 0 and o.decoupled:
            p = p * (1.0 - lr * wd)
        elif wd != 0:
            g = g + wd * p
        slots = self._state[name]
        exp_avg = _lerp(slots.get("exp_avg", np.zeros_like(p)), g, 1.0 - beta1)
        exp_avg_sq = slots.get("exp_avg_sq", np.zeros_like(p)) * beta2 + (1.0 - beta2) * g * g
        slots["exp_avg"], slots["exp_avg_sq"] = _frozen(exp_avg), _frozen(exp_avg_sq)
        t = self.steps + 1
        step_size = lr / (1.0 - beta1 ** t)
        denom = np.sqrt(exp_avg_sq) / (1.0 - beta2 ** t) ** 0.5 + o.eps
        out: np.ndarray = p + (-step_size) * (exp_avg / denom)
        return out


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean softmax cross-entropy of ``logits`` (N, K) against integer ``labels`` (N,) and its gradient, float64."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    if z.ndim != 2 or y.shape != (z.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"softmax_cross_entropy: logits (N, K) and integer labels (N,) expected, got logits "
                         f"{z.shape} and labels {y.shape} {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= z.shape[1]):
        raise ValueError(f"softmax_cross_entropy: labels must be in [0, {z.shape[1]}), got {y.min()}..{y.max()}")
    n = z.shape[0]
    shifted = z - z.max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(shifted).sum(axis=1))
    rows = np.arange(n)
    loss = float(np.mean(log_sum - shifted[rows, y]))
    dlogits = np.exp(shifted - log_sum[:, None])
    dlogits[rows, y] -= 1.0
    return loss, dlogits / n
