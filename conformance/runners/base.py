"""The interface every framework runner implements: ``build_handle``, ``wrap``, ``execute`` and ``run``.

Project modules get handles (:mod:`conformance.runners.handle`) from :meth:`Runner.build_handle`; a module the
project did not write gets one from :meth:`Runner.wrap`. Both go through the same validation, loading and gradient
path, so a project module is simply a wrapped module whose parameter map is empty (every parameter at its
framework's default place and layout).

A runner is also the project's one adapter to its framework beyond the suite: NumPy in and out
(:meth:`Runner.tensor`, :meth:`Runner.to_numpy`), dtypes (:meth:`Runner.dtype_name`, :meth:`Runner.dtype_scope`),
a module class's arguments (:meth:`Runner.constructor_arguments`), building, loading and exporting the project's
models (:meth:`Runner.build_model`, :meth:`Runner.load`, :meth:`Runner.export_weights`), an eval forward
(:meth:`Runner.forward`) and a training one (:meth:`Runner.train_forward`, :meth:`Runner.seed`), submodule outputs
(:meth:`Runner.capture`), the project's canonical checkpoints (:meth:`Runner.save_checkpoint`,
:meth:`Runner.load_checkpoint`) and the framework's own checkpoint files (:meth:`Runner.read_checkpoint`,
:meth:`Runner.write_checkpoint`). Its name, packages, layout and modes are ``attn_core.frameworks``' table.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import gc
import importlib
import importlib.util
import inspect
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from attn_core import AttentionConfig
from attn_core.cam import GATE_NAMES, LayerGradient, gate_paths
from attn_core.checkpoint import CheckpointError
from attn_core.frameworks import FRAMEWORK_INFO, MODES
from attn_core.layout import NCHW_TO_NHWC, NHWC_TO_NCHW

from .handle import Binding, Handle, ParamMap, ParamMapError, bind

if TYPE_CHECKING:
    from attn_core.training import OptimizerConfig, ScheduleConfig

__all__ = ["RunResult", "Runner", "Handle", "Binding", "ParamMapError", "MODES", "LAYOUTS", "ParamMap",
           "NativeRun", "TrainStep", "NativeTrainStep", "unwrap_state_dict"]

LAYOUTS: tuple[str, ...] = ("NCHW", "NHWC")


@dataclass
class RunResult:
    """What a backend computed, as float64 NumPy arrays in canonical layout (NCHW, torch parameter layout).

    ``seconds`` is the wall time of the framework calls (forward and backward; under a compiled mode this includes
    compiling, which happens on the first call); ``note`` says what ran (graphs compiled, graph breaks, ...).
    ``state`` holds, after a training forward only, the BatchNorm running statistics (canonical names of the
    ``bn_mean`` / ``bn_var`` parameters) as the module holds them then: read from its buffers (torch, Paddle) or
    from the updated ``batch_stats`` (Flax), through the handle's bindings. A name missing from it was not
    reported by the backend, which the suite counts as a failure, never as a pass.
    """

    y: np.ndarray
    dx: np.ndarray | None = None
    dparams: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = math.nan
    note: str = ""
    state: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class NativeRun:
    """What :meth:`Runner._execute` computed, in the module's layout and native names: the output, the input
    gradient, ``{native name: gradient}`` (None where the backward did not reach it), what ran, and
    ``{native name: running statistic}`` after the last training step (empty outside training)."""

    y: np.ndarray
    dx: np.ndarray | None = None
    grads: Mapping[str, np.ndarray | None] = field(default_factory=dict)
    note: str = ""
    state: Mapping[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainStep:
    """One optimizer step of a training run, float64, canonical names and layout: the step's mean cross-entropy
    ``loss`` (before the update), the ``lr`` its update used (None where the framework does not tell), and after
    the update every trainable parameter, the optimizer's state (canonical name -> torch's slot names:
    ``momentum_buffer``; ``exp_avg``, ``exp_avg_sq``) and every BatchNorm running statistic."""

    loss: float
    lr: float | None
    params: Mapping[str, np.ndarray]
    optimizer_state: Mapping[str, Mapping[str, np.ndarray]]
    running: Mapping[str, np.ndarray]


@dataclass(frozen=True)
class NativeTrainStep:
    """What :meth:`Runner._train` records after one step: :class:`TrainStep`'s fields under native names (the
    handle's bindings), in the module's layout."""

    loss: float
    lr: float | None
    params: Mapping[str, np.ndarray]
    optimizer_state: Mapping[str, Mapping[str, np.ndarray]]
    running: Mapping[str, np.ndarray]


class Runner:
    """Runs modules of one framework on NumPy data, eagerly or compiled: the project's adapter to the framework.

    Subclasses set ``framework`` (a name of ``attn_core.frameworks``, whose table gives ``requires``,
    ``default_layout``, ``default_mode`` and the mode labels) and implement :meth:`native_entries`,
    :meth:`_backend_loaded`, :meth:`_execute`, :meth:`_cast` (or :meth:`load`), :meth:`tensor`, :meth:`to_numpy`,
    :meth:`dtype_name`, :meth:`owns`, :meth:`forward`, :meth:`train_forward`, :meth:`seed` and the checkpoint methods.
    """

    framework: str = ""
    requires: tuple[str, ...] = ()
    #: dtypes every module of this runner runs in. A dtype outside it (and outside ``module_dtypes``) is reported
    #: as 'n/a' with the reason in ``dtype_notes``: declared from what the framework can run, never passed.
    dtypes: tuple[str, ...] = ("float32", "float64")
    #: registry name -> further dtypes that module alone runs in
    module_dtypes: Mapping[str, tuple[str, ...]] = {}
    #: dtype -> why the modules not declared for it cannot run in it here
    dtype_notes: Mapping[str, str] = {}
    modes: tuple[str, ...] = MODES
    #: the path a user of the framework gets without asking: what ``--modes default`` runs
    default_mode: str = "eager"
    default_layout: str = "NCHW"
    _labels: Mapping[str, str] = {"eager": "eager", "compiled": "compiled"}

    def __init__(self) -> None:
        info = FRAMEWORK_INFO.get(self.framework)
        if info is not None:  # a runner outside the table (a test's) keeps its own class attributes
            self.requires, self.default_layout, self.default_mode = info.packages, info.layout, info.default_mode
            self._labels = info.mode_labels

    @property
    def backend_package(self) -> str:
        """The project's backend package of this framework: ``'backends.torch'``."""
        return f"backends.{self.framework}"

    def backend(self) -> Any:
        """The imported backend package."""
        return importlib.import_module(self.backend_package)

    # ------------------------------------------------------------------------------------------------ public
    def supports(self, module: str, dtype: str) -> tuple[bool, str]:
        """(whether the module registered as ``module`` runs in ``dtype`` here, the reason if not), from the declared
        ``dtypes``, ``module_dtypes`` and ``dtype_notes``."""
        if dtype in self.dtypes or dtype in self.module_dtypes.get(module, ()):
            return True, ""
        return False, self.dtype_notes.get(dtype, f"{self.framework} declares no {dtype} support")

    def release(self) -> None:
        """Drop what this runner keeps between cases (compiled programs, framework caches): the suite calls it after
        each model's cases, whose programs no later case reuses."""
        gc.collect()

    def available(self) -> tuple[bool, str]:
        """(installed, reason if not)."""
        missing = [m for m in self.requires if importlib.util.find_spec(m) is None]
        if missing:
            return False, f"not installed: {', '.join(missing)} (pip install 'attn-modules[{self.framework}]')"
        return True, ""

    def mode_label(self, mode: str) -> str:
        """How a mode shows in a report: 'eager', 'torch.compile', 'to_static' or 'jax.jit'."""
        if mode not in self.modes:
            raise ValueError(f"{self.framework}: unknown mode {mode!r}; expected one of {', '.join(self.modes)}")
        return self._labels[mode]

    def build_handle(self, name: str, config: AttentionConfig) -> Handle:
        """A handle for the project's module registered as ``name`` (``backends.<framework>.ATTN_LAYERS``), built
        from ``config``, with every parameter at the framework's default place and layout (an empty map).

        The runner loads weights through the handle's bindings, not through the backend's ``load_weights``; so
        that a backend whose own loader strays from ``attn_core``'s layout table still fails, the loader is
        checked here against the bindings on distinct values (a RuntimeError naming every parameter it misplaces).
        """
        module, variables = self._project_module(name, config)
        handle = self.wrap(module, config, {}, variables)
        probe = {s.name: np.arange(1.0, 1.0 + math.prod(s.shape)).reshape(s.shape) for s in config.param_table()}
        want = handle.native_weights(probe)
        got = self._backend_loaded(module, probe)
        wrong = [f"{b.spec.name} ({b.native})" for b in handle.bindings
                 if b.native not in got or np.shape(got[b.native]) != want[b.native].shape
                 or not np.array_equal(got[b.native], want[b.native])]
        if wrong:
            raise RuntimeError(f"backends.{self.framework}.load_weights does not put these canonical parameters "
                               f"where attn_core's layout table does: {', '.join(wrong)}")
        return handle

    def wrap(self, module: Any, config: AttentionConfig, param_map: ParamMap | None = None,
             variables: Any = None, *, layout: str | None = None) -> Handle:
        """A handle for ``module``, a module of this framework that should compute what ``config`` specifies.

        ``param_map`` maps canonical parameter names (``config.param_table()``, torch layout) to where the
        module holds them:

        - ``'native.name'``: the parameter under that name, in the framework's default layout for its role
          (``attn_core.to_native``: torch as is; Paddle Linear ``[in, out]``; Flax HWIO / WIO / ``[in, out]``);
        - ``('native.name', 'transform')``: with a named layout conversion of
          ``attn_core.layout.LAYOUT_TRANSFORMS`` ('identity', 'transpose', 'conv1x1_to_linear',
          'conv1x1_to_linear_t', 'oihw_to_hwio', 'oik_to_kio');
        - ``('native.name', (to_native, from_native))``: two NumPy functions, exact inverses of each other.

        Native names are ``state_dict`` keys in torch and Paddle, and '/'-joined paths with the collection first
        in Flax (``'params/fc/layers_0/kernel'``, ``'batch_stats/bn/mean'``). A canonical name left out of the map
        is looked for at the framework's default place (``attn_core.native_location``). Flax needs
        ``variables`` (what ``module.init`` returns) as the template of names and shapes.

        The module takes ``layout`` input: NCHW by default in torch and Paddle, NHWC in Flax; a Flax module that
        takes NCHW passes ``layout='NCHW'``. The check is strict: a canonical parameter that is neither mapped nor
        found at its default place, a map entry naming no canonical parameter, a native name the module does not
        have, a shape that does not fit after the transform, a transform that does not apply, two canonical names
        on one native parameter, a trainable parameter that is natively not trainable, and a native parameter
        that nothing maps to are all listed in one :class:`ParamMapError`.
        """
        layout = layout or self.default_layout
        if layout not in LAYOUTS:
            raise ValueError(f"{self.framework}: layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        if param_map is None:
            param_map = {}
        if not isinstance(param_map, Mapping):
            raise TypeError(f"param_map must be a mapping of canonical names, got {type(param_map).__name__}")
        entries = self.native_entries(module, variables)  # native name -> (shape, natively trainable)
        label = f"{type(module).__name__} ({self.framework})"
        bindings = bind(self.framework, config, param_map, entries, label)
        return Handle(self.framework, config, module, bindings, self, variables, layout, label,
                      self._options(module))

    def execute(self, handle: Handle, weights: Mapping[str, np.ndarray], x: np.ndarray,
                cotangent: np.ndarray | None = None, dtype: str = "float32", training: bool = False,
                mode: str = "eager", more_batches: Sequence[np.ndarray] = ()) -> RunResult:
        """Run ``handle``'s module once on canonical data and return what it computed in canonical form.

        ``weights`` are canonical (names and torch layout of ``handle.config.param_table()``, checked strictly)
        and are loaded, cast to ``dtype``, into a copy of the module; ``x`` is an NCHW array (transposed to the
        module's layout and back). The module runs in training mode (BatchNorm on batch statistics) or eval mode,
        ``mode='eager'`` or ``'compiled'`` (see :meth:`mode_label`). When ``cotangent`` (NCHW, like the output) is
        given it is backpropagated: the result holds ``dx`` and the gradient of every trainable canonical
        parameter. In training the result's ``state`` holds the running statistics the forward left in the module
        (see :class:`RunResult`). Raises whatever the framework raises when the module cannot run, in that mode too.

        ``more_batches`` (training only; NCHW arrays shaped like ``x``) are further training steps on the same
        module: after the forward (and backward) of ``x``, a training forward of each, in order, so that the
        reported ``state`` is the one left after ``1 + len(more_batches)`` steps. The output and gradients are
        those of the first step (``x``). A model's output ``(N, classes)`` and its cotangent are taken as they
        are: only 4-D arrays are transposed to and from the module's layout.
        """
        if handle.framework != self.framework:
            raise ValueError(f"a {handle.framework} handle given to the {self.framework} runner")
        self.mode_label(mode)
        native = handle.native_weights(weights)
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 4:
            raise ValueError(f"x must be a 4-D NCHW array, got shape {x.shape}")
        ct = None if cotangent is None else np.asarray(cotangent, dtype=np.float64)
        more = [np.asarray(b, dtype=np.float64) for b in more_batches]
        if more and not training:
            raise ValueError("more_batches are further training steps: they need training=True")
        bad = [b.shape for b in more if b.shape != x.shape]
        if bad:
            raise ValueError(f"more_batches must be shaped like x {x.shape}, got {bad}")
        if handle.layout == "NHWC":
            x = np.ascontiguousarray(np.transpose(x, NCHW_TO_NHWC))
            ct = None if ct is None else _layout(ct, NCHW_TO_NHWC)
            more = [np.ascontiguousarray(np.transpose(b, NCHW_TO_NHWC)) for b in more]
        start = time.perf_counter()
        out = self._execute(handle, native, x, ct, dtype, training, mode, more)
        seconds = time.perf_counter() - start
        y, dx = out.y, out.dx
        if handle.layout == "NHWC":
            y = _layout(y, NHWC_TO_NCHW)
            dx = None if dx is None else np.transpose(dx, NHWC_TO_NCHW)
        result = RunResult(y=np.ascontiguousarray(y, dtype=np.float64), seconds=seconds, note=out.note)
        if ct is not None:
            result.dx = None if dx is None else np.ascontiguousarray(dx, dtype=np.float64)
            result.dparams = handle.canonical_grads(out.grads)
        if training:
            result.state = handle.canonical_state(out.state)
        return result

    def train(self, handle: Handle, weights: Mapping[str, np.ndarray], batches: Sequence[np.ndarray],
              labels: Sequence[np.ndarray], optimizer: OptimizerConfig, schedule: ScheduleConfig | None = None,
              decay: str = "all", dtype: str = "float64") -> list[TrainStep]:
        """Train ``handle``'s module natively, one step per batch: a copy of the module holding the canonical
        ``weights`` in ``dtype``, in training mode (BatchNorm on batch statistics), the framework's own mean
        softmax cross-entropy of its logits against the integer ``labels``, its own autograd, and the optimizer
        and learning-rate schedule that ``backends.<framework>.optim.create_optimizer`` makes of ``optimizer``,
        ``schedule`` and the decay rule ``decay`` (one schedule step per optimizer step). ``batches`` are NCHW
        arrays, ``labels`` integer arrays of shape ``(N,)``. Returns one :class:`TrainStep` per batch."""
        steps: list[TrainStep] = []
        self.train_each(handle, weights, batches, labels, optimizer, schedule, decay, dtype, on_step=steps.append)
        return steps

    def train_each(self, handle: Handle, weights: Mapping[str, np.ndarray], batches: Sequence[np.ndarray],
                   labels: Sequence[np.ndarray], optimizer: OptimizerConfig, schedule: ScheduleConfig | None = None,
                   decay: str = "all", dtype: str = "float64", *, on_step: Callable[[TrainStep], None]) -> None:
        """:meth:`train`, handing each step to ``on_step`` as soon as it is taken instead of keeping the
        trajectory: a whole network's parameters and optimizer slots per step would otherwise be held K times."""
        if handle.framework != self.framework:
            raise ValueError(f"a {handle.framework} handle given to the {self.framework} runner")
        if len(batches) != len(labels):
            raise ValueError(f"{len(batches)} batches but {len(labels)} label arrays")
        native = handle.native_weights(weights)
        xs = [np.asarray(b, dtype=np.float64) for b in batches]
        ys = [np.asarray(y, dtype=np.int64) for y in labels]
        bad = [f"batch {i}: x {x.shape}, labels {y.shape}" for i, (x, y) in enumerate(zip(xs, ys, strict=True))
               if x.ndim != 4 or y.shape != (x.shape[0],)]
        if bad:
            raise ValueError("each batch must be NCHW with one integer label per sample: " + "; ".join(bad))
        if handle.layout == "NHWC":
            xs = [np.ascontiguousarray(np.transpose(x, NCHW_TO_NHWC)) for x in xs]
        self._train(handle, native, xs, ys, optimizer, schedule, decay, dtype,
                    lambda step: on_step(canonical_step(handle, step)))

    def run(self, name: str, config: AttentionConfig, weights: Mapping[str, np.ndarray], x: np.ndarray,
            cotangent: np.ndarray | None, dtype: str = "float32", training: bool = False,
            mode: str = "eager", more_batches: Sequence[np.ndarray] = ()) -> RunResult:
        """Build the project's module registered as ``name`` from ``config`` and :meth:`execute` it."""
        return self.execute(self.build_handle(name, config), weights, x, cotangent, dtype, training, mode,
                            more_batches)

    # ------------------------------------------------------------------ the project's modules, NumPy in and out
    def build_model(self, config: AttentionConfig, weights: Mapping[str, np.ndarray], dtype: str | None = None
                    ) -> tuple[Any, Any]:
        """``(module, variables)`` of the model ``config`` (a registered model's config) holding the canonical
        ``weights`` through the backend's ``load_weights`` (in ``dtype``, see :meth:`load`); ``variables`` is None
        where the module holds them. The module is built without drawing initial weights (the backend's
        ``skip_init``): the load replaces every one."""
        with self.backend().skip_init():
            module = self._models().model_from_config(config)
        return self.load(module, weights, dtype)

    def load(self, module: Any, weights: Mapping[str, np.ndarray], dtype: str | None = None) -> tuple[Any, Any]:
        """The backend's ``load_weights`` of canonical ``weights`` into ``module``: ``(module, variables)``; with
        ``dtype``, the module (torch, Paddle) or its variables (Flax) are first cast to, or made in, that dtype."""
        if dtype is not None:
            module = self._cast(module, dtype)
        return self.backend().load_weights(module, weights), None

    def export_weights(self, module: Any, variables: Any) -> dict[str, np.ndarray]:
        """The backend's ``export_weights``: the canonical weights ``module`` (Flax: ``variables``) holds."""
        weights: dict[str, np.ndarray] = self.backend().export_weights(module)
        return weights

    def save_checkpoint(self, path: str | os.PathLike[str], module: Any, variables: Any) -> None:
        """The backend's ``save_checkpoint``: the project's canonical checkpoint file (``attn_core.checkpoint``) of
        ``module`` (Flax: of ``variables``); :meth:`write_checkpoint` writes the framework's own format instead."""
        self.backend().save_checkpoint(path, module)

    def load_checkpoint(self, path: str | os.PathLike[str], module: Any) -> tuple[Any, Any]:
        """The backend's ``load_checkpoint`` of a canonical checkpoint file into ``module``, checked strictly:
        ``(module, variables)`` as :meth:`load` returns them."""
        return self.backend().load_checkpoint(path, module), None

    def seed(self, seed: int) -> None:
        """Seed what draws the random numbers of a training forward (dropout): the framework's global generator
        (torch, Paddle), the key of the 'dropout' rng that :meth:`train_forward` passes (Flax)."""
        raise NotImplementedError

    def train_forward(self, module: Any, variables: Any, x: np.ndarray) -> tuple[np.ndarray, Any]:
        """One training-mode forward of ``module`` itself on the NCHW input ``x`` (in its dtype), BatchNorm on batch
        statistics, in the framework's default mode: ``(output as float64 NumPy (a 4-D output in NCHW),
        variables)``. The running statistics it updates are the module's buffers (torch, Paddle) or those of the
        variables returned (Flax)."""
        raise NotImplementedError

    def nchw_to_native(self, array: np.ndarray) -> np.ndarray:
        """An NCHW array in the layout the framework's modules take (no copy for NCHW)."""
        return np.transpose(array, NCHW_TO_NHWC) if self.default_layout == "NHWC" else array

    def init_variables(self, module: Any, shape: tuple[int, ...], layout: str) -> Any:
        """The variables a module that keeps them apart (Flax) is initialised with for an NCHW ``shape`` given in
        ``layout``; None where the module holds its own."""
        return None

    def call(self, module: Any, x: Any, variables: Any = None) -> Any:
        """``module``'s forward on the framework tensor ``x`` (in the module's layout), as the framework returns it."""
        return module(x)

    def tensor(self, array: np.ndarray, dtype: str | None = None) -> Any:
        """A framework tensor of ``array`` as given (no layout change); ``dtype`` defaults to the array's."""
        raise NotImplementedError

    def to_numpy(self, value: Any, dtype: str | None = None) -> np.ndarray:
        """A framework tensor as a NumPy array, cast to ``dtype`` first when given."""
        raise NotImplementedError

    def dtype_name(self, dtype: Any) -> str:
        """A framework dtype (a tensor's ``.dtype``) by its NumPy name: 'float32', 'bfloat16', 'int32'."""
        raise NotImplementedError

    def dtype_scope(self, dtype: str) -> contextlib.AbstractContextManager[Any]:
        """A context inside which the framework makes and computes arrays of ``dtype`` (JAX's 64-bit mode for
        float64, outside which JAX makes float32 of it); a context that changes nothing where every dtype exists."""
        return contextlib.nullcontext()

    def constructor_arguments(self, cls: type) -> list[tuple[str, Any]]:
        """``(name, default)`` of the arguments that build a module of class ``cls``, in order;
        ``inspect.Parameter.empty`` for an argument without a default."""
        return [(p.name, p.default) for p in inspect.signature(cls).parameters.values()]

    def owns(self, module: Any) -> bool:
        """Whether ``module`` is a module of this framework, asked only of a framework already imported."""
        raise NotImplementedError

    def forward(self, module: Any, variables: Any, x: np.ndarray) -> np.ndarray:
        """The eval-mode output of ``module`` on the NCHW input ``x`` (in its dtype), as float64 NumPy (a 4-D output
        in NCHW)."""
        raise NotImplementedError

    def native_entries(self, module: Any, variables: Any) -> dict[str, tuple[tuple[int, ...], bool]]:
        """Every named array of ``module`` (Flax: of ``variables``): native name -> (shape, natively trainable,
        i.e. a parameter that gets a gradient: not a buffer, not stop_gradient, in Flax's 'params')."""
        raise NotImplementedError

    # --------------------------------------------------------------------------------- submodule outputs
    def submodules(self, module: Any) -> dict[str, Any] | None:
        """Named submodules; None where they exist only while the module runs (Flax)."""
        return None

    def capture(self, handle: Handle, subs: Sequence[str], weights: Mapping[str, np.ndarray], x: np.ndarray,
                dtype: str, training: bool) -> dict[str, list[Any]]:
        """Outputs of the named submodules (every call, in order; :meth:`output_array` of each) in one eager forward
        pass of ``handle`` with canonical ``weights`` on the NCHW ``x``."""
        records: dict[str, list[Any]] = {s: [] for s in subs}
        module = copy.deepcopy(handle.module)  # hooks travel with the runner's own copy of it
        named = self.submodules(module) or {}
        for s in subs:
            self._hook(named[s], functools.partial(self._record, records[s]))
        self.execute(dataclasses.replace(handle, module=module), weights, x, None, dtype, training, "eager")
        return records

    def _record(self, into: list[Any], output: Any) -> None:
        into.append(self.output_array(output))

    def output_array(self, value: Any) -> np.ndarray | None:
        """A submodule's output as float64 NumPy; None for anything that is not one array."""
        if isinstance(value, (tuple, list)) or value is None:
            return None
        try:
            return self.to_numpy(value, "float64")
        except (TypeError, ValueError, AttributeError):
            return None

    def _hook(self, layer: Any, record: Callable[[Any], None]) -> Any:
        """Have ``record`` called with ``layer``'s output after each of its forwards; returns the hook's handle
        (``.remove()``)."""
        raise NotImplementedError

    # ------------------------------------------------------------------------- class activation maps
    def layer_gradient(self, module: Any, variables: Any, x: np.ndarray, layer: str,
                       cotangent: Callable[[np.ndarray], np.ndarray]) -> LayerGradient:
        """One eval-mode forward of the model ``module`` on the NCHW ``x`` (in its dtype) and the backward of
        ``cotangent(logits)`` (float64 ``(N, K)`` in and out: :func:`attn_core.cam.target_cotangent`): the logits,
        the output of the submodule named ``layer`` (canonical, '.'-separated; called once per forward) and the
        gradient with respect to it, NCHW float64 (:class:`attn_core.cam.LayerGradient`). A ValueError lists the
        layer names when ``layer`` is none of them.

        Here for a framework whose submodules exist before the forward (torch, Paddle): a forward hook on the layer
        (:meth:`_hook`) keeps its output, and :meth:`_grad` differentiates the logits with respect to it."""
        named = self.submodules(module)
        if named is None:
            raise NotImplementedError(f"{self.framework}: no layer gradient")
        if layer not in named:
            raise self._unknown_layer(layer, list(named))
        module.eval()
        seen: list[Any] = []
        hook = self._hook(named[layer], seen.append)
        try:
            logits = self.call(module, self.tensor(x))
        finally:
            hook.remove()
        ct = self.tensor(cotangent(self.to_numpy(logits, "float64")), self.dtype_name(logits.dtype))
        return self._layer_result(logits, seen[-1], self._grad(logits, seen[-1], ct))

    def _grad(self, output: Any, wrt: Any, cotangent: Any) -> Any:
        """The VJP of the framework tensor ``output`` with ``cotangent``, with respect to the tensor ``wrt``."""
        raise NotImplementedError

    def layer_io(self, module: Any, variables: Any, x: np.ndarray, layers: Sequence[str]
                 ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """One eval-mode forward of ``module`` on the NCHW ``x``: ``{layer: (its input, its output)}`` of each named
        submodule (called once per forward), NCHW float64; a ValueError lists the names when one is unknown."""
        named = self.submodules(module)
        if named is None:
            raise NotImplementedError(f"{self.framework}: no layer inputs and outputs")
        for layer in layers:
            if layer not in named:
                raise self._unknown_layer(layer, list(named))
        module.eval()
        seen: dict[str, tuple[Any, Any]] = {}
        hooks = [self._io_hook(named[layer], functools.partial(seen.__setitem__, layer)) for layer in layers]
        try:
            self.call(module, self.tensor(x))
        finally:
            for hook in hooks:
                hook.remove()
        return {layer: (self._nchw(seen[layer][0]), self._nchw(seen[layer][1])) for layer in layers}

    def attention_maps(self, module: Any, variables: Any, x: np.ndarray, config: AttentionConfig
                       ) -> dict[str, np.ndarray]:
        """Every gate of the registered model or attention module ``config`` built as ``module``, from one eval
        forward on the NCHW ``x``: ``{canonical gate name: gate}`` (:func:`attn_core.cam.gate_layers`: channel gates
        ``(N, C, 1, 1)``, spatial ``(N, 1, H, W)``, full ``(N, C, H, W)``, CoordAttn's height ``(N, C, H, 1)`` and
        width ``(N, C, 1, W)``), NCHW float64, each the very gate the framework multiplied by, as its gate
        submodule sees it (:meth:`_gates`): nothing is divided out."""
        return self._gates(module, variables, x, gate_paths(config))

    def _gates(self, module: Any, variables: Any, x: np.ndarray, paths: Mapping[str, str]
               ) -> dict[str, np.ndarray]:
        """One eval forward on the NCHW ``x`` with a hook (:meth:`_hook`) on each gate identity submodule
        ``paths[name]``, which the backends call only while it is hooked: ``{name: its gate}``, NCHW float64."""
        named = self.submodules(module)
        if named is None:
            raise NotImplementedError(f"{self.framework}: no attention gates")
        gates = [n for n in named if n.rpartition(".")[2] in GATE_NAMES]
        for path in paths.values():
            if path not in named:
                raise self._unknown_layer(path, gates)
        module.eval()
        seen: dict[str, Any] = {}
        hooks = [self._hook(named[path], functools.partial(seen.__setitem__, name)) for name, path in paths.items()]
        try:
            self.call(module, self.tensor(x))
        finally:
            for hook in hooks:
                hook.remove()
        return {name: self._nchw(seen[name]) for name in paths}

    def _io_hook(self, layer: Any, record: Callable[[tuple[Any, Any]], None]) -> Any:
        """Have ``record`` called with ``(layer's first input, its output)`` after each of its forwards; returns
        the hook's handle (``.remove()``)."""
        raise NotImplementedError

    def _nchw(self, value: Any) -> np.ndarray:
        """A framework tensor in the module's layout as float64 NumPy, a 4-D one in NCHW."""
        return _layout(self.to_numpy(value, "float64"), NHWC_TO_NCHW if self.default_layout == "NHWC"
                       else (0, 1, 2, 3))

    def _unknown_layer(self, layer: str, available: Sequence[str]) -> ValueError:
        return ValueError(f"{self.framework}: unknown layer {layer!r}; available: {', '.join(available)}")

    def _layer_result(self, logits: Any, activation: Any, gradient: Any) -> LayerGradient:
        """A :class:`LayerGradient` of framework tensors in the module's layout."""
        return LayerGradient(self.to_numpy(logits, "float64"), self._nchw(activation), self._nchw(gradient))

    # -------------------------------------------------------------------------------- checkpoint files
    def read_checkpoint(self, path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
        """The framework's checkpoint file as ``{native key: array}`` (Flax: '/'-joined variable paths); a
        CheckpointError naming the file for an unreadable, truncated or foreign one."""
        raise NotImplementedError

    def write_checkpoint(self, path: str | os.PathLike[str], module: Any, variables: Any) -> None:
        """Save ``module``'s state (Flax: ``variables``) as the framework saves a checkpoint."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ internals
    def _models(self) -> Any:
        """The backend's ``models`` module (``model_from_config``)."""
        return importlib.import_module(f"{self.backend_package}.models")

    def _project_module(self, name: str, config: AttentionConfig) -> tuple[Any, Any]:
        """``(module, variables template or None)`` of the project's module ``name`` built from ``config``: a
        model (``name`` in ``attn_core.models.MODEL_CONFIGS``) through the backend's ``model_from_config``, an
        attention module through its ``ATTN_LAYERS`` entry; built without drawing initial weights (the backend's
        ``skip_init``), since every run loads its case's."""
        with self.backend().skip_init():
            if name in model_names():
                return self._models().model_from_config(config), None
            return self.backend().ATTN_LAYERS[name].from_config(config), None

    def _backend_loaded(self, module: Any, weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """What the backend's own ``load_weights`` makes of canonical ``weights`` (a copy of ``module`` is loaded):
        ``{native name: float64 array}``."""
        raise NotImplementedError

    def _options(self, module: Any) -> dict[str, Any]:
        return {}

    def _cast(self, module: Any, dtype: str) -> Any:
        """``module`` with its parameters and buffers in ``dtype`` (for :meth:`load`)."""
        raise NotImplementedError

    def _execute(self, handle: Handle, native: dict[str, np.ndarray], x: np.ndarray, cotangent: np.ndarray | None,
                 dtype: str, training: bool, mode: str, more: Sequence[np.ndarray] = ()) -> NativeRun:
        """Run on ``x`` in the module's layout with ``native`` weights (see :class:`NativeRun`); the running
        statistics are read in training only, for every binding of :attr:`Handle.state_bindings`, from the module
        the forward ran in, after the training forwards of ``more`` (further batches in the module's layout, run in
        the same module after ``x``)."""
        raise NotImplementedError

    def _train(self, handle: Handle, native: dict[str, np.ndarray], batches: Sequence[np.ndarray],
               labels: Sequence[np.ndarray], optimizer: OptimizerConfig, schedule: ScheduleConfig | None,
               decay: str, dtype: str, record: Callable[[NativeTrainStep], None]) -> None:
        """:meth:`train_each` on batches in the module's layout with ``native`` weights: each step goes to
        ``record`` (see :class:`NativeTrainStep`)."""
        raise NotImplementedError(f"{self.framework}: no native training loop")

    def _eager_train(self, handle: Handle, module: Any, batches: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                     optimizer: OptimizerConfig, schedule: ScheduleConfig | None, decay: str, dtype: str,
                     record: Callable[[NativeTrainStep], None]) -> None:
        """The training loop of a framework whose module holds its state (torch, Paddle): ``module`` in training
        mode, its backend's ``optim`` converter, one :meth:`_loss_step` and one scheduler step per batch."""
        optim = importlib.import_module(f"{self.backend_package}.optim")
        opt, scheduler = optim.create_optimizer(module, optimizer, schedule, decay)
        for x, y in zip(batches, labels, strict=True):
            lr = float(optim.current_lr(opt))  # the lr this step's update uses
            loss = self._loss_step(module, opt, x, y, dtype)
            scheduler.step()
            arrays = self._named_arrays(module)
            record(NativeTrainStep(loss, lr, {b.native: arrays[b.native] for b in handle.trainable},
                                   optim.optimizer_state(module, opt),
                                   {b.native: arrays[b.native] for b in handle.state_bindings}))

    def _loss_step(self, module: Any, opt: Any, x: np.ndarray, labels: np.ndarray, dtype: str) -> float:
        """One update of ``opt`` on the framework's mean softmax cross-entropy of ``module`` on ``x`` (cast to
        ``dtype``) against ``labels``, gradients cleared; returns the loss."""
        raise NotImplementedError

    def _named_arrays(self, module: Any) -> dict[str, np.ndarray]:
        """Every array of the module's ``state_dict`` as a float64 NumPy copy, by native name."""
        raise NotImplementedError


def canonical_step(handle: Handle, step: NativeTrainStep) -> TrainStep:
    """A native step under canonical names and layout; a parameter the framework did not report is left out, so
    that its comparison says it was not computed."""
    params, slots = {}, {}
    for b in handle.trainable:
        if b.native in step.params:
            params[b.spec.name] = np.asarray(b.from_native(np.asarray(step.params[b.native], np.float64)), np.float64)
        if b.native in step.optimizer_state:
            slots[b.spec.name] = {k: np.asarray(b.from_native(np.asarray(v, np.float64)), np.float64)
                                  for k, v in step.optimizer_state[b.native].items()}
    return TrainStep(float(step.loss), None if step.lr is None else float(step.lr), params, slots,
                     handle.canonical_state(step.running))


#: the keys under which a saved ``state_dict`` is commonly wrapped
_WRAPPERS = ("state_dict", "model")


def unwrap_state_dict(obj: Any, path: str | os.PathLike[str], fmt: str) -> dict[str, Any]:
    """A loaded ``state_dict``: unwrapped from ``{'state_dict': ...}`` or ``{'model': ...}``, and without the
    ``module.`` prefix (DataParallel) when every key has it; a CheckpointError for anything else."""
    if isinstance(obj, Mapping):
        for key in _WRAPPERS:
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path}: expected a {fmt} state_dict (key -> tensor) or a dict with one under "
                              f"{' / '.join(repr(k) for k in _WRAPPERS)}; got {type(obj).__name__}"
                              + (f" with keys {', '.join(map(str, list(obj)[:8]))}" if isinstance(obj, Mapping)
                                 else ""))
    state = dict(obj)
    if all(isinstance(k, str) and k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _layout(a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """A 4-D array transposed by ``axes``; any other (a model's ``(N, classes)`` output) as it is."""
    return np.ascontiguousarray(np.transpose(a, axes)) if np.ndim(a) == 4 else a


def model_names() -> frozenset[str]:
    """The registered model names (``attn_core.models.MODEL_CONFIGS``), which runners build as models."""
    from attn_core.models import MODEL_CONFIGS

    return frozenset(MODEL_CONFIGS)
