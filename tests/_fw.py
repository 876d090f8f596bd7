"""Test helpers: build, feed and call a module in any of the three backends from NumPy data, through the
conformance runners (the project's one adapter per framework)."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest

from attn_core.frameworks import FRAMEWORK_INFO, FRAMEWORKS
from conformance.runners import Runner, get_runner

__all__ = ["FRAMEWORKS", "backend", "runner", "tensor", "nchw_to_native", "call", "to_numpy"]


def backend(fw: str) -> Any:
    """The backend package, or a pytest skip naming what is missing."""
    missing = FRAMEWORK_INFO[fw].missing()
    if missing:
        pytest.skip(f"{missing[0]} not installed")
    return get_runner(fw).backend()


def runner(fw: str) -> Runner:
    """The framework's runner (the adapter), or a pytest skip naming what is missing."""
    backend(fw)
    return get_runner(fw)


def tensor(fw: str, array: np.ndarray, dtype: str | None = None) -> Any:
    """A framework tensor of ``array`` as given (no layout change); ``dtype`` defaults to the array's."""
    return get_runner(fw).tensor(array, dtype)


def nchw_to_native(fw: str, array: np.ndarray) -> np.ndarray:
    return get_runner(fw).nchw_to_native(array)


def call(fw: str, module: Any, x: Any, variables: Any = None) -> Any:
    """Forward ``x`` (already in the native layout); for Flax, ``variables`` default to ``module.init``."""
    return get_runner(fw).call(module, x, variables)


def to_numpy(fw: str, y: Any) -> np.ndarray:
    return get_runner(fw).to_numpy(y)


def clear_flax_programs() -> None:
    """The Flax runner caches jitted programs per module; a test that patches a module must have it traced anew."""
    mod = sys.modules.get("conformance.runners.flax_runner")
    if mod is not None:
        mod._programs.cache_clear()
