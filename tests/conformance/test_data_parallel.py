"""Data-parallel rows on CPU (conformance.data_parallel): the reference, the rows of each framework, the bounds.

Each row starts WORLD = 2 worker processes (JAX: one process with 2 host devices) bounded by ``timeout_s``; only the
torch per-replica row of ResNet-18 runs in the fast tier.
"""

from __future__ import annotations

import math
import os
import subprocess

import numpy as np
import pytest

from attn_core.training import softmax_cross_entropy
from conformance import data_parallel as dp
from conformance.model_cases import CLASSES
from conformance.suite import Report

#: the bound of one framework's workers in these tests (a run takes 15 to 50 s on 2 busy cores)
TIMEOUT_S = 240.0


def test_the_rows_run_two_replicas_on_shards_of_eight():
    assert dp.WORLD == 2 and dp.GLOBAL_BATCH == 8 and dp.SHAPE == (8, 3, 32, 32)
    weights, x, labels = dp.dp_data("resnet18")
    assert x.shape == dp.SHAPE and labels.shape == (8,) and set(labels) <= set(range(CLASSES))
    assert len(set(labels.tolist())) > 1  # a loss on one class only would leave most logits' gradients equal


def test_softmax_cross_entropy_by_hand_and_by_finite_differences():
    # equal logits: the loss is log(classes), the gradient (1 / classes - onehot) / N
    loss, grad = softmax_cross_entropy(np.zeros((2, 4)), np.array([1, 3]))
    assert loss == pytest.approx(math.log(4), rel=1e-15)
    np.testing.assert_allclose(grad, np.array([[0.25, -0.75, 0.25, 0.25], [0.25, 0.25, 0.25, -0.75]]) / 2)
    rng = np.random.default_rng(0)
    logits, labels = rng.standard_normal((3, 5)) * 4, np.array([0, 4, 2])
    _, grad = softmax_cross_entropy(logits, labels)
    h, numeric = 1e-6, np.zeros_like(logits)
    for idx in np.ndindex(logits.shape):
        up, down = logits.copy(), logits.copy()
        up[idx] += h
        down[idx] -= h
        numeric[idx] = (softmax_cross_entropy(up, labels)[0] - softmax_cross_entropy(down, labels)[0]) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)
    # large logits do not overflow (the maximum is subtracted first)
    loss, _ = softmax_cross_entropy(np.array([[1000.0, 0.0]]), np.array([1]))
    assert loss == pytest.approx(1000.0)


def test_bad_names_are_errors_naming_the_known_ones():
    with pytest.raises(ValueError, match="unknown backend.*mxnet.*known: torch"):
        dp.run_data_parallel(["resnet18"], ["mxnet"])
    with pytest.raises(ValueError, match="unknown data-parallel variant.*ring.*per-replica-bn"):
        dp.run_data_parallel(["resnet18"], ["torch"], variants=("ring",))
    with pytest.raises(ValueError, match="resnet18"):  # the registry's error lists the known models
        dp.run_data_parallel(["resnet7"], ["torch"])


def test_a_timeout_kills_every_worker_and_is_an_error_row(monkeypatch):
    started: list[subprocess.Popen[bytes]] = []
    popen = subprocess.Popen

    def recording(*args, **kwargs):
        p = popen(*args, **kwargs)
        started.append(p)
        return p

    monkeypatch.setattr(dp.subprocess, "Popen", recording)
    monkeypatch.setattr(dp, "dp_reference", lambda model, variant: None)  # the reference is not what is tested
    rows = dp.run_data_parallel(["resnet18"], ["torch"], timeout_s=0.5)
    assert [r.status for r in rows] == ["error", "error"]
    assert all("did not finish within 0.5 s and were killed" in r.message for r in rows)
    assert len(started) == dp.WORLD
    for p in started:
        assert p.poll() is not None  # reaped
        with pytest.raises(ProcessLookupError):
            os.killpg(p.pid, 0)  # and nothing of its process group is left


