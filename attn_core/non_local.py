"""Non-local attention and the grouped Bilinear Attention Transform (BAT), as timm has them.

Papers: Xiaolong Wang, Ross Girshick, Abhinav Gupta, Kaiming He. "Non-local Neural Networks", CVPR 2018,
arXiv:1711.07971. Lu Chi, Zehuan Yuan, Yadong Mu, Changhu Wang. "Non-Local Neural Networks With Grouped Bilinear
Attentional Transforms", CVPR 2020 (CVF open access; authors' code: BA-Transform/BAT-Image-Classification).
timm: ``timm.layers.non_local_attn.NonLocalAttn`` (``'nl'``) and ``BatNonLocalAttn`` (``'bat'``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from . import ops
from .autodiff import Node
from .precision import FLOAT_DTYPES
from .spec import AttentionConfig, ConfigError, InputShapeError, ParamSpec, is_real, reduced_channels

__all__ = ["NonLocalAttnConfig", "BatNonLocalAttnConfig", "BAT_ACT_LAYERS", "nl_reduced_channels"]

#: the activations of BAT's conv-BatchNorm-activation blocks (timm's ``act_layer``, as a name)
BAT_ACT_LAYERS = ("relu", "silu")
#: timm builds every BatchNorm of both modules with torch's defaults, which its constructors do not expose
BN_EPS = 1e-5
BN_MOMENTUM = 0.1


def nl_reduced_channels(module: str, channels: int, rd_ratio: float, rd_channels: int | None,
                        rd_divisor: int) -> int:
    """The reduced width of both modules, as timm computes it: ``rd_channels`` when given, else
    ``make_divisible(channels * rd_ratio, rd_divisor)`` with timm's default ``round_limit=0.9`` (a rounding down by
    more than 10 % goes up one divisor instead), which is never below ``rd_divisor``."""
    return reduced_channels(module, channels, rd_ratio, rd_channels, rd_divisor, round_limit=0.9,
                            divisor_optional=False)


def _bn_table(prefix: str, channels: int) -> list[ParamSpec]:
    return [ParamSpec(f"{prefix}.weight", (channels,), "bn_weight"),
            ParamSpec(f"{prefix}.bias", (channels,), "bn_bias"),
            ParamSpec(f"{prefix}.running_mean", (channels,), "bn_mean"),
            ParamSpec(f"{prefix}.running_var", (channels,), "bn_var")]


def _bn(x: Node, params: Mapping[str, Node], prefix: str, training: bool) -> Node:
    return ops.batch_norm(x, params[f"{prefix}.weight"], params[f"{prefix}.bias"], params[f"{prefix}.running_mean"],
                          params[f"{prefix}.running_var"], training=training, eps=BN_EPS, momentum=BN_MOMENTUM)


@dataclass(frozen=True)
class NonLocalAttnConfig(AttentionConfig):
    """Non-local block for images (Wang et al., CVPR 2018, arXiv:1711.07971; timm's ``NonLocalAttn``).

    With ``theta = t(x)``, ``phi = p(x)``, ``g = g(x)`` (1x1 convolutions with bias, C -> rd) flattened over the
    H*W positions: ``A = softmax_j(theta_i . phi_j * s)``, ``ctx_i = sum_j A_ij g_j``, and
    ``y = x + BatchNorm(z(ctx))`` with ``z`` a 1x1 convolution with bias (rd -> C). ``s = C ** -0.5`` (the input
    channels, not rd, as timm has it) with ``use_scale``, else 1.

    Args:
        channels: input and output channels C.
        use_scale: scale the dot products by ``C ** -0.5`` (timm: True).
        rd_ratio: reduction ratio of the embedding width (1/8).
        rd_channels: embedding width; overrides ``rd_ratio``.
        rd_divisor: ``C * rd_ratio`` rounded to the nearest multiple of it, at least it, and up one multiple where
            that rounds down by more than 10 % (timm's ``make_divisible``, default 8).

    BatchNorm: eps 1e-5, momentum 0.1 (torch convention), as timm builds it; the project's running-statistics
    convention (see ``attn_core.SpatialAttentionConfig``). timm initialises its weight to 0, so that a new block
    is the identity; weights loaded here are used as they are.

    Shapes: input (N, C, H, W) in torch and Paddle, (N, H, W, C) in Flax; output the same shape. The attention
    matrix is (N, H*W, H*W).
    Parameters (timm's ``state_dict`` names, torch layout): ``t``, ``p``, ``g``: ``.weight`` (rd, C, 1, 1) and
    ``.bias`` (rd,); ``z.weight`` (C, rd, 1, 1), ``z.bias`` (C,); ``norm.weight``, ``norm.bias`` and the state
    ``norm.running_mean``, ``norm.running_var``, each (C,).
    """

    module_name: ClassVar[str] = "NonLocalAttn"
    half_in_float32: ClassVar[bool] = True  # attn_core.precision: half inputs computed in float32

    channels: int
    use_scale: bool = True
    rd_ratio: float = 1.0 / 8
    rd_channels: int | None = None
    rd_divisor: int = 8
    hidden: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        self._check_positive_ints("channels")
        self._check_flags("use_scale")
        hidden = nl_reduced_channels(self.module_name, self.channels, self.rd_ratio, self.rd_channels,
                                     self.rd_divisor)
        object.__setattr__(self, "hidden", hidden)

    @property
    def scale(self) -> float:
        """The factor of the dot products before the softmax: ``C ** -0.5`` with ``use_scale``, else 1."""
        return float(self.channels) ** -0.5 if self.use_scale else 1.0

    def param_table(self) -> tuple[ParamSpec, ...]:
        c, rd = self.channels, self.hidden
        table = []
        for name in ("t", "p", "g"):
            table += [ParamSpec(f"{name}.weight", (rd, c, 1, 1), "conv_weight"), ParamSpec(f"{name}.bias", (rd,),
                                                                                         "conv_bias")]
        table += [ParamSpec("z.weight", (c, rd, 1, 1), "conv_weight"), ParamSpec("z.bias", (c,), "conv_bias")]
        return tuple(table + _bn_table("norm", c))

    def reference_forward(self, x: Node, params: Mapping[str, Node], training: bool = False,
                          taps: dict[str, Node] | None = None) -> Node:
        n, _, h, w = x.shape
        rd, hw = self.hidden, h * w

        def embed(name: str) -> Node:  # (N, rd, H*W)
            return ops.reshape(ops.conv2d(x, params[f"{name}.weight"], params[f"{name}.bias"]), (n, rd, hw))

        theta = ops.transpose(embed("t"), (0, 2, 1))
        g = ops.transpose(embed("g"), (0, 2, 1))
        att = ops.softmax(ops.scale(ops.matmul(theta, embed("p")), self.scale), axis=2)
        ctx = ops.reshape(ops.transpose(ops.matmul(att, g), (0, 2, 1)), (n, rd, h, w))
        if taps is not None:
            taps["nl_attention"] = att
            taps["nl_context"] = ctx
        z = ops.conv2d(ctx, params["z.weight"], params["z.bias"])
        return ops.add(_bn(z, params, "norm", training), x)


@dataclass(frozen=True)
class BatNonLocalAttnConfig(AttentionConfig):
    """BAT non-local block (Chi et al., CVPR 2020, "Non-Local Neural Networks With Grouped Bilinear Attentional
    Transforms"; timm's ``BatNonLocalAttn``, adapted from the authors' BA-Transform/BAT-Image-Classification).

    ``y = x + Dropout2d(cna2(BAT(cna1(x))))``, where ``cnaK`` is a conv-BatchNorm-activation block (1x1 convolution
    without bias: C -> rd, then rd -> C) and BAT, on ``u`` (N, rd, H, W) with ``b = block_size``, G groups,
    ``t = H / b``, ``s = W / b``:

    1. ``o = cna(u)``: rd -> G channels;
    2. ``P = sigmoid(conv_p(maxpool_{t x W}(o)))`` and ``Q = sigmoid(conv_q(maxpool_{H x s}(o)))``, each viewed as
       (N, G, b, b); ``conv_p`` has kernel (b, 1), ``conv_q`` (1, b), both G -> b*b*G with bias. The rows of P and
       the columns of Q are normalised to sum 1;
    3. ``P`` and ``Q`` are shared by the rd / G channels of their group and resized as timm's ``resize_mat``:
       ``kron(P, I_t)`` (H x H) and ``kron(Q, I_s)`` (W x W), so ``v = kron(P, I_t) @ u @ kron(Q, I_s)`` per
       channel: block row i of the output mixes the block rows j of ``u`` at the same offset inside the block;
    4. ``BAT(u) = cna(v)``: rd -> rd.

    Args:
        channels: input and output channels C.
        block_size: b (timm: 7); H and W must be multiples of it (an ``InputShapeError`` otherwise).
        groups: G (timm: 2); must divide rd.
        rd_ratio, rd_channels, rd_divisor: the reduced width rd, as :class:`NonLocalAttnConfig` (timm: 1/4, None,
            8).
        drop_rate: p of the ``Dropout2d`` on the branch (timm: 0.2), in [0, 1]: in training each (sample,
            channel) of the branch is zeroed with probability p and the rest scaled by 1 / (1 - p); in evaluation
            nothing is dropped.
        act_layer: ``'relu'`` (timm) or ``'silu'``, the activation of every conv-BatchNorm-activation block.

    Dropout, deterministically: the reference draws no random numbers. In training with ``drop_rate > 0`` its
    forward takes the channel mask as ``keep`` (N, C, 1, 1) of 0 and 1 and refuses to run without one, so a
    training comparison either uses ``drop_rate=0`` (the conformance cases) or reads the mask back from the
    framework (the tests). The running statistics do not depend on the mask (the dropout follows the last
    BatchNorm): :meth:`reference_state` computes them without one.

    BatchNorm: eps 1e-5, momentum 0.1 (torch convention), as timm builds them; four of them, all seeing the
    input's N, H and W.

    Shapes: input (N, C, H, W) in torch and Paddle, (N, H, W, C) in Flax; output the same shape.
    Parameters (timm's ``state_dict`` names, torch layout): ``conv1.conv.weight`` (rd, C, 1, 1),
    ``ba.conv1.conv.weight`` (G, rd, 1, 1), ``ba.conv_p.weight`` (b*b*G, G, b, 1), ``ba.conv_p.bias`` (b*b*G,),
    ``ba.conv_q.weight`` (b*b*G, G, 1, b), ``ba.conv_q.bias``, ``ba.conv2.conv.weight`` (rd, rd, 1, 1),
    ``conv2.conv.weight`` (C, rd, 1, 1), and for each of ``conv1``, ``ba.conv1``, ``ba.conv2``, ``conv2`` its
    BatchNorm ``<block>.bn.weight``, ``.bias`` and the state ``.running_mean``, ``.running_var``.
    """

    module_name: ClassVar[str] = "BatNonLocalAttn"
    half_in_float32: ClassVar[bool] = True  # attn_core.precision: half inputs computed in float32

    channels: int
    block_size: int = 7
    groups: int = 2
    rd_ratio: float = 0.25
    rd_channels: int | None = None
    rd_divisor: int = 8
    drop_rate: float = 0.2
    act_layer: str = "relu"
    hidden: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        name = self.module_name
        self._check_positive_ints("channels", "block_size", "groups")
        hidden = nl_reduced_channels(name, self.channels, self.rd_ratio, self.rd_channels, self.rd_divisor)
        if hidden % self.groups:
            raise ConfigError(f"{name}: groups {self.groups} must divide the reduced width rd = {hidden} (each group's "
                              f"P and Q are shared by rd / groups channels); pass rd_channels or groups that fit")
        if not (is_real(self.drop_rate) and 0 <= self.drop_rate <= 1):
            raise ConfigError(f"{name}: drop_rate must be a probability in [0, 1], got {self.drop_rate!r}")
        self._check_choices(act_layer=BAT_ACT_LAYERS)
        object.__setattr__(self, "hidden", hidden)

    @property
    def spatial_multiple(self) -> int:
        """What H and W must be multiples of: ``block_size`` (``conformance.cases.cases_for`` sizes its inputs so)."""
        return int(self.block_size)

    @property
    def drop_scale(self) -> float:
        """What a kept channel of the branch is multiplied by in training: 1 / (1 - p), and 0 for p = 1 (every
        channel dropped, as torch, Paddle and Flax do)."""
        return 1.0 / (1.0 - self.drop_rate) if self.drop_rate < 1 else 0.0

    def check_input(self, shape: Sequence[int | None], dtype: str, is_floating: bool,
                    layout: str = "NCHW", training: bool = False, param_dtypes: Collection[str] = (),
                    device_dtypes: Sequence[str] = FLOAT_DTYPES, framework: str | None = None) -> None:
        """The checks of every module, then: H and W must be multiples of ``block_size`` (the max pools cut each
        into ``block_size`` equal blocks, and ``kron(P, I_t)`` needs ``H = block_size * t``)."""
        super().check_input(shape, dtype, is_floating, layout, training, param_dtypes, device_dtypes, framework)
        shape_t = tuple(None if (s is None or int(s) < 0) else int(s) for s in shape)
        h, w = (shape_t[2], shape_t[3]) if layout == "NCHW" else (shape_t[1], shape_t[2])
        b = self.block_size
        if any(s is not None and s % b for s in (h, w)):
            shown = ", ".join("?" if s is None else str(s) for s in shape_t)
            raise InputShapeError(f"{self.module_name}: expected H and W to be multiples of block_size {b} (the "
                                  f"bilinear transform cuts each into {b} blocks), got input shape ({shown}) "
                                  f"({layout}: H={'?' if h is None else h}, W={'?' if w is None else w})")

    def param_table(self) -> tuple[ParamSpec, ...]:
        c, rd, g, b = self.channels, self.hidden, self.groups, self.block_size
        table = [ParamSpec("conv1.conv.weight", (rd, c, 1, 1), "conv_weight"), *_bn_table("conv1.bn", rd),
                 ParamSpec("ba.conv1.conv.weight", (g, rd, 1, 1), "conv_weight"), *_bn_table("ba.conv1.bn", g),
                 ParamSpec("ba.conv_p.weight", (b * b * g, g, b, 1), "conv_weight"),
                 ParamSpec("ba.conv_p.bias", (b * b * g,), "conv_bias"),
                 ParamSpec("ba.conv_q.weight", (b * b * g, g, 1, b), "conv_weight"),
                 ParamSpec("ba.conv_q.bias", (b * b * g,), "conv_bias"),
                 ParamSpec("ba.conv2.conv.weight", (rd, rd, 1, 1), "conv_weight"), *_bn_table("ba.conv2.bn", rd),
                 ParamSpec("conv2.conv.weight", (c, rd, 1, 1), "conv_weight"), *_bn_table("conv2.bn", c)]
        return tuple(table)

    def _cna(self, x: Node, params: Mapping[str, Node], prefix: str, training: bool) -> Node:
        """timm's ConvNormAct: 1x1 convolution without bias, BatchNorm, activation."""
        y = ops.conv2d(x, params[f"{prefix}.conv.weight"])
        return ops.activation(self.act_layer, _bn(y, params, f"{prefix}.bn", training))

    def _per_channel(self, m: Node) -> Node:
        """(N, G, b, b) -> (N, rd, b, b): each group's matrix repeated for its rd / G channels."""
        n, g, b = m.shape[0], self.groups, self.block_size
        per_group = ops.constant(np.ones((1, 1, self.hidden // g, 1, 1)))
        return ops.reshape(ops.mul(ops.reshape(m, (n, g, 1, b, b)), per_group), (n, self.hidden, b, b))

    def _resize(self, m: Node, t: int) -> Node:
        """timm's ``resize_mat``: ``kron(m, I_t)`` over the last two axes, as the nearest-neighbour repeat of ``m``
        by t masked to the positions whose row and column offsets inside the block agree."""
        if t <= 1:
            return m
        size = self.block_size * t
        offset = np.arange(size) % t
        return ops.mul(ops.repeat_nearest(m, (size, size)), ops.constant(offset[:, None] == offset[None, :]))

    def reference_forward(self, x: Node, params: Mapping[str, Node], training: bool = False,
                          taps: dict[str, Node] | None = None, keep: np.ndarray | None = None) -> Node:
        """The float64 forward; ``keep`` (N, C, 1, 1) of 0 and 1 is the channel mask of the dropout, needed in
        training when ``drop_rate > 0`` (see the class docstring) and ignored otherwise."""
        dropping = training and self.drop_rate > 0
        if dropping and keep is None:
            raise ValueError(f"{self.module_name}: in training with drop_rate {self.drop_rate} the output depends on "
                             f"Dropout2d's random channel mask; pass it as keep (N, C, 1, 1) of 0 and 1, or compare "
                             f"with drop_rate=0")
        n, _, h, w = x.shape
        b, g = self.block_size, self.groups
        u = self._cna(x, params, "conv1", training)
        o = self._cna(u, params, "ba.conv1", training)
        th, tw = h // b, w // b
        rows = ops.max_pool2d(o, (th, w), (th, w))  # timm's adaptive_max_pool2d to (b, 1): (N, G, b, 1)
        cols = ops.max_pool2d(o, (h, tw), (h, tw))  # ... to (1, b): (N, G, 1, b)
        p = ops.sigmoid(ops.reshape(ops.conv2d(rows, params["ba.conv_p.weight"], params["ba.conv_p.bias"]),
                                    (n, g, b, b)))
        q = ops.sigmoid(ops.reshape(ops.conv2d(cols, params["ba.conv_q.weight"], params["ba.conv_q.bias"]),
                                    (n, g, b, b)))
        p = ops.div(p, ops.sum(p, 3))
        q = ops.div(q, ops.sum(q, 2))
        v = ops.matmul(ops.matmul(self._resize(self._per_channel(p), th), u), self._resize(self._per_channel(q), tw))
        v = self._cna(v, params, "ba.conv2", training)
        branch = self._cna(v, params, "conv2", training)
        if taps is not None:
            taps["bat_p"] = p
            taps["bat_q"] = q
            taps["bat_transform"] = v
            taps["bat_branch"] = branch
        if dropping:
            mask = np.asarray(keep, dtype=np.float64)
            if mask.shape != (n, self.channels, 1, 1) or not np.isin(mask, (0.0, 1.0)).all():
                raise ValueError(f"{self.module_name}: keep must be an (N, C, 1, 1) = {(n, self.channels, 1, 1)} "
                                 f"array of 0 and 1, got shape {mask.shape}")
            branch = ops.mul(branch, ops.constant(mask * self.drop_scale))
        return ops.add(branch, x)

    def reference_state(self, weights: Mapping[str, np.ndarray], x: np.ndarray) -> dict[str, np.ndarray]:
        """The running statistics after one training forward; the dropout follows the last BatchNorm, so they do
        not depend on its mask and are those of ``drop_rate=0``."""
        if self.drop_rate > 0:
            return self.replace(drop_rate=0.0).reference_state(weights, x)
        return super().reference_state(weights, x)
