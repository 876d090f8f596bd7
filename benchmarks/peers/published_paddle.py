"""PEER CODE (not the project's): the published torch code of the modules timm lacks (``published_torch``)
transcribed to Paddle, and how canonical weights load into it.

None of these modules has a Paddle version by its authors; these classes are theirs written with Paddle's layers,
as a user porting them would: the same constructor arguments and defaults, the same submodule names (so the
published state_dict names, the canonical ones, address the same tensors), the same forward, NCHW. The differences
are Paddle's: ``nn.Linear`` keeps its weight as (in, out), BatchNorm names its running statistics ``_mean`` /
``_variance`` and its momentum is 1 - torch's, ``LayerNorm([k, 1, 1])`` keeps a weight of k values, a bare
parameter is ``create_parameter``, ``reshape`` / ``transpose`` take full shapes. GCT's unknown mode raises instead
of calling ``sys.exit``.
"""

# the authors' percent formats kept, as published
# ruff: noqa: UP031
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn


def _constant(layer: nn.Layer, shape: list[int], value: float) -> paddle.Tensor:
    return layer.create_parameter(shape, default_initializer=nn.initializer.Constant(value))


def _batch_norm_2d(channels: int, eps: float = 1e-5, momentum: float = 0.1) -> nn.BatchNorm2D:
    """torch's ``nn.BatchNorm2d(channels, eps, momentum)``: Paddle's momentum is the weight of the old statistics."""
    return nn.BatchNorm2D(channels, momentum=1.0 - momentum, epsilon=eps)


# ------------------------------------------------------------------------------------------ SRM
class SRMLayer(nn.Layer):
    def __init__(self, channel: int):
        super().__init__()
        self.cfc = _constant(self, [channel, 2], 0.0)
        self.bn = _batch_norm_2d(channel)
        self.activation = nn.Sigmoid()

    def _style_pooling(self, x: paddle.Tensor, eps: float = 1e-5) -> paddle.Tensor:
        N, C, _, _ = x.shape
        channel_mean = x.reshape([N, C, -1]).mean(axis=2, keepdim=True)
        channel_var = x.reshape([N, C, -1]).var(axis=2, keepdim=True) + eps  # unbiased, as torch's var
        channel_std = channel_var.sqrt()
        t = paddle.concat((channel_mean, channel_std), axis=2)
        return t

    def _style_integration(self, t: paddle.Tensor) -> paddle.Tensor:
        z = t * self.cfc[None, :, :]
        z = paddle.sum(z, axis=2)[:, :, None, None]
        z_hat = self.bn(z)
        g = self.activation(z_hat)
        return g

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        t = self._style_pooling(x)
        g = self._style_integration(t)
        return x * g


# ------------------------------------------------------------------------------------------ GCT
class GCT(nn.Layer):
    def __init__(self, num_channels: int, epsilon: float = 1e-5, mode: str = "l2", after_relu: bool = False):
        super().__init__()
        self.alpha = _constant(self, [1, num_channels, 1, 1], 1.0)
        self.gamma = _constant(self, [1, num_channels, 1, 1], 0.0)
        self.beta = _constant(self, [1, num_channels, 1, 1], 0.0)
        self.epsilon = epsilon
        self.mode = mode
        self.after_relu = after_relu

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if self.mode == "l2":
            embedding = (x.pow(2).sum(axis=[2, 3], keepdim=True) + self.epsilon).pow(0.5) * self.alpha
            norm = self.gamma / (embedding.pow(2).mean(axis=1, keepdim=True) + self.epsilon).pow(0.5)
        elif self.mode == "l1":
            if not self.after_relu:
                _x = paddle.abs(x)
            else:
                _x = x
            embedding = _x.sum(axis=[2, 3], keepdim=True) * self.alpha
            norm = self.gamma / (paddle.abs(embedding).mean(axis=1, keepdim=True) + self.epsilon)
        else:
            raise ValueError(f"Unknown mode! {self.mode!r}")
        gate = 1.0 + paddle.tanh(embedding * norm + self.beta)
        return x * gate


