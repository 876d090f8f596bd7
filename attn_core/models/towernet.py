"""TowerNet: the Inception-style network with SimAM of seed article 003 (a PaddlePaddle AI Studio tutorial).

Inception blocks: Christian Szegedy et al. "Going Deeper with Convolutions", CVPR 2015, arXiv:1409.4842;
SimAM: Yang et al., ICML 2021. Layer sizes, order and names are the article's ``TowerNet(in_channel, num_classes)``
(``b1`` .. ``b5`` Sequentials, ``b6`` Linear); its convolutions carry biases (Paddle's default) and its
BatchNorms use epsilon 1e-3.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .. import ops
from ..autodiff import Node
from ..precision import FLOAT_DTYPES
from ..simam import SimAMConfig
from ..spec import AttentionConfig, ConfigError, InputShapeError, ParamSpec, check_positive_int, is_real
from .layers import BatchNorm, Conv, Linear

__all__ = ["TowerNetConfig", "InceptionSpec"]


@dataclass(frozen=True)
class InceptionSpec:
    """Four routes concatenated in order: 1x1; 1x1 -> 3x3; 1x1 -> 5x5; 3x3/1 max pool -> 1x1; each conv + ReLU."""

    in_channels: int
    c1: int
    c2: tuple[int, int]
    c3: tuple[int, int]
    c4: int

    @property
    def out_channels(self) -> int:
        return self.c1 + self.c2[1] + self.c3[1] + self.c4

    def layers(self) -> dict[str, Conv]:
        return {"route1x1_1": Conv(self.in_channels, self.c1, 1, bias=True),
                "route1x1_2": Conv(self.in_channels, self.c2[0], 1, bias=True),
                "route3x3_2": Conv(self.c2[0], self.c2[1], 3, 1, 1, bias=True),
                "route1x1_3": Conv(self.in_channels, self.c3[0], 1, bias=True),
                "route5x5_3": Conv(self.c3[0], self.c3[1], 5, 1, 2, bias=True),
                "route1x1_4": Conv(self.in_channels, self.c4, 1, bias=True)}


# The article's stages: (name, conv (in, out, kernel, stride, padding) or None, then the rest in order).
# 'pool' is MaxPool2D(2, 2), 'simam' SimAM(256), 'inception' Inception(256, 64, (64, 128), (16, 32), 32).
_INCEPTION = InceptionSpec(256, 64, (64, 128), (16, 32), 32)


@dataclass(frozen=True)
class TowerNetConfig(AttentionConfig):
    """TowerNet of seed article 003: four conv stages, then Inception blocks, with SimAM after stages 3 and 4 and
    between the Inception blocks.

    ``b1``: BasicConv2d(in, 64, 3, stride 2, pad 1) [conv with bias, BatchNorm eps 1e-3, ReLU], MaxPool 2;
    ``b2``: BasicConv2d(64, 128, 3, pad 1), MaxPool 2; ``b3``: BasicConv2d(128, 256), MaxPool 2, SimAM;
    ``b4``: BasicConv2d(256, 256), MaxPool 2, SimAM; ``b5``: Inception, MaxPool 2, SimAM, Inception, MaxPool 2, SimAM,
    Inception; then AvgPool 2, flatten and ``b6`` Linear(256, num_classes).

    The flatten feeds Linear(256), so the map must be 1x1 after the last pooling: H and W from 255 to 510 (the
    article uses 256). Other sizes are refused on input.

    Args:
        in_chans: input channels (the article's ``in_channel``).
        num_classes: outputs of ``b6``.
        e_lambda: of every SimAM (1e-4).
        bn_eps: of every BatchNorm (the article's 1e-3). bn_momentum: torch convention (0.1 = Paddle's 0.9 default).

    Shapes: input (N, in_chans, H, W) in torch and Paddle, (N, H, W, in_chans) in Flax; output (N, num_classes).
    Parameters: the article's Paddle names with torch BatchNorm names: ``b1.0.0.weight``, ``b1.0.1.running_mean``,
    ``b5.0.route3x3_2.bias``, ``b6.weight``, ...
    """

    module_name: ClassVar[str] = "TowerNet"

    in_chans: int = 3
    num_classes: int = 16
    e_lambda: float = 1e-4
    bn_eps: float = 1e-3
    bn_momentum: float = 0.1
    simam: SimAMConfig = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_positive_int(self.module_name, "in_chans", self.in_chans)
        check_positive_int(self.module_name, "num_classes", self.num_classes)
        if not (is_real(self.bn_eps) and self.bn_eps > 0):
            raise ConfigError(f"{self.module_name}: bn_eps must be positive, got {self.bn_eps!r}")
        object.__setattr__(self, "simam", SimAMConfig(256, self.e_lambda))

    @property
    def channels_required(self) -> int:
        return self.in_chans

    def stages(self) -> dict[str, list[tuple[str, Any]]]:
        """Stage -> its items in order: (relative name, spec) with spec a Conv / BatchNorm pair name,
        'relu', 'pool', 'simam', or an InceptionSpec."""
        def basic(cin: int, cout: int, stride: int) -> list[tuple[str, Any]]:
            return [("0.0", Conv(cin, cout, 3, stride, 1, bias=True)),
                    ("0.1", BatchNorm(cout, self.bn_eps, self.bn_momentum)), ("0.2", "relu")]
        return {
            "b1": basic(self.in_chans, 64, 2) + [("1", "pool")],
            "b2": basic(64, 128, 1) + [("1", "pool")],
            "b3": basic(128, 256, 1) + [("1", "pool"), ("2", "simam")],
            "b4": basic(256, 256, 1) + [("1", "pool"), ("2", "simam")],
            "b5": [("0", _INCEPTION), ("1", "pool"), ("2", "simam"), ("3", _INCEPTION), ("4", "pool"),
                   ("5", "simam"), ("6", _INCEPTION)],
        }

    def head(self) -> Linear:
        return Linear(256, self.num_classes)

    def check_input(self, shape: Sequence[int | None], dtype: str, is_floating: bool, layout: str = "NCHW",
                    training: bool = False, param_dtypes: Collection[str] = (),
                    device_dtypes: Sequence[str] = FLOAT_DTYPES, framework: str | None = None) -> None:
        super().check_input(shape, dtype, is_floating, layout, training, param_dtypes, device_dtypes, framework)
        hw = (shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2])
        for s in hw:
            # the stride-2 stem gives (s - 1) // 2 + 1, which seven halvings must bring to 1: 128..255, so s in 255..510
            if s is not None and int(s) >= 0 and not 255 <= int(s) <= 510:
                raise InputShapeError(
                    f"{self.module_name}: expected H and W from 255 to 510 (b6 is Linear(256) after the last pooling, "
                    f"which needs a 1x1 map), got input shape {tuple(shape)}")

    def param_table(self) -> tuple[ParamSpec, ...]:
        table: list[ParamSpec] = []
        for stage, items in self.stages().items():
            for rel, spec in items:
                if isinstance(spec, (Conv, BatchNorm)):
                    table += spec.params(f"{stage}.{rel}")
                elif isinstance(spec, InceptionSpec):
                    for n, conv in spec.layers().items():
                        table += conv.params(f"{stage}.{rel}.{n}")
        table += self.head().params("b6")
        return tuple(table)

    def reference_forward(self, x: Node, params: Mapping[str, Node], training: bool = False,
                          taps: dict[str, Node] | None = None) -> Node:
        for stage, items in self.stages().items():
            for rel, spec in items:
                name = f"{stage}.{rel}"
                if isinstance(spec, Conv):
                    x = spec(x, params, name)
                elif isinstance(spec, BatchNorm):
                    x = spec(x, params, name, training)
                elif spec == "relu":
                    x = ops.relu(x)
                elif spec == "pool":
                    x = ops.max_pool2d(x, 2, 2)
                elif spec == "simam":
                    x = self.simam.reference_forward(x, {}, training)
                else:
                    x = _inception(spec, x, params, name)
            if taps is not None:
                taps[stage] = x
        x = ops.avg_pool2d(x, 2, 2)
        n = x.shape[0]
        return self.head()(ops.reshape(x, (n, -1)), params, "b6")


def _inception(spec: InceptionSpec, x: Node, params: Mapping[str, Node], name: str) -> Node:
    c = spec.layers()
    r1 = ops.relu(c["route1x1_1"](x, params, f"{name}.route1x1_1"))
    r2 = ops.relu(c["route3x3_2"](ops.relu(c["route1x1_2"](x, params, f"{name}.route1x1_2")), params,
                                  f"{name}.route3x3_2"))
    r3 = ops.relu(c["route5x5_3"](ops.relu(c["route1x1_3"](x, params, f"{name}.route1x1_3")), params,
                                  f"{name}.route5x5_3"))
    r4 = ops.relu(c["route1x1_4"](ops.max_pool2d(x, 3, 1, 1), params, f"{name}.route1x1_4"))
    return ops.concat([r1, r2, r3, r4], 1)
