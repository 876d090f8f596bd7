"""Runner for backends.flax and for any Flax linen module (NHWC input, or NCHW with ``wrap(layout='NCHW')``).

'compiled' runs the forward and the VJP under ``jax.jit``; 'eager' runs the very same functions inside
``jax.disable_jit()``, primitive by primitive. A compiled run while jit is disabled globally (``JAX_DISABLE_JIT``)
is an error, not an eager pass.

float64 runs enable JAX's 64-bit mode only inside ``jax.enable_x64(True)`` (a scoped, thread-local context), and
32-bit convolutions run at full float32 precision (``jax.default_matmul_precision('highest')``), so that a GPU's
TF32 default does not pass for a porting error.

A module is called as ``module.apply(variables, x, train=training)`` when its ``__call__`` takes ``train``, else
as ``module.apply(variables, x)``; in training every collection other than ``params`` is mutable (BatchNorm's
``batch_stats``), and the updated collections are what the run reports as the module's state. Gradients are
taken with respect to ``params``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from attn_core import AttentionConfig
from attn_core.cam import GATE_NAMES, LayerGradient
from attn_core.checkpoint import CheckpointError
from attn_core.layout import NHWC_TO_NCHW
from attn_core.native_state import flatten_variables as _flatten

from .base import Handle, NativeRun, NativeTrainStep, Runner, _layout

if TYPE_CHECKING:
    from attn_core.training import OptimizerConfig, ScheduleConfig


@functools.lru_cache(maxsize=128)
def _programs(module: Any, training: bool, train_arg: bool, mutable: tuple[str, ...]
              ) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """Jitted ``forward(variables, x) -> (y, updated collections)`` and ``forward_backward(variables, x,
    cotangent) -> (y, dx, dparams, updated collections)`` of one module (no updates outside training)."""
    import jax

    kwargs = {"train": training} if train_arg else {}

    def forward(variables: dict[str, Any], x: Any) -> tuple[Any, Any]:
        if training and mutable:
            y, updates = module.apply(variables, x, mutable=list(mutable), **kwargs)
            return y, dict(updates)
        return module.apply(variables, x, **kwargs), {}

    def forward_backward(variables: dict[str, Any], x: Any, cotangent: Any) -> tuple[Any, Any, Any, Any]:
        rest = {k: v for k, v in variables.items() if k != "params"}
        y, vjp, updates = jax.vjp(lambda p, xx: forward({**rest, "params": p}, xx), variables.get("params", {}), x,
                                  has_aux=True)
        dparams, dx = vjp(cotangent)
        return y, dx, dparams, updates

    return jax.jit(forward), jax.jit(forward_backward)


def _cached_programs(module: Any, training: bool, train_arg: bool, mutable: tuple[str, ...]
                     ) -> tuple[Callable[..., Any], Callable[..., Any]]:
    try:
        hash(module)
    except TypeError:  # a module with unhashable fields: build the programs for this run only
        return _programs.__wrapped__(module, training, train_arg, mutable)
    return _programs(module, training, train_arg, mutable)


def _unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in flat.items():
        *parents, leaf = name.split("/")
        node = out
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return out


class FlaxRunner(Runner):
    framework = "flax"
    dtypes = ("float16", "bfloat16", "float32", "float64")  # every module runs in each on CPU (jax 0.10)
    #: the key of the 'dropout' rng of :meth:`train_forward` (:meth:`seed`)
    dropout_seed: int = 0

    def release(self) -> None:
        import jax

        _programs.cache_clear()
        jax.clear_caches()
        super().release()

    def _project_module(self, name: str, config: AttentionConfig) -> tuple[Any, Any]:
        module, _ = super()._project_module(name, config)
        # the variables template: every canonical parameter at its default place (zeros; execute loads values)
        return self.load(module, {s.name: np.zeros(s.shape) for s in config.param_table()})

    def load(self, module: Any, weights: Mapping[str, np.ndarray], dtype: str | None = None) -> tuple[Any, Any]:
        if dtype is None:
            return module, self.backend().load_weights(module, weights)
        with _x64(dtype):  # float64 variables exist only with JAX's 64-bit mode on
            return module, self.backend().load_weights(module, weights, dtype=dtype)

    def export_weights(self, module: Any, variables: Any) -> dict[str, np.ndarray]:
        weights: dict[str, np.ndarray] = self.backend().export_weights(module, variables)
        return weights

    def save_checkpoint(self, path: str | os.PathLike[str], module: Any, variables: Any) -> None:
        self.backend().save_checkpoint(path, module, variables)

    def load_checkpoint(self, path: str | os.PathLike[str], module: Any) -> tuple[Any, Any]:
        return module, self.backend().load_checkpoint(path, module)

    def seed(self, seed: int) -> None:
        self.dropout_seed = seed

    def init_variables(self, module: Any, shape: tuple[int, ...], layout: str) -> Any:
        import jax
        import jax.numpy as jnp

        n, c, h, w = shape
        return module.init(jax.random.key(0), jnp.zeros((n, h, w, c) if layout == "NHWC" else shape, jnp.float32))

    def call(self, module: Any, x: Any, variables: Any = None) -> Any:
        import jax

        if variables is None:
            variables = module.init(jax.random.key(0), x)
        return module.apply(variables, x)

    def tensor(self, array: np.ndarray, dtype: str | None = None) -> Any:
        import jax.numpy as jnp

        return jnp.asarray(array, dtype=dtype or str(array.dtype))

    def to_numpy(self, value: Any, dtype: str | None = None) -> np.ndarray:
        a = np.asarray(value)
        return a if dtype is None else a.astype(dtype)

    def dtype_name(self, dtype: Any) -> str:
        name: str = np.dtype(dtype).name
        return name

    def dtype_scope(self, dtype: str) -> contextlib.AbstractContextManager[Any]:
        return _x64(dtype)

    def constructor_arguments(self, cls: type) -> list[tuple[str, Any]]:
        # a linen module is a dataclass whose fields are its arguments, but for linen's own 'parent' and 'name'
        return [(f.name, inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default)
                for f in dataclasses.fields(cls) if f.init and f.name not in ("parent", "name")]

    def owns(self, module: Any) -> bool:
        linen = sys.modules.get("flax.linen")
        return linen is not None and isinstance(module, linen.Module)

    def forward(self, module: Any, variables: Any, x: np.ndarray) -> np.ndarray:
        import jax.numpy as jnp

        kwargs = {"train": False} if self._options(module)["train_arg"] else {}
        with _x64(x.dtype):
            y = module.apply(variables, jnp.asarray(self.nchw_to_native(x)), **kwargs)
        return _layout(np.asarray(y, dtype=np.float64), NHWC_TO_NCHW)

    def layer_gradient(self, module: Any, variables: Any, x: np.ndarray, layer: str,
                       cotangent: Callable[[np.ndarray], np.ndarray]) -> LayerGradient:
        """Flax submodules exist only while the module runs: the named one's output gets a zero perturbation
        added by an interceptor (``nn.intercept_methods``), whose VJP is the gradient at that output."""
        import flax.linen as nn
        import jax
        import jax.numpy as jnp

        path = layer.replace(".", "/")
        kwargs = {"train": False} if self._options(module)["train_arg"] else {}
        called: list[str] = []

        def run(delta: Any) -> tuple[Any, Any]:
            seen: list[Any] = []

            def perturb(here: str, args: Any, out: Any) -> Any:
                if here == path:
                    out = out if delta is None else out + delta
                    seen.append(out)
                return out

            with nn.intercept_methods(_by_path(perturb, called)):
                logits = module.apply(variables, xs, **kwargs)
            return logits, seen[-1] if seen else None

        with _x64(x.dtype):
            xs = jnp.asarray(self.nchw_to_native(x))
            _, first = run(None)  # the layer's shape and dtype, or the paths there are
            if first is None:
                raise self._unknown_layer(layer, [p.replace("/", ".") for p in dict.fromkeys(called) if p])
            logits, vjp, activation = jax.vjp(run, jnp.zeros_like(first), has_aux=True)
            (grad,) = vjp(jnp.asarray(cotangent(self.to_numpy(logits, "float64")), logits.dtype))
        return self._layer_result(logits, activation, grad)

    def layer_io(self, module: Any, variables: Any, x: np.ndarray, layers: Sequence[str]
                 ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The named submodules' ``__call__`` inputs and outputs, intercepted (``nn.intercept_methods``) by path."""
        import flax.linen as nn
        import jax.numpy as jnp

        wanted = {layer.replace(".", "/"): layer for layer in layers}
        seen: dict[str, tuple[Any, Any]] = {}
        called: list[str] = []

        def keep(here: str, args: Any, out: Any) -> Any:
            if here in wanted:
                seen[wanted[here]] = (args[0], out)
            return out

        kwargs = {"train": False} if self._options(module)["train_arg"] else {}
        with _x64(x.dtype), nn.intercept_methods(_by_path(keep, called)):
            module.apply(variables, jnp.asarray(self.nchw_to_native(x)), **kwargs)
        for layer in layers:
            if layer not in seen:
                raise self._unknown_layer(layer, [p.replace("/", ".") for p in dict.fromkeys(called) if p])
        return {layer: (self._nchw(seen[layer][0]), self._nchw(seen[layer][1])) for layer in layers}

    def _gates(self, module: Any, variables: Any, x: np.ndarray, paths: Mapping[str, str]
               ) -> dict[str, np.ndarray]:
        """The gates the modules sow (``intermediates``; ``expose_gate`` of the backend) under the last part of
        each path, read from one forward with that collection mutable."""
        import jax.numpy as jnp

        kwargs = {"train": False} if self._options(module)["train_arg"] else {}
        with _x64(x.dtype):
            _, state = module.apply(variables, jnp.asarray(self.nchw_to_native(x)), mutable=["intermediates"],
                                    **kwargs)
        out: dict[str, np.ndarray] = {}
        for name, path in paths.items():
            node: Any = state.get("intermediates", {})
            *parents, sown = path.split(".")
            for part in parents:
                node = node.get(part, {}) if isinstance(node, Mapping) else {}
            if sown not in node:
                raise self._unknown_layer(path, _sown_gates(state.get("intermediates", {})))
            out[name] = self._nchw(node[sown][-1])
        return out

    def train_forward(self, module: Any, variables: Any, x: np.ndarray) -> tuple[np.ndarray, Any]:
        import jax
        import jax.numpy as jnp

        kwargs: dict[str, Any] = {"train": True} if self._options(module)["train_arg"] else {}
        mutable = [k for k in variables if k != "params"]  # BatchNorm's batch_stats

        def step(v: Any, xx: Any, key: Any) -> tuple[Any, Any]:
            out = module.apply(v, xx, mutable=mutable or False, rngs={"dropout": key}, **kwargs)
            return out if mutable else (out, {})

        # under jax.jit, as Flax trains: an input the module refuses fails while tracing, before anything runs
        with _x64(x.dtype):
            y, updates = jax.jit(step)(variables, jnp.asarray(self.nchw_to_native(x)),
                                       jax.random.key(self.dropout_seed))
        return _layout(np.asarray(y, dtype=np.float64), NHWC_TO_NCHW), {**variables, **updates}

    def capture(self, handle: Handle, subs: Sequence[str], weights: Mapping[str, np.ndarray], x: np.ndarray,
                dtype: str, training: bool) -> dict[str, list[Any]]:
        """Flax submodules exist only while the module runs: their ``__call__`` outputs are intercepted
        (``nn.intercept_methods``) by path, '/' or '.' separated; a name no call had reads as why."""
        import flax.linen as nn

        records: dict[str, list[Any]] = {s: [] for s in subs}
        wanted = {s.replace(".", "/"): s for s in subs}
        called: list[str] = []

        def record(path: str, args: Any, out: Any) -> Any:
            if path in wanted:
                records[wanted[path]].append(self.output_array(out))
            return out

        with nn.intercept_methods(_by_path(record, called)):
            self.execute(handle, weights, x, None, dtype, training, "eager")
        for s in subs:
            if not records[s]:
                records[s] = [f"no submodule {s!r} was called "
                              f"(called: {', '.join(dict.fromkeys(p for p in called if p))})"]
        return records

    def read_checkpoint(self, path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
        from flax import serialization

        try:
            tree = serialization.msgpack_restore(Path(path).read_bytes())
        except (ValueError, TypeError, EOFError) as err:
            raise CheckpointError(f"{path}: not readable Flax variables (msgpack; truncated or corrupt): "
                                  f"{err}") from None
        if not isinstance(tree, Mapping) or "params" not in tree:
            raise CheckpointError(f"{path}: expected Flax variables {{'params': ..., 'batch_stats': ...}}, got "
                                  f"{type(tree).__name__}" + (f" with keys {', '.join(map(str, tree))}"
                                                              if isinstance(tree, Mapping) else ""))
        return {k: np.array(v) for k, v in _flatten(tree).items()}

    def write_checkpoint(self, path: str | os.PathLike[str], module: Any, variables: Any) -> None:
        from flax import serialization

        Path(path).write_bytes(serialization.to_bytes(variables))

    def _backend_loaded(self, module: Any, weights: Any) -> dict[str, np.ndarray]:
        from backends.flax import load_weights

        # float32 holds the probe's small integers exactly
        return {k: np.asarray(v, dtype=np.float64) for k, v in _flatten(load_weights(module, weights)).items()}

    def native_entries(self, module: Any, variables: Any) -> dict[str, tuple[tuple[int, ...], bool]]:
        import flax.linen as nn

        if not isinstance(module, nn.Module):
            raise TypeError(f"flax: expected a flax.linen.Module, got {type(module).__name__}")
        if not isinstance(variables, Mapping):
            raise TypeError("flax: wrap needs the module's variables (what module.init(key, x) returns) as the "
                            f"template of its names and shapes, got {type(variables).__name__}")
        return {k: (tuple(np.shape(v)), k.split("/", 1)[0] == "params") for k, v in _flatten(variables).items()}

    def _options(self, module: Any) -> dict[str, Any]:
        params = inspect.signature(type(module).__call__).parameters
        takes_train = "train" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
        return {"train_arg": takes_train}

    def _execute(self, handle: Handle, native: dict[str, np.ndarray], x: np.ndarray, cotangent: np.ndarray | None,
                 dtype: str, training: bool, mode: str, more: Sequence[np.ndarray] = ()) -> NativeRun:
        import jax

        x64 = jax.enable_x64(True) if dtype == "float64" else contextlib.nullcontext()
        eager = jax.disable_jit() if mode == "eager" else contextlib.nullcontext()
        with x64, jax.default_matmul_precision("highest"), eager:
            if mode == "compiled" and jax.config.jax_disable_jit:
                raise RuntimeError("jax.jit is disabled (JAX_DISABLE_JIT / jax.disable_jit): the compiled mode "
                                   "would run eagerly")
            return self._run(handle, native, x, cotangent, dtype, training, mode, more)

    @staticmethod
    def _run(handle: Handle, native: dict[str, np.ndarray], x: np.ndarray, cotangent: np.ndarray | None,
             dtype: str, training: bool, mode: str, more: Sequence[np.ndarray] = ()) -> NativeRun:
        import jax.numpy as jnp

        from backends.flax.weights import to_device

        jdtype = jnp.dtype(dtype)
        variables = _variables(handle, native, dtype)
        mutable = tuple(sorted(k for k in variables if k != "params"))
        forward, forward_backward = _cached_programs(handle.module, training, handle.options["train_arg"], mutable)
        note = "jax.jit" if mode == "compiled" else "jax.disable_jit: op by op"
        xj = to_device(x, jdtype)
        if cotangent is None:
            y, updates = forward(variables, xj)
            dx, grads = None, {}
        else:
            y, dx, dparams, updates = forward_backward(variables, xj, to_device(cotangent, jdtype))
            flat_grads = _flatten({"params": dparams})
            grads = {b.native: None if flat_grads.get(b.native) is None else _np(flat_grads[b.native])
                     for b in handle.trainable}
            dx = _np(dx)
        for batch in more:  # further training steps: each starts from the collections the previous one returned
            xb = to_device(batch, jdtype)
            if cotangent is None:
                _, updates = forward({**variables, **updates}, xb)
            else:  # the program step 1 compiled (a second, forward-only one would cost its own compilation)
                updates = forward_backward({**variables, **updates}, xb, to_device(cotangent, jdtype))[3]
        return NativeRun(_np(y), dx, grads, note, _state(handle, updates, training))

    def _train(self, handle: Handle, native: dict[str, np.ndarray], batches: Sequence[np.ndarray],
               labels: Sequence[np.ndarray], optimizer: OptimizerConfig, schedule: ScheduleConfig | None,
               decay: str, dtype: str, record: Callable[[NativeTrainStep], None]) -> None:
        import jax

        with _x64(dtype), jax.default_matmul_precision("highest"):
            self._train_steps(handle, native, batches, labels, optimizer, schedule, decay, dtype, record)

    def _train_steps(self, handle: Handle, native: dict[str, np.ndarray], batches: Sequence[np.ndarray],
                     labels: Sequence[np.ndarray], optimizer: OptimizerConfig, schedule: ScheduleConfig | None,
                     decay: str, dtype: str, record: Callable[[NativeTrainStep], None]) -> None:
        import jax
        import jax.numpy as jnp
        import optax

        from backends.flax.optim import create_optimizer, current_lr, optimizer_state
        from backends.flax.weights import to_device

        variables = _variables(handle, native, dtype)
        params, rest = variables.get("params", {}), {k: v for k, v in variables.items() if k != "params"}
        mutable = sorted(rest)
        kwargs: dict[str, Any] = {"train": True} if handle.options["train_arg"] else {}
        tx = create_optimizer(params, optimizer, schedule, decay)
        key = jax.random.key(self.dropout_seed)

        def loss_fn(p: Any, collections: Any, x: Any, y: Any) -> tuple[Any, Any]:
            out = handle.module.apply({**collections, "params": p}, x, mutable=mutable or False,
                                      rngs={"dropout": key}, **kwargs)
            logits, updates = out if mutable else (out, {})
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), updates

        def update(p: Any, collections: Any, state: Any, x: Any, y: Any) -> tuple[Any, Any, Any, Any]:
            (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, collections, x, y)
            changes, state = tx.update(grads, state, p)
            return optax.apply_updates(p, changes), {**collections, **updates}, state, loss

        step = jax.jit(update)  # as Flax trains
        opt_state = tx.init(params)
        for x, y in zip(batches, labels, strict=True):
            lr = current_lr(opt_state)  # the lr this step's update uses
            params, rest, opt_state, loss = step(params, rest, opt_state, to_device(x, jnp.dtype(dtype)),
                                                 jnp.asarray(y))
            flat = _flatten({"params": params, **rest})
            slots = {_param_path(k): {slot: _np(v) for slot, v in by_slot.items()}
                     for k, by_slot in optimizer_state(opt_state, params).items()}
            record(NativeTrainStep(float(loss), lr, {b.native: _np(flat[b.native]) for b in handle.trainable
                                                       if b.native in flat},
                                   slots, {b.native: _np(flat[b.native]) for b in handle.state_bindings
                                           if b.native in flat}))


