"""One backend's benchmark, in its own process: ``python -m benchmarks.worker JOB.json RESULT.json``.

Started by ``python -m benchmarks`` with the thread variables in its environment; pins itself to the requested
number of CPUs before importing the framework (see :mod:`benchmarks.threads`), then times every module x shape x
mode x pass group of the job and writes one JSON record per implementation per group.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from . import threads
from .plan import (CLASS_NAMES, FORMS, MODES, Data, FormData, fmt_shape, form_data, forms_for, make_data,
                   peers_for)
from .timing import Candidate, measure


@dataclass
class Record:
    """One implementation in one timing group, as the report shows it."""

    backend: str
    shape: str
    module: str
    mode: str
    pass_: str
    label: str
    kind: str
    form: str
    source: str
    median_ms: float | None
    spread: float | None
    runs: int
    ratio: float | None
    diff: float | None
    diff_what: str
    note: str


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0


def _diff(c: Candidate, refs: dict[str, Candidate]) -> tuple[float | None, str]:
    """The peer's max abs difference from the project's module of the same form, or why there is none."""
    if c.kind != "peer":
        return None, ""
    ref = refs.get(c.form)
    if c.first is None:
        return None, ""
    if ref is None or ref.first is None:
        why = ref.error if ref is not None and ref.error else "the project's module did not run"
        if "hidden width is 0" in why:
            why += ("; the peer runs with the seeds' hidden width C // 16 = 0, so its channel gate is sigmoid(0) "
                    "= 0.5 for every channel")
        return None, why
    if ref.first.shape != c.first.shape:
        return None, f"shapes differ: project {ref.first.shape}, peer {c.first.shape}"
    return _max_abs(c.first, ref.first), ""


def _group(driver: Any, module: str, fds: dict[str, FormData], data: Data, mode: str, pass_: str,
           repeats: int, warmup: int) -> list[Candidate]:
    driver.begin_group(mode)
    cands = [driver.baseline(data, mode, pass_)]
    for key, fd in fds.items():
        label = f"{CLASS_NAMES[module]} {FORMS[module][key][0]}"
        cands.append(driver.project(module, fd, data, mode, pass_, label))
    for peer in peers_for(driver.name, module):
        cands.append(driver.peer(peer, fds[peer.form], fds["default"], data, mode, pass_))
    measure(cands, repeats, warmup)
    return cands


def _records(cands: list[Candidate], backend: str, shape: str, module: str, mode: str, pass_: str
             ) -> list[Record]:
    base = cands[0].median
    refs = {c.form: c for c in cands if c.kind == "project"}
    out = []
    for c in cands:
        med = c.median
        diff, why = _diff(c, refs)
        note = c.error
        if c.kind == "peer" and why and not note:
            note = f"no equality: {why}"
        ref = refs.get(c.form)
        if c.kind == "peer" and c.error and ref is not None and "hidden width is 0" in ref.error:
            note = f"the seeds' hidden width C // 16 is 0 here, which this peer cannot run: {c.error}"
        out.append(Record(backend, shape, module, mode, pass_, c.label, c.kind, c.form, c.source,
                          None if med is None else med * 1e3, c.spread, len(c.samples),
                          None if (med is None or not base) else med / base, diff,
                          "dx" if pass_ != "forward" else "y", note))
    for c in cands:
        c.first = None
    return out


#: the probe of :func:`_busy_threads`: large enough (4M elements) for every framework to parallelise if it does
PROBE_SHAPE = (4, 64, 128, 128)


def _busy_threads(driver: Any) -> int | None:
    """Busy threads while the baseline's forward runs for half a second on :data:`PROBE_SHAPE`."""
    c = driver.baseline(make_data(PROBE_SHAPE), driver.modes[0], "forward")
    if c.run is None:
        return None
    c.run()
    before = threads.thread_ticks()
    t_end = time.perf_counter() + 0.5
    while time.perf_counter() < t_end:
        c.run()
    return threads.busy_threads(before, threads.thread_ticks())


def run(job: dict[str, Any]) -> dict[str, Any]:
    backend = job["backend"]
    n = int(job["threads"])
    pin_note = threads.pin(n) if job.get("pin", True) else "not pinned (--no-pin)"
    from .frameworks import load_driver
    driver = load_driver(backend)
    info: dict[str, Any] = {"backend": backend, "pin": pin_note, "threads_setter": driver.set_threads(n),
                            "versions": driver.versions(), "cpus_usable": len(threads.allowed_cpus()),
                            "python": platform.python_version(), "busy_threads": None}
    records: list[Record] = []
    modes = [m for m in job["modes"] if m in MODES[backend]]
    info["busy_threads"] = _busy_threads(driver)
    for shape in job["shapes"]:
        data = make_data(tuple(shape))
        for module in job["modules"]:
            fds = {key: form_data(module, key, data.shape[1]) for key in forms_for(backend, module)}
            for mode in modes:
                for pass_ in job["passes"]:
                    t0 = time.perf_counter()
                    cands = _group(driver, module, fds, data, mode, pass_, job["repeats"], job["warmup"])
                    recs = _records(cands, backend, fmt_shape(data.shape), module, mode, pass_)
                    records.extend(recs)
                    _progress(recs, time.perf_counter() - t0)
        data.cache.clear()
    return {"info": info, "records": [asdict(r) for r in records]}


def _progress(recs: list[Record], seconds: float) -> None:
    r0 = recs[0]
    parts = []
    for r in recs[1:]:
        ratio = "error" if r.ratio is None else f"{r.ratio:.2f}x"
        parts.append(f"{r.label.split(' (')[0][:28]} {ratio}")
    base = "error" if r0.median_ms is None else f"{r0.median_ms:.2f} ms"
    print(f"[{r0.backend}] {r0.shape} {r0.module} {r0.mode} {r0.pass_}: x*s {base}; " + "; ".join(parts)
          + f"  ({seconds:.0f} s)", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m benchmarks.worker JOB.json RESULT.json", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        job = json.load(f)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    result = run(job)
    tmp = argv[1] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, argv[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
