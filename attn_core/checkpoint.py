"""The canonical checkpoint: a safetensors file of canonical names, torch layout, plus the model's name and config.

The format is a little-endian u64 header length, a JSON header of ``{name: {dtype, shape, data_offsets}}`` with an
optional ``__metadata__`` of strings, then the raw bytes. The ``safetensors`` package's NumPy API (which imports
NumPy alone, so the specification layer stays framework-free) writes and parses it; :func:`load_canonical` first
checks the header itself (bounded length, every field's type, offsets that tile the data exactly) so that every
malformed file is a :class:`CheckpointError` saying what is wrong, whatever the package would have raised.

:func:`save_canonical` records each tensor's SHA-256 in the metadata (``"sha256:<name>"`` -> ``"<hex> <dtype>
<shape>"``) and :func:`load_canonical` verifies it when present, so a flipped byte is an error naming the tensor;
files written by others, without digests, still load. The digests are stripped from the metadata it returns.
BF16 and 8-bit float tensors load as float32, exactly (every one of their values is a float32; NumPy has no
such types and the backends take float32); 8-bit floats need ``ml_dtypes``. Writes go to a temporary file that
replaces the target only once complete: a failed write leaves nothing behind.

The metadata of a model checkpoint (:func:`checkpoint_metadata`) names the registered model and the config
overrides that rebuild it (``attn_core.models.create_model_config(model, **model_kwargs)``), the framework that
wrote it and the format version; :func:`check_checkpoint` refuses weights of another model before any is loaded.
Every backend's ``save_checkpoint`` / ``load_checkpoint`` is these functions around its weight interchange.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import struct
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .spec import AttentionConfig, ConfigError, WeightLoadError

__all__ = ["CheckpointError", "save_canonical", "load_canonical", "readable", "FORMAT", "FORMAT_VERSION",
           "DIGEST_PREFIX", "describe_model", "checkpoint_metadata", "config_from_metadata", "check_checkpoint",
           "models_with_names"]

FORMAT = "attn-modules/canonical"
FORMAT_VERSION = "1"
DIGEST_PREFIX = "sha256:"

# every dtype code of the safetensors format -> bits per element
_BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8,
         "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "C64": 64,
         "F64": 64, "I64": 64, "U64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}
_NUMPY = {"BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "I16": np.int16, "U16": np.uint16, "F16": np.float16,
          "I32": np.int32, "U32": np.uint32, "F32": np.float32, "C64": np.complex64, "F64": np.float64,
          "I64": np.int64, "U64": np.uint64}
_ML_DTYPES = {"F8_E5M2": "float8_e5m2", "F8_E4M3": "float8_e4m3fn", "F8_E8M0": "float8_e8m0fnu",
              "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz"}
# NumPy dtype name -> the code the package writes for it (ml_dtypes supplies the last six)
_CODES = {"bool": "BOOL", "int8": "I8", "uint8": "U8", "int16": "I16", "uint16": "U16", "int32": "I32",
          "uint32": "U32", "int64": "I64", "uint64": "U64", "float16": "F16", "float32": "F32", "float64": "F64",
          "complex64": "C64", "bfloat16": "BF16", "float8_e4m3fn": "F8_E4M3", "float8_e4m3fnuz": "F8_E4M3FNUZ",
          "float8_e5m2": "F8_E5M2", "float8_e5m2fnuz": "F8_E5M2FNUZ", "float8_e8m0fnu": "F8_E8M0"}
_MAX_HEADER = 100_000_000  # the safetensors package's own limit
_HEX = re.compile(r"[0-9a-f]{64}")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit what it claims to hold."""


def _digest(dtype: str, shape: Iterable[int], data: Any) -> str:
    """The metadata value recording a tensor: SHA-256 of its bytes, then the dtype and shape they were written as."""
    return f"{hashlib.sha256(data).hexdigest()} {dtype} {json.dumps(list(shape), separators=(',', ':'))}"


