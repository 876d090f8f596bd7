"""Exporters to deployment formats, one small module per framework (``_torch``, ``_paddle``, ``_flax``), each a
list of :class:`Exporter` in ``EXPORTERS``: export an eval-mode module to a file, load it in the format's runtime,
run it, and count the operators of the exported graph.

| framework | exporter | format | runtime |
|---|---|---|---|
| torch | ``torch.onnx`` | ONNX (dynamo exporter, opset 18, dynamic batch) | onnxruntime |
| paddle | ``jit.save`` | PIR program (``.json`` + ``.pdiparams``, batch None) | Paddle Inference predictor |
| paddle | ``paddle2onnx`` | ONNX | onnxruntime |
| flax | ``jax.export`` | serialized StableHLO, symbolic batch | deserialized and called in a fresh process |
| flax | ``jax2onnx`` | ONNX (dynamic batch) | onnxruntime |

Frameworks and exporters are imported only when used; an exporter whose packages are missing says why
(:meth:`Exporter.unavailable`) and what to install.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attn_core.frameworks import FRAMEWORKS

__all__ = ["Artifact", "ExportError", "Exporter", "ModeExporter", "OnnxExporter", "exporters", "onnx_ops", "run_onnx",
           "EXPORT_OPSET", "EXPORT_INSTALL"]

#: the ONNX opset of every ONNX export (torch 2.13's dynamo exporter's default)
EXPORT_OPSET = 18
#: what installs the exporters and runtimes that share one environment
EXPORT_INSTALL = "pip install 'attn-modules[export]'"


class ExportError(ValueError):
    """An export that cannot be done as asked (a module in training mode, an exporter not installed); the message
    is one line naming what to do, and nothing was written."""


@dataclass
class Artifact:
    """An exported file (or the first file of a format made of several) and its graph's operator counts."""

    path: Path
    ops: dict[str, int] = field(default_factory=dict)


class Exporter:
    """One export path of one framework. Subclasses set the class attributes and implement :meth:`export` and
    :meth:`run`; ``requires`` are the importable packages the path needs."""

    name: str = ""
    framework: str = ""
    format: str = ""
    runtime: str = ""
    requires: tuple[str, ...] = ()
    #: whether the exported file is ONNX (the conversion command's ``.onnx`` target)
    onnx: bool = False

    def unavailable(self) -> str | None:
        """Why this path cannot run in this environment (one line naming what to install), None when it can."""
        missing = [m for m in self.requires if importlib.util.find_spec(m) is None]
        if missing:
            return f"{', '.join(missing)} not installed: {EXPORT_INSTALL}"
        return None

    def require(self) -> None:
        """An ExportError when :meth:`unavailable` gives a reason."""
        why = self.unavailable()
        if why is not None:
            raise ExportError(f"{self.framework} {self.name}: {why}")

    def eval(self, module: Any) -> None:
        """Put ``module`` in eval mode (for a framework whose modules hold their mode)."""

    def export(self, module: Any, variables: Any, example: np.ndarray, directory: Path) -> Artifact:
        """Export the eval-mode ``module`` (Flax: with ``variables``) traced on ``example`` (float32, in the
        module's layout) into ``directory``, with a dynamic batch where the format takes one. A module in
        training mode is an ExportError (module docstring of :mod:`conformance.export`)."""
        raise NotImplementedError

    def run(self, artifact: Artifact, x: np.ndarray) -> np.ndarray:
        """The exported program's output on ``x`` (float32, the module's layout), run in the format's runtime."""
        raise NotImplementedError

    def run_many(self, items: Sequence[tuple[Artifact, np.ndarray]]) -> list[np.ndarray | str]:
        """:meth:`run` of each item; a failure is that item's one-line message (so one bad artifact does not
        stop the others). A runtime that starts a process overrides it to run every item in one."""
        out: list[np.ndarray | str] = []
        for artifact, x in items:
            try:
                out.append(self.run(artifact, x))
            except Exception as err:  # noqa: BLE001 - any failure of the runtime is that row's error
                out.append(f"{type(err).__name__}: {err}".strip())
        return out


class ModeExporter(Exporter):
    """An export path of a framework whose modules hold their own mode (torch, Paddle): :meth:`eval` switches it,
    and :meth:`ready` refuses a module left in training mode."""

    def eval(self, module: Any) -> None:
        module.eval()

    def ready(self, module: Any) -> None:
        """An ExportError when the exporter is not installed or ``module`` is in training mode."""
        self.require()
        check_eval(self.framework, module)


class OnnxExporter(Exporter):
    """An export path to an ONNX file of :data:`EXPORT_OPSET`, run in onnxruntime."""

    format = f"ONNX opset {EXPORT_OPSET}"
    runtime = "onnxruntime"
    onnx = True

    def run(self, artifact: Artifact, x: np.ndarray) -> np.ndarray:
        return run_onnx(artifact.path, x)


def exporters(framework: str) -> tuple[Exporter, ...]:
    """The export paths of ``framework`` (``conformance.exporters._<framework>.EXPORTERS``)."""
    if framework not in FRAMEWORKS:
        raise ValueError(f"unknown framework {framework!r}; known: {', '.join(FRAMEWORKS)}")
    found: tuple[Exporter, ...] = importlib.import_module(f"conformance.exporters._{framework}").EXPORTERS
    return found


def check_eval(framework: str, module: Any) -> None:
    """An ExportError when ``module`` (torch, Paddle) is in training mode: its BatchNorm would export batch
    statistics, which a deployed model never uses."""
    if getattr(module, "training", False):
        raise ExportError(f"{framework}: {type(module).__name__} is in training mode; call .eval() before "
                          "exporting (BatchNorm would use the batch's statistics, not the running ones)")


def onnx_ops(path: Path) -> dict[str, int]:
    """``{op_type: count}`` of the nodes of the ONNX file's main graph."""
    import onnx

    return dict(sorted(Counter(n.op_type for n in onnx.load(str(path)).graph.node).items()))


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    """The ONNX file's first output on ``x`` (its one input), in onnxruntime on the CPU."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings name graph optimisations, not results
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    y: np.ndarray = session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(x, np.float32)})[0]
    return y


def counts(names: Sequence[str]) -> dict[str, int]:
    """``{name: count}`` sorted by name."""
    return dict(sorted(Counter(names).items()))