def _as_results(ref: dp.DataParallelReference) -> dict[str, np.ndarray]:
    """What a correct port's workers return for ``ref``."""
    got = {f"grad:{k}": v.copy() for k, v in ref.grads.items()}
    for r, (loss, state) in enumerate(zip(ref.losses, ref.states, strict=True)):
        got[f"loss{r}"] = np.asarray(loss)
        got.update({f"state{r}:{k}": v.copy() for k, v in state.items()})
    return got


@pytest.mark.slow
def test_the_comparison_catches_unaveraged_gradients_and_the_wrong_statistics():
    per = dp.dp_reference("resnet18", dp.PER_REPLICA)
    sync = dp.dp_reference("resnet18", dp.SYNC)
    assert all(c.passed for c in dp._compare(_as_results(per), per))
    # summed instead of averaged over the replicas
    summed = {k: 2 * v if k.startswith("grad:") else v for k, v in _as_results(per).items()}
    assert not all(c.passed for c in dp._compare(summed, per))
    # synchronised statistics where each replica should keep its own, and the reverse
    assert not all(c.passed for c in dp._compare(_as_results(sync), per))
    assert not all(c.passed for c in dp._compare(_as_results(per), sync))
    # the replicas' shards differ, so do their statistics
    name = next(iter(per.states[0]))
    assert not np.allclose(per.states[0][name], per.states[1][name])


def _check(rows, expected: dict[str, str]) -> None:
    report = Report(rows)
    variants = {next(v for v in dp.VARIANTS if r.case.endswith(v)): r.status for r in rows}
    assert variants == expected, \
        report.failure_details() + "\n" + "\n".join(r.message for r in rows)
    for r in rows:
        assert r.dtype == "float64"
        if r.status == "pass":
            quantities = {c.quantity.split(":")[0] for c in r.comparisons}
            assert quantities == {"loss[0]", "loss[1]", "grad", "state[0]", "state[1]"}


# one model per framework beyond the fast row: each row spawns two processes, and CI's time is bounded
@pytest.mark.slow
@pytest.mark.parametrize("model", ["seresnet18"])
def test_torch_ddp_rows(model):
    rows = dp.run_data_parallel([model], ["torch"], TIMEOUT_S)
    _check(rows, {dp.PER_REPLICA: "pass", dp.SYNC: "n/a"})
    assert "SyncBatchNorm" in rows[1].message and "GPU" in rows[1].message


@pytest.mark.slow
@pytest.mark.parametrize("model", ["resnet18"])
def test_paddle_data_parallel_rows(model):
    rows = dp.run_data_parallel([model], ["paddle"], TIMEOUT_S)
    _check(rows, {dp.PER_REPLICA: "pass", dp.SYNC: "n/a"})
    assert "sync_batch_norm" in rows[1].message


@pytest.mark.slow
@pytest.mark.parametrize("model", ["seresnet18"])
def test_flax_pmap_rows_per_replica_and_synchronised(model):
    _check(dp.run_data_parallel([model], ["flax"], TIMEOUT_S), {dp.PER_REPLICA: "pass", dp.SYNC: "pass"})


def test_cli_refuses_unknown_models_and_other_dtypes(capsys):
    from conformance.__main__ import main

    for argv, why in ((["--data-parallel", "resnet7"], "unknown model 'resnet7'"),
                      (["--data-parallel", "--dtypes", "float32"], "float64 only")):
        with pytest.raises(SystemExit):
            main(argv)
        assert why in capsys.readouterr().err


# also ResNet-18's per-replica DDP row, which passes (each row spawns two torch processes)
@pytest.mark.slow
def test_cli_data_parallel_rows_and_json(tmp_path, capsys):
    import json

    from conformance.__main__ import main

    out = tmp_path / "dp.json"
    assert main(["--data-parallel", "resnet18", "--backends", "torch", "--json", str(out), "-q"]) == 0
    text = capsys.readouterr().out
    assert "1 passed, 0 failed, 0 skipped, 1 n/a" in text and "SyncBatchNorm" in text
    rows = json.loads(out.read_text())["rows"]
    assert [(r["backend"], r["dtype"], r["status"]) for r in rows] == [("torch", "float64", "pass"),
                                                                       ("torch", "float64", "n/a")]
