"""Canonical weight interchange for Paddle modules: export to and strict load from ``{name: numpy array}``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import paddle
from paddle import nn

from attn_core import from_native, native_location, to_native
from attn_core.spec import ParamSpec

_WIDEN = (paddle.bfloat16,)  # NumPy has no bfloat16: Paddle hands out its bits as uint16


def _table(module: nn.Layer) -> tuple[ParamSpec, ...]:
    config = getattr(module, "config", None)
    if config is None or not hasattr(config, "param_table"):
        raise TypeError(f"expected a module of this package (with a .config), got {type(module).__name__}")
    return config.param_table()


def _key(spec: ParamSpec) -> str:
    return ".".join(native_location("paddle", spec)[1])


def _numpy(t: paddle.Tensor) -> np.ndarray:
    return (t.astype("float32") if t.dtype in _WIDEN else t).detach().cpu().numpy()


def export_weights(module: nn.Layer) -> dict[str, np.ndarray]:
    """The module's parameters and BatchNorm running statistics as canonical NumPy arrays (its own dtype)."""
    state = module.state_dict()
    return {spec.name: from_native("paddle", spec, _numpy(state[_key(spec)])).copy() for spec in _table(module)}


@contextlib.contextmanager
def skip_init() -> Iterator[None]:
    """Layers built inside start with every parameter that has no initializer of its own at zero instead of drawing
    it (Paddle's global initializer), for a :func:`load_weights` that replaces every one: drawing a ResNet-50's
    initial weights takes longer than loading them. The global initializer holds for the whole process while it
    lasts; the one set before is restored."""
    from paddle.base import initializer

    before = initializer._global_weight_initializer(), initializer._global_bias_initializer()
    nn.initializer.set_global_initializer(nn.initializer.Constant(0.0), nn.initializer.Constant(0.0))
    try:
        yield
    finally:
        nn.initializer.set_global_initializer(*before)


def load_weights(module: nn.Layer, weights: Mapping[str, Any]) -> nn.Layer:
    """Load canonical weights strictly: every entry must exist with its canonical shape, and no other.

    Raises :class:`attn_core.WeightLoadError` listing every missing, unexpected or mis-shaped entry, before
    anything is written. Values are cast to each parameter's dtype. Returns the module.
    """
    arrays = {k: _numpy(v) if isinstance(v, paddle.Tensor) else np.asarray(v) for k, v in weights.items()}
    module.config.check_weights(arrays)  # type: ignore[union-attr]
    state = module.state_dict()
    with paddle.no_grad():
        for spec in _table(module):
            target = state[_key(spec)]
            value = paddle.to_tensor(to_native("paddle", spec, arrays[spec.name]), place=target.place)
            target.set_value(value.astype(target.dtype))
    return module
