"""``python -m benchmarks``: time every module x backend x shape against ``x * s`` and its peers, write markdown.

Each backend runs in its own worker process (``benchmarks.worker``), one after the other, so that thread settings
take effect before the framework loads and no framework's thread pool competes with another's.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attn_core.frameworks import FRAMEWORK_INFO
from attn_core.frameworks import MODES as ALL_MODES
from conformance._quiet import quiet

from . import threads
from .models import DEFAULT_MODELS
from .plan import (
    BACKENDS,
    DEFAULT_SHAPES,
    LEGACY_MODES,
    MODES,
    MODULES,
    PASSES,
    QUICK_SHAPES,
    current_mode,
    fmt_shape,
    mode_label,
    parse_shape,
)
from .report import COMPARE_LIMIT, compare_runs, console_summary, render
from .timing import MAX_CALLS, MAX_RERUNS, MIN_SAMPLE, SPREAD_LIMIT

DEFAULT_OUT = Path(__file__).resolve().parent / "RESULTS.md"
SUMMARY_OUT = Path(__file__).resolve().parent / "SUMMARY.md"
#: what --summary stands for: docs/performance.md's module run less what the summary table does not show
SUMMARY_ARGS = ("--modules", "se,eca,cbam,simam", "--modes",
                "torch:eager,torch:compiled,paddle:eager,paddle:compiled,flax:compiled", "--threads", "2",
                "--repeats", "9", "--warmup", "1", "--call-timeout", "60", "--max-call", "5", "--no-breakdown",
                "--processes", "3")
_PASS_NAMES = {"forward": "forward", "fwd": "forward", "forward+backward": "forward+backward",
               "fwdbwd": "forward+backward", "backward": "forward+backward", "train": "forward+backward"}


class UsageError(ValueError):
    """A bad command-line value; the message says what is accepted."""


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def installed(backend: str) -> bool:
    return FRAMEWORK_INFO[backend].installed()


def _modes_help() -> str:
    """What each mode is in each backend, the default first: ``torch: eager (torch eager), compiled (...)``."""
    return "; ".join(f"{b}: " + ", ".join(f"{m} ({mode_label(b, m)})" for m in MODES[b]) for b in BACKENDS)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Time each attention module's forward and forward+backward against the framework's x * s "
                    "(the last operation of SE) and against peer implementations of the same math, interleaved, "
                    "per backend, shape and mode; write a markdown table. Not a test.")
    p.add_argument("--backends", type=_csv, default=None,
                   help=f"comma-separated, of {', '.join(BACKENDS)} (default: every installed one)")
    p.add_argument("--modules", type=_csv, default=list(MODULES),
                   help=f"comma-separated registry names, of {', '.join(MODULES)} (default: all), or none (with "
                        f"--models: the models alone)")
    p.add_argument("--shapes", type=_csv, default=None,
                   help="comma-separated N x C x H x W, e.g. 32x256x56x56,8x64x56x56 (the default)")
    p.add_argument("--modes", type=_csv, default=None,
                   help=f"comma-separated, of {', '.join(ALL_MODES)}, or backend:mode (e.g. torch:compiled); a bare "
                        f"name applies to every backend, the default mode first ({_modes_help()}). Default: all")
    p.add_argument("--passes", type=_csv, default=list(PASSES),
                   help="forward, forward+backward (aliases fwd, fwdbwd); default both")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds per group (default 15; --quick 3)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up calls per implementation (default 3; --quick 1)")
    p.add_argument("--threads", type=int, default=2, help="threads per framework (default 2)")
    p.add_argument("--no-pin", action="store_true",
                   help="do not restrict each worker's CPU affinity to --threads CPUs")
    p.add_argument("--quick", action="store_true",
                   help=f"small shapes ({', '.join(fmt_shape(s) for s in QUICK_SHAPES)}) and few repeats: a smoke "
                        f"test of the command, not a measurement")
    p.add_argument("--models", type=_csv, nargs="?", const=[], default=None,
                   help="also time whole models, inference and one training step (batch 8, 224x224 unless "
                        "--quick) for each backend with create_model; optionally a comma-separated list "
                        "(default resnet50,seresnet50,ecaresnet50,cbamresnet50)")
    p.add_argument("--no-breakdown", action="store_true",
                   help="do not time the sub-operations the modules are made of (pooling, the 7x7 convolution, "
                        "sigmoid, ...) beside x * s, once per backend and shape in its default mode")
    p.add_argument("--max-call", type=float, default=20.0,
                   help="seconds: an implementation whose warm call takes longer is timed with the calls it has "
                        "(default 20)")
    p.add_argument("--call-timeout", type=float, default=60.0,
                   help="seconds: a call running longer (3x for a first call that compiles) is stopped, its worker "
                        "restarted, and the implementation left out here and at larger shapes (default 60)")
    p.add_argument("--model-repeats", type=int, default=None,
                   help="timed rounds per model group (default: --repeats, at most 5)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"markdown file (default {DEFAULT_OUT.name} "
                                                                 f"next to this package)")
    p.add_argument("--json", type=Path, default=None, help="also write every record as JSON here")
    p.add_argument("--reruns", type=int, default=MAX_RERUNS,
                   help=f"times a group's rounds are timed again at most while its spread (the largest interquartile "
                        f"range / median of its rows) exceeds {100 * SPREAD_LIMIT:.0f}%%; a row still above is "
                        f"marked unreliable (default {MAX_RERUNS})")
    p.add_argument("--min-sample", type=float, default=None,
                   help=f"seconds: each timed sample is the mean of enough back-to-back calls to last this long (at "
                        f"most {MAX_CALLS} calls), so that a call of a fraction of a millisecond is not timed alone "
                        f"(default {MIN_SAMPLE:g}; --quick 0: one call per sample)")
    p.add_argument("--processes", type=int, default=1,
                   help="time every group in this many fresh worker processes per backend, one after another, and "
                        "keep each row of the process with the median ratio: a worker's speed differs from the "
                        "next one's by more than its rounds differ among themselves (default 1)")
    p.add_argument("--no-huge-pages", action="store_true",
                   help="leave glibc's malloc as the environment has it, rather than asking for transparent huge "
                        "pages in every worker (to see the page faults per call that this setting avoids)")
    p.add_argument("--summary", action="store_true",
                   help="the summary command: " + " ".join(SUMMARY_ARGS) + " (what the summary table shows; peers "
                        "only where it shows them, the default mode's forward; options given after it win)")
    p.add_argument("--compare", type=Path, nargs=2, default=None, metavar=("A.json", "B.json"),
                   help=f"time nothing: print every summary ratio of two runs' --json records and their relative "
                        f"difference; exit 1 if one differs by more than {100 * COMPARE_LIMIT:.0f}%% or is missing "
                        f"from one run")
    p.add_argument("--verbose", action="store_true",
                   help="let the frameworks print their own warnings and log lines (Paddle's ccache, glog and "
                        "OMP_NUM_THREADS messages, JAX's backend search), silenced by default")
    p.add_argument("--render-json", type=Path, default=None, metavar="JSON",
                   help="time nothing: write the markdown (--out) again from the --json file of an earlier run, "
                        "whose command, date and machine it keeps (after a change to the report's text)")
    return p


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    """Validate the arguments into a plan: backends, modules, shapes, modes per backend, passes, counts."""
    backends = args.backends if args.backends is not None else [b for b in BACKENDS if installed(b)]
    for b in backends:
        if b not in BACKENDS:
            raise UsageError(f"--backends: unknown backend {b!r}; known: {', '.join(BACKENDS)}")
    if args.modules == ["none"]:  # only the models (--models) and nothing per module
        args.modules = []
    for m in args.modules:
        if m not in MODULES:
            raise UsageError(f"--modules: unknown module {m!r}; known: {', '.join(MODULES)}")
    if args.shapes is not None:
        try:
            shapes = [parse_shape(s) for s in args.shapes]
        except ValueError as err:
            raise UsageError(f"--shapes: {err}") from None
    else:
        shapes = list(QUICK_SHAPES if args.quick else DEFAULT_SHAPES)
    modes: dict[str, list[str]] = {b: list(MODES[b]) for b in backends}
    if args.modes is not None:
        modes = {b: [] for b in backends}
        for item in args.modes:
            backend, _, mode = item.rpartition(":")
            _check_mode(item, backend, mode)
            for b in [backend] if backend else backends:  # a mode of a backend not selected is ignored
                if b in modes and mode not in modes[b]:
                    modes[b].append(mode)
    passes = []
    for p in args.passes:
        if p not in _PASS_NAMES:
            raise UsageError(f"--passes: unknown pass {p!r}; use forward and/or forward+backward")
        passes.append(_PASS_NAMES[p])
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 15)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    if repeats < 1 or warmup < 0 or args.threads < 1 or (args.model_repeats is not None and args.model_repeats < 1):
        raise UsageError("--repeats, --model-repeats and --threads must be at least 1, --warmup at least 0")
    min_sample = args.min_sample if args.min_sample is not None else (0.0 if args.quick else MIN_SAMPLE)
    if not min_sample >= 0:
        raise UsageError(f"--min-sample must be at least 0; got {args.min_sample}")
    if args.processes < 1:
        raise UsageError(f"--processes must be at least 1; got {args.processes}")
    if args.reruns < 0:
        raise UsageError(f"--reruns must be at least 0; got {args.reruns}")
    if not (args.max_call > 0 and args.call_timeout > 0):
        raise UsageError("--max-call and --call-timeout must be positive")
    if args.models is not None:
        from attn_core.models import MODEL_CONFIGS
        unknown = [m for m in args.models if m not in MODEL_CONFIGS]
        if unknown:
            raise UsageError(f"--models: unknown model(s) {', '.join(unknown)}; known: {', '.join(MODEL_CONFIGS)}")
        args.models = args.models or list(DEFAULT_MODELS)
    return {"backends": [b for b in backends if modes[b]], "modules": args.modules, "shapes": shapes,
            "modes": modes, "passes": list(dict.fromkeys(passes)), "repeats": repeats, "warmup": warmup,
            "threads": args.threads, "pin": not args.no_pin, "models": args.models, "quick": args.quick,
            "model_repeats": args.model_repeats, "max_call": args.max_call, "call_timeout": args.call_timeout,
            "breakdown": not args.no_breakdown and bool(args.modules), "reruns": args.reruns,
            "summary_only": args.summary, "verbose": args.verbose, "huge_pages": not args.no_huge_pages,
            "min_sample": min_sample, "processes": args.processes}


def _check_mode(item: str, backend: str, mode: str) -> None:
    """A UsageError unless ``item`` (``mode`` or ``backend:mode``) names a known backend and mode; an old mode name
    is told its new one."""
    if backend and backend not in BACKENDS:
        raise UsageError(f"--modes: unknown backend in {item!r}; known: {', '.join(BACKENDS)}")
    if mode in ALL_MODES:
        return
    if mode in LEGACY_MODES:
        owner, new = LEGACY_MODES[mode]
        raise UsageError(f"--modes: {item!r} is not a mode; use {(backend + ':' if backend else '') + new!r} "
                         f"({mode_label(backend or owner, new)})")
    raise UsageError(f"--modes: {item!r} is not a mode; modes: {', '.join(ALL_MODES)} ({_modes_help()})")


def _current_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Saved records with their modes in the one vocabulary (files written before it say 'jit', 'dygraph'...)."""
    return [dict(r, mode=current_mode(r["mode"])) for r in records]


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def _signal_name(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"


def _read_marker(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _larger_groups(group: str, shapes: Sequence[Sequence[int]]) -> list[str]:
    """The same module, mode and pass at every shape larger than the group's (``shape/module/mode/pass``)."""
    shape, _, rest = group.partition("/")
    if shape == "models" or not rest:
        return []
    size = int(np.prod([int(v) for v in shape.split("x")]))
    return [f"{fmt_shape(tuple(s))}/{rest}" for s in shapes if int(np.prod(s)) > size]


def run_backend(job: dict[str, Any], call_timeout: float = 60.0, max_restarts: int = 20
                ) -> tuple[dict[str, Any] | None, list[dict[str, Any]], list[dict[str, Any]], str]:
    """Run one backend's job in worker processes: ``(info, records, model_records, failure)``.

    Each finished group is journalled by the worker, and the worker marks every build and call it starts
    (:class:`benchmarks.worker.Marker`). Two things end a worker early:

    - it dies (a signal from native code, an uncaught error): a fresh worker goes on from the group it died in;
      if it dies again at the same implementation, that implementation is left out with the cause. (Once is not
      enough to blame it: after the seeds' zero-width Conv2D fails under ``to_static``, Paddle can die later, in
      another layer's program.)
    - one call runs longer than ``call_timeout`` seconds (3 times that for a first call that compiles): the
      worker is killed, and that implementation is left out of the group and of the same module, mode and pass at
      the larger shapes (the worker runs the smallest shape first). Paddle's ``amax`` backward over (H, W), for one,
      is quadratic in H * W.
    """
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, **threads.thread_env(job["threads"]))
    if job.get("huge_pages", True):  # every worker alike: each output's pages are otherwise faulted in afresh
        env.update(threads.malloc_env(os.environ))
    env["PYTHONPATH"] = os.pathsep.join([str(root)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    info: dict[str, Any] | None = None
    records: list[dict[str, Any]] = []
    model_records: list[dict[str, Any]] = []
    skip: list[str] = []
    exclude: dict[str, dict[str, str]] = {}
    deaths: dict[tuple[str, str], int] = {}
    restarts: list[str] = []
    backend = job["backend"]
    with tempfile.TemporaryDirectory(prefix="attn-bench-") as tmp:
        for attempt in range(max_restarts + 1):
            job_path, journal, marker = (Path(tmp) / f"{name}{attempt}" for name in ("job", "journal", "marker"))
            job_path.write_text(json.dumps(dict(job, skip=skip, exclude=exclude)))
            proc = subprocess.Popen([sys.executable, "-m", "benchmarks.worker", str(job_path), str(journal),
                                     str(marker)], env=env, cwd=root)
            hung: dict[str, Any] | None = None
            while True:
                try:
                    proc.wait(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    where = _read_marker(marker)
                    if not where or not where["label"] or where["phase"] == "done":
                        continue
                    limit = call_timeout * (3 if where["phase"] == "first" and where["compiles"] else 1)
                    if time.time() - where["t"] > limit:
                        hung = dict(where, limit=limit)
                        proc.kill()
                        proc.wait()
                        break
            done = False
            for line in journal.read_text().splitlines() if journal.exists() else []:
                entry = json.loads(line)
                if "info" in entry:
                    info = info or entry["info"]
                elif "group" in entry:
                    skip.append(entry["group"])
                    records += entry.get("records", [])
                    model_records += entry.get("model_records", [])
                done = done or entry.get("done", False)
            if info is not None:
                info["restarts"] = restarts
            if hung is not None:
                what = "its first call" if hung["phase"] == "first" else "a call" if hung["phase"] != "build" \
                    else "building it"
                reason = (f"not timed: {what} ran for more than {hung['limit']:g} s (--call-timeout), so it was "
                          f"stopped")
                print(f"== {backend}: {hung['group']}: {hung['label']!r}: {reason}", file=sys.stderr, flush=True)
                restarts.append(f"was stopped in {hung['group']}: {hung['label']!r} ran past {hung['limit']:g} s")
                for group in [hung["group"]] + _larger_groups(hung["group"], job["shapes"]):
                    exclude.setdefault(group, {})[hung["label"]] = reason if group == hung["group"] else (
                        f"not run: too slow at a smaller shape ({hung['group'].partition('/')[0]}: {what} ran for "
                        f"more than {hung['limit']:g} s)")
                continue
            if proc.returncode == 0 and done:
                return info, records, model_records, ""
            why = _signal_name(proc.returncode)
            where = _read_marker(marker)
            if where is None:
                return info, records, model_records, f"the {backend} worker died ({why}) before timing anything"
            if not where["label"]:
                return info, records, model_records, (f"the {backend} worker died ({why}) in {where['group']}, "
                                                      f"outside any implementation")
            spot = (where["group"], where["label"])
            deaths[spot] = deaths.get(spot, 0) + 1
            restarts.append(f"died ({why}) in {spot[0]} at {spot[1]!r}")
            if deaths[spot] == 1:  # maybe the state an earlier group left: try once more in a fresh process
                print(f"== {backend}: the worker died ({why}) in {spot[0]} running {spot[1]!r}; retrying that "
                      f"group in a fresh process", file=sys.stderr, flush=True)
                continue
            print(f"== {backend}: the worker died ({why}) again in {spot[0]} running {spot[1]!r}; leaving it out",
                  file=sys.stderr, flush=True)
            exclude.setdefault(spot[0], {})[spot[1]] = (
                f"killed the {backend} worker process ({why}) twice, when built or run in this group in a fresh "
                f"process; left out")
    return info, records, model_records, f"the {backend} worker died more than {max_restarts} times"


def median_process(runs: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One record per row from the records of several worker processes: the record of the process whose ratio is
    the median (the lower of the middle two for an even count; the baseline by its time), with every process's
    ratio in ``process_ratios``. Rows in the first process's order; a row missing from a process is judged on the
    processes that have it.

    The row is unreliable when more than half of those processes found it so (``unreliable_processes`` counts
    them), not when the median process alone did: a flag taken from one process appeared in one run and not the
    next, and moved the best mode and the fastest peer with it."""
    by_key: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for run in runs:
        for r in run:
            key = (r["backend"], r["shape"], r["module"], r["mode"], r["pass_"], r["label"])
            by_key.setdefault(key, []).append(r)
    out = []
    for rows in by_key.values():
        timed = [r for r in rows if r.get("ratio") is not None and r.get("median_ms") is not None]
        if not timed:
            out.append(dict(rows[0]))
            continue
        by = "median_ms" if rows[0]["kind"] == "baseline" else "ratio"
        ranked = sorted(timed, key=lambda r: r[by])
        chosen = dict(ranked[(len(ranked) - 1) // 2])
        chosen["process_ratios"] = [r["ratio"] for r in timed]
        shaky = sum(1 for r in timed if r.get("unreliable", False))
        chosen["unreliable_processes"] = shaky
        chosen["unreliable"] = 2 * shaky > len(timed)
        if len(timed) > 1 and shaky:
            kept = [t for t in str(chosen.get("note", "")).split("; ") if t and not t.startswith("unreliable")]
            chosen["note"] = "; ".join([f"unreliable in {shaky} of {len(timed)} processes", *kept])
        out.append(chosen)
    return out


def _compare(a: Path, b: Path) -> int:
    """``--compare A B``: 0 every summary ratio within :data:`COMPARE_LIMIT`, 1 not, 2 a file is unreadable."""
    runs = []
    for path in (a, b):
        try:
            runs.append(_current_records(json.loads(path.read_text())["records"]))
        except (OSError, ValueError, KeyError, TypeError) as err:
            print(f"python -m benchmarks: --compare: cannot read the records of {path}: {err}", file=sys.stderr)
            return 2
    lines, ok = compare_runs(runs[0], runs[1], names=(a.name, b.name))
    print("\n".join(lines))
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    if args.summary:  # the preset first, so that an option the user gives wins
        args = parser().parse_args([*SUMMARY_ARGS, *argv])
        if "--out" not in argv:
            args.out = SUMMARY_OUT
    quiet(args.verbose)  # before a framework is imported here or in a worker (which inherits the environment)
    if args.compare is not None:
        return _compare(*args.compare)
    if args.render_json is not None:
        saved = json.loads(args.render_json.read_text())
        args.out.write_text(render(_current_records(saved["records"]), saved["infos"], saved["header"],
                                   saved["failures"], _current_records(saved["model_records"])))
        print(f"wrote {args.out} from {args.render_json}")
        return 0
    try:
        plan = resolve(args)
    except UsageError as err:
        print(f"python -m benchmarks: {err}", file=sys.stderr)
        return 2
    if not plan["backends"]:
        print("python -m benchmarks: no backend to run (none installed, or none left by --modes)", file=sys.stderr)
        return 2
    started, load_start = time.time(), _load()
    model_records: list[dict[str, Any]] = []
    infos: list[dict[str, Any]] = []
    failures: dict[str, str] = {}
    runs: list[list[dict[str, Any]]] = []
    for process in range(plan["processes"]):
        records = []
        for backend in plan["backends"]:  # backends alternate, so that a slow spell of the machine spreads over them
            job = {"backend": backend, "threads": plan["threads"], "pin": plan["pin"],
                   "shapes": [list(s) for s in plan["shapes"]], "modules": plan["modules"],
                   "modes": plan["modes"][backend], "passes": plan["passes"], "repeats": plan["repeats"],
                   "warmup": plan["warmup"], "models": plan["models"] if process == 0 else None,
                   "quick": plan["quick"], "model_repeats": plan["model_repeats"], "max_call": plan["max_call"],
                   "breakdown": plan["breakdown"], "reruns": plan["reruns"], "summary_only": plan["summary_only"],
                   "verbose": plan["verbose"], "huge_pages": plan["huge_pages"], "min_sample": plan["min_sample"]}
            count = f" (worker process {process + 1} of {plan['processes']})" if plan["processes"] > 1 else ""
            print(f"== {backend}: {', '.join(plan['modes'][backend])}{count}", file=sys.stderr, flush=True)
            info, recs, model_recs, why = run_backend(job, plan["call_timeout"])
            if info is not None and process == 0:
                infos.append(info)
            if why:
                failures.setdefault(backend, why)
            records += recs
            model_records += model_recs
        runs.append(records)
    records = median_process(runs)
    order = {fmt_shape(tuple(s)): i for i, s in enumerate(plan["shapes"])}
    records.sort(key=lambda r: order.get(r["shape"], len(order)))  # stable: the user's order of shapes
    timm = next((i["versions"]["timm"] for i in infos if "timm" in i["versions"]), "not run (torch not benchmarked)")
    load_end = _load()
    cpus = len(threads.allowed_cpus())
    noisy = ""
    if load_start > 0.5 * cpus:  # the load at the end includes this run's own workers
        noisy = (f"The 1-minute load average was {load_start:.2f} at the start and {load_end:.2f} at the end on "
                 f"{cpus} CPU(s): other processes competed for the CPUs while this ran.")
    header = {"command": "python -m benchmarks" + ("" if not argv else " " + shlex.join(argv)),
              "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
              "minutes": (time.time() - started) / 60, "cpu": _cpu_name(), "cpus": cpus,
              "load_start": load_start, "load_end": load_end, "noisy": noisy, "python": platform.python_version(),
              "numpy": np.__version__, "threads": plan["threads"], "repeats": plan["repeats"],
              "warmup": plan["warmup"], "timm": timm, "max_call": plan["max_call"],
              "call_timeout": plan["call_timeout"], "spread_limit": SPREAD_LIMIT, "reruns": plan["reruns"],
              "huge_pages": plan["huge_pages"], "summary_only": plan["summary_only"], "min_sample": plan["min_sample"],
              "processes": plan["processes"]}
    text = render(records, infos, header, failures, model_records)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    if args.json is not None:
        args.json.write_text(json.dumps({"header": header, "infos": infos, "failures": failures,
                                         "records": records, "model_records": model_records}, indent=1))
    print(console_summary(records))
    print(f"wrote {args.out}")
    return 1 if failures and not records else 0
