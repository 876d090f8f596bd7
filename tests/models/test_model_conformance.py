"""Model conformance (conformance.model_cases): every registered model has eval and training cases in all three
backends, the suite passes ports that follow the specs and fails a broken one on the right quantity, and the k-step
running statistics of the reference are those of k steps worked out by hand.

The models' numbers are tested here and only here: a slice of the model cases in float64, through the suite's
``run_case`` and its tolerance table, in every backend (the model test files test structure and API)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from attn_core.frameworks import FRAMEWORK_INFO
from attn_core.models import MODEL_CONFIGS
from conformance.__main__ import main
from conformance.model_cases import MODEL_NAMES, TRAIN_STEPS, ModelCase, select_model_cases
from conformance.runners import get_runner
from conformance.suite import reference_for, reference_state_for, run_case, run_suite, training_batches
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


# --------------------------------------------------------------------------- float64 numerics, in tiers
def _model_case(name: str, case_id: str) -> ModelCase:
    return next(c for c in select_model_cases([name]) if c.case_id == case_id)


_TRAIN = "n2-40x40-train"
_CBAM_TRAIN = _model_case("cbamresnet18", _TRAIN)
_MOBILE_TRAIN = _model_case("eca_mobilenetv2", _TRAIN)


def _tiny_densenet(name: str, shape: tuple[int, int, int, int], training: bool, **changes: object) -> ModelCase:
    """SE-DenseNet's layers at a tiny growth and depth (the registered ones compile for minutes in Flax): the model
    case of ``name`` (its stem) on ``shape``."""
    base = next(c for c in select_model_cases([name]) if c.training == training)
    spec = base.config().replace(growth_rate=4, block_config=(2, 2) if base.config().small_inputs else (2, 1),
                                 num_init_features=8, **changes)
    size = f"n{shape[0]}-{shape[2]}x{shape[3]}-tiny" + ("-train" if training else "")
    return dataclasses.replace(base, case_id=size, shape=shape, spec=spec)


#: a slice of the model cases, one per kind of layer and mode, and the frameworks each runs on; `python -m
#: conformance --models --dtypes float64` runs every registered model's cases. Flax compiles a whole network per row,
#: so its plain ResNet-18 rows and CBAM's evaluation row are left to SE-ResNet-18 in training, the CBAM row at batch
#: 1, SE-ResNet-50's evaluation row and the module case cbam/c24-timm-eval (tests/conformance/test_conformance.py),
#: which run the same blocks and BatchNorm modes; ECA's and SimAM's ResNet-18 train in Flax against the float64
#: trajectory in tests/conformance/test_training_suite.py, and their modules' gradients are the suite's rows
NUMERICS: tuple[tuple[ModelCase, tuple[str, ...]], ...] = (
    (_model_case("resnet18", "n2-33x29"), ("torch", "paddle")),
    (_model_case("resnet18", _TRAIN), ("torch", "paddle")),
    (_model_case("seresnet18", _TRAIN), FRAMEWORKS),
    *((_model_case(f"{a}resnet18", _TRAIN), ("torch", "paddle")) for a in ("eca", "simam")),
    # timm's CbamModule: BatchNorm on running statistics
    (_model_case("cbamresnet18", "n2-33x29"), ("torch", "paddle")),
    (_CBAM_TRAIN, ("torch", "paddle")),
    # batch 1: under jax.jit, CBAM's max once lost its gradient where XLA recomputed its operand (jax-ml/jax 3602)
    (dataclasses.replace(_CBAM_TRAIN, case_id=f"{_TRAIN}-b1", shape=(1, 3, 33, 47)), ("flax",)),
    (_model_case("seresnet50", "n2-33x29"), FRAMEWORKS),
    (_tiny_densenet("sedensenet_bc40_k12", (2, 3, 9, 7), False), FRAMEWORKS),
    (_tiny_densenet("sedensenet_bc40_k12", (2, 3, 9, 7), True), FRAMEWORKS),
    # the efficient mode (checkpointed bottlenecks) is the same model: the same case, data and reference
    (_tiny_densenet("sedensenet_bc40_k12", (2, 3, 9, 7), True, efficient=True), FRAMEWORKS),
    (_tiny_densenet("sedensenet121", (1, 3, 21, 19), True), FRAMEWORKS),  # the ImageNet stem and its max pooling
    (_model_case("eca_mobilenetv2", "n2-33x29"), FRAMEWORKS),
    (_MOBILE_TRAIN, FRAMEWORKS),
    # 1x1 maps: the last BatchNorms train on 2 values, where Paddle's float32 epsilon attribute once showed
    (dataclasses.replace(_MOBILE_TRAIN, case_id="n2-32x32-train", shape=(2, 3, 32, 32)), ("torch", "paddle")),
    (_model_case("towernet", "n2-255x255"), FRAMEWORKS),
)
#: the cases of the fast tier (``-m "not slow"``) in a framework whose default mode runs eagerly (torch, Paddle):
#: one ResNet with attention and the tiny DenseNets; the other full-size networks are slow, and so is a row in a
#: framework whose default mode compiles (jax.jit in Flax), which compiles a whole network
FAST: frozenset[str] = frozenset({"cbamresnet18/n2-40x40-train", "sedensenet_bc40_k12/n2-9x7-tiny-train",
                                  "sedensenet121/n1-21x19-tiny-train"})


def _label(case: ModelCase) -> str:
    return case.name + ("-efficient" if getattr(case.config(), "efficient", False) else "")


def _numerics_params() -> list[object]:
    out = []
    for case, fws in NUMERICS:
        for fw in fws:
            slow = FRAMEWORK_INFO[fw].default_mode == "compiled" or case.name not in FAST
            out.append(pytest.param(case, fw, id=f"{_label(case)}-{fw}", marks=[pytest.mark.slow] if slow else []))
    return out


_REFERENCES: dict[str, tuple[tuple, dict[str, np.ndarray] | None]] = {}


def _reference(case: ModelCase) -> tuple[tuple, dict[str, np.ndarray] | None]:
    """The float64 reference of a case and, in training, its running statistics after every step: computed once
    per case name for every framework and execution mode."""
    if case.name not in _REFERENCES:
        reference = reference_for(case, True, "float64")
        state = None
        if case.training:
            state = reference_state_for(case, reference[0], training_batches(case, reference[1]))
        _REFERENCES[case.name] = reference, state
    return _REFERENCES[case.name]


@pytest.mark.parametrize("case,fw", _numerics_params())
def test_float64_model_rows_pass_with_every_gradient_and_statistic(case, fw):
    """The float64 row of the suite, in the framework's default mode: the output, the gradient of the input and of
    every trainable parameter, and in training every running statistic after the case's steps, each compared with
    the reference within the suite's float64 tolerance (conformance.tolerances)."""
    backend(fw)
    runner = get_runner(fw)
    reference, state = _reference(case)
    row = run_case(case, runner, "float64", reference=reference, mode=runner.default_mode, state_reference=state)
    failures = [f"{c.quantity}: {c.worst_ratio:.3g}x tolerance, {c.detail}" for c in row.comparisons if not c.passed]
    assert row.status == "pass", row.message + "\n" + "\n".join(failures[:5])
    table = case.config().param_table()
    want = {"output", "grad:input"} | {f"grad:{p.name}" for p in table if p.trainable}
    if case.training:
        want |= {f"state:{p.name}" for p in table if not p.trainable}
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
    execute = type(runner).execute

    def first_step_only(self, handle, weights, x, cotangent=None, dtype="float32", training=False, mode="eager",
                        more_batches=()):
        return execute(self, handle, weights, x, cotangent, dtype, training, mode)

    monkeypatch.setattr(type(runner), "execute", first_step_only)
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
@pytest.mark.slow  # a whole network's cases
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
