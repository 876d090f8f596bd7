"""Convert a checkpoint between torch, Paddle, Flax and the canonical safetensors file, and verify it by running.

``convert(src, dst, model='resnet50')`` (or ``python -m conformance.convert src dst --model resnet50``) reads the
source (formats: :mod:`conformance.convert.formats`), turns it into canonical weights strictly (another model's
weights, missing, unexpected or mis-shaped entries, a truncated file: a clear error), writes the target to a
temporary file next to ``dst``, reads that file back, runs the model in both frameworks in eval mode on a fixed
seeded input (:mod:`conformance.convert.verify`) and only when the weights read back are the source's bit for bit
and the logits agree within float32's tolerance on the logits' scale (``rtol * max |logit|``, the rule of the
suite's model rows: :func:`conformance.tolerances.on_scale`) renames it to ``dst``. On any error nothing is
written; an existing ``dst`` is refused unless ``overwrite``, a ``dst`` that is a directory always. The canonical
file names no framework: its side of the comparison runs in ``verify_with`` (torch by default).

A ``.onnx`` destination is an export, not a checkpoint: the model is built in the source's framework (the
canonical file's: ``verify_with``), exported by its ONNX exporter (:mod:`conformance.exporters`: torch.onnx,
paddle2onnx, jax2onnx) with a dynamic batch, and run in onnxruntime on the seeded input against that framework's
eval logits; it is renamed to ``dst`` only when they agree. An exporter that is not installed is a ConvertError
naming what to install.

A source holding NaN or inf weights (a diverged run) is refused with a NonFiniteError naming the tensors, unless
``allow_nonfinite``; such a checkpoint then converts to an exact copy, and its logits verify when both frameworks
give NaN and inf in the same places and the finite logits agree.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attn_core import AttentionConfig, WeightLoadError
from attn_core.checkpoint import CheckpointError, check_checkpoint, checkpoint_metadata, config_from_metadata, readable
from attn_core.models import MODEL_CONFIGS, create_model_config
from attn_core.native_state import canonical_from_native

from ..runners import get_runner
from . import formats, verify
from .formats import FORMATS, Contents, ConvertError

__all__ = ["convert", "ConvertResult", "ConvertError", "NonFiniteError", "VerificationError", "CheckpointError",
           "WeightLoadError", "FORMATS"]

#: how many tensors a NonFiniteError names
_NAMED = 5


@dataclass(frozen=True)
class ConvertResult:
    """What :func:`convert` did; ``difference`` is None when not verified."""

    src: str
    dst: str
    model: str
    model_kwargs: Mapping[str, Any]
    src_format: str
    dst_format: str
    src_framework: str
    dst_framework: str
    input_shape: tuple[int, ...] | None
    difference: verify.Difference | None

    def summary(self) -> str:
        kw = "".join(f" {k}={json.dumps(v)}" for k, v in self.model_kwargs.items())
        return f"converted {self.model}{kw}: {self.src} ({self.src_format}) -> {self.dst} ({self.dst_format})"

    def verification(self) -> str:
        """The printed verification line."""
        d = self.difference
        if d is None or self.input_shape is None:
            return "verify: skipped (--no-verify)"
        shape = "x".join(map(str, self.input_shape))
        changed = f"{len(d.changed)} DIFFER ({', '.join(d.changed[:5])})" if d.changed else "identical"
        if self.dst_format == "onnx":  # an exporter may fold weights (BatchNorm into a convolution): none to read
            changed = "not read back (ONNX holds the exported graph's constants)"
        nonfinite = f", {d.nonfinite} non-finite logits compared by place" if d.nonfinite else ""
        return (f"verify: {self.src_framework} vs {self.dst_framework} logits on a seeded {shape} input, eval mode: "
                f"max abs diff {d.max_abs:.3g}, max rel diff {d.max_rel:.3g}, max |logit| {d.max_logit:.3g} "
                f"(float32 tolerance on the logits' scale: {d.atol:.3g} + {d.rtol:g} * |ref|{nonfinite}): "
                f"{'ok' if d.logits_ok else 'FAILED'}; weights read back: {changed}")


class NonFiniteError(ConvertError):
    """The source holds NaN or inf weights and ``allow_nonfinite`` was not given; nothing was written."""


class VerificationError(ValueError):
    """The converted checkpoint computes other logits than the source; nothing was written."""

    def __init__(self, result: ConvertResult):
        self.result = result
        super().__init__(f"{result.dst}: the converted {result.model} does not hold the source's weights or "
                         f"compute its logits; nothing was written\n{result.verification()}")


def _config(contents: Contents, src: Path, model: str | None, model_kwargs: Mapping[str, Any] | None
            ) -> tuple[str, dict[str, Any], AttentionConfig]:
    if model is not None:
        if model not in MODEL_CONFIGS:
            raise ConvertError(f"unknown model {model!r}; known: {', '.join(MODEL_CONFIGS)}")
        kwargs = dict(model_kwargs or {})
        settings = [f.name for f in dataclasses.fields(MODEL_CONFIGS[model]()) if f.init]
        unknown = [k for k in kwargs if k not in settings]
        if unknown:
            raise ConvertError(f"model_kwargs: {model} has no setting {', '.join(map(repr, unknown))}; its settings: "
                               f"{', '.join(settings)}")
        return model, kwargs, create_model_config(model, **kwargs)
    held = config_from_metadata(contents.metadata, str(src))
    if held is None:
        raise ConvertError(f"{src}: the file does not name its model (only the canonical checkpoint does); give "
                           f"--model, one of: {', '.join(MODEL_CONFIGS)}")
    if model_kwargs:
        raise ConvertError(f"{src} names its model ({held[0]} {held[1]}); --model-kwargs go with --model")
    return held


def _canonical(contents: Contents, config: AttentionConfig, path: Path, model: str) -> dict[str, np.ndarray]:
    if contents.framework is None:
        check_checkpoint(config, contents.state, contents.metadata, str(path))
        return dict(contents.state)
    return canonical_from_native(contents.framework, config, contents.state, str(path), model)


def _check_finite(weights: Mapping[str, np.ndarray], src: Path) -> None:
    """A NonFiniteError naming the tensors (the first few) that hold NaN or inf, and how many values do."""
    bad = {}
    for k, v in weights.items():
        v = np.asarray(v)
        if v.dtype.kind == "f" and not np.all(np.isfinite(v)):
            bad[k] = (int(np.isnan(v).sum()), int(np.isinf(v).sum()))
    if not bad:
        return
    total = sum(n + i for n, i in bad.values())
    named = ", ".join(f"{k} ({', '.join(t for t in (f'{n} NaN' if n else '', f'{i} inf' if i else '') if t)})"
                      for k, (n, i) in list(bad.items())[:_NAMED])
    more = f" and {len(bad) - _NAMED} more" if len(bad) > _NAMED else ""
    raise NonFiniteError(f"{src}: {total} non-finite weight value(s) (NaN or inf) in {len(bad)} tensor(s): {named}"
                         f"{more}; a diverged run? Nothing was written (--allow-nonfinite / allow_nonfinite=True "
                         "converts it anyway)")


def convert(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, src_format: str | None = None,
            dst_format: str | None = None, model: str | None = None, model_kwargs: Mapping[str, Any] | None = None,
            verify_outputs: bool = True, verify_with: str = "torch", input_size: int | None = None,
            overwrite: bool = False, allow_nonfinite: bool = False) -> ConvertResult:
    """Convert the checkpoint ``src`` to ``dst`` (formats from the extensions unless given) and verify it.

    ``model`` / ``model_kwargs`` name the model (``create_model(model, **model_kwargs)``); required unless ``src``
    is a canonical checkpoint, which names its own; ``allow_nonfinite`` converts weights holding NaN or inf
    (module docstring). Raises ConvertError (NonFiniteError among them), CheckpointError, WeightLoadError or
    VerificationError; in every case ``dst`` is left as it was.
    """
    src, dst = Path(src), Path(dst)
    if verify_with not in verify.BACKENDS:
        raise ConvertError(f"verify_with must be one of {', '.join(verify.BACKENDS)}, got {verify_with!r}")
    sfmt, dfmt = formats.format_of(src, src_format), formats.format_of(dst, dst_format)
    if dst.is_dir():
        raise ConvertError(f"{dst} is a directory; give the file to write")
    if dst.exists() and not overwrite:
        raise ConvertError(f"{dst} exists; refusing to overwrite it (--force to replace it)")
    if not dst.parent.is_dir():
        raise ConvertError(f"{dst}: the folder {dst.parent} does not exist")
    if not os.access(dst.parent, os.W_OK | os.X_OK):
        raise ConvertError(f"{dst}: the folder {dst.parent} cannot be written")
    contents = formats.read(src, sfmt)
    name, kwargs, config = _config(contents, src, model, model_kwargs)
    weights = _canonical(contents, config, src, name)
    if not allow_nonfinite:
        _check_finite(weights, src)
    src_fw = contents.framework or verify_with
    if dfmt == "onnx":
        return _to_onnx(dst, ConvertResult(str(src), str(dst), name, kwargs, sfmt, dfmt, src_fw, "onnxruntime",
                                           None, None), config, weights, verify_outputs, input_size)
    dst_fw = dfmt if dfmt in verify.BACKENDS else verify_with
    metadata = checkpoint_metadata(config, contents.metadata.get("framework", src_fw), name)
    module, variables = verify.build(dst_fw, config, weights) if dfmt != "safetensors" else (None, None)
    try:
        fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=dst.suffix)
    except OSError as err:
        raise ConvertError(f"{dst}: cannot write in the folder {dst.parent}: {err.strerror or err}") from None
    os.close(fd)
    try:
        try:
            formats.write(tmp, dfmt, module, variables, weights, metadata)
        except OSError as err:
            raise ConvertError(f"{dst}: writing failed: {err.strerror or err}") from None
        difference, shape = None, None
        if verify_outputs:
            back = _canonical(formats.read(tmp, dfmt), config, dst, name)
            x = verify.input_for(config, input_size)
            ref = verify.logits(src_fw, *verify.build(src_fw, config, weights), x)
            got = verify.logits(dst_fw, *verify.build(dst_fw, config, back), x)
            difference, shape = verify.compare(got, ref, back, weights), x.shape
        result = ConvertResult(str(src), str(dst), name, kwargs, sfmt, dfmt, src_fw, dst_fw, shape, difference)
        if difference is not None and not difference.ok:
            raise VerificationError(result)
        try:
            readable(tmp)
            os.replace(tmp, dst)
        except OSError as err:
            raise ConvertError(f"{dst}: cannot be replaced: {err.strerror or err}") from None
        return result
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _to_onnx(dst: Path, result: ConvertResult, config: AttentionConfig, weights: Mapping[str, np.ndarray],
             verify_outputs: bool, input_size: int | None) -> ConvertResult:
    """Export the model in ``result.src_framework`` through its ONNX exporter with a dynamic batch (traced at
    batch 3, verified at 2), verify it in onnxruntime against the framework's eval logits on the seeded input, and
    only then rename it to ``dst``; the export folder next to ``dst`` is removed in every case."""
    from ..exporters import ExportError, exporters

    fw = result.src_framework
    exporter = next(e for e in exporters(fw) if e.onnx)
    why = exporter.unavailable()
    if why is not None:
        raise ConvertError(f"{dst}: {fw} -> ONNX ({exporter.name}): {why}")
    x = verify.input_for(config, input_size)
    example = np.random.default_rng(1).standard_normal((3, *x.shape[1:])).astype(np.float32)
    runner = get_runner(fw)
    module, variables = verify.build(fw, config, weights)
    exporter.eval(module)  # a freshly built module: eval is the mode a deployed model runs in
    try:
        folder = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}."))
    except OSError as err:
        raise ConvertError(f"{dst}: cannot write in the folder {dst.parent}: {err.strerror or err}") from None
    try:
        try:
            artifact = exporter.export(module, variables, runner.nchw_to_native(example), folder)
        except ExportError as err:
            raise ConvertError(f"{dst}: {err}") from None
        except OSError as err:
            raise ConvertError(f"{dst}: writing failed: {err.strerror or err}") from None
        if verify_outputs:
            ref = verify.logits(fw, module, variables, x)
            got = np.asarray(exporter.run(artifact, runner.nchw_to_native(x)), np.float64)
            result = dataclasses.replace(result, input_shape=x.shape,
                                         difference=verify.compare(got, ref, {}, {}))
            if result.difference is not None and not result.difference.ok:
                raise VerificationError(result)
        try:
            os.replace(artifact.path, dst)
        except OSError as err:
            raise ConvertError(f"{dst}: cannot be replaced: {err.strerror or err}") from None
        return result
    finally:
        shutil.rmtree(folder, ignore_errors=True)
