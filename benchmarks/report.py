"""The markdown report (and the console summary) of a benchmark run."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .plan import DEFAULT_MODE, MODEL_TARGETS, MODES, MODULE_SUBOPS, SUBOPS, TARGETS, mode_label
from .timing import MAX_CALLS, SPREAD_LIMIT

Record = Mapping[str, Any]
#: the notes of what was measured and tried where a target is missed (its section :data:`TRIED_SECTION`)
NOTES_PATH = Path(__file__).with_name("NOTES.md")
TRIED_SECTION = "What was tried where a target is missed"


def _esc(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _ms(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:.3f}" if abs(v) < 1 else f"{v:.2f}" if abs(v) < 100 else f"{v:.1f}"


def _ratio(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}×"


def _diff(r: Record) -> str:
    if r["diff"] is None:
        return "—" if r["kind"] != "peer" else "n/a"
    return f"{r['diff']:.1e} ({r['diff_what']})"


def _project_default(records: Iterable[Record]) -> dict[tuple[str, str, str, str, str], Record]:
    """(shape, module, backend, mode, pass) -> the record of the project's default form."""
    return {(r["shape"], r["module"], r["backend"], r["mode"], r["pass_"]): r
            for r in records if r["kind"] == "project" and r["form"] == "default"}


def is_unreliable(r: Record | None) -> bool:
    """The record's ratio stayed too spread to compare (``benchmarks.timing.unreliable``); records of runs before
    the re-run rule have no such flag and count as reliable."""
    return r is not None and bool(r.get("unreliable", False))


def targets_text() -> str:
    """The module targets (``benchmarks.plan.TARGETS``) in words, lowest first: ``se and eca ≤ 1.5×, ...``."""
    by: dict[float, list[str]] = {}
    for module, target in TARGETS.items():
        by.setdefault(target, []).append(module)
    return ", ".join(f"{' and '.join(modules)} ≤ {target:g}×" for target, modules in sorted(by.items()))


def summary_rows(records: Sequence[Record]) -> list[dict[str, Any]]:
    """One row per shape x module x backend: the numbers the performance targets are about.

    An unreliable record is never the fastest peer, and the best mode is the fastest reliable one; only where
    every mode is unreliable is the best mode an unreliable one, and ``best_unreliable`` says so. The
    forward+backward best mode is chosen the same way on its own ratios (``fb_mode``), so that two modes within
    noise of each other give the same figure whichever of them wins.
    """
    records = [r for r in records if r["module"] != "ops"]
    proj = _project_default(records)
    keys = list(dict.fromkeys((r["shape"], r["module"], r["backend"]) for r in records))
    rows = []
    for shape, module, backend in keys:
        fwd_recs = {m: proj[(shape, module, backend, m, "forward")] for m in MODES[backend]
                    if (shape, module, backend, m, "forward") in proj}
        fwd = {m: r["ratio"] for m, r in fwd_recs.items() if r["ratio"] is not None}
        sure = {m: v for m, v in fwd.items() if not is_unreliable(fwd_recs[m])}
        pool = sure or fwd
        best = min(pool, key=pool.__getitem__) if pool else None
        default_mode = DEFAULT_MODE[backend]
        fb_recs = {m: r for m in MODES[backend]
                   if (r := proj.get((shape, module, backend, m, "forward+backward"))) and r["ratio"] is not None}
        fb_pool = {m: r for m, r in fb_recs.items() if not is_unreliable(r)} or fb_recs
        fb_mode = min(fb_pool, key=lambda m: fb_pool[m]["ratio"]) if fb_pool else None
        fb = fb_pool[fb_mode] if fb_mode else None
        fb_ratio = fb["ratio"] if fb else None
        peers = [r for r in records if r["shape"] == shape and r["module"] == module and r["backend"] == backend
                 and r["kind"] == "peer" and r["mode"] == default_mode and r["pass_"] == "forward"
                 and r["ratio"] is not None]
        reliable_peers = [r for r in peers if not is_unreliable(r)]
        fastest = min(reliable_peers, key=lambda r: r["ratio"]) if reliable_peers else None
        rows.append({
            "shape": shape, "module": module, "backend": backend,
            "default_mode": default_mode, "default_ratio": fwd.get(default_mode),
            "default_unreliable": is_unreliable(fwd_recs.get(default_mode)),
            "best_mode": best, "best_ratio": fwd.get(best) if best else None,
            "best_unreliable": best is not None and not sure,
            "target": TARGETS.get(module),
            "fb_mode": fb_mode, "fb_ratio": fb_ratio, "fb_unreliable": is_unreliable(fb),
            "fb_over_fwd": (fb_ratio / fwd[best]) if (fb_ratio is not None and best) else None,
            "peer": fastest["label"] if fastest else None,
            "peer_ratio": fastest["ratio"] if fastest else None,
            "peers_unreliable": len(peers) - len(reliable_peers),
        })
    return rows


