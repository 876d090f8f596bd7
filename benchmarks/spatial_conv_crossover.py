"""Where Flax's unrolled spatial convolution stops paying: ``spatial_conv`` (k * k * C shifted multiply-adds with a
custom VJP) against ``jax.lax.conv_general_dilated``, forward and forward + backward, compile time included.

Run: ``python -m benchmarks.spatial_conv_crossover [--kernels 3,5,7] [--repeats 7]``. Prints a markdown table (median
milliseconds of interleaved repeats; compile seconds of one compilation each) and the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from backends.flax._ops import _conv_lax, _unrolled_conv

SHAPES = {"8x56x56x2": (8, 56, 56, 2), "2x14x14x2": (2, 14, 14, 2)}


def _compile(fn: Callable, *args: jax.Array) -> tuple[Callable, float]:
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - start


def _programs(conv: Callable) -> dict[str, Callable]:
    def fwd(z: jax.Array, w: jax.Array) -> jax.Array:
        return conv(z, w)

    def fwd_bwd(z: jax.Array, w: jax.Array, g: jax.Array) -> tuple[jax.Array, ...]:
        y, vjp = jax.vjp(conv, z, w)
        return (y, *vjp(g))  # y returned too, or XLA drops the forward as dead code

    return {"fwd": fwd, "fwd+bwd": fwd_bwd}


def measure(shape: tuple[int, ...], k: int, repeats: int) -> dict[tuple[str, str], tuple[float, float]]:
    rng = np.random.default_rng(0)
    z = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    w = jnp.asarray(rng.standard_normal((k, k, shape[3], 1)) / k, jnp.float32)
    g = jnp.asarray(rng.standard_normal(shape[:3] + (1,)), jnp.float32)
    compiled: dict[tuple[str, str], tuple[Callable, tuple[jax.Array, ...], float]] = {}
    for impl, conv in (("unrolled", _unrolled_conv), ("lax", _conv_lax)):
        for mode, fn in _programs(conv).items():
            args = (z, w) if mode == "fwd" else (z, w, g)
            prog, seconds = _compile(fn, *args)
            jax.block_until_ready(prog(*args))
            compiled[(impl, mode)] = (prog, args, seconds)
    samples: dict[tuple[str, str], list[float]] = {key: [] for key in compiled}
    for _ in range(repeats):  # interleaved: every implementation sees the same machine state in each round
        for key, (prog, args, _) in compiled.items():
            start = time.perf_counter()
            jax.block_until_ready(prog(*args))
            samples[key].append(time.perf_counter() - start)
    return {key: (compiled[key][2], 1e3 * statistics.median(samples[key])) for key in compiled}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", default="3,5,7,9,11,15,21,31")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    kernels = [int(k) for k in args.kernels.split(",")]
    print(f"load average before: {os.getloadavg()}; jax {jax.__version__}; {os.cpu_count()} CPUs", flush=True)
    print("| shape (NHWC) | k | mode | unrolled compile s | lax compile s | unrolled ms | lax ms |")
    print("|---|---|---|---|---|---|---|")
    for name, shape in SHAPES.items():
        for k in kernels:
            res = measure(shape, k, args.repeats)
            for mode in ("fwd", "fwd+bwd"):
                (cu, tu), (cl, tl) = res[("unrolled", mode)], res[("lax", mode)]
                print(f"| {name} | {k} | {mode} | {cu:.2f} | {cl:.2f} | {tu:.3f} | {tl:.3f} |", flush=True)
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
