"""Runner for backends.torch."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from attn_core import AttentionConfig

from .base import Runner, RunResult


class TorchRunner(Runner):
    framework = "torch"
    requires = ("torch",)

    def run(self, name: str, config: AttentionConfig, weights: Mapping[str, np.ndarray], x: np.ndarray,
            cotangent: np.ndarray | None, dtype: str = "float32", training: bool = False) -> RunResult:
        import torch

        from backends.torch import ATTN_LAYERS, load_weights
        from attn_core import from_native, native_location

        tdtype = getattr(torch, dtype)
        module = ATTN_LAYERS[name].from_config(config).to(tdtype)
        load_weights(module, {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()})
        module.train(training)
        xt = torch.tensor(np.asarray(x, dtype=np.float64), dtype=tdtype, requires_grad=cotangent is not None)
        y = module(xt)
        result = RunResult(y=y.detach().to(torch.float64).numpy())
        if cotangent is not None:
            y.backward(torch.tensor(cotangent, dtype=tdtype))
            result.dx = xt.grad.to(torch.float64).numpy()
            params = dict(module.named_parameters())
            for spec in config.param_table():
                if spec.trainable:
                    p = params[".".join(native_location("torch", spec)[1])]
                    g = p.grad if p.grad is not None else torch.zeros_like(p)
                    result.dparams[spec.name] = from_native("torch", spec, g.to(torch.float64).numpy())
        return result


RUNNER = TorchRunner()
