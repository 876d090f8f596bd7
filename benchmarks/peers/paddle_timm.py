"""PEER CODE (not the project's): timm's attention modules transcribed to Paddle, and how canonical weights load.

timm (1.0.31, ``timm/layers/*.py``) has no Paddle version; these classes are its classes written with Paddle's
layers, as a user porting them would: the same constructor arguments and defaults, the same submodule names (so
timm's state_dict names, the canonical ones, address the same tensors), the same forward, NCHW. ``create_attn(key,
C)`` builds one as timm's own ``create_attn`` does, and :func:`load` copies canonical weights into it strictly.
The differences are Paddle's: ``nn.Linear`` keeps its weight as (in, out), BatchNorm names its running statistics
``_mean`` / ``_variance`` and its momentum is 1 - torch's, ``reshape`` / ``transpose`` take full shapes.
Only what the benchmarked forms run is transcribed where a module has experimental branches (GatherExcite's
gather convolutions, EcaModule's ``act_layer`` without the MLP).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import partial

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from attn_core.spec import make_divisible  # timm/layers/helpers.py's make_divisible, line for line

from .seed_paddle import _copy


# ------------------------------------------------------------------------------------------ shared layers
class BatchNormAct2d(nn.BatchNorm2D):
    """timm ``BatchNormAct2d``: BatchNorm then ReLU (``apply_act=False``: none), torch's momentum 0.1."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, apply_act: bool = True):
        super().__init__(num_features, momentum=1.0 - momentum, epsilon=eps)
        self.act = nn.ReLU() if apply_act else nn.Identity()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.act(super().forward(x))


