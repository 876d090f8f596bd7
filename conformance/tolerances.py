"""The one table of tolerances, per dtype, with the source each follows (see the porting notes, section 3).

An element passes when ``|got - ref| <= atol + rtol * |ref|`` (numpy.allclose's rule); the reference is the
float64 NumPy computation of attn_core.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

__all__ = ["Tolerance", "TOLERANCES", "tolerance_for"]


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
