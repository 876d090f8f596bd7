"""What every Paddle module shares: its config, input checks and the activation table."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import paddle
import paddle.nn.functional as F
from paddle import nn

from attn_core import AttentionConfig


def _hard_sigmoid(x: paddle.Tensor) -> paddle.Tensor:
    # Paddle's default slope is 0.1666667, not 1/6: pass the exact value (relu6(x + 3) / 6).
    return F.hardsigmoid(x, slope=1.0 / 6.0, offset=0.5)


ACTIVATIONS: dict[str, Callable[[paddle.Tensor], paddle.Tensor]] = {
    "relu": F.relu,
    "silu": F.silu,
    "sigmoid": F.sigmoid,
    "hard_sigmoid": _hard_sigmoid,
}


class AttentionModule(nn.Layer):
    """Base class: holds the attn_core config that decided every hyperparameter of the module."""

    config: AttentionConfig

    @classmethod
    def from_config(cls, config: AttentionConfig) -> "AttentionModule":
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.init})

    def check_input(self, x: Any) -> None:
        # Under paddle.jit.to_static x is a static Value: its shape holds -1 for unknown sizes (not checked).
        if not isinstance(x, (paddle.Tensor, paddle.pir.Value)):
            raise TypeError(f"{self.config.module_name}: expected a paddle.Tensor, got {type(x).__name__}")
        self.config.check_input(tuple(x.shape), str(x.dtype).removeprefix("paddle."), paddle.is_floating_point(x))

    def extra_repr(self) -> str:
        return ", ".join(f"{f.name}={getattr(self.config, f.name)!r}"
                         for f in dataclasses.fields(self.config) if f.init)
