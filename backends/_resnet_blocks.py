"""The forwards of the ResNet blocks (``attn_core.models.ResNetConfig``'s order), which the torch and Paddle
backends share as they are: each backend's block classes put these before their framework's layer class, which
holds the layers under the spec's names and gives ``relu`` (each backend imports its own framework only; this
file imports none)."""

from __future__ import annotations

from typing import Any

__all__ = ["BlockForward", "BasicForward", "BottleneckForward", "SelectiveKernelBasicForward", "ResNestForward"]


class BlockForward:
    """The block's end: ``se`` (None without attention), plus the shortcut (``downsample``, None for the identity),
    then ReLU. The framework's block class gives ``relu`` (its framework's function) and the layers."""

    def attend(self, out: Any, x: Any) -> Any:
        if self.se is not None:
            out = self.se(out)
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class BasicForward(BlockForward):
    """Two 3x3 convolutions; ``simam`` between ``conv2`` and ``bn2``."""

    def forward(self, x: Any) -> Any:
        out = self.conv2(self.relu(self.bn1(self.conv1(x))))
        if self.simam is not None:
            out = self.simam(out)
        return self.attend(self.bn2(out), x)


class BottleneckForward(BlockForward):
    """1x1, 3x3 (strided), 1x1 convolutions; ``simam`` between ``conv2`` and ``bn2``."""

    def forward(self, x: Any) -> Any:
        out = self.conv2(self.relu(self.bn1(self.conv1(x))))
        if self.simam is not None:
            out = self.simam(out)
        out = self.relu(self.bn2(out))
        return self.attend(self.bn3(self.conv3(out)), x)


class SelectiveKernelBasicForward(BlockForward):
    """timm's ``SelectiveKernelBasic``: the Selective Kernel ``conv1`` (its paths end in BatchNorm and ReLU), then
    ``conv2`` (3x3 convolution and BatchNorm, no ReLU)."""

    def forward(self, x: Any) -> Any:
        return self.attend(self.conv2(self.conv1(x)), x)


class ResNestForward(BlockForward):
    """timm's ``ResNestBottleneck``: 1x1, split-attention ``conv2`` (BatchNorm and ReLU inside), 1x1; the avd pool
    (``avd_first`` / ``avd_last``, None without one) takes the stride."""

    def forward(self, x: Any) -> Any:
        out = self.relu(self.bn1(self.conv1(x)))
        if self.avd_first is not None:
            out = self.avd_first(out)
        out = self.conv2(out)
        if self.avd_last is not None:
            out = self.avd_last(out)
        return self.attend(self.bn3(self.conv3(out)), x)
