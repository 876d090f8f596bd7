"""Canonical weights of a trained network's scale, for the conversion tests (test code only).

Freshly initialised models have tiny logits, on which any tolerance passes; a trained network's BatchNorm scales
and statistics sit around 1 and its logits reach 10 to 15. :func:`realistic_weights` draws such weights in NumPy
from a seeded generator: convolution weights He-scaled on the fan-out as torchvision and timm initialise ResNets
(normal, std sqrt(2 / (out_channels * kernel size)); on the fan-in, a ResNet-50's residual stream grows to ~100x its
input and its SE gates saturate, which no trained network does), BatchNorm weights and
running variances uniform in [0.5, 1.5], BatchNorm biases, running means and other biases normal with std 0.1,
linear weights normal with std sqrt(1 / fan_in); the classifier (the last linear layer) is then scaled so that the
float64 reference's largest |logit| on a given input is ``max_logit`` (logits are linear in the classifier).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["realistic_weights", "classifier_names", "MAX_LOGIT"]

#: the largest |logit| of the realistic checkpoints, as a trained ImageNet network's (the issue's 13.5)
MAX_LOGIT = 13.0


def classifier_names(config: Any) -> tuple[str, str]:
    """(weight, bias) canonical names of the model's last linear layer."""
    linear = [p.name for p in config.param_table() if p.role == "linear_weight"]
    weight = linear[-1]
    return weight, weight.rpartition(".")[0] + ".bias"


def realistic_weights(config: Any, x: np.ndarray, seed: int = 0, max_logit: float = MAX_LOGIT
                      ) -> dict[str, np.ndarray]:
    """Float32 canonical weights of ``config`` at a trained network's scale (module docstring); the float64
    reference's largest |logit| on the NCHW input ``x`` is ``max_logit``."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for p in config.param_table():
        if p.role == "conv_weight":
            v = rng.standard_normal(p.shape) * np.sqrt(2.0 / (p.shape[0] * int(np.prod(p.shape[2:]))))
        elif p.role == "linear_weight":
            v = rng.standard_normal(p.shape) * np.sqrt(1.0 / p.shape[1])
        elif p.role in ("bn_weight", "bn_var"):
            v = rng.uniform(0.5, 1.5, p.shape)
        else:  # bn_bias, bn_mean, conv_bias, linear_bias
            v = 0.1 * rng.standard_normal(p.shape)
        out[p.name] = np.asarray(v, dtype=np.float32)
    w, b = classifier_names(config)
    scale = max_logit / float(np.abs(config.reference(out, np.asarray(x, np.float64))).max())
    out[w] = (out[w] * scale).astype(np.float32)
    out[b] = (out[b] * scale).astype(np.float32)
    return out

