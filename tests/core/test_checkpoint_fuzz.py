"""Fuzzing load_canonical: whatever is done to a valid checkpoint file, it either returns exactly the arrays the
file was written with or raises CheckpointError, never another exception and never other numbers.

Truncations at every point, bytes overwritten anywhere, any declared header length, and headers rebuilt with one
field of the wrong type or value (dtype strings unknown or of another tensor's size, shapes negative, huge or of
another product, offsets out of range or overlapping, ``__metadata__`` of every JSON type). The file holds the
digests ``save_canonical`` writes, so an edit that keeps the file well formed but changes what it holds (a dtype
of the same size, a reshape, a flipped data byte) must be refused too.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from attn_core.checkpoint import CheckpointError, checkpoint_metadata, load_canonical, save_canonical
from attn_core.models import create_model_config

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis not installed (the test extra)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])

# a few tensors of a real model (SE-ResNet-18's first layers and SE block, seeded), and the other dtypes a
# checkpoint may hold: a float64 statistic, an int64 counter (0-d) and an empty float16 tensor
_CONFIG = create_model_config("seresnet18", num_classes=10)
_ALL = _CONFIG.init_weights(np.random.default_rng(0), np.float32)
WEIGHTS = {k: _ALL[k] for k in ("conv1.weight", "bn1.weight", "bn1.running_var", "layer1.0.se.fc1.weight",
                                "layer1.0.se.fc2.bias", "fc.bias")}
WEIGHTS.update({"stat": np.linspace(0.5, 2.0, 5), "count": np.array(7, np.int64),
                "empty": np.zeros((0, 3), np.float16)})


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


class _Bytes(bytes):
    """A file's bytes that a falsifying example prints by its length alone."""

    def __repr__(self) -> str:
        return f"<{len(self)} bytes>"


@pytest.fixture(scope="module")
def reference(folder) -> bytes:
    path = folder / "reference.safetensors"
    save_canonical(path, WEIGHTS, checkpoint_metadata(_CONFIG, "torch"))
    return _Bytes(path.read_bytes())


def _header(raw: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _file(header: object, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


def _check(folder, raw: bytes) -> bool:
    """The property: the same arrays (names, dtypes, shapes, values) or a CheckpointError. True when it loaded."""
    path = folder / "case.safetensors"
    path.write_bytes(raw)
    try:
        got, _ = load_canonical(path)
    except CheckpointError:
        _event("refused")
        return False
    _event("loaded")
    assert sorted(got) == sorted(WEIGHTS)
    for k, v in WEIGHTS.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
        assert got[k].tobytes() == v.tobytes(), k  # bit for bit: -0.0 is not 0.0 here
    return True


def _event(text: str) -> None:
    """Count outcomes in ``--hypothesis-show-statistics`` (and nothing outside a hypothesis test)."""
    try:
        hypothesis.event(text)
    except hypothesis.errors.InvalidArgument:
        pass


def test_the_reference_file_loads(folder, reference):
    assert _check(folder, reference)


@FUZZ
@given(cut=st.integers(min_value=0, max_value=10 ** 6))
def test_every_truncation_is_refused(folder, reference, cut):
    with pytest.raises(CheckpointError):
        load_canonical(_write(folder, reference[:cut % len(reference)]))


def _write(folder, raw: bytes):
    path = folder / "case.safetensors"
    path.write_bytes(raw)
    return path


@FUZZ
@given(edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=3),
       in_header=st.booleans())
def test_overwritten_bytes_load_the_same_or_are_refused(folder, reference, edits, in_header):
    """A byte anywhere: the length, the header (names, numbers, digests, metadata) or the tensor data."""
    raw = bytearray(reference)
    (n,) = struct.unpack("<Q", reference[:8])
    span = 8 + n if in_header else len(raw)
    for where, value in edits:
        raw[int(where * span)] = value
    _check(folder, bytes(raw))


@FUZZ
@given(declared=st.one_of(st.integers(0, 2 ** 64 - 1), st.integers(0, 4096)))
def test_any_declared_header_length_loads_the_same_or_is_refused(folder, reference, declared):
    _check(folder, struct.pack("<Q", declared) + reference[8:])


# JSON values of every type, including integers negative, huge and past 64 bits
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=8)
DTYPES = ("BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "I16", "U16", "F16", "BF16", "I32", "U32", "F32",
          "C64", "F64", "I64", "U64", "F4", "F6_E2M3", "F6_E3M2")


