"""Fixing the number of threads, per framework, and seeing how many actually worked.

What works (measured on Linux with torch 2.13 CPU, paddlepaddle 3.3 and jaxlib 0.10 by counting, per OS thread,
the CPU time spent during the timed calls, see :func:`busy_threads`):

- torch: ``torch.set_num_threads(n)`` (its intra-op pool); ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` in the
  environment before torch loads cover the OpenMP and MKL runtimes underneath.
- Paddle: ``paddle.base.core.set_num_threads(n)`` sets the math libraries' threads (BLAS, oneDNN). Paddle's CPU
  elementwise and reduction kernels run on the calling thread whatever is set (``OMP_NUM_THREADS=2`` or
  ``set_num_threads(2)`` still shows one busy thread on ``x * s`` or ``exp``), and importing paddle sets
  ``OMP_NUM_THREADS=1`` when it is unset.
- XLA (jax): ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1`` does NOT bound the
  threads of jaxlib 0.10's CPU client (two busy threads either way on a two-core machine); it sizes its pool from
  the CPUs the process may run on, so the CPU affinity mask is what works. The flags are therefore not set.

So each backend runs in a worker process started with ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` and
``OPENBLAS_NUM_THREADS`` = n, which pins itself (``os.sched_setaffinity``) to n of the CPUs it may use before
importing any framework, unless those are n or fewer already or ``--no-pin`` is given; then it calls the
framework's own setter. The report prints, per backend, the busy threads seen while timing ``x * s``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def thread_env(n: int) -> dict[str, str]:
    """The environment variables a worker starts with for ``n`` threads."""
    return {k: str(n) for k in THREAD_ENV}


def allowed_cpus() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def pin(n: int) -> str:
    """Restrict this process to ``n`` CPUs (the first n it may use); say what was done."""
    cpus = allowed_cpus()
    if len(cpus) <= n:
        return f"not pinned: the process may use {len(cpus)} CPU(s) ({_ranges(cpus)}), not more than {n}"
    if not hasattr(os, "sched_setaffinity"):
        return f"not pinned: no sched_setaffinity on this platform ({len(cpus)} CPUs usable)"
    os.sched_setaffinity(0, cpus[:n])
    return f"pinned to CPUs {_ranges(cpus[:n])} of {len(cpus)}"


def _ranges(cpus: list[int]) -> str:
    return ",".join(str(c) for c in cpus)


def thread_ticks() -> dict[str, int]:
    """CPU time (clock ticks, user + system) of each OS thread of this process; empty where /proc is missing."""
    out: dict[str, int] = {}
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        out[tid] = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return out


def busy_threads(before: Mapping[str, int], after: Mapping[str, int], share: float = 0.25) -> int | None:
    """How many threads spent at least ``share`` of the busiest thread's CPU time between the two snapshots."""
    deltas = [after[t] - before.get(t, 0) for t in after]
    top = max(deltas, default=0)
    if top <= 0:
        return None
    return sum(1 for d in deltas if d >= share * top)


#: glibc's tunable (2.35 and later) that makes malloc ask for transparent huge pages (``madvise``) on the memory it
#: maps: every framework here maps each large output afresh and unmaps it when freed, so without them each call
#: faults its whole output in one 4 KiB page at a time, at a cost that swings with the machine's load (the report
#: gives the faults per call).
HUGE_PAGES = "glibc.malloc.hugetlb=1"


def malloc_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``GLIBC_TUNABLES`` a worker starts with: the caller's, plus :data:`HUGE_PAGES` unless it sets that
    tunable itself."""
    current = environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" in current:
        return {}
    return {"GLIBC_TUNABLES": f"{current}:{HUGE_PAGES}" if current else HUGE_PAGES}


def thp_mode() -> str:
    """The kernel's transparent huge page mode (``always``, ``madvise`` or ``never``; the tunable needs one of the
    first two), or ``unknown``."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            text = f.read()
    except OSError:
        return "unknown"
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else "unknown"
