"""Model conformance (conformance.model_cases): every registered model has eval and training cases in all three
backends, the suite passes ports that follow the specs and fails a broken one on the right quantity, and the k-step
running statistics of the reference are those of k steps worked out by hand."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from attn_core.models import MODEL_CONFIGS
from conformance.__main__ import main
from conformance.model_cases import MODEL_NAMES, TRAIN_STEPS, model_config, select_model_cases
from conformance.runners import get_runner
from conformance.suite import reference_state_for, run_case, run_suite, training_batches
from tests._fw import FRAMEWORKS, backend


def _case(name: str, training: bool) -> object:
    return next(c for c in select_model_cases([name]) if c.training == training)


# ------------------------------------------------------------------------------------------- the cases
def test_every_registered_model_has_an_eval_and_a_training_case():
    assert MODEL_NAMES == tuple(MODEL_CONFIGS)
    for name in MODEL_NAMES:
        cases = select_model_cases([name])
        assert any(not c.training for c in cases), name
        train = [c for c in cases if c.training]
        assert len(train) == 1 and train[0].steps == TRAIN_STEPS == 3, name


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_every_model_exists_in_every_backend(fw):
    assert sorted(backend(fw).MODELS) == sorted(MODEL_CONFIGS)


def test_unknown_model_is_an_error_listing_the_known():
    with pytest.raises(ValueError, match="unknown model.*resnet7.*known: resnet18"):
        select_model_cases(["resnet7"])


def test_model_case_data_has_a_cotangent_shaped_like_the_logits():
    case = _case("eca_mobilenetv2", training=False)
    weights, x, cotangent = case.data()
    assert x.shape == (2, 3, 32, 32) and cotangent.shape == (2, 10)
    assert case.config().reference(weights, x).shape == (2, 10)


# ---------------------------------------------------------------------------- k steps of the reference
def _im2col_conv(x: np.ndarray, w: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """A plain NCHW convolution by explicit patches (written here, independent of attn_core.ops)."""
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    out = np.zeros((n, o, ho, wo))
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, :, i * stride:i * stride + k, j * stride:j * stride + k]
            out[:, :, i, j] = np.einsum("nchw,ochw->no", patch, w)
    return out


def test_k_step_reference_is_k_steps_by_hand():
    """The stem BatchNorm of ResNet-18 after 3 steps, from batch statistics of a convolution done here:
    mean <- 0.9 mean + 0.1 batch mean, var <- 0.9 var + 0.1 unbiased batch var, three times, one batch each."""
    case = _case("resnet18", training=True)
    weights, x, _ = case.data()
    batches = training_batches(case, x)
    assert len(batches) == 3 and not np.array_equal(batches[0], batches[1])
    got = reference_state_for(case, weights, batches)

    mean, var = weights["bn1.running_mean"].copy(), weights["bn1.running_var"].copy()
    for batch in batches:
        y = _im2col_conv(batch, weights["conv1.weight"], 2, 3)
        mean = 0.9 * mean + 0.1 * y.mean(axis=(0, 2, 3))
        var = 0.9 * var + 0.1 * y.var(axis=(0, 2, 3), ddof=1)
    np.testing.assert_allclose(got["bn1.running_mean"], mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got["bn1.running_var"], var, rtol=1e-10, atol=1e-12)

    # every statistic: k applications of reference_state, each on the state the step before left
    state = dict(weights)
    for batch in batches:
        state.update(case.config().reference_state(state, batch))
    assert sorted(got) == sorted(p.name for p in case.config().param_table() if not p.trainable)
    for name, value in got.items():
        np.testing.assert_array_equal(value, state[name], err_msg=name)
        assert not np.allclose(value, weights[name]), f"{name} did not move"


# ------------------------------------------------------------------------------------- the suite passes
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_eca_mobilenetv2_passes_in_float64_with_every_gradient_and_statistic(fw):
    """Eval and training (3 steps) of one model: the output, the gradient of the input and of every parameter, and
    in training every running statistic, all compared and all within tolerance."""
    backend(fw)
    cases = [_case("eca_mobilenetv2", training=False), _case("eca_mobilenetv2", training=True)]
    runner = get_runner(fw)
    config = model_config("eca_mobilenetv2")
    stats = {f"state:{p.name}" for p in config.param_table() if not p.trainable}
    grads = {"grad:input"} | {f"grad:{p.name}" for p in config.param_table() if p.trainable}
    for case in cases:
        row = run_case(case, runner, "float64", mode=runner.default_mode)
        assert row.status == "pass", (row.message, [c for c in row.comparisons if not c.passed][:3])
        want = {"output"} | grads | (stats if case.training else set())
        assert {c.quantity for c in row.comparisons} == want


def test_float32_model_rows_compare_outputs_and_statistics_not_gradients():
    backend("paddle")
    report = run_suite(["paddle"], modules=[], models=["eca_mobilenetv2"])
    assert len(report.rows) == len(select_model_cases(["eca_mobilenetv2"])) == 3
    assert not report.failed, report.failure_details()
    for row in report.rows:
        assert "gradients not compared in float32" in row.note
        assert not any(c.quantity.startswith("grad:") for c in row.comparisons)
    train = next(r for r in report.rows if r.case.endswith("-train"))
    assert sum(c.quantity.startswith("state:") for c in train.comparisons) == 104  # 52 BatchNorms


# ------------------------------------------------------------------------------------ broken ports fail
def _broken_torch(monkeypatch: pytest.MonkeyPatch, break_it) -> None:
    models = pytest.importorskip("backends.torch.models")
    build = models.model_from_config

    def broken(config):
        module = build(config)
        break_it(module)
        return module

    monkeypatch.setattr(models, "model_from_config", broken)


def test_one_batchnorm_with_another_momentum_fails_its_running_statistics(monkeypatch):
    _broken_torch(monkeypatch, lambda m: setattr(m.layer2[0].bn2, "momentum", 0.2))
    row = run_case(_case("resnet18", training=True), get_runner("torch"), "float32")
    failed = sorted(c.quantity for c in row.comparisons if not c.passed)
    assert row.status == "fail"
    assert failed == ["state:layer2.0.bn2.running_mean", "state:layer2.0.bn2.running_var"]


def test_a_runner_that_keeps_the_first_step_only_fails_the_running_statistics(monkeypatch):
    """Three steps are compared, not one: a state left after step 1 is off."""
    runner = get_runner("torch")
    backend("torch")
    run = type(runner).run

    def first_step_only(self, *args, more_batches=(), **kwargs):
        return run(self, *args, **kwargs)

    monkeypatch.setattr(type(runner), "run", first_step_only)
    row = run_case(_case("eca_mobilenetv2", training=True), runner, "float32")
    assert row.status == "fail"
    assert all(c.quantity.startswith("state:") for c in row.comparisons if not c.passed)
    assert any(c.quantity.endswith("running_var") and not c.passed for c in row.comparisons)


def test_a_transposed_classifier_weight_fails_output_and_its_gradient(monkeypatch):
    """A square head (10 features -> 10 classes) whose weight is used transposed: same shapes, other numbers."""
    torch = pytest.importorskip("torch")

    class TransposedLinear(torch.nn.Linear):
        def forward(self, x):
            return torch.nn.functional.linear(x, self.weight.t(), self.bias)

    def square_head(m):
        old = m.classifier
        m.classifier = TransposedLinear(old.in_features, old.out_features)

    case = _case("sedensenet_bc40_k12", training=False)
    config = dataclasses.replace(case.config(), num_classes=case.config().num_features)
    case = dataclasses.replace(case, spec=config)
    _broken_torch(monkeypatch, square_head)
    row = run_case(case, get_runner("torch"), "float64")  # model gradients are compared in float64
    failed = {c.quantity for c in row.comparisons if not c.passed}
    assert {"output", "grad:classifier.weight"} <= failed
    assert "grad:classifier.bias" not in failed


# ----------------------------------------------------------------------------------------------- CLI
def test_cli_models_only(capsys):
    backend("torch")
    code = main(["--models", "eca_mobilenetv2", "--modules", "none", "--backends", "torch"])
    out, err = capsys.readouterr()
    assert code == 0, out
    assert "eca_mobilenetv2" in out and "n2-40x40-train" in out
    assert "[3/3] PASS  eca_mobilenetv2/n2-40x40-train [torch, float32, eager]" in err
    assert out.strip().splitlines()[-1] == "3 passed, 0 failed, 0 skipped"
    assert not any(line.startswith(("se ", "cbam ")) for line in out.splitlines())


def test_cli_rejects_an_unknown_model_and_an_empty_selection(capsys):
    with pytest.raises(SystemExit):
        main(["--models", "resnet7"])
    assert "unknown model 'resnet7'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--modules", "none"])
    assert "nothing to run" in capsys.readouterr().err
