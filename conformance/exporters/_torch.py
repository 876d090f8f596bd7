"""torch's export path: ``torch.onnx.export`` (the dynamo exporter, opset 18, dynamic batch) run in onnxruntime."""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from . import EXPORT_OPSET, Artifact, Exporter, ModeExporter, OnnxExporter, onnx_ops


class TorchOnnx(ModeExporter, OnnxExporter):
    name = "torch.onnx"
    framework = "torch"
    requires = ("torch", "onnx", "onnxscript", "onnxruntime")

    def export(self, module: Any, variables: Any, example: np.ndarray, directory: Path) -> Artifact:
        import torch

        self.ready(module)
        path = directory / "model.onnx"
        batch = torch.export.Dim("batch")
        # onnx_ir warns of a shape value it leaves untyped in the file; the row's comparison judges the file
        logging.getLogger("onnx_ir.serde").setLevel(logging.ERROR)
        # the exporter prints its progress on stdout; the caller's output is the report
        with contextlib.redirect_stdout(io.StringIO()):
            torch.onnx.export(module, (torch.from_numpy(np.ascontiguousarray(example, np.float32)),), str(path),
                              dynamo=True, opset_version=EXPORT_OPSET, dynamic_shapes=({0: batch},),
                              input_names=["x"], output_names=["y"], external_data=False, verbose=False)
        return Artifact(path, onnx_ops(path))


EXPORTERS: tuple[Exporter, ...] = (TorchOnnx(),)
