"""Execution modes (eager and compiled) and modules the project did not write (``Runner.wrap``).

- every module passes eager and compiled on one small case per backend, BatchNorm in training and eval included;
- a module broken only under compilation fails its compiled row while its eager row passes, and a compiled mode
  that cannot compile is an error row, never a pass;
- hand-written SE modules with Linear / Dense layers, as the seed article writes them, pass through ``wrap`` with
  a parameter map of named layout transforms, and a wrong map is one error listing every problem.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
import pytest

from attn_core import SEConfig, WeightLoadError
from attn_core.layout import LAYOUT_TRANSFORMS, layout_transform
from conformance import CASES, compare, reference_for, run_case, run_suite, tolerance_for
from conformance.__main__ import main
from conformance.runners import MODES, ParamMapError, get_runner

from .._fw import FRAMEWORKS, backend

# one small case per module; sa trains its BatchNorm on batch statistics, cbam uses its running statistics
SMALL = ("se/c8-b1", "eca/c8-k3-b1", "ca/c8-b1", "sa/k7-bn-train", "cbam/c24-timm-eval", "simam/1x1")
LABELS = {"torch": "torch.compile", "paddle": "to_static", "flax": "jax.jit"}
ARTICLE = "se/c48-article"  # SEConfig(48, rd_divisor=None, bias=False): hidden exactly 48 // 16 = 3


def _case(name: str):
    return next(c for c in CASES if c.name == name)


def _failing(row) -> set[str]:
    return {c.quantity for c in row.comparisons if not c.passed}


@pytest.fixture(autouse=True)
def _fresh_flax_programs():
    """The Flax runner caches jitted programs per module; a patched module must be traced anew."""
    def clear() -> None:
        mod = sys.modules.get("conformance.runners.flax_runner")
        if mod is not None:
            mod._programs.cache_clear()
    clear()
    yield
    clear()


# ------------------------------------------------------------------------------------------- modes pass
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend_name", FRAMEWORKS)
@pytest.mark.parametrize("case_name", SMALL)
def test_every_module_passes_eager_and_compiled(case_name, backend_name, mode):
    backend(backend_name)
    case, runner = _case(case_name), get_runner(backend_name)
    row = run_case(case, runner, "float32", mode=mode)
    assert row.status == "pass", row.message + "\n" + "\n".join(
        f"{c.quantity}: {c.worst_ratio:.3g}x {c.detail}" for c in row.comparisons if not c.passed)
    assert row.mode == (LABELS[backend_name] if mode == "compiled" else "eager")
    table = case.config().param_table()
    assert len(row.comparisons) == 2 + sum(p.trainable for p in table) + \
        (sum(not p.trainable for p in table) if case.training else 0)  # state:<name> of each running statistic
    assert row.seconds > 0


def test_runners_name_their_modes():
    for fw in FRAMEWORKS:
        runner = get_runner(fw)
        assert runner.modes == ("eager", "compiled")
        assert (runner.mode_label("eager"), runner.mode_label("compiled")) == ("eager", LABELS[fw])
        with pytest.raises(ValueError, match="unknown mode"):
            runner.mode_label("traced")


def test_unknown_mode_is_an_error_row():
    backend("paddle")
    row = run_case(_case("simam/1x1"), get_runner("paddle"), mode="traced")
    assert row.status == "error" and "unknown mode 'traced'" in row.message


@pytest.mark.slow  # to_static rows
def test_suite_and_cli_report_each_mode_as_its_own_row(tmp_path, capsys):
    backend("paddle")
    report = run_suite(["paddle"], ["simam"], modes=("eager", "compiled"))
    cases = [c.case_id for c in CASES if c.module == "simam"]
    assert [(r.case, r.mode) for r in report.rows] == [(c, m) for c in cases for m in ("eager", "to_static")]
    assert all(r.status == "pass" for r in report.rows)
    out = tmp_path / "r.json"
    assert main(["--backends", "paddle", "--modules", "simam", "--modes", "eager,compiled", "-q",
                 "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert sorted({r["mode"] for r in rows}) == ["eager", "to_static"] and len(rows) == 2 * len(cases)
    assert all(r["seconds"] > 0 and r["note"].startswith("to_static") for r in rows if r["mode"] == "to_static")
    with pytest.raises(SystemExit) as exc:
        main(["--modes", "jit"])
    assert exc.value.code == 2 and "unknown mode 'jit'" in capsys.readouterr().err


# --------------------------------------------------------------------------- broken only when compiled
@pytest.mark.slow  # torch.compile rows
def test_torch_bug_only_under_torch_compile_is_caught(monkeypatch):
    """A forward with a compile-only path (``torch.compiler.is_compiling()``) that gates with a hard sigmoid:
    eager is right, the compiled row fails on its own comparisons."""
    backend("torch")
    import torch

    from backends.torch import SEModule
    from backends.torch._ops import ACTIVATIONS

    original = SEModule.forward

    def compile_only_path(self, x):
        if torch.compiler.is_compiling():
            s = x.mean((2, 3), keepdim=True)
            return x * ACTIVATIONS["hard_sigmoid"](self.fc2(self._act(self.fc1(s))))
        return original(self, x)

    monkeypatch.setattr(SEModule, "forward", compile_only_path)
    runner, case = get_runner("torch"), _case("se/c8-b1")
    assert run_case(case, runner, mode="eager").status == "pass"
    compiled = run_case(case, runner, mode="compiled")
    assert compiled.status == "fail" and compiled.mode == "torch.compile"
    assert {"output", "grad:input", "grad:fc2.weight"} <= _failing(compiled)


def test_paddle_bug_only_under_to_static_is_caught(monkeypatch):
    """A forward whose static-graph branch (``not paddle.in_dynamic_mode()``) drops SimAM's + 0.5."""
    backend("paddle")
    import paddle

    from backends.paddle import SimAM

    original = SimAM.forward

    def static_only_path(self, x):
        if not paddle.in_dynamic_mode():
            d = (x - x.mean(axis=[2, 3], keepdim=True)) ** 2
            v = d.sum(axis=[2, 3], keepdim=True) / (x.shape[2] * x.shape[3] - 1)
            return x * paddle.nn.functional.sigmoid(d / (4 * (v + self.config.e_lambda)))
        return original(self, x)

    monkeypatch.setattr(SimAM, "forward", static_only_path)
    runner, case = get_runner("paddle"), _case("simam/7x5")
    assert run_case(case, runner, mode="eager").status == "pass"
    compiled = run_case(case, runner, mode="compiled")
    assert compiled.status == "fail" and compiled.mode == "to_static" and "output" in _failing(compiled)


