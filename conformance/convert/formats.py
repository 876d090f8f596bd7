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

Every reader turns an unreadable or truncated file into a CheckpointError naming the file and the format.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

import numpy as np

from attn_core.checkpoint import CheckpointError, load_canonical, save_canonical
from attn_core.native_state import flatten_variables

__all__ = ["FORMATS", "EXTENSIONS", "Contents", "format_of", "read", "write"]

FORMATS: tuple[str, ...] = ("torch", "paddle", "flax", "safetensors")
EXTENSIONS: Mapping[str, str] = MappingProxyType({".pt": "torch", ".pth": "torch", ".pdparams": "paddle",
                                                  ".msgpack": "flax", ".safetensors": "safetensors"})
_WRAPPERS = ("state_dict", "model")
_FLAX_COLLECTIONS = ("params", "batch_stats")


class ConvertError(ValueError):
    """A conversion that cannot be done as asked (format, paths, options); nothing was written."""


@dataclass
class Contents:
    """What a file holds: ``framework`` None for canonical weights (``state`` then holds canonical names)."""

    framework: str | None
    state: dict[str, np.ndarray]
    metadata: dict[str, str] = field(default_factory=dict)


def format_of(path: str | os.PathLike, given: str | None = None) -> str:
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


def _unwrap(obj: Any, path: Path, fmt: str) -> dict[str, Any]:
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


def _read_torch(path: Path) -> Contents:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, AttributeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: not a readable torch checkpoint (truncated, corrupt, or not saved with "
                              f"torch.save of tensors): {first}") from None
    state = _unwrap(obj, path, "torch")
    out = {}
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor")
        out[str(k)] = (v.float() if v.dtype == torch.bfloat16 else v).detach().cpu().numpy()
    return Contents("torch", out)


def _read_paddle(path: Path) -> Contents:
    import paddle

    try:
        obj = paddle.load(str(path), return_numpy=True)
    except (ValueError, pickle.UnpicklingError, EOFError, RuntimeError, AttributeError) as err:
        raise CheckpointError(f"{path}: not a readable Paddle checkpoint (truncated, corrupt, or not saved with "
                              f"paddle.save): {err}") from None
    state = _unwrap(obj, path, "paddle")
    out = {}
    for k, v in state.items():
        if not isinstance(v, np.ndarray):
            raise CheckpointError(f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor")
        out[str(k)] = v
    return Contents("paddle", out)


def _read_flax(path: Path) -> Contents:
    from flax import serialization

    try:
        tree = serialization.msgpack_restore(path.read_bytes())
    except (ValueError, TypeError, EOFError) as err:
        raise CheckpointError(f"{path}: not readable Flax variables (msgpack; truncated or corrupt): "
                              f"{err}") from None
    if not isinstance(tree, Mapping) or "params" not in tree:
        raise CheckpointError(f"{path}: expected Flax variables {{'params': ..., 'batch_stats': ...}}, got "
                              f"{type(tree).__name__}" + (f" with keys {', '.join(map(str, tree))}"
                                                          if isinstance(tree, Mapping) else ""))
    return Contents("flax", {k: np.array(v) for k, v in flatten_variables(tree).items()})


def _read_safetensors(path: Path) -> Contents:
    weights, metadata = load_canonical(path)
    if weights and all(k.split(".")[0].split("/")[0] in _FLAX_COLLECTIONS for k in weights):
        return Contents("flax", {k.replace(".", "/"): v for k, v in weights.items()}, metadata)
    return Contents(None, weights, metadata)


_READERS: Mapping[str, Callable[[Path], Contents]] = MappingProxyType({
    "torch": _read_torch, "paddle": _read_paddle, "flax": _read_flax, "safetensors": _read_safetensors})


def read(path: str | os.PathLike, fmt: str) -> Contents:
    """The contents of a checkpoint file of format ``fmt``."""
    path = Path(path)
    if path.is_dir():
        raise ConvertError(f"{path}: is a directory; give the checkpoint file to convert")
    if not path.is_file():
        raise ConvertError(f"{path}: no such file")
    return _READERS[fmt](path)


def write(path: str | os.PathLike, fmt: str, module: Any, variables: Any, weights: Mapping[str, np.ndarray],
          metadata: Mapping[str, str]) -> None:
    """Write a checkpoint of format ``fmt`` at ``path`` (the caller's temporary file): the target module's own
    state for torch / Paddle / Flax, the canonical ``weights`` with ``metadata`` for safetensors."""
    if fmt == "torch":
        import torch
        torch.save(module.state_dict(), path)
    elif fmt == "paddle":
        import paddle
        paddle.save(module.state_dict(), str(path))
    elif fmt == "flax":
        from flax import serialization
        Path(path).write_bytes(serialization.to_bytes(variables))
    else:
        save_canonical(path, weights, metadata)
