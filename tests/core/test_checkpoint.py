"""The canonical checkpoint file: round trips, interoperates with the safetensors package, refuses malformed
headers with a CheckpointError saying what is wrong, and detects corrupted tensor data by its SHA-256."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from attn_core.checkpoint import DIGEST_PREFIX, CheckpointError, checkpoint_metadata, load_canonical, save_canonical
from attn_core.models import create_model_config

from .._fw import FRAMEWORKS, backend


def _weights():
    rng = np.random.default_rng(0)
    return {"conv1.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
            "bn1.running_var": rng.uniform(0.5, 2, 4), "bn1.num_batches_tracked": np.array(3, dtype=np.int64),
            "fc.bias": np.zeros(0, np.float16)}


def _file(header: dict, body: bytes = b"", *, raw: bytes | None = None) -> bytes:
    """A safetensors file put together by hand: u64 little-endian header length, the header, the data."""
    text = json.dumps(header).encode() if raw is None else raw
    return struct.pack("<Q", len(text)) + text + body


def _split(raw: bytes) -> tuple[dict, int]:
    """(the header as JSON, where the data starts) of a file's bytes, read by hand."""
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), 8 + n


def _flip(path, name: str) -> None:
    """Flip the lowest bit of the middle byte of tensor ``name``'s data in the file at ``path``."""
    raw = bytearray(path.read_bytes())
    header, start = _split(bytes(raw))
    a, b = header[name]["data_offsets"]
    raw[start + (a + b) // 2] ^= 1
    path.write_bytes(bytes(raw))


# ---------------------------------------------------------------------------------------------- round trips
def test_round_trip_keeps_names_shapes_dtypes_values_and_metadata(tmp_path):
    w = _weights()
    path = tmp_path / "m.safetensors"
    save_canonical(path, w, {"model": "resnet18", "config": '{"num_classes": 10}'})
    got, meta = load_canonical(path)
    assert meta == {"model": "resnet18", "config": '{"num_classes": 10}'}  # the digests are not returned
    assert sorted(got) == sorted(w)
    for k, v in w.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape
        np.testing.assert_array_equal(got[k], v)
    save_canonical(path, got, meta)  # a second round keeps one digest per tensor, fresh
    header, _ = _split(path.read_bytes())
    assert sorted(k for k in header["__metadata__"] if k.startswith(DIGEST_PREFIX)) == sorted(
        DIGEST_PREFIX + k for k in w)


def test_layout_and_digest_by_hand(tmp_path):
    """8-byte little-endian header length, JSON header, data: a float32 [1.0, 2.0] is 0000803f 00000040, and the
    metadata records the SHA-256 of exactly those 8 bytes with the dtype and shape they were written as."""
    path = tmp_path / "a.safetensors"
    save_canonical(path, {"a": np.array([1.0, 2.0], np.float32)}, {"model": "m"})
    raw = path.read_bytes()
    header, start = _split(raw)
    assert (start - 8) % 8 == 0
    data = bytes.fromhex("0000803f00000040")
    assert header == {"__metadata__": {"model": "m", "sha256:a": f"{hashlib.sha256(data).hexdigest()} F32 [2]"},
                      "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    assert raw[start:] == data


def test_written_with_the_permissions_of_a_plain_open(tmp_path):
    mask = os.umask(0)
    os.umask(mask)
    save_canonical(tmp_path / "m.safetensors", _weights())
    assert (tmp_path / "m.safetensors").stat().st_mode & 0o777 == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_interoperates_with_the_safetensors_package(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    w = _weights()
    ours = tmp_path / "ours.safetensors"
    save_canonical(ours, w, {"model": "x"})
    theirs = st.load_file(str(ours))
    for k, v in w.items():
        np.testing.assert_array_equal(theirs[k], v)
    other = tmp_path / "theirs.safetensors"  # no digests: taken as it is
    st.save_file(w, str(other), metadata={"model": "y"})
    got, meta = load_canonical(other)
    assert meta == {"model": "y"}
    for k, v in w.items():
        np.testing.assert_array_equal(got[k], v)


# ------------------------------------------------------------------------------------- bfloat16 and float8
# bfloat16 bit patterns and their values by hand: 1.5 = 0x3fc0, -2.25 = 0xc010, the largest finite
# (2 - 2**-7) * 2**127 = 0x7f7f, the smallest subnormal 2**-133 = 0x0001, -0.0 = 0x8000, inf = 0x7f80
_BF16 = {0x3FC0: 1.5, 0xC010: -2.25, 0x7F7F: (2 - 2 ** -7) * 2.0 ** 127, 0x0001: 2.0 ** -133, 0x8000: -0.0,
         0x7F80: np.inf}


def test_bf16_loads_as_float32_exactly_from_a_hand_built_file(tmp_path):
    bits = np.array(list(_BF16) + [0x7FC0], "<u2")  # and a quiet NaN
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(_file({"w": {"dtype": "BF16", "shape": [7], "data_offsets": [0, 14]}}, bits.tobytes()))
    got, _ = load_canonical(path)
    assert got["w"].dtype == np.float32
    np.testing.assert_array_equal(got["w"][:6], np.array(list(_BF16.values()), np.float32))
    assert np.signbit(got["w"][4]) and np.isnan(got["w"][6])


def test_bf16_written_by_torch_loads_as_its_float32_values(tmp_path):
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("safetensors.torch")
    t = torch.tensor([[1.5, -2.25, 3.0e38], [1e-39, float("inf"), float("nan")]]).to(torch.bfloat16)
    path = tmp_path / "torch_bf16.safetensors"
    st.save_file({"w": t}, str(path), metadata={"format": "pt"})
    got, meta = load_canonical(path)
    assert meta == {"format": "pt"} and got["w"].dtype == np.float32 and got["w"].shape == (2, 3)
    np.testing.assert_array_equal(got["w"], t.float().numpy())


def test_ml_dtypes_arrays_are_written_in_their_own_dtype_and_read_back_as_float32(tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    values = np.array([1.5, -2.25, 0.125, 448.0], np.float32)  # each exact in bfloat16 and float8_e4m3fn
    path = tmp_path / "low.safetensors"
    save_canonical(path, {"b": values.astype(ml_dtypes.bfloat16), "f8": values.astype(ml_dtypes.float8_e4m3fn)})
    header, _ = _split(path.read_bytes())
    assert header["b"]["dtype"] == "BF16" and header["f8"]["dtype"] == "F8_E4M3"
    got, meta = load_canonical(path)
    assert meta == {}
    for k in ("b", "f8"):
        assert got[k].dtype == np.float32
        np.testing.assert_array_equal(got[k], values)


def test_sub_byte_dtypes_are_refused_by_name(tmp_path):
    path = tmp_path / "f4.safetensors"
    path.write_bytes(_file({"w": {"dtype": "F4", "shape": [4], "data_offsets": [0, 2]}}, b"\x12\x34"))
    with pytest.raises(CheckpointError, match="'w' is F4, a packed sub-byte type"):
        load_canonical(path)


# ------------------------------------------------------------------------------------------ malformed files
def test_truncated_and_malformed_files_are_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    save_canonical(path, _weights())
    raw = path.read_bytes()
    for cut, bad in [("empty", b""), ("header", raw[:20]), ("data", raw[:-5])]:
        p = tmp_path / f"{cut}.safetensors"
        p.write_bytes(bad)
        with pytest.raises(CheckpointError, match="truncated|not a safetensors"):
            load_canonical(p)
    p = tmp_path / "junk.safetensors"
    p.write_bytes(struct.pack("<Q", 4) + b"nope")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_canonical(p)


_GOOD = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
MALFORMED = [  # (id, header, body, what the error says)
    ("metadata a list", {"__metadata__": ["model"], "a": _GOOD}, 8, "__metadata__ is a JSON list, not an object"),
    ("metadata a string", {"__metadata__": "resnet18", "a": _GOOD}, 8, "__metadata__ is a JSON str, not an object"),
    ("metadata value a number", {"__metadata__": {"epoch": 3}, "a": _GOOD}, 8, "'epoch' holds a int"),
    ("negative dimension", {"a": {**_GOOD, "shape": [-2]}}, 8, r"shape \[-2\] is not a list of non-negative"),
    ("float dimension", {"a": {**_GOOD, "shape": [2.0]}}, 8, r"shape \[2.0\] is not a list"),
    ("bool dimension", {"a": {**_GOOD, "shape": [True, 2]}}, 8, r"shape \[True, 2\] is not a list"),
    ("shape a string", {"a": {**_GOOD, "shape": "2"}}, 8, "shape '2' is not a list"),
    ("huge dimensions", {"a": {**_GOOD, "shape": [2 ** 40, 2 ** 40]}}, 8, "of shape .* is 4.8.*e.* bytes, but"),
    ("shape disagrees with offsets", {"a": {**_GOOD, "shape": [3]}}, 8, r"is 12 bytes, but its data_offsets \[0, 8\]"),
    ("unknown dtype", {"a": {**_GOOD, "dtype": "F99"}}, 8, "unknown dtype 'F99'; the format's are BOOL"),
    ("dtype a number", {"a": {**_GOOD, "dtype": 32}}, 8, "unknown dtype 32"),
    ("entry a list", {"a": [0, 8]}, 8, "'a' is a JSON list, not an object"),
    ("entry lacks offsets", {"a": {"dtype": "F32", "shape": [2]}}, 8, "'a' lacks data_offsets"),
    ("three offsets", {"a": {**_GOOD, "data_offsets": [0, 8, 8]}}, 8, r"data_offsets \[0, 8, 8\] is not \[start, "),
    ("offsets reversed", {"a": {**_GOOD, "data_offsets": [8, 0]}}, 8, "is not .start, end. with 0 <= start <= end"),
    ("negative offset", {"a": {**_GOOD, "data_offsets": [-8, 0]}}, 8, "is not .start, end."),
    ("offsets past the end", {"a": {**_GOOD, "data_offsets": [8, 16]}}, 8, "8 bytes before entry 'a' belong to no"),
    ("huge offsets", {"a": {**_GOOD, "data_offsets": [0, 2 ** 70]}}, 8, "is 8 bytes, but its data_offsets"),
    ("overlapping", {"a": _GOOD, "b": {**_GOOD, "data_offsets": [4, 12]}}, 12, "entries 'a' and 'b' overlap"),
    ("the same bytes twice", {"a": _GOOD, "b": _GOOD}, 8, "entries 'a' and 'b' overlap"),
    ("data past the file", {"a": {**_GOOD, "shape": [4], "data_offsets": [0, 16]}}, 8,
     "truncated or inconsistent: .* ends at byte 16"),
    ("bytes after the data", {"a": _GOOD}, 12, "4 bytes after the last tensor's data belong to no tensor"),
    ("header a list", [1], 0, "the safetensors header is a JSON list, not an object"),
]


@pytest.mark.parametrize("header,body,message", [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_each_malformed_header_is_a_checkpoint_error_saying_what_is_wrong(tmp_path, header, body, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(_file(header, bytes(body)))
    with pytest.raises(CheckpointError, match=message) as err:
        load_canonical(path)
    assert str(err.value).startswith(f"{path}: ")


@pytest.mark.parametrize("raw,message", [
    (b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "unreadable"),  # nesting past the recursion limit
    (b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}',
     "the key 'a' appears twice"),
    (b'{"a":{"dtype":"F32","shape":[NaN],"data_offsets":[0,8]}}', "NaN is not JSON"),
    ('{"\u00e9":1}'.encode("utf-16"), "unreadable"),
])
def test_unreadable_json_is_a_checkpoint_error(tmp_path, raw, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(_file({}, b"\0" * 8, raw=raw))
    with pytest.raises(CheckpointError, match=message):
        load_canonical(path)


@pytest.mark.parametrize("declared", [2 ** 64 - 1, 2 ** 40, 100_000_001])
def test_a_huge_declared_header_length_is_refused_before_reading(tmp_path, declared):
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", declared) + b"{}" + b" " * 6)
    with pytest.raises(CheckpointError, match=f"a header of {declared} bytes declared, a file of 16"):
        load_canonical(path)


def test_bool_bytes_other_than_0_and_1_are_refused(tmp_path):
    path = tmp_path / "b.safetensors"
    path.write_bytes(_file({"m": {"dtype": "BOOL", "shape": [2], "data_offsets": [0, 2]}}, b"\x01\x07"))
    with pytest.raises(CheckpointError, match="'m' is BOOL but holds bytes other than 0 and 1"):
        load_canonical(path)


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "m.safetensors"
    with pytest.raises(CheckpointError, match="cannot be stored"):
        save_canonical(path, {"ok": np.zeros(2), "bad": np.array(["text"])})
    with pytest.raises(CheckpointError, match="keys starting 'sha256:' are the tensor digests"):
        save_canonical(path, {"ok": np.zeros(2)}, {"sha256:ok": "0" * 64})
    with pytest.raises(CheckpointError, match="names must be strings other than '__metadata__'"):
        save_canonical(path, {"__metadata__": np.zeros(2)})
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------ corruption
def test_a_flipped_byte_in_any_tensor_is_caught_naming_it(tmp_path):
    w = _weights()
    for name in ("conv1.weight", "bn1.running_var", "bn1.num_batches_tracked"):
        path = tmp_path / f"{name}.safetensors"
        save_canonical(path, w)
        _flip(path, name)
        with pytest.raises(CheckpointError, match=f"corrupt: the dtype, shape or bytes of {name} differ"):
            load_canonical(path)


def test_a_header_edit_that_keeps_the_bytes_is_caught(tmp_path):
    """F32 -> I32 and a reshape keep every offset valid: only the recorded dtype and shape tell."""
    path = tmp_path / "m.safetensors"
    save_canonical(path, {"a": np.arange(6, dtype=np.float32).reshape(2, 3)})
    raw = path.read_bytes()
    for old, new in [(b'"dtype":"F32"', b'"dtype":"I32"'), (b'"shape":[2,3]', b'"shape":[3,2]')]:
        assert raw.count(old) == 1
        path.write_bytes(raw.replace(old, new))
        with pytest.raises(CheckpointError, match="bytes of a differ from the SHA-256"):
            load_canonical(path)


@pytest.mark.parametrize("edit,message", [
    (lambda m: m.pop("sha256:b"), "records tensor digests, but none for b"),
    (lambda m: m.update({"sha256:c": m["sha256:a"]}), "records digests of tensors it does not hold: c"),
    (lambda m: m.update({"sha256:a": "beef F32 [2]"}), r"the digest of 'a' is 'beef F32 \[2\]', not"),
])
def test_digests_that_do_not_fit_the_tensors_are_refused(tmp_path, edit, message):
    path = tmp_path / "m.safetensors"
    save_canonical(path, {"a": np.ones(2, np.float32), "b": np.zeros(3)})
    header, start = _split(path.read_bytes())
    edit(header["__metadata__"])
    path.write_bytes(_file(header, path.read_bytes()[start:]))
    with pytest.raises(CheckpointError, match=message):
        load_canonical(path)


def _model_file(tmp_path):
    """A realistic canonical checkpoint: SE-DenseNet-BC-40 with seeded weights, as save_checkpoint writes it."""
    config = create_model_config("sedensenet_bc40_k12")
    path = tmp_path / "sedensenet.safetensors"
    weights = config.init_weights(np.random.default_rng(0), np.float32)
    save_canonical(path, weights, checkpoint_metadata(config, "torch"))
    return path


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_each_backend_refuses_a_flipped_byte(tmp_path, fw):
    b = backend(fw)
    path = _model_file(tmp_path)
    model = b.create_model("sedensenet_bc40_k12")
    b.load_checkpoint(path, model)  # intact: loads
    _flip(path, "features.denseblock2.denselayer3.conv2.weight")
    with pytest.raises(CheckpointError, match="corrupt: .* of features.denseblock2.denselayer3.conv2.weight differ"):
        b.load_checkpoint(path, b.create_model("sedensenet_bc40_k12"))


def test_conversion_of_a_flipped_byte_exits_2_with_one_line_and_writes_nothing(tmp_path):
    pytest.importorskip("torch")
    path = _model_file(tmp_path)
    _flip(path, "classifier.weight")
    before = sorted(p.name for p in tmp_path.iterdir())
    r = subprocess.run([sys.executable, "-m", "conformance.convert", str(path), str(tmp_path / "out.pt")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "classifier.weight" in lines[0], r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_conversion_writes_the_digests_even_from_a_file_without_them(tmp_path):
    """A canonical file written by the safetensors package (no digests) converts; the file written has a digest
    of every tensor, and reads back as the source's weights."""
    st = pytest.importorskip("safetensors.numpy")
    pytest.importorskip("torch")
    from conformance.convert import convert

    config = create_model_config("sedensenet_bc40_k12")
    weights = config.init_weights(np.random.default_rng(0), np.float32)
    src = tmp_path / "theirs.safetensors"
    st.save_file(weights, str(src), metadata=checkpoint_metadata(config, "torch"))
    convert(src, tmp_path / "ours.safetensors", verify_outputs=False)
    header, _ = _split((tmp_path / "ours.safetensors").read_bytes())
    assert {k for k in header["__metadata__"] if k.startswith(DIGEST_PREFIX)} == {DIGEST_PREFIX + k for k in weights}
    got, _ = load_canonical(tmp_path / "ours.safetensors")
    for k, v in weights.items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)
