"""Peak memory of one SE-DenseNet training step, plain vs efficient (checkpointed bottlenecks), per backend.

    python -m benchmarks.densenet_memory [--model sedensenet_bc40_k12] [--batch 64] [--size 32]
                                         [--backends torch paddle flax] [--markdown PATH]

Each (backend, variant) runs in a fresh subprocess (``--worker``), so that no allocator cache or high-water mark of
one configuration shows in another. A worker builds the model, runs one small warm-up step (batch 2: lazy library
initialisation), then measures one forward + backward step of the full batch in training mode (each backend's
``densenet_memory`` in ``benchmarks.frameworks``):

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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attn_core.frameworks import FRAMEWORKS

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = FRAMEWORKS
#: the two SE-DenseNets compared: the plain one, and the one whose bottlenecks are checkpointed
VARIANTS = ("plain", "efficient")
MIB = 2.0 ** 20


def max_rss_mib() -> float:
    """The process's peak resident set so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def inputs(batch: int, size: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (rng.standard_normal((batch, 3, size, size)).astype(np.float32),
            rng.standard_normal((batch, num_classes)).astype(np.float32))


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
    parser.add_argument("--worker", nargs=2, metavar=("BACKEND", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        backend, variant = args.worker
        if backend not in BACKENDS or variant not in VARIANTS:
            parser.error(f"--worker takes one of {BACKENDS} and one of {VARIANTS}")
        from .frameworks import load_driver
        print(json.dumps(load_driver(backend).densenet_memory(args.model, variant == "efficient", args.batch,
                                                              args.size)))
        return 0
    rows = []
    for backend in args.backends:
        for mode in VARIANTS:
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
