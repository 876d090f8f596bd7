"""How the modules compute for low-precision inputs, decided once for every module and backend.

float16 and bfloat16 inputs are computed in float32 (the pooled statistics, the gate and the final product) and
the output is rounded to the input's dtype once, at the end; parameters stay in their own dtype and are cast on
use, so their gradients are rounded once too. Measured reason (conformance, float16/bfloat16 rows): rounding every
intermediate of a 10-20 op chain to half misses the onnxruntime half tolerances on parameter gradients by up to 6x
even with exactly rounded ops, JAX's backward of a broadcast product accumulates in half (up to 36x), and SimAM's
squared deviations overflow float16 for ordinary activations. float32 and float64 inputs compute in their own dtype.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

__all__ = ["COMPUTE_DTYPES", "compute_dtype"]

#: input dtype name -> the dtype the modules compute in, for the dtypes computed in another one
COMPUTE_DTYPES: Mapping[str, str] = MappingProxyType({"float16": "float32", "bfloat16": "float32"})


def compute_dtype(dtype: str) -> str:
    """The dtype a module computes in for an input of ``dtype`` (a name such as ``'float16'``)."""
    return COMPUTE_DTYPES.get(dtype, dtype)
