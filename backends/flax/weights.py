"""Canonical weight interchange for Flax modules: ``{name: numpy array}`` to and from a variables dict.

Flax modules hold no state, so both functions take the module (for its config) and work on the variables that
``module.apply`` takes: ``{'params': ..., 'batch_stats': ...}`` as plain nested dicts.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from attn_core import from_native, native_location, to_native
from attn_core.spec import ParamSpec


def _table(module: Any) -> tuple[ParamSpec, ...]:
    config = getattr(module, "config", None)
    if config is None or not hasattr(config, "param_table"):
        raise TypeError(f"expected a module of this package (with a .config), got {type(module).__name__}")
    return config.param_table()


def _numpy(value: Any) -> np.ndarray:
    """A NumPy array of ``value``; bfloat16 and other non-NumPy floats become float32."""
    a = np.asarray(value)
    if a.dtype.kind != "f" and jnp.issubdtype(a.dtype, jnp.floating):
        a = a.astype(np.float32)
    return a


def export_weights(module: Any, variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """``variables`` of ``module`` as canonical NumPy arrays (canonical names and layout, their own dtype)."""
    out: dict[str, np.ndarray] = {}
    missing: list[str] = []
    for spec in _table(module):
        collection, path = native_location("flax", spec)
        node: Any = variables.get(collection, {})
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None
        if node is None:
            missing.append(f"{spec.name} ({collection}/{'/'.join(path)})")
            continue
        out[spec.name] = from_native("flax", spec, _numpy(node)).copy()
    if missing:
        raise ValueError(f"{module.config.module_name}: the variables lack " + ", ".join(missing))
    return out


@contextlib.contextmanager
def skip_init() -> Iterator[None]:
    """What torch's and Paddle's ``skip_init`` do, for code written against any backend: a Flax module holds no
    parameters, so building one draws nothing (``module.init`` draws them; :func:`load_weights` needs no draw)."""
    yield


def load_weights(module: Any, weights: Mapping[str, Any], dtype: Any = jnp.float32) -> dict[str, dict[str, Any]]:
    """The variables of ``module`` holding the canonical ``weights``, checked strictly first.

    Raises :class:`attn_core.WeightLoadError` listing every missing, unexpected or mis-shaped entry. Arrays are
    cast to ``dtype`` (float32, Flax's default parameter dtype; ``None`` keeps each array's own).
    """
    table = _table(module)
    arrays = {k: _numpy(v) for k, v in weights.items()}
    module.config.check_weights(arrays)
    # float64 is float32 unless JAX's 64-bit mode is on, as jnp.asarray would make it
    target = None if dtype is None else jax.dtypes.canonicalize_dtype(dtype)
    if target is not None and target != np.dtype(dtype):
        warnings.warn(f"{module.config.module_name}: {np.dtype(dtype).name} weights need JAX's 64-bit mode "
                      f"(jax_enable_x64); loaded as {target.name}", UserWarning, stacklevel=2)
    variables: dict[str, dict[str, Any]] = {}
    for spec in table:
        collection, path = native_location("flax", spec)
        node = variables.setdefault(collection, {})
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = to_device(to_native("flax", spec, arrays[spec.name]), target)
    return variables


def to_device(value: Any, dtype: Any = None) -> Any:
    """``value`` cast to ``dtype`` (``None``: its own) in NumPy and placed on the device as it is:
    ``jnp.asarray(value, dtype)`` compiles an XLA program per shape. Both round to nearest even."""
    a = np.asarray(value)
    return jax.device_put(a if dtype is None else a.astype(dtype))
