"""PEER CODE (not the project's): timm's attention modules, and how canonical weights map onto them.

timm is imported through :mod:`._timm` (which tolerates a torchvision whose compiled ops do not match torch); any
other failure to import it is reported as the reason timm's rows are missing.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from ._timm import INSTALL_HINT, import_timm, timm_installed


def load_timm() -> tuple[Any | None, str]:
    """``(timm, version)`` or ``(None, why not)``."""
    if not timm_installed():
        return None, f"timm is not installed ({INSTALL_HINT})"
    try:
        timm = import_timm()
    except (ImportError, RuntimeError, AttributeError, OSError) as err:
        return None, f"import timm failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return timm, str(timm.__version__)


def _copy(module: nn.Module, values: Mapping[str, np.ndarray]) -> nn.Module:
    state = module.state_dict()
    with torch.no_grad():
        for key, value in values.items():
            target = state[key]
            if tuple(target.shape) != tuple(value.shape):
                raise ValueError(f"{type(module).__name__}.{key}: shape {tuple(target.shape)}, canonical value "
                                 f"{tuple(value.shape)}")
            target.copy_(torch.from_numpy(np.ascontiguousarray(value)))
    return module


def _spatial_names(prefix: str, w: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """timm ``SpatialAttn``: ``conv`` is a ConvNormAct, so ``conv.weight`` -> ``conv.conv.weight`` and ``bn.*`` ->
    ``conv.bn.*``."""
    out = {"conv.conv.weight": w[prefix + "conv.weight"]}
    for stat in ("weight", "bias", "running_mean", "running_var"):
        out[f"conv.bn.{stat}"] = w[f"{prefix}bn.{stat}"]
    return out


def build(timm: Any, module: str, config: Any, weights: Mapping[str, np.ndarray]) -> nn.Module:
    """timm's module for registry name ``module`` with the hyperparameters of ``config`` (an attn_core config of
    the matching form, see ``benchmarks.plan``), loaded with the canonical ``weights``."""
    from timm.layers import EcaModule, SEModule
    from timm.layers.cbam import CbamModule, ChannelAttn, SpatialAttn

    if module == "se":
        m = SEModule(config.channels, rd_channels=config.hidden)
        return _copy(m, {k: weights[k] for k in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")})
    if module == "eca":
        return _copy(EcaModule(None, kernel_size=config.k), {"conv.weight": weights["conv.weight"]})
    if module == "ca":
        m = ChannelAttn(config.channels, rd_channels=config.hidden)
        return _copy(m, {"fc1.weight": weights["fc1.weight"], "fc2.weight": weights["fc2.weight"]})
    if module == "sa":
        return _copy(SpatialAttn(config.kernel_size), _spatial_names("", weights))
    if module == "cbam":
        m = CbamModule(config.channels, rd_channels=config.channel.hidden,
                       spatial_kernel_size=config.spatial_kernel_size)
        values = {"channel.fc1.weight": weights["channel.fc1.weight"],
                  "channel.fc2.weight": weights["channel.fc2.weight"]}
        values.update({"spatial." + k: v for k, v in _spatial_names("spatial.", weights).items()})
        return _copy(m, values)
    raise KeyError(f"timm has no peer for {module!r}")

