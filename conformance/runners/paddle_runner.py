"""Runner for backends.paddle and for any Paddle ``nn.Layer`` taking NCHW input: dygraph or ``to_static``.

'compiled' is ``paddle.jit.to_static(layer, full_graph=True)``: the whole forward becomes one static program or
the conversion raises. (The default SOT translator runs graphs of fewer than 10 ops in dygraph and falls back to
dygraph for frames it cannot translate, both silently, so a row could pass without any static program.) A run
that traced no program is an error.

Paddle builds an inference program, without a backward, for a Layer in eval mode. For gradients in eval mode the
runner converts a thin parent Layer left in train mode around the module in eval mode (how frozen-BatchNorm
training runs in Paddle): the module's own layers keep their eval flags. The output reported in eval mode comes
from the inference program of the module itself, the gradients from that training program.
"""

from __future__ import annotations

import contextlib
import copy
import os
import pickle
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from attn_core.checkpoint import CheckpointError
from attn_core.registry import CONFIGS

from .base import Handle, NativeRun, NativeTrainStep, Runner, unwrap_state_dict

if TYPE_CHECKING:
    from attn_core.training import OptimizerConfig, ScheduleConfig


@contextlib.contextmanager
def _dygraph_on_cpu() -> Iterator[None]:
    """Dygraph on the CPU for the duration, whatever the caller had set."""
    import paddle

    previous_device, was_static = paddle.get_device(), not paddle.in_dynamic_mode()
    paddle.disable_static()
    paddle.set_device("cpu")
    try:
        yield
    finally:
        paddle.set_device(previous_device)
        if was_static:
            paddle.enable_static()


def _shell(inner: Any) -> Any:
    """A Layer in train mode whose forward is ``inner``'s (see the module docstring)."""
    from paddle import nn

    class _TrainShell(nn.Layer):  # type: ignore[misc]  # Paddle is typed Any here, so mypy sees an Any base class
        def __init__(self, layer: nn.Layer) -> None:
            super().__init__()
            self.inner = layer

        def forward(self, x: Any) -> Any:
            return self.inner(x)

    return _TrainShell(inner)


def _to_static(layer: Any) -> Any:
    import paddle

    return paddle.jit.to_static(layer, full_graph=True)


def _check_traced(layer: Any) -> None:
    """Raise unless ``to_static`` built a program for ``layer``."""
    count = layer.forward.get_traced_count()
    if count < 1:
        raise RuntimeError(f"paddle.jit.to_static traced no program (traced count {count}); the layer ran in "
                           f"dygraph")


