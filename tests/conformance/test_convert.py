"""conformance.convert: every format to every other, layouts checked by hand, bad checkpoints write nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from attn_core import InputShapeError, WeightLoadError
from attn_core.checkpoint import CheckpointError, load_canonical, save_canonical
from attn_core.models import create_model_config
from conformance.convert import ConvertError, NonFiniteError, VerificationError, convert, formats, verify
from conformance.convert.__main__ import main

from .._fw import backend

KW = {"num_classes": 10}
VERIFY_LINE = re.compile(r"verify: (\w+) vs (\w+) logits on a seeded 2x3x32x32 input, eval mode: max abs diff "
                         r"(\S+), max rel diff (\S+), max \|logit\| (\S+) \(float32 tolerance on the logits' "
                         r"scale: (\S+) \+ 0\.0001 \* \|ref\|\): ok; weights read back: identical")


@pytest.fixture(scope="module")
def weights():
    return create_model_config("resnet18", **KW).init_weights(np.random.default_rng(0), np.float32)


@pytest.fixture(scope="module")
def torch_file(tmp_path_factory, weights):
    """A torch state_dict of resnet18 (10 classes), saved with torch.save as a user would."""
    torch = pytest.importorskip("torch")
    model = backend("torch").load_weights(backend("torch").create_model("resnet18", **KW), weights)
    path = tmp_path_factory.mktemp("src") / "r18.pt"
    torch.save(model.state_dict(), path)
    return path


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_torch_to_paddle_and_flax_by_the_cli_in_their_own_layouts(tmp_path, torch_file, weights, capsys):
    paddle = pytest.importorskip("paddle")
    serialization = pytest.importorskip("flax.serialization")
    for ext in ("pdparams", "msgpack", "safetensors"):
        rc = main([str(torch_file), str(tmp_path / f"r18.{ext}"), "--model", "resnet18", "--model-kwargs",
                   "num_classes=10", "--input-size", "32"])
        out = capsys.readouterr().out
        assert rc == 0, out
        assert f"converted resnet18 num_classes=10: {torch_file} (torch) -> {tmp_path / f'r18.{ext}'}" in out
        assert VERIFY_LINE.search(out), out
    # Paddle keeps torch's layout but [in, out] Linear weights and _mean / _variance names
    pd = paddle.load(str(tmp_path / "r18.pdparams"), return_numpy=True)
    np.testing.assert_array_equal(pd["fc.weight"], weights["fc.weight"].T)
    np.testing.assert_array_equal(pd["layer2.0.bn1._variance"], weights["layer2.0.bn1.running_var"])
    np.testing.assert_array_equal(pd["conv1.weight"], weights["conv1.weight"])
    # Flax: HWIO kernels, [in, out] Dense kernels, BatchNorm statistics under batch_stats
    fx = serialization.msgpack_restore((tmp_path / "r18.msgpack").read_bytes())
    np.testing.assert_array_equal(fx["params"]["conv1"]["kernel"], weights["conv1.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(fx["params"]["fc"]["kernel"], weights["fc.weight"].T)
    np.testing.assert_array_equal(fx["batch_stats"]["layer1"]["0"]["bn2"]["mean"], weights["layer1.0.bn2.running_mean"])
    canonical, meta = load_canonical(tmp_path / "r18.safetensors")
    assert meta["model"] == "resnet18" and meta["model_kwargs"] == '{"num_classes": 10}'
    assert meta["framework"] == "torch"
    assert sorted(canonical) == sorted(weights)
    assert (tmp_path / "r18.pdparams").stat().st_mode & 0o044  # readable like any file the user writes


@pytest.mark.parametrize("src,dst", [("safetensors", "pt"), ("pdparams", "msgpack"), ("msgpack", "pt")])
def test_each_format_converts_back_with_the_same_weights(tmp_path, torch_file, weights, src, dst):
    torch = pytest.importorskip("torch")
    pytest.importorskip("paddle"), pytest.importorskip("flax")
    first = tmp_path / f"a.{src}"
    kw = {} if src == "safetensors" else {"model": "resnet18", "model_kwargs": KW}
    convert(torch_file, first, model="resnet18", model_kwargs=KW, verify_outputs=False)
    result = convert(first, tmp_path / f"b.{dst}", input_size=32, **kw)  # safetensors names its own model
    assert result.model == "resnet18" and result.difference is not None and result.difference.ok
    if dst == "pt":
        state = torch.load(tmp_path / "b.pt", weights_only=True)
        for k, v in weights.items():
            np.testing.assert_array_equal(state[k].numpy(), v, err_msg=k)
        assert int(state["bn1.num_batches_tracked"]) == 0
        model = backend("torch").create_model("resnet18", **KW)
        model.load_state_dict(state)  # torch's own strict loader takes the file as is


def test_wrappers_and_a_dataparallel_prefix_are_unwrapped(tmp_path, torch_file):
    torch = pytest.importorskip("torch")
    state = torch.load(torch_file, weights_only=True)
    for i, obj in enumerate([{"state_dict": state}, {"model": {f"module.{k}": v for k, v in state.items()}}]):
        src = tmp_path / f"w{i}.pth"
        torch.save(obj, src)
        convert(src, tmp_path / f"w{i}.safetensors", model="resnet18", model_kwargs=KW, verify_outputs=False)
    mixed = dict(state)
    mixed["module.fc.bias"] = mixed.pop("fc.bias")  # not every key has the prefix: nothing is stripped
    torch.save(mixed, tmp_path / "mixed.pt")
    with pytest.raises(WeightLoadError, match=r"missing: fc.bias\n  unexpected: module.fc.bias"):
        convert(tmp_path / "mixed.pt", tmp_path / "mixed.safetensors", model="resnet18", model_kwargs=KW)


def _bad_checkpoints(tmp_path, torch_file):
    """(name, path of a bad source, model, error class, message pattern)."""
    torch = pytest.importorskip("torch")
    state = torch.load(torch_file, weights_only=True)
    raw = torch_file.read_bytes()
    cases = []

    def add(name, data, model, err, pattern, ext="pt"):
        path = tmp_path / f"{name}.{ext}"
        if isinstance(data, bytes):
            path.write_bytes(data)
        elif ext == "safetensors":
            save_canonical(path, data)
        else:
            torch.save(data, path)
        cases.append((name, path, model, err, pattern))

    add("truncated", raw[: len(raw) // 2], "resnet18", CheckpointError, "not a readable torch checkpoint")
    add("missing", {k: v for k, v in state.items() if k != "layer1.0.conv1.weight"}, "resnet18", WeightLoadError,
        r"missing: layer1\.0\.conv1\.weight")
    add("extra", {**state, "head.weight": torch.zeros(3)}, "resnet18", WeightLoadError, r"unexpected: head\.weight")
    add("shape", {**state, "conv1.weight": torch.zeros(64, 3, 3, 3)}, "resnet18", WeightLoadError,
        r"wrong shape: conv1\.weight: expected \(64, 3, 7, 7\), got \(64, 3, 3, 3\)")
    add("wrong_model", state, "resnet34", CheckpointError,
        r"holds the parameters of resnet18 / simamresnet18, not of resnet34")
    add("not_a_state_dict", [1, 2], "resnet18", CheckpointError, "expected a torch state_dict")
    canonical = {k: v.numpy() for k, v in state.items() if "num_batches" not in k}
    save_canonical(tmp_path / "whole.safetensors", canonical)
    short = (tmp_path / "whole.safetensors").read_bytes()[:-100]
    add("short_data", short, "resnet18", CheckpointError, "truncated or inconsistent", "safetensors")
    return cases


def test_bad_checkpoints_raise_clear_errors_and_write_nothing(tmp_path, torch_file):
    for name, path, model, err, pattern in _bad_checkpoints(tmp_path, torch_file):
        before = _files(tmp_path)
        for ext in ("pdparams", "msgpack"):
            with pytest.raises(err, match=pattern):
                convert(path, tmp_path / f"out_{name}.{ext}", model=model, model_kwargs=KW)
        assert _files(tmp_path) == before, name


def test_truncated_paddle_and_flax_files_write_nothing(tmp_path, torch_file):
    pytest.importorskip("paddle"), pytest.importorskip("flax")
    for ext, pattern in [("pdparams", "not a readable Paddle checkpoint"), ("msgpack", "not readable Flax")]:
        good = tmp_path / f"good.{ext}"
        convert(torch_file, good, model="resnet18", model_kwargs=KW, verify_outputs=False)
        cut = tmp_path / f"cut.{ext}"
        cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        with pytest.raises(CheckpointError, match=pattern):
            convert(cut, tmp_path / "out.pt", model="resnet18", model_kwargs=KW)
        assert not (tmp_path / "out.pt").exists()


def test_usage_errors_exit_2_and_write_nothing(tmp_path, torch_file, capsys):
    existing = tmp_path / "exists.pdparams"
    existing.write_bytes(b"keep")
    runs = [([str(torch_file), str(tmp_path / "x.tflite"), "--model", "resnet18"], "cannot tell the format"),
            ([str(torch_file), str(tmp_path / "x.pdparams")], "does not name its model"),
            ([str(torch_file), str(tmp_path / "x.pdparams"), "--model", "resnet19"], "unknown model 'resnet19'"),
            ([str(torch_file), str(existing), "--model", "resnet18"], "exists; refusing to overwrite"),
            ([str(tmp_path / "none.pt"), str(tmp_path / "x.pdparams"), "--model", "resnet18"], "no such file")]
    for argv, message in runs:
        assert main(argv) == 2
        assert message in capsys.readouterr().err
    assert _files(tmp_path) == ["exists.pdparams"] and existing.read_bytes() == b"keep"
    with pytest.raises(ConvertError, match="unknown format 'tflite'"):
        convert(torch_file, tmp_path / "x.bin", dst_format="tflite", model="resnet18")


def test_a_conversion_that_changes_the_logits_exits_1_and_writes_nothing(tmp_path, torch_file, monkeypatch,
                                                                         capsys):
    """The verification reads the written file back: a writer that spoils one value is caught."""
    paddle = pytest.importorskip("paddle")
    real = formats.write

    def spoiling_write(path, fmt, module, variables, weights, metadata):
        with paddle.no_grad():
            module.fc.bias.set_value(module.fc.bias + 1e-2)
        real(path, fmt, module, variables, weights, metadata)

    monkeypatch.setattr(formats, "write", spoiling_write)
    dst = tmp_path / "bad.pdparams"
    rc = main([str(torch_file), str(dst), "--model", "resnet18", "--model-kwargs", '{"num_classes": 10}',
               "--input-size", "32"])
    captured = capsys.readouterr()
    assert rc == 1 and "FAILED; weights read back: 1 DIFFER (fc.bias)" in captured.out
    assert "not written" in captured.err
    assert _files(tmp_path) == []
    with pytest.raises(VerificationError, match="does not hold the source's weights or compute its logits"):
        convert(torch_file, dst, model="resnet18", model_kwargs=KW, input_size=32)


@pytest.mark.slow  # subprocess runs
def test_module_entry_point_runs_and_imports_no_framework_until_needed(tmp_path, torch_file):
    r = subprocess.run([sys.executable, "-m", "conformance.convert", str(torch_file), str(tmp_path / "r.msgpack"),
                        "--model", "resnet18", "--model-kwargs", "num_classes=10", "--input-size", "32"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert VERIFY_LINE.search(r.stdout).group(1, 2) == ("torch", "flax")
    r = subprocess.run([sys.executable, "-c", "import sys, conformance.convert; "
                        "print([m for m in ('torch', 'paddle', 'jax', 'flax') if m in sys.modules])"],
                       capture_output=True, text=True, timeout=300)
    assert r.stdout.strip() == "[]", r.stderr


def test_verification_judges_logits_on_their_scale_and_weights_bit_for_bit():
    """Bounds by hand: max |ref| = 13 gives atol max(1e-5, 1e-4 * 13) = 1.3e-3, and 1.3e-3 + 1.3e-3 at |ref| = 13."""
    ref = np.array([[13.0, -2.0, 0.0]])
    w = {"a": np.array([0.1, 0.2], np.float64)}
    near_zero = verify.compare(ref + np.array([[0, 0, 1.2e-3]]), ref, {"a": w["a"].astype(np.float32)}, w)
    assert near_zero.ok and near_zero.changed == () and near_zero.max_logit == 13.0
    assert near_zero.atol == pytest.approx(1.3e-3) and near_zero.max_abs == pytest.approx(1.2e-3)
    assert near_zero.max_rel == pytest.approx(1.2e-3 / 1.3e-3)                    # |ref| = 0: on the atol scale
    assert not verify.compare(ref + np.array([[0, 0, 1.4e-3]]), ref, w, w).logits_ok
    assert verify.compare(ref + np.array([[2.5e-3, 0, 0]]), ref, w, w).logits_ok     # 2.5e-3 <= 2.6e-3
    assert not verify.compare(ref + np.array([[2.7e-3, 0, 0]]), ref, w, w).logits_ok
    tiny = np.array([[1e-3, 0.0]])                                                   # atol stays float32's 1e-5
    assert verify.compare(tiny + [[0, 1e-5]], tiny, w, w).logits_ok
    assert not verify.compare(tiny + [[0, 2e-5]], tiny, w, w).logits_ok
    spoiled = verify.compare(ref, ref, {"a": np.array([0.1, 0.25], np.float32)}, w)
    assert spoiled.logits_ok and not spoiled.ok and spoiled.changed == ("a",)


def test_verification_compares_nonfinite_logits_by_place_and_nan_weights_by_bits():
    ref = np.array([[np.nan, 1.0, np.inf, -np.inf]])
    same = verify.compare(ref + [[0, 1e-5, 0, 0]], ref, {}, {})
    assert same.ok and same.nonfinite == 3 and same.max_logit == 1.0 and same.max_abs == pytest.approx(1e-5)
    for got in ([[0.0, 1.0, np.inf, -np.inf]], [[np.nan, np.nan, np.inf, -np.inf]], [[np.nan, 1.0, -np.inf, -np.inf]],
                [[np.nan, 1.0, np.inf, np.nan]]):
        assert not verify.compare(np.array(got), ref, {}, {}).logits_ok, got
    assert not verify.compare(np.array([[0.0, np.inf]]), np.array([[0.0, 1.0]]), {}, {}).logits_ok
    nan = np.array([np.nan, 1.0, -0.0], np.float32)
    assert verify.compare(ref, ref, {"a": nan.copy()}, {"a": nan}).changed == ()         # NaN == NaN here
    quiet = nan.copy()
    quiet.view(np.uint32)[0] |= 1                                                         # another NaN payload
    assert np.isnan(quiet[0]) and verify.compare(ref, ref, {"a": quiet}, {"a": nan}).changed == ()
    assert verify.compare(ref, ref, {"a": np.array([np.nan, 1.0, 0.0], np.float32)}, {"a": nan}).changed == ("a",)
    assert verify.compare(ref, ref, {"a": np.array([1.0, 1.0, -0.0], np.float32)}, {"a": nan}).changed == ("a",)


def test_verification_input_takes_each_models_legal_size():
    sizes = {name: verify.input_for(create_model_config(name)).shape for name in
             ("resnet18", "towernet", "sedensenet_bc40_k12", "sedensenet121")}
    assert sizes == {"resnet18": (2, 3, 224, 224), "towernet": (2, 3, 256, 256),
                     "sedensenet_bc40_k12": (2, 3, 32, 32), "sedensenet121": (2, 3, 224, 224)}
    with pytest.raises(InputShapeError, match="255 to 510"):
        verify.input_for(create_model_config("towernet"), 254)


def test_flax_variables_in_safetensors_and_formats_named_by_option(tmp_path, torch_file, weights):
    """A safetensors file of flattened Flax variables reads as Flax; --from / --to override the extensions."""
    torch = pytest.importorskip("torch")
    serialization = pytest.importorskip("flax.serialization")
    convert(torch_file, tmp_path / "v.msgpack", model="resnet18", model_kwargs=KW, verify_outputs=False)
    tree = serialization.msgpack_restore((tmp_path / "v.msgpack").read_bytes())
    flat = {}
    for collection, layers in tree.items():
        stack = [((collection,), layers)]
        while stack:
            path, node = stack.pop()
            for key, value in node.items():
                if isinstance(value, dict):
                    stack.append((path + (key,), value))
                else:
                    flat[".".join(path + (key,))] = np.asarray(value)
    save_canonical(tmp_path / "flax_vars.safetensors", flat)
    assert main([str(tmp_path / "flax_vars.safetensors"), str(tmp_path / "out.bin"), "--to", "torch", "--model",
                 "resnet18", "--model-kwargs", "num_classes=10", "--input-size", "32"]) == 0
    state = torch.load(tmp_path / "out.bin", weights_only=True)
    np.testing.assert_array_equal(state["fc.weight"].numpy(), weights["fc.weight"])
    (tmp_path / "copy.data").write_bytes((tmp_path / "v.msgpack").read_bytes())
    result = convert(tmp_path / "copy.data", tmp_path / "c.safetensors", src_format="flax", model="resnet18",
                     model_kwargs=KW, input_size=32)
    assert (result.src_framework, result.dst_framework) == ("flax", "torch") and result.difference.ok


def _one_error_line(err: str) -> str:
    """The single ``error:`` line of a failed command's stderr (and no traceback)."""
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_nothing_converted_exits_2_with_one_line_of_reason(tmp_path, torch_file, capsys):
    """Each case once raised a TypeError, IsADirectoryError or PermissionError traceback with exit 1."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_dir.pdparams").mkdir()
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.access(locked, os.W_OK):  # root writes anywhere it may; /proc takes no new files even from root
        locked = Path("/proc")
    src = [str(torch_file), "--model", "resnet18"]
    runs = [([str(torch_file), str(out / "x.pdparams"), "--model", "resnet18", "--model-kwargs", "num_clases=10"],
             "resnet18 has no setting 'num_clases'; its settings: "),
            ([str(torch_file), str(out / "x.pdparams"), "--model", "resnet18", "--model-kwargs",
              '{"num_classes": 10, "depth": 3, "widht": 2}'], "resnet18 has no setting 'depth', 'widht'"),
            ([src[0], str(out / "a_dir.pdparams"), *src[1:]], "a_dir.pdparams is a directory"),
            ([src[0], str(out / "a_dir.pdparams"), *src[1:], "--force"], "a_dir.pdparams is a directory"),
            ([src[0], str(out), "--to", "paddle", *src[1:], "--force"], f"{out} is a directory"),
            ([str(tmp_path), str(out / "x.pdparams"), "--from", "torch", *src[1:]], f"{tmp_path}: is a directory"),
            ([src[0], str(locked / "x.pdparams"), *src[1:], "--model-kwargs", "num_classes=10", "--input-size",
              "32"], f"{locked / 'x.pdparams'}: ")]
    for argv, message in runs:
        assert main(argv) == 2, argv
        line = _one_error_line(capsys.readouterr().err)
        assert message in line, line
    assert _files(out) == ["a_dir.pdparams"] and _files(out / "a_dir.pdparams") == []
    if locked != Path("/proc"):
        assert _files(locked) == []


@pytest.fixture(scope="module")
def nonfinite_file(tmp_path_factory, torch_file):
    """The resnet18 checkpoint of a diverged run: NaN in the classifier's weight, inf and -inf in its bias."""
    torch = pytest.importorskip("torch")
    state = torch.load(torch_file, weights_only=True)
    state["fc.weight"][2, :2] = float("nan")
    state["fc.bias"][3], state["fc.bias"][5] = float("inf"), -float("inf")
    path = tmp_path_factory.mktemp("diverged") / "diverged.pt"
    torch.save(state, path)
    return path


