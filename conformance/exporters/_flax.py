"""Flax's export paths: ``jax.export`` (serialized StableHLO with a symbolic batch dimension), deserialized and
called in a fresh process, and ``jax2onnx`` run in onnxruntime.

The fresh process is one per call of :meth:`JaxExport.run_many` (every row of a run together), so that a run pays
for one JAX start-up: ``python -m conformance.exporters._flax PROGRAM INPUT OUTPUT [...]`` deserializes each
program, calls it on the ``.npy`` input and writes the output ``.npy`` (or ``OUTPUT.err``, one line).
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import EXPORT_OPSET, Artifact, Exporter, OnnxExporter, counts, onnx_ops

#: how long the fresh process may take for all the rows of a run
TIMEOUT_S = 600


def _apply(module: Any, variables: Any) -> Callable[[Any], Any]:
    """The eval-mode forward of ``module`` with ``variables`` closed over (baked into the export)."""
    from ..runners import get_runner

    kwargs = {"train": False} if get_runner("flax")._options(module)["train_arg"] else {}
    return lambda x: module.apply(variables, x, **kwargs)


class JaxExport(Exporter):
    name = "jax.export"
    framework = "flax"
    format = "serialized StableHLO"
    runtime = "jax.export.deserialize, fresh process"
    requires = ("jax", "flax")

    def export(self, module: Any, variables: Any, example: np.ndarray, directory: Path) -> Artifact:
        import jax
        import jax.numpy as jnp

        self.require()
        (batch,) = jax.export.symbolic_shape("batch")
        exported = jax.export.export(jax.jit(_apply(module, variables)))(
            jax.ShapeDtypeStruct((batch, *example.shape[1:]), jnp.float32))
        path = directory / "model.jaxexport"
        path.write_bytes(exported.serialize())
        return Artifact(path, counts(re.findall(r"\b((?:stablehlo|chlo)\.[a-z_]+)\b", exported.mlir_module())))

    def run(self, artifact: Artifact, x: np.ndarray) -> np.ndarray:
        out = self.run_many([(artifact, x)])[0]
        if isinstance(out, str):
            raise RuntimeError(out)
        return out

    def run_many(self, items: Sequence[tuple[Artifact, np.ndarray]]) -> list[np.ndarray | str]:
        args = []
        for i, (artifact, x) in enumerate(items):
            x_path = artifact.path.with_name(f"input-{i}.npy")
            np.save(x_path, np.ascontiguousarray(x, np.float32))
            args += [str(artifact.path), str(x_path), str(artifact.path.with_name(f"output-{i}.npy"))]
        if not args:
            return []
        done = subprocess.run([sys.executable, "-m", "conformance.exporters._flax", *args], capture_output=True,
                              text=True, timeout=TIMEOUT_S, check=False)
        out: list[np.ndarray | str] = []
        for i, (artifact, _) in enumerate(items):
            y_path = artifact.path.with_name(f"output-{i}.npy")
            err = y_path.with_name(y_path.name + ".err")
            if y_path.exists():
                out.append(np.load(y_path))
            elif err.exists():
                out.append(err.read_text().strip())
            else:
                tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
                out.append(f"the fresh process (exit {done.returncode}) wrote no output: {tail}")
        return out


class Jax2Onnx(OnnxExporter):
    name = "jax2onnx"
    framework = "flax"
    requires = ("jax", "flax", "jax2onnx", "onnx", "onnxruntime")

    def export(self, module: Any, variables: Any, example: np.ndarray, directory: Path) -> Artifact:
        self.require()
        import onnx
        from jax2onnx import to_onnx

        from backends.flax._ops import one_op_spatial_conv

        root = logging.getLogger()
        level = root.level
        root.setLevel(max(level, logging.WARNING))  # jax2onnx logs each pass at INFO on the root logger
        try:
            # ONNX's Conv for SpatialAttention's unrolled sum: the same numbers, and its k * k * C_in terms a
            # CBAM network's would make jax2onnx's conversion, quadratic in the equations, take many minutes
            with one_op_spatial_conv():
                model = to_onnx(_apply(module, variables), [("B", *example.shape[1:])], opset=EXPORT_OPSET)
        finally:
            root.setLevel(level)
        path = directory / "model.onnx"
        onnx.save(model, str(path))
        return Artifact(path, onnx_ops(path))


EXPORTERS: tuple[Exporter, ...] = (JaxExport(), Jax2Onnx())


def _call(program: str, x_path: str, y_path: str) -> None:
    import jax

    exported = jax.export.deserialize(bytearray(Path(program).read_bytes()))
    np.save(y_path, np.asarray(exported.call(np.load(x_path))))


def main(argv: Sequence[str]) -> int:
    """Deserialize and call each ``PROGRAM INPUT OUTPUT`` triple (module docstring)."""
    if len(argv) % 3:
        print("usage: python -m conformance.exporters._flax PROGRAM INPUT OUTPUT [...]", file=sys.stderr)
        return 2
    for program, x_path, y_path in zip(argv[0::3], argv[1::3], argv[2::3], strict=True):
        try:
            _call(program, x_path, y_path)
        except Exception as err:  # noqa: BLE001 - each program's failure is its own row's error
            Path(y_path + ".err").write_text(f"{type(err).__name__}: {err}".strip().replace("\n", " "))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