def _param_path(key: str) -> str:
    """``backends.flax.optim.optimizer_state``'s '.'-joined path of a parameter as a binding's native name."""
    return key if key.startswith("params/") else "params/" + key.replace(".", "/")


def _variables(handle: Handle, native: dict[str, np.ndarray], dtype: str) -> dict[str, Any]:
    """The handle's variables in ``dtype`` holding the ``native`` weights (inside JAX's 64-bit mode for float64)."""
    import jax.numpy as jnp

    from backends.flax.weights import to_device

    jdtype = jnp.dtype(dtype)
    flat = {k: to_device(v, jdtype) if jnp.issubdtype(jnp.asarray(v).dtype, jnp.floating) else v
            for k, v in _flatten(handle.variables).items()}
    flat.update({k: to_device(v, jdtype) for k, v in native.items()})
    return _unflatten(flat)


def _state(handle: Handle, updates: Mapping[str, Any], training: bool) -> dict[str, np.ndarray]:
    """The running statistics of the handle's state bindings in the collections a training forward returned."""
    if not training:
        return {}
    flat = _flatten(updates)
    return {b.native: _np(flat[b.native]) for b in handle.state_bindings if b.native in flat}


def _by_path(on_output: Callable[[str, Any, Any], Any], called: list[str]) -> Callable[..., Any]:
    """An ``nn.intercept_methods`` interceptor: after each submodule's ``__call__``, its '/'-joined path is appended
    to ``called`` and ``on_output(path, args, output)`` is what the call returns."""
    def interceptor(next_fun: Callable[..., Any], args: Any, kwargs: Any, context: Any) -> Any:
        out = next_fun(*args, **kwargs)
        if context.method_name != "__call__":
            return out
        path = "/".join(str(p) for p in context.module.path)
        called.append(path)
        return on_output(path, args, out)

    return interceptor


def _sown_gates(tree: Any, prefix: str = "") -> list[str]:
    """The dotted paths of the gates sown in the ``intermediates`` tree."""
    if not isinstance(tree, Mapping):
        return []
    here = [f"{prefix}{k}" for k in tree if k in GATE_NAMES]
    return here + [p for k, v in tree.items() if k not in GATE_NAMES for p in _sown_gates(v, f"{prefix}{k}.")]


def _x64(dtype: str | np.dtype[Any]) -> contextlib.AbstractContextManager[Any]:
    """JAX's 64-bit mode for float64 work (arrays made outside it are float32), nothing for any other dtype."""
    import jax

    return jax.enable_x64(True) if str(dtype) == "float64" else contextlib.nullcontext()


def _np(a: Any) -> np.ndarray:
    return np.asarray(np.asarray(a).astype(np.float64))


RUNNER = FlaxRunner()
