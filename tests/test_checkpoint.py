"""The canonical checkpoint file: round trips, interoperates with the safetensors package, refuses bad files."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from attn_core.checkpoint import CheckpointError, load_canonical, save_canonical


def _weights():
    rng = np.random.default_rng(0)
    return {"conv1.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
            "bn1.running_var": rng.uniform(0.5, 2, 4), "bn1.num_batches_tracked": np.array(3, dtype=np.int64),
            "fc.bias": np.zeros(0, np.float16)}


def test_round_trip_keeps_names_shapes_dtypes_values_and_metadata(tmp_path):
    w = _weights()
    path = tmp_path / "m.safetensors"
    save_canonical(path, w, {"model": "resnet18", "config": '{"num_classes": 10}'})
    got, meta = load_canonical(path)
    assert meta == {"model": "resnet18", "config": '{"num_classes": 10}'}
    assert sorted(got) == sorted(w)
    for k, v in w.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape
        np.testing.assert_array_equal(got[k], v)


def test_layout_by_hand(tmp_path):
    """8-byte little-endian header length, JSON header, data: a float32 [1.0, 2.0] is 0000803f 00000040."""
    path = tmp_path / "a.safetensors"
    save_canonical(path, {"a": np.array([1.0, 2.0], np.float32)})
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0 and raw[8:8 + n].rstrip() == b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
    assert raw[8 + n:] == bytes.fromhex("0000803f00000040")


def test_interoperates_with_the_safetensors_package(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    w = _weights()
    ours = tmp_path / "ours.safetensors"
    save_canonical(ours, w, {"model": "x"})
    theirs = st.load_file(str(ours))
    for k, v in w.items():
        np.testing.assert_array_equal(theirs[k], v)
    other = tmp_path / "theirs.safetensors"
    st.save_file(w, str(other), metadata={"model": "y"})
    got, meta = load_canonical(other)
    assert meta == {"model": "y"}
    for k, v in w.items():
        np.testing.assert_array_equal(got[k], v)


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


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "m.safetensors"
    with pytest.raises(CheckpointError, match="cannot be stored"):
        save_canonical(path, {"ok": np.zeros(2), "bad": np.array(["text"])})
    assert list(tmp_path.iterdir()) == []
