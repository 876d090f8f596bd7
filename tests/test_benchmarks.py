"""Smoke test of ``python -m benchmarks``: it runs, writes the expected rows, and the peers agree with the project.

No timing is asserted (the numbers of a test machine mean nothing); the benchmark itself is not a test.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = [b for b, mods in {"torch": ("torch",), "paddle": ("paddle",), "flax": ("jax", "flax")}.items()
            if all(importlib.util.find_spec(m) is not None for m in mods)]
# one module (SE: seeds, timm, transcriptions, and the seeds' zero hidden width at C = 8) in one mode per backend,
# plus Paddle's to_static; torch.compile and jax eager are left out (compilation alone would take most of a minute)
MODES = "torch:eager,paddle:dygraph,paddle:to_static,flax:jit"


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
