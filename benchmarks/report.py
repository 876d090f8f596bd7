"""The markdown report (and the console summary) of a benchmark run."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable, Mapping, Sequence

from .plan import DEFAULT_MODE, MODES, TARGETS

Record = Mapping[str, Any]


def _esc(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _ms(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.1f}"


def _ratio(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}×"


def _diff(r: Record) -> str:
    if r["diff"] is None:
        return "—" if r["kind"] != "peer" else "n/a"
    return f"{r['diff']:.1e} ({r['diff_what']})"


def mode_label(backend: str, mode: str) -> str:
    return MODES[backend][mode]


def _project_default(records: Iterable[Record]) -> dict[tuple[str, str, str, str, str], Record]:
    """(shape, module, backend, mode, pass) -> the record of the project's default form."""
    return {(r["shape"], r["module"], r["backend"], r["mode"], r["pass_"]): r
            for r in records if r["kind"] == "project" and r["form"] == "default"}


def summary_rows(records: Sequence[Record]) -> list[dict[str, Any]]:
    """One row per shape x module x backend: the numbers the performance targets are about."""
    proj = _project_default(records)
    keys = list(dict.fromkeys((r["shape"], r["module"], r["backend"]) for r in records))
    rows = []
    for shape, module, backend in keys:
        modes = [m for m in MODES[backend] if (shape, module, backend, m, "forward") in proj]
        fwd = {m: proj[(shape, module, backend, m, "forward")]["ratio"] for m in modes}
        fwd = {m: v for m, v in fwd.items() if v is not None}
        best = min(fwd, key=fwd.__getitem__) if fwd else None
        default_mode = DEFAULT_MODE[backend]
        fb = proj.get((shape, module, backend, best, "forward+backward")) if best else None
        fb_ratio = fb["ratio"] if fb else None
        peers = [r for r in records if r["shape"] == shape and r["module"] == module and r["backend"] == backend
                 and r["kind"] == "peer" and r["mode"] == default_mode and r["pass_"] == "forward"
                 and r["ratio"] is not None]
        fastest = min(peers, key=lambda r: r["ratio"]) if peers else None
        rows.append({
            "shape": shape, "module": module, "backend": backend,
            "default_mode": default_mode, "default_ratio": fwd.get(default_mode),
            "best_mode": best, "best_ratio": fwd.get(best) if best else None,
            "target": TARGETS.get(module),
            "fb_ratio": fb_ratio,
            "fb_over_fwd": (fb_ratio / fwd[best]) if (fb_ratio is not None and best) else None,
            "peer": fastest["label"] if fastest else None,
            "peer_ratio": fastest["ratio"] if fastest else None,
        })
    return rows


def _mark(ok: bool | None) -> str:
    return "" if ok is None else (" ✓" if ok else " ✗")


