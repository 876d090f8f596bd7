"""Training parity: a registered model trained K steps natively in each backend against the float64 reference.

Every model x preset (:data:`PRESETS`, an optimizer, a learning-rate schedule and a weight-decay rule of
``attn_core.training``) starts from the same seeded canonical weights and trains on K distinct seeded batches of
:data:`BATCH` with integer labels over the model's :data:`~conformance.model_cases.CLASSES` classes: mean softmax
cross-entropy, BatchNorm in training mode, one schedule step per optimizer step. The reference
(:func:`reference_trajectory`) is the float64 forward and VJP of ``attn_core`` with ``ReferenceOptimizer``; each
backend runs its framework's own cross-entropy, autograd, optimizer and scheduler (``Runner.train``, through
``backends.<framework>.optim``). After every step the loss, the learning rate, every trainable parameter, every
optimizer state (canonical names, torch's slot names) and every BatchNorm running statistic are compared, each
judged on its own scale (:func:`conformance.suite.compare`'s ``scaled``, as the model cases are).

A float64 row fails at the first step any quantity leaves the float64 bound, and names the quantity and the step; a
step after the first whose trajectory left the bound is judged from the backend's own state before it instead
(:class:`TrajectoryComparer`, :func:`reference_step_from`). A
float32 row is a report: it says at which step the trajectory first leaves the float32 bound and how the worst
difference grew, and fails only when that happens within the first :data:`EARLY_STEPS` steps. In float32 the
optimizer state is not compared, as the model cases do not compare float32 gradients (a near-tie in a max pool or
a ReLU input within rounding of 0 routes a gradient elsewhere); it reaches the parameters, which are compared.

The presets' hyperparameters are exactly representable in float32, since Paddle hands the learning rate, momentum,
betas and weight decay to its kernels as float32 (issue 14: a float64 run with 0.9 drifts by about 1e-7).
"""

from __future__ import annotations

import math
import traceback
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

import numpy as np

from attn_core import AttentionConfig
from attn_core.autodiff import Node, backward
from attn_core.training import OptimizerConfig, ReferenceOptimizer, ScheduleConfig, softmax_cross_entropy

from .model_cases import CLASSES, MODEL_NAMES, model_config
from .runners import RUNNERS, Runner, get_runner
from .runners.base import TrainStep
from .suite import Comparison, Report, Row, compare
from .tolerances import Tolerance, tolerance_for

__all__ = ["TrainingPreset", "PRESETS", "TRAINING_MODELS", "DATA_PARALLEL_MODELS", "BATCH", "STEPS", "EARLY_STEPS",
           "TrainingData",
           "Curves", "TrainingRun", "TrajectoryComparer", "TrajectoryComparison", "training_data",
           "reference_trajectory", "reference_step_from", "Restep", "restep_for",
           "compare_trajectory", "worst_per_quantity", "LR_SCALE", "preset_for", "trajectory_verdict",
           "run_training_case", "run_training", "write_plots"]

#: the models of ``--training`` without a list (issue 14)
TRAINING_MODELS: tuple[str, ...] = ("resnet18", "seresnet18", "ecaresnet18", "cbamresnet18", "simamresnet18",
                                    "eca_mobilenetv2")
#: the models whose data-parallel rows (:mod:`conformance.data_parallel`) ``--training`` adds when it trains them: one
#: network, since each row starts two processes per framework and compiles a whole training step in each
DATA_PARALLEL_MODELS: tuple[str, ...] = ("resnet18",)
#: the input of every step: small, so that six models x four presets x three backends train in minutes in float64,
#: and 40 x 40 as the model cases' training input, so that the last BatchNorms normalise 2 x 2 maps (16 values per
#: channel), since the batch statistics of a 1 x 1 map's 4 values make the trajectory chaotic in any precision
BATCH: tuple[int, int, int, int] = (4, 3, 40, 40)
#: optimizer steps of a trajectory
STEPS = 10
#: a float32 row fails when it leaves the float32 bound within these first steps; later it is a report
EARLY_STEPS = 2


@dataclass(frozen=True)
class TrainingPreset:
    """One entry of the optimizer matrix: ``attn_core.training``'s configs and decay rule, under a short name."""

    name: str
    optimizer: OptimizerConfig
    schedule: ScheduleConfig
    decay: str
    note: str


