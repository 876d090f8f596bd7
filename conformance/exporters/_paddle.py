"""Paddle's export paths: ``paddle.jit.save`` (a PIR program with a None batch) run by a Paddle Inference
predictor, and ``paddle2onnx`` run in onnxruntime.

``paddle2onnx`` 2.1 pins ``onnx<=1.17`` while ``jax2onnx`` needs ``onnx>=1.20.1``, so the two cannot share one
environment: the 'export' extra holds jax2onnx, and paddle2onnx's rows say n/a with that reason unless it is
installed with an onnx inside its pin (an environment of its own: ``pip install -e ".[paddle]" paddle2onnx``).

paddle2onnx converts in a child process, ``python -m conformance.exporters._paddle PROGRAM PARAMS OUTPUT OPSET``:
on an operator it has no converter for, it aborts its process, which must end that row and not the run.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import EXPORT_OPSET, Artifact, Exporter, ExportError, ModeExporter, OnnxExporter, counts, onnx_ops

#: the newest onnx that paddle2onnx 2.1 declares it works with
PADDLE2ONNX_ONNX_MAX = (1, 17)
#: how long one paddle2onnx conversion may take, its process's start included
TIMEOUT_S = 300


@contextlib.contextmanager
def _native_stdout_dropped() -> Iterator[None]:
    """File descriptor 1 to the null device within the block: Paddle Inference's oneDNN check prints
    ``ReduceMeanCheckIfOneDNNSupport`` from C++ on a predictor's first run, into the report."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _program_ops(program: Path) -> dict[str, int]:
    """The op names of a PIR program file (``model.json``), dialect prefix dropped (``p`` is a parameter)."""
    names: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "ops" and isinstance(value, list):
                    names.extend(str(op.get("#", "?")).rpartition(".")[2] for op in value if isinstance(op, dict))
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(program.read_text()))
    return counts(["parameter" if n == "p" else n for n in names])


class _PaddleExporter(ModeExporter):
    """A Paddle export path: each starts from ``paddle.jit.save``."""

    framework = "paddle"

    def save(self, module: Any, example: np.ndarray, directory: Path) -> Path:
        """``paddle.jit.save`` of the eval-mode ``module`` with an input of None batch: the path prefix of its
        files (an ExportError, nothing written, when the path cannot run or the module is in training mode)."""
        import paddle

        from backends.paddle._ops import exportable_ops

        from ..runners.paddle_runner import _dygraph_on_cpu

        self.ready(module)
        prefix = directory / "model"
        spec = paddle.static.InputSpec([None, *example.shape[1:]], "float32", name="x")
        with _dygraph_on_cpu(), exportable_ops():
            paddle.jit.save(module, str(prefix), input_spec=[spec])
        return prefix


class PaddleJitSave(_PaddleExporter):
    name = "jit.save"
    format = "PIR program (.json + .pdiparams)"
    runtime = "Paddle Inference"
    requires = ("paddle",)

    def export(self, module: Any, variables: Any, example: np.ndarray, directory: Path) -> Artifact:
        program = self.save(module, example, directory).with_suffix(".json")
        return Artifact(program, _program_ops(program))

    def run(self, artifact: Artifact, x: np.ndarray) -> np.ndarray:
        from paddle import inference

        config = inference.Config(str(artifact.path), str(artifact.path.with_suffix(".pdiparams")))
        config.disable_gpu()
        config.disable_glog_info()
        predictor = inference.create_predictor(config)
        handle = predictor.get_input_handle(predictor.get_input_names()[0])
        handle.reshape(list(x.shape))
        handle.copy_from_cpu(np.ascontiguousarray(x, np.float32))
        with _native_stdout_dropped():
            predictor.run()
        y: np.ndarray = predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()
        return y


class Paddle2Onnx(_PaddleExporter, OnnxExporter):
    name = "paddle2onnx"
    requires = ("paddle", "paddle2onnx", "onnx", "onnxruntime")

    def unavailable(self) -> str | None:
        if importlib.util.find_spec("paddle2onnx") is None:
            return ("paddle2onnx not installed: it pins onnx<=1.17, which jax2onnx (the 'export' extra) cannot "
                    "share; pip install paddle2onnx in an environment of its own, without the 'export' extra")
        if importlib.util.find_spec("onnx") is not None:
            version = importlib.metadata.version("onnx")
            if tuple(int(p) for p in version.split(".")[:2]) > PADDLE2ONNX_ONNX_MAX:
                return (f"onnx {version} is installed, outside paddle2onnx's pin onnx<=1.17; pip install "
                        "paddle2onnx in an environment of its own, without the 'export' extra")
        return super().unavailable()

    def export(self, module: Any, variables: Any, example: np.ndarray, directory: Path) -> Artifact:
        prefix = self.save(module, example, directory)  # first: it refuses a missing paddle2onnx
        path = directory / "model.onnx"
        args = [str(prefix.with_suffix(".json")), str(prefix.with_suffix(".pdiparams")), str(path), str(EXPORT_OPSET)]
        try:
            done = subprocess.run([sys.executable, "-m", "conformance.exporters._paddle", *args], capture_output=True,
                                  text=True, timeout=TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as err:
            path.unlink(missing_ok=True)
            raise ExportError(f"paddle2onnx: the conversion took more than {TIMEOUT_S} s") from err
        if done.returncode != 0 or not path.exists():
            path.unlink(missing_ok=True)
            raise ExportError(f"paddle2onnx: {_conversion_failure(done.returncode, done.stdout + done.stderr)}")
        return Artifact(path, onnx_ops(path))


def _conversion_failure(returncode: int, output: str) -> str:
    """One line from a failed paddle2onnx process: its own error lines (the operators it cannot convert), else the
    last line it printed, and how the process ended."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "[ERROR]" in line or "unsupported" in line.lower()]
    said = "; ".join(dict.fromkeys(errors)) if errors else (lines[-1] if lines else "no output")
    ended = f"killed by signal {-returncode}" if returncode < 0 else f"exit {returncode}"
    return f"{said} (conversion process {ended})"


EXPORTERS: tuple[Exporter, ...] = (PaddleJitSave(), Paddle2Onnx())


def main(argv: Sequence[str]) -> int:
    """Convert ``PROGRAM PARAMS OUTPUT OPSET`` with paddle2onnx (module docstring)."""
    if len(argv) != 4:
        print("usage: python -m conformance.exporters._paddle PROGRAM PARAMS OUTPUT OPSET", file=sys.stderr)
        return 2
    import paddle2onnx

    program, params, output, opset = argv
    paddle2onnx.export(program, params, output, opset_version=int(opset))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
