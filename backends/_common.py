"""Arithmetic that the three backends' modules share as it is, on any framework's arrays (each backend imports its
own framework only; this file imports none)."""

from __future__ import annotations

from typing import Any


def gated(x: Any, *gates: Any, skip: bool) -> Any:
    """``x`` times each gate in turn (timm's order of products), plus ``x`` itself with the skip connection: the
    output of the coordinate-attention family."""
    out = x
    for gate in gates:
        out = out * gate
    return out + x if skip else out
