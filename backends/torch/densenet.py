"""SE-DenseNet in PyTorch, built only from :class:`attn_core.models.SEDenseNetConfig`.

Every width, kernel, BatchNorm setting and SE config comes from the config (``stem()``, ``dense_layers`` and each
``DenseLayerSpec.layers()``, ``transitions`` and each ``TransitionSpec.layers()``, ``final_norm()``, ``head()``);
this file only turns those specs into torch layers (with ``_layers.build_layer``) and runs them in the
order of ``SEDenseNetConfig.reference_forward``. Module names are seed article 000's, so the ``state_dict`` keys
are the canonical parameter names (plus torch's ``num_batches_tracked``).

``efficient=True`` (Pleiss et al., arXiv:1707.06990) wraps each dense layer's concat -> norm1 -> ReLU -> conv1
bottleneck in ``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)`` whenever an input requires a
gradient (and autograd records), as the article does: the concatenation and the bottleneck activations are not kept
for the backward pass but recomputed there. Unlike the article (and torchvision's old efficient DenseNet), the
recomputation leaves ``norm1``'s running statistics alone, so that a training step updates them once, exactly as
the plain mode does: outputs, gradients and running statistics are the same in both modes
(``tests/models/test_densenet.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from torch import nn

from attn_core.models import DenseLayerSpec, SEDenseNetConfig, TransitionSpec

from ._base import AttentionModule
from ._layers import attach, build_layer
from ._norm import label_batch_norms
from .se import SEModule

__all__ = ["SEDenseNet", "DenseLayer", "DenseBlock", "Transition"]

# the ImageNet stem's max pooling, as the reference's ops.max_pool2d(x, 3, 2, 1); the transitions' average pooling,
# as ops.avg_pool2d(x, 2, 2)
_POOL_WINDOW, _POOL_STRIDE, _POOL_PAD = 3, 2, 1
_TRANSITION_POOL = 2


@contextlib.contextmanager
def _running_stats_frozen(bn: nn.BatchNorm2d) -> Iterator[None]:
    """Run ``bn`` in training mode without touching its running statistics: momentum 0 makes the kernel's update
    ``(1 - 0) * running + 0 * batch`` (the running value, exactly), and ``num_batches_tracked`` is put back. The same
    ops run as in the first forward, so checkpoint's recomputation saves the same tensors."""
    momentum = bn.momentum
    tracked = None if bn.num_batches_tracked is None else bn.num_batches_tracked.clone()
    bn.momentum = 0.0
    try:
        yield
    finally:
        bn.momentum = momentum
        if tracked is not None:
            with torch.no_grad():
                bn.num_batches_tracked.copy_(tracked)


