"""A report a person would rather look at: the module x backend x mode x dtype matrix, coloured by the worst
error relative to its tolerance, with every case and every compared quantity one click away. Self-contained HTML."""

from __future__ import annotations

import html
import math
from collections import defaultdict

from attn_core import CONFIGS

from .suite import Report, Row
from .tolerances import TOLERANCES

__all__ = ["render_html", "cell_class", "module_order"]

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:center}
th{background:#f4f4f4} td.name{text-align:left;font-family:monospace}
.ok0{background:#1a9850;color:#fff}.ok1{background:#91cf60}.ok2{background:#d9ef8b}.ok3{background:#fee08b}
.bad{background:#d73027;color:#fff}.skip{background:#e0e0e0;color:#666}
details{margin:.3em 0} summary{cursor:pointer;font-weight:600}
.legend span{display:inline-block;padding:2px 8px;margin-right:4px}
"""


def cell_class(rows: list[Row]) -> tuple[str, str]:
    """CSS class and text of a cell holding ``rows``: the worst error as a fraction of its tolerance."""
    if not rows:
        return "skip", ""
    if any(r.failed for r in rows):
        worst = max((r.worst.worst_ratio for r in rows if r.worst), default=math.inf)
        errors = sum(r.status == "error" for r in rows)
        text = "error" if errors and not math.isfinite(worst) else f"{worst:.3g}x"
        return "bad", f"{text} ({sum(r.failed for r in rows)}/{len(rows)} failed)"
    ran = [r for r in rows if r.status == "pass"]
    if not ran:
        return "skip", rows[0].status
    worst = max(r.worst.worst_ratio if r.worst else 0.0 for r in ran)
    level = "ok0" if worst < 0.01 else "ok1" if worst < 0.1 else "ok2" if worst < 0.5 else "ok3"
    return level, f"{worst:.2g}x"


def _e(v: object) -> str:
    return html.escape(str(v))


def module_order(rows: list[Row]) -> list[str]:
    """The modules of ``rows``: the registered attention modules first, in the registry's order
    (``attn_core.CONFIGS``), then anything else (the models) in the order the rows have them."""
    present = list(dict.fromkeys(r.module for r in rows))
    return [k for k in CONFIGS if k in present] + [m for m in present if m not in CONFIGS]


def _module_cell(module: str) -> str:
    """The matrix's name cell: the registry key, titled with its module's class name where it is registered."""
    config = CONFIGS.get(module)
    title = "" if config is None else f" title='{_e(config.module_name)}'"
    return f"<td class='name'{title}>{_e(module)}</td>"


def render_html(report: Report, title: str = "attn-modules conformance", command: str = "") -> str:
    """The whole report as one HTML page."""
    columns = sorted({(r.backend, r.mode, r.dtype) for r in report.rows})
    modules = module_order(report.rows)
    by_cell: dict[tuple[str, str, str, str], list[Row]] = defaultdict(list)
    for r in report.rows:
        by_cell[(r.module, r.backend, r.mode, r.dtype)].append(r)

    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title>",
           f"<style>{_STYLE}</style></head><body><h1>{_e(title)}</h1>",
           f"<p><b>{_e(report.summary())}</b>" + (f" &mdash; <code>{_e(command)}</code>" if command else "") + "</p>",
           "<p>Each cell: the worst error over the module's cases and every compared quantity (output, input "
           "gradient, every parameter gradient), as a multiple of the tolerance <code>atol + rtol&middot;|ref|"
           "</code>; below 1x passes.</p>",
           "<p class='legend'><span class='ok0'>&lt;0.01x</span><span class='ok1'>&lt;0.1x</span>"
           "<span class='ok2'>&lt;0.5x</span><span class='ok3'>&lt;1x</span><span class='bad'>fail</span>"
           "<span class='skip'>skipped / n/a</span></p>",
           "<table><tr><th>module</th>" + "".join(
               f"<th>{_e(b)}<br>{_e(m)}<br>{_e(d)}</th>" for b, m, d in columns) + "</tr>"]
    for mod in modules:
        cells = []
        for b, m, d in columns:
            cls, text = cell_class(by_cell.get((mod, b, m, d), []))
            cells.append(f"<td class='{cls}'>{_e(text)}</td>")
        out.append(f"<tr>{_module_cell(mod)}{''.join(cells)}</tr>")
    out.append("</table>")

    out.append("<h2>Cases</h2>")
    for mod in modules:
        rows = [r for r in report.rows if r.module == mod]
        bad = sum(r.failed for r in rows)
        out.append(f"<details{' open' if bad else ''}><summary>{_e(mod)}: {len(rows)} rows, {bad} failed"
                   "</summary><table><tr><th>case</th><th>backend</th><th>mode</th><th>dtype</th><th>result</th>"
                   "<th>max abs</th><th>max rel</th><th>worst quantity</th><th>x tolerance</th></tr>")
        for r in rows:
            cls, _ = cell_class([r])
            w = r.worst
            out.append(
                f"<tr><td class='name'>{_e(r.case)}</td><td>{_e(r.backend)}</td><td>{_e(r.mode)}</td>"
                f"<td>{_e(r.dtype)}</td><td class='{cls}'>{_e(r.status.upper())}</td>"
                f"<td>{'' if not r.comparisons else f'{r.max_abs:.2e}'}</td>"
                f"<td>{'' if not r.comparisons else f'{r.max_rel:.2e}'}</td>"
                f"<td class='name'>{_e(w.quantity if w else '')}</td>"
                f"<td>{'' if not w else _e(f'{w.worst_ratio:.3g}')}</td></tr>")
            if r.failed or r.status not in ("pass",):
                detail = [r.message] + [f"{c.quantity}: {c.worst_ratio:.3g}x tolerance. {c.detail}"
                                        for c in r.comparisons if not c.passed]
                out.append(f"<tr><td colspan='9' class='name' style='text-align:left'>"
                           f"{'<br>'.join(_e(x) for x in detail if x)}</td></tr>")
        out.append("</table></details>")

    out.append("<h2>Tolerances</h2><table><tr><th>dtype</th><th>atol</th><th>rtol</th><th>source</th></tr>")
    for k, t in TOLERANCES.items():
        out.append(f"<tr><td>{_e(k)}</td><td>{t.atol:g}</td><td>{t.rtol:g}</td><td>{_e(t.source)}</td></tr>")
    out.append("</table></body></html>")
    return "\n".join(out)