@pytest.mark.slow  # a Flax op-by-op row
def test_flax_modes_are_compared_independently(monkeypatch):
    """JAX has no compile-only code path to break, so both modes of a broken SimAM (n = H*W) must fail, each on
    its own numbers, and pass again when restored."""
    backend("flax")
    import backends.flax.simam as simam

    runner, case = get_runner("flax"), _case("simam/7x5")
    monkeypatch.setattr(simam, "simam_denominator_count", lambda h, w: h * w)
    rows = [run_case(case, runner, mode=m) for m in MODES]
    assert [(r.mode, r.status) for r in rows] == [("eager", "fail"), ("jax.jit", "fail")]
    assert all("output" in _failing(r) for r in rows)
    monkeypatch.undo()
    sys.modules["conformance.runners.flax_runner"]._programs.cache_clear()
    assert [run_case(case, runner, mode=m).status for m in MODES] == ["pass", "pass"]


# Compilation switched off globally would turn a 'compiled' row into an eager one: each runner refuses. Each
# framework has its own switch, hence one test each.
def _compiled_row_without_compilation(fw: str) -> Any:
    backend(fw)
    return run_case(_case("simam/1x1"), get_runner(fw), mode="compiled")


def test_torch_compiled_mode_that_does_not_compile_is_an_error():
    backend("torch")
    import torch._dynamo

    # torch's own scoped patch: monkeypatch's undo deletes the attribute of a config module (pytest >= 9.2
    # restores the instance __dict__), which hides the setting from every later torch.compile
    with torch._dynamo.config.patch(disable=True):
        row = _compiled_row_without_compilation("torch")
    assert row.status == "error" and "compiled no graph" in row.message, row.message
    assert row.mode == LABELS["torch"]


def test_paddle_compiled_mode_that_does_not_compile_is_an_error():
    backend("paddle")
    import paddle

    paddle.jit.enable_to_static(False)
    try:
        row = _compiled_row_without_compilation("paddle")
    finally:
        paddle.jit.enable_to_static(True)
    assert row.status == "error" and "traced no program" in row.message, row.message
    assert row.mode == LABELS["paddle"]


def test_flax_compiled_mode_that_does_not_compile_is_an_error():
    backend("flax")
    import jax

    with jax.disable_jit():
        row = _compiled_row_without_compilation("flax")
    assert row.status == "error" and "jax.jit is disabled" in row.message, row.message
    assert row.mode == LABELS["flax"]


