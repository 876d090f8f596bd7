"""``conformance.check_training``: your own training step, run K steps and checked against the float64 reference.

::

    model = backends.torch.create_model("resnet18", num_classes=10)        # or your own port
    opt = torch.optim.SGD(model.parameters(), lr=2**-7, momentum=0.875)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)

    def step(x, y):                       # torch: does the whole step and returns the loss
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        sched.step()
        return loss

    report = conformance.check_training(step, model, "resnet18", optim=opt,
                                        optimizer=OptimizerConfig("sgd", lr=2**-7, momentum=0.875),
                                        schedule=ScheduleConfig("step", step_size=3, gamma=0.5))
    print(report)            # the first quantity that differs from the reference, and at which step

The model is loaded in place, in float64, with the seeded canonical weights of ``spec`` (a registered model name
or a model config); your step runs on K seeded batches (NCHW, or the module's layout) with integer labels, and
after each step the check reads, through the framework's runner (:meth:`conformance.runners.Runner.wrap`), the
loss your step returned, the gradients it left, the running statistics, the learning rate and optimizer state of
``optim`` and the parameters, and compares them with the float64 reference trajectory of ``optimizer``,
``schedule`` and ``decay`` (:func:`conformance.training.reference_trajectory`: the reference forward, mean
softmax cross-entropy, its VJP and ``attn_core.training.ReferenceOptimizer``).

The step function's contract, per framework:

- torch: ``step_fn(x, y) -> loss``, ``x`` a float64 NCHW tensor, ``y`` int64 labels; it does the forward, the
  backward, ``optimizer.step()`` and ``scheduler.step()`` on the ``model`` you pass. Pass the optimizer as
  ``optim=`` for its learning rate (``param_groups[0]['lr']`` before the step) and state to be compared; the
  gradients are compared when the step leaves them in ``.grad`` (``zero_grad`` at the start of a step).
- Paddle: the same with Paddle tensors; ``paddle.Model.train_batch`` fits as ``lambda x, y: m.train_batch([x],
  [y])`` with ``model=m.network`` and ``optim=m._optimizer`` (it clears the gradients, so they are not
  compared); a returned list or tuple counts by its first element.
- Flax: ``step_fn(state, x, y) -> (state, loss)`` on a ``flax.training.train_state.TrainState`` (with
  ``batch_stats`` when the model has BatchNorm), ``x`` NHWC; pass the state as ``state=``: the check replaces its
  parameters and statistics with the canonical weights and its ``opt_state`` with ``state.tx.init``. The
  optimizer state is compared as ``backends.flax.optim.optimizer_state`` reads it (optax's trace and Adam
  states); the learning rate where ``state.tx`` records it (``backends.flax.optim.create_optimizer``).

The first difference is searched step by step and, within a step, in data-flow order: the loss, the running
statistics, the gradients, the learning rate, the optimizer state, the parameters (:data:`STAGES`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from attn_core import AttentionConfig
from attn_core.autodiff import Node, backward
from attn_core.native_state import flatten_variables
from attn_core.training import OptimizerConfig, ReferenceOptimizer, ScheduleConfig, learning_rate, softmax_cross_entropy

from .check import comparison_numbers, json_clean, runner_for
from .model_cases import CLASSES, MODEL_NAMES
from .runners import Handle
from .runners.base import NativeTrainStep, TrainStep, canonical_step
from .runners.handle import ParamMap
from .suite import Comparison, Report, Row, compare
from .tolerances import tolerance_for
from .training import TrainingData, TrainingPreset, reference_trajectory, training_data, worst_per_quantity

__all__ = ["check_training", "TrainingCheckReport", "TrainingDiagnosis", "STAGES", "SHAPE"]

#: quantity prefix -> how the diagnosis names it, in the order the first difference is searched within a step
STAGES: Mapping[str, str] = {"loss": "loss", "state:": "running statistics", "grad:": "gradient",
                             "lr": "learning rate", "optim:": "optimizer state", "param:": "parameter"}
#: the input of every step: small enough for a ResNet-18 in float64 in seconds
SHAPE: tuple[int, int, int, int] = (4, 3, 16, 16)
_DTYPE = "float64"


@dataclass
class TrainingDiagnosis:
    """Where the trajectory first leaves the reference: the 1-based ``step``, the ``stage`` in words
    (:data:`STAGES`, or 'error' when the step raised), the ``quantity`` (``'loss'``, ``'grad:fc.weight'``,
    ``'optim:fc.weight.momentum_buffer'``, ...), its comparison and a sentence."""

    step: int
    stage: str
    quantity: str
    comparison: Comparison | None
    text: str


@dataclass
class TrainingCheckReport:
    """The verdict of :func:`check_training`: one row (its comparisons are each quantity's worst step), per step
    every comparison, and the diagnosis of the first difference (None when every step agrees)."""

    model: str
    framework: str
    optimizer: OptimizerConfig
    schedule: ScheduleConfig | None
    decay: str
    report: Report
    per_step: list[list[Comparison]]
    diagnosis: TrainingDiagnosis | None
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.diagnosis is None and bool(self.report.passed)

    @property
    def first_difference(self) -> TrainingDiagnosis | None:
        return self.diagnosis

    def __str__(self) -> str:
        lines = [f"check_training: {self.model} ({self.framework}), {self.optimizer}, {self.schedule}, "
                 f"decay {self.decay!r}, {len(self.per_step)} steps, {_DTYPE}"]
        lines += [f"  note: {n}" for n in self.notes]
        for step, comps in enumerate(self.per_step, start=1):
            bad = [c for c in comps if not c.passed]
            worst = max((c.worst_ratio for c in comps), default=0.0)
            lines.append(f"  step {step}: {'ok' if not bad else f'{len(bad)} quantities differ'} "
                         f"(worst {worst:.3g}x tolerance)")
        if self.diagnosis is not None:
            lines.append(f"  first difference at step {self.diagnosis.step}: {self.diagnosis.text}")
        lines.append(("PASS" if self.passed else "FAIL") + ": " + self.report.summary())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = json_clean({"passed": self.passed, "model": self.model, "framework": self.framework,
                       "optimizer": asdict(self.optimizer),
                       "schedule": None if self.schedule is None else asdict(self.schedule), "decay": self.decay,
                       "notes": list(self.notes), "report": self.report.to_dict(),
                       "diagnosis": None if self.diagnosis is None else asdict(self.diagnosis)})
        return out

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)


def _config_of(cls: type, value: Any, what: str) -> Any:
    """An attn_core config from itself or a mapping of its fields (whose names attn_core checks: ConfigError)."""
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        return cls(**value)
    raise TypeError(f"{what} must be a {cls.__name__} or a mapping of its fields, got {value!r}")


def _data(spec: str | AttentionConfig, steps: int, shape: tuple[int, int, int, int]) -> TrainingData:
    """The seeded weights and batches: :func:`conformance.training.training_data` for a registered name; for a
    config, the same draws seeded by its class name."""
    if isinstance(spec, str):
        if spec not in MODEL_NAMES:
            raise ValueError(f"unknown model {spec!r}; known: {', '.join(MODEL_NAMES)}")
        return training_data(spec, steps, shape)
    if not isinstance(spec, AttentionConfig):
        raise TypeError(f"spec must be a registered model name or an attn_core model config, got {spec!r}")
    label = type(spec).__name__
    classes = int(getattr(spec, "num_classes", CLASSES))
    weights = spec.init_weights(np.random.default_rng(zlib.crc32(f"{label}/training".encode())))
    rng = np.random.default_rng(zlib.crc32(f"{label}/training/batches".encode()))
    batches = tuple(rng.standard_normal(shape) for _ in range(steps))
    labels = tuple(rng.integers(0, classes, shape[0]) for _ in range(steps))
    return TrainingData(label, spec, weights, batches, labels)


def _reference_grads(data: TrainingData, ref: Sequence[TrainStep]) -> list[dict[str, np.ndarray]]:
    """Each step's float64 gradients, at the weights the reference trajectory held before that step."""
    config = data.config
    trainable = [p.name for p in config.param_table() if p.trainable]
    current = {k: np.asarray(v, dtype=np.float64) for k, v in data.weights.items()}
    out = []
    for x, y, step in zip(data.batches, data.labels, ref, strict=True):
        nodes = {k: Node(v) for k, v in current.items()}
        logits = config.reference_forward(Node(np.asarray(x, dtype=np.float64)), nodes, training=True)
        grads = backward(logits, softmax_cross_entropy(logits.value, y)[1], [nodes[k] for k in trainable])
        out.append(dict(zip(trainable, grads, strict=True)))
        current.update(step.params)
        current.update(step.running)
    return out


@functools.lru_cache(maxsize=8)
def _reference(spec: str | AttentionConfig, steps: int, shape: tuple[int, int, int, int], preset: TrainingPreset
               ) -> tuple[TrainingData, list[TrainStep], list[dict[str, np.ndarray]]]:
    """The data, reference trajectory and gradients of one check, kept for the next check of the same spec and
    training config (a port and its corrected version are checked against one trajectory)."""
    data = _data(spec, steps, shape)
    reference = reference_trajectory(data, preset)
    return data, reference, _reference_grads(data, reference)


def _scalar(value: Any, runner: Any) -> float:
    """The loss a step returned: a number, a 0-d/1-element tensor or array, or the first of a list or tuple."""
    while isinstance(value, (list, tuple)) and value:
        value = value[0]
    if isinstance(value, (int, float, np.ndarray, np.generic)):
        return float(np.asarray(value, dtype=np.float64).reshape(-1)[0])
    return float(runner.to_numpy(value, _DTYPE).reshape(-1)[0])


# ------------------------------------------------------------------------------- per framework: one step each
@dataclass
class _Loop:
    """A framework's way to load the weights, run the user's step and read back what it left (native names)."""

    runner: Any
    handle: Handle
    step_fn: Callable[..., Any]
    optim: Any
    state: Any = None
    notes: list[str] = field(default_factory=list)

    def scope(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def load(self, native: Mapping[str, np.ndarray]) -> None:
        raise NotImplementedError

    def step(self, x: np.ndarray, y: np.ndarray) -> NativeTrainStep:
        raise NotImplementedError

    def grads(self) -> dict[str, np.ndarray | None] | None:
        return None


class _EagerLoop(_Loop):
    """torch and Paddle: the model holds its weights; the optimizer object its lr and state."""

    def _optim_module(self) -> Any:
        import importlib

        return importlib.import_module(f"{self.runner.backend_package}.optim")

    def load(self, native: Mapping[str, np.ndarray]) -> None:
        module = self.handle.module
        module.to(dtype=_DTYPE) if self.runner.framework == "paddle" else module.double()
        module.train()
        state = module.state_dict()
        for name, value in native.items():
            if self.runner.framework == "paddle":
                state[name].set_value(value.astype(np.float64))
            else:
                import torch

                with torch.no_grad():
                    state[name].copy_(torch.from_numpy(value))
        if self.optim is None:
            self.notes.append("no optimizer object given (optim=...): its learning rate and state are not "
                              "compared")

    def step(self, x: np.ndarray, y: np.ndarray) -> NativeTrainStep:
        optim = self._optim_module()
        lr = None if self.optim is None else float(optim.current_lr(self.optim))
        loss = _scalar(self.step_fn(self.runner.tensor(x, _DTYPE), self.runner.tensor(y, "int64")), self.runner)
        arrays = self.runner._named_arrays(self.handle.module)
        slots = {} if self.optim is None else optim.optimizer_state(self.handle.module, self.optim)
        return NativeTrainStep(loss, lr, {b.native: arrays[b.native] for b in self.handle.trainable}, slots,
                               {b.native: arrays[b.native] for b in self.handle.state_bindings})

    def grads(self) -> dict[str, np.ndarray | None] | None:
        module = self.handle.module
        params = dict(module.named_parameters())
        got = {b.native: getattr(params.get(b.native), "grad", None) for b in self.handle.trainable}
        arrays = {k: None if g is None else self.runner.to_numpy(g, _DTYPE) for k, g in got.items()}
        if all(a is None or not a.any() for a in arrays.values()):
            return None  # cleared by the step (Paddle's train_batch zeroes them, torch's zero_grad at the end)
        return arrays

    def scope(self) -> contextlib.AbstractContextManager[Any]:
        if self.runner.framework == "paddle":
            from .runners.paddle_runner import _dygraph_on_cpu

            return _dygraph_on_cpu()
        return contextlib.nullcontext()


class _FlaxLoop(_Loop):
    """Flax: the weights, statistics and optimizer state live in the TrainState the step returns."""

    def scope(self) -> contextlib.AbstractContextManager[Any]:
        return _flax_scope()

    def load(self, native: Mapping[str, np.ndarray]) -> None:
        from .runners.flax_runner import _variables

        variables = _variables(self.handle, dict(native), _DTYPE)
        params = variables["params"]
        extra = {"batch_stats": variables["batch_stats"]} if "batch_stats" in variables else {}
        if extra and not hasattr(self.state, "batch_stats"):
            raise ValueError("the model has BatchNorm statistics but the state has no batch_stats field: use a "
                             "TrainState subclass with batch_stats")
        self.state = self.state.replace(step=0, params=params, opt_state=self.state.tx.init(params), **extra)

    def step(self, x: np.ndarray, y: np.ndarray) -> NativeTrainStep:
        import jax.numpy as jnp

        from backends.flax.optim import current_lr, optimizer_state

        from .runners.flax_runner import _np, _param_path

        try:
            lr: float | None = current_lr(self.state.opt_state)
        except ValueError:
            lr = None
        result = self.step_fn(self.state, jnp.asarray(x, dtype=_DTYPE), jnp.asarray(y))
        if not (isinstance(result, tuple) and len(result) == 2):
            raise TypeError(f"a Flax step function returns (state, loss), got {type(result).__name__}")
        self.state, loss = result
        tree = {"params": self.state.params, "batch_stats": getattr(self.state, "batch_stats", {})}
        flat = flatten_variables(tree)
        slots = {_param_path(k): {s: _np(v) for s, v in by_slot.items()}
                 for k, by_slot in optimizer_state(self.state.opt_state, self.state.params).items()}
        return NativeTrainStep(_scalar(loss, self.runner), lr,
                               {b.native: _np(flat[b.native]) for b in self.handle.trainable if b.native in flat},
                               slots,
                               {b.native: _np(flat[b.native]) for b in self.handle.state_bindings if b.native in flat})


@contextlib.contextmanager
def _flax_scope() -> Iterator[None]:
    import jax

    from .runners.flax_runner import _x64

    with _x64(_DTYPE), jax.default_matmul_precision("highest"):
        yield


# ------------------------------------------------------------------------------------------- comparison
def _stage_of(quantity: str) -> str:
    return next(v for k, v in STAGES.items() if quantity == k or (k.endswith(":") and quantity.startswith(k)))


def _rank(quantity: str) -> int:
    return list(STAGES.values()).index(_stage_of(quantity))


def _compare_step(ref: TrainStep, ref_grads: Mapping[str, np.ndarray], got: TrainStep,
                  grads: Mapping[str, np.ndarray] | None) -> list[Comparison]:
    """Every quantity of one step, in :data:`STAGES` order."""
    tol = tolerance_for(_DTYPE)
    out = [compare("loss", np.asarray(got.loss), np.asarray(ref.loss), tol)]
    out += [compare(f"state:{k}", got.running.get(k), v, tol, scaled=True) for k, v in ref.running.items()]
    if grads is not None:
        out += [compare(f"grad:{k}", grads.get(k), v, tol, scaled=True) for k, v in ref_grads.items()]
    if got.lr is not None:
        out.append(compare("lr", np.asarray(got.lr), np.asarray(ref.lr), tol))
    if got.optimizer_state:
        out += [compare(f"optim:{k}.{slot}", got.optimizer_state.get(k, {}).get(slot), v, tol, scaled=True)
                for k, slots in ref.optimizer_state.items() for slot, v in slots.items()]
    out += [compare(f"param:{k}", got.params.get(k), v, tol, scaled=True) for k, v in ref.params.items()]
    return sorted(out, key=lambda c: _rank(c.quantity))


def _diagnose(step: int, comps: Sequence[Comparison]) -> TrainingDiagnosis:
    first = next(c for c in comps if not c.passed)
    stage = _stage_of(first.quantity)
    agree = [s for s in dict.fromkeys(_stage_of(c.quantity) for c in comps) if _rank_of(s) < _rank(first.quantity)]
    text = f"{stage} at step {step}: {first.quantity} ({comparison_numbers(first)})"
    if agree:
        text += f"; the {', '.join(agree)} {'agrees' if len(agree) == 1 else 'agree'} at this step"
    if stage == "parameter" and "gradient" in agree and "learning rate" in agree:
        text += ": the update itself differs (weight decay, its mask, momentum, epsilon, or the learning rate " \
                "the update used)"
    return TrainingDiagnosis(step, stage, first.quantity, first, text)


class _ShiftedSchedule(ReferenceOptimizer):
    """The reference optimizer whose update ``k`` uses the learning rate of update ``k + shift``."""

    shift = 0

    @property
    def lr(self) -> float:
        return learning_rate(self.optimizer, self.schedule, max(self.steps + self.shift, 0))


def _lr_hint(preset: TrainingPreset, start: Mapping[str, np.ndarray], grads: Sequence[Mapping[str, np.ndarray]],
             got: TrainStep) -> str:
    """Whether the parameters of the last step in ``grads`` are the reference's with the schedule one step early or
    late (the learning rate the update used differs from the one the optimizer showed before it)."""
    tol = tolerance_for(_DTYPE)
    step = len(grads)
    for shift, what in ((1, "early: scheduler.step() before optimizer.step()?"),
                        (-1, "late: the schedule stepped after the rate was read, or skipped once?")):
        replay = _ShiftedSchedule(preset.optimizer, preset.schedule, preset.decay, start)
        replay.shift = shift
        for g in grads:
            replay.step(g)
        if all(compare(k, got.params.get(k), v, tol, scaled=True).passed for k, v in replay.params.items()):
            return (f"; the parameters are the reference's with the learning rate of step {step + shift} at step "
                    f"{step}: the schedule runs one step {what}")
    return ""


def _rank_of(stage: str) -> int:
    return list(STAGES.values()).index(stage)


# ------------------------------------------------------------------------------------------- check_training
def check_training(step_fn: Callable[..., Any], model: Any, spec: str | AttentionConfig,
                   optimizer: OptimizerConfig | Mapping[str, Any], schedule: ScheduleConfig | Mapping[str, Any]
                   | None = None, decay: str = "all", steps: int = 10, *, optim: Any = None, state: Any = None,
                   framework: str | None = None, param_map: ParamMap | None = None, variables: Any = None,
                   layout: str | None = None, shape: tuple[int, int, int, int] = SHAPE) -> TrainingCheckReport:
    """Run ``step_fn`` ``steps`` times on ``model`` from the canonical weights of ``spec`` and compare every step
    with the float64 reference (module docstring: the step function's contract per framework).

    Args:
        step_fn: your training step (torch and Paddle ``step_fn(x, y) -> loss``; Flax ``step_fn(state, x, y) ->
            (state, loss)``).
        model: the ``torch.nn.Module``, ``paddle.nn.Layer`` or ``flax.linen.Module`` the step trains; torch and
            Paddle models are cast to float64 and loaded in place (the optimizer keeps its parameters).
        spec: a registered model name (``conformance.MODEL_NAMES``, with ``conformance.model_cases.CLASSES``
            classes) or an attn_core model config.
        optimizer, schedule, decay: what the step should compute, as ``attn_core.training``'s
            ``OptimizerConfig``, ``ScheduleConfig`` (or mappings of their fields) and decay rule.
        steps: optimizer steps, each on its own seeded batch of ``shape`` (NCHW).
        optim: torch and Paddle, the optimizer object the step uses (for its learning rate and state).
        state: Flax, the ``TrainState`` the step takes.
        framework, param_map, variables, layout: as for :func:`conformance.check` (where each canonical parameter
            lives in your model).

    Raises:
        ConfigError: an unknown optimizer, schedule or decay rule, or a value out of its range (attn_core).
        TypeError, ValueError: a step function that is not callable, a model of no known framework, an unknown
            model name, ``steps < 1``, a Flax check without ``state``, or a step function that did not change
            any parameter in its first step (named).
    """
    opt_config: OptimizerConfig = _config_of(OptimizerConfig, optimizer, "optimizer")
    sched_config: ScheduleConfig | None = None if schedule is None else _config_of(ScheduleConfig, schedule,
                                                                                    "schedule")
    if not callable(step_fn):
        raise TypeError(f"step_fn must be callable, got {step_fn!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    framework, runner = runner_for(model, framework, "check_training")
    if framework == "flax" and state is None:
        raise ValueError("a Flax check needs state=: the TrainState your step function takes")
    preset = TrainingPreset("user", opt_config, sched_config or ScheduleConfig(), decay, "check_training")
    # also checks the decay rule (ConfigError) before anything runs
    data, reference, ref_grads = _reference(spec, steps, tuple(shape), preset)
    loop_cls = _FlaxLoop if framework == "flax" else _EagerLoop
    if framework == "flax" and variables is None:
        variables = {"params": state.params, **({"batch_stats": state.batch_stats}
                                                if getattr(state, "batch_stats", None) else {})}
    loop = loop_cls(runner, runner.wrap(model, data.config, param_map, variables, layout=layout), step_fn, optim,
                    state)
    with loop.scope():
        handle = loop.handle
        native = handle.native_weights(data.weights)
        loop.load(native)
        per_step: list[list[Comparison]] = []
        diagnosis = None
        for i, (x, y) in enumerate(zip(data.batches, data.labels, strict=True), start=1):
            xs = np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1))) if handle.layout == "NHWC" else x
            try:
                got_native = loop.step(xs, np.asarray(y, dtype=np.int64))
            except Exception as err:  # noqa: BLE001 - the user's step failing is the report's verdict
                diagnosis = TrainingDiagnosis(i, "error", "", None, f"the step function raised at step {i}: "
                                              f"{type(err).__name__}: {err}")
                break
            if i == 1 and all(np.array_equal(got_native.params[b.native], native[b.native])
                              for b in handle.trainable if b.native in got_native.params):
                raise ValueError(f"step function {getattr(step_fn, '__name__', repr(step_fn))} did not change any "
                                 "parameter in its first step: does it call optimizer.step() (torch, Paddle) or "
                                 "return the new state (Flax)?")
            native_grads = loop.grads()
            grads = None if native_grads is None else handle.canonical_grads(native_grads)
            got = canonical_step(handle, got_native)
            comps = _compare_step(reference[i - 1], ref_grads[i - 1], got, grads)
            per_step.append(comps)
            if diagnosis is None and not all(c.passed for c in comps):
                diagnosis = _diagnose(i, comps)
                if diagnosis.stage == "parameter":
                    start = {k: data.weights[k] for k in reference[0].params}
                    diagnosis.text += _lr_hint(preset, start, ref_grads[:i], got)
        notes = list(loop.notes)
        if per_step and loop.grads() is None:
            notes.append("the step left no gradients (Flax returns none; torch and Paddle cleared them after the "
                         "update): gradients not compared")
        if per_step and reference and not any(c.quantity == "lr" for c in per_step[0]):
            notes.append(f"{framework}: the learning rate could not be read; the parameters carry it")
    row = Row(data.model, f"{opt_config.name}-{steps}steps", framework, _DTYPE, "user step",
              "pass" if diagnosis is None else "error" if diagnosis.stage == "error" else "fail",
              worst_per_quantity(per_step), "" if diagnosis is None else diagnosis.text)
    return TrainingCheckReport(data.model, framework, opt_config, sched_config, decay, Report([row]), per_step,
                               diagnosis, notes)
