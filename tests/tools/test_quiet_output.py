"""The command-line entry points keep the frameworks' own chatter off the terminal; ``--verbose`` brings it back;
importing the library changes nothing.

The framework lines are those a fresh machine printed (Paddle 3.3, jaxlib 0.10): each run here in a subprocess with
a clean environment, so that nothing set by the test session hides or causes them. A line that this machine does
not print at all (a machine with ccache, or with libtpu) cannot be checked, and is left out of the comparison.
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conformance._quiet import drop_stderr_lines

ROOT = Path(__file__).resolve().parents[2]
HAS = {name: importlib.util.find_spec(name) is not None for name in ("torch", "paddle", "jax", "flax")}
#: the framework lines the issue names, as regular expressions on one line of stderr
NOISE = {
    "ccache": r"UserWarning: No ccache found",
    "glog": r"^I\d{4} .*\] ",
    "tpu": r"Unable to initialize backend 'tpu'",
    "omp": r"^WARNING: OMP_NUM_THREADS set to \d+, not 1",
    "pir place": r"Tensor do not have 'place' interface",
    "no variable": r"UserWarning: no variable in your model",
}


def _clean_env() -> dict[str, str]:
    """PATH and HOME only, as on a fresh login: no GLOG_*, TF_*, JAX_*, PYTHONWARNINGS from the test session."""
    return {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ} | {"PYTHONPATH": str(ROOT)}


def _stderr(*args: str, timeout: int = 600) -> str:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=_clean_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr


def _found(stderr: str) -> set[str]:
    return {name for name, pattern in NOISE.items() if re.search(pattern, stderr, re.M)}


def _quiet_and_verbose(*args: str) -> tuple[set[str], set[str]]:
    return _found(_stderr(*args)), _found(_stderr(*args, "--verbose"))


def test_drop_stderr_lines_removes_only_whole_matching_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    with drop_stderr_lines():
        print("WARNING: OMP_NUM_THREADS set to 2, not 1. The computation speed will not be optimized.",
              file=sys.stderr)
        print("PLEASE USE OMP_NUM_THREADS WISELY.", file=sys.stderr)
        print("a real error: PLEASE USE OMP_NUM_THREADS WISELY.", file=sys.stderr)
    assert out.getvalue() == "a real error: PLEASE USE OMP_NUM_THREADS WISELY.\n"
    out.truncate(0), out.seek(0)
    with drop_stderr_lines(verbose=True):
        print("PLEASE USE OMP_NUM_THREADS WISELY.", file=sys.stderr)
    assert out.getvalue() == "PLEASE USE OMP_NUM_THREADS WISELY.\n"


def test_importing_the_library_and_the_entry_points_changes_nothing() -> None:
    """A user's program that imports the library (or even the command modules) keeps its own warnings filters,
    environment and loggers; only running a command silences anything."""
    code = ("import logging, os, warnings\n"
            "import numpy  # its own filters, at import, are not the project's\n"
            "before = (list(warnings.filters), dict(os.environ), logging.getLogger('jax._src.xla_bridge').level)\n"
            "import attn_core, conformance, conformance._quiet, conformance.__main__, conformance.convert.__main__\n"
            "import benchmarks.cli, benchmarks.worker\n"
            "after = (list(warnings.filters), dict(os.environ), logging.getLogger('jax._src.xla_bridge').level)\n"
            "assert before == after, [a for a, b in zip(after, before) if a != b]\n"
            "print('unchanged')\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_clean_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "unchanged", proc.stderr[-2000:]


@pytest.mark.skipif(not HAS["paddle"], reason="paddle is not installed")
def test_a_user_program_importing_the_paddle_backend_still_gets_paddles_warnings() -> None:
    import shutil

    if shutil.which("ccache") is not None:
        pytest.skip("ccache is installed here, so Paddle has nothing to warn about")
    stderr = _stderr("-c", "import conformance, backends.paddle")
    assert "ccache" in _found(stderr), stderr[-2000:]


@pytest.mark.slow  # runs the command twice in a subprocess
@pytest.mark.skipif(not (HAS["paddle"] or HAS["jax"]), reason="neither paddle nor jax is installed")
def test_python_m_conformance_is_quiet_unless_verbose() -> None:
    backends = ",".join(b for b, ok in (("paddle", HAS["paddle"]), ("flax", HAS["jax"] and HAS["flax"])) if ok)
    quiet, verbose = _quiet_and_verbose("-m", "conformance", "-q", "--modules", "se", "--backends", backends)
    if not verbose:
        pytest.skip("the frameworks print none of the known lines on this machine, even with --verbose")
    assert not quiet, f"framework lines left in the quiet run: {quiet}"


@pytest.mark.slow  # runs the command twice in a subprocess
@pytest.mark.skipif(not HAS["paddle"], reason="paddle is not installed")
def test_python_m_conformance_export_is_quiet_unless_verbose() -> None:
    """``paddle.jit.save`` of SimAM, which has no parameters, warns that the model has no variable."""
    quiet, verbose = _quiet_and_verbose("-m", "conformance", "--export", "-q", "--modules", "simam", "--backends",
                                        "paddle")
    assert "no variable" in verbose
    assert not quiet, f"framework lines left in the quiet run: {quiet}"


@pytest.mark.slow  # runs the command twice in a subprocess
@pytest.mark.skipif(not (HAS["torch"] and HAS["paddle"]), reason="the conversion needs torch and paddle")
def test_python_m_conformance_convert_is_quiet_unless_verbose(tmp_path: Path) -> None:
    from attn_core.checkpoint import save_canonical
    from attn_core.models import create_model_config

    src = tmp_path / "r18.safetensors"
    save_canonical(src, create_model_config("resnet18", num_classes=10).init_weights(np.random.default_rng(0),
                                                                                    np.float32))
    args = ("-m", "conformance.convert", str(src), str(tmp_path / "r18.pdparams"), "--model", "resnet18",
            "--model-kwargs", "num_classes=10", "--input-size", "32", "--force")
    quiet, verbose = _quiet_and_verbose(*args)
    if not verbose:
        pytest.skip("the frameworks print none of the known lines on this machine, even with --verbose")
    assert not quiet, f"framework lines left in the quiet run: {quiet}"


@pytest.mark.skipif(not HAS["paddle"], reason="paddle is not installed")
def test_python_m_benchmarks_is_quiet_unless_verbose(tmp_path: Path) -> None:
    """Paddle's OMP_NUM_THREADS advice (the benchmark sets that variable on purpose) and its ccache warning come from
    the worker process; neither reaches the terminal without --verbose."""
    args = ("-m", "benchmarks", "--quick", "--repeats", "1", "--modules", "se", "--shapes", "2x8x9x7",
            "--backends", "paddle", "--modes", "paddle:eager", "--passes", "forward", "--no-breakdown",
            "--out", str(tmp_path / "r.md"))
    quiet, verbose = _quiet_and_verbose(*args)
    assert "omp" in verbose  # printed by `import paddle` whenever OMP_NUM_THREADS > 1, as the worker sets it
    assert not quiet, f"framework lines left in the quiet run: {quiet}"
