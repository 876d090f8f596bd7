"""The model cases: every registered model (``attn_core.models.MODEL_CONFIGS``) in eval and in training mode.

Each model is built from its registered config with 10 classes (ECA-MobileNetV2 with ``dropout=0``: the reference
cannot draw dropout's random masks) and runs on a batch of 2: in eval at ``n2-32x32``; in eval at the odd,
non-square ``n2-33x29`` for one model per kind of layer (ResNet-18, SE-ResNet-50, CBAM-ResNet-18, SE-DenseNet-121,
ECA-MobileNetV2, and ECA-ResNet-50-D, SK-ResNet-18 and ResNeSt-14d, whose average pools (the ceil-mode shortcut,
ResNeSt's stride-2 avd) and SK and split-attention convolutions see odd maps in eval only there: every map of
32 x 32 is even), where a transposed kernel, swapped H / W axes or 'SAME' padding shows; and in training for
:data:`TRAIN_STEPS` steps on distinct batches (step 1's output and gradients, every running statistic after the last
step against ``config.reference_state`` applied as often) at the smallest size that leaves the last BatchNorms
8 values per channel, since float32 training on a 1 x 1 map's 2 values is a cancellation no port determines.
SK-ResNet-18 and ResNeSt-14d train on batches of 6 for the same reason: their attention's BatchNorm (SK's ``attn.bn``,
split attention's ``bn1``) normalises one value per sample, 2 on a batch of 2 (the ``sk`` and ``splat`` module cases
train on 6 too).
TowerNet takes H and W from 255 to 510 only, so its cases are ``n2-255x255`` in both modes.

The dtype's tolerance applies with each quantity's absolute tolerance raised to ``rtol * max |reference|``, since a
deep network's gradient spans orders of magnitude within one parameter. Gradients are compared in float64 only: in
float32 a near-tie in a max pool or a ReLU input within rounding of 0 routes a gradient elsewhere than the exact
reference does. The ResNet-101s' float32 training rows (:data:`TRAIN_FLOAT32_MODELS`) are held to
:data:`TRAIN_FLOAT32`, the measured limit of 33 blocks of batch-statistics BatchNorms in float32. The measurements
behind these choices, and what the cases cost: benchmarks/NOTES.md, "The suite's model cases, measured".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from attn_core import AttentionConfig
from attn_core.models import MODEL_CONFIGS, create_model_config

from .cases import Case, select
from .tolerances import Tolerance, tolerance_for

__all__ = ["ModelCase", "MODEL_CASES", "MODEL_NAMES", "TRAIN_STEPS", "TRAIN_FLOAT32", "TRAIN_FLOAT32_MODELS",
           "model_config", "select_model_cases"]

#: the registered model names, in registry order
MODEL_NAMES: tuple[str, ...] = tuple(MODEL_CONFIGS)
#: training steps of a model's training case
TRAIN_STEPS = 3
_F32 = tolerance_for("float32")
#: the models whose float32 training rows need :data:`TRAIN_FLOAT32` (the 101-layer ResNets; module docstring)
TRAIN_FLOAT32_MODELS: frozenset[str] = frozenset(n for n in MODEL_NAMES if n.endswith("resnet101"))
#: the tolerance of a float32 training row of those models (see the module docstring)
TRAIN_FLOAT32 = Tolerance(10 * _F32.atol, 10 * _F32.rtol, "10x the float32 row: measured limit of a 101-layer "
                          "float32 training forward with batch-statistics BatchNorm on a batch of 2")
#: the config overrides of every model case (few classes keep the head small)
CLASSES = 10
_OVERRIDES: dict[str, dict[str, Any]] = {"eca_mobilenetv2": {"dropout": 0.0}}
SMALL, ODD, TOWER = (2, 3, 32, 32), (2, 3, 33, 29), (2, 3, 255, 255)
#: the models that also run at the odd size (one per kind of layer, see the module docstring)
ODD_MODELS: tuple[str, ...] = ("resnet18", "seresnet50", "cbamresnet18", "sedensenet121", "eca_mobilenetv2",
                               "ecaresnet50d", "skresnet18", "resnest14d")
#: the training input of each model (see the module docstring); the ResNets and MobileNetV2 take TRAIN
TRAIN = (2, 3, 40, 40)
_TRAIN_SHAPES = {"sedensenet121": (2, 3, 64, 64), "sedensenet_bc100_k12": SMALL, "sedensenet_bc40_k12": SMALL,
                 "towernet": TOWER, "skresnet18": (6, 3, 40, 40), "resnest14d": (6, 3, 40, 40),
                 # a BatchNorm over one value per sample and channel (SRM's style, BAM's channel gate): batch 6
                 **{f"{k}resnet{d}": (6, 3, 40, 40) for k in ("srm", "bam") for d in (18, 50)}}


class _Classifier(Protocol):
    """What every registered model's config has: the width of its classifier."""

    num_classes: int


@dataclass(frozen=True)
class ModelCase(Case):
    """A case of a registered model: ``module`` is the model's name, the output is ``(N, num_classes)``. Its
    comparisons are scaled (elements near 0 judged on their quantity's scale), and a training case compares its
    gradients in float64 only (see the module docstring)."""

    scaled = True
    grad_note = "conformance.model_cases: rounding moves a max pool's argmax or a ReLU's kink; float64 compares them"

    def output_shape(self, config: AttentionConfig) -> tuple[int, ...]:
        return (self.shape[0], int(cast(_Classifier, config).num_classes))

    def compares_grads(self, dtype: str) -> bool:
        return dtype == "float64"

    def tolerance(self, dtype: str) -> Tolerance:
        if self.training and dtype == "float32" and self.module in TRAIN_FLOAT32_MODELS:
            return TRAIN_FLOAT32
        return tolerance_for(dtype)


def model_config(name: str) -> AttentionConfig:
    """The config a model case of ``name`` builds: the registered one with :data:`CLASSES` classes."""
    return create_model_config(name, num_classes=CLASSES, **_OVERRIDES.get(name, {}))


def _size(shape: tuple[int, ...]) -> str:
    return f"n{shape[0]}-{shape[2]}x{shape[3]}"


def _cases(name: str) -> list[ModelCase]:
    config = model_config(name)
    evals = [TOWER] if name == "towernet" else [SMALL, ODD] if name in ODD_MODELS else [SMALL]
    out = [ModelCase(name, _size(s), s, note="eval: BatchNorm on running statistics", spec=config) for s in evals]
    train = _TRAIN_SHAPES.get(name, TRAIN)
    out.append(ModelCase(name, f"{_size(train)}-train", train, training=True, spec=config, steps=TRAIN_STEPS,
                         note=f"training: batch statistics; running statistics after {TRAIN_STEPS} steps"))
    return out


MODEL_CASES: tuple[ModelCase, ...] = tuple(c for name in MODEL_NAMES for c in _cases(name))


def select_model_cases(models: Iterable[str] | None = None) -> list[ModelCase]:
    """The cases of the given models (every model when None); an unknown name is an error listing the known."""
    return select(MODEL_CASES, models, MODEL_NAMES, "model")
