"""The base class of the Flax modules: the attn_core config that decides them, and their input checks."""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from attn_core import AttentionConfig
from attn_core.precision import FLOAT_DTYPES

from ._ops import compute_dtype_of


class AttentionModule(nn.Module):
    """Base class: the module's dataclass fields are the arguments of its attn_core config (``_config_cls``).

    The config is validated when the module is constructed (``__post_init__``), so bad hyperparameters raise
    :class:`attn_core.ConfigError` there, as in torch, and not first at ``init``.
    """

    _config_cls = AttentionConfig

    def __post_init__(self) -> None:
        self.config  # noqa: B018 - builds and so validates the config
        super().__post_init__()

    @property
    def config(self) -> AttentionConfig:
        """The attn_core config that decides every hyperparameter of this module (built from its fields)."""
        cls = self._config_cls
        return cls(**{f.name: getattr(self, f.name) for f in dataclasses.fields(cls) if f.init})

    @classmethod
    def from_config(cls, config: AttentionConfig, **kwargs: Any) -> AttentionModule:
        """The module of ``config``; ``kwargs`` are Flax's own (``name``, ``parent``)."""
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.init}, **kwargs)

    def check_input(self, x: Any, train: bool = False) -> None:
        """Raise attn_core's error for an input this module cannot take (``train``: also one that its BatchNorms cannot
        normalise, :meth:`attn_core.AttentionConfig.check_training_input`)."""
        if not (hasattr(x, "shape") and hasattr(x, "dtype")):
            raise TypeError(f"{self.config.module_name}: expected a jax.Array, got {type(x).__name__}")
        leaves = jax.tree_util.tree_leaves(self.variables.get("params", {}))
        # before init has created them, the parameters are Flax's default float32 (what init will create)
        param_dtypes = {jnp.dtype(a.dtype).name for a in leaves if jnp.issubdtype(a.dtype, jnp.floating)} or (
            {"float32"} if self.config.param_table() else set())
        # a symbolic size (jax.export's batch dimension) is not an int: unchecked, as one unknown at trace time
        shape = tuple(s if isinstance(s, int) else None for s in x.shape)
        self.config.check_input(shape, str(x.dtype), bool(jnp.issubdtype(x.dtype, jnp.floating)),
                                layout="NHWC", training=train, param_dtypes=param_dtypes,
                                device_dtypes=device_dtypes(), framework="flax")

    def prepare(self, x: Any, train: bool = False) -> tuple[Any, Any, jax.Array]:
        """The opening of every module's ``__call__``: ``x`` checked (:meth:`check_input`), then the config, the dtype
        to compute in and ``x`` in it (half: float32, the output rounded once at the end; attn_core.precision)."""
        self.check_input(x, train)
        dt = compute_dtype_of(x)
        return self.config, dt, x.astype(dt)

    def expose_gate(self, g: jax.Array, name: str = "gate") -> jax.Array:
        """The gate ``g`` (NHWC where it is 4-D), sown as ``intermediates`` ``name`` of this module: a no-op
        unless ``apply`` is given ``mutable=["intermediates"]``, as torch's and Paddle's gate identities without
        hooks."""
        self.sow("intermediates", name, g)
        return g


def device_dtypes() -> tuple[str, ...]:
    """The dtypes JAX computes in here: every floating one, float64 only with 64-bit mode on (``jax.enable_x64``),
    without which a float64 array cannot even be made."""
    if jax.config.jax_enable_x64:
        return FLOAT_DTYPES
    return tuple(d for d in FLOAT_DTYPES if d != "float64")
