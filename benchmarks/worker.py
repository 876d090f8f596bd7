"""One backend's benchmark, in its own process: ``python -m benchmarks.worker JOB.json JOURNAL.jsonl MARKER.json``.

Started by ``python -m benchmarks`` with the thread variables in its environment; pins itself to the requested
number of CPUs before importing the framework (see :mod:`benchmarks.threads`), then times every module x shape x
mode x pass group of the job, appending each finished group's records to the journal. Foreign code can kill the
process outright (after the seeds' zero-width ``Conv2D`` fails under ``to_static``, Paddle's next program can die of
SIGFPE): the marker file names the implementation that was being built or first run, and the parent starts a
fresh worker from that group, leaving out an implementation only if it kills a fresh worker too (see
:func:`benchmarks.cli.run_backend`).
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from conformance._quiet import drop_stderr_lines, quiet

from . import threads
from .frameworks.base import BASELINE_LABEL
from .plan import (
    CLASS_NAMES,
    DEFAULT_MODE,
    FORMS,
    MODES,
    Data,
    FormData,
    fmt_shape,
    form_data,
    forms_for,
    make_data,
    peers_for,
)
from .timing import SPREAD_LIMIT, Candidate, measure_group, ratio_spread, round_ratios, unreliable


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
    faults: float | None = None     # median minor page faults per timed call (the kernel handing out fresh pages)
    attempts: int = 1               # how many times the group's rounds were timed (timing.measure_group)
    unreliable: bool = False        # its ratio's spread over rounds stayed above timing.SPREAD_LIMIT


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


class Marker:
    """The file that tells the parent what this worker is doing: ``{group, label, phase, t, compiles}``, written
    (atomically) before each implementation is built (phase ``'build'``) and before each of its calls (``'first'``,
    ``'warmup'``, ``'round'``), outside the timed region; label ``''`` between implementations. The parent's
    watchdog reads it to blame a crash or stop a call that runs too long (:func:`benchmarks.cli.run_backend`)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.group = ""

    def __call__(self, label: str, phase: str = "build", compiles: bool = False) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"group": self.group, "label": label, "phase": phase, "t": time.time(),
                       "compiles": compiles}, f)
        os.replace(tmp, self.path)

    def call(self, c: Candidate, phase: str) -> None:
        self(c.label, phase, c.compiles)


def group_key(shape: str, module: str, mode: str, pass_: str) -> str:
    return f"{shape}/{module}/{mode}/{pass_}"


def _group(driver: Any, module: str, fds: dict[str, FormData], data: Data, mode: str, pass_: str,
           job: dict[str, Any], excluded: dict[str, str], mark: Marker) -> tuple[list[Candidate], int]:
    """Build and time one group: its candidates and how many attempts its rounds took. ``excluded``: label -> why
    it is not run (it killed or hung a worker before). With ``job['summary_only']``, the peers (and the forms
    only they need) are timed only where the summary shows them: the default mode, forward."""
    driver.begin_group(mode)
    with_peers = not job.get("summary_only") or (mode == DEFAULT_MODE[driver.name] and pass_ == "forward")
    builders: list[tuple[str, str, Callable[[], Candidate]]] = [
        (BASELINE_LABEL, "baseline", lambda: driver.baseline(data, mode, pass_))]
    for key, fd in fds.items():
        if key != "default" and not with_peers:
            continue
        label = f"{CLASS_NAMES[module]} {FORMS[module][key][0]}"
        builders.append((label, "project",
                         lambda fd=fd, label=label: driver.project(module, fd, data, mode, pass_, label)))
    for peer in peers_for(driver.name, module) if with_peers else ():
        builders.append((peer.label, "peer",
                         lambda peer=peer: driver.peer(peer, fds[peer.form], fds["default"], data, mode, pass_)))
    cands = []
    for label, kind, build in builders:
        if label in excluded:
            cands.append(Candidate(label, kind, None, error=excluded[label]))
            continue
        mark(label)
        cands.append(build())
    attempts = _measure(cands, job, mark)
    mark("", "done")  # past the implementations: a death from here on is no implementation's
    return cands, attempts


