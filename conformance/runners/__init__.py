"""One small adapter per framework (einops' ``_backends`` style): build or wrap, load, run forward and backward.

Frameworks are imported lazily, only when their runner is used, and NumPy is the meeting point: every runner
takes NCHW float64 NumPy input and returns NumPy results in canonical layout. ``runner.wrap(module, config,
param_map)`` makes a handle of a module the project did not write, ``runner.execute(handle, ...)`` runs any
handle eagerly or compiled (see :mod:`conformance.runners.base`). The frameworks, their packages, layouts and
modes are ``attn_core.frameworks``' table; a runner module is ``conformance.runners.<framework>_runner``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import MappingProxyType

from attn_core.frameworks import FRAMEWORKS, MODES

from .base import Runner, RunResult
from .handle import Binding, Handle, ParamMapError

__all__ = ["Runner", "RunResult", "Handle", "Binding", "ParamMapError", "MODES", "RUNNERS", "get_runner",
           "framework_of"]

# framework -> module path of its runner; each module defines ``RUNNER``.
RUNNERS: Mapping[str, str] = MappingProxyType({fw: f"conformance.runners.{fw}_runner" for fw in FRAMEWORKS})


def get_runner(framework: str) -> Runner:
    if framework not in RUNNERS:
        raise ValueError(f"unknown backend {framework!r}; expected one of {', '.join(RUNNERS)}")
    runner: Runner = importlib.import_module(RUNNERS[framework]).RUNNER
    return runner


def framework_of(module: object) -> str | None:
    """The framework whose module ``module`` is, looking only at frameworks already imported (a module of a
    framework is an instance of its class, so its framework is in ``sys.modules``); None for none of them."""
    return next((fw for fw in FRAMEWORKS if get_runner(fw).owns(module)), None)
