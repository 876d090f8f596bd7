"""Gather-Excite in PyTorch. The math and its documentation: :class:`attn_core.GatherExciteConfig`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attn_core import GatherExciteConfig, bn_momentum_for

from ._base import AttentionModule
from ._ops import ACTIVATIONS, batch_norm_as, conv_as


def nearest_source(size_in: int, size_out: int, device: torch.device) -> torch.Tensor:
    """:func:`attn_core.ops.nearest_indices` in torch ops (float32, as torch's own kernels), which torch.compile
    traces into its graph: the input index each of ``size_out`` outputs reads."""
    i = torch.arange(size_out, device=device)
    if size_out == size_in:
        return i
    if size_out == 2 * size_in:
        return i // 2
    scale = torch.tensor(size_in, dtype=torch.float32, device=device) / size_out
    return (i.to(torch.float32) * scale).floor().long().clamp(max=size_in - 1)


def resize_nearest(g: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``g`` (N, C, h, w) resized to ``size`` by torch's nearest rule for float32 inputs, as explicit indices:
    ``F.interpolate`` rounds float64 inputs otherwise for some sizes over 128."""
    rows = nearest_source(g.shape[2], size[0], g.device)
    return g.index_select(2, rows).index_select(3, nearest_source(g.shape[3], size[1], g.device))


class ConvMlp(nn.Module):
    """timm's ``ConvMlp`` without norm: ``fc2(act(fc1(x)))``, 1x1 convolutions with biases."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)


class GatherExcite(AttentionModule):
    __doc__ = GatherExciteConfig.__doc__

    def __init__(self, channels: int, feat_size: tuple[int, int] | None = None, extra_params: bool = False,
                 extent: int = 0, use_mlp: bool = True, rd_ratio: float = 1.0 / 16, rd_channels: int | None = None,
                 rd_divisor: int | None = 1, add_maxpool: bool = False, act_layer: str = "relu",
                 norm_layer: str | None = "batchnorm", gate_layer: str = "sigmoid", bn_eps: float = 1e-5,
                 bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.config = cfg = GatherExciteConfig(channels, feat_size, extra_params, extent, use_mlp, rd_ratio,
                                               rd_channels, rd_divisor, add_maxpool, act_layer, norm_layer,
                                               gate_layer, bn_eps, bn_momentum)
        c = cfg.channels
        self.gather: nn.Sequential | None = None
        if cfg.extra_params:
            self.gather = nn.Sequential()
            kernel, stride, padding = (cfg.feat_size, 1, 0) if cfg.extent == 0 else ((3, 3), 2, 1)
            for i in range(1, cfg.num_convs + 1):
                self.gather.add_module(f"conv{i}", nn.Conv2d(c, c, kernel, stride, padding, groups=c, bias=False))
                if cfg.norm:
                    self.gather.add_module(f"norm{i}", nn.BatchNorm2d(
                        c, eps=cfg.bn_eps, momentum=bn_momentum_for("torch", cfg.bn_momentum)))
        self.mlp = ConvMlp(c, cfg.hidden) if cfg.use_mlp else None
        self._act = ACTIVATIONS[cfg.act_layer]
        self._gate = ACTIVATIONS[cfg.gate_layer]
        self.add_gate()

    def _gathered(self, xc: torch.Tensor, compute: torch.dtype | None) -> torch.Tensor:
        cfg = self.config
        if self.gather is not None:
            g = xc
            for i in range(1, cfg.num_convs + 1):
                g = conv_as(self.gather.get_submodule(f"conv{i}"), g, compute)
                if cfg.norm:
                    g = batch_norm_as(self.gather.get_submodule(f"norm{i}"), g, compute)
                if i != cfg.num_convs:
                    g = self._act(g)
            return g
        if cfg.extent == 0:
            g = xc.mean((2, 3), keepdim=True)
            return 0.5 * g + 0.5 * xc.amax((2, 3), keepdim=True) if cfg.add_maxpool else g
        k, s, p = cfg.pool_geometry
        g = F.avg_pool2d(xc, k, s, p, count_include_pad=False)
        return 0.5 * g + 0.5 * F.max_pool2d(xc, k, s, p) if cfg.add_maxpool else g

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compute, xc = self.prepare(x)
        g = self._gathered(xc, compute)
        if self.mlp is not None:
            g = conv_as(self.mlp.fc2, self._act(conv_as(self.mlp.fc1, g, compute)), compute)
        if g.shape[2] != 1 or g.shape[3] != 1:
            g = resize_nearest(g, (x.shape[2], x.shape[3]))
        y = xc * self.expose_gate(self._gate(g))
        return self.finish(y, x, compute)
