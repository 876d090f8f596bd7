"""One benchmark driver per backend: builds the timed candidates (baseline, the project's modules, the peers) of
a timing group in one mode and one pass. Each is imported only inside that backend's worker process."""

from __future__ import annotations

import importlib
from typing import Any

DRIVERS = {"torch": "torch_bench", "paddle": "paddle_bench", "flax": "flax_bench"}


def load_driver(backend: str) -> Any:
    """The driver object of ``backend`` (imports its framework)."""
    return importlib.import_module(f"{__name__}.{DRIVERS[backend]}").Driver()
