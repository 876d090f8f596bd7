"""Where each canonical parameter lives in each framework, and how its layout converts at the edge.

The canonical layout is torch's. Paddle keeps it except for BatchNorm state names (``_mean``, ``_variance``) and
Linear weights ([in, out]). Flax keeps parameters in nested collections, convolution kernels as HWIO (2-D) or
WIO (1-D), Dense kernels as [in, out], and BatchNorm state in ``batch_stats``. This table is the one place those
facts are written; backends and the conformance suite only look them up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import numpy as np

from .frameworks import FRAMEWORKS
from .spec import ParamSpec

__all__ = ["FRAMEWORKS", "Framework", "native_location", "native_key", "to_native", "from_native",
           "bn_momentum_for", "LayoutTransform", "LAYOUT_TRANSFORMS", "layout_transform", "NCHW_TO_NHWC",
           "NHWC_TO_NCHW"]

Framework = Literal["torch", "paddle", "flax"]
#: the axis permutations between the two activation layouts
NCHW_TO_NHWC: tuple[int, ...] = (0, 2, 3, 1)
NHWC_TO_NCHW: tuple[int, ...] = (0, 3, 1, 2)

_PADDLE_LEAF = {"bn_mean": "_mean", "bn_var": "_variance"}
_FLAX_LEAF = {
    "conv_weight": ("params", "kernel"), "conv_bias": ("params", "bias"),
    "linear_weight": ("params", "kernel"), "linear_bias": ("params", "bias"),
    "bn_weight": ("params", "scale"), "bn_bias": ("params", "bias"),
    "bn_mean": ("batch_stats", "mean"), "bn_var": ("batch_stats", "var"),
    "param": ("params", ""),  # empty: the canonical leaf name itself (a parameter outside any layer)
}
# framework -> (role, canonical rank) -> the LAYOUT_TRANSFORMS entry of its default layout (others: canonical as is)
_DEFAULT_TRANSFORMS: Mapping[str, Mapping[tuple[str, int], str]] = MappingProxyType({
    "torch": {},
    "paddle": {("linear_weight", 2): "transpose"},
    "flax": {("conv_weight", 4): "oihw_to_hwio", ("conv_weight", 3): "oik_to_kio", ("linear_weight", 2): "transpose"},
})


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
    return collection, path + (flax_leaf or leaf,)


def native_key(framework: str, spec: ParamSpec) -> str:
    """The one string naming a canonical parameter in a framework: the ``state_dict`` key in torch and Paddle,
    the '/'-joined variable path with the collection first in Flax (``'params/fc1/kernel'``)."""
    collection, path = native_location(framework, spec)
    return ".".join(path) if collection == "state_dict" else "/".join((collection,) + path)


def _perm(framework: str, spec: ParamSpec) -> tuple[int, ...] | None:
    name = _DEFAULT_TRANSFORMS[framework].get((spec.role, len(spec.shape)))
    return None if name is None else LAYOUT_TRANSFORMS[name].perm


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


# ------------------------------------------------------------------------------------ named layout transforms
# For modules the project did not write (the conformance suite's ``Runner.wrap``): how a canonical array becomes
# the array a user's layer holds. Each transform is data, an optional squeeze of a trailing 1x1 and an optional
# axis permutation, so its inverse is exact by construction.
@dataclass(frozen=True)
class LayoutTransform:
    """Canonical (torch) layout -> a native layout: drop a trailing ``(1, 1)`` if ``squeeze_1x1``, then permute
    the axes by ``perm``. ``rank`` is the canonical rank it applies to (``None``: any)."""

    name: str
    rank: int | None
    squeeze_1x1: bool
    perm: tuple[int, ...] | None
    description: str

    def _check_canonical(self, shape: tuple[int, ...]) -> None:
        if self.rank is not None and len(shape) != self.rank:
            raise ValueError(f"layout transform {self.name!r} ({self.description}) takes a {self.rank}-D canonical "
                             f"array, got shape {shape}")
        if self.squeeze_1x1 and tuple(shape[2:]) != (1, 1):
            raise ValueError(f"layout transform {self.name!r} ({self.description}) takes a 1x1 kernel (O, I, 1, 1), "
                             f"got shape {shape}")

    def native_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape :meth:`to_native` gives for a canonical ``shape``; a ValueError if it does not apply."""
        shape = tuple(int(s) for s in shape)
        self._check_canonical(shape)
        if self.squeeze_1x1:
            shape = shape[:2]
        return tuple(shape[i] for i in self.perm) if self.perm else shape

    def to_native(self, array: np.ndarray) -> np.ndarray:
        a = np.asarray(array)
        self._check_canonical(a.shape)
        if self.squeeze_1x1:
            a = a.reshape(a.shape[:2])
        return np.ascontiguousarray(np.transpose(a, self.perm)) if self.perm else a

    def from_native(self, array: np.ndarray) -> np.ndarray:
        """The exact inverse of :meth:`to_native`."""
        a = np.asarray(array)
        native_rank = 2 if self.squeeze_1x1 else self.rank
        if native_rank is not None and a.ndim != native_rank:
            raise ValueError(f"layout transform {self.name!r} ({self.description}) gives {native_rank}-D native "
                             f"arrays, got shape {a.shape}")
        if self.perm:
            a = np.ascontiguousarray(np.transpose(a, np.argsort(self.perm)))
        return a.reshape(a.shape + (1, 1)) if self.squeeze_1x1 else a


LAYOUT_TRANSFORMS: Mapping[str, LayoutTransform] = MappingProxyType({t.name: t for t in (
    LayoutTransform("identity", None, False, None, "the canonical layout as is"),
    LayoutTransform("transpose", 2, False, (1, 0), "[out, in] -> [in, out]: Paddle Linear, Flax Dense"),
    LayoutTransform("conv1x1_to_linear", 4, True, None, "(O, I, 1, 1) -> (O, I): torch Linear"),
    LayoutTransform("conv1x1_to_linear_t", 4, True, (1, 0), "(O, I, 1, 1) -> (I, O): Paddle Linear, Flax Dense"),
    LayoutTransform("oihw_to_hwio", 4, False, (2, 3, 1, 0), "(O, I, H, W) -> (H, W, I, O): Flax Conv 2-D"),
    LayoutTransform("oik_to_kio", 3, False, (2, 1, 0), "(O, I, K) -> (K, I, O): Flax Conv 1-D"),
)})


def layout_transform(name: str) -> LayoutTransform:
    """The named transform of :data:`LAYOUT_TRANSFORMS`; an unknown name is a ValueError listing the known."""
    if name not in LAYOUT_TRANSFORMS:
        raise ValueError(f"unknown layout transform {name!r}; known: {', '.join(LAYOUT_TRANSFORMS)}")
    return LAYOUT_TRANSFORMS[name]
