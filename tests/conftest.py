"""What every test shares: a framework's global settings changed by one test are back as they were for the next."""

from __future__ import annotations

import atexit
import gc
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator

import pytest

from benchmarks.threads import THREAD_ENV, allowed_cpus


def _one_thread_per_worker() -> None:
    """Under pytest-xdist with at least as many workers as CPUs, a worker's OpenMP, MKL and OpenBLAS run one thread
    (set before a framework loads): each sizes its pool to every CPU otherwise, and the workers' threads spin waiting
    for each other."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
    if "PYTEST_XDIST_WORKER" not in os.environ or workers < 2 or workers < len(allowed_cpus()):
        return
    for name in THREAD_ENV:
        os.environ.setdefault(name, "1")


_one_thread_per_worker()


def _xla_quick_compile() -> None:
    """XLA compiles the tests' programs at backend optimisation level 1 and with its element-wise IR emitters rather
    than its MLIR fusion emitters (before jax loads), unless XLA_FLAGS sets either: most Flax tests compile a program
    to run it once or twice, so compiling is most of their time, while the whole-network training rows run theirs
    for many steps, which level 0 doubles; the same tolerances hold (``python -m conformance`` runs XLA's default)."""
    flags = os.environ.get("XLA_FLAGS", "")
    for flag, value in (("xla_backend_optimization_level", "1"), ("xla_cpu_use_fusion_emitters", "false")):
        if flag not in flags:
            flags = f"{flags} --{flag}={value}".strip()
    os.environ["XLA_FLAGS"] = flags


_xla_quick_compile()


def _shared_jax_compilation_cache() -> None:
    """One JAX compilation cache for the session (a temporary folder, removed at its end), unless
    JAX_COMPILATION_CACHE_DIR names one: the workers and the processes the tests start inherit it, so that a program
    another test, worker or process compiled is read back rather than compiled again."""
    if "PYTEST_XDIST_WORKER" in os.environ or "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    folder = tempfile.mkdtemp(prefix="attn-tests-jax-cache-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = folder
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


_shared_jax_compilation_cache()


def _hidden(config: object) -> list[str]:
    """torch config settings that a ``delattr`` hid (torch's config module hides rather than deletes them)."""
    entries = getattr(config, "_config", {})
    return [name for name, entry in entries.items() if getattr(entry, "hide", False)]


@pytest.fixture(autouse=True)
def _torch_compile_config_restored() -> Iterator[None]:
    """A test that changes torch.compile's configuration leaves the next test the configuration it found and an
    empty dynamo cache, so compiled tests do not depend on their order."""
    config = sys.modules.get("torch._dynamo.config")
    before = config.get_config_copy() if config is not None else None
    yield
    config = sys.modules.get("torch._dynamo.config")
    if config is None:
        return
    hidden = _hidden(config)
    if not hidden and (before is None or config.get_config_copy() == before):
        return
    for name in hidden:
        setattr(config, name, config._config[name].default)
    if before is not None:
        config.load_config(before)
    sys.modules["torch._dynamo"].reset()


#: a worker holding more than this frees the compiled programs after a test module (below it, later modules reuse them)
FREE_PROGRAMS_ABOVE = 3 * 2**30


def _resident_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


@pytest.fixture(scope="module", autouse=True)
def _compiled_programs_freed() -> Iterator[None]:
    """The programs a test module compiled (jax's caches, the Flax runner's jitted programs, dynamo's graphs) are
    freed after it once the worker holds more than :data:`FREE_PROGRAMS_ABOVE`: kept, they grew each CI worker to
    8-10 GB over the suite, while freeing them after every module made the fast tier recompile what it shares."""
    yield
    held = _resident_bytes()
    if held is not None and held < FREE_PROGRAMS_ABOVE:
        return
    if "jax" in sys.modules:
        from tests._fw import clear_flax_programs

        clear_flax_programs()
        sys.modules["jax"].clear_caches()
    if "torch._dynamo" in sys.modules:
        sys.modules["torch._dynamo"].reset()
    gc.collect()


@pytest.fixture
def fresh_flax_programs() -> Iterator[None]:
    """No jitted Flax program outlives the test (for tests that patch a module the Flax runner has traced)."""
    from tests._fw import clear_flax_programs

    clear_flax_programs()
    yield
    clear_flax_programs()


#: the fast tier's costliest tests as measured (each jit-compiles a whole Flax network or port, trains a whole model,
#: converts through the command line or waits for a subprocess): the slow tier runs them, so the fast loop stays
#: under its 3 minutes
_HEAVY = (
    "tests/tools/test_benchmarks.py::test_published_peers_equal_the_project[TripletAttention-flax]",
    "tests/tools/test_benchmarks.py::test_published_peers_equal_the_project[PSA_s-flax]",
    "tests/tools/test_benchmarks.py::test_published_peers_equal_the_project[PSA_p-flax]",
    "tests/tools/test_benchmarks.py::test_published_peers_equal_the_project[BAM-flax]",
    "tests/tools/test_benchmarks.py::test_published_peers_equal_the_project[GAM_Attention-flax]",
    "tests/tools/test_benchmarks.py::test_measure_group_is_bounded_and_keeps_the_least_spread_attempt",
    "tests/tools/test_quiet_output.py::test_python_m_benchmarks_is_quiet_unless_verbose",
    "tests/conformance/test_catalogue_timm.py::test_flax_gather_excite_counts_the_padding",
    "tests/conformance/test_catalogue.py::test_flax_pooling_over_nchw_axes",
    "tests/conformance/test_timm_non_local.py::test_every_backend_exports_timms_names[flax]",
    "tests/conformance/test_timm_non_local.py::test_check_diagnoses_a_port_at_the_bilinear_transform",
    "tests/conformance/test_timm_ge_gc.py::test_global_context_starts_as_timm[flax]",
    "tests/conformance/test_timm_coord.py::test_flax_half_rows_normalise_in_float32",
    "tests/conformance/test_timm_se_eca_cbam.py::test_paddle_and_flax_compute_timms_output_from_its_weights[cbam-c24--flax]",
    "tests/conformance/test_check.py::test_flax_taps_are_intercepted_and_transposed[no_sigmoid]",
    "tests/conformance/test_convert.py::test_nonfinite_weights_convert_to_an_exact_copy_when_allowed[pdparams]",
    "tests/conformance/test_convert.py::test_flax_variables_in_safetensors_and_formats_named_by_option",
    "tests/models/test_model_conformance.py::test_one_batchnorm_with_another_momentum_fails_its_running_statistics",
    "tests/models/test_model_conformance.py::test_a_runner_that_keeps_the_first_step_only_fails_the_running_statistics",
    "tests/models/test_model_conformance.py::test_float32_model_rows_compare_outputs_and_statistics_not_gradients",
    "tests/models/test_model_conformance.py::test_a_transposed_classifier_weight_fails_output_and_its_gradient",
    "tests/models/test_model_checkpoint.py::test_every_pair_of_backends_gives_the_reference_logits[resnet18]",
    "tests/models/test_training_workflows.py::test_torch_training_loop_on_our_seresnet18",
    "tests/models/test_towernet_mobilenet.py::test_mobilenet_dropout_acts_in_training_only[torch]",
    "tests/models/test_towernet_mobilenet.py::test_flax_mobilenet_dropout_needs_an_rng_and_acts_in_training_only",
    "tests/backends/test_running_stats.py::test_wrapped_flax_module_state_comes_from_the_updated_batch_stats",
    "tests/backends/test_running_stats.py::test_flax_native_batch_norm_with_the_right_momentum_stores_the_biased_variance",
    "tests/backends/test_backend_inputs.py::test_any_channel_count_when_not_configured[flax]",
    "tests/conformance/test_convert.py::test_torch_to_paddle_and_flax_by_the_cli_in_their_own_layouts",
    "tests/conformance/test_suite_cli.py::test_cli_html_report_and_default_modes",
    "tests/conformance/test_check.py::test_flax_tap_naming_no_submodule_is_reported",
    "tests/models/test_model_batch_norm_errors.py::test_one_value_per_channel_in_training_names_model_and_layer[sedensenet-efficient-flax]",
    "tests/backends/test_running_stats.py::test_wrapped_module_state_is_read_from_its_own_buffers[compiled]",
    "tests/models/test_model_conformance.py::test_float64_model_rows_pass_with_every_gradient_and_statistic[cbamresnet18/n2-40x40-train-torch]",
    "tests/backends/test_modes.py::test_wrap_torch_linear_se",
    "tests/conformance/test_catalogue.py::test_flax_oihw_kernel_loaded_as_hwio",
    "tests/backends/test_optim_converters.py::test_converter_follows_the_reference[flax-adam]",
    "tests/models/test_model_checkpoint.py::test_every_model_round_trips_from_torch_to_every_backend[resnet18]",
    "tests/backends/test_running_stats.py::test_flax_default_momentum_is_caught",
    "tests/backends/test_simam_scale.py::test_float32_matches_the_reference_at_every_scale[flax-1e-30]",
    "tests/backends/test_simam_scale.py::test_a_constant_channel_is_gated_by_sigmoid_half_whatever_its_value[flax-1234.5678]",
    "tests/conformance/test_convert.py::test_bad_checkpoints_raise_clear_errors_and_write_nothing",
    "tests/conformance/test_conformance.py::test_backend_matches_reference[triplet/c16-original-flax-float32]",
    "tests/backends/test_modes.py::test_torch_compiled_mode_that_does_not_compile_is_an_error",
    "tests/backends/test_modes.py::test_wrap_flax_dense_se[NHWC]",
    "tests/conformance/test_convert.py::test_nonfinite_weights_convert_to_an_exact_copy_when_allowed[msgpack]",
    "tests/conformance/test_convert.py::test_each_format_converts_back_with_the_same_weights[msgpack-pt]",
    "tests/models/test_resnet.py::test_flax_variables_are_those_of_init_and_round_trip_exactly[resnet18]",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A row in a framework's other mode (torch.compile, to_static, Flax op by op) is slow: it compiles or traces
    what the default mode runs directly, so the fast tier keeps each framework's default mode only. A test on the
    benchmarks' quick run (the ``quick_run`` fixture) is slow too: it waits for a benchmark in a subprocess."""
    from attn_core.frameworks import FRAMEWORK_INFO

    for item in items:
        if "quick_run" in getattr(item, "fixturenames", ()) or item.nodeid.startswith(_HEAVY):
            item.add_marker(pytest.mark.slow)
        params = item.callspec.params if hasattr(item, "callspec") else {}
        fw = next((params[k] for k in ("fw", "backend_name", "backend") if k in params), None)
        mode = params.get("mode")
        if isinstance(fw, str) and fw in FRAMEWORK_INFO and mode in FRAMEWORK_INFO[fw].mode_labels \
                and mode != FRAMEWORK_INFO[fw].default_mode:
            item.add_marker(pytest.mark.slow)
