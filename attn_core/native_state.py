"""A framework's own checkpoint contents -> canonical weights, strictly, with NumPy alone.

A torch or Paddle ``state_dict`` is a flat ``{dotted key: array}``; Flax variables are nested
``{'params': ..., 'batch_stats': ...}``, flattened here to ``'params/conv1/kernel'`` keys. Where each canonical
parameter lives and how its layout converts is :mod:`attn_core.layout`'s table; this module only applies it to a
whole file and lists everything that does not fit, in the file's own names, before anything is converted.
A framework's BatchNorm counters (torch's ``num_batches_tracked``, ``FrameworkInfo.bn_counter``) have no
canonical entry (no forward pass reads them) and are dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .checkpoint import CheckpointError
from .frameworks import framework_info
from .layout import from_native, native_key, to_native
from .spec import AttentionConfig, ParamSpec, WeightLoadError

__all__ = ["native_keys", "flatten_variables", "canonical_from_native"]



def native_keys(framework: str, config: AttentionConfig) -> dict[str, ParamSpec]:
    """The framework's key of every canonical parameter of ``config`` (Flax: ``'collection/path/leaf'``)."""
    return {native_key(framework, spec): spec for spec in config.param_table()}


def flatten_variables(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested Flax variables -> ``{'params/conv1/kernel': leaf}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten_variables(value, name))
        else:
            out[name] = value
    return out


def _models_with_keys(framework: str, keys: set[str]) -> list[str]:
    """Registered models (default configs) whose keys in ``framework`` are exactly ``keys``."""
    from .models import MODEL_CONFIGS

    return [m for m in MODEL_CONFIGS if set(native_keys(framework, MODEL_CONFIGS[m]())) == keys]


def _native_shape(framework: str, spec: ParamSpec) -> tuple[int, ...]:
    return to_native(framework, spec, np.broadcast_to(np.uint8(0), spec.shape)).shape


def canonical_from_native(framework: str, config: AttentionConfig, state: Mapping[str, Any],
                          source: str = "checkpoint", model: str | None = None) -> dict[str, np.ndarray]:
    """``state`` (the framework's keys -> arrays) as canonical weights of ``config``.

    Raises :class:`WeightLoadError` listing, in the framework's names, every missing, unexpected, mis-shaped and
    non-floating entry (``source``, the file, is named in its first line), or a CheckpointError naming the
    registered models whose keys ``state`` holds when it holds another model's than ``model`` (a registered name).
    """
    keys = native_keys(framework, config)
    arrays = {k: np.asarray(v) for k, v in state.items()}
    counter = framework_info(framework).bn_counter
    if counter is not None:
        suffix = "." + counter
        owners = {k[: -len(spec.name.rpartition(".")[2]) - 1] for k, spec in keys.items() if spec.role == "bn_mean"}
        arrays = {k: v for k, v in arrays.items() if not (k.endswith(suffix) and k[: -len(suffix)] in owners)}
    missing = [k for k in keys if k not in arrays]
    unexpected = sorted(k for k in arrays if k not in keys)
    mismatched, bad_dtype = [], []
    for k, spec in keys.items():
        if k not in arrays:
            continue
        want = _native_shape(framework, spec)
        if arrays[k].shape != want:
            mismatched.append((k, want, arrays[k].shape))
        if arrays[k].dtype.kind != "f":
            bad_dtype.append(k)
    if missing or unexpected or mismatched or bad_dtype:
        err = WeightLoadError(f"{config.module_name} ({framework} {source})", missing, unexpected, mismatched,
                              bad_dtype)
        others = _models_with_keys(framework, set(arrays)) if missing or unexpected else []
        if others:
            asked = model or f"this {config.module_name}"
            raise CheckpointError(f"{source} holds the parameters of {' / '.join(others)}, not of {asked}; "
                                  f"nothing was converted\n{err}") from None
        raise err
    return {spec.name: from_native(framework, spec, arrays[k]) for k, spec in keys.items()}
