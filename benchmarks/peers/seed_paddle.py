"""PEER CODE (not the project's): seed 003's Paddle ``simam_module`` and ``TowerNet``, and the torch seeds transcribed
to Paddle.

``simam_module`` is seed 003's class as published (``.pow(2)``, ``n = w * h - 1``), minus its unused import
``from paddle.fluid.layers.nn import transpose``, which Paddle 3 no longer has; ``Inception``, ``BasicConv2d`` and
``TowerNet`` are the article's model around it, as published (the article builds ``TowerNet(3, class_dim)`` with
``class_dim`` 16). The seeds have no Paddle SE, ECA or
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
import paddle.nn.functional as F


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


# 构建模型(Inception层)
class Inception(paddle.nn.Layer):
    def __init__(self, in_channels, c1, c2, c3, c4):
        super(Inception, self).__init__()
        # 路线1,卷积核1x1
        self.route1x1_1 = paddle.nn.Conv2D(in_channels, c1, kernel_size=1)
        # 路线2,卷积层1x1、卷积层3x3
        self.route1x1_2 = paddle.nn.Conv2D(in_channels, c2[0], kernel_size=1)
        self.route3x3_2 = paddle.nn.Conv2D(c2[0], c2[1], kernel_size=3, padding=1)
        # 路线3,卷积层1x1、卷积层5x5
        self.route1x1_3 = paddle.nn.Conv2D(in_channels, c3[0], kernel_size=1)
        self.route5x5_3 = paddle.nn.Conv2D(c3[0], c3[1], kernel_size=5, padding=2)
        # 路线4,池化层3x3、卷积层1x1
        self.route3x3_4 = paddle.nn.MaxPool2D(kernel_size=3, stride=1, padding=1)
        self.route1x1_4 = paddle.nn.Conv2D(in_channels, c4, kernel_size=1)

    def forward(self, x):
        route1 = F.relu(self.route1x1_1(x))
        route2 = F.relu(self.route3x3_2(F.relu(self.route1x1_2(x))))
        route3 = F.relu(self.route5x5_3(F.relu(self.route1x1_3(x))))
        route4 = F.relu(self.route1x1_4(self.route3x3_4(x)))
        out = [route1, route2, route3, route4]
        return paddle.concat(out, axis=1)  # 在通道维度(axis=1)上进行连接

# 构建 BasicConv2d 层
def BasicConv2d(in_channels, out_channels, kernel, stride=1, padding=0):
    layer = paddle.nn.Sequential(
        paddle.nn.Conv2D(in_channels, out_channels, kernel, stride, padding),
        paddle.nn.BatchNorm2D(out_channels, epsilon=1e-3),
        paddle.nn.ReLU())
    return layer

# 搭建网络
class TowerNet(paddle.nn.Layer):
    def __init__(self, in_channel, num_classes):
        super(TowerNet, self).__init__()
        self.b1 = paddle.nn.Sequential(
            BasicConv2d(in_channel, out_channels=64, kernel=3, stride=2, padding=1),
            paddle.nn.MaxPool2D(2, 2))
        self.b2 = paddle.nn.Sequential(
            BasicConv2d(64, 128, kernel=3, padding=1),
            paddle.nn.MaxPool2D(2, 2))
        self.b3 = paddle.nn.Sequential(
            BasicConv2d(128, 256, kernel=3, padding=1),
            paddle.nn.MaxPool2D(2, 2),
            simam_module(256))
        self.b4 = paddle.nn.Sequential(
            BasicConv2d(256, 256, kernel=3, padding=1),
            paddle.nn.MaxPool2D(2, 2),
            simam_module(256))
        self.b5 = paddle.nn.Sequential(
            Inception(256, 64, (64, 128), (16, 32), 32),
            paddle.nn.MaxPool2D(2, 2),
            simam_module(256),
            Inception(256, 64, (64, 128), (16, 32), 32),
            paddle.nn.MaxPool2D(2, 2),
            simam_module(256),
            Inception(256, 64, (64, 128), (16, 32), 32))
        self.AvgPool2D = paddle.nn.AvgPool2D(2)
        self.flatten = paddle.nn.Flatten()
        self.b6 = paddle.nn.Linear(256, num_classes)

    def forward(self, x):
        x = self.b1(x)
        x = self.b2(x)
        x = self.b3(x)
        x = self.b4(x)
        x = self.b5(x)
        x = self.AvgPool2D(x)
        x = self.flatten(x)
        x = self.b6(x)
        return x


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


# benchmark glue: the names the drivers build each framework's seeds by (benchmarks/frameworks/base.py)
SE = SELayer
SIMAM = simam_module
