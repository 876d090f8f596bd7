"""The neutral training spec (:mod:`attn_core.training`) as an optax ``GradientTransformation``.

The mirror images are ``backends/torch/optim.py`` and ``backends/paddle/optim.py``: the same functions and
arguments (a parameter pytree where they take a module, an optax state where they take an optimizer), each checked
against :class:`attn_core.training.ReferenceOptimizer` in ``tests/backends/test_optim_converters.py``.

What the conversion has to get right:

- Coupled weight decay (torch's SGD and Adam) is ``add_decayed_weights`` *before* the sgd/adam transform, so that
  the decay passes through the momentum or the moments; placed after ``sgd`` it is decoupled decay and drifts from
  torch's.
- ``optax.adamw`` defaults to ``weight_decay=1e-4`` (torch and Paddle: 1e-2): it is always passed, with ``mask=``.
- optax's schedules count updates; the neutral schedule counts epochs, so the schedule is evaluated at
  ``count // steps_per_epoch``.
- ``cosine_decay_schedule`` holds its floor past ``decay_steps`` and its ``alpha`` is ``eta_min / lr``, a ratio;
  torch's and Paddle's cosine rises again past ``T_max``, which ``after_t_max='cycle'`` reproduces in closed form.
- optax's ``trace`` has no dampening; SGD with dampening uses :func:`damped_trace`, torch's rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from attn_core.training import OptimizerConfig, ScheduleConfig, decay_mask

__all__ = ["create_optimizer", "optimizer_state", "current_lr", "schedule_fn", "damped_trace", "flat_params"]

Schedule = Callable[[Any], Any]


def _key_name(entry: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _path(path: tuple[Any, ...]) -> str:
    return ".".join(_key_name(e) for e in path)


def flat_params(tree: Any) -> dict[str, Any]:
    """The leaves of a parameter pytree under their '.'-joined paths (``fc1.kernel``), the names every function
    here uses."""
    return {_path(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _epochs(inner: Schedule, steps_per_epoch: int) -> Schedule:
    """``inner`` of the epoch of an update count, given as a float: optax's schedules compute in the count's dtype
    where it is an integer, float32 even in JAX's 64-bit mode (``linear_schedule``)."""
    return lambda count: inner(jnp.asarray(count // steps_per_epoch, dtype=jnp.result_type(float)))


def _cosine_cycle(lr: float, t_max: int, eta_min: float) -> Schedule:
    """torch's and Paddle's closed-form cosine, which rises again past ``t_max`` (optax has none)."""
    return lambda epoch: eta_min + (lr - eta_min) * (1.0 + jnp.cos(jnp.pi * epoch / t_max)) / 2.0


def schedule_fn(optimizer: OptimizerConfig, schedule: ScheduleConfig | None = None) -> Schedule:
    """The learning rate as an optax schedule of the update count (epoch ``count // steps_per_epoch``)."""
    s = schedule if schedule is not None else ScheduleConfig()
    lr = float(optimizer.lr)
    main: Schedule
    if s.name == "step" and s.step_size is not None:
        main = optax.exponential_decay(lr, transition_steps=s.step_size, decay_rate=s.gamma, staircase=True)
    elif s.name == "multistep":
        main = optax.piecewise_constant_schedule(lr, dict.fromkeys(s.milestones, s.gamma))
    elif s.name == "cosine" and s.t_max is not None and s.after_t_max == "hold" and lr > 0:
        main = optax.cosine_decay_schedule(lr, decay_steps=s.t_max, alpha=s.eta_min / lr)
    elif s.name == "cosine" and s.t_max is not None:
        main = _cosine_cycle(lr, s.t_max, s.eta_min) if s.after_t_max == "cycle" else optax.constant_schedule(
            s.eta_min)
    else:
        main = optax.constant_schedule(lr)
    if s.warmup_epochs:
        warm = optax.linear_schedule(lr * s.warmup_start_factor, lr, transition_steps=s.warmup_epochs)
        main = optax.join_schedules([warm, main], boundaries=[s.warmup_epochs])
    return _epochs(main, s.steps_per_epoch)


class DampedTraceState(NamedTuple):
    """:func:`damped_trace`'s momentum buffer and update count."""

    trace: Any
    count: Any


def damped_trace(momentum: float, dampening: float) -> optax.GradientTransformation:
    """torch's SGD momentum with dampening: the first buffer is the gradient, then ``m * buf + (1 - d) * g``."""
    def init(params: Any) -> DampedTraceState:
        return DampedTraceState(jax.tree.map(jnp.zeros_like, params), jnp.zeros([], jnp.int32))

    def update(updates: Any, state: DampedTraceState, params: Any = None) -> tuple[Any, DampedTraceState]:
        first = state.count == 0
        trace = jax.tree.map(lambda g, t: jnp.where(first, g, momentum * t + (1.0 - dampening) * g),
                             updates, state.trace)
        return trace, DampedTraceState(trace, optax.safe_int32_increment(state.count))

    return optax.GradientTransformation(init, update)


class LearningRateState(NamedTuple):
    """The update count and the learning rate the next update uses (what torch's ``param_groups`` shows)."""

    count: Any
    lr: Any


def _track_lr(fn: Schedule) -> optax.GradientTransformation:
    """A pass-through that records the schedule's next learning rate in the state, for :func:`current_lr`."""
    def init(params: Any) -> LearningRateState:
        count = jnp.zeros([], jnp.int32)
        return LearningRateState(count, jnp.asarray(fn(count)))

    def update(updates: Any, state: LearningRateState, params: Any = None) -> tuple[Any, LearningRateState]:
        count = optax.safe_int32_increment(state.count)
        return updates, LearningRateState(count, jnp.asarray(fn(count), dtype=state.lr.dtype))

    return optax.GradientTransformation(init, update)


def create_optimizer(params: Any, optimizer: OptimizerConfig, schedule: ScheduleConfig | None = None,
                     decay: str = "all") -> optax.GradientTransformation:
    """An ``optax.chain`` for the parameter pytree ``params`` (``variables['params']``): weight decay on the
    leaves ``decay`` selects (by '.'-joined path and shape), the update, and a learning-rate record."""
    flat = flat_params(params)
    by_path = decay_mask(decay, {k: tuple(np.shape(v)) for k, v in flat.items()})
    mask = jax.tree_util.tree_map_with_path(lambda p, _: by_path[_path(p)], params)
    lr = schedule_fn(optimizer, schedule)
    wd = float(optimizer.weight_decay)
    core: optax.GradientTransformation
    if optimizer.decoupled:
        core = optax.adamw(lr, b1=optimizer.betas[0], b2=optimizer.betas[1], eps=optimizer.eps, eps_root=0.0,
                           weight_decay=wd, mask=mask)
    else:
        if optimizer.name == "adam":
            core = optax.adam(lr, b1=optimizer.betas[0], b2=optimizer.betas[1], eps=optimizer.eps, eps_root=0.0)
        elif optimizer.dampening != 0:
            core = optax.chain(damped_trace(optimizer.momentum, optimizer.dampening),
                               optax.scale_by_learning_rate(lr))
        else:
            core = optax.sgd(lr, momentum=optimizer.momentum or None, nesterov=optimizer.nesterov)
        if wd:
            core = optax.chain(optax.add_decayed_weights(wd, mask=mask), core)
    return optax.chain(core, _track_lr(lr))


def _states(tree: Any) -> Iterator[Any]:
    """Every optax state in a (nested) chain state."""
    if isinstance(tree, (optax.TraceState, optax.ScaleByAdamState, DampedTraceState, LearningRateState)):
        yield tree
    elif isinstance(tree, (tuple, list)):
        for item in tree:
            yield from _states(item)
    elif isinstance(tree, dict):
        for item in tree.values():
            yield from _states(item)


def optimizer_state(opt_state: Any, params: Any) -> dict[str, dict[str, np.ndarray]]:
    """Each parameter's optimizer state keyed by its '.'-joined path, under torch's slot names (``trace`` ->
    ``momentum_buffer``; Adam's ``mu``, ``nu`` -> ``exp_avg``, ``exp_avg_sq``), native layout."""
    out: dict[str, dict[str, np.ndarray]] = {k: {} for k in flat_params(params)}
    for state in _states(opt_state):
        if isinstance(state, (optax.TraceState, DampedTraceState)):
            slots = {"momentum_buffer": state.trace}
        elif isinstance(state, optax.ScaleByAdamState):
            slots = {"exp_avg": state.mu, "exp_avg_sq": state.nu}
        else:
            continue
        for slot, tree in slots.items():
            for k, v in flat_params(tree).items():
                out.setdefault(k, {})[slot] = np.array(v)
    return out


def current_lr(opt_state: Any) -> float:
    """The learning rate the next update uses, as recorded by :func:`create_optimizer`'s chain."""
    for state in _states(opt_state):
        if isinstance(state, LearningRateState):
            return float(state.lr)
    raise ValueError("current_lr: the state has no learning-rate record (not made by create_optimizer)")
