"""The base class of the Paddle modules: the attn_core config that decides them, and their input checks."""

from __future__ import annotations

import dataclasses
from typing import Any

import paddle
from paddle import nn

from attn_core import AttentionConfig
from attn_core.precision import FLOAT_DTYPES, compute_dtype

from .._common import GateIdentities
from ._ops import compute_dtype_of


def _name(dtype: Any) -> str:
    return str(dtype).removeprefix("paddle.")


def device_dtypes() -> tuple[str, ...]:
    """The dtypes Paddle computes in on the current device: float32 and float64 on CPU, whose build has no float16
    or bfloat16 kernels for convolutions, reductions or activations (only casts), every floating one elsewhere.
    The attention modules compute half inputs in float32 (attn_core.precision), so they take those on CPU too."""
    if paddle.device.get_device().startswith("cpu"):
        return tuple(d for d in FLOAT_DTYPES if compute_dtype(d) == d)
    return FLOAT_DTYPES


class AttentionModule(GateIdentities, nn.Layer):
    """Base class: holds the attn_core config that decided every hyperparameter of the module."""

    _identity = nn.Identity
    _gate_hook_dicts = ("_forward_post_hooks", "_forward_pre_hooks")  # where Paddle keeps a layer's hooks

    config: AttentionConfig

    @classmethod
    def from_config(cls, config: AttentionConfig) -> AttentionModule:
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.init})

    # Run as is under paddle.jit.to_static (SOT cannot trace methods of the frozen config); there x is a static
    # Value whose shape holds -1 for sizes unknown until run time, which attn_core does not check.
    @paddle.jit.marker.unified
    def check_input(self, x: Any, training: bool = False) -> None:
        """Raise attn_core's error for an input this module cannot take (``training``: also one that its BatchNorms
        cannot normalise, :meth:`attn_core.AttentionConfig.check_training_input`; Paddle's own kernel would return
        such a batch unchanged)."""
        if not isinstance(x, (paddle.Tensor, paddle.pir.Value, paddle.static.Variable)):
            raise TypeError(f"{self.config.module_name}: expected a paddle.Tensor, got {type(x).__name__}")
        # the check depends on the shapes and dtypes only: the last combination that passed is not checked again.
        # Layer.to(dtype=...) converts the parameters in place (the same objects), so the list is made once.
        params = self.__dict__.get("_params")
        if params is None:
            params = self.__dict__["_params"] = tuple(p for p in self.parameters() if paddle.is_floating_point(p))
        param_dtypes = tuple(p.dtype for p in params)
        key = (tuple(x.shape), x.dtype, param_dtypes, training)
        if self.__dict__.get("_checked_input") == key:
            return
        self.config.check_input(key[0], _name(x.dtype), paddle.is_floating_point(x), training=training,
                                param_dtypes={_name(d) for d in param_dtypes}, device_dtypes=device_dtypes(),
                                framework="paddle")
        self.__dict__["_checked_input"] = key

    def prepare(self, x: Any) -> tuple[Any, Any]:
        """The opening of every module's ``forward``: ``x`` checked (:meth:`check_input`, in training mode as such),
        then the dtype to compute in (None: ``x``'s own; half: float32, the output rounded once at the end,
        :meth:`finish`; attn_core.precision) and ``x`` in it."""
        self.check_input(x, self.training)
        compute = compute_dtype_of(x)
        return compute, x if compute is None else x.astype(compute)

    @staticmethod
    def finish(y: paddle.Tensor, x: paddle.Tensor, compute: Any) -> paddle.Tensor:
        """The output ``y``, computed in ``compute`` (:meth:`prepare`), in the input ``x``'s dtype."""
        return y if compute is None else y.astype(x.dtype)

    def extra_repr(self) -> str:
        return ", ".join(f"{f.name}={getattr(self.config, f.name)!r}"
                         for f in dataclasses.fields(self.config) if f.init)
