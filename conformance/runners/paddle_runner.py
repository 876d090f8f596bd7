"""Runner for backends.paddle."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from attn_core import AttentionConfig

from .base import Runner, RunResult


class PaddleRunner(Runner):
    framework = "paddle"
    requires = ("paddle",)

    def run(self, name: str, config: AttentionConfig, weights: Mapping[str, np.ndarray], x: np.ndarray,
            cotangent: np.ndarray | None, dtype: str = "float32", training: bool = False) -> RunResult:
        import paddle

        from backends.paddle import ATTN_LAYERS, load_weights
        from attn_core import from_native, native_location

        previous_device, was_static = paddle.get_device(), not paddle.in_dynamic_mode()
        paddle.disable_static()
        paddle.set_device("cpu")
        try:
            # Built in the default dtype, then cast: Layer.to(dtype=...) casts parameters and BatchNorm state alike
            # and leaves paddle's global default dtype alone.
            module = ATTN_LAYERS[name].from_config(config)
            module.to(dtype=dtype)
            load_weights(module, {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()})
            if training:
                module.train()
            else:
                module.eval()
            xt = paddle.to_tensor(np.asarray(x, dtype=np.float64).astype(dtype), stop_gradient=cotangent is None)
            y = module(xt)
            result = RunResult(y=y.detach().astype("float64").numpy())
            if cotangent is not None:
                y.backward(paddle.to_tensor(np.asarray(cotangent, dtype=np.float64).astype(dtype)))
                result.dx = xt.grad.astype("float64").numpy()
                params = dict(module.named_parameters())
                for spec in config.param_table():
                    if spec.trainable:
                        p = params[".".join(native_location("paddle", spec)[1])]
                        g = p.grad if p.grad is not None else paddle.zeros_like(p)
                        result.dparams[spec.name] = from_native("paddle", spec, g.astype("float64").numpy())
            return result
        finally:
            paddle.set_device(previous_device)
            if was_static:
                paddle.enable_static()


RUNNER = PaddleRunner()
