"""Test helpers: build, feed and call a module in any of the three backends from NumPy data."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import numpy as np
import pytest

FRAMEWORKS = ("torch", "paddle", "flax")
_REQUIRES = {"torch": ("torch",), "paddle": ("paddle",), "flax": ("jax", "flax")}


def backend(fw: str) -> Any:
    """The backend package, or a pytest skip naming what is missing."""
    for mod in _REQUIRES[fw]:
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"{mod} not installed")
    return importlib.import_module(f"backends.{fw}")


def tensor(fw: str, array: np.ndarray, dtype: str | None = None) -> Any:
    """A framework tensor of ``array`` as given (no layout change); ``dtype`` defaults to the array's."""
    dtype = dtype or str(array.dtype)
    if fw == "torch":
        import torch
        return torch.tensor(array, dtype=getattr(torch, dtype))
    if fw == "paddle":
        import paddle
        return paddle.to_tensor(array, dtype=dtype)
    import jax.numpy as jnp
    return jnp.asarray(array, dtype=dtype)


def nchw_to_native(fw: str, array: np.ndarray) -> np.ndarray:
    return np.transpose(array, (0, 2, 3, 1)) if fw == "flax" else array


def call(fw: str, module: Any, x: Any, variables: Any = None) -> Any:
    """Forward ``x`` (already in the native layout); for Flax, ``variables`` default to ``module.init``."""
    if fw != "flax":
        return module(x)
    import jax
    if variables is None:
        variables = module.init(jax.random.key(0), x)
    return module.apply(variables, x)


def to_numpy(fw: str, y: Any) -> np.ndarray:
    if fw == "torch":
        return y.detach().numpy()
    return np.asarray(y.numpy() if fw == "paddle" else y)