class ConvNormAct(nn.Layer):
    """timm ``ConvNormAct``: a convolution without bias padded by timm's ``get_padding``, then ``BatchNormAct2d``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 dilation: int = 1, groups: int = 1, bias: bool = False, apply_act: bool = True):
        super().__init__()
        padding = ((stride - 1) + dilation * (kernel_size - 1)) // 2
        self.conv = nn.Conv2D(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                              bias_attr=None if bias else False)
        self.bn = BatchNormAct2d(out_channels, apply_act=apply_act)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.bn(self.conv(x))


class LayerNorm2d(nn.LayerNorm):
    """timm ``LayerNorm2d``: LayerNorm over the channels of an NCHW tensor."""

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__(num_channels, epsilon=eps)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = x.transpose([0, 2, 3, 1])
        x = F.layer_norm(x, self._normalized_shape, self.weight, self.bias, self._epsilon)
        return x.transpose([0, 3, 1, 2])


class ConvMlp(nn.Layer):
    """timm ``ConvMlp``: 1x1 convolutions with biases, an optional norm, ReLU."""

    def __init__(self, in_features: int, hidden_features: int, act_layer: type[nn.Layer] = nn.ReLU,
                 norm_layer: Callable[[int], nn.Layer] | None = None):
        super().__init__()
        self.fc1 = nn.Conv2D(in_features, hidden_features, kernel_size=1)
        self.norm = norm_layer(hidden_features) if norm_layer else nn.Identity()
        self.act = act_layer()
        self.fc2 = nn.Conv2D(hidden_features, in_features, kernel_size=1)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.fc2(self.act(self.norm(self.fc1(x))))


# ------------------------------------------------------------------------------------------ channel attention
class EffectiveSEModule(nn.Layer):
    def __init__(self, channels: int, add_maxpool: bool = False):
        super().__init__()
        self.add_maxpool = add_maxpool
        self.fc = nn.Conv2D(channels, channels, kernel_size=1, padding=0)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x_se = x.mean(axis=[2, 3], keepdim=True)
        if self.add_maxpool:
            x_se = 0.5 * x_se + 0.5 * x.amax(axis=[2, 3], keepdim=True)
        x_se = self.fc(x_se)
        return x * self.gate(x_se)


def _eca_kernel_size(channels: int, gamma: float, beta: float) -> int:
    t = int(abs(math.log(channels, 2) + beta) / gamma)
    return max(t if t % 2 else t + 1, 3)


class EcaModule(nn.Layer):
    def __init__(self, channels: int, gamma: float = 2, beta: float = 1, rd_ratio: float = 1 / 8,
                 rd_channels: int | None = None, rd_divisor: int = 8, use_mlp: bool = False):
        super().__init__()
        kernel_size = _eca_kernel_size(channels, gamma, beta)
        padding = (kernel_size - 1) // 2
        if use_mlp:
            if rd_channels is None:
                rd_channels = make_divisible(channels * rd_ratio, divisor=rd_divisor)
            self.conv = nn.Conv1D(1, rd_channels, kernel_size=1, padding=0)
            self.act = nn.ReLU()
            self.conv2 = nn.Conv1D(rd_channels, 1, kernel_size=kernel_size, padding=padding)
        else:
            self.conv = nn.Conv1D(1, 1, kernel_size=kernel_size, padding=padding, bias_attr=False)
            self.act = None
            self.conv2 = None
        self.gate = nn.Sigmoid()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y = x.mean(axis=[2, 3]).reshape([x.shape[0], 1, -1])
        y = self.conv(y)
        if self.conv2 is not None:
            y = self.act(y)
            y = self.conv2(y)
        y = self.gate(y).reshape([x.shape[0], -1, 1, 1])
        return x * y.expand_as(x)


class CecaModule(nn.Layer):
    def __init__(self, channels: int, gamma: float = 2, beta: float = 1):
        super().__init__()
        kernel_size = _eca_kernel_size(channels, gamma, beta)
        self.padding = (kernel_size - 1) // 2
        self.conv = nn.Conv1D(1, 1, kernel_size=kernel_size, padding=0, bias_attr=False)
        self.gate = nn.Sigmoid()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y = x.mean(axis=[2, 3]).reshape([x.shape[0], 1, -1])
        y = F.pad(y, [self.padding, self.padding], mode="circular", data_format="NCL")
        y = self.conv(y)
        y = self.gate(y).reshape([x.shape[0], -1, 1, 1])
        return x * y.expand_as(x)


class LightChannelAttn(nn.Layer):
    def __init__(self, channels: int, rd_ratio: float = 1 / 16, rd_channels: int | None = None,
                 rd_divisor: int = 1, mlp_bias: bool = False):
        super().__init__()
        if not rd_channels:
            rd_channels = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
        self.fc1 = nn.Conv2D(channels, rd_channels, 1, bias_attr=None if mlp_bias else False)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2D(rd_channels, channels, 1, bias_attr=None if mlp_bias else False)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x_pool = 0.5 * x.mean(axis=[2, 3], keepdim=True) + 0.5 * x.amax(axis=[2, 3], keepdim=True)
        x_attn = self.fc2(self.act(self.fc1(x_pool)))
        return x * F.sigmoid(x_attn)


class LightSpatialAttn(nn.Layer):
    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = ConvNormAct(1, 1, kernel_size, apply_act=False)
        self.gate = nn.Sigmoid()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x_attn = 0.5 * x.mean(axis=1, keepdim=True) + 0.5 * x.amax(axis=1, keepdim=True)
        x_attn = self.conv(x_attn)
        return x * self.gate(x_attn)


class LightCbamModule(nn.Layer):
    def __init__(self, channels: int, rd_ratio: float = 1 / 16, rd_channels: int | None = None,
                 rd_divisor: int = 1, spatial_kernel_size: int = 7, mlp_bias: bool = False):
        super().__init__()
        self.channel = LightChannelAttn(channels, rd_ratio, rd_channels, rd_divisor, mlp_bias)
        self.spatial = LightSpatialAttn(spatial_kernel_size)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.channel(x)
        x = self.spatial(x)
        return x


class GatherExcite(nn.Layer):
    """The parameter-free gather (``extra_params=False``, timm's default): global mean, or a strided average pool
    for ``extent`` > 0. timm 1.0.31 passes its ``dd`` dict positionally to ``ConvMlp`` (a TypeError for the default
    ``use_mlp=True``); the MLP here is the ``ConvMlp(channels, rd_channels, act_layer=nn.ReLU)`` it means."""

    def __init__(self, channels: int, extent: int = 0, use_mlp: bool = True, rd_ratio: float = 1 / 16,
                 rd_channels: int | None = None, rd_divisor: int = 1, add_maxpool: bool = False):
        super().__init__()
        self.add_maxpool = add_maxpool
        self.extent = extent
        self.gk = self.extent * 2 - 1 if extent else 0
        self.gs = self.extent
        if not rd_channels:
            rd_channels = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
        self.mlp = ConvMlp(channels, rd_channels) if use_mlp else nn.Identity()
        self.gate = nn.Sigmoid()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        size = x.shape[-2:]
        if self.extent == 0:
            x_ge = x.mean(axis=[2, 3], keepdim=True)
            if self.add_maxpool:
                x_ge = 0.5 * x_ge + 0.5 * x.amax(axis=[2, 3], keepdim=True)
        else:
            x_ge = F.avg_pool2d(x, kernel_size=self.gk, stride=self.gs, padding=self.gk // 2, exclusive=True)
            if self.add_maxpool:
                x_ge = 0.5 * x_ge + 0.5 * F.max_pool2d(x, kernel_size=self.gk, stride=self.gs, padding=self.gk // 2)
        x_ge = self.mlp(x_ge)
        if x_ge.shape[-1] != 1 or x_ge.shape[-2] != 1:
            x_ge = F.interpolate(x_ge, size=size)
        return x * self.gate(x_ge)


class GlobalContext(nn.Layer):
    def __init__(self, channels: int, use_attn: bool = True, fuse_add: bool = False, fuse_scale: bool = True,
                 rd_ratio: float = 1 / 8, rd_channels: int | None = None, rd_divisor: int = 1):
        super().__init__()
        self.conv_attn = nn.Conv2D(channels, 1, kernel_size=1) if use_attn else None
        if rd_channels is None:
            rd_channels = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
        self.mlp_add = ConvMlp(channels, rd_channels, norm_layer=LayerNorm2d) if fuse_add else None
        self.mlp_scale = ConvMlp(channels, rd_channels, norm_layer=LayerNorm2d) if fuse_scale else None
        self.gate = nn.Sigmoid()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        B, C, H, W = x.shape
        if self.conv_attn is not None:
            attn = self.conv_attn(x).reshape([B, 1, H * W])
            attn = F.softmax(attn, axis=-1).unsqueeze(3)
            context = x.reshape([B, C, H * W]).unsqueeze(1) @ attn
            context = context.reshape([B, C, 1, 1])
        else:
            context = x.mean(axis=[2, 3], keepdim=True)
        if self.mlp_scale is not None:
            mlp_x = self.mlp_scale(context)
            x = x * self.gate(mlp_x)
        if self.mlp_add is not None:
            mlp_x = self.mlp_add(context)
            x = x + mlp_x
        return x


# ------------------------------------------------------------------------------------------ coordinate attention
class CoordAttn(nn.Layer):
    def __init__(self, channels: int, rd_ratio: float = 1 / 16, rd_channels: int | None = None,
                 rd_divisor: int = 8, se_factor: float = 2 / 3, bias: bool = False):
        super().__init__()
        if not rd_channels:
            rd_channels = make_divisible(channels * rd_ratio * se_factor, rd_divisor, round_limit=0.0)
        bias_attr = None if bias else False
        self.conv1 = nn.Conv2D(channels, rd_channels, kernel_size=1, stride=1, padding=0, bias_attr=bias_attr)
        self.bn1 = nn.BatchNorm2D(rd_channels, momentum=0.9, epsilon=1e-5)
        self.act = nn.Hardswish()
        self.conv_h = nn.Conv2D(rd_channels, channels, kernel_size=1, stride=1, padding=0, bias_attr=bias_attr)
        self.conv_w = nn.Conv2D(rd_channels, channels, kernel_size=1, stride=1, padding=0, bias_attr=bias_attr)
        self.gate = nn.Sigmoid()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        identity = x
        N, C, H, W = x.shape
        x_h = x.mean(axis=3, keepdim=True)
        x_w = x.mean(axis=2, keepdim=True)
        x_w = x_w.transpose([0, 1, 3, 2])
        y = paddle.concat([x_h, x_w], axis=2)
        y = self.conv1(y)
        y = self.bn1(y)
        y = self.act(y)
        x_h, x_w = paddle.split(y, [H, W], axis=2)
        x_w = x_w.transpose([0, 1, 3, 2])
        a_h = self.gate(self.conv_h(x_h))
        a_w = self.gate(self.conv_w(x_w))
        return identity * a_w * a_h


class SimpleCoordAttn(nn.Layer):
    def __init__(self, channels: int, rd_ratio: float = 0.25, rd_channels: int | None = None,
                 rd_divisor: int = 8, se_factor: float = 2 / 3, bias: bool = True):
        super().__init__()
        if not rd_channels:
            rd_channels = make_divisible(channels * rd_ratio * se_factor, rd_divisor, round_limit=0.0)
        bias_attr = None if bias else False
        self.fc1 = nn.Linear(channels, rd_channels, bias_attr=bias_attr)
        self.act = nn.Silu()
        self.fc_h = nn.Linear(rd_channels, channels, bias_attr=bias_attr)
        self.fc_w = nn.Linear(rd_channels, channels, bias_attr=bias_attr)
        self.gate = nn.Sigmoid()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        identity = x
        x_h = x.mean(axis=3)
        x_w = x.mean(axis=2)
        x_h = self.act(self.fc1(x_h.transpose([0, 2, 1])))
        x_w = self.act(self.fc1(x_w.transpose([0, 2, 1])))
        a_h = self.fc_h(x_h).transpose([0, 2, 1]).unsqueeze(-1)
        a_w = self.fc_w(x_w).transpose([0, 2, 1]).unsqueeze(-2)
        return identity * self.gate(a_h + a_w)


class _StripConvs(nn.Layer):
    """The depthwise (k, 1) and (1, k) convolutions ``EfficientLocalAttn`` and ``StripAttn`` both open with."""

    def __init__(self, channels: int, kernel_size: int, bias: bool):
        super().__init__()
        bias_attr = None if bias else False
        self.conv_h = nn.Conv2D(channels, channels, kernel_size=(kernel_size, 1), stride=1,
                                padding=(kernel_size // 2, 0), groups=channels, bias_attr=bias_attr)
        self.conv_w = nn.Conv2D(channels, channels, kernel_size=(1, kernel_size), stride=1,
                                padding=(0, kernel_size // 2), groups=channels, bias_attr=bias_attr)
        self.gate = nn.Sigmoid()


class EfficientLocalAttn(_StripConvs):
    def __init__(self, channels: int, kernel_size: int = 7, bias: bool = False):
        super().__init__(channels, kernel_size, bias)
        self.norm_h = nn.GroupNorm(1, channels, epsilon=1e-5)  # timm's GroupNorm1
        self.norm_w = nn.GroupNorm(1, channels, epsilon=1e-5)
        self.act = nn.Silu()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        identity = x
        x_h = x.mean(axis=3, keepdim=True)
        x_w = x.mean(axis=2, keepdim=True)
        x_h = self.act(self.norm_h(self.conv_h(x_h)))
        x_w = self.act(self.norm_w(self.conv_w(x_w)))
        a_h = self.gate(x_h)
        a_w = self.gate(x_w)
        return identity * a_h * a_w


class StripAttn(_StripConvs):
    def __init__(self, channels: int, kernel_size: int = 3, bias: bool = False):
        super().__init__(channels, kernel_size, bias)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        identity = x
        x_h = x.mean(axis=3, keepdim=True)
        x_w = x.mean(axis=2, keepdim=True)
        x_h = self.conv_h(x_h)
        x_w = self.conv_w(x_w)
        a_hw = self.gate(x_h + x_w)
        return identity * a_hw


# ------------------------------------------------------------------------------------------ convolutions with attention
class SelectiveKernelAttn(nn.Layer):
    def __init__(self, channels: int, num_paths: int = 2, attn_channels: int = 32):
        super().__init__()
        self.num_paths = num_paths
        self.fc_reduce = nn.Conv2D(channels, attn_channels, kernel_size=1, bias_attr=False)
        self.bn = nn.BatchNorm2D(attn_channels, momentum=0.9, epsilon=1e-5)
        self.act = nn.ReLU()
        self.fc_select = nn.Conv2D(attn_channels, channels * num_paths, kernel_size=1, bias_attr=False)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = x.sum(axis=1).mean(axis=[2, 3], keepdim=True)
        x = self.fc_reduce(x)
        x = self.bn(x)
        x = self.act(x)
        x = self.fc_select(x)
        B, C, H, W = x.shape
        x = x.reshape([B, self.num_paths, C // self.num_paths, H, W])
        return F.softmax(x, axis=1)


class SelectiveKernel(nn.Layer):
    """``keep_3x3`` and ``split_input`` (timm's defaults): 3x3 paths dilated (k - 1) // 2, each on its share of
    the input channels."""

    def __init__(self, in_channels: int, kernel_size: list[int] | None = None, rd_ratio: float = 1 / 16,
                 rd_channels: int | None = None, rd_divisor: int = 8):
        super().__init__()
        out_channels = in_channels
        kernel_size = kernel_size or [3, 5]
        dilation = [(k - 1) // 2 for k in kernel_size]
        kernel_size = [3] * len(kernel_size)
        self.num_paths = len(kernel_size)
        self.in_channels = in_channels
        in_channels = in_channels // self.num_paths
        self.paths = nn.LayerList([ConvNormAct(in_channels, out_channels, kernel_size=k, dilation=d)
                                   for k, d in zip(kernel_size, dilation, strict=True)])
        attn_channels = rd_channels or make_divisible(out_channels * rd_ratio, divisor=rd_divisor)
        self.attn = SelectiveKernelAttn(out_channels, self.num_paths, attn_channels)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x_split = paddle.split(x, [self.in_channels // self.num_paths] * self.num_paths, axis=1)
        x_paths = [op(x_split[i]) for i, op in enumerate(self.paths)]
        x = paddle.stack(x_paths, axis=1)
        x_attn = self.attn(x)
        x = x * x_attn
        return paddle.sum(x, axis=1)


class RadixSoftmax(nn.Layer):
    def __init__(self, radix: int, cardinality: int):
        super().__init__()
        self.radix = radix
        self.cardinality = cardinality

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        batch = x.shape[0]
        if self.radix > 1:
            x = x.reshape([batch, self.cardinality, self.radix, -1]).transpose([0, 2, 1, 3])
            x = F.softmax(x, axis=1)
            x = x.reshape([batch, -1])
        else:
            x = F.sigmoid(x)
        return x


class SplitAttn(nn.Layer):
    """Without a norm layer (timm's default): ``bn0`` and ``bn1`` are identities."""

    def __init__(self, in_channels: int, kernel_size: int = 3, groups: int = 1, bias: bool = False, radix: int = 2,
                 rd_ratio: float = 0.25, rd_channels: int | None = None, rd_divisor: int = 8):
        super().__init__()
        out_channels = in_channels
        self.radix = radix
        mid_chs = out_channels * radix
        if rd_channels is None:
            attn_chs = make_divisible(in_channels * radix * rd_ratio, min_value=32, divisor=rd_divisor)
        else:
            attn_chs = rd_channels * radix
        padding = kernel_size // 2
        self.conv = nn.Conv2D(in_channels, mid_chs, kernel_size, 1, padding, 1, groups=groups * radix,
                              bias_attr=None if bias else False)
        self.act0 = nn.ReLU()
        self.fc1 = nn.Conv2D(out_channels, attn_chs, 1, groups=groups)
        self.act1 = nn.ReLU()
        self.fc2 = nn.Conv2D(attn_chs, mid_chs, 1, groups=groups)
        self.rsoftmax = RadixSoftmax(radix, groups)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.conv(x)
        x = self.act0(x)
        B, RC, H, W = x.shape
        if self.radix > 1:
            x = x.reshape([B, self.radix, RC // self.radix, H, W])
            x_gap = x.sum(axis=1)
        else:
            x_gap = x
        x_gap = x_gap.mean(axis=[2, 3], keepdim=True)
        x_gap = self.fc1(x_gap)
        x_gap = self.act1(x_gap)
        x_attn = self.fc2(x_gap)
        x_attn = self.rsoftmax(x_attn).reshape([B, -1, 1, 1])
        if self.radix > 1:
            out = (x * x_attn.reshape([B, self.radix, RC // self.radix, 1, 1])).sum(axis=1)
        else:
            out = x * x_attn
        return out


# ------------------------------------------------------------------------------------------ non-local
class NonLocalAttn(nn.Layer):
    def __init__(self, in_channels: int, use_scale: bool = True, rd_ratio: float = 1 / 8,
                 rd_channels: int | None = None, rd_divisor: int = 8):
        super().__init__()
        if rd_channels is None:
            rd_channels = make_divisible(in_channels * rd_ratio, divisor=rd_divisor)
        self.scale = in_channels ** -0.5 if use_scale else 1.0
        self.t = nn.Conv2D(in_channels, rd_channels, kernel_size=1, stride=1)
        self.p = nn.Conv2D(in_channels, rd_channels, kernel_size=1, stride=1)
        self.g = nn.Conv2D(in_channels, rd_channels, kernel_size=1, stride=1)
        self.z = nn.Conv2D(rd_channels, in_channels, kernel_size=1, stride=1)
        self.norm = nn.BatchNorm2D(in_channels, momentum=0.9, epsilon=1e-5)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        shortcut = x
        t = self.t(x)
        p = self.p(x)
        g = self.g(x)
        B, C, H, W = t.shape
        t = t.reshape([B, C, -1]).transpose([0, 2, 1])
        p = p.reshape([B, C, -1])
        g = g.reshape([B, C, -1]).transpose([0, 2, 1])
        att = paddle.bmm(t, p) * self.scale
        att = F.softmax(att, axis=2)
        x = paddle.bmm(att, g)
        x = x.transpose([0, 2, 1]).reshape([B, C, H, W])
        x = self.z(x)
        return self.norm(x) + shortcut


class BilinearAttnTransform(nn.Layer):
    def __init__(self, in_channels: int, block_size: int, groups: int):
        super().__init__()
        self.conv1 = ConvNormAct(in_channels, groups, 1)
        self.conv_p = nn.Conv2D(groups, block_size * block_size * groups, kernel_size=(block_size, 1))
        self.conv_q = nn.Conv2D(groups, block_size * block_size * groups, kernel_size=(1, block_size))
        self.conv2 = ConvNormAct(in_channels, in_channels, 1)
        self.block_size = block_size
        self.groups = groups
        self.in_channels = in_channels

    def resize_mat(self, x: paddle.Tensor, t: int) -> paddle.Tensor:
        B, C, block_size, block_size1 = x.shape
        if t <= 1:
            return x
        x = x.reshape([B * C, -1, 1, 1])
        x = x * paddle.eye(t, t, dtype=x.dtype)
        x = x.reshape([B * C, block_size, block_size, t, t])
        x = paddle.concat(paddle.split(x, block_size, axis=1), axis=3)
        x = paddle.concat(paddle.split(x, block_size, axis=2), axis=4)
        return x.reshape([B, C, block_size * t, block_size * t])

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        B, C, H, W = x.shape
        out = self.conv1(x)
        rp = F.adaptive_max_pool2d(out, (self.block_size, 1))
        cp = F.adaptive_max_pool2d(out, (1, self.block_size))
        p = F.sigmoid(self.conv_p(rp).reshape([B, self.groups, self.block_size, self.block_size]))
        q = F.sigmoid(self.conv_q(cp).reshape([B, self.groups, self.block_size, self.block_size]))
        p = p / p.sum(axis=3, keepdim=True)
        q = q / q.sum(axis=2, keepdim=True)
        p = p.reshape([B, self.groups, 1, self.block_size, self.block_size]).expand(
            [B, self.groups, C // self.groups, self.block_size, self.block_size])
        p = p.reshape([B, C, self.block_size, self.block_size])
        q = q.reshape([B, self.groups, 1, self.block_size, self.block_size]).expand(
            [B, self.groups, C // self.groups, self.block_size, self.block_size])
        q = q.reshape([B, C, self.block_size, self.block_size])
        p = self.resize_mat(p, H // self.block_size)
        q = self.resize_mat(q, W // self.block_size)
        y = p.matmul(x)
        y = y.matmul(q)
        return self.conv2(y)


class BatNonLocalAttn(nn.Layer):
    def __init__(self, in_channels: int, block_size: int = 7, groups: int = 2, rd_ratio: float = 0.25,
                 rd_channels: int | None = None, rd_divisor: int = 8, drop_rate: float = 0.2):
        super().__init__()
        if rd_channels is None:
            rd_channels = make_divisible(in_channels * rd_ratio, divisor=rd_divisor)
        self.conv1 = ConvNormAct(in_channels, rd_channels, 1)
        self.ba = BilinearAttnTransform(rd_channels, block_size, groups)
        self.conv2 = ConvNormAct(rd_channels, in_channels, 1)
        self.dropout = nn.Dropout2D(p=drop_rate)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        xl = self.conv1(x)
        y = self.ba(xl)
        y = self.conv2(y)
        y = self.dropout(y)
        return y + x


# ------------------------------------------------------------------------------------------ timm's factory, weights
#: timm's ``get_attn`` table (timm/layers/create_attn.py) for the keys transcribed here
ATTN_CLASSES: Mapping[str, Callable[[int], nn.Layer]] = {
    "ese": EffectiveSEModule,
    "ecam": partial(EcaModule, use_mlp=True),
    "ceca": CecaModule,
    "lcbam": LightCbamModule,
    "ge": GatherExcite,
    "gc": GlobalContext,
    "gca": partial(GlobalContext, fuse_add=True, fuse_scale=False),
    "coord": CoordAttn,
    "scoord": SimpleCoordAttn,
    "ela": EfficientLocalAttn,
    "strip": StripAttn,
    "sk": SelectiveKernel,
    "splat": SplitAttn,
    "nl": NonLocalAttn,
    "bat": BatNonLocalAttn,
}

#: torch's BatchNorm buffer names -> Paddle's
_PADDLE_NAMES = {"running_mean": "_mean", "running_var": "_variance"}


def create_attn(key: str, channels: int) -> nn.Layer:
    """timm's ``create_attn(key, channels)``, in Paddle."""
    return ATTN_CLASSES[key](channels)


def load(layer: nn.Layer, weights: Mapping[str, np.ndarray]) -> nn.Layer:
    """Copy canonical ``weights`` (timm's state_dict names, torch layout) into ``layer``: every entry of its
    state_dict, nothing else (a KeyError names the difference), ``nn.Linear`` weights transposed."""
    linears = {name for name, sub in layer.named_sublayers() if isinstance(sub, nn.Linear)}
    values = {}
    for key, value in weights.items():
        owner, _, leaf = key.rpartition(".")
        values[f"{owner}.{_PADDLE_NAMES.get(leaf, leaf)}"] = value.T if owner in linears and leaf == "weight" else value
    state = set(layer.state_dict())
    if state != set(values):
        raise KeyError(f"the Paddle transcription of timm's {type(layer).__name__} does not hold the canonical "
                       f"weights: missing {sorted(state - set(values))}, unexpected {sorted(set(values) - state)}")
    return _copy(layer, values)


def build(key: str, channels: int, weights: Mapping[str, np.ndarray]) -> nn.Layer:
    """``create_attn(key, channels)`` loaded with the canonical ``weights``."""
    return load(create_attn(key, channels), weights)