def _presets() -> dict[str, TrainingPreset]:
    # 2**-k rates and decays, 7/8 momentum and 1 - 2**-10 for Adam's beta2: exact in float32 (module docstring)
    betas = (0.875, 1.0 - 2.0 ** -10)
    presets = [
        TrainingPreset("sgd", OptimizerConfig("sgd", lr=2.0 ** -7, momentum=0.875, weight_decay=2.0 ** -12),
                       ScheduleConfig("step", step_size=3, gamma=0.5), "all",
                       "SGD, momentum, coupled weight decay on every parameter; lr halved every 3 steps"),
        TrainingPreset("nesterov", OptimizerConfig("sgd", lr=2.0 ** -7, momentum=0.875, nesterov=True,
                                                   weight_decay=2.0 ** -12),
                       ScheduleConfig("cosine", t_max=8, eta_min=2.0 ** -10, warmup_epochs=2,
                                      warmup_start_factor=0.25), "no_bias_no_norm",
                       "Nesterov SGD, 2 warm-up steps then cosine over 8; no decay on biases and 1-D parameters"),
        TrainingPreset("adam", OptimizerConfig("adam", lr=2.0 ** -10, betas=betas), ScheduleConfig(), "all",
                       "Adam, constant lr, no weight decay"),
        TrainingPreset("adamw", OptimizerConfig("adamw", lr=2.0 ** -10, betas=betas, weight_decay=2.0 ** -6),
                       ScheduleConfig(), "no_bias_no_norm",
                       "AdamW, decoupled weight decay but on biases and 1-D parameters, constant lr"),
    ]
    return {p.name: p for p in presets}


#: the optimizer matrix of ``--training``, by name
PRESETS: Mapping[str, TrainingPreset] = MappingProxyType(_presets())
#: per model, the factor (a power of two) on every preset's learning rate: ECA-MobileNetV2's loss is so curved at
#: the presets' rates that float64 rounding grows 10 to 100 times per step in every framework alike (see
#: benchmarks/NOTES.md, "Training parity: ECA-MobileNetV2's rate")
LR_SCALE: Mapping[str, float] = MappingProxyType({"eca_mobilenetv2": 2.0 ** -5})


def preset_for(model: str, name: str) -> TrainingPreset:
    """Preset ``name`` as ``model`` trains with it: its learning rate times :data:`LR_SCALE` of the model."""
    preset = PRESETS[name]
    scale = LR_SCALE.get(model, 1.0)
    if scale == 1.0:
        return preset
    optimizer = replace(preset.optimizer, lr=preset.optimizer.lr * scale)
    return replace(preset, optimizer=optimizer, note=f"{preset.note}; lr x {scale:g} for {model}")


@dataclass(frozen=True)
class TrainingData:
    """A model's config, its seeded canonical weights, and the batches and labels of its steps."""

    model: str
    config: AttentionConfig
    weights: Mapping[str, np.ndarray]
    batches: tuple[np.ndarray, ...]
    labels: tuple[np.ndarray, ...]