def verdicts(row: Mapping[str, Any]) -> dict[str, bool | str | None]:
    """A summary row's three marks: True (met), False (missed), ``'unreliable'`` (a ratio it rests on stayed too
    spread to say) or None (nothing to compare)."""
    target, best = row["target"], row["best_ratio"]
    met: bool | str | None = None if (target is None or best is None) else best <= target
    fb_ok: bool | str | None = None if row["fb_over_fwd"] is None else row["fb_over_fwd"] <= 2.0
    peer_ok: bool | str | None = (None if (row["peer_ratio"] is None or row["default_ratio"] is None)
                                  else row["default_ratio"] <= row["peer_ratio"])
    if met is not None and row["best_unreliable"]:
        met = "unreliable"
    if fb_ok is not None and (row["best_unreliable"] or row["fb_unreliable"]):
        fb_ok = "unreliable"
    if peer_ok is not None and row["default_unreliable"]:
        peer_ok = "unreliable"
    return {"target": met, "fb": fb_ok, "peer": peer_ok}


def _mark(ok: bool | str | None) -> str:
    if isinstance(ok, str):
        return f" {ok}"
    return "" if ok is None else (" ✓" if ok else " ✗")


def _shaky(text: str, flag: bool) -> str:
    return f"{text} (unreliable)" if flag else text


def _fb_text(row: Mapping[str, Any]) -> str:
    """The forward+backward ratio, with its mode where that is not the forward's best mode."""
    text = _ratio(row["fb_ratio"])
    if row["fb_mode"] is not None and row["fb_mode"] != row["best_mode"]:
        text += f" ({mode_label(row['backend'], row['fb_mode'])})"
    return text


