"""The base class of the torch modules: the attn_core config that decides them, and their input checks."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from attn_core import AttentionConfig
from attn_core.precision import FLOAT_DTYPES

from .._common import GateIdentities
from ._ops import compute_dtype_of


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def device_dtypes(x: torch.Tensor) -> tuple[str, ...]:
    """The dtypes torch computes the modules in on ``x``'s device: every floating one on CPU and CUDA; MPS has no
    float64."""
    return FLOAT_DTYPES if x.device.type != "mps" else tuple(d for d in FLOAT_DTYPES if d != "float64")


class AttentionModule(GateIdentities, nn.Module):
    """Base class: holds the attn_core config that decided every hyperparameter of the module."""

    _identity = nn.Identity
    _gate_hook_dicts = ("_forward_hooks", "_forward_pre_hooks")  # where torch keeps a module's hooks

    config: AttentionConfig

    @classmethod
    def from_config(cls, config: AttentionConfig) -> AttentionModule:
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.init})

    def _param_tensors(self) -> tuple[torch.Tensor, ...]:
        """The module's floating parameters, listed once: ``.to()``, ``.double()`` and ``load_state_dict`` change
        them in place (the same objects), so their dtypes are read afresh each call at the cost of a tuple."""
        params = self.__dict__.get("_params")
        if params is None:
            params = self.__dict__["_params"] = tuple(p for p in self.parameters() if p.is_floating_point())
        return params

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> AttentionModule:
        self.__dict__.pop("_params", None)  # a conversion that swaps the parameter objects: list them again
        return super()._apply(fn, *args, **kwargs)

    def check_input(self, x: Any, training: bool = False) -> None:
        """Raise attn_core's error for an input this module cannot take (``training``: also one that its BatchNorms
        cannot normalise, :meth:`attn_core.AttentionConfig.check_training_input`)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{self.config.module_name}: expected a torch.Tensor, got {type(x).__name__}")
        # the check depends on the shape and dtype of the input and the parameters only: the last combination that
        # passed is not checked again (the check would cost a tenth of a small module's forward)
        param_dtypes = tuple(p.dtype for p in self._param_tensors())
        # under torch.export a dynamic size is a SymInt: unchecked (None), so that no check specialises it, and the
        # key is not kept, since a SymInt belongs to the one trace that made it
        symbolic = any(isinstance(s, torch.SymInt) for s in x.shape)
        shape = tuple(None if isinstance(s, torch.SymInt) else int(s) for s in x.shape)
        key = (x.shape, x.dtype, param_dtypes, training)
        if not symbolic and self.__dict__.get("_checked_input") == key:
            return
        self.config.check_input(shape, _name(x.dtype), x.is_floating_point(), training=training,
                                param_dtypes={_name(d) for d in param_dtypes}, device_dtypes=device_dtypes(x),
                                framework="torch")
        if not symbolic:
            self.__dict__["_checked_input"] = key

    def prepare(self, x: Any) -> tuple[torch.dtype | None, torch.Tensor]:
        """The opening of every module's ``forward``: ``x`` checked (:meth:`check_input`, in training mode as such),
        then the dtype to compute in (None: ``x``'s own; half: float32, the output rounded once at the end,
        :meth:`finish`; attn_core.precision) and ``x`` in it."""
        self.check_input(x, self.training)
        compute = compute_dtype_of(x)
        return compute, x if compute is None else x.to(compute)

    @staticmethod
    def finish(y: torch.Tensor, x: torch.Tensor, compute: torch.dtype | None) -> torch.Tensor:
        """The output ``y``, computed in ``compute`` (:meth:`prepare`), in the input ``x``'s dtype."""
        return y if compute is None else y.to(x.dtype)

    def extra_repr(self) -> str:
        return ", ".join(f"{f.name}={getattr(self.config, f.name)!r}"
                         for f in dataclasses.fields(self.config) if f.init)
