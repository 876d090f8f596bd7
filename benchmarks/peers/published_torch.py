"""PEER CODE (not the project's): the published torch code of the modules timm lacks, one factory per module, and
how the project's canonical weights load into it.

Each factory returns the published class (PSA's returns ``PSA_p`` and ``PSA_s``), its imports and classes inside
the factory so that this file imports without torch; the code inside is as its authors wrote it (the edits are
named where they are). GAM has no authors' code: its peer is the tutorials' copy of the paper's form. The tests
(``tests/conformance/test_<module>.py``) check these classes against the project's modules and the benchmarks time
them; :func:`build` makes one from a project config of the form it computes, loaded with canonical weights (the
published state_dict names, which the project's modules keep).
"""

# the authors' code is transcribed as published, percent formats, super(Class, self) and long lines included
# ruff: noqa: UP008, UP031, E501
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np


# The authors' code, re-typed as published: github.com/hyunjaelee410/style-based-recalibration-module,
# models/recalibration_modules.py (Lee, Kim, Nam, ICCV 2019). Peer code, kept as written.
def srm_layer() -> Any:
    import torch
    import torch.nn as nn
    from torch.nn.parameter import Parameter

    class SRMLayer(nn.Module):
        def __init__(self, channel):
            super(SRMLayer, self).__init__()  # noqa: UP008 - as published

            self.cfc = Parameter(torch.Tensor(channel, 2))
            self.cfc.data.fill_(0)

            self.bn = nn.BatchNorm2d(channel)
            self.activation = nn.Sigmoid()

            setattr(self.cfc, 'srm_param', True)  # noqa: B010 - as published
            setattr(self.bn.weight, 'srm_param', True)  # noqa: B010 - as published
            setattr(self.bn.bias, 'srm_param', True)  # noqa: B010 - as published

        def _style_pooling(self, x, eps=1e-5):
            N, C, _, _ = x.size()

            channel_mean = x.view(N, C, -1).mean(dim=2, keepdim=True)
            channel_var = x.view(N, C, -1).var(dim=2, keepdim=True) + eps
            channel_std = channel_var.sqrt()

            t = torch.cat((channel_mean, channel_std), dim=2)
            return t

        def _style_integration(self, t):
            z = t * self.cfc[None, :, :]  # B x C x 2
            z = torch.sum(z, dim=2)[:, :, None, None] # B x C x 1 x 1  # noqa: E261 - as published

            z_hat = self.bn(z)
            g = self.activation(z_hat)

            return g

        def forward(self, x):
            # B x C x 2
            t = self._style_pooling(x)

            # B x C x 1 x 1
            g = self._style_integration(t)

            return x * g

    return SRMLayer


# The authors' PyTorch code, re-typed as published: github.com/z-x-yang/GCT, PyTorch/GCT.py (their TensorFlow
# convnet_builder.GCT computes the same, with the same names). Peer code, kept as written; the one edit is the import
# of sys, which the published file calls without importing.
def gct() -> Any:
    import math  # noqa: F401 - as published
    import sys

    import torch
    import torch.nn.functional as F  # noqa: F401, N812 - as published
    from torch import nn

    class GCT(nn.Module):

        def __init__(self, num_channels, epsilon=1e-5, mode='l2', after_relu=False):
            super(GCT, self).__init__()  # noqa: UP008 - as published

            self.alpha = nn.Parameter(torch.ones(1, num_channels, 1, 1))
            self.gamma = nn.Parameter(torch.zeros(1, num_channels, 1, 1))
            self.beta = nn.Parameter(torch.zeros(1, num_channels, 1, 1))
            self.epsilon = epsilon
            self.mode = mode
            self.after_relu = after_relu

        def forward(self, x):

            if self.mode == 'l2':
                embedding = (x.pow(2).sum((2,3), keepdim=True) + self.epsilon).pow(0.5) * self.alpha
                norm = self.gamma / (embedding.pow(2).mean(dim=1, keepdim=True) + self.epsilon).pow(0.5)

            elif self.mode == 'l1':
                if not self.after_relu:
                    _x = torch.abs(x)
                else:
                    _x = x
                embedding = _x.sum((2,3), keepdim=True) * self.alpha
                norm = self.gamma / (torch.abs(embedding).mean(dim=1, keepdim=True) + self.epsilon)
            else:
                print('Unknown mode!')
                sys.exit()

            gate = 1. + torch.tanh(embedding * norm + self.beta)

            return x * gate

    return GCT


