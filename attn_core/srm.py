"""Style-based Recalibration Module.

Paper: HyunJae Lee, Hyo-Eun Kim, Hyeonseob Nam. "SRM: A Style-based Recalibration Module for Convolutional Neural
Networks", ICCV 2019, arXiv:1903.10829. The authors' code: hyunjaelee410/style-based-recalibration-module,
``models/recalibration_modules.py`` (``SRMLayer``). timm has no SRM.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

from . import ops
from .autodiff import Node
from .precision import FLOAT_DTYPES
from .spec import AttentionConfig, ConfigError, InputShapeError, ParamSpec, check_batch_norm_input, is_real

__all__ = ["SRMConfig", "SRM_PRESETS"]


@dataclass(frozen=True)
class SRMConfig(AttentionConfig):
    """SRM (Lee et al., ICCV 2019, arXiv:1903.10829): style pooling, channel-wise fully connected layer, BatchNorm.

    ``t = [mean_hw(x), sqrt(var_hw(x) + eps)]`` per channel (N, C, 2); ``z_c = cfc[c, 0] * t_c0 + cfc[c, 1] * t_c1``;
    ``y = x * sigmoid(BN(z))``, BN a BatchNorm2d of the (N, C, 1, 1) map: in training each channel's statistics run
    over the N samples alone.

    Args:
        channels: input and output channels C.
        unbiased: the variance of the style pooling divides by H*W - 1 (True: the authors' code, torch's ``var()``;
            then a 1x1 map is an ``InputShapeError``, where that code returns NaN) or by H*W (False: the paper's
            Eq. 2, the population standard deviation).
        eps: added to the variance under the square root (1e-5, the authors' code; it keeps the gradient of a
            constant channel finite).
        bn_eps, bn_momentum: the BatchNorm's (1e-5, 0.1, torch's convention).
        Named upstream forms are in ``SRM_PRESETS``: ``'paper'`` (the default), ``'official'``.

    Training: the BatchNorm sees N values per channel, so training needs N > 1 (``InputShapeError``).

    Shapes: input (N, C, H, W) in torch and Paddle, (N, H, W, C) in Flax; output the same shape.
    Parameters (the authors' ``state_dict``): ``cfc`` (C, 2), ``bn.weight``, ``bn.bias`` and the state
    ``bn.running_mean``, ``bn.running_var``, each (C,).
    """

    module_name: ClassVar[str] = "SRM"
    half_in_float32: ClassVar[bool] = True  # attn_core.precision: half inputs computed in float32

    channels: int
    unbiased: bool = False
    eps: float = 1e-5
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1

    def __post_init__(self) -> None:
        self._check_positive_ints("channels")
        self._check_flags("unbiased")
        if not (is_real(self.eps) and self.eps >= 0):
            raise ConfigError(f"{self.module_name}: eps must be a non-negative finite number, got {self.eps!r}")
        self._check_batch_norm_fields()

    @property
    def min_positions(self) -> int:
        """The fewest H*W positions an input may have: 2 with the unbiased variance, else 1."""
        return 2 if self.unbiased else 1

    def param_table(self) -> tuple[ParamSpec, ...]:
        c = self.channels
        return (ParamSpec("cfc", (c, 2), "param"),
                ParamSpec("bn.weight", (c,), "bn_weight"), ParamSpec("bn.bias", (c,), "bn_bias"),
                ParamSpec("bn.running_mean", (c,), "bn_mean"), ParamSpec("bn.running_var", (c,), "bn_var"))

    def check_input(self, shape: Sequence[int | None], dtype: str, is_floating: bool, layout: str = "NCHW",
                    training: bool = False, param_dtypes: Collection[str] = (),
                    device_dtypes: Sequence[str] = FLOAT_DTYPES, framework: str | None = None) -> None:
        super().check_input(shape, dtype, is_floating, layout, training, param_dtypes, device_dtypes, framework)
        h, w = (shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2])
        known = [int(s) for s in (h, w) if s is not None and int(s) >= 0]
        if len(known) == 2 and known[0] * known[1] < self.min_positions:
            raise InputShapeError(f"{self.module_name}: the unbiased variance of the style pooling (unbiased=True, "
                                  f"the authors' code) divides by H*W - 1 and needs H*W > 1, got input shape "
                                  f"{tuple(shape)} ({layout}); unbiased=False (the paper) takes a 1x1 map")

    def check_training_input(self, shape: Sequence[int | None], layout: str = "NCHW") -> None:
        """The BatchNorm normalises the (N, C, 1, 1) style map: N values per channel, whatever H and W are."""
        n, c = (shape[0], shape[1]) if layout == "NCHW" else (shape[0], shape[3])
        check_batch_norm_input(self.module_name, (n, c, 1, 1))

    def reference_forward(self, x: Node, params: Mapping[str, Node], training: bool = False,
                          taps: dict[str, Node] | None = None) -> Node:
        n, c, h, w = x.shape
        mu = ops.mean(x, (2, 3))
        centred = ops.sub(x, mu)
        var = ops.scale(ops.sum(ops.square(centred), (2, 3)), 1.0 / (h * w - 1 if self.unbiased else h * w))
        std = ops.sqrt(ops.add_scalar(var, float(self.eps)))
        cfc = params["cfc"]
        z = ops.add(ops.mul(mu, ops.reshape(ops.take(cfc, 1, 0, 1), (1, c, 1, 1))),
                    ops.mul(std, ops.reshape(ops.take(cfc, 1, 1, 2), (1, c, 1, 1))))
        z = ops.batch_norm(z, params["bn.weight"], params["bn.bias"], params["bn.running_mean"],
                           params["bn.running_var"], training=training, eps=self.bn_eps, momentum=self.bn_momentum)
        g = ops.sigmoid(z)
        if taps is not None:
            taps["style"] = ops.reshape(ops.concat([mu, std], 2), (n, c, 2))
            taps["gate"] = g
        return ops.mul(x, g)


# Named forms found upstream (docs/modules.md). Use as ``SRM(channels, **SRM_PRESETS['official'])``.
SRM_PRESETS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    # the paper's Eq. 2: the population standard deviation (divided by H*W)
    "paper": MappingProxyType(dict(unbiased=False, eps=1e-5)),
    # the authors' SRMLayer: torch's var(), divided by H*W - 1, plus 1e-5 under the square root
    "official": MappingProxyType(dict(unbiased=True, eps=1e-5)),
})
