"""The canonical checkpoint file for Flax modules: ``save_checkpoint`` / ``load_checkpoint``.

Safetensors with canonical names and layout plus the model's name and config (:mod:`attn_core.checkpoint`);
the same file is read and written by the torch and Paddle backends. Flax modules hold no state, so saving takes
the variables and loading returns them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from attn_core.checkpoint import check_checkpoint, checkpoint_metadata, load_canonical, save_canonical

from .weights import export_weights, load_weights

__all__ = ["save_checkpoint", "load_checkpoint"]


def save_checkpoint(path: str | os.PathLike, module: nn.Module, variables: Mapping[str, Any],
                    model: str | None = None) -> None:
    """Write ``variables`` of ``module`` as a canonical checkpoint, atomically; ``model`` (a registered name) is
    found from the module's config when not given."""
    save_canonical(path, export_weights(module, variables), checkpoint_metadata(module.config, "flax", model))


def load_checkpoint(path: str | os.PathLike, module: nn.Module, dtype: Any = jnp.float32) -> dict[str, dict[str, Any]]:
    """The variables of ``module`` from a canonical checkpoint, checked strictly (another model's checkpoint,
    missing, unexpected or mis-shaped entries are refused). Arrays are cast to ``dtype`` (``None`` keeps theirs)."""
    weights, metadata = load_canonical(path)
    check_checkpoint(module.config, weights, metadata, str(path))
    return load_weights(module, weights, dtype)