# -------------------------------------------------------------------------------------------------- wrap
def _verdict(runner: Any, handle: Any, case_name: str, mode: str) -> list:
    case = _case(case_name)
    weights, x, cotangent, (y, dx, dparams) = reference_for(case)
    got = runner.execute(handle, weights, x, cotangent, "float32", case.training, mode)
    tol = tolerance_for("float32")
    return [compare("output", got.y, y, tol), compare("grad:input", got.dx, dx, tol)] + \
        [compare(f"grad:{k}", got.dparams.get(k), v, tol) for k, v in dparams.items()]


def _assert_passes(runner: Any, handle: Any, case_name: str = ARTICLE) -> None:
    for mode in MODES:
        comps = _verdict(runner, handle, case_name, mode)
        bad = [f"{c.quantity}: {c.worst_ratio:.3g}x {c.detail}" for c in comps if not c.passed]
        assert not bad, f"{runner.mode_label(mode)}: " + "; ".join(bad)
        assert [c.quantity for c in comps] == ["output", "grad:input", "grad:fc1.weight", "grad:fc2.weight"]


def _torch_article_se(channels: int, reduction: int = 16) -> Any:
    from torch import nn

    class ArticleSE(nn.Module):
        """The seed article's SE: Linear layers without bias on the pooled vector."""

        def __init__(self) -> None:
            super().__init__()
            self.avg_pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Sequential(nn.Linear(channels, channels // reduction, bias=False), nn.ReLU(inplace=True),
                                    nn.Linear(channels // reduction, channels, bias=False), nn.Sigmoid())

        def forward(self, x):
            b, c, _, _ = x.size()
            y = self.avg_pool(x).view(b, c)
            return x * self.fc(y).view(b, c, 1, 1).expand_as(x)

    return ArticleSE()


TORCH_MAP = {"fc1.weight": ("fc.0.weight", "conv1x1_to_linear"), "fc2.weight": ("fc.2.weight", "conv1x1_to_linear")}


def test_wrap_torch_linear_se():
    backend("torch")
    runner = get_runner("torch")
    module = _torch_article_se(48)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    handle = runner.wrap(module, SEConfig(48, rd_divisor=None, bias=False), TORCH_MAP)
    assert [(b.spec.name, b.native, b.transform) for b in handle.bindings] == [
        ("fc1.weight", "fc.0.weight", "conv1x1_to_linear"), ("fc2.weight", "fc.2.weight", "conv1x1_to_linear")]
    _assert_passes(runner, handle)
    assert all((module.state_dict()[k] == v).all() for k, v in before.items()), "the user's module was modified"


def test_wrap_paddle_linear_se():
    backend("paddle")
    from paddle import nn

    class PaddleArticleSE(nn.Layer):
        def __init__(self, channels: int, reduction: int = 16) -> None:
            super().__init__()
            self.fc = nn.Sequential(nn.Linear(channels, channels // reduction, bias_attr=False), nn.ReLU(),
                                    nn.Linear(channels // reduction, channels, bias_attr=False), nn.Sigmoid())

        def forward(self, x):
            return x * self.fc(x.mean(axis=[2, 3])).unsqueeze([2, 3])

    runner = get_runner("paddle")
    module = PaddleArticleSE(48)
    assert tuple(module.state_dict()["fc.0.weight"].shape) == (48, 3)  # Paddle Linear: [in, out]
    handle = runner.wrap(module, SEConfig(48, rd_divisor=None, bias=False),
                         {"fc1.weight": ("fc.0.weight", "conv1x1_to_linear_t"),
                          "fc2.weight": ("fc.2.weight", "conv1x1_to_linear_t")})
    _assert_passes(runner, handle)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_wrap_flax_dense_se(layout):
    backend("flax")
    import flax.linen as fnn
    import jax
    import jax.numpy as jnp

    class FlaxDenseSE(fnn.Module):
        channels: int
        reduction: int = 16
        nchw: bool = False

        def setup(self) -> None:
            self.fc = fnn.Sequential([fnn.Dense(self.channels // self.reduction, use_bias=False), fnn.relu,
                                      fnn.Dense(self.channels, use_bias=False), fnn.sigmoid])

        def __call__(self, x):
            g = self.fc(jnp.mean(x, axis=(2, 3) if self.nchw else (1, 2)))
            return x * (g[:, :, None, None] if self.nchw else g[:, None, None, :])

    module = FlaxDenseSE(48, nchw=layout == "NCHW")
    shape = (1, 48, 2, 2) if layout == "NCHW" else (1, 2, 2, 48)
    variables = module.init(jax.random.key(0), jnp.zeros(shape))
    runner = get_runner("flax")
    handle = runner.wrap(module, SEConfig(48, rd_divisor=None, bias=False),
                         {"fc1.weight": ("params/fc/layers_0/kernel", "conv1x1_to_linear_t"),
                          "fc2.weight": ("params/fc/layers_2/kernel", "conv1x1_to_linear_t")},
                         variables, layout=layout)
    assert handle.layout == layout and handle.options == {"train_arg": False}
    _assert_passes(runner, handle)


def test_project_modules_are_wrapped_with_the_default_map():
    """build_handle is wrap with an empty map: every binding at the framework's default place and layout."""
    for fw in FRAMEWORKS:
        if not get_runner(fw).available()[0]:
            continue
        case = _case("cbam/c24-timm-eval")
        handle = get_runner(fw).build_handle(case.module, case.config())
        assert [b.spec.name for b in handle.bindings] == [p.name for p in case.config().param_table()]
        assert {b.transform for b in handle.bindings} == {"default"}
    backend("flax")
    case = _case("sa/k7-bn-eval")
    natives = {b.spec.name: b.native for b in get_runner("flax").build_handle("sa", case.config()).bindings}
    assert natives["bn.running_mean"] == "batch_stats/bn/mean" and natives["conv.weight"] == "params/conv/kernel"


def test_wrap_accepts_custom_transform_pairs_and_plain_names():
    backend("torch")
    runner = get_runner("torch")
    handle = runner.wrap(_torch_article_se(48), SEConfig(48, rd_divisor=None, bias=False),
                         {"fc1.weight": ("fc.0.weight", (lambda w: w[:, :, 0, 0], lambda w: w[:, :, None, None])),
                          "fc2.weight": ("fc.2.weight", "conv1x1_to_linear")})
    assert handle.bindings[0].transform == "custom"
    comps = _verdict(runner, handle, ARTICLE, "eager")
    assert all(c.passed for c in comps)
    # a plain name takes the framework's default layout: torch's OIHW does not fit a Linear's (O, I)
    with pytest.raises(ParamMapError, match=r"fc1.weight \(3, 48, 1, 1\) -> 'fc.0.weight' via 'default' is "
                                            r"\(3, 48, 1, 1\), the module's is \(3, 48\)"):
        runner.wrap(_torch_article_se(48), SEConfig(48, rd_divisor=None, bias=False),
                    {"fc1.weight": "fc.0.weight", "fc2.weight": ("fc.2.weight", "conv1x1_to_linear")})


def test_wrong_param_map_is_one_error_listing_every_problem():
    backend("torch")
    runner = get_runner("torch")
    config = SEConfig(48, rd_divisor=None, bias=False)
    bad = {"fc1.weight": ("fc.0.weight", "identity"),         # wrong shape: (3, 48, 1, 1) vs the Linear's (3, 48)
           "fc3.weight": ("fc.2.weight", "conv1x1_to_linear")}  # no such canonical parameter; fc2 left unmapped
    with pytest.raises(ParamMapError) as exc:
        runner.wrap(_torch_article_se(48), config, bad)
    err = exc.value
    assert isinstance(err, WeightLoadError)
    assert sorted(kind for kind, _ in err.problems) == ["missing", "unknown canonical name", "wrong shape"]
    text = str(err)
    assert "unknown canonical name: 'fc3.weight'" in text and "fc1.weight, fc2.weight" in text
    assert "missing: fc2.weight (48, 3, 1, 1): not in the map, and the module has no 'fc2.weight'" in text
    assert "wrong shape: fc1.weight (3, 48, 1, 1) -> 'fc.0.weight' via 'identity'" in text
    assert err.missing == ["fc2.weight"] and err.unexpected == ["fc3.weight"]
    assert err.mismatched == [("fc1.weight", (3, 48, 1, 1), (3, 48))]

    # a native name the module lacks, an unknown transform, a transform that does not apply, a bad entry, a
    # module hidden width that is not the config's, and a parameter nothing maps to
    module = _torch_article_se(48, reduction=12)  # hidden 4, the config says 3
    with pytest.raises(ParamMapError) as exc:
        runner.wrap(module, SEConfig(48, rd_divisor=None, bias=False, rd_channels=3),
                    {"fc1.weight": ("fc.1.weight", "conv1x1_to_linear"), "fc2.weight": ("fc.2.weight", "to_hwio")})
    kinds = [kind for kind, _ in exc.value.problems]
    assert kinds == ["not in the module", "bad entry", "not mapped"], str(exc.value)
    assert "unknown transform 'to_hwio'; known: identity, transpose" in str(exc.value)
    assert "'fc.0.weight' (4, 48): a parameter of the module that no canonical parameter maps to" in str(exc.value)
    with pytest.raises(ParamMapError, match="wrong shape: fc2.weight"):
        runner.wrap(module, SEConfig(48, rd_divisor=None, bias=False, rd_channels=3), TORCH_MAP)
    with pytest.raises(ParamMapError, match=r"bad transform: fc1.weight -> 'fc.0.weight': layout transform "
                                            r"'oik_to_kio' .* takes a 3-D canonical array, got shape \(3, 48, 1, 1\)"):
        runner.wrap(_torch_article_se(48), config, {**TORCH_MAP, "fc1.weight": ("fc.0.weight", "oik_to_kio")})
    with pytest.raises(ParamMapError, match="not exact inverses"):
        runner.wrap(_torch_article_se(48), config,
                    {**TORCH_MAP, "fc1.weight": ("fc.0.weight", (lambda w: w[:, :, 0, 0], lambda w: 2 * w))})
    with pytest.raises(ParamMapError, match="mapped twice: 'fc.0.weight' <- fc1.weight, fc2.weight"):
        runner.wrap(_torch_article_se(48, reduction=1), SEConfig(48, rd_channels=48, rd_divisor=None, bias=False),
                    {"fc1.weight": ("fc.0.weight", "conv1x1_to_linear"),
                     "fc2.weight": ("fc.0.weight", "conv1x1_to_linear")})


def test_wrong_flax_map_and_missing_variables():
    backend("flax")
    import flax.linen as fnn
    import jax
    import jax.numpy as jnp

    class Dense2(fnn.Module):
        @fnn.compact
        def __call__(self, x):
            h = fnn.relu(fnn.Dense(3, use_bias=False, name="down")(x.mean((1, 2))))
            return x * fnn.sigmoid(fnn.Dense(48, use_bias=False, name="up")(h))[:, None, None, :]

    module = Dense2()
    variables = module.init(jax.random.key(0), jnp.zeros((1, 2, 2, 48)))
    runner = get_runner("flax")
    config = SEConfig(48, rd_divisor=None, bias=False)
    with pytest.raises(TypeError, match="needs the module's variables"):
        runner.wrap(module, config, {})
    with pytest.raises(ParamMapError) as exc:
        runner.wrap(module, config, {"fc1.weight": ("params/down/kernel", "conv1x1_to_linear"),
                                     "fc2.weight": ("params/fc2/kernel", "conv1x1_to_linear_t")}, variables)
    kinds = [kind for kind, _ in exc.value.problems]
    assert kinds == ["wrong shape", "not in the module", "not mapped"], str(exc.value)
    handle = runner.wrap(module, config, {"fc1.weight": ("params/down/kernel", "conv1x1_to_linear_t"),
                                          "fc2.weight": ("params/up/kernel", "conv1x1_to_linear_t")}, variables)
    assert all(c.passed for c in _verdict(runner, handle, ARTICLE, "compiled"))


# ---------------------------------------------------------------------------------------- layout table
@pytest.mark.parametrize("name", list(LAYOUT_TRANSFORMS))
def test_layout_transforms_are_exact_inverses(name):
    t = layout_transform(name)
    shape = {None: (2, 3), 2: (5, 3), 3: (1, 2, 7), 4: (4, 3, 1, 1) if t.squeeze_1x1 else (4, 3, 2, 5)}[t.rank]
    canonical = np.random.default_rng(0).standard_normal(shape)
    native = t.to_native(canonical)
    assert native.shape == t.native_shape(shape)
    np.testing.assert_array_equal(t.from_native(native), canonical)


def test_layout_transforms_say_what_they_produce():
    assert layout_transform("conv1x1_to_linear").native_shape((3, 48, 1, 1)) == (3, 48)
    assert layout_transform("conv1x1_to_linear_t").native_shape((3, 48, 1, 1)) == (48, 3)
    assert layout_transform("oihw_to_hwio").native_shape((1, 2, 7, 5)) == (7, 5, 2, 1)
    assert layout_transform("oik_to_kio").native_shape((1, 1, 5)) == (5, 1, 1)
    with pytest.raises(ValueError, match=r"takes a 1x1 kernel \(O, I, 1, 1\), got shape \(3, 48, 3, 3\)"):
        layout_transform("conv1x1_to_linear").to_native(np.zeros((3, 48, 3, 3)))
    with pytest.raises(ValueError, match="unknown layout transform 'hwio'"):
        layout_transform("hwio")
