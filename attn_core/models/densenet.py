"""SE-DenseNet: DenseNet-BC with Squeeze-and-Excitation after each dense layer's 3x3 convolution.

Papers: Gao Huang, Zhuang Liu, Laurens van der Maaten, Kilian Q. Weinberger. "Densely Connected Convolutional
Networks", CVPR 2017, arXiv:1608.06993; Geoff Pleiss et al. "Memory-Efficient Implementation of DenseNets",
arXiv:1707.06990 (the ``efficient`` mode); SE: Hu et al., CVPR 2018. The structure and names follow seed article 000
(``_DenseLayer`` with SE after ``conv2``, before dropout; ``small_inputs`` stem; ``norm_final``), which no upstream
defines canonically (see the porting notes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .. import ops
from ..autodiff import Node
from ..se import SEConfig
from ..spec import AttentionConfig, ConfigError, ParamSpec, check_positive_int, is_real
from .layers import BatchNorm, Conv, Linear, subtree

__all__ = ["SEDenseNetConfig", "DenseLayerSpec", "TransitionSpec"]


@dataclass(frozen=True)
class DenseLayerSpec:
    """One dense layer: BN-ReLU-Conv1x1 (the bottleneck, checkpointed in efficient mode), BN-ReLU-Conv3x3, SE."""

    name: str            # 'features.denseblock1.denselayer3'
    in_channels: int     # channels of the concatenated input
    bottleneck: int      # bn_size * growth_rate
    growth_rate: int
    se: SEConfig

    def layers(self, eps: float, momentum: float) -> dict[str, Any]:
        return {"norm1": BatchNorm(self.in_channels, eps, momentum),
                "conv1": Conv(self.in_channels, self.bottleneck, 1),
                "norm2": BatchNorm(self.bottleneck, eps, momentum),
                "conv2": Conv(self.bottleneck, self.growth_rate, 3, 1, 1)}


@dataclass(frozen=True)
class TransitionSpec:
    """BN-ReLU-Conv1x1-AvgPool2x2 between dense blocks."""

    name: str            # 'features.transition1'
    in_channels: int
    out_channels: int

    def layers(self, eps: float, momentum: float) -> dict[str, Any]:
        return {"norm": BatchNorm(self.in_channels, eps, momentum),
                "conv": Conv(self.in_channels, self.out_channels, 1)}


@dataclass(frozen=True)
class SEDenseNetConfig(AttentionConfig):
    """SE-DenseNet-BC (Huang et al. 2017 with SE after every dense layer's 3x3 convolution), as seed article 000.

    Args:
        growth_rate: channels each dense layer adds (k).
        block_config: dense layers per block, e.g. (16, 16, 16).
        num_init_features: channels of the stem convolution (24 = 2k in the article's CIFAR setting).
        compression: transition width factor in (0, 1] (0.5: DenseNet-BC).
        bn_size: bottleneck width factor (4: the 1x1 convolution outputs bn_size * k channels).
        drop_rate: dropout after each dense layer in training (a random mask: conformance runs use 0 or eval).
        num_classes: outputs of ``classifier``.
        small_inputs: True: a 3x3 stride-1 stem convolution alone (CIFAR-sized inputs); False: 7x7 stride-2
            convolution, BatchNorm, ReLU and 3x3 stride-2 max pooling (ImageNet).
        efficient: recompute the concat-BN-ReLU-1x1 bottleneck in the backward pass instead of storing it
            (torch.utils.checkpoint, Paddle recompute, flax remat); the same numbers, less memory.
        in_chans: input channels.
        attn_kwargs: the SE modules' arguments. The default (no bias, timm's rounding of the hidden width to a
            multiple of 8, at least 8) differs from the article's ``Linear(k, k // 16)`` only where k // 16 is 0,
            i.e. for k < 16, where the article's SE_Block gates every feature by sigmoid(0) = 0.5;
            ``{'rd_divisor': None}`` gives exactly k // 16 and refuses k < 16.
        bn_eps, bn_momentum: of every BatchNorm (torch's convention for the momentum).

    Shapes: input (N, in_chans, H, W) in torch and Paddle, (N, H, W, in_chans) in Flax; output (N, num_classes).
    Parameters: the article's torch names (``features.conv0.weight``, ``features.denseblock{b}.denselayer{l}.``
    ``{norm1,conv1,norm2,conv2}``, ``...se.*`` for its ``SE_Block``, ``features.transition{b}.{norm,conv}``,
    ``features.norm_final``, ``classifier``).
    """

    module_name: ClassVar[str] = "SEDenseNet"

    growth_rate: int
    block_config: tuple[int, ...]
    num_init_features: int = 24
    compression: float = 0.5
    bn_size: int = 4
    drop_rate: float = 0.0
    num_classes: int = 10
    small_inputs: bool = True
    efficient: bool = False
    in_chans: int = 3
    attn_kwargs: Any = (("bias", False),)
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    dense_layers: tuple[DenseLayerSpec, ...] = field(init=False, compare=False, repr=False)
    transitions: tuple[TransitionSpec, ...] = field(init=False, compare=False, repr=False)
    num_features: int = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        name = self.module_name
        for arg in ("growth_rate", "num_init_features", "bn_size", "num_classes", "in_chans"):
            check_positive_int(name, arg, getattr(self, arg))
        blocks = tuple(self.block_config) if isinstance(self.block_config, (list, tuple)) else None
        if not blocks:
            raise ConfigError(f"{name}: block_config must be a non-empty sequence of layer counts, "
                              f"got {self.block_config!r}")
        for n in blocks:
            check_positive_int(name, "block_config[i]", n)
        object.__setattr__(self, "block_config", blocks)
        if not (is_real(self.compression) and 0 < self.compression <= 1):
            raise ConfigError(f"{name}: compression must be in (0, 1], got {self.compression!r}")
        if not (is_real(self.drop_rate) and 0 <= self.drop_rate < 1):
            raise ConfigError(f"{name}: drop_rate must be in [0, 1), got {self.drop_rate!r}")
        kwargs = dict(self.attn_kwargs.items() if isinstance(self.attn_kwargs, Mapping) else self.attn_kwargs)
        object.__setattr__(self, "attn_kwargs", tuple(sorted(kwargs.items())))
        try:
            se = SEConfig(self.growth_rate, **kwargs)
        except (ConfigError, TypeError) as err:
            raise ConfigError(f"{name}: attn_kwargs: {err}") from None
        layers, transitions = [], []
        nf = self.num_init_features
        for b, count in enumerate(blocks, start=1):
            for i in range(1, count + 1):
                layers.append(DenseLayerSpec(f"features.denseblock{b}.denselayer{i}", nf + (i - 1) * self.growth_rate,
                                             self.bn_size * self.growth_rate, self.growth_rate, se))
            nf += count * self.growth_rate
            if b != len(blocks):
                out = int(nf * self.compression)
                transitions.append(TransitionSpec(f"features.transition{b}", nf, out))
                nf = out
        object.__setattr__(self, "dense_layers", tuple(layers))
        object.__setattr__(self, "transitions", tuple(transitions))
        object.__setattr__(self, "num_features", nf)

    @property
    def channels_required(self) -> int:
        return self.in_chans

    def stem(self) -> dict[str, Any]:
        """Name -> layer of the stem, in order (the pooling of the ImageNet stem is not a layer with parameters)."""
        if self.small_inputs:
            return {"features.conv0": Conv(self.in_chans, self.num_init_features, 3, 1, 1)}
        return {"features.conv0": Conv(self.in_chans, self.num_init_features, 7, 2, 3),
                "features.norm0": BatchNorm(self.num_init_features, self.bn_eps, self.bn_momentum)}

    def final_norm(self) -> BatchNorm:
        return BatchNorm(self.num_features, self.bn_eps, self.bn_momentum)

    def head(self) -> Linear:
        return Linear(self.num_features, self.num_classes)

    def block_of(self, layer: DenseLayerSpec) -> str:
        return layer.name.rpartition(".")[0]

    def param_table(self) -> tuple[ParamSpec, ...]:
        table: list[ParamSpec] = []
        for name, layer in self.stem().items():
            table += layer.params(name)
        transitions = {t.name.replace("transition", "denseblock"): t for t in self.transitions}
        blocks = list(dict.fromkeys(self.block_of(layer) for layer in self.dense_layers))
        for block in blocks:
            for dl in (d for d in self.dense_layers if self.block_of(d) == block):
                for lname, layer in dl.layers(self.bn_eps, self.bn_momentum).items():
                    table += layer.params(f"{dl.name}.{lname}")
                table += [ParamSpec(f"{dl.name}.se.{p.name}", p.shape, p.role) for p in dl.se.param_table()]
            if block in transitions:
                t = transitions[block]
                for lname, layer in t.layers(self.bn_eps, self.bn_momentum).items():
                    table += layer.params(f"{t.name}.{lname}")
        table += self.final_norm().params("features.norm_final")
        table += self.head().params("classifier")
        return tuple(table)

    def reference_forward(self, x: Node, params: Mapping[str, Node], training: bool = False,
                          taps: dict[str, Node] | None = None) -> Node:
        if training and self.drop_rate > 0:
            raise ConfigError(f"{self.module_name}: the reference cannot reproduce dropout's random masks; use "
                              f"drop_rate=0 or evaluation mode")
        eps, mom = self.bn_eps, self.bn_momentum
        stem = self.stem()
        x = stem["features.conv0"](x, params, "features.conv0")
        if not self.small_inputs:
            x = ops.relu(stem["features.norm0"](x, params, "features.norm0", training))
            x = ops.max_pool2d(x, 3, 2, 1)
        transitions = {t.name.replace("transition", "denseblock"): t for t in self.transitions}
        blocks = list(dict.fromkeys(self.block_of(layer) for layer in self.dense_layers))
        for block in blocks:
            features = [x]
            for dl in (d for d in self.dense_layers if self.block_of(d) == block):
                ls = dl.layers(eps, mom)
                h = ops.concat(features, 1) if len(features) > 1 else features[0]
                h = ls["conv1"](ops.relu(ls["norm1"](h, params, f"{dl.name}.norm1", training)), params,
                                f"{dl.name}.conv1")
                h = ls["conv2"](ops.relu(ls["norm2"](h, params, f"{dl.name}.norm2", training)), params,
                                f"{dl.name}.conv2")
                h = dl.se.reference_forward(h, subtree(params, f"{dl.name}.se"), training)
                features.append(h)
            x = ops.concat(features, 1)
            if taps is not None:
                taps[block] = x
            if block in transitions:
                t = transitions[block]
                ls = t.layers(eps, mom)
                x = ls["conv"](ops.relu(ls["norm"](x, params, f"{t.name}.norm", training)), params, f"{t.name}.conv")
                x = ops.avg_pool2d(x, 2, 2)
        x = self.final_norm()(x, params, "features.norm_final", training)
        if taps is not None:  # before its ReLU, as the submodule outputs it: Grad-CAM's layer (attn_core.cam)
            taps["features.norm_final"] = x
        x = ops.relu(x)
        return self.head()(ops.mean(x, (2, 3), keepdims=False), params, "classifier")
