"""PEER CODE (not the project's): seed 003's Paddle ``simam_module``, and the torch seeds transcribed to Paddle.

``simam_module`` is seed 003's class as published (``.pow(2)``, ``n = w * h - 1``), minus its unused import
``from paddle.fluid.layers.nn import transpose``, which Paddle 3 no longer has. The seeds have no Paddle SE, ECA or
CBAM; ``SELayer``, ``ChannelAttention``, ``SpatialAttention``, ``CBAM`` and ``eca_layer`` below are seed 002's
and seed 004's torch code written line for line with Paddle's layers, as a user porting them would (``nn.Linear``
keeps its weight as [in, out], the one layout difference).
"""

# Peer code is kept as its authors wrote it, style and all.
# ruff: noqa
from __future__ import annotations

from typing import Mapping

import numpy as np
import paddle
import paddle.nn as nn


# ------------------------------------------------------------------------------------------- seed 003
class simam_module(nn.Layer):
    def __init__(self, channels, e_lambda = 1e-4):
        super(simam_module, self).__init__()
        self.activaton = nn.Sigmoid()
        self.e_lambda = e_lambda

    def __repr__(self):
        s = self.__class__.__name__ + '('
        s += ('lambda=%f)' % self.e_lambda)
        return s

    @staticmethod
    def get_module_name():
        return "simam"

    def forward(self, x):
        b, c, h, w = x.shape
        n = w * h - 1
        x_minus_mu_square = (x - x.mean(axis=[2,3], keepdim=True)).pow(2)
        y = x_minus_mu_square / (4 * (x_minus_mu_square.sum(axis=[2,3], keepdim=True) / n + self.e_lambda)) + 0.5
        return x * self.activaton(y)


# ------------------------------------------------------------- seeds 002 and 004, transcribed to Paddle
class SELayer(nn.Layer):
    def __init__(self, channel, reduction=16):
        super(SELayer, self).__init__()
        self.avg_pool = nn.AdaptiveAvgPool2D(1)
        self.fc = nn.Sequential(
            nn.Linear(channel, channel // reduction, bias_attr=False),
            nn.ReLU(),
            nn.Linear(channel // reduction, channel, bias_attr=False),
            nn.Sigmoid()
        )

    def forward(self, x):
        b, c, _, _ = x.shape
        y = self.avg_pool(x).reshape([b, c])
        y = self.fc(y).reshape([b, c, 1, 1])
        return x * y.expand_as(x)


class ChannelAttention(nn.Layer):
    def __init__(self, in_planes, ratio=16):
        super(ChannelAttention, self).__init__()
        self.avg_pool = nn.AdaptiveAvgPool2D(1)
        self.max_pool = nn.AdaptiveMaxPool2D(1)

        self.fc1 = nn.Conv2D(in_planes, in_planes // ratio, 1, bias_attr=False)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Conv2D(in_planes // ratio, in_planes, 1, bias_attr=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        avg_out = self.fc2(self.relu1(self.fc1(self.avg_pool(x))))
        max_out = self.fc2(self.relu1(self.fc1(self.max_pool(x))))
        out = avg_out + max_out
        return self.sigmoid(out)


class SpatialAttention(nn.Layer):
    def __init__(self, kernel_size=7):
        super(SpatialAttention, self).__init__()

        assert kernel_size in (3, 7), 'kernel size must be 3 or 7'
        padding = 3 if kernel_size == 7 else 1

        self.conv1 = nn.Conv2D(2, 1, kernel_size, padding=padding, bias_attr=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        avg_out = paddle.mean(x, axis=1, keepdim=True)
        max_out = paddle.max(x, axis=1, keepdim=True)
        x = paddle.concat([avg_out, max_out], axis=1)
        x = self.conv1(x)
        return self.sigmoid(x)


class CBAM(nn.Layer):
    def __init__(self, in_planes, ratio=16, kernel_size=7):
        super(CBAM, self).__init__()
        self.ca = ChannelAttention(in_planes, ratio)
        self.sa = SpatialAttention(kernel_size)

    def forward(self, x):
        out = x * self.ca(x)
        result = out * self.sa(out)
        return result


class eca_layer(nn.Layer):
    def __init__(self, channel, k_size=3):
        super(eca_layer, self).__init__()
        self.avg_pool = nn.AdaptiveAvgPool2D(1)
        self.conv = nn.Conv1D(1, 1, kernel_size=k_size, padding=(k_size - 1) // 2, bias_attr=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        y = self.avg_pool(x)
        y = self.conv(y.squeeze(-1).transpose([0, 2, 1])).transpose([0, 2, 1]).unsqueeze(-1)
        y = self.sigmoid(y)
        return x * y.expand_as(x)


class GatedBySeed(nn.Layer):
    """``x * attention(x)``: how seed 002's CBAM applies its ChannelAttention and SpatialAttention (benchmark glue,
    not seed code)."""

    def __init__(self, attention: nn.Layer) -> None:
        super().__init__()
        self.attention = attention

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return x * self.attention(x)


# ------------------------------------------------------------------------------- canonical weights -> peers
def _copy(layer: nn.Layer, values: Mapping[str, np.ndarray]) -> nn.Layer:
    """Copy ``{state_dict key: array}`` into ``layer``; every key must exist with the same shape."""
    state = layer.state_dict()
    for key, value in values.items():
        target = state[key]
        if tuple(int(s) for s in target.shape) != tuple(value.shape):
            raise ValueError(f"{type(layer).__name__}.{key}: shape {tuple(target.shape)}, canonical value "
                             f"{tuple(value.shape)}")
        target.set_value(np.ascontiguousarray(value).astype(np.float32))
    return layer


def load_seed_se(layer: nn.Layer, w: Mapping[str, np.ndarray]) -> nn.Layer:
    """``SELayer``: Paddle's Linear weight is [in, out]: ``fc.0.weight`` = ``fc1.weight[:, :, 0, 0].T``."""
    return _copy(layer, {"fc.0.weight": w["fc1.weight"][:, :, 0, 0].T, "fc.2.weight": w["fc2.weight"][:, :, 0, 0].T})


def load_seed_channel(layer: nn.Layer, w: Mapping[str, np.ndarray], prefix: str = "") -> nn.Layer:
    return _copy(layer, {"fc1.weight": w[prefix + "fc1.weight"], "fc2.weight": w[prefix + "fc2.weight"]})


def load_seed_spatial(layer: nn.Layer, w: Mapping[str, np.ndarray], prefix: str = "") -> nn.Layer:
    return _copy(layer, {"conv1.weight": w[prefix + "conv.weight"]})


def load_seed_cbam(layer: nn.Layer, w: Mapping[str, np.ndarray]) -> nn.Layer:
    load_seed_channel(layer.ca, w, "channel.")
    load_seed_spatial(layer.sa, w, "spatial.")
    return layer


def load_seed_eca(layer: nn.Layer, w: Mapping[str, np.ndarray]) -> nn.Layer:
    return _copy(layer, {"conv.weight": w["conv.weight"]})
