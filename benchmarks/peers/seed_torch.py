"""PEER CODE (not the project's): the seed articles' torch modules, re-typed as published.

Seed 001: ``SEModule``. Seed 002: ``SELayer`` (the same code as 001's ``SEModule``, reused), ``ChannelAttention``,
``SpatialAttention``, ``CBAM``. Seed 004: ``eca_layer``. ``SimAMTorch`` is seed 003's Paddle ``simam_module``
written in torch the way the seed would read there (``.pow(2)``, ``n = w * h - 1``), since the seeds have no torch
SimAM. The seeds' ``ChannelAttention`` and ``SpatialAttention`` return the gate, not the gated input; users apply
them as the seed's ``CBAM`` does (``x * ca(x)``), which :class:`GatedBySeed` does.

The code inside the classes is the seeds' (the Chinese comments dropped, the ``assert`` of ``SpatialAttention``
kept, as published). ``load_*`` put the project's canonical weights into them.
"""

# Peer code is kept as its authors wrote it, style and all.
# ruff: noqa
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn


# ------------------------------------------------------------------------------------------- seed 001
class SEModule(nn.Module):
    def __init__(self, channel, reduction=16):
        super(SEModule, self).__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channel, channel // reduction, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(channel // reduction, channel, bias=False),
            nn.Sigmoid()
        )

    def forward(self, x):
        b, c, _, _ = x.size()
        y = self.avg_pool(x).view(b, c)
        y = self.fc(y).view(b, c, 1, 1)
        return x * y.expand_as(x)


# ------------------------------------------------------------------------------------------- seed 002
class SELayer(SEModule):
    """Seed 002's ``SELayer``: published with seed 001's ``SEModule`` code line for line, so that code is kept once."""


class ChannelAttention(nn.Module):
    def __init__(self, in_planes, ratio=16):
        super(ChannelAttention, self).__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.max_pool = nn.AdaptiveMaxPool2d(1)

        self.fc1 = nn.Conv2d(in_planes, in_planes // ratio, 1, bias=False)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Conv2d(in_planes // ratio, in_planes, 1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        avg_out = self.fc2(self.relu1(self.fc1(self.avg_pool(x))))
        max_out = self.fc2(self.relu1(self.fc1(self.max_pool(x))))
        out = avg_out + max_out
        return self.sigmoid(out)


class SpatialAttention(nn.Module):
    def __init__(self, kernel_size=7):
        super(SpatialAttention, self).__init__()

        assert kernel_size in (3, 7), 'kernel size must be 3 or 7'
        padding = 3 if kernel_size == 7 else 1

        self.conv1 = nn.Conv2d(2, 1, kernel_size, padding=padding, bias=False)  # 7,3     3,1
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        avg_out = torch.mean(x, dim=1, keepdim=True)
        max_out, _ = torch.max(x, dim=1, keepdim=True)
        x = torch.cat([avg_out, max_out], dim=1)
        x = self.conv1(x)
        return self.sigmoid(x)


class CBAM(nn.Module):
    def __init__(self, in_planes, ratio=16, kernel_size=7):
        super(CBAM, self).__init__()
        self.ca = ChannelAttention(in_planes, ratio)
        self.sa = SpatialAttention(kernel_size)

    def forward(self, x):
        out = x * self.ca(x)
        result = out * self.sa(out)
        return result


class GatedBySeed(nn.Module):
    """``x * attention(x)``: how seed 002's CBAM applies its ChannelAttention and SpatialAttention (benchmark glue,
    not seed code)."""

    def __init__(self, attention: nn.Module) -> None:
        super().__init__()
        self.attention = attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


# ------------------------------------------------------------------------------------------- seed 004
class eca_layer(nn.Module):
    """Constructs a ECA module.
    Args:
        channel: Number of channels of the input feature map
        k_size: Adaptive selection of kernel size
    """
    def __init__(self, channel, k_size=3):
        super(eca_layer, self).__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=k_size, padding=(k_size - 1) // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        # feature descriptor on the global spatial information
        y = self.avg_pool(x)
        # Two different branches of ECA module
        y = self.conv(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
        # Multi-scale information fusion
        y = self.sigmoid(y)
        return x * y.expand_as(x)


# ---------------------------------------------------------------- seed 003's SimAM, as it would read in torch
class SimAMTorch(nn.Module):
    def __init__(self, channels=None, e_lambda=1e-4):
        super(SimAMTorch, self).__init__()
        self.activaton = nn.Sigmoid()
        self.e_lambda = e_lambda

    def forward(self, x):
        b, c, h, w = x.size()
        n = w * h - 1
        x_minus_mu_square = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
        y = x_minus_mu_square / (4 * (x_minus_mu_square.sum(dim=[2, 3], keepdim=True) / n + self.e_lambda)) + 0.5
        return x * self.activaton(y)


# ------------------------------------------------------------------------------- canonical weights -> peers
def copy_into(module: nn.Module, values: Mapping[str, np.ndarray]) -> nn.Module:
    """Copy ``{state_dict key: array}`` into ``module``; every key must exist with the same shape."""
    state = module.state_dict()
    with torch.no_grad():
        for key, value in values.items():
            target = state[key]
            if tuple(target.shape) != tuple(value.shape):
                raise ValueError(f"{type(module).__name__}.{key}: shape {tuple(target.shape)}, canonical value "
                                 f"{tuple(value.shape)}")
            target.copy_(torch.from_numpy(np.ascontiguousarray(value)))
    return module


def load_seed_se(module: nn.Module, w: Mapping[str, np.ndarray]) -> nn.Module:
    """Seed SE (001 ``SEModule`` / 002 ``SELayer``): ``fc.0.weight`` = ``fc1.weight[:, :, 0, 0]``, ``fc.2.weight``
    = ``fc2.weight[:, :, 0, 0]`` (the project's SE with ``rd_divisor=None, bias=False``)."""
    return copy_into(module, {"fc.0.weight": w["fc1.weight"][:, :, 0, 0], "fc.2.weight": w["fc2.weight"][:, :, 0, 0]})


def load_seed_channel(module: nn.Module, w: Mapping[str, np.ndarray], prefix: str = "") -> nn.Module:
    """Seed 002 ``ChannelAttention``: ``fc1.weight`` and ``fc2.weight`` are 1x1 convolutions, as canonical."""
    return copy_into(module, {"fc1.weight": w[prefix + "fc1.weight"], "fc2.weight": w[prefix + "fc2.weight"]})


def load_seed_spatial(module: nn.Module, w: Mapping[str, np.ndarray], prefix: str = "") -> nn.Module:
    """Seed 002 ``SpatialAttention``: ``conv1.weight`` = ``conv.weight`` (mean map first, as canonical)."""
    return copy_into(module, {"conv1.weight": w[prefix + "conv.weight"]})


def load_seed_cbam(module: nn.Module, w: Mapping[str, np.ndarray]) -> nn.Module:
    """Seed 002 ``CBAM``: ``ca.*`` = ``channel.*``, ``sa.conv1.weight`` = ``spatial.conv.weight``."""
    load_seed_channel(module.ca, w, "channel.")
    load_seed_spatial(module.sa, w, "spatial.")
    return module


def load_seed_eca(module: nn.Module, w: Mapping[str, np.ndarray]) -> nn.Module:
    """Seed 004 ``eca_layer``: ``conv.weight`` (1, 1, k) = ``conv.weight``."""
    return copy_into(module, {"conv.weight": w["conv.weight"]})


# benchmark glue: the names the drivers build each framework's seeds by (benchmarks/frameworks/base.py)
SE = SEModule
SIMAM = SimAMTorch
