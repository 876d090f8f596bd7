"""Runner for backends.torch and for any torch ``nn.Module`` taking NCHW input: eager or ``torch.compile``.

'compiled' is ``torch.compile(module)`` with the default (inductor) backend, on CPU, forward and backward. Each
compiled run starts from ``torch._dynamo.reset()`` so that one case's compilation is neither reused by another
nor refused by dynamo's recompile limit (past it, dynamo runs frames eagerly without an error). Compilation
happens on the first call, so the row's time includes it: seconds per case on a cold inductor cache, a fraction
of a second on a warm one. A run in which dynamo compiled no graph at all is an error, never an eager pass.
"""

from __future__ import annotations

import contextlib
import copy
import os
import pickle
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from attn_core.checkpoint import CheckpointError

from .base import Handle, NativeRun, NativeTrainStep, Runner, unwrap_state_dict

if TYPE_CHECKING:
    from attn_core.training import OptimizerConfig, ScheduleConfig


class TorchRunner(Runner):
    framework = "torch"
    dtypes = ("float16", "bfloat16", "float32", "float64")  # every module runs in each on CPU (torch 2.13)

    def tensor(self, array: np.ndarray, dtype: str | None = None) -> Any:
        import torch

        return torch.tensor(array, dtype=getattr(torch, dtype or str(array.dtype)))

    def to_numpy(self, value: Any, dtype: str | None = None) -> np.ndarray:
        import torch

        value = value.detach().cpu()
        array: np.ndarray = (value if dtype is None else value.to(getattr(torch, dtype))).numpy()
        return array

    def dtype_name(self, dtype: Any) -> str:
        return str(dtype).removeprefix("torch.")

    def owns(self, module: Any) -> bool:
        torch = sys.modules.get("torch")
        return torch is not None and hasattr(torch, "nn") and isinstance(module, torch.nn.Module)

    def forward(self, module: Any, variables: Any, x: np.ndarray) -> np.ndarray:
        import torch

        module.eval()
        with torch.no_grad():
            y: np.ndarray = module(torch.from_numpy(x)).double().numpy()
        return y

    def train_forward(self, module: Any, variables: Any, x: np.ndarray) -> tuple[np.ndarray, Any]:
        import torch

        module.train()
        y: np.ndarray = module(torch.from_numpy(x)).detach().double().numpy()
        return y, variables

    def seed(self, seed: int) -> None:
        import torch

        torch.manual_seed(seed)

    def submodules(self, module: Any) -> dict[str, Any] | None:
        return {k: v for k, v in module.named_modules() if k}

    def _hook(self, layer: Any, record: Callable[[Any], None]) -> Any:
        return layer.register_forward_hook(lambda _layer, _inputs, output: record(output))

    def _io_hook(self, layer: Any, record: Callable[[tuple[Any, Any]], None]) -> Any:
        return layer.register_forward_hook(lambda _layer, inputs, output: record((inputs[0], output)))

    def _grad(self, output: Any, wrt: Any, cotangent: Any) -> Any:
        import torch

        return torch.autograd.grad(output, wrt, cotangent)[0]

    def read_checkpoint(self, path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
        import torch

        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, AttributeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointError(f"{path}: not a readable torch checkpoint (truncated, corrupt, or not saved with "
                                  f"torch.save of tensors): {first}") from None
        out = {}
        for k, v in unwrap_state_dict(obj, path, "torch").items():
            if not isinstance(v, torch.Tensor):
                raise CheckpointError(f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor")
            out[str(k)] = (v.float() if v.dtype == torch.bfloat16 else v).detach().cpu().numpy()
        return out

    def write_checkpoint(self, path: str | os.PathLike[str], module: Any, variables: Any) -> None:
        import torch

        torch.save(module.state_dict(), path)

    def _cast(self, module: Any, dtype: str) -> Any:
        import torch

        return module.to(getattr(torch, dtype))

    def _backend_loaded(self, module: Any, weights: Any) -> dict[str, np.ndarray]:
        from backends.torch import load_weights

        loaded = load_weights(copy.deepcopy(module).double(), weights)
        return {k: v.detach().numpy() for k, v in loaded.state_dict().items()}

    def native_entries(self, module: Any, variables: Any) -> dict[str, tuple[tuple[int, ...], bool]]:
        import torch

        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"torch: expected a torch.nn.Module, got {type(module).__name__}")
        params = {k for k, p in module.named_parameters(remove_duplicate=False) if p.requires_grad}
        return {k: (tuple(v.shape), k in params) for k, v in module.state_dict(keep_vars=True).items()}

    def _execute(self, handle: Handle, native: dict[str, np.ndarray], x: np.ndarray, cotangent: np.ndarray | None,
                 dtype: str, training: bool, mode: str, more: Sequence[np.ndarray] = ()) -> NativeRun:
        import torch

        tdtype = getattr(torch, dtype)
        module = _loaded_copy(handle, native, dtype)
        module.train(training)
        xt = torch.tensor(x, dtype=torch.float64).to(tdtype).requires_grad_(cotangent is not None)
        fn, guard = module, contextlib.nullcontext()
        counters: Any = None  # dynamo's compile statistics, in compiled mode only
        if mode == "compiled":
            import torch._dynamo
            import torch._dynamo.utils

            counters = torch._dynamo.utils.counters
            torch._dynamo.reset()
            counters.clear()
            guard = torch._dynamo.config.patch(suppress_errors=False)  # a failed compile raises, never falls back
            fn = torch.compile(module)
        with guard:
            y = fn(xt)
            if cotangent is not None:
                y.backward(torch.tensor(cotangent, dtype=torch.float64).to(tdtype))
            for batch in more:  # further training steps, forward only, in the same (compiled) module
                fn(torch.tensor(batch, dtype=torch.float64).to(tdtype))
        note = ""
        if counters is not None:
            graphs = int(counters["stats"]["unique_graphs"])
            breaks = int(sum(counters["graph_break"].values()))
            if graphs == 0:
                raise RuntimeError("torch.compile compiled no graph: the module ran eagerly (is dynamo disabled, "
                                   "e.g. TORCHDYNAMO_DISABLE=1?)")
            note = f"torch.compile: {graphs} graph(s), {breaks} graph break(s)"
        y_np = y.detach().to(torch.float64).numpy()
        state = {}
        if training:  # the buffers the forwards updated in place (under torch.compile too: dynamo writes them back)
            buffers = module.state_dict()
            state = {b.native: buffers[b.native].detach().to(torch.float64).numpy() for b in handle.state_bindings}
        if cotangent is None:
            return NativeRun(y_np, None, {}, note, state)
        dx = None if xt.grad is None else xt.grad.to(torch.float64).numpy()
        params = dict(module.named_parameters(remove_duplicate=False))
        grads = {}
        for b in handle.trainable:
            g = params[b.native].grad
            grads[b.native] = None if g is None else g.detach().to(torch.float64).numpy()
        return NativeRun(y_np, dx, grads, note, state)

    def _train(self, handle: Handle, native: dict[str, np.ndarray], batches: Sequence[np.ndarray],
               labels: Sequence[np.ndarray], optimizer: OptimizerConfig, schedule: ScheduleConfig | None,
               decay: str, dtype: str, record: Callable[[NativeTrainStep], None]) -> None:
        module = _loaded_copy(handle, native, dtype)
        module.train()
        self._eager_train(handle, module, batches, labels, optimizer, schedule, decay, dtype, record)

    def _loss_step(self, module: Any, opt: Any, x: np.ndarray, labels: np.ndarray, dtype: str) -> float:
        import torch
        import torch.nn.functional as F

        opt.zero_grad()
        loss = F.cross_entropy(module(torch.from_numpy(x).to(getattr(torch, dtype))), torch.from_numpy(labels))
        loss.backward()
        opt.step()
        return float(loss.detach())

    def _named_arrays(self, module: Any) -> dict[str, np.ndarray]:
        import torch

        return {k: v.detach().to(torch.float64).numpy().copy() for k, v in module.state_dict().items()}


def _loaded_copy(handle: Handle, native: dict[str, np.ndarray], dtype: str) -> Any:
    """A copy of the handle's module in ``dtype`` holding the ``native`` weights."""
    import torch

    module = copy.deepcopy(handle.module).to(getattr(torch, dtype))
    state = module.state_dict()
    with torch.no_grad():
        for name, value in native.items():
            state[name].copy_(torch.from_numpy(value))  # copy_ casts to the parameter's dtype
    return module


RUNNER = TorchRunner()
