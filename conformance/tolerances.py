"""The one table of tolerances, per dtype, with the source each follows (see the porting notes, section 3).

An element passes when ``|got - ref| <= atol + rtol * |ref|`` (numpy.allclose's rule); the reference is the
float64 NumPy computation of attn_core. A whole network's outputs (the suite's model rows, a converted checkpoint's
logits) are judged on their scale instead: :func:`on_scale`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["Tolerance", "TOLERANCES", "tolerance_for", "on_scale"]


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float
    source: str


TOLERANCES: Mapping[str, Tolerance] = MappingProxyType({
    "float64": Tolerance(1e-10, 1e-7, "numpy.testing.assert_allclose default rtol 1e-7; atol for values near 0"),
    "float32": Tolerance(1e-5, 1e-4, "onnxruntime op tests (atol 1e-5, rtol 1e-4)"),
    "float16": Tolerance(2.5e-3, 1e-3, "onnxruntime op tests, fp16 (atol 2.5e-3, rtol 1e-3)"),
    "bfloat16": Tolerance(2e-2, 1e-2, "onnxruntime op tests, bf16 (atol 2e-2, rtol 1e-2)"),
})


def tolerance_for(dtype: str) -> Tolerance:
    if dtype not in TOLERANCES:
        raise ValueError(f"no tolerance for dtype {dtype!r}; known: {', '.join(TOLERANCES)}")
    return TOLERANCES[dtype]


def on_scale(tol: Tolerance, scale: float) -> Tolerance:
    """``tol`` for a whole network's output of scale ``max |ref|``: its absolute tolerance raised to
    ``rtol * scale``, so that an element near 0 is judged on the scale of its quantity.

    Why: each of a network's L layers rounds its sums of K products with a relative error of about u * sqrt(K)
    (float32's u = 2**-24) of its activations' scale, not of each element, and these add up along the depth to
    about u * sqrt(K * L) of the outputs' scale, which a logit near 0 carries whole: 4e-5 for a ResNet-101
    (L ~ 100, K <= 3 * 3 * 512), within float32's rtol of 1e-4, while the element-wise atol of 1e-5 fails a
    50-layer network whose logits reach 13. A wrong layer, layout or BatchNorm statistic moves the logits by
    orders of magnitude more than rtol * max |ref|.
    """
    return Tolerance(max(tol.atol, tol.rtol * float(scale)), tol.rtol, tol.source)
