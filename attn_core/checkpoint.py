"""The canonical checkpoint: a safetensors file of canonical names, torch layout, plus the model's name and config.

Written and read here with NumPy alone (the format is a little-endian u64 header length, a JSON header of
``{name: {dtype, shape, data_offsets}}`` with an optional ``__metadata__`` of strings, then the raw bytes), so the
specification layer stays framework-free; files interoperate with the ``safetensors`` package. Writes go to a
temporary file that replaces the target only once complete: a failed write leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Mapping

import numpy as np

__all__ = ["CheckpointError", "save_canonical", "load_canonical"]

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
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
