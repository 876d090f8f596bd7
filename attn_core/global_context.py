"""Global Context attention (GCNet).

Paper: Yue Cao, Jiarui Xu, Stephen Lin, Fangyun Wei, Han Hu. "GCNet: Non-local Networks Meet Squeeze-Excitation
Networks and Beyond", ICCV Workshops 2019, arXiv:1904.11492. timm class: ``GlobalContext``
(timm/layers/global_context.py); the authors' code: github.com/xvjiarui/GCNet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from . import ops
from .autodiff import Node
from .se import ACT_LAYERS, GATE_LAYERS
from .spec import AttentionConfig, ConfigError, ParamSpec, reduced_channels

__all__ = ["GlobalContextConfig", "GlobalContextAddConfig", "LAYER_NORM_EPS"]

#: timm's LayerNorm2d epsilon in the context MLPs
LAYER_NORM_EPS = 1e-6

_DOC = """Global Context block (Cao et al., ICCV-W 2019, arXiv:1904.11492), timm's ``GlobalContext``{form}.

    ``context = sum_hw(x * softmax_hw(conv_attn(x)))`` (N, C, 1, 1): attention pooling by a 1x1 convolution C -> 1
    with bias, softmax over the H * W positions; without ``use_attn`` the plain mean over H, W. Each context MLP
    is timm's ``ConvMlp`` with ``LayerNorm2d``: ``fc2(act(norm(fc1(context))))``, fc1 C -> rd and fc2 rd -> C 1x1
    convolutions with biases, ``norm`` a LayerNorm over the rd channels alone (eps 1e-6) with a per-channel affine.
    ``y = x * gate(mlp_scale(context))`` with ``fuse_scale``, then ``y + mlp_add(context)`` with ``fuse_add``.

    Registered twice, as timm's ``get_attn`` does: ``'gc'`` (``GlobalContext``: scaling only) and ``'gca'``
    (``GlobalContextAdd``, timm's ``partial(GlobalContext, fuse_add=True, fuse_scale=False)``: adding only, the
    paper's fusion).

    Args:
        channels: input and output channels C.
        use_attn: attention pooling (True) or the mean (False).
        fuse_add, fuse_scale: which of the two fusions run; at least one (without either the module is the identity,
            which timm builds but is refused here).
        init_last_zero: accepted for timm's signature, where it has no effect: timm zero-initialises
            ``mlp_add.fc2.weight`` whatever its value, and so do the backends (their other parameters start as the
            framework's defaults, ``conv_attn.weight`` Kaiming-normal as timm's).
        rd_ratio, rd_channels, rd_divisor: the MLPs' hidden width rd, as SE's (timm: 1/8, rounded to a multiple of 1).
        act_layer: ``'relu'`` or ``'silu'``. gate_layer: ``'sigmoid'`` or ``'hard_sigmoid'`` (of ``fuse_scale``).

    Shapes: input (N, C, H, W) in torch and Paddle, (N, H, W, C) in Flax; output the same shape.
    Parameters (canonical, timm's state_dict keys): with ``use_attn`` ``conv_attn.weight`` (1, C, 1, 1) and
    ``conv_attn.bias`` (1,); for each fusion ``mlp_add.`` / ``mlp_scale.``: ``fc1.weight`` (rd, C, 1, 1),
    ``fc1.bias`` (rd,), ``norm.weight``, ``norm.bias`` (rd,), ``fc2.weight`` (C, rd, 1, 1), ``fc2.bias`` (C,).
    """


@dataclass(frozen=True)
class GlobalContextConfig(AttentionConfig):
    __doc__ = _DOC.format(form="")

    module_name: ClassVar[str] = "GlobalContext"
    half_in_float32: ClassVar[bool] = True  # attn_core.precision: half inputs computed in float32

    channels: int
    use_attn: bool = True
    fuse_add: bool = False
    fuse_scale: bool = True
    init_last_zero: bool = False
    rd_ratio: float = 1.0 / 8
    rd_channels: int | None = None
    rd_divisor: int | None = 1
    act_layer: str = "relu"
    gate_layer: str = "sigmoid"
    hidden: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        name = self.module_name
        self._check_positive_ints("channels")
        self._check_flags("use_attn", "fuse_add", "fuse_scale", "init_last_zero")
        if not (self.fuse_add or self.fuse_scale):
            raise ConfigError(f"{name}: at least one of fuse_add and fuse_scale must be True (without either the "
                              f"module returns its input)")
        self._check_choices(act_layer=ACT_LAYERS, gate_layer=GATE_LAYERS)
        object.__setattr__(self, "hidden",
                           reduced_channels(name, self.channels, self.rd_ratio, self.rd_channels, self.rd_divisor))

    @property
    def mlps(self) -> tuple[str, ...]:
        """The context MLPs the module has, in timm's order: ``'mlp_add'``, ``'mlp_scale'``."""
        return tuple(m for m, on in (("mlp_add", self.fuse_add), ("mlp_scale", self.fuse_scale)) if on)

    def param_table(self) -> tuple[ParamSpec, ...]:
        c, rd = self.channels, self.hidden
        table: list[ParamSpec] = []
        if self.use_attn:
            table += [ParamSpec("conv_attn.weight", (1, c, 1, 1), "conv_weight"),
                      ParamSpec("conv_attn.bias", (1,), "conv_bias")]
        for m in self.mlps:
            # the LayerNorm's affine takes the BatchNorm roles: the same place in every framework (weight/bias, and
            # Flax's scale/bias), and initial values away from the identity
            table += [ParamSpec(f"{m}.fc1.weight", (rd, c, 1, 1), "conv_weight"),
                      ParamSpec(f"{m}.fc1.bias", (rd,), "conv_bias"),
                      ParamSpec(f"{m}.norm.weight", (rd,), "bn_weight"),
                      ParamSpec(f"{m}.norm.bias", (rd,), "bn_bias"),
                      ParamSpec(f"{m}.fc2.weight", (c, rd, 1, 1), "conv_weight"),
                      ParamSpec(f"{m}.fc2.bias", (c,), "conv_bias")]
        return tuple(table)

    def context(self, x: Node, params: Mapping[str, Node]) -> Node:
        """The pooled context (N, C, 1, 1): attention-weighted sum over H, W, or the mean."""
        if not self.use_attn:
            return ops.mean(x, (2, 3))
        n, c, h, w = x.shape
        logits = ops.conv2d(x, params["conv_attn.weight"], params["conv_attn.bias"])  # (N, 1, H, W)
        attn = ops.reshape(ops.softmax(ops.reshape(logits, (n, 1, h * w)), -1), (n, h * w, 1))
        return ops.reshape(ops.matmul(ops.reshape(x, (n, c, h * w)), attn), (n, c, 1, 1))

    def mlp(self, v: Node, params: Mapping[str, Node], prefix: str) -> Node:
        """``fc2(act(layer_norm_c(fc1(v))))`` of the context MLP ``prefix`` on (N, C, 1, 1)."""
        rd = self.hidden
        h = ops.conv2d(v, params[f"{prefix}.fc1.weight"], params[f"{prefix}.fc1.bias"])
        h = ops.normalize(h, (1,), LAYER_NORM_EPS)
        h = ops.add(ops.mul(h, ops.reshape(params[f"{prefix}.norm.weight"], (1, rd, 1, 1))),
                    ops.reshape(params[f"{prefix}.norm.bias"], (1, rd, 1, 1)))
        h = ops.activation(self.act_layer, h)
        return ops.conv2d(h, params[f"{prefix}.fc2.weight"], params[f"{prefix}.fc2.bias"])

    def reference_forward(self, x: Node, params: Mapping[str, Node], training: bool = False,
                          taps: dict[str, Node] | None = None) -> Node:
        ctx = self.context(x, params)
        if taps is not None:
            taps["context"] = ctx
        y = x
        if self.fuse_scale:
            gate = ops.activation(self.gate_layer, self.mlp(ctx, params, "mlp_scale"))
            if taps is not None:
                taps["gate"] = gate
            y = ops.mul(y, gate)
        if self.fuse_add:
            term = self.mlp(ctx, params, "mlp_add")
            if taps is not None:
                taps["add_term"] = term
            y = ops.add(y, term)
        return y


@dataclass(frozen=True)
class GlobalContextAddConfig(GlobalContextConfig):
    __doc__ = _DOC.format(form=" as timm's ``'gca'``: ``fuse_add=True, fuse_scale=False``")

    module_name: ClassVar[str] = "GlobalContextAdd"

    fuse_add: bool = True
    fuse_scale: bool = False
