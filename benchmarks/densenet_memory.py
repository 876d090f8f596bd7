"""Peak memory of one SE-DenseNet training step, plain vs efficient (checkpointed bottlenecks), per backend.

    python -m benchmarks.densenet_memory [--model sedensenet_bc40_k12] [--batch 64] [--size 32]
                                         [--backends torch paddle flax] [--markdown PATH]

Each (backend, mode) runs in a fresh subprocess (``--worker``), so that no allocator cache or high-water mark of
one configuration shows in another. A worker builds the model, runs one small warm-up step (batch 2: lazy library
initialisation), then measures one forward + backward step of the full batch in training mode:

* torch: the peak of the CPU allocator's running total during the step (``torch.profiler`` with
  ``profile_memory=True``: the ``Total Allocated`` field of its ``[memory]`` events), above the total at its start;
* Paddle: the peak of Paddle's host allocator statistics (``core.host_memory_stat_peak_value('Allocated', 0)``,
  reset before the step), above the value at its start;
* Flax: XLA's compiled memory analysis of the jitted step (``temp_size_in_bytes``: the scratch buffers of the
  program, activations included; arguments and outputs are listed apart), and, for what ``nn.remat`` itself does,
  the bytes of the residuals JAX keeps between forward and backward (the leaves of ``jax.vjp``'s closure, from
  ``jax.eval_shape``: nothing is run), before XLA fuses, schedules and CSEs the program;
* all: the growth of the process's peak resident set (``resource.getrusage``'s ``ru_maxrss``) over the step, a
  coarse cross-check that includes allocator slack and library workspaces.

The step time (a second, unprofiled step) is printed beside, for the cost of the recomputation. This script
measures and prints; it asserts nothing and no test runs it. Not part of the library.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("torch", "paddle", "flax")
MODES = ("plain", "efficient")
_MIB = 2.0 ** 20


def _max_rss_mib() -> float:
    """The process's peak resident set so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _inputs(batch: int, size: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (rng.standard_normal((batch, 3, size, size)).astype(np.float32),
            rng.standard_normal((batch, num_classes)).astype(np.float32))


def _torch_worker(model: str, efficient: bool, batch: int, size: int) -> dict[str, Any]:
    import torch

    import backends.torch as bt

    net = bt.create_model(model, efficient=efficient).train()
    x_np, ct_np = _inputs(batch, size, net.config.num_classes)
    x, ct = torch.from_numpy(x_np), torch.from_numpy(ct_np)

    def step(xb: torch.Tensor, cb: torch.Tensor) -> None:
        net.zero_grad(set_to_none=True)
        (net(xb) * cb).sum().backward()

    step(x[:2], ct[:2])
    rss0 = _max_rss_mib()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        step(x, ct)
    rss = _max_rss_mib() - rss0
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
    return {"peak_mib": peak / _MIB, "rss_mib": rss, "step_s": time.perf_counter() - t,
            "how": "allocator peak (torch.profiler)"}


def _paddle_worker(model: str, efficient: bool, batch: int, size: int) -> dict[str, Any]:
    import paddle
    from paddle.base import core

    import backends.paddle as bp

    net = bp.create_model(model, efficient=efficient)
    net.train()
    x_np, ct_np = _inputs(batch, size, net.config.num_classes)
    x, ct = paddle.to_tensor(x_np), paddle.to_tensor(ct_np)

    def step(xb: paddle.Tensor, cb: paddle.Tensor) -> None:
        net.clear_gradients(set_to_zero=False)
        (net(xb) * cb).sum().backward()

    step(x[:2], ct[:2])
    rss0 = _max_rss_mib()
    core.host_memory_stat_reset_peak_value("Allocated", 0)
    start = core.host_memory_stat_current_value("Allocated", 0)
    step(x, ct)
    peak = core.host_memory_stat_peak_value("Allocated", 0) - start
    rss = _max_rss_mib() - rss0
    t = time.perf_counter()
    step(x, ct)
    return {"peak_mib": peak / _MIB, "rss_mib": rss, "step_s": time.perf_counter() - t,
            "how": "host allocator peak (core.host_memory_stat)"}


