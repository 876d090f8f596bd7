"""Checkpoint file formats: which one a path is, how to read it into a flat ``{key: array}``, how to write one.

* ``torch``: a ``state_dict`` saved with ``torch.save`` (``.pt``, ``.pth``), read with ``weights_only=True``;
  ``{'state_dict': ...}`` and ``{'model': ...}`` wrappers are unwrapped, and a ``module.`` prefix (DataParallel)
  is stripped when every key has it.
* ``paddle``: a ``state_dict`` saved with ``paddle.save`` (``.pdparams``). Paddle reads it with pickle: open
  only files you trust.
* ``flax``: variables ``{'params': ..., 'batch_stats': ...}`` as ``flax.serialization.to_bytes`` writes them
  (``.msgpack``).
* ``safetensors``: the canonical checkpoint (``.safetensors``, :mod:`attn_core.checkpoint`). A safetensors file
  whose keys are flattened Flax variables (``params.conv1.kernel`` or ``params/conv1/kernel``) reads as ``flax``.
* ``onnx``: a target only (``.onnx``), written by :func:`conformance.convert.convert` through the source
  framework's ONNX exporter.

Every reader turns an unreadable or truncated file into a CheckpointError naming the file and the format.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from attn_core.checkpoint import load_canonical, save_canonical
from attn_core.frameworks import FRAMEWORK_INFO, FRAMEWORKS

from ..runners import get_runner

__all__ = ["FORMATS", "EXTENSIONS", "Contents", "format_of", "read", "write"]

#: a framework's own checkpoint (read and written by its runner), the canonical safetensors file, or ONNX (a
#: deployment target only, written by the source framework's exporter: :mod:`conformance.exporters`)
FORMATS: tuple[str, ...] = (*FRAMEWORKS, "safetensors", "onnx")
EXTENSIONS: Mapping[str, str] = MappingProxyType({**{ext: fw for fw in FRAMEWORKS
                                                     for ext in FRAMEWORK_INFO[fw].checkpoint_extensions},
                                                  ".safetensors": "safetensors", ".onnx": "onnx"})
_FLAX_COLLECTIONS = ("params", "batch_stats")


class ConvertError(ValueError):
    """A conversion that cannot be done as asked (format, paths, options); nothing was written."""


@dataclass
class Contents:
    """What a file holds: ``framework`` None for canonical weights (``state`` then holds canonical names)."""

    framework: str | None
    state: dict[str, np.ndarray]
    metadata: dict[str, str] = field(default_factory=dict)


def format_of(path: str | os.PathLike[str], given: str | None = None) -> str:
    """``given`` if set, else the format of the path's extension; a ConvertError for an unknown one."""
    if given is not None:
        if given not in FORMATS:
            raise ConvertError(f"unknown format {given!r}; expected one of {', '.join(FORMATS)}")
        return given
    suffix = Path(path).suffix.lower()
    if suffix not in EXTENSIONS:
        known = ", ".join(f"{k} ({v})" for k, v in EXTENSIONS.items())
        raise ConvertError(f"{path}: cannot tell the format from the extension {suffix or '(none)'!r}; known: "
                           f"{known}; or name it with --from / --to")
    return EXTENSIONS[suffix]


def _read_safetensors(path: Path) -> Contents:
    weights, metadata = load_canonical(path)
    if weights and all(k.split(".")[0].split("/")[0] in _FLAX_COLLECTIONS for k in weights):
        return Contents("flax", {k.replace(".", "/"): v for k, v in weights.items()}, metadata)
    return Contents(None, weights, metadata)


def read(path: str | os.PathLike[str], fmt: str) -> Contents:
    """The contents of a checkpoint file of format ``fmt``."""
    path = Path(path)
    if path.is_dir():
        raise ConvertError(f"{path}: is a directory; give the checkpoint file to convert")
    if not path.is_file():
        raise ConvertError(f"{path}: no such file")
    if fmt == "safetensors":
        return _read_safetensors(path)
    if fmt == "onnx":
        raise ConvertError(f"{path}: ONNX is a deployment target, not a checkpoint to convert from; give the "
                           f"model's checkpoint ({', '.join(k for k, v in EXTENSIONS.items() if v != 'onnx')})")
    return Contents(fmt, get_runner(fmt).read_checkpoint(path))


def write(path: str | os.PathLike[str], fmt: str, module: Any, variables: Any, weights: Mapping[str, np.ndarray],
          metadata: Mapping[str, str]) -> None:
    """Write a checkpoint of format ``fmt`` at ``path`` (the caller's temporary file): the target module's own
    state for torch / Paddle / Flax, the canonical ``weights`` with ``metadata`` for safetensors."""
    if fmt == "safetensors":
        save_canonical(path, weights, metadata)
    else:
        get_runner(fmt).write_checkpoint(path, module, variables)