def _measure(cands: list[Candidate], job: dict[str, Any], mark: Marker) -> int:
    return measure_group(cands, job["repeats"], job["warmup"], job.get("max_call", math.inf), before_call=mark.call,
                         limit=job.get("spread_limit", SPREAD_LIMIT), reruns=job.get("reruns", 2),
                         min_sample=job.get("min_sample", 0.0))


def paired_ratio(samples: list[float], base: list[float]) -> float | None:
    """The median over rounds of a row's sample over the baseline's sample of the same round, when both finished
    every round (:func:`benchmarks.timing.round_ratios`); else the ratio of the medians. None without samples or
    with a zero baseline."""
    if not samples or not base:
        return None
    paired = round_ratios(samples, base)
    if paired is not None:
        return float(statistics.median(paired))
    median_base = statistics.median(base)
    return statistics.median(samples) / median_base if median_base > 0 else None


def _records(cands: list[Candidate], backend: str, shape: str, module: str, mode: str, pass_: str,
             attempts: int = 1, limit: float = SPREAD_LIMIT) -> list[Record]:
    base = cands[0].median
    refs = {c.form: c for c in cands if c.kind == "project"}
    out = []
    for c in cands:
        med = c.median
        diff, why = _diff(c, refs)
        note = "; ".join(t for t in (c.error, c.note) if t)
        if c.kind == "peer" and why and not note:
            note = f"no equality: {why}"
        ref = refs.get(c.form)
        if c.kind == "peer" and c.error and ref is not None and "hidden width is 0" in ref.error:
            note = f"the seeds' hidden width C // 16 is 0 here, which this peer cannot run: {c.error}"
        # the baseline's ratio is 1 by definition, so it is judged by its own spread
        own = c.spread if c is cands[0] else ratio_spread(c.samples, cands[0].samples)
        shaky = med is not None and unreliable(own, limit)
        if shaky:
            what = "its spread" if c is cands[0] else "the spread of its ratio to the baseline"
            note = "; ".join(t for t in (f"unreliable: {what} stayed above {100 * limit:.0f}% in "
                                         f"{attempts} attempt(s)", note) if t)
        out.append(Record(backend, shape, module, mode, pass_, c.label, c.kind, c.form, c.source,
                          None if med is None else med * 1e3, c.spread, len(c.samples),
                          None if (med is None or not base) else paired_ratio(c.samples, cands[0].samples), diff,
                          "dx" if pass_ != "forward" else "y", note, c.faults_per_call, attempts, shaky))
    for c in cands:
        c.first = None
    return out


def _subop_group(driver: Any, data: Data, job: dict[str, Any], excluded: dict[str, str],
                 mark: Marker) -> tuple[list[Candidate], int]:
    """The baseline and every sub-operation (:data:`benchmarks.plan.SUBOPS`), forward, in the default mode."""
    mode = DEFAULT_MODE[driver.name]
    driver.begin_group(mode)
    mark(BASELINE_LABEL)
    cands = [driver.baseline(data, mode, "forward")] + driver.subops(data)
    for c in cands:
        if c.label in excluded:
            c.run, c.error = None, excluded[c.label]
    attempts = _measure(cands, job, mark)
    mark("", "done")
    return cands, attempts


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