# ------------------------------------------------------------------------------------------ SA-Net
class sa_layer(nn.Layer):  # noqa: N801 - as published
    def __init__(self, channel: int, groups: int = 64):
        super().__init__()
        self.groups = groups
        self.avg_pool = nn.AdaptiveAvgPool2D(1)
        self.cweight = _constant(self, [1, channel // (2 * groups), 1, 1], 0.0)
        self.cbias = _constant(self, [1, channel // (2 * groups), 1, 1], 1.0)
        self.sweight = _constant(self, [1, channel // (2 * groups), 1, 1], 0.0)
        self.sbias = _constant(self, [1, channel // (2 * groups), 1, 1], 1.0)
        self.sigmoid = nn.Sigmoid()
        self.gn = nn.GroupNorm(channel // (2 * groups), channel // (2 * groups))

    @staticmethod
    def channel_shuffle(x: paddle.Tensor, groups: int) -> paddle.Tensor:
        b, c, h, w = x.shape
        x = x.reshape([b, groups, -1, h, w])
        x = x.transpose([0, 2, 1, 3, 4])
        x = x.reshape([b, -1, h, w])
        return x

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        b, c, h, w = x.shape
        x = x.reshape([b * self.groups, -1, h, w])
        x_0, x_1 = x.chunk(2, axis=1)
        xn = self.avg_pool(x_0)
        xn = self.cweight * xn + self.cbias
        xn = x_0 * self.sigmoid(xn)
        xs = self.gn(x_1)
        xs = self.sweight * xs + self.sbias
        xs = x_1 * self.sigmoid(xs)
        out = paddle.concat([xn, xs], axis=1)
        out = out.reshape([b, -1, h, w])
        out = self.channel_shuffle(out, 2)
        return out


# ------------------------------------------------------------------------------------------ triplet attention
class BasicConv(nn.Layer):
    def __init__(self, in_planes: int, out_planes: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 dilation: int = 1, groups: int = 1, relu: bool = True, bn: bool = True, bias: bool = False):
        super().__init__()
        self.out_channels = out_planes
        self.conv = nn.Conv2D(in_planes, out_planes, kernel_size=kernel_size, stride=stride, padding=padding,
                              dilation=dilation, groups=groups, bias_attr=None if bias else False)
        self.bn = _batch_norm_2d(out_planes, eps=1e-5, momentum=0.01) if bn else None
        self.relu = nn.ReLU() if relu else None

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.relu is not None:
            x = self.relu(x)
        return x


class ChannelPool(nn.Layer):
    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return paddle.concat((x.max(axis=1).unsqueeze(1), x.mean(axis=1).unsqueeze(1)), axis=1)


class SpatialGate(nn.Layer):
    def __init__(self) -> None:
        super().__init__()
        kernel_size = 7
        self.compress = ChannelPool()
        self.spatial = BasicConv(2, 1, kernel_size, stride=1, padding=(kernel_size - 1) // 2, relu=False)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x_compress = self.compress(x)
        x_out = self.spatial(x_compress)
        scale = F.sigmoid(x_out)
        return x * scale


class TripletAttention(nn.Layer):
    def __init__(self, gate_channels: int, reduction_ratio: int = 16, pool_types: tuple[str, ...] = ("avg", "max"),
                 no_spatial: bool = False):
        super().__init__()
        self.ChannelGateH = SpatialGate()
        self.ChannelGateW = SpatialGate()
        self.no_spatial = no_spatial
        if not no_spatial:
            self.SpatialGate = SpatialGate()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x_perm1 = x.transpose([0, 2, 1, 3])
        x_out1 = self.ChannelGateH(x_perm1)
        x_out11 = x_out1.transpose([0, 2, 1, 3])
        x_perm2 = x.transpose([0, 3, 2, 1])
        x_out2 = self.ChannelGateW(x_perm2)
        x_out21 = x_out2.transpose([0, 3, 2, 1])
        if not self.no_spatial:
            x_out = self.SpatialGate(x)
            x_out = (1 / 3) * (x_out + x_out11 + x_out21)
        else:
            x_out = (1 / 2) * (x_out11 + x_out21)
        return x_out


# ------------------------------------------------------------------------------------------ BAM
class Flatten(nn.Layer):
    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return x.reshape([x.shape[0], -1])


class ChannelGate(nn.Layer):
    def __init__(self, gate_channel: int, reduction_ratio: int = 16, num_layers: int = 1):
        super().__init__()
        self.gate_c = nn.Sequential()
        self.gate_c.add_sublayer("flatten", Flatten())
        gate_channels = [gate_channel]
        gate_channels += [gate_channel // reduction_ratio] * num_layers
        gate_channels += [gate_channel]
        for i in range(len(gate_channels) - 2):
            self.gate_c.add_sublayer("gate_c_fc_%d" % i, nn.Linear(gate_channels[i], gate_channels[i + 1]))
            self.gate_c.add_sublayer("gate_c_bn_%d" % (i + 1), nn.BatchNorm1D(gate_channels[i + 1], momentum=0.9))
            self.gate_c.add_sublayer("gate_c_relu_%d" % (i + 1), nn.ReLU())
        self.gate_c.add_sublayer("gate_c_fc_final", nn.Linear(gate_channels[-2], gate_channels[-1]))

    def forward(self, in_tensor: paddle.Tensor) -> paddle.Tensor:
        avg_pool = F.avg_pool2d(in_tensor, in_tensor.shape[2], stride=in_tensor.shape[2])
        return self.gate_c(avg_pool).unsqueeze(2).unsqueeze(3).expand_as(in_tensor)


class BAMSpatialGate(nn.Layer):
    """The authors' ``SpatialGate`` of ``bam.py`` (renamed here: triplet attention's has the name)."""

    def __init__(self, gate_channel: int, reduction_ratio: int = 16, dilation_conv_num: int = 2,
                 dilation_val: int = 4):
        super().__init__()
        self.gate_s = nn.Sequential()
        self.gate_s.add_sublayer("gate_s_conv_reduce0",
                                 nn.Conv2D(gate_channel, gate_channel // reduction_ratio, kernel_size=1))
        self.gate_s.add_sublayer("gate_s_bn_reduce0", _batch_norm_2d(gate_channel // reduction_ratio))
        self.gate_s.add_sublayer("gate_s_relu_reduce0", nn.ReLU())
        for i in range(dilation_conv_num):
            self.gate_s.add_sublayer("gate_s_conv_di_%d" % i, nn.Conv2D(
                gate_channel // reduction_ratio, gate_channel // reduction_ratio, kernel_size=3,
                padding=dilation_val, dilation=dilation_val))
            self.gate_s.add_sublayer("gate_s_bn_di_%d" % i, _batch_norm_2d(gate_channel // reduction_ratio))
            self.gate_s.add_sublayer("gate_s_relu_di_%d" % i, nn.ReLU())
        self.gate_s.add_sublayer("gate_s_conv_final", nn.Conv2D(gate_channel // reduction_ratio, 1, kernel_size=1))

    def forward(self, in_tensor: paddle.Tensor) -> paddle.Tensor:
        return self.gate_s(in_tensor).expand_as(in_tensor)


class BAM(nn.Layer):
    def __init__(self, gate_channel: int):
        super().__init__()
        self.channel_att = ChannelGate(gate_channel)
        self.spatial_att = BAMSpatialGate(gate_channel)

    def forward(self, in_tensor: paddle.Tensor) -> paddle.Tensor:
        att = 1 + F.sigmoid(self.channel_att(in_tensor) * self.spatial_att(in_tensor))
        return att * in_tensor


# ------------------------------------------------------------------------------------------ PSA
class PSA_p(nn.Layer):  # noqa: N801 - as published
    def __init__(self, inplanes: int, planes: int, kernel_size: int = 1, stride: int = 1):
        super().__init__()
        self.inplanes = inplanes
        self.inter_planes = planes // 2
        self.planes = planes
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = (kernel_size - 1) // 2
        self.conv_q_right = nn.Conv2D(self.inplanes, 1, kernel_size=1, stride=stride, padding=0, bias_attr=False)
        self.conv_v_right = nn.Conv2D(self.inplanes, self.inter_planes, kernel_size=1, stride=stride, padding=0,
                                      bias_attr=False)
        self.conv_up = self._conv_up()
        self.softmax_right = nn.Softmax(axis=2)
        self.sigmoid = nn.Sigmoid()
        self.conv_q_left = nn.Conv2D(self.inplanes, self.inter_planes, kernel_size=1, stride=stride, padding=0,
                                     bias_attr=False)  # g
        self.avg_pool = nn.AdaptiveAvgPool2D(1)
        self.conv_v_left = nn.Conv2D(self.inplanes, self.inter_planes, kernel_size=1, stride=stride, padding=0,
                                     bias_attr=False)  # theta
        self.softmax_left = nn.Softmax(axis=2)

    def _conv_up(self) -> nn.Layer:
        return nn.Conv2D(self.inter_planes, self.planes, kernel_size=1, stride=1, padding=0, bias_attr=False)

    def spatial_pool(self, x: paddle.Tensor) -> paddle.Tensor:
        input_x = self.conv_v_right(x)
        batch, channel, height, width = input_x.shape
        input_x = input_x.reshape([batch, channel, height * width])
        context_mask = self.conv_q_right(x)
        context_mask = context_mask.reshape([batch, 1, height * width])
        context_mask = self.softmax_right(context_mask)
        context = paddle.matmul(input_x, context_mask.transpose([0, 2, 1]))
        context = context.unsqueeze(-1)
        context = self.conv_up(context)
        mask_ch = self.sigmoid(context)
        out = x * mask_ch
        return out

    def _theta(self, x: paddle.Tensor, batch: int, height: int, width: int) -> paddle.Tensor:
        return self.conv_v_left(x).reshape([batch, self.inter_planes, height * width])

    def channel_pool(self, x: paddle.Tensor) -> paddle.Tensor:
        g_x = self.conv_q_left(x)
        batch, channel, height, width = g_x.shape
        avg_x = self.avg_pool(g_x)
        batch, channel, avg_x_h, avg_x_w = avg_x.shape
        avg_x = avg_x.reshape([batch, channel, avg_x_h * avg_x_w]).transpose([0, 2, 1])
        theta_x = self._theta(x, batch, height, width)
        context = paddle.matmul(avg_x, theta_x)
        context = self._after_matmul(context)
        context = context.reshape([batch, 1, height, width])
        mask_sp = self.sigmoid(context)
        out = x * mask_sp
        return out

    def _after_matmul(self, context: paddle.Tensor) -> paddle.Tensor:
        return self.softmax_left(context)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        context_channel = self.spatial_pool(x)
        context_spatial = self.channel_pool(x)
        out = context_spatial + context_channel
        return out


class PSA_s(PSA_p):  # noqa: N801 - as published
    """The authors' ``PSA_s``: ``PSA_p`` but for the bottleneck ``conv_up`` (ratio 4, LayerNorm, ReLU), the softmax
    taken over the positions of theta before the product, and the two branches in sequence. (The published class
    repeats ``PSA_p``'s code; here it overrides the three places that differ.)"""

    def _conv_up(self) -> nn.Layer:
        ratio = 4
        return nn.Sequential(
            nn.Conv2D(self.inter_planes, self.inter_planes // ratio, kernel_size=1),
            nn.LayerNorm([self.inter_planes // ratio, 1, 1]),
            nn.ReLU(),
            nn.Conv2D(self.inter_planes // ratio, self.planes, kernel_size=1))

    def _theta(self, x: paddle.Tensor, batch: int, height: int, width: int) -> paddle.Tensor:
        return self.softmax_left(super()._theta(x, batch, height, width))

    def _after_matmul(self, context: paddle.Tensor) -> paddle.Tensor:
        return context

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        out = self.spatial_pool(x)
        out = self.channel_pool(out)
        return out


# ------------------------------------------------------------------------------------------ GAM (the tutorials' copy)
class GAM_Attention(nn.Layer):  # noqa: N801 - as published
    def __init__(self, in_channels: int, rate: int = 4):
        super().__init__()
        self.channel_attention = nn.Sequential(
            nn.Linear(in_channels, int(in_channels / rate)),
            nn.ReLU(),
            nn.Linear(int(in_channels / rate), in_channels))
        self.spatial_attention = nn.Sequential(
            nn.Conv2D(in_channels, int(in_channels / rate), kernel_size=7, padding=3),
            _batch_norm_2d(int(in_channels / rate)),
            nn.ReLU(),
            nn.Conv2D(int(in_channels / rate), in_channels, kernel_size=7, padding=3),
            _batch_norm_2d(in_channels))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        b, c, h, w = x.shape
        x_permute = x.transpose([0, 2, 3, 1]).reshape([b, -1, c])
        x_att_permute = self.channel_attention(x_permute).reshape([b, h, w, c])
        x_channel_att = F.sigmoid(x_att_permute.transpose([0, 3, 1, 2]))
        x = x * x_channel_att
        x_spatial_att = F.sigmoid(self.spatial_attention(x))
        out = x * x_spatial_att
        return out


# ------------------------------------------------------------------------------- canonical weights -> peers
#: peer key (the published class's name) -> how to build it from the project config of the form it computes
CLASSES: Mapping[str, Callable[[Any], nn.Layer]] = {
    "SRMLayer": lambda cfg: SRMLayer(cfg.channels),
    "GCT": lambda cfg: GCT(cfg.channels, epsilon=cfg.epsilon, mode=cfg.mode, after_relu=cfg.after_relu),
    "sa_layer": lambda cfg: sa_layer(cfg.channels, cfg.groups),
    "TripletAttention": lambda cfg: TripletAttention(cfg.channels, no_spatial=cfg.no_spatial),
    "BAM": lambda cfg: BAM(cfg.channels),
    "PSA_p": lambda cfg: PSA_p(cfg.channels, cfg.channels),
    "PSA_s": lambda cfg: PSA_s(cfg.channels, cfg.channels),
    "GAM_Attention": lambda cfg: GAM_Attention(cfg.channels, cfg.rate),
}

#: torch's BatchNorm buffer names -> Paddle's
_PADDLE_NAMES = {"running_mean": "_mean", "running_var": "_variance"}


def load(layer: nn.Layer, weights: Mapping[str, np.ndarray]) -> nn.Layer:
    """Copy canonical ``weights`` (the published state_dict names, torch layout) into ``layer``: every entry of its
    state_dict, nothing else (a KeyError names the difference); ``nn.Linear`` weights transposed, a value of the
    same size as a parameter of another shape (``LayerNorm([k, 1, 1])``'s k values) reshaped to it."""
    linears = {name for name, sub in layer.named_sublayers() if isinstance(sub, nn.Linear)}
    values = {}
    for key, value in weights.items():
        owner, _, leaf = key.rpartition(".")
        name = f"{owner}.{_PADDLE_NAMES.get(leaf, leaf)}" if owner else leaf
        values[name] = value.T if owner in linears and leaf == "weight" else value
    state = layer.state_dict()
    if set(state) != set(values):
        raise KeyError(f"the Paddle transcription of {type(layer).__name__} does not hold the canonical weights: "
                       f"missing {sorted(set(state) - set(values))}, unexpected {sorted(set(values) - set(state))}")
    for name, value in values.items():
        target = state[name]
        shape = [int(s) for s in target.shape]
        if int(np.prod(shape)) != value.size:
            raise ValueError(f"{type(layer).__name__}.{name}: shape {shape}, canonical value {value.shape}")
        target.set_value(np.ascontiguousarray(value).reshape(shape).astype(np.float32))
    return layer


def build(key: str, config: Any, weights: Mapping[str, np.ndarray]) -> nn.Layer:
    """The Paddle transcription ``key`` (:data:`CLASSES`) for the project ``config``, loaded with ``weights``."""
    return load(CLASSES[key](config), weights)