def test_nonfinite_weights_are_refused_naming_the_tensors(tmp_path, nonfinite_file, capsys):
    argv = [str(nonfinite_file), str(tmp_path / "d.pdparams"), "--model", "resnet18", "--model-kwargs",
            "num_classes=10", "--input-size", "32"]
    assert main(argv) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "4 non-finite weight value(s) (NaN or inf) in 2 tensor(s): fc.weight (2 NaN), fc.bias (2 inf)" in line
    assert "--allow-nonfinite" in line and _files(tmp_path) == []
    with pytest.raises(NonFiniteError, match=r"in 2 tensor\(s\)"):
        convert(nonfinite_file, tmp_path / "d.msgpack", model="resnet18", model_kwargs=KW, verify_outputs=False)
    assert _files(tmp_path) == []


def test_a_nonfinite_error_names_a_few_tensors_and_counts_them_all(tmp_path, torch_file):
    torch = pytest.importorskip("torch")
    state = torch.load(torch_file, weights_only=True)
    names = [k for k, v in state.items() if v.is_floating_point()][:8]
    for k in names:
        state[k].view(-1)[0] = float("nan")
    torch.save(state, tmp_path / "eight.pt")
    with pytest.raises(NonFiniteError) as info:
        convert(tmp_path / "eight.pt", tmp_path / "e.safetensors", model="resnet18", model_kwargs=KW)
    text = str(info.value)
    assert "8 non-finite weight value(s) (NaN or inf) in 8 tensor(s): " in text and " and 3 more;" in text
    assert all(f"{k} (1 NaN)" in text for k in names[:5]) and names[5] not in text


