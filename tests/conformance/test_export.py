"""Export rows (issue 16): modules exported to each framework's deployment formats, run in the format's runtime
at another batch size than exported, against the float64 reference; the conversion command's .onnx target; the
refusals (training mode, an input size the model cannot take, an exporter not installed), which write nothing."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from attn_core.models import create_model_config
from conformance.cases import select_cases
from conformance.convert.__main__ import main as convert_main
from conformance.export import export_batch, export_cases, run_export
from conformance.exporters import ExportError, exporters
from conformance.model_cases import select_model_cases
from conformance.suite import Row

from .._fw import backend

KW = {"num_classes": 10}


def _case(module: str, case_id: str | None = None):
    cases = export_cases([module])
    return next(c for c in cases if case_id is None or c.case_id == case_id)


def _needs(*packages: str) -> None:
    for p in packages:
        if importlib.util.find_spec(p) is None:
            pytest.skip(f"{p} not installed: pip install 'attn-modules[export]'")


def _exporter(framework: str, name: str):
    return next(e for e in exporters(framework) if e.name == name)


# ---------------------------------------------------------------------------------------------- fast: errors
def test_export_batch_is_never_the_case_batch_nor_one():
    for n in (1, 2, 3, 6):
        assert export_batch(n) not in (n, 1)


def test_export_cases_are_the_eval_cases_only():
    cases = export_cases(["se"], ["resnet18"])
    assert cases and not any(c.training for c in cases)
    assert {c.module for c in cases} == {"se", "resnet18"}
    assert len(cases) == sum(not c.training for c in [*select_cases(["se"]), *select_model_cases(["resnet18"])])


def test_unknown_backend_or_path_is_a_value_error_naming_the_known():
    with pytest.raises(ValueError, match="known: torch"):
        run_export(["se"], backends=["tf"])
    with pytest.raises(ValueError, match="unknown export path.*torch.onnx"):
        run_export(["se"], backends=["torch"], paths=["tflite"])


def test_module_in_training_mode_is_refused_and_nothing_is_written(tmp_path):
    torch = pytest.importorskip("torch")
    case = _case("se")
    module = backend("torch").ATTN_LAYERS["se"].from_config(case.config())
    module.train()
    x = np.zeros((2, *case.shape[1:]), np.float32)
    with pytest.raises(ExportError, match=r"training mode; call \.eval\(\)"):
        _exporter("torch", "torch.onnx").export(module, None, x, tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert isinstance(module, torch.nn.Module) and module.training  # refused, not switched behind the user's back


def test_missing_exporter_is_an_na_row_naming_the_extra(monkeypatch):
    jax2onnx = _exporter("flax", "jax2onnx")
    monkeypatch.setattr(jax2onnx, "requires", ("jax2onnx_is_missing",))
    rows = run_export(backends=["flax"], paths=["jax2onnx"], cases=[_case("se")])
    assert [r.status for r in rows] == ["n/a"]
    assert "jax2onnx_is_missing not installed" in rows[0].message
    assert "pip install 'attn-modules[export]'" in rows[0].message


def test_paddle2onnx_rows_are_na_with_the_onnx_pin_as_reason():
    if importlib.util.find_spec("paddle2onnx") is not None and importlib.util.find_spec("onnx") is not None \
            and tuple(int(p) for p in importlib.metadata.version("onnx").split(".")[:2]) <= (1, 17):
        pytest.skip("paddle2onnx is installed beside an onnx inside its pin: its rows run")
    rows = run_export(backends=["paddle"], paths=["paddle2onnx"], cases=[_case("se")])
    assert [r.status for r in rows] == ["n/a"]
    assert "onnx<=1.17" in rows[0].message and "environment of its own" in rows[0].message


def test_one_op_spatial_conv_traces_one_convolution_with_the_same_numbers():
    jax = pytest.importorskip("jax")
    from backends.flax._ops import one_op_spatial_conv, spatial_conv

    rng = np.random.default_rng(0)
    z, kernel = rng.standard_normal((2, 6, 5, 2)), rng.standard_normal((7, 7, 2, 1))
    zp = np.pad(z, ((0, 0), (3, 3), (3, 3), (0, 0)))
    expected = sum(zp[:, i:i + 6, j:j + 5, :] @ kernel[i, j] for i in range(7) for j in range(7))  # float64
    z32, k32 = z.astype(np.float32), kernel.astype(np.float32)
    # a new function for each trace: JAX reuses the program it traced for the same function and shapes
    with one_op_spatial_conv():
        one = str(jax.make_jaxpr(lambda a, b: spatial_conv(a, b))(z32, k32))
        got = np.asarray(spatial_conv(z32, k32))
    unrolled = str(jax.make_jaxpr(lambda a, b: spatial_conv(a, b))(z32, k32))  # the switch holds inside only
    assert one.count("conv_general_dilated") == 1 and "conv_general_dilated" not in unrolled
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_paddle_jit_save_row_runs_at_another_batch_and_counts_ops():
    pytest.importorskip("paddle")
    case = _case("se", "c8-b1")  # batch 1, exported at batch 2
    [row] = run_export(backends=["paddle"], paths=["jit.save"], cases=[case])
    assert row.status == "pass", row.message
    assert "exported at batch 2, run at batch 1" in row.note
    assert row.ops["sigmoid"] == 1 and row.ops["data"] == 1  # SE's one gate, the one input


def test_paddle_relu_within_exportable_ops_keeps_nan_and_clamps_the_rest():
    paddle = pytest.importorskip("paddle")
    from backends.paddle._ops import ACTIVATIONS, exportable_ops

    x = paddle.to_tensor([np.nan, -np.inf, -2.0, -0.0, 0.5, 7.0, np.inf], dtype="float32")
    with exportable_ops():
        got = ACTIVATIONS["relu"](x).numpy()
    np.testing.assert_array_equal(got, [np.nan, 0.0, 0.0, 0.0, 0.5, 7.0, np.inf])  # max(x, 0), NaN kept (torch)


#: paddle2onnx 2.1 writes hardtanh as a clip to [-1, 1], aborts on a PyLayer, amax or channel_shuffle, writes
#: expand_as with the traced batch size and group_norm 0.3 off on one-value groups (docs/export.md)
_UNCONVERTED = {"hardtanh", "pylayer", "amax", "channel_shuffle", "expand_as", "group_norm"}


_SAVED_SLOW = pytest.mark.slow(reason="a jit.save and a Paddle Inference predictor for each of the module's cases")


@pytest.mark.parametrize("module", ["cbam", *(pytest.param(m, marks=_SAVED_SLOW)
                                              for m in ("lcbam", "triplet", "psa", "shuffle", "ela", "gam"))])
def test_paddle_saved_programs_hold_only_operators_a_converter_reads(module):
    pytest.importorskip("paddle")
    # each module's cases at another batch than the one exported, against the float64 reference
    cases = export_cases([module])
    if module == "gam":
        cases = [c for c in cases if c.config().shuffle_groups > 1]  # the grouped form shuffles its gate
    rows = run_export(backends=["paddle"], paths=["jit.save"], cases=cases)
    assert rows
    for row in rows:
        assert row.status == "pass", (row.case, row.message)
        assert not _UNCONVERTED & set(row.ops), (row.case, row.ops)


def test_paddle_saved_relu_is_a_select():
    pytest.importorskip("paddle")
    [row] = run_export(backends=["paddle"], paths=["jit.save"], cases=[_case("se", "c16-1x1")])
    assert row.status == "pass", row.message
    assert row.ops["where"] == 1 and "hardtanh" not in row.ops  # SE's one ReLU


def test_paddle2onnx_abort_is_that_rows_error_and_nothing_is_written(monkeypatch, tmp_path):
    pytest.importorskip("paddle")
    import subprocess
    import sys

    from conformance.exporters import _paddle

    real_run = subprocess.run
    abort = ("import os, sys; print('[ERROR][Paddle2ONNX] Due to the unsupported operators, the conversion is "
             "aborted.', file=sys.stderr, flush=True); os.abort()")
    calls = []

    def aborting_child(args, **kw):
        calls.append(args)
        Path(args[-2]).write_bytes(b"half an ONNX file")  # what an abort part-way through a write leaves
        return real_run([sys.executable, "-c", abort], **kw)

    monkeypatch.setattr(_exporter("paddle", "paddle2onnx"), "unavailable", lambda: None)
    monkeypatch.setattr(_paddle.subprocess, "run", aborting_child)
    rows = run_export(backends=["paddle"], paths=["paddle2onnx"], cases=[_case("se", "c16-1x1"), _case("eca")])
    assert len(calls) == 2 and calls[0][1:3] == ["-m", "conformance.exporters._paddle"]
    assert calls[0][-2].endswith("model.onnx") and calls[0][-1] == "18"
    assert [r.status for r in rows] == ["error", "error"]  # the run went on after the first abort
    assert "unsupported operators" in rows[0].message and "killed by signal 6" in rows[0].message

    case = _case("eca")
    module = backend("paddle").ATTN_LAYERS["eca"].from_config(case.config())
    module.eval()
    with pytest.raises(ExportError, match="paddle2onnx: .*unsupported operators.*signal 6"):
        _exporter("paddle", "paddle2onnx").export(module, None, np.zeros((2, *case.shape[1:]), np.float32), tmp_path)
    assert not (tmp_path / "model.onnx").exists()


def test_convert_from_onnx_is_refused(tmp_path, capsys):
    src = tmp_path / "model.onnx"
    src.write_bytes(b"not a checkpoint")
    assert convert_main([str(src), str(tmp_path / "out.pt"), "--model", "resnet18"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ONNX is a deployment target" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_convert_to_onnx_without_the_exporter_names_the_extra(tmp_path, capsys, monkeypatch):
    pytest.importorskip("torch")
    from attn_core.checkpoint import checkpoint_metadata, save_canonical

    config = create_model_config("resnet18", **KW)
    src = tmp_path / "r18.safetensors"
    save_canonical(src, config.init_weights(np.random.default_rng(0), np.float32),
                   checkpoint_metadata(config, "torch", "resnet18"))
    monkeypatch.setattr(_exporter("torch", "torch.onnx"), "requires", ("onnxscript_is_missing",))
    assert convert_main([str(src), str(tmp_path / "r18.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "onnxscript_is_missing not installed" in err and "attn-modules[export]" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r18.safetensors"]


def test_convert_to_onnx_at_a_size_towernet_cannot_take_is_refused(tmp_path, capsys):
    pytest.importorskip("torch")
    from attn_core.checkpoint import checkpoint_metadata, save_canonical

    config = create_model_config("towernet")
    src = tmp_path / "tower.safetensors"
    save_canonical(src, config.init_weights(np.random.default_rng(0), np.float32),
                   checkpoint_metadata(config, "torch", "towernet"))
    assert convert_main([str(src), str(tmp_path / "tower.onnx"), "--input-size", "100"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "TowerNet" in err and "100" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tower.safetensors"]


# ------------------------------------------------------------------------------------- slow: real exports
# one export run per path, shared by its tests (module-scoped fixtures): an exporter's first use in a process
# (torch's dynamo, jax2onnx's plugins) costs more than its rows
TORCH_CASES = {"se": "c8-b1", "cbam": "c8-default-k3"}
#: CBAM's 7 x 7 spatial attention (its one Conv in jax2onnx) and Gather-Excite's padded extent pools with max
JAX2ONNX_CASES = {"se": "c8-b1", "cbam": "c32-article", "ge": "c12-e4-max-silu"}


def _rows(framework: str, path: str, cases: dict[str, str]) -> dict[str, Row]:
    rows = run_export(backends=[framework], paths=[path], cases=[_case(m, c) for m, c in cases.items()])
    return {r.module: r for r in rows}


@pytest.fixture(scope="module")
def torch_onnx_rows() -> dict[str, Row]:
    pytest.importorskip("torch")
    _needs("onnx", "onnxscript", "onnxruntime")
    return _rows("torch", "torch.onnx", TORCH_CASES)


@pytest.fixture(scope="module")
def jax2onnx_rows() -> dict[str, Row]:
    pytest.importorskip("flax")
    _needs("jax2onnx", "onnx", "onnxruntime")
    return _rows("flax", "jax2onnx", JAX2ONNX_CASES)


@pytest.mark.slow(reason="torch's dynamo exporter and onnxruntime, two small modules in one run")
@pytest.mark.parametrize("module", list(TORCH_CASES))
def test_torch_onnx_rows_pass(torch_onnx_rows, module):
    row = torch_onnx_rows[module]
    assert row.status == "pass", row.message
    assert row.ops["Sigmoid"] >= 1 and row.comparisons[0].max_abs < 1e-5


@pytest.mark.slow(reason="one fresh process deserializes every program of the run")
def test_jax_export_rows_run_in_one_fresh_process():
    pytest.importorskip("flax")
    rows = run_export(backends=["flax"], paths=["jax.export"], cases=[_case("se", "c8-b1"), _case("eca", "c8-k3-b1")])
    assert [r.status for r in rows] == ["pass", "pass"], [r.message for r in rows]
    assert all(any(k.startswith("stablehlo.") for k in r.ops) for r in rows)


@pytest.mark.slow(reason="jax2onnx loads all its plugins on first use (seconds), then three small modules")
@pytest.mark.parametrize("module", list(JAX2ONNX_CASES))
def test_jax2onnx_rows_pass(jax2onnx_rows, module):
    row = jax2onnx_rows[module]
    assert row.status == "pass", row.message
    assert row.ops["Sigmoid"] >= 1 and row.comparisons[0].max_abs < 1e-5


@pytest.mark.slow(reason="shares the jax2onnx rows of test_jax2onnx_rows_pass")
def test_jax2onnx_exports_spatial_attention_as_one_convolution(jax2onnx_rows):
    # Flax's SpatialAttention is an unrolled sum of k * k * 2 terms, which jax2onnx converts in time quadratic in
    # the terms; the exporter traces it as one convolution, ONNX's Conv, with the same numbers
    ops = jax2onnx_rows["cbam"].ops
    assert ops["Conv"] == 5  # the channel MLP's two 1 x 1 convolutions on each pooled map, and the 7 x 7 one
    assert ops["Mul"] < 7 * 7 * 2 and "Slice" not in ops  # not the unrolled sum's shifted products


@pytest.mark.slow(reason="a whole network saved by Paddle's jit.save and run by a predictor, on a 32 x 32 input")
def test_model_row_passes():
    pytest.importorskip("paddle")
    [case] = [c for c in export_cases([], ["resnet18"]) if c.shape[2:] == (32, 32)]
    [row] = run_export(backends=["paddle"], paths=["jit.save"], cases=[case])
    assert row.status == "pass", row.message
    assert row.ops["conv2d"] == 20 and row.ops["batch_norm_"] == 20  # ResNet-18's 17 + 3 downsampling convs


@pytest.mark.slow(reason="a ResNet-18 exported by torch.onnx and run in onnxruntime")
def test_convert_torch_checkpoint_to_onnx_is_verified_and_written(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    _needs("onnx", "onnxscript", "onnxruntime")
    import onnxruntime as ort

    weights = create_model_config("resnet18", **KW).init_weights(np.random.default_rng(0), np.float32)
    model = backend("torch").load_weights(backend("torch").create_model("resnet18", **KW), weights)
    src, dst = tmp_path / "r18.pt", tmp_path / "r18.onnx"
    torch.save(model.state_dict(), src)
    assert convert_main([str(src), str(dst), "--model", "resnet18", "--model-kwargs", "num_classes=10",
                         "--input-size", "32"]) == 0
    assert "torch vs onnxruntime" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r18.onnx", "r18.pt"]  # no export folder left
    x = np.random.default_rng(5).standard_normal((1, 3, 32, 32)).astype(np.float32)  # another batch
    session = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    ref = create_model_config("resnet18", **KW).reference(
        {k: np.asarray(v, np.float64) for k, v in weights.items()}, x.astype(np.float64), training=False)
    assert np.allclose(got, ref, atol=1e-4 * np.abs(ref).max(), rtol=1e-4)
