"""Class activation map rows: each backend's CAM and Grad-CAM maps against the float64 reference (issue 15).

A model (:data:`CAM_MODELS` by default: ResNet-18, SE-ResNet-50, CBAM-ResNet-18, ECA-MobileNetV2, each with the
model cases' 10 classes) runs in eval mode on :data:`CAM_SHAPE`, a non-square input whose last feature map is
3 x 2, so that swapped H and W axes or a wrong layer order show in the map. Each backend computes the activation
and gradient at the layer the classifier pools (:func:`attn_core.cam.cam_layer`) through its runner
(:meth:`conformance.runners.Runner.layer_gradient`), CAM reads the classifier's weight the backend holds
(:meth:`Runner.export_weights`), and the map is :func:`attn_core.cam.raw_map`, the same NumPy the reference uses.
The target classes are the reference's top logits, given to every backend, so that a near tie between two logits
in float32 cannot pick another class. Maps are compared before ReLU and min-max, which amplify the rounding where
a map is near 0, with the model cases' tolerance on the map's scale.

Any other registered model runs when named: SE-DenseNet at its last BatchNorm ``features.norm_final`` and TowerNet
at its last stage ``b5`` (on :data:`CAM_SHAPES`), Grad-CAM only, since their classifiers pool no layer's output
globally (:func:`attn_core.cam.methods_for`).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np

from attn_core import cam
from attn_core.spec import AttentionConfig

from .model_cases import ModelCase, model_config
from .runners import RUNNERS, Runner, get_runner
from .suite import Row, compare

__all__ = ["CAM_MODELS", "CAM_SHAPE", "CAM_SHAPES", "CAM_METHODS", "backend_raw_maps", "run_cam"]

#: the models of the map rows (issue 15)
CAM_MODELS: tuple[str, ...] = ("resnet18", "seresnet50", "cbamresnet18", "eca_mobilenetv2")
#: N, C, H, W of the map rows' input: the last feature map of every model above is 3 x 2
CAM_SHAPE: tuple[int, int, int, int] = (2, 3, 65, 57)
#: the inputs of the models CAM_SHAPE does not fit: TowerNet's H and W run from 255 to 510 (its b5 is then 2 x 2);
#: the CIFAR DenseNets keep the input's size to their two transitions, so a 13 x 9 input ends 3 x 2 there too
CAM_SHAPES: Mapping[str, tuple[int, int, int, int]] = MappingProxyType({
    "towernet": (1, 3, 255, 263), "sedensenet_bc40_k12": (2, 3, 13, 9), "sedensenet_bc100_k12": (2, 3, 13, 9)})
#: the methods of the map rows
CAM_METHODS: tuple[str, ...] = ("cam", "gradcam")


def backend_raw_maps(runner: Runner, module: Any, variables: Any, config: AttentionConfig, x: np.ndarray,
                     methods: Sequence[str], classes: Sequence[int], layer: str | None = None,
                     target: str = "logit") -> dict[str, np.ndarray]:
    """``{method: map (N, H', W') before ReLU and min-max}`` of a model built by ``runner`` (``module`` and its
    ``variables``) on the NCHW ``x``, from one forward and backward at ``layer`` (default: the pooled layer);
    CAM takes the classifier's weight the module holds."""
    unknown = [m for m in methods if m not in cam.METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; expected {', '.join(cam.METHODS)}")
    layer = cam.cam_layer(config) if layer is None else layer
    grad = runner.layer_gradient(module, variables, x, layer,
                                 lambda logits: cam.target_cotangent(logits, classes, target))
    fc = (cam.classifier_weight(config, runner.export_weights(module, variables)) if "cam" in methods else None)
    return {m: cam.raw_map(m, grad, classes, fc) for m in methods}


def _reference(config: AttentionConfig, weights: Mapping[str, np.ndarray], x: np.ndarray,
               methods: Sequence[str]) -> tuple[dict[str, np.ndarray], list[int]]:
    grad, classes = cam.reference_layer_gradient(config, weights, x, cam.cam_layer(config))
    fc = cam.classifier_weight(config, weights) if "cam" in methods else None
    return {m: cam.raw_map(m, grad, classes, fc) for m in methods}, classes


def run_cam(models: Iterable[str] | None = None, backends: Iterable[str] | None = None,
            dtypes: Sequence[str] = ("float32",), methods: Sequence[str] = CAM_METHODS,
            progress: Callable[[Row], None] | None = None) -> list[Row]:
    """One row per model x backend x dtype, comparing each method's map (``map:<method>@<layer>``) with the
    float64 reference (module docstring); an unknown model or backend is a ValueError naming the known ones."""
    bad = [d for d in dtypes if d not in ("float32", "float64")]
    if bad:  # the input is cast in NumPy, which has neither bfloat16 nor the frameworks' half arithmetic rules
        raise ValueError(f"the map rows run in float32 and float64, got {', '.join(bad)}")
    models = list(CAM_MODELS if models is None else models)
    backends = list(RUNNERS if backends is None else backends)
    bad = [b for b in backends if b not in RUNNERS]
    if bad:
        raise ValueError(f"unknown backend(s) {', '.join(bad)}; known: {', '.join(RUNNERS)}")
    rows = []
    for model in models:
        config = model_config(model)
        shape = CAM_SHAPES.get(model, CAM_SHAPE)
        case = ModelCase(model, "n{}-{}x{}-eval".format(shape[0], *shape[2:]), shape, spec=config)
        weights, x, _ = case.data(config)
        defined = [m for m in methods if m in cam.methods_for(config)]  # SE-DenseNet and TowerNet have no CAM
        ref, classes = _reference(config, weights, x, defined)
        for fw in backends:
            for dtype in dtypes:
                row = _row(case, config, fw, dtype, weights, x, defined, ref, classes)
                rows.append(row)
                if progress is not None:
                    progress(row)
    return rows


def _row(case: ModelCase, config: AttentionConfig, fw: str, dtype: str, weights: Mapping[str, np.ndarray],
         x: np.ndarray, methods: Sequence[str], ref: Mapping[str, np.ndarray], classes: Sequence[int]) -> Row:
    runner = get_runner(fw)
    row = Row(case.module, f"{case.case_id}-cam", fw, dtype, runner.mode_label("eager"), "pass")
    # not installed: 'skip'; a dtype the runner's capability table declares it cannot run: 'n/a'
    for status, (ok, why) in (("skip", runner.available()), ("n/a", runner.supports(case.module, dtype))):
        if not ok:
            row.status, row.message = status, why
            return row
    try:
        module, variables = runner.build_model(config, weights, dtype)
        got = backend_raw_maps(runner, module, variables, config, x.astype(dtype), methods, classes)
    except Exception as err:  # noqa: BLE001 - any failure of a backend is reported as that row's error
        row.status = "error"
        row.message = f"{type(err).__name__}: {err}".strip()
        row.message += "\n" + "".join(traceback.format_exception(err)[-3:]).rstrip()
        return row
    layer = cam.cam_layer(config)
    row.comparisons = [compare(f"map:{m}@{layer}", got[m], ref[m], case.tolerance(dtype), scaled=True)
                       for m in methods]
    if not all(c.passed for c in row.comparisons):
        row.status = "fail"
    return row