def save_canonical(path: str | os.PathLike[str], weights: Mapping[str, np.ndarray],
                   metadata: Mapping[str, str] | None = None) -> None:
    """Write ``weights`` (canonical name -> array) as a safetensors file with each tensor's SHA-256, atomically."""
    from safetensors.numpy import save_file

    header: dict[str, str] = {}
    for k, v in (metadata or {}).items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise CheckpointError(f"checkpoint metadata must map strings to strings; got {k!r}: {type(v).__name__}")
        if k.startswith(DIGEST_PREFIX):
            raise CheckpointError(f"checkpoint metadata key {k!r}: keys starting {DIGEST_PREFIX!r} are the tensor "
                                  "digests save_canonical writes itself")
        header[k] = v
    arrays: dict[str, np.ndarray] = {}
    for name, value in weights.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise CheckpointError(f"checkpoint tensor names must be strings other than '__metadata__'; got {name!r}")
        a = np.asarray(value)
        code = _CODES.get(a.dtype.name)
        if code is None:
            raise CheckpointError(f"{name}: dtype {a.dtype} cannot be stored in a safetensors file")
        # the package writes a C-ordered little-endian array's own bytes: those are the bytes digested here
        a = np.require(a.astype(a.dtype.newbyteorder("<"), copy=False), requirements="C")
        arrays[name] = a
        header[DIGEST_PREFIX + name] = _digest(code, a.shape, a.reshape(-1).view(np.uint8))
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.")
    os.close(fd)
    try:
        save_file(arrays, tmp, metadata=header or None)
        readable(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def readable(path: str | os.PathLike[str]) -> None:
    """Give a temporary file (``mkstemp`` makes it 0600) the permissions a plain ``open`` would: 0666 less umask."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for k, v in pairs:
        if k in seen:
            raise ValueError(f"the key {k!r} appears twice")
        seen[k] = v
    return seen


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _is_count(v: Any) -> bool:
    return type(v) is int and v >= 0  # bool is an int subclass but no count


def _parse_header(raw: bytes, path: Path) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The header's entries and metadata, every field checked for type and self-consistency."""
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, RecursionError) as err:
        raise CheckpointError(f"{path}: unreadable safetensors header: {err}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the safetensors header is a JSON {type(header).__name__}, not an object")
    metadata = header.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path}: the header's __metadata__ is a JSON {type(metadata).__name__}, not an object "
                              "of strings")
    bad = [k for k, v in metadata.items() if not isinstance(v, str)]
    if bad:
        raise CheckpointError(f"{path}: the header's __metadata__ must map strings to strings; "
                              f"{', '.join(f'{k!r} holds a {type(metadata[k]).__name__}' for k in bad[:5])}")
    for name, info in header.items():
        where = f"{path}: entry {name!r}"
        if not isinstance(info, dict):
            raise CheckpointError(f"{where} is a JSON {type(info).__name__}, not an object of dtype, shape and "
                                  "data_offsets")
        lacking = [k for k in ("dtype", "shape", "data_offsets") if k not in info]
        if lacking:
            raise CheckpointError(f"{where} lacks {', '.join(lacking)}")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(dtype, str) or dtype not in _BITS:
            raise CheckpointError(f"{where}: unknown dtype {dtype!r}; the format's are {', '.join(_BITS)}")
        if not isinstance(shape, list) or not all(_is_count(v) for v in shape):
            raise CheckpointError(f"{where}: shape {shape!r} is not a list of non-negative integers")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(v) for v in offsets)
                and offsets[0] <= offsets[1]):
            raise CheckpointError(f"{where}: data_offsets {offsets!r} is not [start, end] with 0 <= start <= end")
        bits = _BITS[dtype] * int(np.prod(shape, dtype=object))
        if bits % 8 or offsets[1] - offsets[0] != bits // 8:
            raise CheckpointError(f"{where}: a {dtype} tensor of shape {shape} is {bits / 8:g} bytes, but its "
                                  f"data_offsets {offsets} hold {offsets[1] - offsets[0]}")
    return header, metadata


def _check_layout(entries: Mapping[str, Mapping[str, Any]], size: int, path: Path) -> None:
    """The format's rule: the tensors' bytes tile the data after the header exactly, without gaps or overlaps."""
    end, last = 0, None
    for name, info in sorted(entries.items(), key=lambda kv: tuple(kv[1]["data_offsets"])):
        start, stop = info["data_offsets"]
        if start < end:
            raise CheckpointError(f"{path}: the data of entries {last!r} and {name!r} overlap (bytes {start}.."
                                  f"{stop} start before {end})")
        if start > end:
            raise CheckpointError(f"{path}: {start - end} bytes before entry {name!r} belong to no tensor")
        end, last = stop, name
    if end > size:
        raise CheckpointError(f"{path}: truncated or inconsistent: the tensors' data ends at byte {end} but the "
                              f"file holds {size} bytes after the header")
    if end < size:
        raise CheckpointError(f"{path}: {size - end} bytes after the last tensor's data belong to no tensor")


