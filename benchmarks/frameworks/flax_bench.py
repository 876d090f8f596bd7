"""Flax driver (NHWC): compiled, ``jax.jit`` (its users' default), and eager (op by op, for reference). The input
is the NCHW data transposed once; compared outputs are transposed back. Forward is ``module.apply(variables, x)``
(eval); forward+backward is ``jax.vjp`` with respect to the parameters and the input (train mode, BatchNorm
statistics as a mutable collection), every result waited for with ``jax.block_until_ready``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

import backends.flax as bf
from backends.flax._ops import spatial_conv

from ..peers import jax_numpy, published_jax
from ..plan import PUBLISHED_KEYS, Data, FormData, Peer, published_config
from ..timing import Candidate
from .base import BaseDriver


class Driver(BaseDriver):
    name = "flax"

    @property
    def model_modes(self) -> tuple[str, ...]:
        return ("compiled",)  # op-by-op ResNet-50 is minutes per step

    def versions(self) -> dict[str, str]:
        return {"jax": jax.__version__, "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else "",
                "flax": flax.__version__}

    def set_threads(self, n: int) -> str:
        return (f"XLA: the CPU affinity mask (its thread pool is sized from it); {jax.device_count()} CPU "
                f"device(s)")

    @staticmethod
    def _compile(fn: Callable[..., Any], mode: str) -> Callable[..., Any]:
        return jax.jit(fn) if mode == "compiled" else fn

    def _baseline(self, data: Data, pass_: str) -> Candidate:
        x, s, g = self.inputs(data)

        def mul(x: jax.Array, s: jax.Array) -> jax.Array:
            return x * s
        if pass_ == "forward":
            f = jax.jit(mul)
            return Candidate("", "", lambda: f(x, s).block_until_ready(), compiles=True)

        def fb(x: jax.Array, s: jax.Array, g: jax.Array) -> Any:
            return jax.vjp(mul, x, s)[1](g)
        f2 = jax.jit(fb)
        return Candidate("", "", lambda: jax.block_until_ready(f2(x, s, g)), compiles=True)

    def _functional(self, apply: Callable[[Any, jax.Array], jax.Array], params: Any, data: Data, mode: str,
                    pass_: str, apply_train: Callable[[Any, jax.Array], tuple[jax.Array, Any]] | None = None
                    ) -> Candidate:
        """Time ``apply(params, x)``; with ``apply_train`` (BatchNorm: returns the output and the new statistics)
        the backward goes through that instead."""
        x, _, g = self.inputs(data)
        if pass_ == "forward":
            f = self._compile(apply, mode)
            return Candidate("", "", lambda: f(params, x).block_until_ready(), output=self.output, compiles=True)

        def fb(p: Any, x: jax.Array, g: jax.Array) -> Any:
            if apply_train is None:
                _, vjp = jax.vjp(apply, p, x)
            else:
                _, vjp, _ = jax.vjp(apply_train, p, x, has_aux=True)
            return vjp(g)
        f2 = self._compile(fb, mode)
        return Candidate("", "", lambda: jax.block_until_ready(f2(params, x, g)), output=lambda r: self.output(r[1]),
                         compiles=True)  # eager too: XLA compiles each operation on its first call

    def _project(self, module: str, fd: FormData, data: Data, mode: str, pass_: str) -> Candidate:
        m = bf.ATTN_LAYERS[module].from_config(fd.config)
        variables = bf.load_weights(m, fd.weights)
        params = variables.get("params", {})
        rest = {k: v for k, v in variables.items() if k != "params"}

        def apply(p: Any, x: jax.Array) -> jax.Array:
            return m.apply({"params": p, **rest}, x)
        def apply_train(p: Any, x: jax.Array) -> tuple[jax.Array, Any]:  # a dropout (bat's) draws from one key
            return m.apply({"params": p, **rest}, x, train=True, mutable=["batch_stats"],
                           rngs={"dropout": jax.random.key(0)})
        return self._functional(apply, params, data, mode, pass_, apply_train if "batch_stats" in rest else None)

    def _peer(self, peer: Peer, fd: FormData, default: FormData, data: Data, mode: str, pass_: str) -> Candidate:
        if peer.key in PUBLISHED_KEYS:
            fn, params = published_jax.build(peer.key, published_config(fd), fd.weights)
            trains = peer.key in published_jax.TRAINS
        else:
            fn, params = jax_numpy.FUNCTIONS[peer.module], jax_numpy.PARAMS[peer.module](fd.weights)
            trains = peer.module in jax_numpy.TRAINS

        def apply_train(p: Any, x: jax.Array) -> tuple[jax.Array, None]:
            return fn(p, x, train=True), None
        return self._functional(fn, params, data, mode, pass_, apply_train if trains else None)

    def _subop(self, key: str, data: Data) -> Candidate:
        x, _, g = self.inputs(data)  # NHWC
        args = (x, jax.nn.sigmoid(g[..., :1]), g[..., :2], jnp.full((7, 7, 2, 1), 0.02, jnp.float32))
        fns = {"mean_hw": lambda x, m, p, k: jnp.mean(x, axis=(1, 2)),
               "max_hw": lambda x, m, p, k: jnp.max(x, axis=(1, 2)),
               "mean_c": lambda x, m, p, k: jnp.mean(x, axis=3, keepdims=True),
               "max_c": lambda x, m, p, k: jnp.max(x, axis=3, keepdims=True),
               "conv_kxk": lambda x, m, p, k: spatial_conv(p, k),  # what SpatialAttention runs
               "mul_map": lambda x, m, p, k: x * m, "mul_self": lambda x, m, p, k: x * x,
               "sigmoid": lambda x, m, p, k: jax.nn.sigmoid(x)}
        f = jax.jit(fns[key])  # every array an argument: nothing for XLA to fold at compile time
        return Candidate("", "", lambda: f(*args).block_until_ready(), compiles=True)

    # ------------------------------------------------------------------------------------------- models
    def model(self, create: Callable[..., Any], name: str, x_np: np.ndarray, y_np: np.ndarray, mode: str,
              pass_: str) -> Candidate:
        from ..models import LR, MOMENTUM

        model = create(name)
        x, y = jnp.asarray(np.ascontiguousarray(x_np.transpose(0, 2, 3, 1))), jnp.asarray(y_np)
        variables = jax.jit(model.init)(jax.random.key(0), x)
        params, stats = variables["params"], variables.get("batch_stats", {})
        if pass_ == "inference":
            infer = jax.jit(lambda v, x: model.apply(v, x))
            return Candidate(name, "", lambda: infer(variables, x).block_until_ready(), compiles=True)

        def loss_fn(p: Any, stats: Any) -> tuple[jax.Array, Any]:
            logits, updates = model.apply({"params": p, "batch_stats": stats}, x, train=True,
                                          mutable=["batch_stats"])
            logp = jax.nn.log_softmax(logits)
            return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1)), updates["batch_stats"]

        @jax.jit
        def step(p: Any, stats: Any, velocity: Any) -> tuple[Any, Any, Any, jax.Array]:
            (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, stats)
            velocity = jax.tree_util.tree_map(lambda v, g: MOMENTUM * v + g, velocity, grads)
            p = jax.tree_util.tree_map(lambda w, v: w - LR * v, p, velocity)
            return p, stats, velocity, loss

        state = [params, stats, jax.tree_util.tree_map(jnp.zeros_like, params)]

        def run() -> Any:
            state[0], state[1], state[2], loss = step(*state)
            return jax.block_until_ready(loss)
        return Candidate(name, "", run, compiles=True)

    def densenet_memory(self, model: str, efficient: bool, batch: int, size: int) -> dict[str, Any]:
        from ..densenet_memory import MIB, inputs, max_rss_mib

        net = bf.create_model(model, efficient=efficient)
        x_np, ct_np = inputs(batch, size, net.config.num_classes)
        x, ct = jnp.asarray(np.transpose(x_np, (0, 2, 3, 1))), jnp.asarray(ct_np)
        variables = net.init(jax.random.key(0), x[:2])

        def step(v: dict[str, Any], xb: jax.Array, cb: jax.Array) -> Any:
            rest = {k: a for k, a in v.items() if k != "params"}

            def loss(p: Any) -> tuple[jax.Array, Any]:
                y, updates = net.apply({**rest, "params": p}, xb, train=True, mutable=["batch_stats"])
                return (y * cb).sum(), updates

            return jax.grad(loss, has_aux=True)(v["params"])

        def residuals(params: Any, xb: jax.Array, cb: jax.Array) -> list[jax.Array]:
            """What JAX keeps from the forward for the backward pass (the leaves of the VJP closure), before XLA."""
            rest = {k: a for k, a in variables.items() if k != "params"}

            def fwd(p: Any) -> jax.Array:
                return (net.apply({**rest, "params": p}, xb, train=True, mutable=["batch_stats"])[0] * cb).sum()
            return jax.tree_util.tree_leaves(jax.vjp(fwd, params)[1])

        saved = jax.eval_shape(residuals, variables["params"], x, ct)
        saved_mib = sum(int(np.prod(a.shape)) * a.dtype.itemsize for a in saved) / MIB
        jax.block_until_ready(jax.jit(step)(variables, x[:2], ct[:2]))
        compiled = jax.jit(step).lower(variables, x, ct).compile()
        stats = compiled.memory_analysis()
        rss0 = max_rss_mib()
        jax.block_until_ready(compiled(variables, x, ct))
        rss = max_rss_mib() - rss0
        t = time.perf_counter()
        jax.block_until_ready(compiled(variables, x, ct))
        return {"peak_mib": stats.temp_size_in_bytes / MIB, "rss_mib": rss, "step_s": time.perf_counter() - t,
                "how": f"XLA temp buffers (memory_analysis; arguments {stats.argument_size_in_bytes / MIB:.1f} "
                       f"MiB, outputs {stats.output_size_in_bytes / MIB:.1f} MiB apart); before XLA, JAX keeps "
                       f"{saved_mib:.1f} MiB of residuals"}