def summary_markdown(records: Sequence[Record]) -> list[str]:
    """The summary table: per shape, module and backend, the ratios the performance targets are stated in."""
    lines = ["| shape | module | backend | forward ×, default path | fastest peer there, forward × | default ≤ peer "
             "| forward ×, best mode | target | within target | forward+backward ×, best mode | (f+b) / forward "
             "≤ 2 |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in summary_rows(records):
        b, target, best = row["backend"], row["target"], row["best_ratio"]
        met = None if (target is None or best is None) else best <= target
        fb_ok = None if row["fb_over_fwd"] is None else row["fb_over_fwd"] <= 2.0
        peer_ok = (None if (row["peer_ratio"] is None or row["default_ratio"] is None)
                   else row["default_ratio"] <= row["peer_ratio"])
        default_txt = f"{_ratio(row['default_ratio'])} ({mode_label(b, row['default_mode'])})"
        best_txt = "—" if row["best_mode"] is None else f"{_ratio(best)} ({mode_label(b, row['best_mode'])})"
        target_txt = "—" if target is None else f"≤ {target:g}×"
        fb_over = "—" if row["fb_over_fwd"] is None else f"{row['fb_over_fwd']:.2f}{_mark(fb_ok)}"
        peer_txt = "—" if row["peer"] is None else f"{_ratio(row['peer_ratio'])} {_esc(row['peer'])}"
        lines.append(f"| {row['shape']} | {row['module']} | {b} | {default_txt} | {peer_txt} | {_mark(peer_ok)} | "
                     f"{best_txt} | {target_txt} | {_mark(met)} | {_ratio(row['fb_ratio'])} | {fb_over} |")
    return lines


def details_markdown(records: Sequence[Record]) -> list[str]:
    """Every timed implementation, grouped by shape and backend."""
    lines: list[str] = []
    by: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in records:
        by[(r["shape"], r["backend"])].append(r)
    for (shape, backend), recs in by.items():
        lines += ["", f"### {shape}, {backend}", "",
                  "| module | mode | pass | implementation | source | median ms | spread | × x·s | "
                  "max abs diff vs project | note |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in recs:
            spread = "—" if r["spread"] is None else f"{100 * r['spread']:.0f}%"
            name = _esc(r["label"])
            if r["kind"] == "project":
                name = f"**{name}**"
            source = {"baseline": "framework", "project": "this project"}.get(r["kind"], _esc(r["source"]))
            lines.append(f"| {r['module']} | {mode_label(backend, r['mode'])} | {r['pass_']} | {name} | {source} | "
                         f"{_ms(r['median_ms'])} | {spread} | {_ratio(r['ratio'])} | {_diff(r)} | "
                         f"{_esc(r['note'])} |")
    return lines


def render(records: Sequence[Record], infos: Sequence[Mapping[str, Any]], header: Mapping[str, Any],
           failures: Mapping[str, str], model_records: Sequence[Record] = ()) -> str:
    """The whole markdown file."""
    h = header
    out = ["# Benchmark results: attention modules against `x * s`", "",
           f"Produced by `{h['command']}` on {h['date']} (about {h['minutes']:.0f} min). This file is written by "
           f"that command; regenerate it rather than editing it. Not a test: nothing here passes or fails, and CI "
           f"times nothing.", ""]
    if h.get("noisy"):
        out += [f"> **Noisy machine.** {h['noisy']} Treat every number below as provisional and regenerate on a "
                f"quiet machine before comparing against the targets.", ""]
    out += ["## Setup", "",
            f"- Machine: {h['cpu']}; {h['cpus']} CPU(s) usable; 1-minute load average {h['load_start']:.2f} at the "
            f"start, {h['load_end']:.2f} at the end.",
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
            f"compiling first call) is stopped and the implementation left out there and at larger shapes.",
            "", "## How to read", "",
            "- **Baseline** `x * s`: x (N, C, H, W), s (N, C, 1, 1) (Flax: NHWC and (N, 1, 1, C)), the last "
            "operation of SE, as the framework runs it by default (torch eager, Paddle dygraph, jax.jit), in the "
            "same pass: forward alone, or forward and backward (gradients of x and s).",
            "- **×** is the implementation's median over the baseline's median in the same group.",
            "- **Forward**: eval mode, no autograd (`torch.no_grad`, `paddle.no_grad`, plain `apply`). "
            "**Forward+backward**: train mode, the gradient of a fixed random cotangent with respect to the input "
            "and every parameter.",
            "- **Modes**: torch eager and `torch.compile` (inductor, `dynamic=False`); Paddle dygraph and "
            "`paddle.jit.to_static(full_graph=True)`; Flax under `jax.jit` and op by op (eager, for reference). "
            "Peers run in the same mode as the project's module of their group.",
            "- **Peers** (bold rows are the project's): the seed articles' code (`benchmarks/peers/`), timm's "
            "modules, and transcriptions of the seeds into Paddle and jax.numpy. Each is compared with the "
            "project's module *of the same form* (e.g. the seeds' SE is `SEModule(C, rd_divisor=None, "
            "bias=False)`), both loaded with the same canonical weights: **max abs diff** of the output y "
            "(forward) or of the input gradient dx (forward+backward) on the same input.",
            "- **Summary**: the project's default form. *Default path*: the framework's ordinary mode, beside the "
            "fastest peer in that mode (✓ when the project is at least as fast); *best mode*: the fastest of its "
            "modes, against the issue's targets (SE and ECA ≤ 1.5×, SimAM ≤ 2×, CBAM ≤ 3×); *(f+b) / forward*: "
            "the forward+backward ratio over the forward ratio in the best mode (✓ when ≤ 2). The marks are "
            "information, not a verdict.",
            f"- timm: {h['timm']}.",
            "", "## Summary", ""]
    out += summary_markdown(records)
    if model_records:
        out += ["", "## Models", ""] + models_markdown(model_records)
    out += ["", "## Details"] + details_markdown(records) + [""]
    return "\n".join(out)


def models_markdown(records: Sequence[Record]) -> list[str]:
    """Whole-model rows: inference and one training step per model, ratio to the first model of the group."""
    first = next((r["label"] for r in records if r["kind"] == "baseline"), "the first model")
    lines = [f"Inference (eval, no autograd) and one training step (cross-entropy, backward, SGD with momentum), "
             f"each framework's own initial weights; × is the ratio to {first} in the same group.", "",
             f"| backend | mode | pass | input | model | median ms | spread | × {first} | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        spread = "—" if r["spread"] is None else f"{100 * r['spread']:.0f}%"
        lines.append(f"| {r['backend']} | {mode_label(r['backend'], r['mode'])} | {r['pass_']} | {r['shape']} | "
                     f"{r['label']} | {_ms(r['median_ms'])} | {spread} | {_ratio(r['ratio'])} | {_esc(r['note'])} |")
    return lines


def console_summary(records: Sequence[Record]) -> str:
    """A plain-text version of the summary for the terminal."""
    lines = []
    for row in summary_rows(records):
        b = row["backend"]
        best = "—" if row["best_mode"] is None else f"{_ratio(row['best_ratio'])} ({mode_label(b, row['best_mode'])})"
        peer = "" if row["peer"] is None else f"; fastest peer {_ratio(row['peer_ratio'])} {row['peer']}"
        lines.append(f"{row['shape']:>16} {row['module']:>5} {b:>6}: default {_ratio(row['default_ratio'])}, "
                     f"best {best}, f+b {_ratio(row['fb_ratio'])}{peer}")
    return "\n".join(lines)
