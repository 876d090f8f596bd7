"""Rounding to the low-precision dtypes, in NumPy only, so that the float64 reference sees the backend's data.

A float16 or bfloat16 backend never sees the float64 weights, input and cotangent of a case: it sees them rounded
to its dtype. Comparing its result with the reference of the unrounded data would charge the backend with the
input's rounding error (for bfloat16 up to 2^-9 relative per element, before a single operation), so the suite
quantizes the case's data first (:func:`quantize`), computes the float64 reference from the quantized values, and
hands the backend those same values, which are exactly representable in its dtype, so that every conversion path
(direct, through float32, through ml_dtypes) gives the same numbers.

``quantize`` rounds to nearest, ties to even, as IEEE 754 and every framework's cast do; it rounds the float64 value
once (no double rounding through float32) and returns float64. jax/ml_dtypes are not needed: float16 is NumPy's own
dtype (whose float64 -> float16 cast rounds once, from the double's bits), and bfloat16 is done here by bit
manipulation of float32.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attn_core.precision import LOW_PRECISION

__all__ = ["LOW_PRECISION", "quantize", "bfloat16_bits", "is_low_precision"]

_F32_SIGN = np.uint32(0x8000_0000)
_BF16_QUIET_NAN = np.uint32(0x7FC0_0000)


def is_low_precision(dtype: str) -> bool:
    """Whether ``dtype`` (a name) is one of the half-width floating-point dtypes the suite quantizes for."""
    return dtype in LOW_PRECISION


def _float32_round_to_odd(x: np.ndarray) -> np.ndarray:
    """float64 -> float32 rounded *to odd*: truncate towards zero, and set the last bit when anything was dropped.

    Rounding to odd into a format with at least two more bits than the final one, then rounding to nearest even,
    equals one rounding to nearest even of the original (Boldo and Melquiond, "Emulation of FMA and correctly rounded
    sums: proved algorithms using rounding to odd", IEEE Trans. Computers 57(4), 2008). float32 has 24 bits,
    bfloat16 8, so ``x -> float32 (odd) -> bfloat16 (nearest even)`` rounds ``x`` once, where the plain
    ``x -> float32 -> bfloat16`` can round twice (1 + 2^-8 + 2^-30 would give 1 instead of 1 + 2^-7).
    """
    with np.errstate(over="ignore", invalid="ignore"):
        f = x.astype(np.float32)
        finite = np.isfinite(x)
        # Where nearest rounding went away from zero (overflow to inf included), step back one float32 towards 0.
        away = finite & (np.abs(f.astype(np.float64)) > np.abs(x))
        f = np.where(away, np.nextafter(f, np.float32(0)), f)
        inexact = finite & (f.astype(np.float64) != x)
    bits = f.view(np.uint32)
    return np.where(inexact, bits | np.uint32(1), bits)


def bfloat16_bits(array: Any) -> np.ndarray:
    """The 16-bit patterns (as uint16) of ``array`` rounded to bfloat16, nearest, ties to even.

    bfloat16 is float32's upper half: sign, the same 8-bit exponent, 7 fraction bits. Rounding adds ``0x7FFF`` plus
    the lowest kept bit (so an exact half rounds to the even neighbour) to the float32 pattern and drops the low 16
    bits; a carry out of the fraction moves the exponent up, and out of the largest finite value gives infinity, as
    IEEE rounding does. NaN stays NaN (made quiet: adding to a NaN's pattern could carry it into infinity).
    """
    x = np.asarray(array)
    if x.dtype.kind not in "fiub":
        raise TypeError(f"bfloat16_bits: expected a real numeric array, got dtype {x.dtype}")
    if x.dtype == np.float32:
        bits = x.view(np.uint32)
    else:
        bits = _float32_round_to_odd(np.asarray(x, dtype=np.float64))
    wide = bits.astype(np.uint64)
    rounded = ((wide + np.uint64(0x7FFF) + ((wide >> np.uint64(16)) & np.uint64(1))) >> np.uint64(16))
    nan = np.isnan(x)
    quiet = (bits & _F32_SIGN) | _BF16_QUIET_NAN
    out = np.where(nan, quiet >> np.uint32(16), rounded.astype(np.uint32))
    return out.astype(np.uint16)


def _bfloat16_to_float64(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32).astype(np.float64)


def quantize(array: Any, dtype: str) -> np.ndarray:
    """``array`` rounded to ``dtype`` (nearest, ties to even) and returned as float64.

    ``dtype`` is ``'float16'``, ``'bfloat16'``, ``'float32'`` or ``'float64'`` (returned unrounded); values beyond
    the dtype's range become +-inf as in any cast, NaN stays NaN. The result is exactly representable in ``dtype``,
    so casting it there is exact whichever way a framework converts.
    """
    x = np.asarray(array)
    if x.dtype.kind not in "fiub":
        raise TypeError(f"quantize: expected a real numeric array, got dtype {x.dtype}")
    with np.errstate(over="ignore"):
        if dtype == "float64":
            return x.astype(np.float64)
        if dtype in ("float32", "float16"):
            # NumPy casts float64 to either directly from the double's bits: one rounding, to nearest even.
            return x.astype(np.float64).astype(dtype).astype(np.float64)
        if dtype == "bfloat16":
            return _bfloat16_to_float64(bfloat16_bits(x))
    raise ValueError(f"quantize: unknown dtype {dtype!r}; expected one of float16, bfloat16, float32, float64")
