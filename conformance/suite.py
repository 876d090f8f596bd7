"""Run cases on backends, compare with the float64 reference, and collect the rows of a report."""

from __future__ import annotations

import json
import math
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from .cases import Case, select_cases
from .model_cases import ModelCase, select_model_cases
from .precision import is_low_precision, quantize
from .runners import RUNNERS, Handle, Runner, get_runner
from .tolerances import Tolerance, on_scale

if TYPE_CHECKING:
    from typing import Unpack  # Python 3.11; only mypy reads it, so 3.10 still imports this module

__all__ = ["Comparison", "Row", "Report", "compare", "reference_for", "reference_state_for", "run_case",
           "run_suite", "training_batches"]

Reference = tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]
#: a case's data and its reference, as :func:`reference_for` returns them: (weights, x, cotangent, reference)
CaseReference = tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, Reference]


class JsonOptions(TypedDict, total=False):
    """The keyword options of ``json.dumps`` that :meth:`Report.to_json` passes on."""

    skipkeys: bool
    ensure_ascii: bool
    check_circular: bool
    allow_nan: bool
    cls: type[json.JSONEncoder] | None
    indent: int | str | None
    separators: tuple[str, str] | None
    default: Callable[[Any], Any] | None
    sort_keys: bool


@dataclass
class Comparison:
    """One compared quantity: ``output``, ``grad:input``, ``grad:<canonical parameter name>``, or in training
    ``state:<canonical name>`` (a BatchNorm running statistic after the forward, see :func:`run_case`).

    ``max_rel`` is ``max |got - ref| / max(|ref|, atol)``; ``worst_ratio`` is ``max |got - ref| / (atol +
    rtol |ref|)``, so a quantity passes when it is at most 1 and every value is finite.
    """

    quantity: str
    max_abs: float
    max_rel: float
    worst_ratio: float
    nonfinite: int
    passed: bool
    detail: str = ""


def compare(quantity: str, got: np.ndarray | None, ref: np.ndarray, tol: Tolerance, scaled: bool = False
            ) -> Comparison:
    """Compare one quantity elementwise with the reference (numpy.allclose's rule). ``scaled`` (model cases) raises
    the absolute tolerance to ``rtol * max |ref|``: an element near 0 is judged on the scale of its quantity, since a
    deep network's gradients span many orders of magnitude within one parameter."""
    if got is None:
        return Comparison(quantity, math.inf, math.inf, math.inf, 0, False, "not computed by the backend")
    got = np.asarray(got, dtype=np.float64)
    if got.shape != ref.shape:
        return Comparison(quantity, math.inf, math.inf, math.inf, 0, False,
                          f"shape {got.shape}, expected {ref.shape}")
    if got.size == 0:
        return Comparison(quantity, 0.0, 0.0, 0.0, 0, True)
    # in place on three temporaries: a whole network's quantities are compared at every training step
    err = np.subtract(got, ref, out=np.empty(got.shape))
    np.abs(err, out=err)
    finite = np.isfinite(got)
    nonfinite = int(got.size - np.count_nonzero(finite))
    if nonfinite:
        err[~finite] = np.inf
    scale = np.abs(ref, out=np.empty(got.shape))
    if scaled:
        tol = on_scale(tol, float(scale.max()))
    max_abs = float(err.max())
    rel = np.maximum(scale, tol.atol, out=np.empty(got.shape))
    max_rel = float(np.divide(err, rel, out=rel).max())
    bound = np.multiply(scale, tol.rtol, out=scale)
    bound += tol.atol
    ratio = np.divide(err, bound, out=bound)
    worst = float(ratio.max())
    detail = ""
    if worst > 1 or nonfinite:
        idx = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        detail = f"worst at index {tuple(int(i) for i in idx)}: got {got[idx]!r}, expected {ref[idx]!r}"
        if nonfinite:
            detail = f"{nonfinite} non-finite value(s); " + detail
    return Comparison(quantity, max_abs, max_rel, worst, nonfinite, worst <= 1 and nonfinite == 0, detail)


