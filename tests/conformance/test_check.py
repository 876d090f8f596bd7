"""``conformance.check``: the public API for checking a module the project did not write.

- the cases of one spec (``cases_for``): the spec's channel count, the inputs varied, training only with BatchNorm;
- the project's own modules pass in every framework, the framework is inferred from the module without importing
  the others, and the user's module is left as it was;
- the report: a table, JSON, ``passed``, and for a failure the case, the quantity (canonical names), max abs,
  max rel, times the tolerance and the worst index;
- the diagnosis: the first tap, output, input gradient or parameter gradient that differs, with taps compared by
  shape (a map, or the input times the map), through torch hooks, Paddle post-hooks and Flax interception;
- user errors (a name instead of a spec, unknown dtype, mode, tap or submodule, a wrong map) raise before running.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import conformance
from attn_core import (
    CBAM_PRESETS,
    CBAMConfig,
    ECAConfig,
    SEConfig,
    SimAMConfig,
    SpatialAttentionConfig,
    WeightLoadError,
)
from attn_core.frameworks import FRAMEWORK_INFO
from conformance import CheckReport, cases_for, check, spec_for
from conformance.check import TAP_MEANINGS, default_taps, infer_framework, reference_taps
from conformance.runners import ParamMapError

from .._fw import FRAMEWORKS, backend

ROOT = Path(__file__).resolve().parents[2]
SE_MAP = {"fc1.weight": ("fc.0.weight", "conv1x1_to_linear"), "fc2.weight": ("fc.2.weight", "conv1x1_to_linear")}
ARTICLE_SE = SEConfig(32, rd_divisor=None, bias=False)  # hidden exactly 32 // 16 = 2


def _seed_se(channel: int, reduction: int = 16, *, detach_squeeze: bool = False, frozen_fc1: bool = False) -> Any:
    """Seed 002's SELayer (benchmarks/peers/seed_torch.py: Linear without bias, keys fc.0 / fc.2), optionally with a
    backward-only bug in its forward."""
    import torch.nn.functional as F

    from benchmarks.peers.seed_torch import SELayer

    class Broken(SELayer):
        def forward(self, x: Any) -> Any:
            b, c, _, _ = x.size()
            y = self.avg_pool(x.detach() if detach_squeeze else x).view(b, c)
            if frozen_fc1:
                y = self.fc[3](self.fc[2](self.fc[1](F.linear(y, self.fc[0].weight.detach()))))
            else:
                y = self.fc(y)
            return x * y.view(b, c, 1, 1).expand_as(x)

    return (Broken if detach_squeeze or frozen_fc1 else SELayer)(channel, reduction)


# ------------------------------------------------------------------------------------------------ cases
def test_cases_for_a_spec_vary_the_input_and_keep_the_spec():
    spec = SEConfig(48, rd_divisor=None, bias=False)
    cases = cases_for(spec)
    assert [(c.case_id, c.shape, c.training) for c in cases] == [
        ("n2-7x5", (2, 48, 7, 5), False), ("n1-5x8", (1, 48, 5, 8), False), ("n2-1x1", (2, 48, 1, 1), False)]
    assert all(c.config() is spec and c.module == "se" for c in cases)
    # the same seed for the same case name: every framework gets the same canonical weights and input
    w1, x1, _ = cases[0].data()
    w2, x2, _ = cases_for(SEConfig(48, rd_divisor=None, bias=False))[0].data()
    assert all(np.array_equal(w1[k], w2[k]) for k in w1) and np.array_equal(x1, x2)


def test_cases_for_batch_norm_add_a_training_case_and_any_channel_modules_get_six():
    bn = cases_for(CBAMConfig(24, **CBAM_PRESETS["timm"]))
    assert [c.case_id for c in bn] == ["n2-7x5", "n1-5x8", "n2-1x1", "n3-6x5-train"]
    assert [c.training for c in bn] == [False, False, False, True]
    assert [c.case_id for c in cases_for(CBAMConfig(24, **CBAM_PRESETS["article"]))][-1] == "n2-1x1"
    assert {c.shape[1] for c in cases_for(SimAMConfig())} == {6}
    assert {c.shape[1] for c in cases_for(SpatialAttentionConfig(norm=True))} == {6}
    with pytest.raises(TypeError, match="expected an attn_core config"):
        cases_for("se")  # type: ignore[arg-type]


def test_spec_for_is_the_registry_config():
    assert spec_for("se", 64, rd_divisor=None, bias=False) == SEConfig(64, rd_divisor=None, bias=False)
    assert spec_for("cbam", 32, **CBAM_PRESETS["article"]) == CBAMConfig(32, **CBAM_PRESETS["article"])
    assert spec_for("simam") == SimAMConfig()


# ---------------------------------------------------------------------------------------- project modules
# a framework whose default mode compiles (jax.jit in Flax) compiles a program per row and diagnoses each: the slow tier
@pytest.mark.parametrize("framework", [pytest.param(f, marks=[pytest.mark.slow]
                                                    if FRAMEWORK_INFO[f].default_mode == "compiled" else [])
                                       for f in FRAMEWORKS])
def test_project_modules_pass_with_the_framework_inferred(framework):
    bk = backend(framework)
    spec = CBAMConfig(24, **CBAM_PRESETS["timm"])
    # Flax's float64 programs would double its minute; its float64 CBAM is the suite's (tests/conformance/
    # test_conformance.py)
    dtypes = ("float32",) if framework == "flax" else ("float32", "float64")
    report = check(bk.CBAM(24, **CBAM_PRESETS["timm"]), spec, dtypes=dtypes)
    assert isinstance(report, CheckReport) and report.framework == framework
    assert report.passed, str(report)
    assert [(r.case, r.dtype) for r in report.rows] == [(c, d) for c in ("n2-7x5", "n1-5x8", "n2-1x1", "n3-6x5-train")
                                                        for d in dtypes]
    assert report.taps == {"channel_gate": "channel", "spatial_gate": "spatial"}  # the project's default taps
    assert report.diagnoses == [] and report.first_difference is None


def test_a_gradient_is_judged_on_its_layers_scale():
    from conformance.suite import layer_gradient_scales

    grads = {"p.weight": np.array([[0.5, -2.0]]), "p.bias": np.zeros(1), "q.weight": np.array([3e-3])}
    assert layer_gradient_scales(grads) == {"p.weight": 2.0, "p.bias": 2.0, "q.weight": 3e-3}


# float32 rounding of gradients that cancel exactly (NonLocal's key bias under the softmax over keys) or sit in front
# of a training BatchNorm over three samples (SK's reduction) failed these correct ports at 1.5x to 5.7x the
# elementwise tolerance before gradients were judged on their layer's scale
@pytest.mark.parametrize("key, kwargs", [("nl", {"use_scale": False}), ("sk", {})])
def test_correct_ports_with_cancelling_gradients_pass_in_float32(key, kwargs):
    bk = backend("torch")
    module = bk.create_attn(key, 16, **kwargs)
    report = check(module, module.config)
    assert report.passed, str(report)

@pytest.mark.slow  # a subprocess run
def test_framework_is_inferred_without_importing_the_others():
    code = ("import sys, torch\n"
            "from conformance import check\n"
            "from conformance.check import infer_framework\n"
            "from backends.torch import SimAM\n"
            "from attn_core import SimAMConfig\n"
            "assert infer_framework(SimAM()) == 'torch'\n"
            "assert check(SimAM(), SimAMConfig()).passed\n"
            "print(sorted(m for m in ('paddle', 'jax', 'flax') if m in sys.modules))\n")
    backend("torch")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_infer_framework_refuses_what_is_not_a_module():
    with pytest.raises(TypeError, match="cannot tell the framework of a builtins.object"):
        infer_framework(object())
    with pytest.raises(TypeError, match="cannot tell the framework"):
        check(object(), SimAMConfig())


def test_default_taps_only_for_the_project_cbam():
    bt = backend("torch")
    assert default_taps(bt.CBAM(16), "torch") == {"channel_gate": "channel", "spatial_gate": "spatial"}
    assert default_taps(bt.SEModule(16), "torch") == {}
    assert default_taps(_seed_se(32), "torch") == {}


# --------------------------------------------------------------------------------------------- wrapped
def test_seed_se_passes_and_is_left_unmodified():
    backend("torch")
    module = _seed_se(32)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    report = check(module, ARTICLE_SE, param_map=SE_MAP, taps={"gate": "fc"}, modes=("eager", "compiled"))
    assert report.passed, str(report)
    assert [(r.case, r.mode) for r in report.rows] == [(c, m) for c in ("n2-7x5", "n1-5x8", "n2-1x1")
                                                       for m in ("eager", "torch.compile")]
    assert report.bindings == [("fc1.weight", "fc.0.weight", "conv1x1_to_linear"),
                               ("fc2.weight", "fc.2.weight", "conv1x1_to_linear")]
    assert all((module.state_dict()[k] == v).all() for k, v in before.items())
    assert not any(m._forward_hooks for m in module.modules()), "check left a hook on the user's module"


def test_report_table_and_json():
    backend("torch")
    report = check(_seed_se(32), ARTICLE_SE, param_map=SE_MAP)
    text = str(report)
    assert text == report.table()
    assert text.splitlines()[0].startswith("conformance.check: SELayer (torch) against SEConfig(channels=32")
    assert "fc1.weight -> fc.0.weight (conv1x1_to_linear)" in text and "taps: none" in text
    assert "(2, 32, 7, 5)" in text and "x tol" in text and text.rstrip().endswith("3 passed, 0 failed, 0 skipped")
    data = json.loads(report.to_json())
    assert data["passed"] is True and data["framework"] == "torch" and data["spec"]["name"] == "se"
    assert data["spec"]["fields"]["rd_divisor"] is None and data["spec"]["fields"]["channels"] == 32
    assert [c["case"] for c in data["cases"]] == ["n2-7x5", "n1-5x8", "n2-1x1"]
    assert data["parameters"][0] == {"canonical": "fc1.weight", "native": "fc.0.weight",
                                     "transform": "conv1x1_to_linear"}
    assert len(data["report"]["rows"]) == 3 and data["diagnoses"] == []
    assert report.to_dict()["report"]["summary"]["passed"] == 3


def test_a_failing_report_says_case_quantity_and_how_much():
    """A seed SE whose hidden layer is the wrong width for the spec cannot even be wrapped; one whose weights are
    mapped the wrong way round (fc1 <-> fc2 on a square MLP) runs and fails on named quantities."""
    backend("torch")
    swapped = {"fc1.weight": ("fc.2.weight", "conv1x1_to_linear"), "fc2.weight": ("fc.0.weight", "conv1x1_to_linear")}
    report = check(_seed_se(16, reduction=1), SEConfig(16, rd_channels=16, rd_divisor=None, bias=False),
                   param_map=swapped, taps={"gate": "fc"})
    assert not report.passed and {r.status for r in report.rows} == {"fail"}
    assert {"output", "grad:input", "grad:fc1.weight", "grad:fc2.weight"} <= report.failing_quantities("n2-7x5")
    text = str(report)
    assert "FAIL se/n2-7x5 [torch, float32, eager]" in text
    assert "grad:fc1.weight: max_abs" in text and "x tolerance. worst at index (" in text
    d = report.diagnosis("n2-7x5")
    assert d is not None and d.stage == "gate" and d.quantity == "tap:gate" and not d.forward_equal
    assert d.comparison.worst_ratio > 1 and "compared as the map (2, 16, 1, 1), reshaped from (2, 16)" in d.text
    data = json.loads(report.to_json())
    assert data["passed"] is False and data["diagnoses"][0]["stage"] == "gate"
    assert data["diagnoses"][0]["comparison"]["quantity"] == "tap:gate"


# -------------------------------------------------------------------------------------------- diagnosis
def test_input_gradient_only():
    """``avg_pool(x.detach())``: the forward pass and every parameter gradient are right, the input gradient
    misses the path through the squeeze."""
    backend("torch")
    report = check(_seed_se(32, detach_squeeze=True), ARTICLE_SE, param_map=SE_MAP, taps={"gate": "fc"})
    assert not report.passed
    assert report.failing_quantities() == {"grad:input"}
    d = report.first_difference
    assert d.stage == "input gradient" and d.quantity == "grad:input" and d.forward_equal
    assert d.text.startswith("the forward pass is equal (output and taps); the first difference is in the input "
                             "gradient only (every parameter gradient agrees)")
    assert [c.quantity for c in d.taps] == ["tap:gate"] and d.taps[0].passed


def test_parameter_gradient_only():
    """A weight used through ``.detach()`` (frozen by mistake): forward and input gradient right, its gradient 0."""
    backend("torch")
    report = check(_seed_se(32, frozen_fc1=True), ARTICLE_SE, param_map=SE_MAP)
    assert report.failing_quantities() == {"grad:fc1.weight"}
    d = report.first_difference
    assert d.stage == "parameter gradient" and d.quantity == "grad:fc1.weight"
    assert "the forward pass and the input gradient are equal" in d.text


def test_output_without_taps_suggests_them():
    backend("torch")
    module = _seed_se(16, reduction=1)
    swapped = {"fc1.weight": ("fc.2.weight", "conv1x1_to_linear"), "fc2.weight": ("fc.0.weight", "conv1x1_to_linear")}
    report = check(module, SEConfig(16, rd_channels=16, rd_divisor=None, bias=False), param_map=swapped, taps={})
    d = report.first_difference
    assert d.stage == "output" and "no taps given" in d.text and "gate" in d.text


def test_project_cbam_default_taps_compare_the_gated_outputs(monkeypatch):
    """The project's CBAM submodules return x * map (not the map): the default taps are compared with
    'channel_out' and the output, by shape, and still say which map differs."""
    bt = backend("torch")
    from backends.torch import ChannelAttention

    def avg_avg(self, x):
        avg = self.fc2(self._act(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * self._gate(avg + avg)

    monkeypatch.setattr(ChannelAttention, "forward", avg_avg)
    report = check(bt.CBAM(32, **CBAM_PRESETS["article"]), CBAMConfig(32, **CBAM_PRESETS["article"]))
    d = report.first_difference
    assert d.stage == "channel map" and d.quantity == "tap:channel_gate"
    assert "from submodule 'channel', compared as x * map, i.e. 'channel_out' (2, 32, 7, 5)" in d.comparison.detail
    assert [c.quantity for c in d.taps] == ["tap:channel_gate", "tap:spatial_gate"]


def _flax_cbam(bug: str | None) -> Any:
    """A Flax CBAM written by hand, NHWC, whose submodules 'ca' and 'sa' return the maps (N,1,1,C) and (N,H,W,1)."""
    import flax.linen as fnn
    import jax.numpy as jnp

    class ChannelGate(fnn.Module):
        channels: int
        hidden: int

        @fnn.compact
        def __call__(self, x):
            fc1 = fnn.Conv(self.hidden, (1, 1), use_bias=False, name="fc1")
            fc2 = fnn.Conv(self.channels, (1, 1), use_bias=False, name="fc2")
            avg = fc2(fnn.relu(fc1(jnp.mean(x, axis=(1, 2), keepdims=True))))
            mx = fc2(fnn.relu(fc1(jnp.max(x, axis=(1, 2), keepdims=True))))
            return fnn.sigmoid(avg + mx)

    class SpatialGate(fnn.Module):
        @fnn.compact
        def __call__(self, x):
            pooled = jnp.concatenate([x.mean(-1, keepdims=True), x.max(-1, keepdims=True)], -1)
            z = fnn.Conv(1, (7, 7), padding=((3, 3), (3, 3)), use_bias=False, name="conv")(pooled)
            return z if bug == "no_sigmoid" else fnn.sigmoid(z)

    class HandCBAM(fnn.Module):
        channels: int

        def setup(self) -> None:
            self.ca = ChannelGate(self.channels, self.channels // 16)
            self.sa = SpatialGate()

        def __call__(self, x):
            out = x * self.ca(x)
            return out * self.sa(out)

    return HandCBAM(32)


FLAX_CBAM_MAP = {"channel.fc1.weight": "params/ca/fc1/kernel", "channel.fc2.weight": "params/ca/fc2/kernel",
                 "spatial.conv.weight": "params/sa/conv/kernel"}


# the passing module runs every case (slow); the broken one stops at its first difference
@pytest.mark.parametrize("bug", [pytest.param(None, marks=pytest.mark.slow), "no_sigmoid"])
def test_flax_taps_are_intercepted_and_transposed(bug):
    backend("flax")
    report = check(_flax_cbam(bug), CBAMConfig(32, **CBAM_PRESETS["article"]), param_map=FLAX_CBAM_MAP,
                   taps={"channel_gate": "ca", "spatial_gate": "sa"})
    if bug is None:
        assert report.passed, str(report)
        return
    d = report.first_difference
    assert d.stage == "spatial map" and [c.passed for c in d.taps] == [True, False]
    assert "compared as the map (2, 32, 1, 1)" in d.taps[0].detail  # (N, 1, 1, C) transposed to NCHW
    assert "compared as the map (2, 1, 7, 5)" in d.taps[1].detail
    assert "before it, the channel map agrees" in d.text


def test_flax_tap_naming_no_submodule_is_reported():
    backend("flax")
    report = check(_flax_cbam("no_sigmoid"), CBAMConfig(32, **CBAM_PRESETS["article"]), param_map=FLAX_CBAM_MAP,
                   taps={"channel_gate": "ca", "spatial_gate": "spatial"})
    d = report.first_difference
    assert d.stage == "output"
    assert any("no submodule 'spatial' was called (called: ca/fc1, ca/fc2, ca, sa/conv, sa)" in p
               for p in d.tap_problems)


def test_paddle_taps_through_post_hooks():
    backend("paddle")
    from paddle import nn

    class PaddleECA(nn.Layer):
        """ECANet's eca_layer in Paddle, with the sigmoid dropped by mistake."""

        def __init__(self, k_size: int = 3) -> None:
            super().__init__()
            self.conv = nn.Conv1D(1, 1, k_size, padding=(k_size - 1) // 2, bias_attr=False)
            self.gate = nn.Identity()

        def forward(self, x):
            y = x.mean(axis=[2, 3]).unsqueeze(1)          # (N, 1, C)
            return x * self.gate(self.conv(y)).transpose([0, 2, 1]).unsqueeze(-1)

    report = check(PaddleECA(), ECAConfig(16), taps={"gate": "gate"})
    d = report.first_difference
    assert d.stage == "gate" and "reshaped from (2, 1, 16)" in d.comparison.detail


def test_tap_whose_shape_fits_nothing_is_reported_not_compared():
    backend("torch")
    report = check(_seed_se(16, reduction=1), SEConfig(16, rd_channels=16, rd_divisor=None, bias=False),
                   param_map={"fc1.weight": ("fc.2.weight", "conv1x1_to_linear"),
                              "fc2.weight": ("fc.0.weight", "conv1x1_to_linear")},
                   taps={"gate": "avg_pool"})
    d = report.first_difference
    # AdaptiveAvgPool2d returns (N, C, 1, 1): the gate's shape, so it is compared (and differs); a 2-D pooled
    # map of another width would not be
    assert d.quantity == "tap:gate"
    report = check(_seed_se(32), ARTICLE_SE, param_map={"fc1.weight": ("fc.2.weight", (
        lambda w: w[:, :, 0, 0].T, lambda w: w.T[:, :, None, None])), "fc2.weight": ("fc.0.weight", (
            lambda w: w[:, :, 0, 0].T, lambda w: w.T[:, :, None, None]))}, taps={"gate": "fc.0"})
    d = report.first_difference
    assert d.stage == "output"
    assert d.tap_problems == ["gate <- 'fc.0': its output's shape (2, 2) (NCHW) fits neither the map (2, 32, 1, 1) "
                              "nor x * map (2, 32, 7, 5)"]


# ------------------------------------------------------------------------------------------ user errors
def test_user_errors_raise_before_running():
    bt = backend("torch")
    with pytest.raises(TypeError, match=r"spec must be an attn_core config .* conformance.spec_for"):
        check(bt.SEModule(16), "se")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown dtype 'float8'"):
        check(bt.SEModule(16), SEConfig(16), dtypes=("float8",))
    with pytest.raises(ValueError, match="unknown mode 'jit' for torch; known: eager, compiled, default"):
        check(bt.SEModule(16), SEConfig(16), modes=("jit",))
    with pytest.raises(ValueError, match=r"unknown reference tap\(s\) 'channel_gate' for SEModule; known: gate"):
        check(bt.SEModule(16), SEConfig(16), taps={"channel_gate": "fc1"})
    with pytest.raises(ValueError, match=r"SEModule \(torch\) has no submodule 'fc3'; it has: 'fc1', 'fc2'"):
        check(bt.SEModule(16), SEConfig(16), taps={"gate": "fc3"})
    with pytest.raises(ParamMapError) as exc:
        check(_seed_se(32), ARTICLE_SE)  # no map: the Linear weights are not at fc1/fc2
    assert isinstance(exc.value, WeightLoadError) and exc.value.missing == ["fc1.weight", "fc2.weight"]


def test_tap_meanings_cover_every_reference_tap():
    """Every tap of every module's conformance cases has its meaning written down, and no meaning is left over."""
    from conformance.cases import CASES

    names = set()
    for case in CASES:
        w, x, _ = case.data()
        names |= set(reference_taps(case.config(), w, x)) - {"output"}
    assert names == set(TAP_MEANINGS)


def test_paddle_half_rows_of_an_attention_module_run_on_cpu():
    """Paddle's CPU build has no half kernels, but the attention modules compute half inputs in float32
    (attn_core.precision), so the float16 row runs and passes; n/a rows: test_precision's
    test_unsupported_dtype_is_n_a_with_its_reason_never_pass."""
    backend("paddle")
    import backends.paddle as bp

    report = check(bp.SEModule(16), SEConfig(16), dtypes=("float32", "float16"))
    assert {(r.dtype, r.status) for r in report.rows} == {("float32", "pass"), ("float16", "pass")}
    assert report.passed


def test_default_mode_is_the_frameworks_own_path():
    bf = backend("flax")
    report = check(bf.SimAM(), SimAMConfig(), modes=("default", "compiled"))
    assert [r.mode for r in report.rows] == ["jax.jit"] * 3 and report.passed


def test_check_is_exported():
    assert conformance.check is check and conformance.cases_for is cases_for
    assert {"check", "CheckReport", "Diagnosis", "spec_for", "cases_for"} <= set(conformance.__all__)
