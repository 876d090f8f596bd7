"""Run a model in a framework from canonical weights, in eval mode, and compare two frameworks' logits.

The input is fixed and seeded (``numpy.random.default_rng(0)``, standard normal, float32, NCHW; Flax gets its
NHWC transpose). Its size: 224 x 224, or the first legal size of 224, 256, 384 (TowerNet takes 255..510), or 32
for the CIFAR-style SE-DenseNets (``small_inputs``); ``input_size`` overrides it.

Two logits agree as the suite's model rows do, on the logits' scale (:func:`conformance.tolerances.on_scale`):
``|got - ref| <= max(atol, rtol * max |ref|) + rtol * |ref|`` with float32's atol and rtol, since a whole network's
float32 rounding is a fraction of the logits' scale, which a logit near 0 carries whole. Non-finite logits (only
from a checkpoint converted with ``allow_nonfinite``) agree when both sides have NaN, +inf and -inf in the same
places; the finite ones are then compared as above. Logits of a freshly initialised model can be tiny (or all
zero, with a zero-initialised classifier), so the weights read back from the written file are also compared with
the source's bit for bit (a NaN matching any NaN: a framework may quiet a NaN's payload).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from attn_core import AttentionConfig, InputShapeError
from attn_core.frameworks import FRAMEWORK_INFO, FRAMEWORKS

from ..runners import get_runner
from ..suite import compare as compare_quantity
from ..tolerances import on_scale, tolerance_for
from .formats import ConvertError

__all__ = ["BACKENDS", "Difference", "build", "input_for", "logits", "compare", "same_values"]

#: the frameworks a converted model runs in
BACKENDS: tuple[str, ...] = FRAMEWORKS
_SIZES = (224, 256, 384)
_SMALL = 32
_BATCH = 2


@dataclass(frozen=True)
class Difference:
    """Two logits compared on their scale (module docstring), and the canonical weights read back from the
    written file compared with the source's (cast to the stored dtype): ``changed`` names those that differ.

    ``max_abs`` / ``max_rel`` / ``max_logit`` are over the finite logits (``max_rel`` divides by ``max(|ref|,
    atol)``, as the suite does); ``atol`` is the absolute tolerance used, float32's raised to ``rtol * max_logit``;
    ``nonfinite`` counts the reference's non-finite logits."""

    max_abs: float
    max_rel: float
    max_logit: float
    atol: float
    rtol: float
    logits_ok: bool
    changed: tuple[str, ...]
    nonfinite: int = 0

    @property
    def ok(self) -> bool:
        return self.logits_ok and not self.changed


def input_for(config: AttentionConfig, input_size: int | None = None) -> np.ndarray:
    """The fixed seeded NCHW float32 input of the verification."""
    c = int(getattr(config, "in_chans", 3))
    if input_size is None:
        sizes = (_SMALL,) if getattr(config, "small_inputs", False) else _SIZES
        for size in sizes:
            try:
                config.check_input((_BATCH, c, size, size), "float32", True)
            except InputShapeError:
                continue
            input_size = size
            break
        else:
            raise InputShapeError(f"{config.module_name}: none of the input sizes {sizes} fits; give input_size")
    config.check_input((_BATCH, c, input_size, input_size), "float32", True)
    return np.random.default_rng(0).standard_normal((_BATCH, c, input_size, input_size)).astype(np.float32)


def build(framework: str, config: AttentionConfig, weights: Mapping[str, np.ndarray]) -> tuple[Any, Any]:
    """``(module, variables)`` of ``config`` in ``framework`` holding ``weights`` (variables: Flax only)."""
    try:
        return get_runner(framework).build_model(config, weights)
    except ImportError as err:
        raise ConvertError(f"{framework} is needed for this conversion but cannot be imported ({err}); install "
                           f"it with {FRAMEWORK_INFO[framework].install_hint}") from None


def logits(framework: str, module: Any, variables: Any, x: np.ndarray) -> np.ndarray:
    """The eval-mode output of ``module`` on the NCHW input ``x``, as float64 NumPy."""
    return get_runner(framework).forward(module, variables, x)


def same_values(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether ``a`` and ``b`` hold the same values bit for bit (shape and dtype included), a NaN matching any NaN."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind != "f":
        return bool(np.array_equal(a, b))
    bits = np.dtype(f"u{a.dtype.itemsize}")
    same = a.view(bits) == b.view(bits)
    return bool(np.all(same | (np.isnan(a) & np.isnan(b))))


def compare(got: np.ndarray, ref: np.ndarray, back: Mapping[str, np.ndarray],
            weights: Mapping[str, np.ndarray]) -> Difference:
    """Logits ``got`` against ``ref`` on their scale; weights ``back`` against ``weights`` (module docstring)."""
    if got.shape != ref.shape:
        raise ValueError(f"verification: logits of shape {got.shape} and {ref.shape} cannot be compared")
    finite = np.isfinite(ref)
    same_nonfinite = bool(np.array_equal(got[~finite], ref[~finite], equal_nan=True)
                          and np.all(np.isfinite(got[finite])))
    max_logit = float(np.abs(ref[finite]).max(initial=0.0))
    tol = on_scale(tolerance_for("float32"), max_logit)
    c = compare_quantity("logits", got[finite], ref[finite], tolerance_for("float32"), scaled=True)
    max_abs, max_rel = (c.max_abs, c.max_rel) if same_nonfinite else (math.inf, math.inf)
    changed = tuple(k for k, v in weights.items()
                    if k not in back or not same_values(back[k], np.asarray(v).astype(back[k].dtype)))
    return Difference(max_abs, max_rel, max_logit, tol.atol, tol.rtol, same_nonfinite and c.passed, changed,
                      int(ref.size - finite.sum()))
