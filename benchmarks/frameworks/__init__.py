"""One benchmark driver per backend (``<backend>_bench.py``): builds the timed candidates (baseline, the project's
modules, the peers) of a timing group in one mode and one pass, whole models, and SE-DenseNet's memory step. Each is
imported only inside that backend's worker process; the backends are those of ``attn_core.frameworks``."""

from __future__ import annotations

import importlib
from typing import Any

from attn_core.frameworks import framework_info


def load_driver(backend: str) -> Any:
    """The driver object of ``backend`` (imports its framework); a ValueError naming the known backends otherwise."""
    return importlib.import_module(f"{__name__}.{framework_info(backend).name}_bench").Driver()