def run(job: dict[str, Any], journal: str, marker: str) -> None:
    """Run ``job``, appending one JSON line per finished group to ``journal`` (the first line: this process's
    info) and writing, before each implementation is built or first run, its group and label to ``marker``."""
    backend = job["backend"]
    n = int(job["threads"])
    pin_note = threads.pin(n) if job.get("pin", True) else "not pinned (--no-pin)"
    from .frameworks import load_driver
    with drop_stderr_lines(job.get("verbose", False)):  # Paddle prints its OMP_NUM_THREADS advice at import
        driver = load_driver(backend)
    info: dict[str, Any] = {"backend": backend, "pin": pin_note, "threads_setter": driver.set_threads(n),
                            "versions": driver.versions(), "cpus_usable": len(threads.allowed_cpus()),
                            "python": platform.python_version(), "busy_threads": _busy_threads(driver),
                            "malloc": os.environ.get("GLIBC_TUNABLES", ""), "thp": threads.thp_mode()}
    _append(journal, {"info": info})
    skip, exclude = set(job.get("skip", ())), job.get("exclude", {})
    modes = [m for m in job["modes"] if m in MODES[backend]]
    mark = Marker(marker)
    # smallest shape first: an implementation too slow there is not run at the larger ones (cli.run_backend)
    for shape in sorted(job["shapes"], key=lambda s: (int(np.prod(s)), s)):
        data = make_data(tuple(shape))
        shape_txt = fmt_shape(data.shape)
        key = group_key(shape_txt, "ops", DEFAULT_MODE[backend], "forward")
        if job.get("breakdown", True) and key not in skip:
            mark.group = key
            t0 = time.perf_counter()
            cands, attempts = _subop_group(driver, data, job, exclude.get(key, {}), mark)
            recs = _records(cands, backend, shape_txt, "ops", DEFAULT_MODE[backend], "forward", attempts,
                            job.get("spread_limit", SPREAD_LIMIT))
            _append(journal, {"group": key, "records": [asdict(r) for r in recs]})
            _progress(recs, time.perf_counter() - t0)
        for module in job["modules"]:
            fds = {key: form_data(module, key, data.shape[1]) for key in forms_for(backend, module)}
            for mode in modes:
                for pass_ in job["passes"]:
                    key = group_key(shape_txt, module, mode, pass_)
                    if key in skip:
                        continue
                    mark.group = key
                    t0 = time.perf_counter()
                    cands, attempts = _group(driver, module, fds, data, mode, pass_, job, exclude.get(key, {}),
                                             mark)
                    recs = _records(cands, backend, shape_txt, module, mode, pass_, attempts,
                                    job.get("spread_limit", SPREAD_LIMIT))
                    _append(journal, {"group": key, "records": [asdict(r) for r in recs]})
                    _progress(recs, time.perf_counter() - t0)
        data.cache.clear()
    if job.get("models") is not None:
        from .models import run_models

        def model_record(c: Candidate, base: float | None, shape: str, mode: str, pass_: str) -> Record:
            med = c.median
            return Record(backend, shape, "model", mode, pass_, c.label, c.kind, "", "", None if med is None
                          else med * 1e3, c.spread, len(c.samples), None if (med is None or not base)
                          else med / base, None, "", "; ".join(t for t in (c.error, c.note) if t))
        for key, recs in run_models(driver, dict(job, modes=modes), skip, mark, model_record):
            _append(journal, {"group": key, "model_records": [asdict(r) for r in recs]})
            if recs:
                print(f"[{backend}] models {recs[0].mode} {recs[0].pass_}: " + "; ".join(
                    f"{r.label} {'error' if r.median_ms is None else f'{r.median_ms:.0f} ms'}" for r in recs),
                    file=sys.stderr, flush=True)
    _append(journal, {"done": True})


def _append(path: str, obj: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(obj) + "\n")


def _progress(recs: list[Record], seconds: float) -> None:
    r0 = recs[0]
    parts = []
    for r in recs[1:]:
        ratio = "error" if r.ratio is None else f"{r.ratio:.2f}x" + ("?" if r.unreliable else "")
        parts.append(f"{r.label.split(' (')[0][:28]} {ratio}")
    base = "error" if r0.median_ms is None else f"{r0.median_ms:.2f} ms"
    print(f"[{r0.backend}] {r0.shape} {r0.module} {r0.mode} {r0.pass_}: x*s {base}; " + "; ".join(parts)
          + f"  ({seconds:.0f} s" + (f", {r0.attempts} attempts" if r0.attempts > 1 else "") + ")",
          file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3:
        print("usage: python -m benchmarks.worker JOB.json JOURNAL.jsonl MARKER.json", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        job = json.load(f)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    quiet(job.get("verbose", False))
    run(job, argv[1], argv[2])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
