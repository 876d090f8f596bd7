"""Gated Channel Transformation.

Paper: Zongxin Yang, Linchao Zhu, Yu Wu, Yi Yang. "Gated Channel Transformation for Visual Recognition", CVPR 2020,
arXiv:1909.11519. The authors' code: z-x-yang/GCT, ``TensorFlow/convnet_builder.py`` (``GCT``, the ImageNet
models) and ``PyTorch/GCT.py`` (the same math, the parameters ``alpha``, ``gamma``, ``beta``). timm has no GCT.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

from . import ops
from .autodiff import Node
from .spec import AttentionConfig, ParamSpec, check_positive_real

__all__ = ["GCTConfig", "GCT_PRESETS", "GCT_MODES", "CHANNEL_EPS"]

#: the norm of the global context embedding
GCT_MODES = ("l2", "l1")
#: where epsilon enters the channel normalisation: added to the mean over the channels (the authors' code) or to
#: the sum (the paper's Eq. 2)
CHANNEL_EPS = ("mean", "sum")


def _abs(a: Node) -> Node:
    """|a| with torch's gradient sign(a) (0 at 0), from two ReLUs."""
    return ops.add(ops.relu(a), ops.relu(ops.scale(a, -1.0)))


@dataclass(frozen=True)
class GCTConfig(AttentionConfig):
    """Gated Channel Transformation (Yang et al., CVPR 2020, arXiv:1909.11519, Eqs. 1-3).

    l2 (the default): ``s = alpha * sqrt(sum_hw x^2 + epsilon)``, ``s_hat = s * gamma / sqrt(mean_c s^2 + e)``;
    l1: ``s = alpha * sum_hw |x|`` (``sum_hw x`` with ``after_relu``), ``s_hat = s * gamma / (mean_c |s| + e)``;
    then ``y = x * (1 + tanh(s_hat + beta))``. ``e`` is ``epsilon`` where ``channel_eps='mean'`` (the authors'
    TensorFlow and PyTorch code) and ``epsilon / C`` where ``channel_eps='sum'`` (the paper's Eq. 2,
    ``sqrt(C) s / sqrt(sum_c s^2 + epsilon)``, and its l1 counterpart ``C s / (sum_c |s| + epsilon)``).

    Args:
        channels: input and output channels C.
        epsilon: positive (1e-5): inside the l2 norm of each channel and in the channel normalisation.
        mode: ``'l2'`` or ``'l1'``.
        after_relu: l1 only: the input is taken as non-negative and summed without ``abs`` (the authors' option for a
            GCT after a ReLU; on negative inputs it is a different function). Ignored by l2, as upstream.
        channel_eps: ``'mean'`` or ``'sum'`` (above). Named upstream forms are in ``GCT_PRESETS``:
            ``'official'`` (the default), ``'paper'``.

    Shapes: input (N, C, H, W) in torch and Paddle, (N, H, W, C) in Flax; output the same shape.
    Parameters (the authors' names and shapes): ``alpha``, ``gamma``, ``beta``, each (1, C, 1, 1), in every
    framework (Flax too: a parameter outside any layer keeps the canonical layout).
    """

    module_name: ClassVar[str] = "GCT"
    half_in_float32: ClassVar[bool] = True  # attn_core.precision: half inputs computed in float32

    channels: int
    epsilon: float = 1e-5
    mode: str = "l2"
    after_relu: bool = False
    channel_eps: str = "mean"

    def __post_init__(self) -> None:
        self._check_positive_ints("channels")
        check_positive_real(self.module_name, "epsilon", self.epsilon,
                            "the l1 normalisation divides by mean_c |s| + epsilon")
        self._check_choices(mode=GCT_MODES)
        self._check_flags("after_relu")
        self._check_choices(channel_eps=CHANNEL_EPS)

    @property
    def norm_epsilon(self) -> float:
        """The epsilon added to the mean over the channels: ``epsilon``, or ``epsilon / C`` for the paper's sum."""
        return float(self.epsilon) if self.channel_eps == "mean" else float(self.epsilon) / self.channels

    def param_table(self) -> tuple[ParamSpec, ...]:
        shape = (1, self.channels, 1, 1)
        return tuple(ParamSpec(name, shape, "param") for name in ("alpha", "gamma", "beta"))

    def reference_forward(self, x: Node, params: Mapping[str, Node], training: bool = False,
                          taps: dict[str, Node] | None = None) -> Node:
        alpha, gamma, beta = params["alpha"], params["gamma"], params["beta"]
        if self.mode == "l2":
            emb = ops.mul(ops.sqrt(ops.add_scalar(ops.sum(ops.square(x), (2, 3)), float(self.epsilon))), alpha)
            norm = ops.div(gamma, ops.sqrt(ops.add_scalar(ops.mean(ops.square(emb), 1), self.norm_epsilon)))
        else:
            emb = ops.mul(ops.sum(x if self.after_relu else _abs(x), (2, 3)), alpha)
            norm = ops.div(gamma, ops.add_scalar(ops.mean(_abs(emb), 1), self.norm_epsilon))
        g = ops.add_scalar(ops.tanh(ops.add(ops.mul(emb, norm), beta)), 1.0)
        if taps is not None:
            taps["embedding"] = emb
            taps["gate"] = g
        return ops.mul(x, g)


# Named forms found upstream (docs/modules.md). Use as ``GCT(channels, **GCT_PRESETS['paper'])``.
GCT_PRESETS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    # the authors' TensorFlow and PyTorch code, which trained their released GCT-ResNet-50: epsilon on the mean
    "official": MappingProxyType(dict(channel_eps="mean")),
    # the paper's Eq. 2: epsilon on the sum over the channels
    "paper": MappingProxyType(dict(channel_eps="sum")),
})
