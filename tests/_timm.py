"""timm for the parity tests: the benchmarks' import (``benchmarks/peers/_timm.py``, which tolerates a torchvision
whose compiled ops do not match the installed torch), or a skip when timm is not installed (test code only); timm's
attention modules with every parameter and buffer drawn at random, and what they compute, as float64 NumPy."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from benchmarks.peers._timm import INSTALL_HINT, timm_installed
from benchmarks.peers._timm import import_timm as _import_timm


def import_timm() -> Any:
    """``timm``, or a pytest skip when it is not installed; any other import failure fails the test."""
    if not timm_installed():
        pytest.skip(f"timm is not installed ({INSTALL_HINT})")
    return _import_timm()


def act_class(name: str) -> Any:
    """The torch activation class that timm's modules take as ``act_layer`` (they call ``act_layer(inplace=True)``)
    for the project's activation name."""
    from torch import nn

    return {"relu": nn.ReLU, "silu": nn.SiLU}[name]


def timm_kwargs(options: dict[str, Any]) -> dict[str, Any]:
    """The project's options as timm's keyword arguments: ``act_layer`` as its class (:func:`act_class`)."""
    out = dict(options)
    if "act_layer" in out:
        out["act_layer"] = act_class(out["act_layer"])
    return out


def randomise(module: Any, rng: np.random.Generator | int, low: float = 0.2,
              fan_in_scaled: bool = False) -> dict[str, Any]:
    """Every parameter and BatchNorm statistic of the torch module ``module`` drawn at random and loaded strictly:
    magnitudes ``low`` .. 1 with random signs (no zeros: a layer initialised to zero or one would hide a mix-up), with
    ``fan_in_scaled`` those of the weights divided by ``sqrt(fan_in) / 2``, running variances 0.5 .. 2, the
    ``num_batches_tracked`` counts as they were. Returns the state_dict loaded, tensors of its own that a training
    step leaves as they are."""
    import torch

    rng = np.random.default_rng(rng)
    state = {}
    for name, value in module.state_dict().items():
        if name.endswith("num_batches_tracked"):
            state[name] = value.clone()
            continue
        if name.endswith("running_var"):
            draw = rng.uniform(0.5, 2.0, value.shape)
        else:
            draw = rng.uniform(low, 1.0, value.shape) * rng.choice([-1.0, 1.0], value.shape)
            if fan_in_scaled and value.dim() > 1:
                draw = draw * 2.0 / math.sqrt(math.prod(value.shape[1:]))
        state[name] = torch.tensor(draw, dtype=value.dtype)
    module.load_state_dict(state, strict=True)
    return state


def timm_attn(key: str, channels: int, rng: np.random.Generator | int, low: float = 0.2, **kwargs: Any) -> Any:
    """timm's ``create_attn(key, channels, **kwargs)`` in float64, every parameter and buffer drawn by
    :func:`randomise` (magnitudes from ``low``)."""
    module = import_timm().layers.create_attn(key, channels, **kwargs).double()
    randomise(module, rng, low)
    return module


def canonical(state: Any) -> dict[str, np.ndarray]:
    """A torch module's state_dict (or the state_dict given) as canonical weights: NumPy copies, without the
    ``num_batches_tracked`` counts."""
    items = state.items() if isinstance(state, dict) else state.state_dict().items()
    return {k: v.detach().numpy().copy() for k, v in items if not k.endswith("num_batches_tracked")}


def torch_step(module: Any, x: np.ndarray, cot: np.ndarray | None,
               training: bool) -> tuple[np.ndarray, np.ndarray | None, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One step of the torch module ``module`` on ``x`` in train or eval mode: its output, the input and parameter
    gradients of ``sum(y * cot)`` (None and empty without ``cot``), and its running statistics after the step."""
    import torch

    module.train(training)
    module.zero_grad()
    xt = torch.tensor(x, requires_grad=cot is not None)
    y = module(xt)
    grads: dict[str, np.ndarray] = {}
    if cot is not None:
        y.backward(torch.tensor(cot))
        grads = {k: p.grad.numpy().copy() for k, p in module.named_parameters()}
    state = {k: v.numpy().copy() for k, v in module.state_dict().items()
             if k.endswith(("running_mean", "running_var"))}
    return y.detach().numpy(), None if cot is None else xt.grad.numpy(), grads, state
