"""The canonical checkpoint file for torch modules: ``save_checkpoint`` / ``load_checkpoint``.

Safetensors with canonical names and layout plus the model's name and config (:mod:`attn_core.checkpoint`);
the same file is read and written by the Paddle and Flax backends.
"""

from __future__ import annotations

import os

from torch import nn

from attn_core.checkpoint import check_checkpoint, checkpoint_metadata, load_canonical, save_canonical

from .weights import export_weights, load_weights

__all__ = ["save_checkpoint", "load_checkpoint"]


def save_checkpoint(path: str | os.PathLike, module: nn.Module, model: str | None = None) -> None:
    """Write ``module``'s weights as a canonical checkpoint, atomically; ``model`` (a registered name) is found
    from the module's config when not given."""
    save_canonical(path, export_weights(module), checkpoint_metadata(module.config, "torch", model))


def load_checkpoint(path: str | os.PathLike, module: nn.Module) -> nn.Module:
    """Load a canonical checkpoint into ``module`` strictly (another model's checkpoint, missing, unexpected or
    mis-shaped entries are refused before anything is loaded). Returns the module."""
    weights, metadata = load_canonical(path)
    check_checkpoint(module.config, weights, metadata, str(path))
    return load_weights(module, weights)
