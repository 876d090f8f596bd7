"""PEER CODE (not the project's): timm's attention modules, and how canonical weights map onto them.

timm is imported through :mod:`._timm` (which tolerates a torchvision whose compiled ops do not match torch); any
other failure to import it is reported as the reason timm's rows are missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from torch import nn

from ._timm import INSTALL_HINT, import_timm, timm_installed
from .seed_torch import copy_into


def load_timm() -> tuple[Any | None, str]:
    """``(timm, version)`` or ``(None, why not)``."""
    if not timm_installed():
        return None, f"timm is not installed ({INSTALL_HINT})"
    try:
        timm = import_timm()
    except (ImportError, RuntimeError, AttributeError, OSError) as err:
        return None, f"import timm failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return timm, str(timm.__version__)


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
        return copy_into(m, {k: weights[k] for k in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")})
    if module == "eca":
        return copy_into(EcaModule(None, kernel_size=config.k), {"conv.weight": weights["conv.weight"]})
    if module == "ca":
        m = ChannelAttn(config.channels, rd_channels=config.hidden)
        return copy_into(m, {"fc1.weight": weights["fc1.weight"], "fc2.weight": weights["fc2.weight"]})
    if module == "sa":
        return copy_into(SpatialAttn(config.kernel_size), _spatial_names("", weights))
    if module == "cbam":
        m = CbamModule(config.channels, rd_channels=config.channel.hidden,
                       spatial_kernel_size=config.spatial_kernel_size)
        values = {"channel.fc1.weight": weights["channel.fc1.weight"],
                  "channel.fc2.weight": weights["channel.fc2.weight"]}
        values.update({"spatial." + k: v for k, v in _spatial_names("spatial.", weights).items()})
        return copy_into(m, values)
    from benchmarks.plan import TIMM_NAMED

    if module in TIMM_NAMED:  # the canonical names are timm's: its state_dict loads as it is
        import torch
        from timm.layers import create_attn

        m = create_attn(module, getattr(config, "channels", None) or config.in_channels)
        state = m.state_dict()
        unexpected = sorted(set(weights) - set(state))
        missing = sorted(k for k in set(state) - set(weights) if not k.endswith("num_batches_tracked"))
        if unexpected or missing:
            raise KeyError(f"timm's {type(m).__name__} does not hold the canonical weights of {module!r}: missing "
                           f"{missing}, unexpected {unexpected}")
        m.load_state_dict({**state, **{k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()}})
        return m
    raise KeyError(f"timm has no peer for {module!r}")

