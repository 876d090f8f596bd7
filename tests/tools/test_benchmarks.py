"""Smoke test of ``python -m benchmarks``: it runs, writes the expected rows, and the peers agree with the project.

No timing is asserted (the numbers of a test machine mean nothing); the benchmark itself is not a test.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from attn_core.frameworks import installed_frameworks

ROOT = Path(__file__).resolve().parents[2]
BACKENDS = list(installed_frameworks())
# one module (SE: seeds, timm, transcriptions, and the seeds' zero hidden width at C = 8) in each backend's default
# mode, plus Paddle's to_static; torch.compile and jax eager are left out (compilation alone would take most of a
# minute)
MODES = "torch:eager,paddle:eager,paddle:compiled,flax:compiled"


def _table_rows(markdown: str, section: str) -> list[list[str]]:
    """The cells of every table row under ``## section`` (up to the next ``## ``)."""
    body = markdown.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in body.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if cells[0] not in ("module", "shape"):  # not a header
                rows.append(cells)
    return rows


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    if not BACKENDS:
        pytest.skip("no framework installed")
    out = tmp_path_factory.mktemp("bench") / "results.md"
    argv = ["--quick", "--repeats", "2", "--modules", "se", "--modes", MODES, "--backends", ",".join(BACKENDS),
            "--out", str(out), "--json", str(out.with_suffix(".json"))]
    proc = subprocess.run([sys.executable, "-m", "benchmarks", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out.read_text(), " ".join(argv)


def test_markdown_names_its_command_and_setup(quick_run: tuple[str, str]) -> None:
    text, argv = quick_run
    assert f"`python -m benchmarks {argv}`" in text
    assert "## Summary" in text and "## Details" in text
    for backend in BACKENDS:
        assert f"  - {backend}: " in text  # its thread setting and the busy threads seen
    if "torch" in BACKENDS:
        assert re.search(r"- timm: (\d+\.\d+|unavailable: .+)\.", text), "timm's status must be stated"


def test_expected_rows(quick_run: tuple[str, str]) -> None:
    text, _ = quick_run
    expected = {
        "torch": ["x * s (baseline)", "**SEModule default", "**SEModule rd_divisor=None, bias=False",
                  "SEModule (seed 001"],
        "paddle": ["x * s (baseline)", "**SEModule default", "SELayer (seed 002 in Paddle)"],
        "flax": ["x * s (baseline)", "**SEModule default", "jax.numpy SE (seed 001/002)"],
    }
    modes = {"torch": {"torch eager"}, "paddle": {"Paddle dygraph", "paddle.jit.to_static"}, "flax": {"jax.jit"}}
    for backend in BACKENDS:
        section = text.split(f"### 2x32x16x16, {backend}\n", 1)[1].split("\n### ", 1)[0]
        for label in expected[backend]:
            for mode in modes[backend]:
                for pass_ in ("forward", "forward+backward"):
                    assert re.search(rf"\| se \| {re.escape(mode)} \| {re.escape(pass_)} \| {re.escape(label)}",
                                     section), f"{backend}: no row {label!r} {mode} {pass_}"
    summary = _table_rows(text, "Summary")
    assert {(r[0], r[1], r[2]) for r in summary} == {
        (shape, "se", b) for shape in ("2x32x16x16", "2x8x9x7") for b in BACKENDS}
    if "torch" in BACKENDS and "timm: unavailable" not in text:
        assert "| timm SEModule |" in text


# the peers of SE timed in every backend, by the start of their label; timm's only where it imports
PEERS = {"torch": ("SEModule (seed 001", "timm SEModule"), "paddle": ("SELayer (seed 002 in Paddle)",),
         "flax": ("jax.numpy SE (seed 001/002)",)}
MODE_LABELS = {"torch": ("torch eager",), "paddle": ("Paddle dygraph", "paddle.jit.to_static"), "flax": ("jax.jit",)}


def test_peers_equal_the_project(quick_run: tuple[str, str]) -> None:
    """Every peer, in every mode and pass, has a distance to the project's output, and it is below 1e-4."""
    text, _ = quick_run
    rows = [r for r in _table_rows(text, "Details") if r[8] not in ("—", "n/a")]
    timm_missing = "timm: unavailable" in text
    for backend in BACKENDS:
        for label in PEERS[backend]:
            if label.startswith("timm") and timm_missing:
                continue
            for mode in MODE_LABELS[backend]:
                for pass_ in ("forward", "forward+backward"):
                    assert any(r[1] == mode and r[2] == pass_ and r[3].startswith(label) for r in rows), \
                        f"{backend}: no distance for {label!r} {mode} {pass_}"
    diffs = [(r[3], float(r[8].split()[0])) for r in rows]
    assert all(d < 1e-4 for _, d in diffs), [d for d in diffs if d[1] >= 1e-4]


def test_zero_hidden_width_peer_is_reported(quick_run: tuple[str, str]) -> None:
    """At C = 8 the seeds' SE has C // 16 = 0 hidden units: the project refuses that form, the peer still runs,
    and its row says why there is no equality column rather than the run crashing."""
    text, _ = quick_run
    for backend in BACKENDS:
        section = text.split(f"### 2x8x9x7, {backend}\n", 1)[1].split("\n### ", 1)[0]
        refused = [line for line in section.splitlines() if "**SEModule rd_divisor=None" in line]
        assert refused and all("hidden width is 0" in line for line in refused), section
        peers = [line for line in section.splitlines() if "seed 00" in line and "| se |" in line]
        assert peers and all("hidden width" in line for line in peers), section


def test_sub_operations_are_timed_beside_the_baseline(quick_run: tuple[str, str]) -> None:
    """Every backend times each operation the modules are made of, alone, in a group with its x * s, at every
    shape: a miss of the targets is explained by measured parts, not by guesses."""
    from benchmarks.plan import SUBOPS

    text, _ = quick_run
    rows = {(r[0], r[1]): r for r in _table_rows(text, "Sub-operations")}
    for shape in ("2x32x16x16", "2x8x9x7"):
        for label in ["x * s (baseline)", *SUBOPS.values()]:
            row = rows[(shape, label)]
            assert len(row) == 3 + 2 * len(BACKENDS) and "—" not in row, row
            assert float(row[4].rstrip("×")) > 0


def test_render_json_writes_the_same_markdown(quick_run: tuple[str, str], tmp_path: Path) -> None:
    """--render-json rebuilds a run's markdown from its saved records, command and setup included."""
    from benchmarks.cli import main

    text, argv = quick_run
    saved = Path(argv.split("--json ", 1)[1].split()[0])
    again = tmp_path / "again.md"
    assert main(["--render-json", str(saved), "--out", str(again)]) == 0
    assert again.read_text() == text


def test_bad_arguments_are_usage_errors() -> None:
    from benchmarks.cli import main

    assert main(["--modules", "nope"]) == 2
    assert main(["--shapes", "8x64x56"]) == 2
    assert main(["--modes", "warp"]) == 2
    assert main(["--modes", "eager,cuda:compiled"]) == 2


@pytest.mark.parametrize("item,advice", [
    ("compile", "'compile' is not a mode; use 'compiled' (torch.compile)"),
    ("paddle:dygraph", "'paddle:dygraph' is not a mode; use 'paddle:eager' (Paddle dygraph)"),
    ("to_static", "'to_static' is not a mode; use 'compiled' (paddle.jit.to_static)"),
    ("flax:jit", "'flax:jit' is not a mode; use 'flax:compiled' (jax.jit)"),
])
def test_an_old_mode_name_is_a_usage_error_naming_the_new_one(item: str, advice: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The benchmarks speak the suite's two modes, eager and compiled; the names they used before are refused with
    the one to use (exit 2), not silently mapped."""
    from benchmarks.cli import main

    assert main(["--modes", f"eager,{item}"]) == 2
    assert f"python -m benchmarks: --modes: {advice}" in capsys.readouterr().err


def test_modes_resolve_per_backend_in_the_one_vocabulary() -> None:
    """A bare mode applies to every selected backend, backend:mode to one; each backend's default mode comes first
    when none is asked for (Flax's is jax.jit, attn_core.frameworks)."""
    from benchmarks.cli import SUMMARY_ARGS, parser, resolve

    def modes(*argv: str) -> dict[str, list[str]]:
        return resolve(parser().parse_args(["--backends", "torch,paddle,flax", *argv]))["modes"]

    assert modes() == {"torch": ["eager", "compiled"], "paddle": ["eager", "compiled"], "flax": ["compiled", "eager"]}
    assert modes("--modes", "compiled") == {"torch": ["compiled"], "paddle": ["compiled"], "flax": ["compiled"]}
    assert modes("--modes", "torch:eager,flax:compiled") == {"torch": ["eager"], "paddle": [], "flax": ["compiled"]}
    assert modes(*SUMMARY_ARGS) == {"torch": ["eager", "compiled"], "paddle": ["eager", "compiled"],
                                    "flax": ["compiled"]}


def test_nothing_outside_the_drivers_dispatches_on_a_framework_name() -> None:
    """The frameworks' differences live in benchmarks/frameworks (one driver each); the rest reads
    attn_core.frameworks and never tests or keys on a framework's name."""
    dispatch = re.compile(r"""(==|!=|\bin)\s*\(?\s*["'](torch|paddle|flax|jax)["']|["'](torch|paddle|flax)["']\s*:\s""")
    for path in (ROOT / "benchmarks").rglob("*.py"):
        if path.parent.name in ("frameworks", "peers"):
            continue
        found = [line for line in path.read_text().splitlines() if dispatch.search(line)]
        assert not found, (path.name, found)


def test_every_framework_of_the_table_has_its_driver() -> None:
    """load_driver finds a backend's driver by its name in attn_core.frameworks: a framework added there needs its
    benchmarks/frameworks/<name>_bench.py, whose Driver says that name."""
    from attn_core.frameworks import FRAMEWORKS

    for name in FRAMEWORKS:
        source = (ROOT / "benchmarks" / "frameworks" / f"{name}_bench.py").read_text()
        assert re.search(rf'^    name = "{name}"$', source, re.M), name


def test_the_library_never_imports_the_benchmarks() -> None:
    for package in ("attn_core", "backends", "conformance"):
        for path in (ROOT / package).rglob("*.py"):
            source = path.read_text()
            assert not re.search(r"^\s*(from|import)\s+benchmarks\b", source, re.M), path


def test_attention_parts_are_the_resnet50_stages() -> None:
    """The shapes the model rows' attention modules are timed at: ResNet-50's four stages at 224 x 224 (He et al.
    2016, Table 1: 3, 4, 6, 3 bottlenecks of 256, 512, 1024, 2048 output channels at 56, 28, 14, 7), SimAM on the
    3x3 convolution's width (64, 128, 256, 512)."""
    from benchmarks.models import attention_parts

    got = [(kind, shape, count) for kind, _, shape, count in attention_parts("seresnet50", 8, 224)]
    assert got == [("se", (8, 256, 56, 56), 3), ("se", (8, 512, 28, 28), 4), ("se", (8, 1024, 14, 14), 6),
                   ("se", (8, 2048, 7, 7), 3)]
    simam = [(shape, count) for _, _, shape, count in attention_parts("simamresnet50", 2, 64)]
    assert simam == [((2, 64, 16, 16), 3), ((2, 128, 8, 8), 4), ((2, 256, 4, 4), 6), ((2, 512, 2, 2), 3)]
    assert attention_parts("resnet50", 8, 224) == []


# ------------------------------------------------------------------ the re-run rule, on hand-made samples
# (no timing: every sample list below is written out, and a scripted clock stands in for perf_counter)

# numpy's linear percentiles of 7 sorted samples: the 25th halfway between the 2nd and 3rd, the 75th between the 5th
# and 6th
CALM = [10.0, 10.2, 9.9, 10.1, 10.0, 9.8, 10.3]          # (10.15 - 9.95) / 10.0: 2%
NOISY = [10.0, 30.0, 10.0, 31.0, 9.0, 29.0, 12.0]        # (29.5 - 10) / 12: 162%


def test_spread_is_the_interquartile_range_over_the_median() -> None:
    from benchmarks.timing import spread

    # numpy's linear percentiles of 1..8: 2.75 and 6.25, median 4.5 -> 3.5 / 4.5
    assert spread([1, 2, 3, 4, 5, 6, 7, 8]) == pytest.approx(3.5 / 4.5)
    assert spread(CALM) == pytest.approx(0.02)
    assert spread(NOISY) == pytest.approx(19.5 / 12)
    assert spread([1.0, 2.0, 3.0]) is None  # three samples have no quartiles worth the name
    assert spread([0.0, 0.0, 0.0, 0.0]) is None  # nothing to relate the range to


def test_a_group_is_rerun_when_any_rows_ratio_spreads_above_a_quarter() -> None:
    from benchmarks.timing import SPREAD_LIMIT, best_attempt, group_spread, needs_rerun, ratio_spread, unreliable

    assert SPREAD_LIMIT == 0.25
    flat = [1.0] * 7
    # against a steady baseline a row's rounds' ratios are its samples: NOISY's 162%
    assert group_spread([flat, CALM, NOISY]) == pytest.approx(19.5 / 12)
    assert needs_rerun([flat, NOISY]) and not needs_rerun([flat, CALM])
    # a noisy round slows the baseline and the row alike: every ratio is 2, nothing to re-run
    twice = [2 * v for v in NOISY]
    assert ratio_spread(twice, NOISY) == 0.0 and not needs_rerun([NOISY, twice])
    # the baseline alone is judged by its own spread; 1..8: (6.25 - 2.75) / 4.5
    assert needs_rerun([[1, 2, 3, 4, 5, 6, 7, 8]]) and not needs_rerun([[4.0, 4.0, 4.0, 5.0]])
    assert not needs_rerun([flat[:2], [1.0, 9.0]])  # too few samples to judge: not re-run forever
    # rounds that do not pair up (a row stopped early): the larger of the two spreads
    assert ratio_spread(CALM[:5], NOISY) == pytest.approx(19.5 / 12)
    assert ratio_spread([], CALM) is None
    assert best_attempt([[flat, NOISY], [flat, CALM], [NOISY, flat]]) == 1
    assert best_attempt([[flat, NOISY], [flat, NOISY]]) == 0  # equals: the first
    assert unreliable(0.3) and not unreliable(0.25) and not unreliable(None)


class _Script:
    """A clock and implementations whose calls take the durations scripted for them, in call order."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def runner(self, durations: list[float]):
        it = iter(durations)

        def run() -> None:
            self.now += next(it)
        return run


def _candidates(script: _Script, base: list[float], other: list[float]):
    from benchmarks.timing import Candidate

    return [Candidate("x * s (baseline)", "baseline", script.runner(base)),
            Candidate("module", "project", script.runner(other), form="default")]


def test_measure_group_reruns_a_noisy_group_and_keeps_its_calm_attempt() -> None:
    from benchmarks.timing import measure_group

    script = _Script()
    # one warm-up call each, then 7 rounds: the first attempt noisy in the module, the second calm
    cands = _candidates(script, [1.0] + CALM + CALM, [1.0] + NOISY + [v * 2 for v in CALM])
    attempts = measure_group(cands, repeats=7, warmup=1, clock=script.clock)
    assert attempts == 2
    assert cands[0].samples == pytest.approx(CALM) and cands[1].samples == pytest.approx([v * 2 for v in CALM])
    assert len(cands[1].faults) == 7  # a page-fault count per timed call


def test_measure_group_is_bounded_and_keeps_the_least_spread_attempt() -> None:
    from benchmarks.timing import measure_group, spread

    script = _Script()
    worse = [10.0, 50.0, 10.0, 50.0, 10.0, 50.0, 10.0]
    cands = _candidates(script, [1.0] + CALM * 3, [1.0] + NOISY + worse + NOISY[::-1])
    attempts = measure_group(cands, repeats=7, warmup=1, reruns=2, clock=script.clock)
    assert attempts == 3  # the first attempt and two re-runs, no more
    assert spread(cands[1].samples) == pytest.approx(19.5 / 12)  # NOISY (either order), not the worse one
    script = _Script()
    calm = _candidates(script, [1.0] + CALM, [1.0] + CALM)
    assert measure_group(calm, repeats=7, warmup=1, clock=script.clock) == 1


def test_an_unreliable_row_is_marked_with_its_reason() -> None:
    from benchmarks.timing import Candidate
    from benchmarks.worker import _records

    cands = [Candidate("x * s (baseline)", "baseline", None, samples=[v / 1000 for v in CALM]),
             Candidate("module", "project", None, form="default", samples=[v / 1000 for v in NOISY]),
             Candidate("peer", "peer", None, form="default", samples=[v / 1000 for v in CALM], faults=[3, 5, 4])]
    recs = _records(cands, "torch", "2x8x9x7", "se", "eager", "forward", attempts=3)
    assert [r.unreliable for r in recs] == [False, True, False]
    assert recs[1].note.startswith("unreliable: the spread of its ratio to the baseline stayed above 25% in 3 "
                                   "attempt(s)")
    assert recs[2].faults == 4 and recs[2].attempts == 3
    noisy_base = [Candidate("x * s (baseline)", "baseline", None, samples=NOISY),
                  Candidate("module", "project", None, form="default", samples=CALM),
                  Candidate("along", "project", None, form="default", samples=[3 * v for v in NOISY])]
    base, steady, along = _records(noisy_base, "torch", "2x8x9x7", "se", "eager", "forward")
    assert base.unreliable and base.note.startswith("unreliable: its spread")  # the baseline by its own spread
    assert steady.unreliable  # a steady row over a noisy baseline: its ratio is noisy
    assert not along.unreliable and along.ratio == pytest.approx(3.0)  # slowed in the same rounds: the ratio is not


# ------------------------------------------------------------------ the summary and --compare, on hand-made records

def _rec(backend: str, mode: str, pass_: str, label: str, kind: str, ratio: float, unreliable: bool = False,
         shape: str = "32x256x56x56", module: str = "se", form: str = "default") -> dict:
    return {"backend": backend, "shape": shape, "module": module, "mode": mode, "pass_": pass_, "label": label,
            "kind": kind, "form": form, "source": "", "median_ms": ratio * 10, "spread": 0.5 if unreliable else 0.05,
            "runs": 7, "ratio": ratio, "diff": None, "diff_what": "y", "note": "", "faults": 561.0, "attempts": 1,
            "unreliable": unreliable}


def _torch_se(eager: float = 1.2, compile_: float = 1.1, fb: float = 1.3, peer: float = 1.25,
              shaky: tuple[str, ...] = ()) -> list[dict]:
    return [_rec("torch", "eager", "forward", "x * s (baseline)", "baseline", 1.0),
            _rec("torch", "eager", "forward", "SEModule default", "project", eager, "eager" in shaky),
            _rec("torch", "eager", "forward", "seeds' SE", "peer", 0.29, True),  # the 0.29x no SE can be
            _rec("torch", "eager", "forward", "timm SEModule", "peer", peer, "peer" in shaky),
            _rec("torch", "compiled", "forward", "SEModule default", "project", compile_, "compile" in shaky),
            _rec("torch", "eager", "forward+backward", "SEModule default", "project", fb, "fb" in shaky),
            _rec("torch", "compiled", "forward+backward", "SEModule default", "project", fb, "fb" in shaky)]


def test_an_unreliable_peer_is_never_the_fastest_and_an_unreliable_mode_never_the_best() -> None:
    from benchmarks.report import summary_rows, verdicts

    row = summary_rows(_torch_se(eager=1.2, compile_=0.9, shaky=("compile",)))[0]
    assert row["peer"] == "timm SEModule" and row["peer_ratio"] == 1.25 and row["peers_unreliable"] == 1
    assert row["best_mode"] == "eager" and row["best_ratio"] == 1.2 and not row["best_unreliable"]
    assert verdicts(row) == {"target": True, "fb": True, "peer": True}  # 1.2 <= 1.5, 1.3 / 1.2 <= 2, 1.2 <= 1.25


def test_the_forward_backward_best_mode_is_chosen_on_its_own_ratios() -> None:
    from benchmarks.report import console_summary, summary_rows

    # forward: eager 1.2 < compiled 1.21 (within noise); forward+backward: eager 3.0, compiled 2.4
    recs = _torch_se(eager=1.2, compile_=1.21)
    recs[-2]["ratio"], recs[-1]["ratio"] = 3.0, 2.4
    row = summary_rows(recs)[0]
    assert (row["best_mode"], row["fb_mode"], row["fb_ratio"]) == ("eager", "compiled", 2.4)
    assert row["fb_over_fwd"] == pytest.approx(2.4 / 1.2)
    assert "f+b 2.40× (torch.compile)" in console_summary(recs)  # named where it is not the forward's best mode
    # the forward's winner flips with noise; the forward+backward figure does not
    flipped = _torch_se(eager=1.22, compile_=1.21)
    flipped[-2]["ratio"], flipped[-1]["ratio"] = 3.0, 2.4
    assert summary_rows(flipped)[0]["fb_ratio"] == 2.4
    recs[-1]["unreliable"] = True  # an unreliable forward+backward mode is not chosen while a reliable one exists
    assert summary_rows(recs)[0]["fb_ratio"] == 3.0


def test_targets_say_unreliable_rather_than_met_or_missed() -> None:
    from benchmarks.report import summary_markdown, summary_rows, targets_markdown, verdicts

    recs = _torch_se(eager=1.7, compile_=1.6, shaky=("eager", "compile"))  # both modes over 1.5, both unreliable
    row = summary_rows(recs)[0]
    assert row["best_unreliable"] and verdicts(row)["target"] == "unreliable"
    text = "\n".join(targets_markdown(recs))
    assert "Targets not met" not in text and "neither met nor missed" in text
    assert "target, (f+b) / forward, default ≤ peer: unreliable" in text
    assert "1.60× (torch.compile) (unreliable)" in "\n".join(summary_markdown(recs))
    missed = "\n".join(targets_markdown(_torch_se(eager=1.7, compile_=1.6)))
    assert "Targets not met" in missed and "forward 1.60× in its best mode" in missed


def test_each_miss_names_its_modules_entry_in_the_notes() -> None:
    from benchmarks.report import TRIED_SECTION, targets_markdown, tried_entries

    notes = ("# Notes\n\n## Other\n\n### Not here (`eca`)\n\n"
             f"## {TRIED_SECTION}\n\nIntro.\n\n### SE (`se`)\n\n- **torch (all backends)**: tried.\n"
             "- **Flax**: too.\n\n"
             "### ECA (`eca`)\n\n- **Paddle**: tried.\n\n## Later\n\n### Nor (`ca`)\n\n- **torch**: no.\n")
    # the section's headings alone, for the backends their entries have a line for
    assert tried_entries(notes) == {("se", "torch"): "SE (`se`)", ("se", "flax"): "SE (`se`)",
                                    ("eca", "paddle"): "ECA (`eca`)"}
    missed = _torch_se(eager=1.7, compile_=1.6, peer=1.25)
    line = next(t for t in targets_markdown(missed, tried_entries(notes)) if t.startswith("- **"))
    assert line.endswith('Measured and tried: benchmarks/NOTES.md, "SE (`se`)".')
    assert all("Measured and tried" not in t for t in targets_markdown(missed, {("se", "paddle"): "SE (`se`)"}))


def test_every_catalogue_row_over_ten_percent_behind_its_peer_has_an_entry_in_the_notes() -> None:
    from benchmarks.cli import _current_records
    from benchmarks.report import NOTES_PATH, summary_rows, tried_entries

    records = _current_records(json.loads((NOTES_PATH.parent / "RESULTS_CATALOGUE.json").read_text())["records"])
    behind = {(row["module"], row["backend"]) for row in summary_rows(records)
              if row["peer_ratio"] and row["default_ratio"] and row["default_ratio"] > 1.1 * row["peer_ratio"]}
    assert behind and behind <= set(tried_entries(NOTES_PATH.read_text(encoding="utf-8")))


def test_compare_agrees_within_ten_percent_and_names_every_summary_ratio(tmp_path: Path) -> None:
    from benchmarks.cli import main
    from benchmarks.report import compare_runs, relative_difference

    assert relative_difference(1.0, 1.1) == pytest.approx(0.1) and relative_difference(1.1, 1.0) == pytest.approx(0.1)
    a = _torch_se(eager=1.20, compile_=1.10, fb=1.30, peer=1.25)
    b = _torch_se(eager=1.25, compile_=1.05, fb=1.35, peer=1.30)  # 4.2%, 4.8%, 3.8%, 4.0%
    lines, ok = compare_runs(a, b)
    assert ok and len(lines) == 1 + 4 + 1 and "4 summary ratios; 0 differ" in lines[-1]
    assert any("forward, best mode" in ln and "4.8%" in ln for ln in lines)
    c = _torch_se(eager=1.20, compile_=1.10, fb=1.45, peer=1.25)  # f+b 1.30 -> 1.45: 11.5%
    lines, ok = compare_runs(a, c)
    assert not ok and any("forward+backward, best mode" in ln and "11.5%" in ln and "over" in ln for ln in lines)
    for name, recs in (("a", a), ("b", b), ("c", c)):
        (tmp_path / f"{name}.json").write_text(json.dumps({"records": recs}))
    assert main(["--compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    assert main(["--compare", str(tmp_path / "a.json"), str(tmp_path / "c.json")]) == 1
    assert main(["--compare", str(tmp_path / "a.json"), str(tmp_path / "missing.json")]) == 2


def test_records_saved_with_the_old_mode_names_still_compare_and_render(tmp_path: Path) -> None:
    """JSON written before the one mode vocabulary says 'compile' (torch), 'dygraph' and 'to_static' (Paddle),
    'jit' (Flax); --compare and --render-json read them as eager and compiled."""
    from benchmarks.cli import main

    new = _torch_se(eager=1.20, compile_=1.10)
    old = [dict(r, mode="compile" if r["mode"] == "compiled" else r["mode"]) for r in new]
    (tmp_path / "new.json").write_text(json.dumps({"records": new}))
    (tmp_path / "old.json").write_text(json.dumps({"records": old}))
    assert main(["--compare", str(tmp_path / "old.json"), str(tmp_path / "new.json")]) == 0
    flax = [_rec("flax", "jit", "forward", "x * s (baseline)", "baseline", 1.0),
            _rec("flax", "jit", "forward", "SEModule default", "project", 1.3),
            _rec("flax", "eager", "forward", "SEModule default", "project", 9.0),
            _rec("paddle", "dygraph", "forward", "x * s (baseline)", "baseline", 1.0),
            _rec("paddle", "dygraph", "forward", "SEModule default", "project", 2.0),
            _rec("paddle", "to_static", "forward", "SEModule default", "project", 1.6)]
    header = {"command": "python -m benchmarks --modes flax:jit,flax:eager,paddle:dygraph,paddle:to_static",
              "date": "2026-01-01 00:00 UTC", "minutes": 1.0, "cpu": "cpu", "cpus": 2, "load_start": 0.1,
              "load_end": 0.2, "noisy": "", "python": "3.11", "numpy": "2", "threads": 2, "repeats": 3,
              "warmup": 1, "timm": "not run", "max_call": 5.0, "call_timeout": 60.0}
    (tmp_path / "old_run.json").write_text(json.dumps({"header": header, "infos": [], "failures": {},
                                                       "records": old + flax, "model_records": []}))
    out = tmp_path / "old_run.md"
    assert main(["--render-json", str(tmp_path / "old_run.json"), "--out", str(out)]) == 0
    summary = {(r[1], r[2]): r for r in _table_rows(out.read_text(), "Summary")}
    # the default path in each framework's label, the best mode the fastest: 1.10 compiled, 1.3 jit, 1.6 to_static
    assert (summary[("se", "torch")][3], summary[("se", "torch")][6]) == ("1.20× (torch eager)",
                                                                          "1.10× (torch.compile)")
    assert (summary[("se", "flax")][3], summary[("se", "flax")][6]) == ("1.30× (jax.jit)", "1.30× (jax.jit)")
    assert (summary[("se", "paddle")][3], summary[("se", "paddle")][6]) == ("2.00× (Paddle dygraph)",
                                                                            "1.60× (paddle.jit.to_static)")


def test_every_worker_asks_for_huge_pages_unless_told_otherwise() -> None:
    from benchmarks.threads import HUGE_PAGES, malloc_env

    assert malloc_env({}) == {"GLIBC_TUNABLES": HUGE_PAGES}
    assert malloc_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}) == {
        "GLIBC_TUNABLES": f"glibc.malloc.arena_max=2:{HUGE_PAGES}"}
    assert malloc_env({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) == {}  # the user's own choice stands


def test_min_sample_averages_back_to_back_calls_into_one_sample() -> None:
    from benchmarks.timing import MAX_CALLS, Candidate, measure

    script = _Script()
    # warm-up 1.0; calibration 0.004 s -> ceil(0.02 / 0.004) = 5 calls per sample; two rounds of five calls each
    fast = Candidate("x * s (baseline)", "baseline",
                     script.runner([1.0, 0.004] + [0.004, 0.004, 0.006, 0.004, 0.002] + [0.003] * 5))
    # a call longer than min_sample stays one call per sample
    slow = Candidate("module", "project", script.runner([1.0, 0.5, 0.4, 0.6]), form="default")
    measure([fast, slow], repeats=2, warmup=1, clock=script.clock, min_sample=0.02)
    assert (fast.calls, slow.calls) == (5, 1)
    assert fast.samples == pytest.approx([0.004, 0.003]) and slow.samples == pytest.approx([0.4, 0.6])
    assert len(fast.faults) == 2  # page faults per call, one figure per sample
    instant = Candidate("noop", "peer", script.runner([0.0] * (2 + MAX_CALLS)))
    measure([instant], repeats=1, warmup=1, clock=script.clock, min_sample=0.02)
    assert instant.calls == MAX_CALLS  # a call the clock cannot see is bounded, not infinite


def _proc_rec(label: str, kind: str, ratio: float | None, ms: float | None, module: str = "se") -> dict:
    return {"backend": "torch", "shape": "8x64x56x56", "module": module, "mode": "eager", "pass_": "forward",
            "label": label, "kind": kind, "ratio": ratio, "median_ms": ms}


def test_median_process_keeps_each_rows_median_process() -> None:
    from benchmarks.cli import median_process

    runs = [[_proc_rec("x * s", "baseline", 1.0, 0.09), _proc_rec("SEModule", "project", 2.6, 0.23),
             _proc_rec("peer", "peer", None, None)],
            [_proc_rec("x * s", "baseline", 1.0, 0.08), _proc_rec("SEModule", "project", 2.0, 0.16),
             _proc_rec("peer", "peer", 3.0, 0.24)],
            [_proc_rec("x * s", "baseline", 1.0, 0.10), _proc_rec("SEModule", "project", 2.4, 0.24)]]
    base, se, peer = median_process(runs)
    assert base["median_ms"] == 0.09  # the baseline by its time: 0.08, 0.09, 0.10
    assert (se["ratio"], se["median_ms"]) == (2.4, 0.24)  # the whole record of the median process
    assert se["process_ratios"] == [2.6, 2.0, 2.4]
    assert peer["ratio"] == 3.0 and peer["process_ratios"] == [3.0]  # judged on the one process that timed it
    two = median_process(runs[:2])[1]
    assert two["ratio"] == 2.0  # an even count keeps the lower of the middle two
    assert median_process([[_proc_rec("p", "peer", None, None)]])[0]["ratio"] is None


def test_a_row_is_unreliable_when_most_of_its_processes_found_it_so() -> None:
    from benchmarks.cli import median_process

    def runs(*flags: bool) -> list[list[dict]]:
        return [[dict(_proc_rec("SEModule", "project", 2.0 + i / 10, 0.2), unreliable=f,
                      note="unreliable: the spread of its ratio to the baseline stayed above 25%" if f else "")]
                for i, f in enumerate(flags)]

    one = median_process(runs(False, True, False))[0]  # the median process (2.1) was the one flagged
    assert not one["unreliable"] and one["unreliable_processes"] == 1
    assert one["note"] == "unreliable in 1 of 3 processes"
    two = median_process(runs(True, False, True))[0]
    assert two["unreliable"] and two["unreliable_processes"] == 2
    assert not median_process(runs(True, False))[0]["unreliable"]  # one of two is not more than half
    assert median_process(runs(True))[0]["note"].startswith("unreliable: the spread")  # one process: its own note


def test_processes_must_be_positive() -> None:
    from benchmarks.cli import main

    assert main(["--processes", "0", "--quick"]) == 2


def test_a_ratio_is_the_median_of_its_rounds_paired_with_the_baseline() -> None:
    """The machine slows down by 3x from round 4 on, halfway through the row's rounds and after the baseline's
    fourth: the ratio of medians would say 6 (6 ms over 1 ms), the per-round pairs say 2 in every round but one."""
    from benchmarks.timing import Candidate
    from benchmarks.worker import _records, paired_ratio

    base = [1.0, 1.0, 1.0, 1.0, 3.0, 3.0, 3.0]
    row = [2.0, 2.0, 2.0, 6.0, 6.0, 6.0, 6.0]
    assert paired_ratio(row, base) == 2.0
    assert paired_ratio(row[3:], base) == 6.0  # a row that missed rounds: the ratio of the medians, 6 / 1
    assert paired_ratio([], base) is None and paired_ratio(row, []) is None
    cands = [Candidate("x * s (baseline)", "baseline", None, samples=[v / 1000 for v in base]),
             Candidate("module", "project", None, form="default", samples=[v / 1000 for v in row])]
    recs = _records(cands, "torch", "2x8x9x7", "se", "eager", "forward")
    assert [r.ratio for r in recs] == [1.0, 2.0]


# ------------------------------------------------------------------ timm's modules in Paddle and jax.numpy
# the modules named as timm's state_dict (timm's get_attn keys beyond se, eca, cbam)
TIMM_KEYS = ("ese", "ecam", "ceca", "lcbam", "ge", "gc", "gca", "coord", "scoord", "ela", "strip", "sk", "splat", "nl",
             "bat")


def test_every_timm_named_module_has_a_timm_peer_in_every_backend() -> None:
    """Each module named as timm's state_dict is timed beside timm's code in each backend: timm's own module in
    torch, its Paddle and jax.numpy transcriptions in the other two, each computing the default form."""
    from benchmarks.plan import BACKENDS as ALL
    from benchmarks.plan import TIMM_NAMED, peers_for

    assert set(TIMM_NAMED) == set(TIMM_KEYS)
    for module in TIMM_NAMED:
        for backend in ALL:
            timm = [p for p in peers_for(backend, module) if p.source.startswith("timm")]
            assert [p.form for p in timm] == ["default"], (backend, module, timm)


def _timm_peer_outputs(backend: str, module: str, pass_: str) -> tuple[np.ndarray, np.ndarray]:
    """The project's module and the timm peer of ``module`` in ``backend``'s default mode (:func:`_peer_outputs`)."""
    from benchmarks.plan import peers_for

    (peer,) = [p for p in peers_for(backend, module) if p.source.startswith("timm")]
    return _peer_outputs(peer, pass_)


def _peer_outputs(peer: Any, pass_: str) -> tuple[np.ndarray, np.ndarray]:
    """The project's module of ``peer``'s form and ``peer`` in its backend's default mode, built by the driver the
    benchmarks time, on the same random canonical weights (BatchNorm's running statistics drawn too): each one's
    output (forward, eval) or input gradient (forward+backward, train), NCHW."""
    from benchmarks.frameworks import load_driver
    from benchmarks.plan import DEFAULT_MODE, form_data, make_data

    backend, module = peer.backend, peer.module
    # 14: a multiple of bat's block, 7; 6 samples: sk's attention BatchNorm sees one value per sample, and the
    # float32 rounding of its training gradients over 2 samples reaches 5e-5
    data = make_data((6, 32, 14, 14), seed=7)
    fd = form_data(module, peer.form, 32, seed=3)
    driver = load_driver(backend)
    results = []
    for c in (driver.project(module, fd, data, DEFAULT_MODE[backend], pass_, "project"),
              driver.peer(peer, fd, fd, data, DEFAULT_MODE[backend], pass_)):
        if c.error.startswith("PeerUnavailable") or (module == "ge" and "multiple values" in c.error):
            pytest.skip(c.error)  # timm does not import, or (1.0.31) cannot build GatherExcite's default
        assert c.run is not None and c.output is not None, c.error
        c.prepare()
        results.append(c.output(c.run()))
    return results[0], results[1]


# a Flax row jit-compiles both modules, so Flax's rows but the first key's are slow
@pytest.mark.parametrize("module,backend", [
    pytest.param(m, b, id=f"{m}-{b}", marks=(pytest.mark.slow,) if b == "flax" and m != TIMM_KEYS[0] else ())
    for m in TIMM_KEYS for b in ("torch", "paddle", "flax")])
def test_timm_transcriptions_equal_the_project(backend: str, module: str) -> None:
    """The Paddle and jax.numpy transcriptions of timm's modules compute the project module's numbers on the same
    weights: the output in eval (BatchNorm on its random running statistics), and the input gradient in training
    (BatchNorm on the batch; bat is left out there, its Dropout2d draws different channels in each)."""
    if backend not in BACKENDS:
        pytest.skip(f"{backend} is not installed")
    project, peer = _timm_peer_outputs(backend, module, "forward")
    assert project.shape == peer.shape == (6, 32, 14, 14)
    np.testing.assert_allclose(peer, project, rtol=1e-4, atol=1e-5)
    if module != "bat":
        project, peer = _timm_peer_outputs(backend, module, "forward+backward")
        np.testing.assert_allclose(peer, project, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ the published code of the modules timm lacks
# module -> the peer keys (the published classes) timed beside it, in every backend
PUBLISHED = {"srm": ("SRMLayer",), "gct": ("GCT",), "shuffle": ("sa_layer",), "triplet": ("TripletAttention",),
             "bam": ("BAM",), "psa": ("PSA_p", "PSA_s"), "gam": ("GAM_Attention",)}


def test_every_module_timm_lacks_has_its_published_code_as_a_peer_in_every_backend() -> None:
    """Each module timm lacks is timed beside its published code (the authors' torch code, GAM's the tutorials'
    copy) in torch and its Paddle and jax.numpy transcriptions, each computing the form its preset pins: SRM's
    unbiased 'official', PSA_s the 'sequential' preset, the rest the default (shuffle's at G = 4, which the timed
    widths divide)."""
    from attn_core import PSA_PRESETS, SRM_PRESETS
    from benchmarks.plan import BACKENDS as ALL
    from benchmarks.plan import FORMS, PUBLISHED_KEYS, peers_for

    assert PUBLISHED_KEYS == {k for keys in PUBLISHED.values() for k in keys}
    forms = {"SRMLayer": "official", "sa_layer": "groups4", "PSA_s": "sequential"}
    for module, keys in PUBLISHED.items():
        for backend in ALL:
            peers = [p for p in peers_for(backend, module) if p.key in PUBLISHED_KEYS]
            assert [(p.key, p.form) for p in peers] == [(k, forms.get(k, "default")) for k in keys], (backend, module)
            assert all(p.source.startswith("published") for p in peers)
    assert FORMS["srm"]["official"][1] == SRM_PRESETS["official"]
    assert FORMS["psa"]["sequential"][1] == PSA_PRESETS["sequential"]
    assert FORMS["shuffle"]["groups4"][1] == {"groups": 4}


@pytest.mark.parametrize("backend", ["torch", "paddle", "flax"])
@pytest.mark.parametrize("key", [k for keys in PUBLISHED.values() for k in keys])
def test_published_peers_equal_the_project(backend: str, key: str) -> None:
    """The published code (torch) and its Paddle and jax.numpy transcriptions, as the benchmarks build them,
    compute the project module's numbers on the same weights: the output in eval (BatchNorm on its random running
    statistics) and the input gradient in training (BatchNorm on the batch)."""
    from benchmarks.plan import peers_for

    if backend not in BACKENDS:
        pytest.skip(f"{backend} is not installed")
    module = next(m for m, keys in PUBLISHED.items() if key in keys)
    (peer,) = [p for p in peers_for(backend, module) if p.key == key]
    for pass_ in ("forward", "forward+backward"):
        project, theirs = _peer_outputs(peer, pass_)
        assert project.shape == theirs.shape == (6, 32, 14, 14)
        assert np.abs(project).max() > 1e-3, pass_  # a row of zeros would agree with anything
        np.testing.assert_allclose(theirs, project, rtol=1e-4, atol=1e-5, err_msg=pass_)


def test_a_form_the_project_refuses_at_every_preset_is_a_row_not_a_crash() -> None:
    """At C = 8 BAM's hidden width C // 16 is 0 and shuffle's default G = 64 needs C a multiple of 128: the form has
    no config and no weights, its reason kept (the report's n/a row), and the published peer is refused with it."""
    from benchmarks.plan import form_data, published_config

    for module, reason in (("bam", "hidden width is 0"), ("shuffle", "multiple of 2 * groups = 128")):
        fd = form_data(module, "default", 8)
        assert fd.config is None and fd.weights == {} and reason in fd.refused
        with pytest.raises(ValueError, match=f"n/a: the project refuses this form .*{re.escape(reason)}"):
            published_config(fd)
    assert form_data("shuffle", "groups4", 8).config is not None
