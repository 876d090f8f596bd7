"""Run a model in a framework from canonical weights, in eval mode, and compare two frameworks' logits.

The input is fixed and seeded (``numpy.random.default_rng(0)``, standard normal, float32, NCHW; Flax gets its
NHWC transpose). Its size: 224 x 224, or the first legal size of 224, 256, 384 (TowerNet takes 255..510), or 32
for the CIFAR-style SE-DenseNets (``small_inputs``); ``input_size`` overrides it. Two logits agree when every
element passes float32's tolerance of :mod:`conformance.tolerances` (``|got - ref| <= atol + rtol * |ref|``).
Logits of a freshly initialised model can be tiny (or all zero, with a zero-initialised classifier), so the
weights read back from the written file are also compared with the source's, exactly.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

from attn_core import AttentionConfig, InputShapeError

from ..tolerances import tolerance_for

__all__ = ["BACKENDS", "Difference", "build", "input_for", "logits", "compare"]

BACKENDS: Mapping[str, str] = MappingProxyType({"torch": "backends.torch", "paddle": "backends.paddle",
                                                "flax": "backends.flax"})
_SIZES = (224, 256, 384)
_SMALL = 32
_BATCH = 2


@dataclass(frozen=True)
class Difference:
    """Two logits compared within float32's tolerance, and the canonical weights read back from the written file
    compared with the source's (cast to the stored dtype): ``changed`` names those that differ."""

    max_abs: float
    max_rel: float
    max_logit: float
    atol: float
    rtol: float
    logits_ok: bool
    changed: tuple[str, ...]

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
    backend = importlib.import_module(BACKENDS[framework])
    module = importlib.import_module(f"{BACKENDS[framework]}.models").model_from_config(config)
    if framework == "flax":
        return module, backend.load_weights(module, weights)
    return backend.load_weights(module, weights), None


def logits(framework: str, module: Any, variables: Any, x: np.ndarray) -> np.ndarray:
    """The eval-mode output of ``module`` on the NCHW input ``x``, as float64 NumPy."""
    if framework == "torch":
        import torch
        module.eval()
        with torch.no_grad():
            return module(torch.from_numpy(x)).double().numpy()
    if framework == "paddle":
        import paddle
        module.eval()
        with paddle.no_grad():
            return module(paddle.to_tensor(x)).astype("float64").numpy()
    import jax.numpy as jnp
    y = module.apply(variables, jnp.asarray(np.transpose(x, (0, 2, 3, 1))), train=False)
    return np.asarray(y, dtype=np.float64)


def compare(got: np.ndarray, ref: np.ndarray, back: Mapping[str, np.ndarray],
            weights: Mapping[str, np.ndarray]) -> Difference:
    """Logits ``got`` against ``ref`` under float32's tolerance; weights ``back`` against ``weights``."""
    tol = tolerance_for("float32")
    if got.shape != ref.shape:
        raise ValueError(f"verification: logits of shape {got.shape} and {ref.shape} cannot be compared")
    diff = np.abs(got - ref)
    finite = bool(np.all(np.isfinite(got)) and np.all(np.isfinite(ref)))
    rel = diff / np.maximum(np.abs(ref), np.finfo(np.float32).tiny)
    ok = finite and bool(np.all(diff <= tol.atol + tol.rtol * np.abs(ref)))
    changed = tuple(k for k, v in weights.items()
                    if k not in back or not np.array_equal(back[k], np.asarray(v).astype(back[k].dtype)))
    return Difference(float(diff.max(initial=0.0)), float(rel.max(initial=0.0)), float(np.abs(ref).max(initial=0.0)),
                      tol.atol, tol.rtol, ok, changed)