def layer_gradient_scales(dparams: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Parameter name -> ``max |gradient|`` over the parameters of its layer (the names that share its prefix).

    A parameter's gradient sums products over the batch and positions, rounded relative to the layer's gradients,
    not to each element: a bias whose gradient cancels to exactly 0 (a key bias under a softmax over keys) or a
    weight in front of a normalisation that removes the mean carries that rounding whole, so its absolute tolerance
    is raised to ``rtol`` times this scale (:func:`conformance.tolerances.on_scale`); a wrong weight moves the
    gradients by orders of magnitude more.
    """
    by_layer: dict[str, float] = {}
    for name, ref in dparams.items():
        layer = name.rpartition(".")[0]
        by_layer[layer] = max(by_layer.get(layer, 0.0), float(np.abs(ref).max()) if np.size(ref) else 0.0)
    return {name: by_layer[name.rpartition(".")[0]] for name in dparams}


@dataclass
class Row:
    """One module x case x backend x dtype x mode: the verdict and every comparison behind it.

    ``mode`` is the runner's label of the execution mode ('eager', 'torch.compile', 'to_static', 'jax.jit');
    ``seconds`` the wall time of the backend's forward and backward (compilation included in a compiled mode);
    ``note`` what the runner says about the run (graphs compiled, graph breaks).
    """

    module: str
    case: str
    backend: str
    dtype: str
    mode: str
    status: str  # 'pass', 'fail', 'error', 'skip' (not installed) or 'n/a' (the framework cannot run the dtype)
    comparisons: list[Comparison] = field(default_factory=list)
    message: str = ""
    seconds: float = math.nan
    note: str = ""
    #: an export row's operator counts of the exported graph (:mod:`conformance.export`); empty otherwise
    ops: dict[str, int] = field(default_factory=dict)

    @property
    def worst(self) -> Comparison | None:
        return max(self.comparisons, key=lambda c: c.worst_ratio, default=None)

    @property
    def max_abs(self) -> float:
        return max((c.max_abs for c in self.comparisons), default=math.nan)

    @property
    def max_rel(self) -> float:
        return max((c.max_rel for c in self.comparisons), default=math.nan)

    @property
    def failed(self) -> bool:
        return self.status in ("fail", "error")


def reference_for(case: Case, grads: bool = True, dtype: str = "float64"
                  ) -> CaseReference:
    """The case's data and the float64 reference: (weights, x, cotangent, (y, dx, dparams)).

    For a low-precision ``dtype`` (float16, bfloat16) the weights, input and cotangent are first rounded to it
    (:func:`conformance.precision.quantize`, still float64), and the reference is that of the rounded data, which is
    also what is returned for the backend to run: the backend is judged on its arithmetic, not on the rounding of
    its inputs. float32 and float64 use the data as drawn.
    """
    config = case.config()
    weights, x, cotangent = case.data(config)
    if is_low_precision(dtype):
        weights = {k: quantize(v, dtype) for k, v in weights.items()}
        x, cotangent = quantize(x, dtype), quantize(cotangent, dtype)
    if grads:
        ref = config.reference_vjp(weights, x, cotangent, training=case.training)
    else:
        ref = (config.reference(weights, x, training=case.training), np.empty(0), {})
    return weights, x, cotangent, ref


def training_batches(case: Case, x: np.ndarray, dtype: str = "float64") -> list[np.ndarray]:
    """The inputs of the case's training steps: ``x`` (as :func:`reference_for` returns it), then
    :meth:`Case.batches`, rounded to a low-precision ``dtype`` as ``x`` is."""
    more = case.batches() if case.training else []
    if is_low_precision(dtype):
        more = [quantize(b, dtype) for b in more]
    return [x, *more]


def reference_state_for(case: Case, weights: dict[str, np.ndarray], batches: Sequence[np.ndarray]
                        ) -> dict[str, np.ndarray]:
    """The float64 running statistics after one training step on each of ``batches`` in order:
    ``config.reference_state`` applied once per batch, each time on the state the previous step left."""
    config = case.config()
    current = dict(weights)
    state: dict[str, np.ndarray] = {}
    for batch in batches:
        state = config.reference_state(current, batch)
        current.update(state)
    return state


def run_case(case: Case, target: Handle | Runner, dtype: str = "float32", grads: bool = True,
             reference: CaseReference | None = None, mode: str = "eager",
             state_reference: dict[str, np.ndarray] | None = None) -> Row:
    """Run one case in one mode ('eager' or 'compiled') and compare every output and gradient with the float64
    reference. ``target`` is a built :class:`~conformance.runners.Handle` (a wrapped module, run as it is) or a
    runner, which builds the project's module of the case within the row, so that a module that cannot be built is
    that row's error. A mode the runner does not know, or cannot run the case in, is an 'error' row.

    A training case also compares every BatchNorm running statistic the module holds after its forward
    (``state:<canonical name>``) with ``config.reference_state`` of the same weights and input: the project's one
    convention (torch's, the unbiased batch variance in the running variance). A statistic the backend did not
    report fails; one still equal to its value before the forward fails with a note saying it was not updated.
    A case of ``steps`` k > 1 (the model cases) runs k training steps in the same module, the forward and backward
    of its input and then a forward of each of :meth:`Case.batches`, and compares the statistics after step k with
    :func:`reference_state_for` (given as ``state_reference`` when already computed); output and gradients are
    those of step 1."""
    runner = target.runner if isinstance(target, Handle) else target
    label = runner.mode_label(mode) if mode in runner.modes else mode
    row = Row(case.module, case.case_id, runner.framework, dtype, label, "pass")
    ok, why = runner.available()
    if not ok:
        row.status, row.message = "skip", why
        return row
    ok, why = runner.supports(case.module, dtype)
    if not ok:  # declared in the runner's capability table: neither a pass nor a failure
        row.status, row.message = "n/a", why
        return row
    if mode not in runner.modes:
        row.status = "error"
        row.message = f"unknown mode {mode!r} for {runner.framework}; known: {', '.join(runner.modes)}"
        return row
    tol = case.tolerance(dtype)
    weights, x, cotangent, (y_ref, dx_ref, dp_ref) = reference or reference_for(case, grads, dtype)
    batches = training_batches(case, x, dtype)
    more = {"more_batches": batches[1:]} if len(batches) > 1 else {}  # module cases: one step, the call as before
    try:
        handle = target if isinstance(target, Handle) else runner.build_handle(case.module, case.config())
        got = runner.execute(handle, weights, x, cotangent if grads else None, dtype, case.training, mode, **more)
    except Exception as err:  # noqa: BLE001 - any failure of a backend is reported as that row's error
        row.status = "error"
        row.message = f"{type(err).__name__}: {err}".strip()
        row.message += "\n" + "".join(traceback.format_exception(err)[-3:]).rstrip()
        return row
    row.seconds, row.note = got.seconds, got.note
    scaled = case.scaled
    row.comparisons.append(compare("output", got.y, y_ref, tol, scaled))
    if grads and not case.compares_grads(dtype):
        row.note = "; ".join(filter(None, [row.note, f"gradients not compared in {dtype} (see {case.grad_note})"]))
    elif grads:
        row.comparisons.append(compare("grad:input", got.dx, dx_ref, tol, scaled))
        layer_scale = layer_gradient_scales(dp_ref)
        for name, ref in dp_ref.items():
            t = tol if scaled else on_scale(tol, layer_scale[name])
            row.comparisons.append(compare(f"grad:{name}", got.dparams.get(name), ref, t, scaled))
        extra = sorted(set(got.dparams) - set(dp_ref))
        if extra:
            row.message = "backend returned gradients for unknown parameters: " + ", ".join(extra)
            row.status = "fail"
    if case.training:
        ref_state = state_reference if state_reference is not None else reference_state_for(case, weights, batches)
        row.comparisons.extend(_compare_state(ref_state, got.state, weights, tol, scaled))
    if not all(c.passed for c in row.comparisons):
        row.status = "fail"
    return row


def _compare_state(ref_state: dict[str, np.ndarray], got_state: dict[str, np.ndarray],
                   before: dict[str, np.ndarray], tol: Tolerance, scaled: bool = False) -> list[Comparison]:
    """``state:<name>`` comparisons of the running statistics after a training forward."""
    out = []
    for name, ref in ref_state.items():
        got = got_state.get(name)
        c = compare(f"state:{name}", got, ref, tol, scaled)
        if got is not None and not c.passed and name in before and \
                compare("", got, np.asarray(before[name], dtype=np.float64), tol).passed:
            c.detail = "not updated by the training forward (still its value before it); " + c.detail
        out.append(c)
    return out


@dataclass
class Report:
    rows: list[Row]

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if r.failed]

    @property
    def skipped(self) -> list[Row]:
        return [r for r in self.rows if r.status == "skip"]

    @property
    def passed(self) -> list[Row]:
        return [r for r in self.rows if r.status == "pass"]

    @property
    def not_applicable(self) -> list[Row]:
        """Rows in a dtype the framework cannot run (its runner's capability table says why)."""
        return [r for r in self.rows if r.status == "n/a"]

    def summary(self) -> str:
        text = f"{len(self.passed)} passed, {len(self.failed)} failed, {len(self.skipped)} skipped"
        return text + (f", {len(self.not_applicable)} n/a" if self.not_applicable else "")

    def not_applicable_details(self) -> str:
        """One line per backend x dtype x reason of the 'n/a' rows, with the modules concerned."""
        groups: dict[tuple[str, str, str], list[Row]] = {}
        for r in self.not_applicable:
            groups.setdefault((r.backend, r.dtype, r.message), []).append(r)
        return "\n".join(f"N/A {backend} {dtype}: {', '.join(dict.fromkeys(r.module for r in rows))} "
                         f"({len(rows)} rows): {why}" for (backend, dtype, why), rows in groups.items())

    def to_dict(self) -> dict[str, Any]:
        def clean(v: object) -> object:
            return None if isinstance(v, float) and not math.isfinite(v) else v

        rows = []
        for r in self.rows:
            d = asdict(r)
            d["max_abs"], d["max_rel"], d["seconds"] = clean(r.max_abs), clean(r.max_rel), clean(r.seconds)
            d["worst_quantity"] = r.worst.quantity if r.worst else None
            d["comparisons"] = [{k: clean(v) for k, v in c.items()} for c in d["comparisons"]]
            rows.append(d)
        from .tolerances import TOLERANCES
        return {"summary": {"passed": len(self.passed), "failed": len(self.failed), "skipped": len(self.skipped),
                            "n/a": len(self.not_applicable)},
                "tolerances": {k: asdict(v) for k, v in TOLERANCES.items()}, "rows": rows}

    def to_json(self, **kwargs: Unpack[JsonOptions]) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def table(self) -> str:
        head = ("module", "case", "backend", "dtype", "mode", "max_abs", "max_rel", "worst", "time", "result")
        body = []
        for r in self.rows:
            w = r.worst
            body.append((r.module, r.case, r.backend, r.dtype, r.mode,
                         "-" if not r.comparisons else f"{r.max_abs:.2e}",
                         "-" if not r.comparisons else f"{r.max_rel:.2e}",
                         w.quantity if w else "-", "-" if math.isnan(r.seconds) else f"{r.seconds:.2f}s",
                         r.status.upper()))
        widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
        lines = ["  ".join(str(v).ljust(n) for v, n in zip(line, widths, strict=True)).rstrip()
                 for line in [head, *body]]
        lines.insert(1, "  ".join("-" * n for n in widths))
        return "\n".join(lines)

    def failure_details(self) -> str:
        out = []
        for r in self.failed + self.skipped:
            out.append(f"{r.status.upper()} {r.module}/{r.case} [{r.backend}, {r.dtype}, {r.mode}]")
            if r.message:
                out.extend("    " + line for line in r.message.splitlines())
            for c in r.comparisons:
                if not c.passed:
                    out.append(f"    {c.quantity}: max_abs {c.max_abs:.3e}, max_rel {c.max_rel:.3e}, "
                               f"{c.worst_ratio:.3g}x tolerance. {c.detail}")
        return "\n".join(out)


def run_suite(backends: Sequence[str] | None = None, modules: Iterable[str] | None = None,
              dtypes: Sequence[str] = ("float32",), grads: bool = True,
              progress: Callable[[Row], None] | None = None, modes: Sequence[str] = ("default",),
              models: Iterable[str] | None = ()) -> Report:
    """Every selected case on every selected backend, dtype and mode, one row each; the reference is computed once
    per case (and per low-precision dtype). Modes: 'eager', 'compiled', or 'default', each framework's own default
    path (its runner's ``default_mode``: torch and Paddle eager, Flax under jax.jit).

    ``modules``: the attention modules whose cases run (None: all; empty: none). ``models``: the registered models
    whose cases (:mod:`conformance.model_cases`) run after them (None: all; empty, the default: none)."""
    backends = list(backends or RUNNERS)
    runners = [get_runner(b) for b in backends]
    rows = []
    cases = [*select_cases(modules), *select_model_cases(models)]
    for i, case in enumerate(cases):
        if i and isinstance(cases[i - 1], ModelCase) and cases[i - 1].module != case.module:
            for runner in runners:  # a whole network's programs: released before the next model's
                runner.release()
        references: dict[str, CaseReference] = {}
        states: dict[str, dict[str, np.ndarray]] = {}
        for runner in runners:
            for dtype in dtypes:
                key = dtype if is_low_precision(dtype) else "float64"  # the data each dtype's reference is of
                if key not in references:
                    references[key] = reference_for(case, grads, key)
                    if case.training:
                        weights, x = references[key][0], references[key][1]
                        states[key] = reference_state_for(case, weights, training_batches(case, x, key))
                for mode in dict.fromkeys(runner.default_mode if m == "default" else m for m in modes):
                    row = run_case(case, runner, dtype, grads, references[key], mode, states.get(key))
                    rows.append(row)
                    if progress is not None:
                        progress(row)
    return Report(rows)
