"""torch driver: eager and compiled, ``torch.compile`` (inductor, ``dynamic=False``); forward under ``no_grad`` in
eval mode, forward+backward in train mode with gradients for the input and every parameter."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import backends.torch as bt

from ..peers import published_torch, seed_torch
from ..peers.timm_peers import build as build_timm
from ..peers.timm_peers import load_timm
from ..plan import Data, FormData
from ..timing import Candidate
from .base import BaseDriver, PeerUnavailable


class Driver(BaseDriver):
    name = "torch"
    seeds = seed_torch
    published = published_torch

    def __init__(self) -> None:
        self._timm: Any = None
        self._timm_status = ""

    @property
    def timm(self) -> tuple[Any, str]:
        if not self._timm_status:
            self._timm, self._timm_status = load_timm()
        return self._timm, self._timm_status

    def versions(self) -> dict[str, str]:
        timm, status = self.timm
        return {"torch": torch.__version__, "timm": status if timm is not None else f"unavailable: {status}"}

    def set_threads(self, n: int) -> str:
        torch.set_num_threads(n)
        return f"torch.set_num_threads({n}); torch.get_num_threads() = {torch.get_num_threads()}"

    def begin_group(self, mode: str) -> None:
        if mode == "compiled":
            torch._dynamo.reset()  # each group compiles its own graphs: no recompile limit, no automatic dynamic

    # ------------------------------------------------------------------------------------------- builders
    def _baseline(self, data: Data, pass_: str) -> Candidate:
        x, s, g = self.inputs(data)
        if pass_ == "forward":
            return Candidate("", "", self._no_grad_call(lambda: x * s))
        xl, sl = x.detach().requires_grad_(True), s.clone().requires_grad_(True)

        def run_fb() -> torch.Tensor | None:
            (xl * sl).backward(g)
            return xl.grad

        def prepare() -> None:
            xl.grad = sl.grad = None
        return Candidate("", "", run_fb, prepare=prepare)

    def _wrap(self, module: nn.Module, data: Data, mode: str, pass_: str) -> Candidate:
        x, _, g = self.inputs(data)
        fn = torch.compile(module, dynamic=False) if mode == "compiled" else module
        if pass_ == "forward":
            module.eval()
            return Candidate("", "", self._no_grad_call(lambda: fn(x)), output=self.output,
                             compiles=mode == "compiled")
        module.train()
        xl = x.detach().requires_grad_(True)
        params = [p for p in module.parameters() if p.requires_grad]

        def run_fb() -> torch.Tensor | None:
            fn(xl).backward(g)
            return xl.grad

        def prepare() -> None:
            xl.grad = None
            for p in params:
                p.grad = None
        return Candidate("", "", run_fb, prepare=prepare, output=self.output,
                         compiles=mode == "compiled")

    def _project(self, module: str, fd: FormData, data: Data, mode: str, pass_: str) -> Candidate:
        m = bt.load_weights(bt.ATTN_LAYERS[module].from_config(fd.config), fd.weights)
        return self._wrap(m, data, mode, pass_)

    def _timm_peer(self, module: str, c: int, fd: FormData) -> nn.Module:
        timm, status = self.timm
        if timm is None:
            raise PeerUnavailable(status)
        return build_timm(timm, module, fd.config, fd.weights)

    def _no_grad(self) -> Any:
        return torch.no_grad()

    def _subop_calls(self, x: Any, gate: Any, pooled: Any, kernel: Any) -> dict[str, Callable[[], Any]]:
        m = torch.sigmoid(gate)
        return {"mean_hw": lambda: x.mean((2, 3)), "max_hw": lambda: x.amax((2, 3)),
                "mean_c": lambda: x.mean(1, keepdim=True), "max_c": lambda: x.amax(1, keepdim=True),
                "conv_kxk": lambda: F.conv2d(pooled, kernel, padding=3), "mul_map": lambda: x * m,
                "mul_self": lambda: x * x, "sigmoid": lambda: torch.sigmoid(x)}

    # ------------------------------------------------------------------------------------------- models
    def model(self, create: Callable[..., Any], name: str, x_np: np.ndarray, y_np: np.ndarray, mode: str,
              pass_: str) -> Candidate:
        from ..models import LR, MOMENTUM

        model = create(name)
        fn = torch.compile(model, dynamic=False) if mode == "compiled" else model
        x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
        if pass_ == "inference":
            model.eval()
            return Candidate(name, "", self._no_grad_call(lambda: fn(x)), compiles=mode == "compiled")
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)

        def step() -> Any:
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(fn(x), y)
            loss.backward()
            opt.step()
            return loss
        return Candidate(name, "", step, compiles=mode == "compiled")

    def densenet_memory(self, model: str, efficient: bool, batch: int, size: int) -> dict[str, Any]:
        from ..densenet_memory import MIB, inputs, max_rss_mib

        net = bt.create_model(model, efficient=efficient).train()
        x_np, ct_np = inputs(batch, size, net.config.num_classes)
        x, ct = torch.from_numpy(x_np), torch.from_numpy(ct_np)

        def step(xb: torch.Tensor, cb: torch.Tensor) -> None:
            net.zero_grad(set_to_none=True)
            (net(xb) * cb).sum().backward()

        step(x[:2], ct[:2])
        rss0 = max_rss_mib()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
            step(x, ct)
        rss = max_rss_mib() - rss0
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "trace.json")
            prof.export_chrome_trace(path)
            with open(path, encoding="utf-8") as f:
                events = [e["args"] for e in json.load(f)["traceEvents"] if e.get("name") == "[memory]"
                          and e.get("args", {}).get("Device Type", 0) == 0]
        start = events[0]["Total Allocated"] - events[0]["Bytes"]
        peak = max(e["Total Allocated"] for e in events) - start
        t = time.perf_counter()
        step(x, ct)
        return {"peak_mib": peak / MIB, "rss_mib": rss, "step_s": time.perf_counter() - t,
                "how": "allocator peak (torch.profiler)"}
