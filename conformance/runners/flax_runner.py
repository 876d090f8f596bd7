"""Runner for backends.flax.

float64 runs enable JAX's 64-bit mode only inside ``jax.enable_x64(True)`` (a scoped, thread-local context), and
32-bit convolutions run at full float32 precision (``jax.default_matmul_precision('highest')``), so that a GPU's
TF32 default does not pass for a porting error.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Mapping

import numpy as np

from attn_core import AttentionConfig

from .base import Runner, RunResult

_NHWC, _NCHW = (0, 2, 3, 1), (0, 3, 1, 2)


@functools.lru_cache(maxsize=128)
def _programs(name: str, config: AttentionConfig, training: bool) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """Jitted ``forward(variables, x)`` and ``forward_backward(variables, x, cotangent)`` of one module."""
    import jax

    from backends.flax import ATTN_LAYERS

    module = ATTN_LAYERS[name].from_config(config)

    def forward(variables: dict[str, Any], x: Any) -> Any:
        if training:
            return module.apply(variables, x, train=True, mutable=["batch_stats"])[0]
        return module.apply(variables, x, train=False)

    def forward_backward(variables: dict[str, Any], x: Any, cotangent: Any) -> tuple[Any, Any, Any]:
        rest = {k: v for k, v in variables.items() if k != "params"}
        y, vjp = jax.vjp(lambda p, xx: forward({**rest, "params": p}, xx), variables.get("params", {}), x)
        dparams, dx = vjp(cotangent)
        return y, dx, dparams

    return jax.jit(forward), jax.jit(forward_backward)


class FlaxRunner(Runner):
    framework = "flax"
    requires = ("jax", "flax")

    def run(self, name: str, config: AttentionConfig, weights: Mapping[str, np.ndarray], x: np.ndarray,
            cotangent: np.ndarray | None, dtype: str = "float32", training: bool = False) -> RunResult:
        import jax

        x64 = jax.enable_x64(True) if dtype == "float64" else contextlib.nullcontext()
        with x64, jax.default_matmul_precision("highest"):
            return self._run(name, config, weights, x, cotangent, dtype, training)

    def _run(self, name: str, config: AttentionConfig, weights: Mapping[str, np.ndarray], x: np.ndarray,
             cotangent: np.ndarray | None, dtype: str, training: bool) -> RunResult:
        import jax.numpy as jnp

        from attn_core import from_native, native_location
        from backends.flax import ATTN_LAYERS, load_weights

        jdtype = jnp.dtype(dtype)
        module = ATTN_LAYERS[name].from_config(config)
        variables = load_weights(module, {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()},
                                 dtype=jdtype)
        xj = jnp.asarray(np.transpose(np.asarray(x, dtype=np.float64), _NHWC), dtype=jdtype)
        forward, forward_backward = _programs(name, config, training)
        if cotangent is None:
            return RunResult(y=_nchw(forward(variables, xj)))
        ct = jnp.asarray(np.transpose(np.asarray(cotangent, dtype=np.float64), _NHWC), dtype=jdtype)
        y, dx, dparams = forward_backward(variables, xj, ct)
        result = RunResult(y=_nchw(y), dx=_nchw(dx))
        for spec in config.param_table():
            if spec.trainable:
                _, path = native_location("flax", spec)
                g: Any = dparams
                for key in path:
                    g = g[key]
                result.dparams[spec.name] = from_native("flax", spec, np.asarray(g, dtype=np.float64))
        return result


def _nchw(a: Any) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(np.asarray(a, dtype=np.float64), _NCHW))


RUNNER = FlaxRunner()
