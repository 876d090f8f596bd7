"""Export rows: every module case and chosen model in eval mode, exported to each framework's deployment formats,
run in the format's runtime and compared with the float64 reference (issue 16).

Each row exports the project's module of a case, holding the case's weights in float32, traced on an input of
another batch size than the case's (:func:`export_batch`), then runs the exported artifact on the case's input
and compares the output with the float64 reference under the float32 tolerance. Every format here takes a dynamic
batch (ONNX's ``batch`` dimension, Paddle's None, JAX's symbolic one), so a row also shows that the batch was
not baked in. The row's ``ops`` are the exported graph's operator counts (ONNX ``op_type``; the PIR program's op
names; StableHLO op names of the MLIR text), so that a change in what an exporter emits shows as a diff in the
JSON report. Export files go to one temporary folder, removed at the end.

Paths (:mod:`conformance.exporters`): torch.onnx, Paddle's jit.save and paddle2onnx, Flax's jax.export (all of a
run's programs deserialized and called in one fresh process) and jax2onnx. A framework that is not installed
gives 'skip' rows; an exporter or runtime that is not installed gives 'n/a' rows with the reason and what to
install. Export is of eval mode only: a module in training mode is refused (:func:`conformance.exporters.check_eval`);
the rows put their modules in eval mode themselves.
"""

from __future__ import annotations

import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attn_core.layout import NHWC_TO_NCHW

from .cases import Case, select_cases
from .exporters import Artifact, Exporter, exporters
from .model_cases import select_model_cases
from .runners import RUNNERS, Runner, get_runner
from .suite import Row, compare

__all__ = ["export_batch", "export_cases", "run_export"]


def export_batch(n: int) -> int:
    """The batch size an artifact is exported at for a case of batch ``n``: never ``n``, and never 1, which
    torch's exporter would specialise the batch dimension to."""
    return 3 if n == 2 else 2


def export_cases(modules: Iterable[str] | None = None, models: Iterable[str] | None = ()) -> list[Case]:
    """The eval cases of the modules (None: all) and models (None: all; empty, the default: none)."""
    return [c for c in [*select_cases(modules), *select_model_cases(models)] if not c.training]


@dataclass
class _Pending:
    row: Row
    exporter: Exporter
    artifact: Artifact
    x: np.ndarray
    reference: np.ndarray
    case: Case
    runner: Runner


def _error(row: Row, err: BaseException) -> Row:
    row.status = "error"
    row.message = f"{type(err).__name__}: {err}".strip()
    row.message += "\n" + "".join(traceback.format_exception(err)[-3:]).rstrip()
    return row


def _build(runner: Runner, case: Case, weights: dict[str, np.ndarray]) -> tuple[Any, Any]:
    """The project's module of ``case`` in ``runner``'s framework holding ``weights`` in float32."""
    module, _ = runner._project_module(case.module, case.config())
    return runner.load(module, weights, "float32")


def _canonical(runner: Runner, y: np.ndarray) -> np.ndarray:
    """An output in the module's layout as float64 NCHW."""
    y = np.asarray(y, np.float64)
    return np.transpose(y, NHWC_TO_NCHW) if y.ndim == 4 and runner.default_layout == "NHWC" else y


def run_export(modules: Iterable[str] | None = None, models: Iterable[str] | None = (),
               backends: Sequence[str] | None = None, paths: Iterable[str] | None = None,
               progress: Callable[[Row], None] | None = None, cases: Sequence[Case] | None = None) -> list[Row]:
    """One row per eval case x backend x export path (module docstring). ``paths``: the exporter names to run
    (None: all); an unknown one is a ValueError naming the known ones. ``cases``, when given, replace the eval
    cases of ``modules`` and ``models``."""
    backends = list(backends or RUNNERS)
    bad = [b for b in backends if b not in RUNNERS]
    if bad:
        raise ValueError(f"unknown backend(s) {', '.join(bad)}; known: {', '.join(RUNNERS)}")
    chosen = {b: exporters(b) for b in backends}
    if paths is not None:
        wanted = list(paths)
        known = [e.name for es in chosen.values() for e in es]
        unknown = [p for p in wanted if p not in known]
        if unknown:
            raise ValueError(f"unknown export path(s) {', '.join(unknown)}; known: {', '.join(known)}")
        chosen = {b: tuple(e for e in es if e.name in wanted) for b, es in chosen.items()}
    rows: list[Row] = []
    pending: list[_Pending] = []
    with tempfile.TemporaryDirectory(prefix="attn-export-") as tmp:
        for case in export_cases(modules, models) if cases is None else cases:
            config = case.config()
            weights, x, _ = case.data(config)
            reference = config.reference(weights, x, training=False)
            example = np.random.default_rng(case.seed).standard_normal(
                (export_batch(x.shape[0]), *x.shape[1:])).astype(np.float32)
            for fw in backends:
                pending += _export_case(case, get_runner(fw), chosen[fw], weights, x, example, reference,
                                        Path(tmp), rows, progress)
        for exporter in dict.fromkeys(p.exporter for p in pending):
            mine = [p for p in pending if p.exporter is exporter]
            start = time.perf_counter()
            outs = exporter.run_many([(p.artifact, p.runner.nchw_to_native(p.x).astype(np.float32))
                                      for p in mine])
            seconds = (time.perf_counter() - start) / max(len(mine), 1)
            for p, out in zip(mine, outs, strict=True):
                p.row.seconds += seconds
                if isinstance(out, str):
                    p.row.status, p.row.message = "error", out
                else:
                    c = compare("output", _canonical(p.runner, out), p.reference, p.case.tolerance("float32"),
                                p.case.scaled)
                    p.row.comparisons.append(c)
                    p.row.status = "pass" if c.passed else "fail"
                if progress is not None:
                    progress(p.row)
    return rows


def _export_case(case: Case, runner: Runner, paths: Sequence[Exporter], weights: dict[str, np.ndarray],
                 x: np.ndarray, example: np.ndarray, reference: np.ndarray, tmp: Path, rows: list[Row],
                 progress: Callable[[Row], None] | None) -> list[_Pending]:
    """Export ``case`` through each of ``paths``; the rows that cannot run are finished here, the others wait
    for their runtime (:func:`run_export`)."""
    made = []
    new = [Row(case.module, case.case_id, runner.framework, "float32", e.name, "pass",
               note=f"{e.format} in {e.runtime}; exported at batch {example.shape[0]}, run at batch {x.shape[0]}")
           for e in paths]
    rows.extend(new)
    ok, why = runner.available()
    module: Any = None
    variables: Any = None
    for exporter, row in zip(paths, new, strict=True):
        reason = why if not ok else exporter.unavailable()
        if reason is not None:
            row.status, row.message = ("skip" if not ok else "n/a"), reason
        else:
            try:
                if module is None:
                    module, variables = _build(runner, case, weights)
                exporter.eval(module)
                folder = Path(tempfile.mkdtemp(dir=tmp, prefix=f"{case.module}-{runner.framework}-"))
                start = time.perf_counter()
                artifact = exporter.export(module, variables, runner.nchw_to_native(example), folder)
                row.seconds, row.ops = time.perf_counter() - start, artifact.ops
                made.append(_Pending(row, exporter, artifact, x, reference, case, runner))
                continue
            except Exception as err:  # noqa: BLE001 - any failure of an exporter is reported as that row's error
                _error(row, err)
        if progress is not None:
            progress(row)
    return made
