"""Paddle driver: eager (dygraph) and compiled, ``paddle.jit.to_static(full_graph=True)`` (the whole forward one
static program, or an error rather than a silent dygraph fallback). Forward under ``paddle.no_grad()`` in eval mode
(to_static then builds an inference program); forward+backward in train mode, gradients for the input and every
parameter."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

import backends.paddle as bp

from ..peers import paddle_timm, published_paddle, seed_paddle
from ..plan import Data, FormData
from ..timing import Candidate
from .base import BaseDriver


class Driver(BaseDriver):
    name = "paddle"
    seeds = seed_paddle
    published = published_paddle

    def __init__(self) -> None:
        paddle.disable_static()
        paddle.set_device("cpu")

    def versions(self) -> dict[str, str]:
        return {"paddlepaddle": paddle.__version__}

    def set_threads(self, n: int) -> str:
        paddle.base.core.set_num_threads(n)
        return (f"paddle.base.core.set_num_threads({n}) (BLAS/oneDNN); elementwise and reduction kernels run on "
                f"one thread")

    def _baseline(self, data: Data, pass_: str) -> Candidate:
        x, s, g = self.inputs(data)
        if pass_ == "forward":
            return Candidate("", "", self._no_grad_call(lambda: x * s))
        xl, sl = x.detach(), s.detach().clone()
        xl.stop_gradient = sl.stop_gradient = False

        def run_fb() -> paddle.Tensor:
            (xl * sl).backward(g)
            return xl.grad

        def prepare() -> None:
            xl.clear_gradient(False)
            sl.clear_gradient(False)
        return Candidate("", "", run_fb, prepare=prepare)

    def _wrap(self, layer: nn.Layer, data: Data, mode: str, pass_: str) -> Candidate:
        x, _, g = self.inputs(data)
        if pass_ == "forward":
            layer.eval()
        else:
            layer.train()
        fn = paddle.jit.to_static(layer, full_graph=True) if mode == "compiled" else layer
        if pass_ == "forward":
            return Candidate("", "", self._no_grad_call(lambda: fn(x)), output=self.output,
                             compiles=mode == "compiled")
        xl = x.detach()
        xl.stop_gradient = False

        def run_fb() -> paddle.Tensor:
            fn(xl).backward(g)
            return xl.grad

        def prepare() -> None:
            xl.clear_gradient(False)
            layer.clear_gradients(False)
        return Candidate("", "", run_fb, prepare=prepare, output=self.output,
                         compiles=mode == "compiled")

    def _project(self, module: str, fd: FormData, data: Data, mode: str, pass_: str) -> Candidate:
        layer = bp.load_weights(bp.ATTN_LAYERS[module].from_config(fd.config), fd.weights)
        return self._wrap(layer, data, mode, pass_)

    def _timm_peer(self, module: str, c: int, fd: FormData) -> nn.Layer:
        return paddle_timm.build(module, c, fd.weights)  # timm's module transcribed, built as create_attn builds it

    def _no_grad(self) -> Any:
        return paddle.no_grad()

    def _subop_calls(self, x: Any, gate: Any, pooled: Any, kernel: Any) -> dict[str, Callable[[], Any]]:
        m = F.sigmoid(gate)
        return {"mean_hw": lambda: x.mean(axis=[2, 3]), "max_hw": lambda: x.amax(axis=[2, 3]),
                "mean_c": lambda: x.mean(axis=1, keepdim=True), "max_c": lambda: x.amax(axis=1, keepdim=True),
                "conv_kxk": lambda: F.conv2d(pooled, kernel, padding=3),
                "mul_map": lambda: x * m.expand_as(x),  # as SpatialAttention does it (faster than broadcasting)
                "mul_self": lambda: x * x, "sigmoid": lambda: F.sigmoid(x)}

    # ------------------------------------------------------------------------------------------- models
    def model(self, create: Callable[..., Any], name: str, x_np: np.ndarray, y_np: np.ndarray, mode: str,
              pass_: str) -> Candidate:
        from ..models import LR, MOMENTUM

        model = create(name)
        if pass_ == "inference":
            model.eval()
        else:
            model.train()
        fn = paddle.jit.to_static(model, full_graph=True) if mode == "compiled" else model
        x, y = paddle.to_tensor(x_np), paddle.to_tensor(y_np)
        if pass_ == "inference":
            return Candidate(name, "", self._no_grad_call(lambda: fn(x)), compiles=mode == "compiled")
        opt = paddle.optimizer.Momentum(learning_rate=LR, momentum=MOMENTUM, parameters=model.parameters())

        def step() -> Any:
            loss = F.cross_entropy(fn(x), y)
            loss.backward()
            opt.step()
            opt.clear_grad(set_to_zero=False)
            return loss
        return Candidate(name, "", step, compiles=mode == "compiled")

    def densenet_memory(self, model: str, efficient: bool, batch: int, size: int) -> dict[str, Any]:
        from paddle.base import core

        from ..densenet_memory import MIB, inputs, max_rss_mib

        net = bp.create_model(model, efficient=efficient)
        net.train()
        x_np, ct_np = inputs(batch, size, net.config.num_classes)
        x, ct = paddle.to_tensor(x_np), paddle.to_tensor(ct_np)

        def step(xb: paddle.Tensor, cb: paddle.Tensor) -> None:
            net.clear_gradients(set_to_zero=False)
            (net(xb) * cb).sum().backward()

        step(x[:2], ct[:2])
        rss0 = max_rss_mib()
        core.host_memory_stat_reset_peak_value("Allocated", 0)
        start = core.host_memory_stat_current_value("Allocated", 0)
        step(x, ct)
        peak = core.host_memory_stat_peak_value("Allocated", 0) - start
        rss = max_rss_mib() - rss0
        t = time.perf_counter()
        step(x, ct)
        return {"peak_mib": peak / MIB, "rss_mib": rss, "step_s": time.perf_counter() - t,
                "how": "host allocator peak (core.host_memory_stat)"}
