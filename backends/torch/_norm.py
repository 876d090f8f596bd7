"""BatchNorm2d of the model ports: torch's own, plus the project's one rule for a training batch.

torch's ``nn.BatchNorm2d`` already follows the project's running-statistics convention (the unbiased batch variance
enters the running variance), so this layer changes nothing of its math, names or ``state_dict``. In training it
first applies ``attn_core.check_batch_norm_input``: an input with one value per channel (N*H*W = 1) is an
``InputShapeError`` naming the model and the layer (``ResNet: layer4.0.bn1``), where torch's own error names
neither. :func:`label_batch_norms` gives every such layer of a model its name once the model is built.
"""

from __future__ import annotations

import torch
from torch import nn

from attn_core.spec import check_batch_norm_input

__all__ = ["BatchNorm2d", "label_batch_norms"]


class BatchNorm2d(nn.BatchNorm2d):
    """``torch.nn.BatchNorm2d`` that refuses, in training, an input with one value per channel (the project's
    ``InputShapeError``, naming ``self.where``)."""

    where: str = "BatchNorm2d"

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - torch's own argument name
        if self.training:
            check_batch_norm_input(self.where, tuple(input.shape))
        return super().forward(input)


def label_batch_norms(model: nn.Module, owner: str) -> None:
    """Name every :class:`BatchNorm2d` of ``model`` ``'<owner>: <qualified name>'`` for its errors."""
    for name, layer in model.named_modules():
        if isinstance(layer, BatchNorm2d):
            layer.where = f"{owner}: {name}"
