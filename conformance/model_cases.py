"""The model cases: every registered model (``attn_core.models.MODEL_CONFIGS``) in eval and in training mode.

Each model is built from its registered config with 10 classes (ECA-MobileNetV2 with ``dropout=0``: the reference
cannot draw dropout's random masks) and runs on a batch of 2:

- eval, ``n2-32x32``: every model but TowerNet. BatchNorm on the seeded running statistics; the last stage of
  ResNet, DenseNet-121 and MobileNetV2 sees 1 x 1 maps.
- eval, ``n2-33x29``: odd, non-square (a transposed kernel, swapped H / W axes or 'SAME' padding shows), for one
  model per kind of layer: ResNet-18 (basic blocks), SE-ResNet-50 (bottlenecks, SE), CBAM-ResNet-18 (CBAM's 7 x 7
  spatial convolution), SE-DenseNet-121 (the ImageNet stem and its max pooling) and ECA-MobileNetV2 (depthwise
  convolutions, ECA). The other models add depth or an attention whose layout the module cases already vary.
- training, ``n2-40x40-train`` (ResNets, ECA-MobileNetV2), ``n2-64x64-train`` (SE-DenseNet-121), ``n2-32x32-train``
  (the CIFAR SE-DenseNets): BatchNorm on batch statistics. Each is the smallest size that leaves the last
  BatchNorms 2 x 2 maps, 8 values per channel. With the 2 values of a 1 x 1 map, float32 training is not
  determined by the port: the two samples' deep features nearly coincide, their batch variance is a cancellation,
  and torch's own float32 output of ResNet-18 at 32 x 32 is 4x, ECA-MobileNetV2's running variance 1600x the
  float32 tolerance off the float64 reference (measured); at 40 x 40 both are within 0.3 of it.
- TowerNet takes H and W from 255 to 510 only: ``n2-255x255`` (its smallest, odd) in both modes.

A training case runs :data:`TRAIN_STEPS` training steps on distinct batches (the case's input, then
:meth:`Case.batches`) in one module: step 1 is a forward and backward, steps 2 and 3 forwards; the output (and the
gradients) are those of step 1, and the ``state:`` comparisons are every ``bn_mean`` / ``bn_var`` after step 3
against ``config.reference_state`` applied three times, each on the state the previous step left (the project's
one convention in every backend: torch's, the unbiased batch variance enters the running variance).

Tolerances: the dtype's (:mod:`conformance.tolerances`), with the absolute tolerance of each quantity raised to
``rtol * max |reference|`` (``scaled``): a deep network's gradient spans orders of magnitude within one parameter,
and float64 ports agree to ~1e-10 of that scale, not of every tiny element. Two measured limits of float32 shape the
rest (torch, Paddle and Flax alike, each passing in float64):

- Gradients are compared in float64 only. In float32 a max pool whose two largest values lie within rounding of
  each other, or a ReLU input within rounding of 0, sends a gradient elsewhere than the exact reference does: Flax's
  TowerNet gradients were up to 650x the float32 tolerance off (9 of 56 quantities), Flax's SE-DenseNet-121 at
  33 x 29 32x, torch's SE-DenseNet-BC-100 3.6x (one channel), while the other two frameworks passed each case. A float32 row runs the backward (so a backward that fails
  is an error) and says in its note that its gradients were not compared; ``--dtypes float64`` compares them.
- A float32 training row of a ResNet-101 (:data:`TRAIN_FLOAT32_MODELS`) is held to :data:`TRAIN_FLOAT32`, ten
  times the float32 row of the table: their training forward (33 blocks of batch-statistics BatchNorms on a batch
  of 2) is 1.5x to 2.6x the float32 op tolerance off in all three frameworks, at 40 x 40 and at 96 x 96 alike.
  Every other model's training row keeps the float32 tolerance (measured worst, all three backends: ResNet-50
  0.57x, SimAM-ResNet-50 0.52x, ECA-MobileNetV2 0.48x, the rest below 0.1x). Porting errors of BatchNorm
  (momentum, the variance estimator, epsilon) are orders of magnitude larger.

Cost, measured (README, "Models in the suite"): the 55 cases on the 3 backends in float32 took 19 minutes on the
shared 2-core machine, 14.5 of them Flax compiling each model and input size under jax.jit, 49 s torch and Paddle.
Fewer models would not shorten the compilations per model; the odd size is therefore kept to 5 models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from attn_core import AttentionConfig
from attn_core.models import MODEL_CONFIGS, create_model_config

from .cases import Case
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
ODD_MODELS: tuple[str, ...] = ("resnet18", "seresnet50", "cbamresnet18", "sedensenet121", "eca_mobilenetv2")
#: the training input of each model (see the module docstring); the ResNets and MobileNetV2 take TRAIN
TRAIN = (2, 3, 40, 40)
_TRAIN_SHAPES = {"sedensenet121": (2, 3, 64, 64), "sedensenet_bc100_k12": SMALL, "sedensenet_bc40_k12": SMALL,
                 "towernet": TOWER}


@dataclass(frozen=True)
class ModelCase(Case):
    """A case of a registered model: ``module`` is the model's name, the output is ``(N, num_classes)``. Its
    comparisons are scaled (elements near 0 judged on their quantity's scale), and a training case compares its
    gradients in float64 only (see the module docstring)."""

    scaled = True
    grad_note = "conformance.model_cases: rounding moves a max pool's argmax or a ReLU's kink; float64 compares them"

    def output_shape(self, config: AttentionConfig) -> tuple[int, ...]:
        return (self.shape[0], int(getattr(config, "num_classes")))

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
    if models is None:
        return list(MODEL_CASES)
    wanted = list(models)
    unknown = [m for m in wanted if m not in MODEL_NAMES]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODEL_NAMES)}")
    return [c for c in MODEL_CASES if c.module in wanted]
