"""The interface every framework runner implements."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from attn_core import AttentionConfig


@dataclass
class RunResult:
    """What a backend computed, as float64 NumPy arrays in canonical layout (NCHW, torch parameter layout)."""

    y: np.ndarray
    dx: np.ndarray | None = None
    dparams: dict[str, np.ndarray] = field(default_factory=dict)


class Runner:
    """Runs one attention module of one framework on NumPy data.

    Subclasses set ``framework`` and ``requires`` (the importable top-level packages it needs) and implement
    :meth:`run`.
    """

    framework: str = ""
    requires: tuple[str, ...] = ()
    dtypes: tuple[str, ...] = ("float32", "float64")

    def available(self) -> tuple[bool, str]:
        """(installed, reason if not)."""
        missing = [m for m in self.requires if importlib.util.find_spec(m) is None]
        if missing:
            return False, f"not installed: {', '.join(missing)} (pip install 'attn-modules[{self.framework}]')"
        return True, ""

    def run(self, name: str, config: AttentionConfig, weights: Mapping[str, np.ndarray], x: np.ndarray,
            cotangent: np.ndarray | None, dtype: str = "float32", training: bool = False) -> RunResult:
        """Build the module registered as ``name`` from ``config``, load the canonical ``weights`` (cast to
        ``dtype``), run it on ``x`` (NCHW; the runner converts to the framework's layout and back) in eval or
        training mode, and, when ``cotangent`` is given, backpropagate it: ``dx`` and the gradient of every
        trainable canonical parameter (by name, canonical layout)."""
        raise NotImplementedError