# The authors' code, re-typed as published: github.com/wofmanaf/SA-Net, models/sa_resnet.py (Zhang and Yang,
# ICASSP 2021; mmdetection/sa_resnet.py holds the same sa_layer). Peer code, kept as written.
def sa_layer() -> Any:
    import torch
    import torch.nn as nn
    from torch.nn.parameter import Parameter

    class sa_layer(nn.Module):  # noqa: N801 - as published
        """Constructs a Channel Spatial Group module.

        Args:
            k_size: Adaptive selection of kernel size
        """

        def __init__(self, channel, groups=64):
            super(sa_layer, self).__init__()  # noqa: UP008 - as published
            self.groups = groups
            self.avg_pool = nn.AdaptiveAvgPool2d(1)
            self.cweight = Parameter(torch.zeros(1, channel // (2 * groups), 1, 1))
            self.cbias = Parameter(torch.ones(1, channel // (2 * groups), 1, 1))
            self.sweight = Parameter(torch.zeros(1, channel // (2 * groups), 1, 1))
            self.sbias = Parameter(torch.ones(1, channel // (2 * groups), 1, 1))

            self.sigmoid = nn.Sigmoid()
            self.gn = nn.GroupNorm(channel // (2 * groups), channel // (2 * groups))

        @staticmethod
        def channel_shuffle(x, groups):
            b, c, h, w = x.shape

            x = x.reshape(b, groups, -1, h, w)
            x = x.permute(0, 2, 1, 3, 4)

            # flatten
            x = x.reshape(b, -1, h, w)

            return x

        def forward(self, x):
            b, c, h, w = x.shape

            x = x.reshape(b * self.groups, -1, h, w)
            x_0, x_1 = x.chunk(2, dim=1)

            # channel attention
            xn = self.avg_pool(x_0)
            xn = self.cweight * xn + self.cbias
            xn = x_0 * self.sigmoid(xn)

            # spatial attention
            xs = self.gn(x_1)
            xs = self.sweight * xs + self.sbias
            xs = x_1 * self.sigmoid(xs)

            # concatenate along channel axis
            out = torch.cat([xn, xs], dim=1)
            out = out.reshape(b, -1, h, w)

            out = self.channel_shuffle(out, 2)
            return out

    return sa_layer


def triplet_attention() -> Any:
    """The authors' ``MODELS/triplet_attention.py`` (landskape-ai/triplet-attention, HEAD), transcribed as published;
    the only edit: its imports and classes inside this function, so that the module imports without torch."""
    import torch
    import torch.nn as nn

    class BasicConv(nn.Module):
        def __init__(
            self,
            in_planes,
            out_planes,
            kernel_size,
            stride=1,
            padding=0,
            dilation=1,
            groups=1,
            relu=True,
            bn=True,
            bias=False,
        ):
            super(BasicConv, self).__init__()
            self.out_channels = out_planes
            self.conv = nn.Conv2d(
                in_planes,
                out_planes,
                kernel_size=kernel_size,
                stride=stride,
                padding=padding,
                dilation=dilation,
                groups=groups,
                bias=bias,
            )
            self.bn = (
                nn.BatchNorm2d(out_planes, eps=1e-5, momentum=0.01, affine=True)
                if bn
                else None
            )
            self.relu = nn.ReLU() if relu else None

        def forward(self, x):
            x = self.conv(x)
            if self.bn is not None:
                x = self.bn(x)
            if self.relu is not None:
                x = self.relu(x)
            return x

    class ChannelPool(nn.Module):
        def forward(self, x):
            return torch.cat(
                (torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)), dim=1
            )

    class SpatialGate(nn.Module):
        def __init__(self):
            super(SpatialGate, self).__init__()
            kernel_size = 7
            self.compress = ChannelPool()
            self.spatial = BasicConv(
                2, 1, kernel_size, stride=1, padding=(kernel_size - 1) // 2, relu=False
            )

        def forward(self, x):
            x_compress = self.compress(x)
            x_out = self.spatial(x_compress)
            scale = torch.sigmoid_(x_out)
            return x * scale

    class TripletAttention(nn.Module):
        def __init__(
            self,
            gate_channels,
            reduction_ratio=16,
            pool_types=["avg", "max"],  # noqa: B006 - as published
            no_spatial=False,
        ):
            super(TripletAttention, self).__init__()
            self.ChannelGateH = SpatialGate()
            self.ChannelGateW = SpatialGate()
            self.no_spatial = no_spatial
            if not no_spatial:
                self.SpatialGate = SpatialGate()

        def forward(self, x):
            x_perm1 = x.permute(0, 2, 1, 3).contiguous()
            x_out1 = self.ChannelGateH(x_perm1)
            x_out11 = x_out1.permute(0, 2, 1, 3).contiguous()
            x_perm2 = x.permute(0, 3, 2, 1).contiguous()
            x_out2 = self.ChannelGateW(x_perm2)
            x_out21 = x_out2.permute(0, 3, 2, 1).contiguous()
            if not self.no_spatial:
                x_out = self.SpatialGate(x)
                x_out = (1 / 3) * (x_out + x_out11 + x_out21)
            else:
                x_out = (1 / 2) * (x_out11 + x_out21)
            return x_out

    return TripletAttention


def bam() -> Any:
    """The authors' ``MODELS/bam.py`` (Jongchan/attention-module, HEAD), transcribed as published; the edits: its
    imports and classes inside this function (so that the module imports without torch), and the line
    ``self.gate_activation = gate_activation`` of ``ChannelGate.__init__`` left out: it names no variable
    (a NameError that stops ``BAM(...)`` from being built at all)."""
    import torch.nn as nn
    import torch.nn.functional as F

    class Flatten(nn.Module):
        def forward(self, x):
            return x.view(x.size(0), -1)

    class ChannelGate(nn.Module):
        def __init__(self, gate_channel, reduction_ratio=16, num_layers=1):
            super(ChannelGate, self).__init__()
            self.gate_c = nn.Sequential()
            self.gate_c.add_module( 'flatten', Flatten() )
            gate_channels = [gate_channel]
            gate_channels += [gate_channel // reduction_ratio] * num_layers
            gate_channels += [gate_channel]
            for i in range( len(gate_channels) - 2 ):
                self.gate_c.add_module( 'gate_c_fc_%d'%i, nn.Linear(gate_channels[i], gate_channels[i+1]) )
                self.gate_c.add_module( 'gate_c_bn_%d'%(i+1), nn.BatchNorm1d(gate_channels[i+1]) )
                self.gate_c.add_module( 'gate_c_relu_%d'%(i+1), nn.ReLU() )
            self.gate_c.add_module( 'gate_c_fc_final', nn.Linear(gate_channels[-2], gate_channels[-1]) )
        def forward(self, in_tensor):
            avg_pool = F.avg_pool2d( in_tensor, in_tensor.size(2), stride=in_tensor.size(2) )
            return self.gate_c( avg_pool ).unsqueeze(2).unsqueeze(3).expand_as(in_tensor)

    class SpatialGate(nn.Module):
        def __init__(self, gate_channel, reduction_ratio=16, dilation_conv_num=2, dilation_val=4):
            super(SpatialGate, self).__init__()
            self.gate_s = nn.Sequential()
            self.gate_s.add_module( 'gate_s_conv_reduce0', nn.Conv2d(gate_channel, gate_channel//reduction_ratio, kernel_size=1))
            self.gate_s.add_module( 'gate_s_bn_reduce0',	nn.BatchNorm2d(gate_channel//reduction_ratio) )
            self.gate_s.add_module( 'gate_s_relu_reduce0',nn.ReLU() )
            for i in range( dilation_conv_num ):
                self.gate_s.add_module( 'gate_s_conv_di_%d'%i, nn.Conv2d(gate_channel//reduction_ratio, gate_channel//reduction_ratio, kernel_size=3, \
                            padding=dilation_val, dilation=dilation_val) )
                self.gate_s.add_module( 'gate_s_bn_di_%d'%i, nn.BatchNorm2d(gate_channel//reduction_ratio) )
                self.gate_s.add_module( 'gate_s_relu_di_%d'%i, nn.ReLU() )
            self.gate_s.add_module( 'gate_s_conv_final', nn.Conv2d(gate_channel//reduction_ratio, 1, kernel_size=1) )
        def forward(self, in_tensor):
            return self.gate_s( in_tensor ).expand_as(in_tensor)
    class BAM(nn.Module):
        def __init__(self, gate_channel):
            super(BAM, self).__init__()
            self.channel_att = ChannelGate(gate_channel)
            self.spatial_att = SpatialGate(gate_channel)
        def forward(self,in_tensor):
            att = 1 + F.sigmoid( self.channel_att(in_tensor) * self.spatial_att(in_tensor) )
            return att * in_tensor

    return BAM


# The authors' code, re-typed as published: github.com/DeLightCMU/PSA, semantic-segmentation/network/PSA.py
# (Liu, Liu, Fan, Huang, 2021). Peer code, kept as written (comments shortened; the unused init helpers dropped).
def psa() -> tuple[Any, Any]:
    import torch
    import torch.nn as nn

    class PSA_p(nn.Module):  # noqa: N801 - as published
        def __init__(self, inplanes, planes, kernel_size=1, stride=1):
            super(PSA_p, self).__init__()  # noqa: UP008 - as published

            self.inplanes = inplanes
            self.inter_planes = planes // 2
            self.planes = planes
            self.kernel_size = kernel_size
            self.stride = stride
            self.padding = (kernel_size-1)//2  # noqa: E226 - as published

            self.conv_q_right = nn.Conv2d(self.inplanes, 1, kernel_size=1, stride=stride, padding=0, bias=False)
            self.conv_v_right = nn.Conv2d(self.inplanes, self.inter_planes, kernel_size=1, stride=stride, padding=0,
                                          bias=False)
            self.conv_up = nn.Conv2d(self.inter_planes, self.planes, kernel_size=1, stride=1, padding=0, bias=False)
            self.softmax_right = nn.Softmax(dim=2)
            self.sigmoid = nn.Sigmoid()

            self.conv_q_left = nn.Conv2d(self.inplanes, self.inter_planes, kernel_size=1, stride=stride, padding=0,
                                         bias=False)   # g
            self.avg_pool = nn.AdaptiveAvgPool2d(1)
            self.conv_v_left = nn.Conv2d(self.inplanes, self.inter_planes, kernel_size=1, stride=stride, padding=0,
                                         bias=False)   # theta
            self.softmax_left = nn.Softmax(dim=2)

        def spatial_pool(self, x):
            input_x = self.conv_v_right(x)
            batch, channel, height, width = input_x.size()
            input_x = input_x.view(batch, channel, height * width)
            context_mask = self.conv_q_right(x)
            context_mask = context_mask.view(batch, 1, height * width)
            context_mask = self.softmax_right(context_mask)
            context = torch.matmul(input_x, context_mask.transpose(1,2))  # noqa: E231 - as published
            context = context.unsqueeze(-1)
            context = self.conv_up(context)
            mask_ch = self.sigmoid(context)
            out = x * mask_ch
            return out

        def channel_pool(self, x):
            g_x = self.conv_q_left(x)
            batch, channel, height, width = g_x.size()
            avg_x = self.avg_pool(g_x)
            batch, channel, avg_x_h, avg_x_w = avg_x.size()
            avg_x = avg_x.view(batch, channel, avg_x_h * avg_x_w).permute(0, 2, 1)
            theta_x = self.conv_v_left(x).view(batch, self.inter_planes, height * width)
            context = torch.matmul(avg_x, theta_x)
            context = self.softmax_left(context)
            context = context.view(batch, 1, height, width)
            mask_sp = self.sigmoid(context)
            out = x * mask_sp
            return out

        def forward(self, x):
            context_channel = self.spatial_pool(x)
            context_spatial = self.channel_pool(x)
            out = context_spatial + context_channel
            return out

    class PSA_s(nn.Module):  # noqa: N801 - as published
        def __init__(self, inplanes, planes, kernel_size=1, stride=1):
            super(PSA_s, self).__init__()  # noqa: UP008 - as published

            self.inplanes = inplanes
            self.inter_planes = planes // 2
            self.planes = planes
            self.kernel_size = kernel_size
            self.stride = stride
            self.padding = (kernel_size - 1) // 2
            ratio = 4

            self.conv_q_right = nn.Conv2d(self.inplanes, 1, kernel_size=1, stride=stride, padding=0, bias=False)
            self.conv_v_right = nn.Conv2d(self.inplanes, self.inter_planes, kernel_size=1, stride=stride, padding=0,
                                          bias=False)
            self.conv_up = nn.Sequential(
                nn.Conv2d(self.inter_planes, self.inter_planes // ratio, kernel_size=1),
                nn.LayerNorm([self.inter_planes // ratio, 1, 1]),
                nn.ReLU(inplace=True),
                nn.Conv2d(self.inter_planes // ratio, self.planes, kernel_size=1)
            )
            self.softmax_right = nn.Softmax(dim=2)
            self.sigmoid = nn.Sigmoid()

            self.conv_q_left = nn.Conv2d(self.inplanes, self.inter_planes, kernel_size=1, stride=stride, padding=0,
                                         bias=False)  # g
            self.avg_pool = nn.AdaptiveAvgPool2d(1)
            self.conv_v_left = nn.Conv2d(self.inplanes, self.inter_planes, kernel_size=1, stride=stride, padding=0,
                                         bias=False)  # theta
            self.softmax_left = nn.Softmax(dim=2)

        def spatial_pool(self, x):
            input_x = self.conv_v_right(x)
            batch, channel, height, width = input_x.size()
            input_x = input_x.view(batch, channel, height * width)
            context_mask = self.conv_q_right(x)
            context_mask = context_mask.view(batch, 1, height * width)
            context_mask = self.softmax_right(context_mask)
            context = torch.matmul(input_x, context_mask.transpose(1, 2))
            context = context.unsqueeze(-1)
            context = self.conv_up(context)
            mask_ch = self.sigmoid(context)
            out = x * mask_ch
            return out

        def channel_pool(self, x):
            g_x = self.conv_q_left(x)
            batch, channel, height, width = g_x.size()
            avg_x = self.avg_pool(g_x)
            batch, channel, avg_x_h, avg_x_w = avg_x.size()
            avg_x = avg_x.view(batch, channel, avg_x_h * avg_x_w).permute(0, 2, 1)
            theta_x = self.conv_v_left(x).view(batch, self.inter_planes, height * width)
            theta_x = self.softmax_left(theta_x)
            context = torch.matmul(avg_x, theta_x)
            context = context.view(batch, 1, height, width)
            mask_sp = self.sigmoid(context)
            out = x * mask_sp
            return out

        def forward(self, x):
            out = self.spatial_pool(x)
            out = self.channel_pool(out)
            return out

    return PSA_p, PSA_s


# The copy of the paper's form in z1069614715/objectdetection_script, cv-attention/GAM.py (the authors published no
# code). Re-typed as published; peer code, kept as written.
def gam_attention() -> Any:
    import torch.nn as nn

    class GAM_Attention(nn.Module):  # noqa: N801 - as published
        def __init__(self, in_channels, rate=4):
            super(GAM_Attention, self).__init__()  # noqa: UP008 - as published

            self.channel_attention = nn.Sequential(
                nn.Linear(in_channels, int(in_channels / rate)),
                nn.ReLU(inplace=True),
                nn.Linear(int(in_channels / rate), in_channels)
            )

            self.spatial_attention = nn.Sequential(
                nn.Conv2d(in_channels, int(in_channels / rate), kernel_size=7, padding=3),
                nn.BatchNorm2d(int(in_channels / rate)),
                nn.ReLU(inplace=True),
                nn.Conv2d(int(in_channels / rate), in_channels, kernel_size=7, padding=3),
                nn.BatchNorm2d(in_channels)
            )

        def forward(self, x):
            b, c, h, w = x.shape
            x_permute = x.permute(0, 2, 3, 1).view(b, -1, c)
            x_att_permute = self.channel_attention(x_permute).view(b, h, w, c)
            x_channel_att = x_att_permute.permute(0, 3, 1, 2).sigmoid()

            x = x * x_channel_att

            x_spatial_att = self.spatial_attention(x).sigmoid()
            out = x * x_spatial_att

            return out

    return GAM_Attention


# ------------------------------------------------------------------------------- canonical weights -> peers
#: peer key (the published class's name) -> how to build it from the project config of the form it computes
CLASSES: Mapping[str, Callable[[Any], Any]] = {
    "SRMLayer": lambda cfg: srm_layer()(cfg.channels),
    "GCT": lambda cfg: gct()(cfg.channels, epsilon=cfg.epsilon, mode=cfg.mode, after_relu=cfg.after_relu),
    "sa_layer": lambda cfg: sa_layer()(cfg.channels, cfg.groups),
    "TripletAttention": lambda cfg: triplet_attention()(cfg.channels, no_spatial=cfg.no_spatial),
    "BAM": lambda cfg: bam()(cfg.channels),
    "PSA_p": lambda cfg: psa()[0](cfg.channels, cfg.channels),
    "PSA_s": lambda cfg: psa()[1](cfg.channels, cfg.channels),
    "GAM_Attention": lambda cfg: gam_attention()(cfg.channels, cfg.rate),
}


def load(module: Any, weights: Mapping[str, np.ndarray]) -> Any:
    """``module`` given the canonical ``weights`` strictly: every state_dict entry but the ``num_batches_tracked``
    counts, nothing else (a KeyError names the difference)."""
    import torch

    state = module.state_dict()
    wanted = {k for k in state if not k.endswith("num_batches_tracked")}
    if wanted != set(weights):
        raise KeyError(f"the published {type(module).__name__} does not hold the canonical weights: missing "
                       f"{sorted(wanted - set(weights))}, unexpected {sorted(set(weights) - wanted)}")
    module.load_state_dict({**state, **{k: torch.from_numpy(np.ascontiguousarray(v)).to(state[k].dtype)
                                        for k, v in weights.items()}})
    return module


def build(key: str, config: Any, weights: Mapping[str, np.ndarray]) -> Any:
    """The published class ``key`` (:data:`CLASSES`) for the project ``config``, loaded with ``weights``."""
    return load(CLASSES[key](config), weights)
