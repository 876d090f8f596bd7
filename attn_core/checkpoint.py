"""The canonical checkpoint: a safetensors file of canonical names, torch layout, plus the model's name and config.

Written and read here with NumPy alone (the format is a little-endian u64 header length, a JSON header of
``{name: {dtype, shape, data_offsets}}`` with an optional ``__metadata__`` of strings, then the raw bytes), so the
specification layer stays framework-free; files interoperate with the ``safetensors`` package. Writes go to a
temporary file that replaces the target only once complete: a failed write leaves nothing behind.

The metadata of a model checkpoint (:func:`checkpoint_metadata`) names the registered model and the config
overrides that rebuild it (``attn_core.models.create_model_config(model, **model_kwargs)``), the framework that
wrote it and the format version; :func:`check_checkpoint` refuses weights of another model before any is loaded.
Every backend's ``save_checkpoint`` / ``load_checkpoint`` is these functions around its weight interchange.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from .spec import AttentionConfig, ConfigError, WeightLoadError

__all__ = ["CheckpointError", "save_canonical", "load_canonical", "readable", "FORMAT", "FORMAT_VERSION",
           "describe_model", "checkpoint_metadata", "config_from_metadata", "check_checkpoint", "models_with_names"]

FORMAT = "attn-modules/canonical"
FORMAT_VERSION = "1"

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
           "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
_NAMES = {np.dtype(v).str.lstrip("<|="): k for k, v in _DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit what it claims to hold."""


def save_canonical(path: str | os.PathLike, weights: Mapping[str, np.ndarray],
                   metadata: Mapping[str, str] | None = None) -> None:
    """Write ``weights`` (canonical name -> array) as a safetensors file, atomically."""
    header: dict[str, object] = {}
    if metadata:
        bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise CheckpointError(f"checkpoint metadata must map strings to strings; not so for {bad}")
        header["__metadata__"] = dict(metadata)
    blobs = []
    offset = 0
    for name in sorted(weights):
        a = np.require(np.asarray(weights[name]), requirements="C")  # ascontiguousarray would make 0-d 1-d
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        key = _NAMES.get(a.dtype.str.lstrip("<|="))
        if key is None:
            raise CheckpointError(f"{name}: dtype {a.dtype} cannot be stored in a safetensors file")
        data = a.tobytes()
        header[name] = {"dtype": key, "shape": list(a.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)   # the format aligns the data to 8 bytes
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(raw)))
            f.write(raw)
            for blob in blobs:
                f.write(blob)
        readable(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def readable(path: str | os.PathLike) -> None:
    """Give a temporary file (``mkstemp`` makes it 0600) the permissions a plain ``open`` would: 0666 less umask."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def load_canonical(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a safetensors file: (name -> array, metadata). A truncated or malformed file is a CheckpointError."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 8:
        raise CheckpointError(f"{path}: not a safetensors file ({len(data)} bytes, no header)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > _MAX_HEADER or 8 + n > len(data):
        raise CheckpointError(f"{path}: truncated or not a safetensors file (header of {n} bytes, file of "
                              f"{len(data)})")
    try:
        header = json.loads(data[8:8 + n])
    except ValueError as err:
        raise CheckpointError(f"{path}: unreadable safetensors header: {err}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    body = memoryview(data)[8 + n:]
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        try:
            dtype = np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<")
            start, end = (int(v) for v in info["data_offsets"])
            shape = tuple(int(s) for s in info["shape"])
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{path}: entry {name!r} is malformed ({err!r})") from None
        count = int(np.prod(shape, dtype=np.int64))
        if not (0 <= start <= end <= len(body)) or end - start != count * dtype.itemsize:
            raise CheckpointError(f"{path}: entry {name!r} is truncated or inconsistent (bytes {start}..{end} of "
                                  f"{len(body)}, shape {shape}, {info['dtype']})")
        out[name] = np.frombuffer(body[start:end], dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
    return out, {str(k): str(v) for k, v in metadata.items()}


# ------------------------------------------------------------------------------------ model checkpoints
def _plain(value: Any) -> Any:
    """JSON's view of a config value: tuples become lists (and :func:`_frozen` turns them back)."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _frozen(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return {k: _frozen(v) for k, v in value.items()}
    return value


def describe_model(config: AttentionConfig, model: str | None = None) -> tuple[str, dict[str, Any]]:
    """``(registered name, JSON-ready overrides)`` such that ``create_model_config(name, **overrides) == config``.

    Without ``model`` the registered name needing the fewest overrides is chosen. A ConfigError when no
    registered model of that name (or none at all) rebuilds ``config``.
    """
    from .models import MODEL_CONFIGS, create_model_config

    names = [model] if model is not None else list(MODEL_CONFIGS)
    if model is not None and model not in MODEL_CONFIGS:
        raise ConfigError(f"checkpoint: unknown model {model!r}; known: {', '.join(MODEL_CONFIGS)}")
    found: list[tuple[int, str, dict[str, Any]]] = []
    for name in names:
        default = MODEL_CONFIGS[name]()
        if type(default) is not type(config):
            continue
        kwargs = {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config)
                  if f.init and getattr(config, f.name) != getattr(default, f.name)}
        try:
            rebuilt = create_model_config(name, **{k: _frozen(v) for k, v in kwargs.items()})
        except (TypeError, ValueError):
            continue
        if rebuilt == config:
            found.append((len(kwargs), name, kwargs))
    if not found:
        raise ConfigError(f"checkpoint: no registered model{' ' + repr(model) if model else ''} with JSON "
                          f"overrides rebuilds this {config.module_name} config ({config!r})")
    _, name, kwargs = min(found, key=lambda t: t[0])
    return name, kwargs