@st.composite
def mutated_headers(draw, reference: bytes) -> bytes:
    """The reference file with one field of its header replaced by a wrong value (and the data kept)."""
    header, body = _header(reference)
    names = [k for k in header if k != "__metadata__"]
    name = draw(st.sampled_from(names))
    entry = header[name]
    kind = draw(st.sampled_from(["entry", "dtype", "shape", "dim", "offsets", "offset", "overlap", "metadata",
                                 "metadata value", "metadata key", "extra key"]))
    if kind == "entry":
        header[name] = draw(JSON)
    elif kind == "dtype":
        entry["dtype"] = draw(st.sampled_from(DTYPES) | st.text(max_size=6) | JSON)
    elif kind == "shape":
        entry["shape"] = draw(st.lists(st.integers(-3, 2 ** 66), max_size=5) | JSON)
    elif kind == "dim" and entry["shape"]:
        entry["shape"][draw(st.integers(0, len(entry["shape"]) - 1))] = draw(st.integers(-2, 70) | JSON)
    elif kind == "offsets":
        entry["data_offsets"] = draw(st.lists(st.integers(-8, len(body) + 64), max_size=3) | JSON)
    elif kind == "offset":
        i = draw(st.integers(0, 1))
        entry["data_offsets"][i] = entry["data_offsets"][i] + draw(st.integers(-64, 64) | st.sampled_from([2 ** 64]))
    elif kind == "overlap":
        other = header[draw(st.sampled_from(names))]
        entry["data_offsets"] = list(other["data_offsets"])
        entry["shape"], entry["dtype"] = list(other["shape"]), other["dtype"]
    elif kind == "metadata":
        header["__metadata__"] = draw(JSON)
    elif kind == "metadata value":
        meta = header["__metadata__"]
        meta[draw(st.sampled_from(sorted(meta)))] = draw(JSON)
    elif kind == "metadata key":
        meta = header["__metadata__"]
        key = draw(st.sampled_from(sorted(meta)))
        meta[draw(st.text(max_size=12))] = meta.pop(key)
    else:
        entry[draw(st.text(max_size=6))] = draw(JSON)
    extra = draw(st.sampled_from([b"", b"\0", b"\0" * 8]))
    cut = draw(st.sampled_from([0, 0, 0, 1, 4]))
    return _file(header, body[:len(body) - cut] + extra)


@FUZZ
@given(data=st.data())
def test_headers_with_a_wrong_field_load_the_same_or_are_refused(folder, reference, data):
    _check(folder, data.draw(mutated_headers(reference)))


@FUZZ
@given(edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=3))
def test_files_without_digests_read_as_the_safetensors_package_reads_them(folder, edits):
    """A file written by the package itself (no digests): what load_canonical returns is what the package's
    own NumPy reader returns, and whatever that reader refuses is a CheckpointError here."""
    st_numpy = pytest.importorskip("safetensors.numpy")
    raw = bytearray(st_numpy.save(WEIGHTS, metadata={"model": "seresnet18"}))
    for where, value in edits:
        raw[int(where * len(raw))] = value
    path = _write(folder, bytes(raw))
    try:
        got, _ = load_canonical(path)
    except CheckpointError:
        return
    theirs = st_numpy.load(bytes(raw))
    assert sorted(got) == sorted(theirs)
    for k, v in theirs.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
        np.testing.assert_array_equal(got[k], v, err_msg=k)