class _Bottleneck:
    """The function ``checkpoint`` runs for one forward of a dense layer: the bottleneck on the first call, the same
    bottleneck with ``norm1``'s running statistics frozen on the recomputation(s) in the backward pass."""

    def __init__(self, layer: DenseLayer) -> None:
        self.layer = layer
        self.calls = 0

    def __call__(self, *features: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 1:
            return self.layer.bottleneck(*features)
        with _running_stats_frozen(self.layer.norm1):
            return self.layer.bottleneck(*features)


class DenseLayer(nn.Module):
    """One :class:`DenseLayerSpec`: BN-ReLU-Conv1x1 (the bottleneck), BN-ReLU-Conv3x3, SE, dropout in training."""

    def __init__(self, spec: DenseLayerSpec, drop_rate: float = 0.0, efficient: bool = False, bn_eps: float = 1e-5,
                 bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.spec = spec
        for name, layer in spec.layers(bn_eps, bn_momentum).items():  # norm1, conv1, norm2, conv2
            attach(self, name, build_layer(layer))
        self.se = SEModule.from_config(spec.se)
        self.drop_rate = drop_rate
        self.efficient = efficient

    def bottleneck(self, *features: torch.Tensor) -> torch.Tensor:
        """concat -> norm1 -> ReLU -> conv1 (what the efficient mode recomputes in the backward pass)."""
        x = torch.cat(features, 1) if len(features) > 1 else features[0]
        return self.conv1(F.relu(self.norm1(x)))

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        if self.efficient and torch.is_grad_enabled() and any(f.requires_grad for f in features):
            h = cp.checkpoint(_Bottleneck(self), *features, use_reentrant=False)
        else:
            h = self.bottleneck(*features)
        h = self.se(self.conv2(F.relu(self.norm2(h))))
        if self.drop_rate > 0:
            h = F.dropout(h, p=self.drop_rate, training=self.training)
        return h


class DenseBlock(nn.Module):
    """Dense layers, each fed the concatenation of the block input and every earlier layer's output."""

    def __init__(self, specs: Sequence[DenseLayerSpec], drop_rate: float = 0.0, efficient: bool = False,
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1) -> None:
        super().__init__()
        for spec in specs:  # 'features.denseblock1.denselayer3' -> child 'denselayer3'
            self.add_module(spec.name.rpartition(".")[2], DenseLayer(spec, drop_rate, efficient, bn_eps, bn_momentum))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.children():
            features.append(layer(*features))
        return torch.cat(features, 1)


class Transition(nn.Module):
    """One :class:`TransitionSpec`: BN-ReLU-Conv1x1, then 2x2 average pooling."""

    def __init__(self, spec: TransitionSpec, bn_eps: float = 1e-5, bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.spec = spec
        for name, layer in spec.layers(bn_eps, bn_momentum).items():  # norm, conv
            attach(self, name, build_layer(layer))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.norm(x))), _TRANSITION_POOL, _TRANSITION_POOL)


class SEDenseNet(AttentionModule):
    __doc__ = SEDenseNetConfig.__doc__

    def __init__(self, growth_rate: int, block_config: Sequence[int], num_init_features: int = 24,
                 compression: float = 0.5, bn_size: int = 4, drop_rate: float = 0.0, num_classes: int = 10,
                 small_inputs: bool = True, efficient: bool = False, in_chans: int = 3,
                 attn_kwargs: Any = (("bias", False),), bn_eps: float = 1e-5, bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.config = cfg = SEDenseNetConfig(growth_rate, block_config, num_init_features, compression, bn_size,
                                             drop_rate, num_classes, small_inputs, efficient, in_chans, attn_kwargs,
                                             bn_eps, bn_momentum)
        for name, layer in cfg.stem().items():  # features.conv0 (+ features.norm0)
            attach(self, name, build_layer(layer))
        # the reference's pairing: block 'features.denseblock{b}' is followed by 'features.transition{b}', if any
        transitions = {t.name.replace("transition", "denseblock"): t for t in cfg.transitions}
        blocks = list(dict.fromkeys(cfg.block_of(layer) for layer in cfg.dense_layers))
        stages: list[str] = []
        for block in blocks:
            specs = [d for d in cfg.dense_layers if cfg.block_of(d) == block]
            attach(self, block, DenseBlock(specs, cfg.drop_rate, cfg.efficient, cfg.bn_eps, cfg.bn_momentum))
            stages.append(block)
            if block in transitions:
                t = transitions[block]
                attach(self, t.name, Transition(t, cfg.bn_eps, cfg.bn_momentum))
                stages.append(t.name)
        attach(self, "features.norm_final", build_layer(cfg.final_norm()))
        self.classifier = build_layer(cfg.head())
        label_batch_norms(self, type(self).__name__)
        self.stage_names = tuple(stages)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The features after ``norm_final`` and its ReLU, (N, num_features, H', W')."""
        self.check_input(x)
        features = self.features
        x = features.conv0(x)
        if not self.config.small_inputs:
            x = F.max_pool2d(F.relu(features.norm0(x)), _POOL_WINDOW, _POOL_STRIDE, _POOL_PAD)
        for stage in self.stage_names:
            x = self.get_submodule(stage)(x)
        return F.relu(features.norm_final(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x).mean((2, 3)))