def checkpoint_metadata(config: AttentionConfig, framework: str, model: str | None = None) -> dict[str, str]:
    """The metadata of a model checkpoint: format, version, model, model_kwargs (JSON), framework."""
    name, kwargs = describe_model(config, model)
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "model": name,
            "model_kwargs": json.dumps(kwargs, sort_keys=True), "framework": framework}


def config_from_metadata(metadata: Mapping[str, str], source: str = "checkpoint"
                         ) -> tuple[str, dict[str, Any], AttentionConfig] | None:
    """``(model, model_kwargs, config)`` a checkpoint's metadata names, or None when it names no model."""
    from .models import create_model_config

    if "model" not in metadata:
        return None
    version = metadata.get("format_version", FORMAT_VERSION)
    if metadata.get("format", FORMAT) != FORMAT or version != FORMAT_VERSION:
        raise CheckpointError(f"{source}: format {metadata.get('format')!r} version {version!r}; this version "
                              f"reads {FORMAT!r} version {FORMAT_VERSION!r}")
    try:
        kwargs = json.loads(metadata.get("model_kwargs", "{}"))
    except ValueError as err:
        raise CheckpointError(f"{source}: model_kwargs is not JSON ({err})") from None
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"{source}: model_kwargs must be a JSON object, got {metadata['model_kwargs']!r}")
    try:
        config = create_model_config(metadata["model"], **{k: _frozen(v) for k, v in kwargs.items()})
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: its metadata names a model that cannot be built: {err}") from None
    return metadata["model"], kwargs, config


# config fields that choose how a model computes, not what: a checkpoint fits either setting
_EXECUTION_ONLY = ("efficient",)


def _same_model(a: AttentionConfig, b: AttentionConfig) -> bool:
    if type(a) is not type(b):
        return False
    return all(getattr(a, f.name) == getattr(b, f.name) for f in dataclasses.fields(a)
               if f.init and f.name not in _EXECUTION_ONLY)


def _model_text(name: str, kwargs: Mapping[str, Any]) -> str:
    return name + (f" {json.dumps(dict(kwargs), sort_keys=True)}" if kwargs else "")


def models_with_names(names: Iterable[str]) -> list[str]:
    """Registered models (default configs) whose canonical parameter names are exactly ``names``."""
    from .models import MODEL_CONFIGS

    wanted = set(names)
    return [m for m in MODEL_CONFIGS if {p.name for p in MODEL_CONFIGS[m]().param_table()} == wanted]


def check_checkpoint(config: AttentionConfig, weights: Mapping[str, Any], metadata: Mapping[str, str],
                     source: str = "checkpoint") -> None:
    """Refuse a checkpoint that does not hold ``config``'s model, before anything is loaded.

    A checkpoint naming another model (or the same with other overrides) is a CheckpointError naming both; weights
    that do not fit are a WeightLoadError listing every missing, unexpected and mis-shaped entry, or a
    CheckpointError naming the registered models whose parameters they are.
    """
    held = config_from_metadata(metadata, source)
    if held is not None and not _same_model(held[2], config):
        name, kwargs = held[0], held[1]
        try:
            want = _model_text(*describe_model(config))
        except ConfigError:
            want = repr(config)
        raise CheckpointError(f"{source} holds a {_model_text(name, kwargs)}, not the {want} it is loaded into; "
                              "nothing was loaded")
    try:
        config.check_weights(weights)
    except WeightLoadError as err:
        others = models_with_names(weights) if err.missing or err.unexpected else []
        if others:
            raise CheckpointError(f"{source} holds the parameters of {' / '.join(others)}, not of this "
                                  f"{config.module_name}; nothing was loaded\n{err}") from None
        raise
