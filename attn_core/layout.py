"""Where each canonical parameter lives in each framework, and how its layout converts at the edge.

The canonical layout is torch's. Paddle keeps it except for BatchNorm state names (``_mean``, ``_variance``) and
Linear weights ([in, out]). Flax keeps parameters in nested collections, convolution kernels as HWIO (2-D) or
WIO (1-D), Dense kernels as [in, out], and BatchNorm state in ``batch_stats``. This table is the one place those
facts are written; backends and the conformance suite only look them up.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from .spec import ParamSpec

__all__ = ["FRAMEWORKS", "Framework", "native_location", "to_native", "from_native", "bn_momentum_for"]

Framework = Literal["torch", "paddle", "flax"]
FRAMEWORKS: tuple[str, ...] = ("torch", "paddle", "flax")

_PADDLE_LEAF = {"bn_mean": "_mean", "bn_var": "_variance"}
_FLAX_LEAF = {
    "conv_weight": ("params", "kernel"), "conv_bias": ("params", "bias"),
    "linear_weight": ("params", "kernel"), "linear_bias": ("params", "bias"),
    "bn_weight": ("params", "scale"), "bn_bias": ("params", "bias"),
    "bn_mean": ("batch_stats", "mean"), "bn_var": ("batch_stats", "var"),
}
# canonical -> flax axis permutation, by role and rank
_FLAX_PERM = {("conv_weight", 4): (2, 3, 1, 0), ("conv_weight", 3): (2, 1, 0), ("linear_weight", 2): (1, 0)}


def _check(framework: str) -> None:
    if framework not in FRAMEWORKS:
        raise ValueError(f"unknown framework {framework!r}; expected one of {', '.join(FRAMEWORKS)}")


def native_location(framework: str, spec: ParamSpec) -> tuple[str, tuple[str, ...]]:
    """``(collection, path)`` of a canonical parameter in a framework.

    torch and Paddle: collection ``'state_dict'`` and the path of the dotted key; Flax: ``'params'`` or
    ``'batch_stats'`` and the nested key path.
    """
    _check(framework)
    path = tuple(spec.module_path.split(".")) if spec.module_path else ()
    leaf = spec.name.rpartition(".")[2]
    if framework == "torch":
        return "state_dict", path + (leaf,)
    if framework == "paddle":
        return "state_dict", path + (_PADDLE_LEAF.get(spec.role, leaf),)
    collection, flax_leaf = _FLAX_LEAF[spec.role]
    return collection, path + (flax_leaf,)


def _perm(framework: str, spec: ParamSpec) -> tuple[int, ...] | None:
    if framework == "flax":
        return _FLAX_PERM.get((spec.role, len(spec.shape)))
    if framework == "paddle" and spec.role == "linear_weight":
        return (1, 0)
    return None


def to_native(framework: str, spec: ParamSpec, array: np.ndarray) -> np.ndarray:
    """Canonical array -> the framework's layout (a NumPy array; the backend makes its tensor of it)."""
    _check(framework)
    perm = _perm(framework, spec)
    return np.ascontiguousarray(np.transpose(array, perm)) if perm else np.asarray(array)


def from_native(framework: str, spec: ParamSpec, array: np.ndarray) -> np.ndarray:
    """The framework's layout -> canonical (inverse of :func:`to_native`)."""
    _check(framework)
    perm = _perm(framework, spec)
    return np.ascontiguousarray(np.transpose(array, np.argsort(perm))) if perm else np.asarray(array)


def bn_momentum_for(framework: str, torch_momentum: float) -> float:
    """BatchNorm momentum in a framework's convention from torch's (weight of the new batch).

    Paddle and Flax weigh the running value: ``1 - torch_momentum``. Flax's own default (0.99) is never relied on.
    """
    _check(framework)
    return torch_momentum if framework == "torch" else 1.0 - torch_momentum