def training_data(model: str, steps: int = STEPS, shape: tuple[int, int, int, int] = BATCH,
                  config: AttentionConfig | None = None) -> TrainingData:
    """The seeded data of ``model``'s trajectories (the same for every preset and backend): its weights drawn as
    ``config.init_weights`` draws them, and per step an input with a non-zero mean per channel and labels in
    ``[0, CLASSES)``, each from the seed of the model's name and the step. ``config`` (default: the registered
    model's) builds a smaller network of the same family under the registered name."""
    if model not in MODEL_NAMES:
        raise ValueError(f"unknown model {model!r}; known: {', '.join(MODEL_NAMES)}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    config = model_config(model) if config is None else config
    weights = config.init_weights(np.random.default_rng(zlib.crc32(f"{model}/training".encode())))
    batches, labels = [], []
    for step in range(1, steps + 1):
        rng = np.random.default_rng(zlib.crc32(f"{model}/training/step{step}".encode()))
        batches.append(rng.standard_normal(shape) * 1.5 + rng.uniform(-1.0, 1.0, (1, shape[1], 1, 1)))
        labels.append(rng.integers(0, CLASSES, shape[0]))
    return TrainingData(model, config, weights, tuple(batches), tuple(labels))


def _reference_step(config: AttentionConfig, trainable: Sequence[str], current: dict[str, np.ndarray],
                    opt: ReferenceOptimizer, x: np.ndarray, y: np.ndarray) -> TrainStep:
    """One float64 step from the weights ``current`` (updated in place) and the optimizer ``opt`` of
    ``trainable``."""
    nodes = {k: Node(v) for k, v in current.items()}
    logits = config.reference_forward(Node(np.asarray(x, dtype=np.float64)), nodes, training=True)
    loss, dlogits = softmax_cross_entropy(logits.value, y)
    grads = backward(logits, dlogits, [nodes[k] for k in trainable])
    running = config.reference_state(current, x)
    lr = opt.lr
    opt.step(dict(zip(trainable, grads, strict=True)))
    params = opt.params
    current.update(params)
    current.update(running)
    return TrainStep(float(loss), lr, params, opt.state, running)


def reference_trajectory(data: TrainingData, preset: TrainingPreset) -> list[TrainStep]:
    """The float64 trajectory: per batch, the reference forward in training mode, the mean cross-entropy and its
    VJP, ``ReferenceOptimizer``'s update, and the running statistics ``config.reference_state`` leaves."""
    config = data.config
    trainable = [p.name for p in config.param_table() if p.trainable]
    current = {k: np.array(v, dtype=np.float64) for k, v in data.weights.items()}
    opt = ReferenceOptimizer(preset.optimizer, preset.schedule, preset.decay, {k: current[k] for k in trainable})
    return [_reference_step(config, trainable, current, opt, x, y)
            for x, y in zip(data.batches, data.labels, strict=True)]


def reference_step_from(data: TrainingData, preset: TrainingPreset, step: int, before: TrainStep) -> TrainStep:
    """The reference's step ``step`` (1-based) taken from a backend's own state ``before`` it (its parameters,
    optimizer state and running statistics after step ``step - 1``) instead of the reference's: what
    :class:`TrajectoryComparer` judges a step by once the trajectory has left the bound."""
    if not 2 <= step <= len(data.batches):
        raise ValueError(f"step must be in [2, {len(data.batches)}], got {step}")
    trainable = [p.name for p in data.config.param_table() if p.trainable]
    current = {k: np.array(v, dtype=np.float64) for k, v in data.weights.items()}
    current.update({k: np.asarray(v, dtype=np.float64) for k, v in before.params.items()})
    current.update({k: np.asarray(v, dtype=np.float64) for k, v in before.running.items()})
    state = {k: slots for k, slots in before.optimizer_state.items() if k in trainable}
    opt = ReferenceOptimizer(preset.optimizer, preset.schedule, preset.decay, {k: current[k] for k in trainable},
                             state=state, steps=step - 1)
    return _reference_step(data.config, trainable, current, opt, data.batches[step - 1], data.labels[step - 1])


def _step_comparisons(ref: TrainStep, got: TrainStep, tol: Tolerance, optimizer_state: bool) -> list[Comparison]:
    """Every quantity of one step: ``loss``, ``lr``, ``param:<name>``, ``optim:<name>.<slot>``, ``state:<name>``."""
    out = [compare("loss", np.asarray(got.loss), np.asarray(ref.loss), tol)]
    if got.lr is not None:
        out.append(compare("lr", np.asarray(got.lr), np.asarray(ref.lr), tol))
    out += [compare(f"param:{k}", got.params.get(k), v, tol, scaled=True) for k, v in ref.params.items()]
    if optimizer_state:
        out += [compare(f"optim:{k}.{slot}", got.optimizer_state.get(k, {}).get(slot), v, tol, scaled=True)
                for k, slots in ref.optimizer_state.items() for slot, v in slots.items()]
    out += [compare(f"state:{k}", got.running.get(k), v, tol, scaled=True) for k, v in ref.running.items()]
    return out


#: ``(step, state before it) -> the reference's step from that state`` (:func:`reference_step_from`)
Restep = Callable[[int, TrainStep], TrainStep]


def restep_for(data: TrainingData, preset: TrainingPreset) -> Restep:
    """The :data:`Restep` of the reference trajectory of ``data`` and ``preset`` (:func:`reference_step_from`)."""
    return lambda step, before: reference_step_from(data, preset, step, before)


@dataclass(frozen=True)
class TrajectoryComparison:
    """Per quantity its worst step's comparison (its detail naming that step and the first step out of bound), the
    first failing step (1-based) and quantity, and per step the worst error of the trajectory as a multiple of the
    tolerance. ``drift`` is the step and quantity at which the trajectory left the bound while every step, judged
    from the backend's own state before it, held it; ``restepped`` the steps so judged (:class:`TrajectoryComparer`).
    """

    comparisons: list[Comparison]
    first_step: int | None
    first_quantity: str
    ratios: list[float]
    drift: tuple[int, str] | None = None
    restepped: tuple[int, ...] = ()


@dataclass
class Curves:
    """What a plot shows of one row: the loss and the largest parameter difference from the reference per step."""

    loss: list[float] = field(default_factory=list)
    param_diff: list[float] = field(default_factory=list)


class TrajectoryComparer:
    """Compares a backend's steps with the reference ``ref`` one at a time, as the backend takes them, keeping
    only each step's comparisons, loss and largest parameter difference (a network's trajectory is too large to
    hold twice).

    With ``restep`` (:func:`reference_step_from`), a step after the first whose trajectory leaves the bound is
    judged instead against the reference's step from the backend's own state before it, since a trajectory
    amplifies the rounding of earlier steps by the condition of every later one (ECA-MobileNetV2's Nesterov
    trajectory 10 times per step in every framework alike) while a port's error is made within a step; the step
    fails only when it leaves the bound from there too. Until the first failure the previous step is kept for it.
    """

    def __init__(self, ref: Sequence[TrainStep], tol: Tolerance, optimizer_state: bool = True,
                 restep: Restep | None = None) -> None:
        self.ref, self.tol, self.optimizer_state, self.restep = ref, tol, optimizer_state, restep
        self.per_step: list[list[Comparison]] = []
        self.ratios: list[float] = []
        self.curves = Curves()
        self.lr_unreported = False
        self.drift: tuple[int, str] | None = None
        self.restepped: list[int] = []
        self._before: TrainStep | None = None
        self._failed = False

    def add(self, got: TrainStep) -> None:
        """Compare the next step with its reference step."""
        if len(self.per_step) >= len(self.ref):
            raise ValueError(f"the backend took more steps than the reference's {len(self.ref)}")
        step = len(self.per_step) + 1
        ref = self.ref[step - 1]
        self.lr_unreported = self.lr_unreported or got.lr is None
        comps = _step_comparisons(ref, got, self.tol, self.optimizer_state)
        self.ratios.append(max((c.worst_ratio for c in comps), default=0.0))
        left = [c.quantity for c in comps if not c.passed]
        if left and self.restep is not None and self._before is not None and not self._failed:
            comps = _step_comparisons(self.restep(step, self._before), got, self.tol, self.optimizer_state)
            self.restepped.append(step)
            if self.drift is None and all(c.passed for c in comps):
                self.drift = (step, left[0])
        self._failed = self._failed or any(not c.passed for c in comps)
        self._before = got if self.restep is not None and not self._failed else None
        self.per_step.append(comps)
        self.curves.loss.append(got.loss)
        diffs = [float(np.max(np.abs(got.params[k] - v))) for k, v in ref.params.items() if k in got.params and v.size]
        self.curves.param_diff.append(max(diffs, default=math.nan))

    def result(self) -> TrajectoryComparison:
        """The comparison of every step added (see :class:`TrajectoryComparison`)."""
        if len(self.per_step) != len(self.ref):
            raise ValueError(f"the backend took {len(self.per_step)} steps, the reference {len(self.ref)}")
        first_step, first_quantity = None, ""
        for step, comps in enumerate(self.per_step, start=1):
            failed = [c.quantity for c in comps if not c.passed]
            if failed:
                first_step, first_quantity = step, failed[0]
                break
        return TrajectoryComparison(worst_per_quantity(self.per_step), first_step, first_quantity, self.ratios,
                                    self.drift, tuple(self.restepped))


def compare_trajectory(ref: Sequence[TrainStep], got: Iterable[TrainStep], tol: Tolerance,
                       optimizer_state: bool = True, restep: Restep | None = None) -> TrajectoryComparison:
    """Compare a backend's trajectory with the reference after every step (see :class:`TrajectoryComparison`)."""
    comparer = TrajectoryComparer(ref, tol, optimizer_state, restep)
    for step in got:
        comparer.add(step)
    return comparer.result()


def worst_per_quantity(per_step: Sequence[Sequence[Comparison]]) -> list[Comparison]:
    """Each quantity's worst step of ``per_step`` (one list of comparisons per step), its detail naming that step
    and the first step out of bound."""
    worst: dict[str, tuple[int, Comparison]] = {}
    first: dict[str, int] = {}
    for step, comps in enumerate(per_step, start=1):
        for c in comps:
            if c.quantity not in worst or c.worst_ratio > worst[c.quantity][1].worst_ratio:
                worst[c.quantity] = (step, c)
            if not c.passed:
                first.setdefault(c.quantity, step)
    out = []
    for quantity, (step, c) in worst.items():
        where = f"worst at step {step}" + (f", first out of bound at step {first[quantity]}"
                                           if quantity in first else "")
        out.append(Comparison(c.quantity, c.max_abs, c.max_rel, c.worst_ratio, c.nonfinite,
                              quantity not in first, "; ".join(filter(None, [where, c.detail]))))
    return out


def trajectory_verdict(result: TrajectoryComparison, dtype: str) -> tuple[str, str, str]:
    """``(status, message, note)`` of a row: float64 fails at any step out of bound; another dtype fails only when
    it leaves its bound within the first :data:`EARLY_STEPS` steps, and otherwise reports where it left it. The
    first step out of bound and its quantity are the message of a failure; the growth of the worst error is in
    both."""
    steps = len(result.ratios)
    growth = f"worst error / tolerance per step {result.ratios[0]:.3g} (step 1) -> {result.ratios[-1]:.3g} " \
             f"(step {steps})"
    notes = [] if dtype == "float64" else [f"optimizer state not compared in {dtype} (conformance.training: "
                                           "gradients are compared in float64 only)"]
    if result.drift is not None:
        notes.append(f"the trajectory left the {dtype} bound at step {result.drift[0]} ({result.drift[1]}) while "
                     f"every step from the backend's own state before it held it (steps "
                     f"{', '.join(map(str, result.restepped))}): earlier rounding amplified, not the port's")
    if result.first_step is None:
        return "pass", "", "; ".join([*notes, growth])
    where = " (the reference's step from the backend's own state)" if result.first_step in result.restepped else ""
    message = f"first out of the {dtype} bound at step {result.first_step}{where}: {result.first_quantity}; {growth}"
    if dtype == "float64" or result.first_step <= EARLY_STEPS:
        return "fail", message, "; ".join(notes)
    return "pass", "", "; ".join([*notes, message])


def run_training_case(data: TrainingData, preset: TrainingPreset, runner: Runner, dtype: str,
                      reference: Sequence[TrainStep], curves: dict[str, Curves] | None = None, *,
                      restep: Restep | None = None) -> Row:
    """One model x preset x backend x dtype row against the ``reference`` trajectory of ``data`` (module
    docstring); with ``curves``, its loss and parameter difference per step are stored there under
    ``'<backend> <dtype>'``. ``restep`` (:func:`restep_for` the reference's data and preset) judges a float64 step
    whose trajectory left the bound from the backend's own state (:class:`TrajectoryComparer`); without it the
    trajectory alone is judged."""
    steps = len(reference)
    row = Row(data.model, f"{preset.name}-{steps}steps", runner.framework, dtype,
              runner.mode_label(runner.default_mode), "pass")
    ok, why = runner.available()
    if not ok:
        row.status, row.message = "skip", why
        return row
    ok, why = runner.supports(data.model, dtype)
    if not ok:
        row.status, row.message = "n/a", why
        return row
    try:
        handle = runner.build_handle(data.model, data.config)
        # float64 only: a float32 row leaving its bound after EARLY_STEPS is already a report, not a failure
        comparer = TrajectoryComparer(reference, tolerance_for(dtype), optimizer_state=dtype == "float64",
                                      restep=restep if dtype == "float64" else None)
        runner.train_each(handle, data.weights, data.batches[:steps], data.labels[:steps], preset.optimizer,
                          preset.schedule, preset.decay, dtype, on_step=comparer.add)
        result = comparer.result()
    except Exception as err:  # noqa: BLE001 - any failure of a backend is reported as that row's error
        row.status = "error"
        row.message = f"{type(err).__name__}: {err}".strip()
        row.message += "\n" + "".join(traceback.format_exception(err)[-3:]).rstrip()
        return row
    row.comparisons = result.comparisons
    row.status, row.message, row.note = trajectory_verdict(result, dtype)
    if comparer.lr_unreported:
        row.note = f"{runner.framework} does not report its learning rate: the parameters carry it; " + row.note
    if curves is not None:
        curves[f"{runner.framework} {dtype}"] = comparer.curves
    return row


@dataclass
class TrainingRun:
    """The rows of a training run and, per (model, preset), the curves of each row and of the reference."""

    report: Report
    curves: dict[tuple[str, str], dict[str, Curves]]


def run_training(models: Iterable[str] | None = None, presets: Iterable[str] | None = None,
                 backends: Sequence[str] | None = None, dtypes: Sequence[str] = ("float64",), steps: int = STEPS,
                 progress: Callable[[Row], None] | None = None) -> TrainingRun:
    """Every model x preset x backend x dtype row; the reference trajectory is computed once per model x preset.
    ``models`` defaults to :data:`TRAINING_MODELS`, ``presets`` to every one of :data:`PRESETS`; unknown names
    are an error listing the known."""
    models = list(TRAINING_MODELS if models is None else models)
    names = list(PRESETS if presets is None else presets)
    unknown = [f"model {m!r}" for m in models if m not in MODEL_NAMES] + \
        [f"preset {p!r}" for p in names if p not in PRESETS]
    if unknown:
        raise ValueError(f"unknown {', '.join(unknown)}; known models: {', '.join(MODEL_NAMES)}; known presets: "
                         f"{', '.join(PRESETS)}")
    runners = [get_runner(b) for b in (backends or RUNNERS)]
    rows, curves = [], {}
    for model in models:
        data = training_data(model, steps)
        for name in names:
            preset = preset_for(model, name)
            reference = reference_trajectory(data, preset)
            by_row = {"reference": Curves([s.loss for s in reference], [])}
            for runner in runners:
                for dtype in dtypes:
                    row = run_training_case(data, preset, runner, dtype, reference, by_row,
                                            restep=restep_for(data, preset))
                    rows.append(row)
                    if progress is not None:
                        progress(row)
            curves[(model, name)] = by_row
            del reference  # released before the next one is computed: a network's trajectory is gigabytes
        for runner in runners:  # a whole network's programs: released before the next model's
            runner.release()
    return TrainingRun(Report(rows), curves)


def write_plots(directory: Path, curves: Mapping[tuple[str, str], Mapping[str, Curves]]) -> list[Path] | str:
    """One PNG per model x preset in ``directory``: the loss per step of the reference and of each backend, and the
    largest parameter difference from the reference per step (log scale). Returns the files written, or the
    reason there are none (matplotlib not installed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display is needed or wanted
        import matplotlib.pyplot as plt
    except ImportError:
        return "plots skipped: matplotlib is not installed (pip install 'attn-modules[plots]')"
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for (model, preset), by_row in curves.items():
        fig, (ax_loss, ax_diff) = plt.subplots(1, 2, figsize=(11, 4))
        for label, c in by_row.items():
            steps = range(1, len(c.loss) + 1)
            ref = label == "reference"
            ax_loss.plot(steps, c.loss, "k-" if ref else "o--", label=label, linewidth=2.5 if ref else 1,
                         markersize=3)
            if not ref:  # a difference of exactly 0 has no place on a log scale
                ax_diff.plot(steps, [d if d > 0 else math.nan for d in c.param_diff], "o-", label=label,
                             markersize=3)
        ax_loss.set(title=f"{model}, {preset}: loss", xlabel="step", ylabel="mean cross-entropy")
        ax_diff.set(title="max |parameter - reference|", xlabel="step", yscale="log")
        ax_loss.legend(fontsize=8)
        ax_diff.legend(fontsize=8)
        fig.tight_layout()
        path = directory / f"{model}-{preset}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written
