"""timm for the parity tests: the benchmarks' import (``benchmarks/peers/_timm.py``, which tolerates a torchvision
whose compiled ops do not match the installed torch), or a skip when timm is not installed (test code only)."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.peers._timm import INSTALL_HINT, timm_installed
from benchmarks.peers._timm import import_timm as _import_timm


def import_timm() -> Any:
    """``timm``, or a pytest skip when it is not installed; any other import failure fails the test."""
    if not timm_installed():
        pytest.skip(f"timm is not installed ({INSTALL_HINT})")
    return _import_timm()