@pytest.mark.parametrize("ext", ["pdparams", "msgpack", "safetensors"])
def test_nonfinite_weights_convert_to_an_exact_copy_when_allowed(tmp_path, nonfinite_file, capsys, ext):
    """They once converted and then exited 1 ("weights read back differ"), since NaN != NaN."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("paddle"), pytest.importorskip("flax")
    dst = tmp_path / f"d.{ext}"
    assert main([str(nonfinite_file), str(dst), "--model", "resnet18", "--model-kwargs", "num_classes=10",
                 "--input-size", "32", "--allow-nonfinite"]) == 0
    out = capsys.readouterr().out
    assert "6 non-finite logits compared by place): ok; weights read back: identical" in out, out
    source = {k: v.numpy() for k, v in torch.load(nonfinite_file, weights_only=True).items()}
    back = convert(dst, tmp_path / "again.pt", model=None if ext == "safetensors" else "resnet18",
                   model_kwargs=None if ext == "safetensors" else KW, input_size=32, allow_nonfinite=True)
    assert back.difference.ok and back.difference.nonfinite == 6
    again = torch.load(tmp_path / "again.pt", weights_only=True)
    for k in ("layer1.0.conv1.weight", "fc.bias", "fc.weight"):
        np.testing.assert_array_equal(again[k].numpy().view(np.uint32), source[k].view(np.uint32), err_msg=k)


def test_a_nan_deep_in_the_network_verifies_when_both_frameworks_give_nan(tmp_path, torch_file):
    """A NaN in the first block's convolution makes every logit NaN, in torch as in Flax."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("flax")
    state = torch.load(torch_file, weights_only=True)
    state["layer1.0.conv1.weight"][0, 0, 0, :2] = float("nan")
    torch.save(state, tmp_path / "deep.pt")
    result = convert(tmp_path / "deep.pt", tmp_path / "deep.msgpack", model="resnet18", model_kwargs=KW,
                     input_size=32, allow_nonfinite=True)
    assert result.difference.ok and result.difference.nonfinite == 20 and result.difference.max_logit == 0.0