def _flax_worker(model: str, efficient: bool, batch: int, size: int) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp

    import backends.flax as bf

    net = bf.create_model(model, efficient=efficient)
    x_np, ct_np = _inputs(batch, size, net.config.num_classes)
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
        fwd = lambda p: (net.apply({**rest, "params": p}, xb, train=True, mutable=["batch_stats"])[0] * cb).sum()  # noqa: E731
        return jax.tree_util.tree_leaves(jax.vjp(fwd, params)[1])

    saved = jax.eval_shape(residuals, variables["params"], x, ct)
    saved_mib = sum(int(np.prod(a.shape)) * a.dtype.itemsize for a in saved) / _MIB
    jax.block_until_ready(jax.jit(step)(variables, x[:2], ct[:2]))
    compiled = jax.jit(step).lower(variables, x, ct).compile()
    stats = compiled.memory_analysis()
    rss0 = _max_rss_mib()
    jax.block_until_ready(compiled(variables, x, ct))
    rss = _max_rss_mib() - rss0
    t = time.perf_counter()
    jax.block_until_ready(compiled(variables, x, ct))
    return {"peak_mib": stats.temp_size_in_bytes / _MIB, "rss_mib": rss, "step_s": time.perf_counter() - t,
            "how": f"XLA temp buffers (memory_analysis; arguments {stats.argument_size_in_bytes / _MIB:.1f} MiB, "
                   f"outputs {stats.output_size_in_bytes / _MIB:.1f} MiB apart); before XLA, JAX keeps "
                   f"{saved_mib:.1f} MiB of residuals"}


_WORKERS = {"torch": _torch_worker, "paddle": _paddle_worker, "flax": _flax_worker}


def _run(backend: str, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """One configuration in a fresh interpreter; its JSON line, or the error it reported."""
    cmd = [sys.executable, "-m", "benchmarks.densenet_memory", "--worker", backend, mode, "--model", args.model,
           "--batch", str(args.batch), "--size", str(args.size)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if args.threads:
        env.update({k: str(args.threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"backend": backend, "mode": mode, "error": f"exit {proc.returncode}: {' | '.join(tail)}"}
    return {"backend": backend, "mode": mode, **json.loads(lines[-1])}


def _table(rows: Sequence[dict[str, Any]]) -> str:
    plain = {r["backend"]: r for r in rows if r["mode"] == "plain" and "error" not in r}
    out = ["| backend | mode | step peak (MiB) | vs plain | peak RSS growth (MiB) | step time (s) | measured as |",
           "|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['backend']} | {r['mode']} | - | - | - | - | failed: {r['error']} |")
            continue
        base = plain.get(r["backend"])
        ratio = f"{r['peak_mib'] / base['peak_mib']:.2f}x" if base and base["peak_mib"] > 0 else "-"
        out.append(f"| {r['backend']} | {r['mode']} | {r['peak_mib']:.1f} | {ratio} | {r['rss_mib']:.1f} | "
                   f"{r['step_s']:.2f} | {r['how']} |")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.densenet_memory", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="sedensenet_bc40_k12", help="a registered SE-DenseNet name")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32, help="input height and width")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--threads", type=int, default=0, help="OMP/MKL threads of the workers (0: leave as is)")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument("--worker", nargs=2, metavar=("BACKEND", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        backend, mode = args.worker
        if backend not in BACKENDS or mode not in MODES:
            parser.error(f"--worker takes one of {BACKENDS} and one of {MODES}")
        print(json.dumps(_WORKERS[backend](args.model, mode == "efficient", args.batch, args.size)))
        return 0
    rows = []
    for backend in args.backends:
        for mode in MODES:
            rows.append(_run(backend, mode, args))
            print(f"{backend} {mode}: done", file=sys.stderr, flush=True)
    table = _table(rows)
    head = (f"{args.model}, one training step (forward + backward, float32) on a batch of {args.batch} x 3 x "
            f"{args.size} x {args.size}, CPU")
    print(head)
    print(table)
    if args.markdown:
        args.markdown.write_text(f"{head}\n\n{table}\n", encoding="utf-8")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