def summary_markdown(records: Sequence[Record]) -> list[str]:
    """The summary table: per shape, module and backend, the ratios the performance targets are stated in."""
    lines = ["| shape | module | backend | forward ×, default path | fastest peer there, forward × | default ≤ peer "
             "| forward ×, best mode | target | within target | forward+backward ×, best mode | (f+b) / forward "
             "≤ 2 |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in summary_rows(records):
        b, target, best = row["backend"], row["target"], row["best_ratio"]
        v = verdicts(row)
        default_txt = _shaky(f"{_ratio(row['default_ratio'])} ({mode_label(b, row['default_mode'])})",
                             row["default_unreliable"])
        best_txt = "—" if row["best_mode"] is None else _shaky(f"{_ratio(best)} ({mode_label(b, row['best_mode'])})",
                                                               row["best_unreliable"])
        target_txt = "—" if target is None else f"≤ {target:g}×"
        fb_over = "—" if row["fb_over_fwd"] is None else f"{row['fb_over_fwd']:.2f}{_mark(v['fb'])}"
        peer_txt = "—" if row["peer"] is None else f"{_ratio(row['peer_ratio'])} {_esc(row['peer'])}"
        if row["peers_unreliable"]:
            peer_txt += f" ({row['peers_unreliable']} unreliable peer(s) not chosen)"
        lines.append(f"| {row['shape']} | {row['module']} | {b} | {default_txt} | {peer_txt} | {_mark(v['peer'])} | "
                     f"{best_txt} | {target_txt} | {_mark(v['target'])} | "
                     f"{_shaky(_fb_text(row), row['fb_unreliable'])} | {fb_over} |")
    return lines


def _model_parts(records: Sequence[Record]) -> dict[tuple[str, str, str, str], tuple[Record, float | None]]:
    """(backend, mode, pass, model) -> the model's parts row and the model's time over the first model's (ms)."""
    times = {(r["backend"], r["mode"], r["pass_"], r["label"]): r["median_ms"]
             for r in records if r["kind"] != "part"}
    firsts = {(r["backend"], r["mode"], r["pass_"]): r["median_ms"] for r in records if r["kind"] == "baseline"}
    out = {}
    for r in records:
        if r["kind"] != "part":
            continue
        key = (r["backend"], r["mode"], r["pass_"], r["label"])
        model, first = times.get(key), firsts.get(key[:3])
        out[key] = (r, None if model is None or first is None else model - first)
    return out


def _model_misses(records: Sequence[Record]) -> list[str]:
    """A paragraph naming the model rows over their target, each with what its attention modules alone cost."""
    misses = [r for r in records if r["label"] in MODEL_TARGETS and r["kind"] != "part" and r["ratio"] is not None
              and r["ratio"] > MODEL_TARGETS[r["label"]]]
    if not misses:
        return []
    parts = _model_parts(records)
    said = []
    for r in misses:
        spread = "" if r["spread"] is None else f", spread {100 * r['spread']:.0f}% of its median"
        text = f"{r['backend']} {r['pass_']} {r['label']} {_ratio(r['ratio'])}{spread}"
        part = parts.get((r["backend"], r["mode"], r["pass_"], r["label"]))
        if part is not None and part[0]["median_ms"] is not None and part[1] is not None:
            p, extra = part
            text += (f" ({_ms(extra)} ms over the plain model; its attention modules alone, at the shapes they see "
                     f"in it, {_ms(p['median_ms'])} ms, {_ratio(p['ratio'])} of the plain model's time)")
        else:
            text += " (its attention modules were not timed alone)"
        said.append(text)
    return ["", "Missed here: " + "; ".join(said) + ". The table above splits each model's extra time: what the "
            "attention modules cost on their own, and the rest, which comes from running them inside the network "
            "(a model row is the median of a few whole steps, and its spread is that of steps of hundreds of ms)."]


def details_markdown(records: Sequence[Record]) -> list[str]:
    """Every timed implementation, grouped by shape and backend."""
    lines: list[str] = []
    by: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in records:
        if r["module"] == "ops":
            continue
        by[(r["shape"], r["backend"])].append(r)
    for (shape, backend), recs in by.items():
        lines += ["", f"### {shape}, {backend}", "",
                  "| module | mode | pass | implementation | source | median ms | spread | × x·s | "
                  "max abs diff vs project | note | page faults / call |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in recs:
            spread = "—" if r["spread"] is None else f"{100 * r['spread']:.0f}%"
            if r.get("attempts", 1) > 1:
                spread += f" ({r['attempts']} attempts)"
            faults = "—" if r.get("faults") is None else f"{r['faults']:.0f}"
            name = _esc(r["label"])
            if r["kind"] == "project":
                name = f"**{name}**"
            source = {"baseline": "framework", "project": "this project"}.get(r["kind"], _esc(r["source"]))
            lines.append(f"| {r['module']} | {mode_label(backend, r['mode'])} | {r['pass_']} | {name} | {source} | "
                         f"{_ms(r['median_ms'])} | {spread} | {_ratio(r['ratio'])} | {_diff(r)} | "
                         f"{_esc(r['note'])} | {faults} |")
    return lines + _model_misses(records)


def render(records: Sequence[Record], infos: Sequence[Mapping[str, Any]], header: Mapping[str, Any],
           failures: Mapping[str, str], model_records: Sequence[Record] = ()) -> str:
    """The whole markdown file."""
    h = header
    out = ["# Benchmark results: attention modules against `x * s`", "",
           f"Produced by `{h['command']}` on {h['date']} (about {h['minutes']:.0f} min). This file is written by "
           f"that command; regenerate it rather than editing it. Not a test: nothing here passes or fails, and CI "
           f"times nothing.", ""]
    # judged on the load before the run: the load at the end includes the run's own worker threads
    if h.get("load_start") is not None and h["load_start"] > 0.5 * h.get("cpus", 1):
        out += [f"> **Noisy machine.** {h['noisy']} Treat every number below as provisional and regenerate on a "
                f"quiet machine before comparing against the targets.", ""]
    out += ["## Setup", "",
            f"- Machine: {h['cpu']}; {h['cpus']} CPU(s) usable; 1-minute load average {h['load_start']:.2f} at the "
            f"start, {h['load_end']:.2f} at the end (the run's own workers included).",
            f"- Python {h['python']}, NumPy {h['numpy']}; " + "; ".join(
                f"{k} {v}" for info in infos for k, v in info["versions"].items()) + ".",
            f"- Threads: {h['threads']} per backend, each backend in its own worker process started with "
            f"OMP_NUM_THREADS = MKL_NUM_THREADS = OPENBLAS_NUM_THREADS = {h['threads']} (how each framework is "
            f"held to it: `benchmarks/threads.py`)."]
    for info in infos:
        busy = "unknown" if info["busy_threads"] is None else str(info["busy_threads"])
        out.append(f"  - {info['backend']}: {info['threads_setter']}; {info['pin']}; busy threads seen while "
                   f"timing `x * s`: {busy}.")
        for event in info.get("restarts", []):
            out.append(f"  - {info['backend']}: the worker process {_esc(event)}; a fresh worker went on from that "
                       f"group.")
    for backend, why in failures.items():
        out.append(f"  - {backend}: **incomplete**: {_esc(why)}")
    out += [f"- Timing: for every module × backend × shape × mode × pass, a group of the baseline, the project's "
            f"module(s) and the peers, warmed up ({h['warmup']} call(s) each, compilation included there), then "
            f"{h['repeats']} rounds, each timing the baseline and then every implementation in turn. Median per "
            f"implementation; spread = interquartile range / median. A warm call over {h['max_call']:g} s ends an "
            f"implementation's timing with the calls it has; a call over {h['call_timeout']:g} s (3× for a "
            f"compiling first call) is stopped and the implementation left out there and at larger shapes."]
    if h.get("processes", 1) > 1:
        out.append(f"- Processes: every group was timed in {h['processes']} fresh worker processes per backend, one "
                   f"after another with the backends alternating; each row is that of the process with the median "
                   f"ratio (the baseline's: the median time), because one worker's speed differs from the next "
                   f"one's by more than its own rounds differ (the JSON keeps every process's ratio).")
    if h.get("min_sample"):
        out.append(f"- Samples: each of an implementation's samples is the mean of enough back-to-back calls to last "
                   f"{1000 * h['min_sample']:g} ms (one untimed call after the warm-up sets the count; at most "
                   f"{MAX_CALLS}), as `torch.utils.benchmark`'s `blocked_autorange` does: a single call of a "
                   f"fraction of a millisecond varies with the cache and thread state the previous implementation "
                   f"left.")
    if "reruns" in h:
        out.append(f"- Re-runs: a group whose spread (the largest interquartile range / median of its rows) exceeds "
                   f"{100 * h['spread_limit']:.0f}% has its rounds timed again, at most {h['reruns']} time(s), and "
                   f"keeps its least spread attempt; a row whose spread, or its baseline's, is still above is "
                   f"marked unreliable: never the fastest peer, never counted for or against a target.")
    if "huge_pages" in h:
        thp = "; ".join(f"{i['backend']}: GLIBC_TUNABLES={i.get('malloc') or '(unset)'}, kernel THP "
                        f"{i.get('thp', 'unknown')}" for i in infos)
        out.append(("- Memory: every worker starts with glibc's malloc asking for transparent huge pages "
                    "(`glibc.malloc.hugetlb=1`): each framework maps every large output afresh, and its first "
                    "touch costs one page fault per 4 KiB page otherwise. " if h["huge_pages"] else
                    "- Memory: glibc's malloc as the environment has it (`--no-huge-pages`). ")
                   + f"The details give the minor page faults per timed call ({thp}).")
    out += ["", "## How to read", "",
            "- **Baseline** `x * s`: x (N, C, H, W), s (N, C, 1, 1) (Flax: NHWC and (N, 1, 1, C)), the last "
            "operation of SE, as the framework runs it by default (torch eager, Paddle dygraph, jax.jit), in the "
            "same pass: forward alone, or forward and backward (gradients of x and s).",
            "- **×** is the implementation's median over the baseline's median in the same group.",
            "- **Forward**: eval mode, no autograd (`torch.no_grad`, `paddle.no_grad`, plain `apply`). "
            "**Forward+backward**: train mode, the gradient of a fixed random cotangent with respect to the input "
            "and every parameter.",
            "- **Modes** (`--modes eager,compiled`): torch eager and `torch.compile` (inductor, `dynamic=False`); "
            "Paddle dygraph and `paddle.jit.to_static(full_graph=True)`; Flax under `jax.jit` and op by op (eager, "
            "for reference). "
            "Peers run in the same mode as the project's module of their group.",
            "- **Peers** (bold rows are the project's): the seed articles' code (`benchmarks/peers/`), timm's "
            "modules, and transcriptions of the seeds into Paddle and jax.numpy. Each is compared with the "
            "project's module *of the same form* (e.g. the seeds' SE is `SEModule(C, rd_divisor=None, "
            "bias=False)`), both loaded with the same canonical weights: **max abs diff** of the output y "
            "(forward) or of the input gradient dx (forward+backward) on the same input.",
            "- **Summary**: the project's default form. *Default path*: the framework's ordinary mode, beside the "
            "fastest peer in that mode (✓ when the project is at least as fast); *best mode*: the fastest of its "
            f"modes, against the issue's targets ({targets_text()}); *(f+b) / forward*: "
            "the forward+backward ratio over the forward ratio in the best mode (✓ when ≤ 2). The marks are "
            "information, not a verdict.",
            f"- timm: {h['timm']}.",
            ""]
    if records:
        out += ["## Summary", ""] + summary_markdown(records) + targets_markdown(records)
    if any(r["module"] == "ops" for r in records):
        out += ["", "## Sub-operations", ""] + subops_markdown(records)
    if model_records:
        out += ["", "## Models", ""] + models_markdown(model_records)
    if records:
        out += ["", "## Details"] + details_markdown(records)
    out += [""]
    return "\n".join(out)


def models_markdown(records: Sequence[Record]) -> list[str]:
    """Whole-model rows: inference and one training step per model, ratio to the first model of the group."""
    first = next((r["label"] for r in records if r["kind"] == "baseline"), "the first model")
    lines = [f"Inference (eval, no autograd) and one training step (cross-entropy, backward, SGD with momentum), "
             f"each framework's own initial weights; × is the ratio to {first} in the same group.", "",
             f"| backend | mode | pass | input | model | median ms | spread | × {first} | target | note |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        if r["kind"] == "part":
            continue
        spread = "—" if r["spread"] is None else f"{100 * r['spread']:.0f}%"
        target = MODEL_TARGETS.get(r["label"])
        met = "" if target is None or r["ratio"] is None else f"≤ {target:g}×{_mark(r['ratio'] <= target)}"
        lines.append(f"| {r['backend']} | {mode_label(r['backend'], r['mode'])} | {r['pass_']} | {r['shape']} | "
                     f"{r['label']} | {_ms(r['median_ms'])} | {spread} | {_ratio(r['ratio'])} | {met} | "
                     f"{_esc(r['note'])} |")
    parts = _model_parts(records)
    if parts:
        lines += ["", f"The attention modules of each model alone, at the shapes they see inside it, in the same "
                  f"mode: inference times their forward, a training step their forward and backward (the gradients "
                  f"of each module's parameters and input); the sum of count × median, beside the model's time over "
                  f"{first}. × is that sum over {first}'s time.", "",
                  f"| backend | mode | pass | model | model − {first}, ms | its attention modules alone, ms | "
                  f"× {first} | modules: count × shape, median |",
                  "|---|---|---|---|---|---|---|---|"]
        for (backend, mode, pass_, label), (p, extra) in parts.items():
            lines.append(f"| {backend} | {mode_label(backend, mode)} | {pass_} | {label} | {_ms(extra)} | "
                         f"{_ms(p['median_ms'])} | {_ratio(p['ratio'])} | {_esc(p['note'])} |")
    return lines + _model_misses(records)


def console_summary(records: Sequence[Record]) -> str:
    """A plain-text version of the summary for the terminal."""
    lines = []
    for row in summary_rows(records):
        b = row["backend"]
        best = "—" if row["best_mode"] is None else _shaky(
            f"{_ratio(row['best_ratio'])} ({mode_label(b, row['best_mode'])})", row["best_unreliable"])
        peer = "" if row["peer"] is None else f"; fastest peer {_ratio(row['peer_ratio'])} {row['peer']}"
        lines.append(f"{row['shape']:>16} {row['module']:>5} {b:>6}: default "
                     f"{_shaky(_ratio(row['default_ratio']), row['default_unreliable'])}, best {best}, f+b "
                     f"{_shaky(_fb_text(row), row['fb_unreliable'])}{peer}")
    return "\n".join(lines)


#: two runs of the summary command agree when every summary ratio of one is within this of the other's
COMPARE_LIMIT = 0.10
#: the summary's ratio columns: row key -> what it is
SUMMARY_RATIOS: Mapping[str, str] = {"default_ratio": "forward, default path", "peer_ratio": "fastest peer, forward",
                                     "best_ratio": "forward, best mode", "fb_ratio": "forward+backward, best mode"}


def relative_difference(a: float, b: float) -> float:
    """``|a - b|`` over the smaller of the two: symmetric, and 0.1 means the larger is 10% above the smaller."""
    low = min(abs(a), abs(b))
    return 0.0 if a == b else (abs(a - b) / low if low > 0 else float("inf"))


def compare_runs(a: Sequence[Record], b: Sequence[Record], names: tuple[str, str] = ("A", "B"),
                 limit: float = COMPARE_LIMIT) -> tuple[list[str], bool]:
    """Every summary ratio of two runs side by side with their relative difference; ``(lines, agree)``, agree
    when each is within ``limit`` and none is in one run only. An unreliable ratio counts like any other (the
    lines say which), since the runs are to agree on every figure the summary shows."""
    rows_a = {(r["shape"], r["module"], r["backend"]): r for r in summary_rows(a)}
    rows_b = {(r["shape"], r["module"], r["backend"]): r for r in summary_rows(b)}
    flags = {"default_ratio": "default_unreliable", "best_ratio": "best_unreliable", "fb_ratio": "fb_unreliable"}
    lines = [f"{'shape':>14} {'module':>6} {'backend':>7}  {'summary ratio':<28} {names[0][:10]:>10} "
             f"{names[1][:10]:>10}  difference"]
    count, over, worst = 0, [], (0.0, "")
    for key in list(dict.fromkeys([*rows_a, *rows_b])):
        ra, rb = rows_a.get(key), rows_b.get(key)
        for column, what in SUMMARY_RATIOS.items():
            va = None if ra is None else ra[column]
            vb = None if rb is None else rb[column]
            if va is None and vb is None:
                continue
            count += 1
            where = f"{key[0]:>14} {key[1]:>6} {key[2]:>7}  {what:<28}"
            cells = " ".join(f"{'—' if v is None else f'{v:.3f}':>10}" for v in (va, vb))
            if va is None or vb is None:
                over.append(where)
                lines.append(f"{where} {cells}  missing from one run")
                continue
            d = relative_difference(va, vb)
            if d > worst[0]:
                worst = (d, where.strip())
            shaky = [n for n, r in zip(names, (ra, rb), strict=True) if column in flags and r[flags[column]]]
            note = "  over" if d > limit else ""
            note += f"  (unreliable in {', '.join(shaky)})" if shaky else ""
            if d > limit:
                over.append(where)
            lines.append(f"{where} {cells}  {100 * d:9.1f}%{note}")
    lines.append(f"{count} summary ratios; {len(over)} differ by more than {100 * limit:.0f}% or are missing from "
                 f"one run" + (f"; the largest difference: {100 * worst[0]:.1f}% ({worst[1]})" if worst[1] else ""))
    return lines, not over and count > 0


def _subop_ratios(records: Sequence[Record]) -> dict[tuple[str, str, str], float]:
    """(shape, backend, sub-operation key) -> its ratio to x * s."""
    return {(r["shape"], r["backend"], r["form"]): r["ratio"] for r in records
            if r["module"] == "ops" and r["kind"] == "subop" and r["ratio"] is not None}


def tried_entries(notes: str) -> dict[tuple[str, str], str]:
    """(module key, backend) -> the heading of the module's entry in the notes' section :data:`TRIED_SECTION`
    (``### Name (`key`)``), for each backend the entry has a line of its own for (``- **Paddle**: ...``)."""
    section = notes.partition(f"\n## {TRIED_SECTION}\n")[2].split("\n## ", 1)[0]
    out = {}
    for entry in re.split(r"^(?=### )", section, flags=re.MULTILINE):
        head = re.match(r"### (.*\(`([\w-]+)`\))[ \t]*$", entry, re.MULTILINE)
        if head:
            for backend in re.findall(r"^- \*\*(\w+)", entry, re.MULTILINE):
                out[(head.group(2), backend.lower())] = head.group(1)
    return out


def _notes_entries() -> dict[tuple[str, str], str]:
    return tried_entries(NOTES_PATH.read_text(encoding="utf-8")) if NOTES_PATH.is_file() else {}


def _with_entry(text: str, key: tuple[str, str], entries: Mapping[tuple[str, str], str]) -> str:
    """A line of the targets' section, with the heading of its module's entry in the notes where that entry has
    a line for the backend."""
    return text + (f" Measured and tried: benchmarks/{NOTES_PATH.name}, \"{entries[key]}\"." if key in entries
                   else "")


def targets_markdown(records: Sequence[Record], entries: Mapping[tuple[str, str], str] | None = None) -> list[str]:
    """Each target missed in the summary, with the measured parts of the module that hold it there and the heading
    of its module's entry in the notes (``entries``: :func:`tried_entries`; None: those of :data:`NOTES_PATH`)."""
    parts = _subop_ratios(records)
    entries = _notes_entries() if entries is None else entries
    misses, shaky = [], []
    for row in summary_rows(records):
        b, target, best = row["backend"], row["target"], row["best_ratio"]
        v = verdicts(row)
        why = []
        if v["target"] is False:
            why.append(f"forward {_ratio(best)} in its best mode ({mode_label(b, row['best_mode'])}), target "
                       f"≤ {target:g}×")
        if v["fb"] is False:
            why.append(f"forward+backward {_fb_text(row)}, {row['fb_over_fwd']:.2f} times its best forward "
                       f"ratio (target ≤ 2)")
        if v["peer"] is False:
            why.append(f"default path {_ratio(row['default_ratio'])}, slower than {_esc(row['peer'])} "
                       f"({_ratio(row['peer_ratio'])})")
        unsure = [name for name, key in (("target", "target"), ("(f+b) / forward", "fb"), ("default ≤ peer", "peer"))
                  if v[key] == "unreliable"]
        if unsure:
            line = (f"- **{row['shape']} {row['module']}, {b}**: {', '.join(unsure)}: unreliable (a ratio it rests "
                    f"on kept a spread above {100 * SPREAD_LIMIT:.0f}% after the re-runs), neither met nor missed.")
            shaky.append(_with_entry(line, (row["module"], b), entries))
        if not why:
            continue
        measured = [(SUBOPS[k], parts.get((row["shape"], b, k))) for k in MODULE_SUBOPS.get(row["module"], ())]
        known = [(label, v) for label, v in measured if v is not None]
        text = f"- **{row['shape']} {row['module']}, {b}**: " + "; ".join(why) + "."
        if known:
            text += (" Its operations alone, forward, " + mode_label(b, DEFAULT_MODE[b]) + ": " + ", ".join(
                f"{label} {_ratio(v)}" for label, v in known) + f"; with the final product, at least "
                f"{1 + sum(v for _, v in known):.2f}× op by op.")
        misses.append(_with_entry(text, (row["module"], b), entries))
    tail = ["", "Not judged in this run:", ""] + shaky if shaky else []
    if not misses:
        if not summary_rows(records):
            return []
        return ["", "Every target of the summary that could be judged is met in this run." if shaky
                else "Every target of the summary is met in this run."] + tail
    # what was tried against each miss is a log of measurements, so it lives in the notes, not in the code
    return (["", "## Targets not met, and what holds them", ""] + misses
            + ["", f"What was tried for each module and backend: benchmarks/{NOTES_PATH.name}, \"{TRIED_SECTION}\"."]
            + tail)


def subops_markdown(records: Sequence[Record]) -> list[str]:
    """The sub-operations table: per shape, each operation alone in each backend's default mode."""
    ops = [r for r in records if r["module"] == "ops"]
    backends = list(dict.fromkeys(r["backend"] for r in ops))
    by = {(r["shape"], r["backend"], r["form"] if r["kind"] == "subop" else ""): r for r in ops}
    lines = ["Each operation the modules are made of, alone, forward, in each framework's default mode (" + ", ".join(
        mode_label(b, DEFAULT_MODE[b]) for b in backends) + "), timed interleaved with that framework's `x * s` "
             "in one group: median ms and × x·s. Op by op, a module costs at least the sum of its operations' "
             "ratios plus 1 (its final product is the baseline itself); a compiler that fuses them can do better.",
             "", "| shape | operation | in | " + " | ".join(f"{b} ms | {b} ×" for b in backends) + " |",
             "|---|---|---|" + "---|---|" * len(backends)]
    for shape in dict.fromkeys(r["shape"] for r in ops):
        for key, label in [("", "x * s (baseline)")] + list(SUBOPS.items()):
            used = ", ".join(m for m, keys in MODULE_SUBOPS.items() if key in keys) or "SE, ECA, CA's product"
            cells = [used]
            for b in backends:
                r = by.get((shape, b, key))
                cells += ["—", "—"] if r is None else [_ms(r["median_ms"]), _ratio(r["ratio"])]
            lines.append(f"| {shape} | {label} | " + " | ".join(cells) + " |")
    return lines