class PaddleRunner(Runner):
    framework = "paddle"
    # Measured on paddlepaddle 3.3, CPU build: neither float16 nor bfloat16 has a kernel for mean, max, divide,
    # sigmoid, relu, silu, conv2d, matmul, batch_norm or pad3d; float16 lacks subtract and multiply too. The attention
    # modules compute half inputs in float32 (attn_core.precision) and need only cast, so they run; the models'
    # own layers compute in the models' dtype and do not.
    # the attention modules that compute half inputs in float32 (attn_core.precision) need no half kernel
    module_dtypes = {m: ("float16", "bfloat16") for m, config in CONFIGS.items() if config.half_in_float32}
    dtype_notes = {d: f"Paddle's CPU build has no {d} kernels for mean, sigmoid, conv2d, matmul or batch_norm "
                      f"('kernel not registered'); only the attention modules, computed in float32, run in {d}"
                   for d in ("float16", "bfloat16")}

    def tensor(self, array: np.ndarray, dtype: str | None = None) -> Any:
        import paddle

        return paddle.to_tensor(array, dtype=dtype or str(array.dtype))

    def to_numpy(self, value: Any, dtype: str | None = None) -> np.ndarray:
        return np.asarray((value if dtype is None else value.astype(dtype)).numpy())

    def dtype_name(self, dtype: Any) -> str:
        return str(dtype).removeprefix("paddle.")

    def owns(self, module: Any) -> bool:
        paddle = sys.modules.get("paddle")
        return paddle is not None and hasattr(paddle, "nn") and isinstance(module, paddle.nn.Layer)

    def forward(self, module: Any, variables: Any, x: np.ndarray) -> np.ndarray:
        import paddle

        module.eval()
        with paddle.no_grad():
            y: np.ndarray = module(paddle.to_tensor(x)).astype("float64").numpy()
        return y

    def train_forward(self, module: Any, variables: Any, x: np.ndarray) -> tuple[np.ndarray, Any]:
        import paddle

        module.train()
        y: np.ndarray = module(paddle.to_tensor(x)).detach().astype("float64").numpy()
        return y, variables

    def seed(self, seed: int) -> None:
        import paddle

        paddle.seed(seed)

    def submodules(self, module: Any) -> dict[str, Any] | None:
        return dict(module.named_sublayers())

    def _hook(self, layer: Any, record: Callable[[Any], None]) -> Any:
        return layer.register_forward_post_hook(lambda _layer, _inputs, output: record(output))

    def _io_hook(self, layer: Any, record: Callable[[tuple[Any, Any]], None]) -> Any:
        return layer.register_forward_post_hook(lambda _layer, inputs, output: record((inputs[0], output)))

    def _grad(self, output: Any, wrt: Any, cotangent: Any) -> Any:
        import paddle

        return paddle.grad([output], [wrt], [cotangent])[0]

    def read_checkpoint(self, path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
        import paddle

        try:
            obj = paddle.load(str(path), return_numpy=True)
        except (ValueError, pickle.UnpicklingError, EOFError, RuntimeError, AttributeError) as err:
            raise CheckpointError(f"{path}: not a readable Paddle checkpoint (truncated, corrupt, or not saved with "
                                  f"paddle.save): {err}") from None
        out = {}
        for k, v in unwrap_state_dict(obj, path, "paddle").items():
            if not isinstance(v, np.ndarray):
                raise CheckpointError(f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor")
            out[str(k)] = v
        return out

    def write_checkpoint(self, path: str | os.PathLike[str], module: Any, variables: Any) -> None:
        import paddle

        paddle.save(module.state_dict(), str(path))

    def _cast(self, module: Any, dtype: str) -> Any:
        module.to(dtype=dtype)  # in place, parameters and BatchNorm state alike; returns None
        return module

    def _backend_loaded(self, module: Any, weights: Any) -> dict[str, np.ndarray]:
        from backends.paddle import load_weights

        with _dygraph_on_cpu():
            copied = copy.deepcopy(module)
            copied.to(dtype="float64")
            loaded = load_weights(copied, weights)
            return {k: v.numpy() for k, v in loaded.state_dict().items()}

    def native_entries(self, module: Any, variables: Any) -> dict[str, tuple[tuple[int, ...], bool]]:
        import paddle

        if not isinstance(module, paddle.nn.Layer):
            raise TypeError(f"paddle: expected a paddle.nn.Layer, got {type(module).__name__}")
        # BatchNorm's running statistics are parameters in Paddle too, with stop_gradient set
        params = {k for k, p in module.named_parameters(include_sublayers=True) if not p.stop_gradient}
        return {k: (tuple(int(s) for s in v.shape), k in params) for k, v in module.state_dict().items()}

    def _execute(self, handle: Handle, native: dict[str, np.ndarray], x: np.ndarray, cotangent: np.ndarray | None,
                 dtype: str, training: bool, mode: str, more: Sequence[np.ndarray] = ()) -> NativeRun:
        with _dygraph_on_cpu():
            return self._dygraph_execute(handle, native, x, cotangent, dtype, training, mode, more)

    @staticmethod
    def _dygraph_execute(handle: Handle, native: dict[str, np.ndarray], x: np.ndarray,
                         cotangent: np.ndarray | None, dtype: str, training: bool, mode: str,
                         more: Sequence[np.ndarray] = ()) -> NativeRun:
        import paddle

        module = _loaded_copy(handle, native, dtype)
        if training:
            module.train()
        else:
            module.eval()
        xt = paddle.to_tensor(x).astype(dtype)
        xt.stop_gradient = cotangent is None
        note, y_reported = "", None
        fn = module
        if mode == "compiled":
            if cotangent is not None and not training:
                infer = _to_static(copy.deepcopy(module))  # eval: the inference program Paddle builds
                y_reported = infer(xt.detach())
                _check_traced(infer)
                fn = _to_static(_shell(module))
                note = "to_static: output from the inference program, gradients from a training program"
            else:
                fn = _to_static(module)
                note = "to_static: " + ("training program" if training else "inference program")
        y = fn(xt)
        if mode == "compiled":
            _check_traced(fn)
        y_np = (y if y_reported is None else y_reported).detach().astype("float64").numpy()
        if cotangent is not None:
            y.backward(paddle.to_tensor(cotangent).astype(dtype))
        for batch in more:  # further training steps, forward only, in the same (static) module
            fn(paddle.to_tensor(batch).astype(dtype))
        state = {}
        if training:  # the buffers the forwards updated (to_static's training program writes them back too)
            buffers = module.state_dict()
            state = {b.native: buffers[b.native].astype("float64").numpy() for b in handle.state_bindings}
        if cotangent is None:
            return NativeRun(y_np, None, {}, note, state)
        dx = None if xt.grad is None else xt.grad.astype("float64").numpy()
        params = dict(module.named_parameters(include_sublayers=True))
        grads = {}
        for b in handle.trainable:
            g = params[b.native].grad
            grads[b.native] = None if g is None else g.astype("float64").numpy()
        return NativeRun(y_np, dx, grads, note, state)

    def _train(self, handle: Handle, native: dict[str, np.ndarray], batches: Sequence[np.ndarray],
               labels: Sequence[np.ndarray], optimizer: OptimizerConfig, schedule: ScheduleConfig | None,
               decay: str, dtype: str, record: Callable[[NativeTrainStep], None]) -> None:
        with _dygraph_on_cpu():
            module = _loaded_copy(handle, native, dtype)
            module.train()
            self._eager_train(handle, module, batches, labels, optimizer, schedule, decay, dtype, record)

    def _loss_step(self, module: Any, opt: Any, x: np.ndarray, labels: np.ndarray, dtype: str) -> float:
        import paddle
        import paddle.nn.functional as F

        loss = F.cross_entropy(module(paddle.to_tensor(x).astype(dtype)), paddle.to_tensor(labels))
        loss.backward()
        opt.step()
        opt.clear_grad()
        return float(loss.detach().astype("float64").numpy())

    def _named_arrays(self, module: Any) -> dict[str, np.ndarray]:
        return {k: v.astype("float64").numpy() for k, v in module.state_dict().items()}


def _loaded_copy(handle: Handle, native: dict[str, np.ndarray], dtype: str) -> Any:
    """A copy of the handle's module in ``dtype`` holding the ``native`` weights. Copied, then cast:
    ``Layer.to(dtype=...)`` casts parameters and BatchNorm state alike and leaves paddle's global default dtype
    alone."""
    import paddle

    module = copy.deepcopy(handle.module)
    module.to(dtype=dtype)
    state = module.state_dict()
    with paddle.no_grad():
        for name, value in native.items():
            target = state[name]
            target.set_value(paddle.to_tensor(value, place=target.place).astype(target.dtype))
    return module


RUNNER = PaddleRunner()
