"""One small adapter per framework (einops' ``_backends`` style): build or wrap, load, run forward and backward.

Frameworks are imported lazily, only when their runner is used, and NumPy is the meeting point: every runner
takes NCHW float64 NumPy input and returns NumPy results in canonical layout. ``runner.wrap(module, config,
param_map)`` makes a handle of a module the project did not write, ``runner.execute(handle, ...)`` runs any
handle eagerly or compiled (see :mod:`conformance.runners.base`).
"""

from __future__ import annotations

import importlib
from types import MappingProxyType
from typing import Mapping

from .base import MODES, Binding, Handle, ParamMapError, Runner, RunResult

__all__ = ["Runner", "RunResult", "Handle", "Binding", "ParamMapError", "MODES", "RUNNERS", "get_runner"]

# framework -> module path of its runner; each module defines ``RUNNER``.
RUNNERS: Mapping[str, str] = MappingProxyType({
    "torch": "conformance.runners.torch_runner",
    "paddle": "conformance.runners.paddle_runner",
    "flax": "conformance.runners.flax_runner",
})


def get_runner(framework: str) -> Runner:
    if framework not in RUNNERS:
        raise ValueError(f"unknown backend {framework!r}; expected one of {', '.join(RUNNERS)}")
    return importlib.import_module(RUNNERS[framework]).RUNNER
