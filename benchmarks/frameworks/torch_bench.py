"""torch driver: eager and compiled, ``torch.compile`` (inductor, ``dynamic=False``); forward under ``no_grad`` in
eval mode, forward+backward in train mode with gradients for the input and every parameter."""

from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import backends.torch as bt

from ..peers import seed_torch
from ..peers.timm_peers import build as build_timm
from ..peers.timm_peers import load_timm
from ..plan import Data, FormData, Peer
from ..timing import Candidate
from .base import BaseDriver, PeerUnavailable


class Driver(BaseDriver):
    name = "torch"

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
            def run() -> torch.Tensor:
                with torch.no_grad():
                    return x * s
            return Candidate("", "", run)
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

            def run() -> torch.Tensor:
                with torch.no_grad():
                    return fn(x)
            return Candidate("", "", run, output=self.output, compiles=mode == "compiled")
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

    def _peer(self, peer: Peer, fd: FormData, default: FormData, data: Data, mode: str, pass_: str) -> Candidate:
        c = data.shape[1]
        w = fd.weights
        with warnings.catch_warnings():  # nn.Linear(C, 0) of the seeds for C < 16: "zero-element tensors"
            warnings.simplefilter("ignore", UserWarning)
            if peer.key == "timm":
                timm, status = self.timm
                if timm is None:
                    raise PeerUnavailable(status)
                m = build_timm(timm, peer.module, fd.config, w)
            elif peer.module == "se":
                m = seed_torch.load_seed_se(seed_torch.SEModule(c), w)
            elif peer.module == "eca":
                m = seed_torch.load_seed_eca(seed_torch.eca_layer(c, k_size=default.config.k), w)
            elif peer.module == "ca":
                m = seed_torch.GatedBySeed(seed_torch.load_seed_channel(seed_torch.ChannelAttention(c), w))
            elif peer.module == "sa":
                m = seed_torch.GatedBySeed(
                    seed_torch.load_seed_spatial(seed_torch.SpatialAttention(default.config.kernel_size), w))
            elif peer.module == "cbam":
                m = seed_torch.load_seed_cbam(seed_torch.CBAM(c, 16, default.config.spatial_kernel_size), w)
            elif peer.module == "simam":
                m = seed_torch.SimAMTorch(c)
            else:
                raise KeyError(f"no torch peer {peer.key!r} for {peer.module!r}")
        return self._wrap(m, data, mode, pass_)

    def _subop(self, key: str, data: Data) -> Candidate:
        x, _, _ = self.inputs(data)
        n, _, h, w = x.shape
        m = torch.sigmoid(torch.from_numpy(data.g[:, :1].copy()))
        pooled = torch.from_numpy(data.g[:, :2].copy())
        kernel = torch.full((1, 2, 7, 7), 0.02)
        fns = {"mean_hw": lambda: x.mean((2, 3)), "max_hw": lambda: x.amax((2, 3)),
               "mean_c": lambda: x.mean(1, keepdim=True), "max_c": lambda: x.amax(1, keepdim=True),
               "conv_kxk": lambda: F.conv2d(pooled, kernel, padding=3), "mul_map": lambda: x * m,
               "mul_self": lambda: x * x, "sigmoid": lambda: torch.sigmoid(x)}
        fn = fns[key]

        def run() -> torch.Tensor:
            with torch.no_grad():
                return fn()
        return Candidate("", "", run)

    # ------------------------------------------------------------------------------------------- models
    def model(self, create: Callable[..., Any], name: str, x_np: np.ndarray, y_np: np.ndarray, mode: str,
              pass_: str) -> Candidate:
        from ..models import LR, MOMENTUM

        model = create(name)
        fn = torch.compile(model, dynamic=False) if mode == "compiled" else model
        x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
        if pass_ == "inference":
            model.eval()

            def infer() -> Any:
                with torch.no_grad():
                    return fn(x)
            return Candidate(name, "", infer, compiles=mode == "compiled")
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
