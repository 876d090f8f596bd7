"""Canonical weight interchange for torch modules: export to and strict load from ``{name: numpy array}``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import numpy as np
import torch
from torch import nn
from torch.nn import init

from attn_core import from_native, native_location, to_native
from attn_core.spec import ParamSpec


def _table(module: nn.Module) -> tuple[ParamSpec, ...]:
    config = getattr(module, "config", None)
    if config is None or not hasattr(config, "param_table"):
        raise TypeError(f"expected a module of this package (with a .config), got {type(module).__name__}")
    return config.param_table()


def _key(spec: ParamSpec) -> str:
    return ".".join(native_location("torch", spec)[1])


def export_weights(module: nn.Module) -> dict[str, np.ndarray]:
    """The module's parameters and BatchNorm running statistics as canonical NumPy arrays (its own dtype)."""
    state = module.state_dict()
    out = {}
    for spec in _table(module):
        t = state[_key(spec)].detach().cpu()
        if t.dtype == torch.bfloat16:
            t = t.float()
        out[spec.name] = from_native("torch", spec, t.numpy()).copy()
    return out


#: the ``torch.nn.init`` functions a module's constructor draws or sets its parameters with
_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
                   "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_",
                   "sparse_")


def _zeroed(tensor: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
    with torch.no_grad():
        return tensor.zero_()


@contextlib.contextmanager
def skip_init() -> Iterator[None]:
    """Modules built inside start with every parameter that ``torch.nn.init`` sets at zero instead of drawn (one made
    from a tensor, such as GCT's ``alpha``, keeps its value), for a :func:`load_weights` that replaces every one:
    drawing a ResNet-50's initial weights takes longer than loading them. It changes ``torch.nn.init`` for the whole
    process while it lasts (not for threads that build a module to train)."""
    saved = {name: getattr(init, name) for name in _INIT_FUNCTIONS}
    try:
        for name in saved:
            setattr(init, name, _zeroed)
        yield
    finally:
        for name, function in saved.items():
            setattr(init, name, function)


def load_weights(module: nn.Module, weights: Mapping[str, np.ndarray]) -> nn.Module:
    """Load canonical weights strictly: every entry must exist with its canonical shape, and no other.

    Raises :class:`attn_core.WeightLoadError` listing every missing, unexpected or mis-shaped entry, before
    anything is written. Values are cast to each parameter's dtype. Returns the module.
    """
    arrays = {k: np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in weights.items()}
    module.config.check_weights(arrays)  # type: ignore[union-attr]
    state = module.state_dict()
    with torch.no_grad():
        for spec in _table(module):
            target = state[_key(spec)]
            target.copy_(torch.from_numpy(np.ascontiguousarray(to_native("torch", spec, arrays[spec.name]))))
    return module