def _verify_digests(tensors: Mapping[str, tuple[str, list[int], bytes | bytearray]], metadata: Mapping[str, str],
                    path: Path) -> None:
    """Compare each tensor with the digest save_canonical recorded; a file recording none is taken as it is."""
    digests = {k[len(DIGEST_PREFIX):]: v for k, v in metadata.items() if k.startswith(DIGEST_PREFIX)}
    if not digests:
        return
    strays = sorted(set(digests) - set(tensors))
    if strays:
        raise CheckpointError(f"{path}: corrupt: it records digests of tensors it does not hold: {', '.join(strays)}")
    missing = sorted(set(tensors) - set(digests))
    if missing:
        raise CheckpointError(f"{path}: corrupt: it records tensor digests, but none for {', '.join(missing)}")
    changed = []
    for name, (dtype, shape, data) in sorted(tensors.items()):
        parts = digests[name].split(" ", 2)
        if len(parts) != 3 or not _HEX.fullmatch(parts[0]):
            raise CheckpointError(f"{path}: the digest of {name!r} is {digests[name]!r}, not '<sha256 hex> <dtype> "
                                  "<shape>'")
        if _digest(dtype, shape, data) != digests[name]:
            changed.append(name)
    if changed:
        raise CheckpointError(f"{path}: corrupt: the dtype, shape or bytes of {', '.join(changed)} differ from the "
                              "SHA-256 recorded when it was written")


def _reader(code: str, name: str, path: Path) -> Any:
    """The NumPy dtype whose bytes ``code`` stores; a CheckpointError for a type this reader cannot hold."""
    if code in _NUMPY:
        return np.dtype(_NUMPY[code]).newbyteorder("<")
    if code == "BF16":
        return np.dtype("<u2")
    if code in _ML_DTYPES:
        try:
            import ml_dtypes
        except ImportError:
            raise CheckpointError(f"{path}: entry {name!r} is {code}, which needs the ml_dtypes package to read "
                                  "(pip install ml_dtypes)") from None
        return np.dtype(getattr(ml_dtypes, _ML_DTYPES[code]))
    raise CheckpointError(f"{path}: entry {name!r} is {code}, a packed sub-byte type this reader does not support")


def _array(code: str, shape: list[int], data: bytes | bytearray, name: str, path: Path) -> np.ndarray:
    """A tensor's bytes as an array of its own dtype, or float32 for BF16 and 8-bit floats (exact)."""
    a = np.frombuffer(data, dtype=_reader(code, name, path))
    if code == "BF16":  # bfloat16 is the upper half of a float32
        return (a.astype(np.uint32) << 16).view(np.float32).reshape(shape)
    if code in _ML_DTYPES:
        return a.astype(np.float32).reshape(shape)
    if code == "BOOL" and np.any(a.view(np.uint8) > 1):
        raise CheckpointError(f"{path}: entry {name!r} is BOOL but holds bytes other than 0 and 1")
    return a.astype(a.dtype.newbyteorder("=")).reshape(shape)


def _package_read(data: bytes, path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The package's own parse of a whole file: (name, {dtype, shape, data})."""
    from safetensors import SafetensorError, deserialize

    try:
        return list(deserialize(data))  # type: ignore[no-untyped-call]  # safetensors ships no stubs for it
    except (SafetensorError, ValueError, TypeError, OverflowError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"{path}: not a valid safetensors file: {first}") from None


def load_canonical(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a safetensors file: (name -> array, metadata without the digests).

    Every malformed, truncated or corrupt file (a tensor whose digest differs) is a CheckpointError naming the file
    and what is wrong; nothing is allocated from a declared size before the file is known to hold it.
    """
    path = Path(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        first = f.read(8)
        if len(first) < 8:
            raise CheckpointError(f"{path}: not a safetensors file ({size} bytes, no header)")
        (n,) = struct.unpack("<Q", first)
        if 8 + n > size or n > _MAX_HEADER:
            raise CheckpointError(f"{path}: truncated or not a safetensors file (a header of {n} bytes declared, "
                                  f"a file of {size}, a limit of {_MAX_HEADER})")
        entries, metadata = _parse_header(f.read(n), path)
        _check_layout(entries, size - 8 - n, path)
        for name, info in entries.items():
            _reader(info["dtype"], name, path)
        f.seek(0)
        data = f.read()
    if len(data) != size:
        raise CheckpointError(f"{path}: the file changed while it was read ({size} bytes, then {len(data)})")
    tensors = {name: (info["dtype"], list(info["shape"]), info["data"]) for name, info in _package_read(data, path)}
    if tensors.keys() != entries.keys():
        raise CheckpointError(f"{path}: the safetensors package reads other tensors than its header names")
    _verify_digests(tensors, metadata, path)
    out = {name: _array(dtype, shape, data, name, path) for name, (dtype, shape, data) in tensors.items()}
    return out, {k: v for k, v in metadata.items() if not k.startswith(DIGEST_PREFIX)}


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
