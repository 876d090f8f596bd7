"""The float64 reference's gradients against central finite differences (test code only)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np


def fd_grad(loss: Callable[[np.ndarray], float], a: np.ndarray, step: float = 1e-6) -> np.ndarray:
    """The gradient of ``loss`` at ``a`` by central differences, one element at a time."""
    g = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
        ap, am = a.copy(), a.copy()
        ap[idx] += step
        am[idx] -= step
        g[idx] = (loss(ap) - loss(am)) / (2 * step)
    return g


def assert_fd_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """``got`` equal to the finite-difference gradient ``want`` within what a step of 1e-6 leaves (relative 1e-6,
    absolute 1e-7 of its scale)."""
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7 * scale, err_msg=what)


def assert_reference_vjp(name: str, cfg: Any, weights: Mapping[str, np.ndarray], x: np.ndarray, cot: np.ndarray,
                         training: bool) -> np.ndarray:
    """``cfg.reference_vjp`` gives the gradients of ``sum(reference(x) * cot)`` that finite differences of
    ``cfg.reference`` give, for the input and every trainable parameter (and for no other), in their shapes;
    returns its output."""
    y, dx, grads = cfg.reference_vjp(weights, x, cot, training=training)
    trainable = [p.name for p in cfg.param_table() if p.trainable]
    assert sorted(grads) == sorted(trainable)
    assert dx.shape == x.shape and all(grads[p].shape == np.shape(weights[p]) for p in trainable)

    def loss(w: Mapping[str, np.ndarray], xv: np.ndarray) -> float:
        return float(np.sum(cfg.reference(w, xv, training) * cot))

    assert_fd_close(dx, fd_grad(lambda a: loss(weights, a), x), f"{name}: dx")
    for p in trainable:
        assert_fd_close(grads[p], fd_grad(lambda a, p=p: loss({**weights, p: a}, x), weights[p]), f"{name}: d{p}")
    return y
