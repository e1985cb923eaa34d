"""HTML and SVG building blocks of the transfer register (:mod:`veilpix.audit._register`):
escaping, numbers, sizes and times, tables, labels, the charts (calls per month by outcome,
horizontal bars), and the page's stylesheet.

Every value is escaped (:func:`esc`) before it goes into the page; functions that return
HTML take either plain values or HTML already escaped, as their docstrings say. The page loads
nothing: the stylesheet is inline and charts are inline SVG. No element carries a ``style``
attribute (sizes are SVG attributes, colours are classes), so the same HTML can be embedded
under a Content-Security-Policy of ``style-src 'self'`` with :data:`CSS` served as a file.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from veilpix.audit._records import StatsRow

__all__ = [
    "CSS",
    "OUTCOMES",
    "ROUTES",
    "axis_step",
    "bullets",
    "chips",
    "esc",
    "figure",
    "hbar_chart",
    "html_table",
    "missing",
    "month_chart",
    "nbytes",
    "num",
    "per_line",
    "route",
    "share_bar",
    "when",
]


OUTCOMES: tuple[str, ...] = ("sent", "blocked", "failed", "unknown")
_OUTCOME_LABELS = {
    "sent": "Sent",
    "blocked": "Blocked",
    "failed": "Failed",
    "unknown": "Outcome unknown",
}


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def num(n: int) -> str:
    return f"{n:,}"


def nbytes(n: int) -> str:
    """``n`` bytes in SI units, the exact figure in the tooltip."""
    size, unit = float(n), "B"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            break
        size /= 1000
    text = f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
    return f'<span title="{num(n)} bytes">{esc(text)}</span>'


def when(stamp: str | None) -> str:
    """A stored UTC time shown to the minute."""
    if not stamp:
        return '<span class="missing">—</span>'
    return f'<span class="when" title="{esc(stamp)}">{esc(stamp[:10])} {esc(stamp[11:16])}</span>'


# How each route into veilpix (``who.door`` in the log) is named on a page.
ROUTES = {
    "sdk": "SDK",
    "transport": "SDK (HTTP transport)",
    "gateway": "gateway",
    "intercept": "intercept proxy",
}


def route(door: object) -> str:
    """The route a call came in by, in plain words, as HTML."""
    if not door:
        return missing()
    return esc(ROUTES.get(str(door), str(door)))


def missing(text: str = "not recorded", *, warn: bool = False) -> str:
    return f'<span class="{"warn" if warn else "missing"}">{esc(text)}</span>'


def chips(counts: Mapping[str, int], notes: Mapping[str, str] | None = None) -> str:
    """Short values as small labels, most frequent first, each with its count as a tooltip.
    ``notes``: HTML (already escaped) shown inside the label of some values."""
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    notes = notes or {}
    return " ".join(
        f'<span class="chip" title="{num(n)} call{"" if n == 1 else "s"}">{esc(name)}'
        f"{' ' + notes[name] if notes.get(name) else ''}</span>"
        for name, n in items
    )


def bullets(items: Iterable[str], *, cls: str = "plain") -> str:
    """Items (already-escaped HTML) as a list; empty when there are none."""
    listed = "".join(f"<li>{item}</li>" for item in items)
    return f'<ul class="{esc(cls)}">{listed}</ul>' if listed else ""


def share_bar(parts: Sequence[tuple[str, float]], *, label: str) -> str:
    """One bar split into ``(outcome class, share)`` parts, as inline SVG: no style
    attribute, so the page also works under a CSP without ``'unsafe-inline'`` styles."""
    total = sum(share for _, share in parts) or 1
    x, rects = 0.0, []
    for cls, share in parts:
        width = 100 * share / total
        if width > 0:
            rects.append(
                f'<rect class="o-{esc(cls)}" x="{x:.2f}" y="0" width="{width:.2f}" height="4"/>'
            )
        x += width
    return (
        '<svg class="share" viewBox="0 0 100 4" preserveAspectRatio="none" role="img" '
        f'aria-label="{esc(label)}">{"".join(rects)}</svg>'
    )


def per_line(counts: Mapping[str, int]) -> str:
    """Longer values (entities, purposes, legal bases) one per line, most frequent first."""
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return "".join(f'<div class="v" title="{num(n)} calls">{esc(name)}</div>' for name, n in items)


def html_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    numeric: Iterable[int] = (),
    narrow: bool = False,
) -> str:
    """An HTML table; cells are already-escaped HTML, ``numeric`` columns are right-aligned."""
    right = set(numeric)

    def cls(i: int) -> str:
        return ' class="n"' if i in right else ""

    head = "".join(f"<th{cls(i)}>{esc(h)}</th>" for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f"<td{cls(i)}>{c}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    table = '<table class="narrow">' if narrow else "<table>"
    return f"{table}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def axis_step(top: int) -> int:
    """A round axis step (1, 2 or 5 times a power of ten) giving about four gridlines."""
    raw = max(top / 4, 1)
    power = int(10 ** math.floor(math.log10(raw)))  # raw >= 1, so a whole number
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def month_chart(per_month: Mapping[str, StatsRow]) -> str:
    """Calls per month, stacked by outcome (inline SVG), from the monthly totals."""
    months = sorted(per_month)
    width, height, left, bottom, top = 760, 250, 48, 34, 14
    plot_w, plot_h = width - left - 12, height - top - bottom
    peak = max(per_month[m].calls for m in months)
    step = axis_step(peak)
    ceiling = step * math.ceil(peak / step)

    def y(value: float) -> float:
        return top + plot_h - plot_h * value / ceiling

    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="Calls per month by outcome">'
    ]
    parts.extend(
        f'<line class="grid" x1="{left}" x2="{width - 12}" y1="{y(t):.1f}" y2="{y(t):.1f}"/>'
        f'<text class="axis" x="{left - 6}" y="{y(t) + 4:.1f}" text-anchor="end">{num(t)}</text>'
        for t in range(0, ceiling + 1, step)
    )
    slot = plot_w / len(months)
    bar = min(slot * 0.7, 56)
    every = math.ceil(len(months) / 12)
    for i, month in enumerate(months):
        row = per_month[month]
        x = left + i * slot + (slot - bar) / 2
        base = 0
        for outcome in OUTCOMES:
            n = getattr(row, outcome)
            if n:
                parts.append(
                    f'<rect class="o-{outcome}" x="{x:.1f}" y="{y(base + n):.1f}" '
                    f'width="{bar:.1f}" height="{y(base) - y(base + n):.1f}">'
                    f"<title>{esc(month)}: {num(n)} {esc(_OUTCOME_LABELS[outcome].lower())}"
                    "</title></rect>"
                )
                base += n
        if i % every == 0:
            parts.append(
                f'<text class="axis" x="{x + bar / 2:.1f}" y="{height - bottom + 16}" '
                f'text-anchor="middle">{esc(month)}</text>'
            )
    parts.append("</svg>")
    legend = "".join(
        f'<span><i class="o-{o}"></i>{esc(_OUTCOME_LABELS[o])}</span>' for o in OUTCOMES
    )
    return "".join(parts) + f'<div class="legend">{legend}</div>'


def figure(caption: str, content: str) -> str:
    return f"<figure><figcaption>{esc(caption)}</figcaption>{content}</figure>"


def hbar_chart(values: Sequence[tuple[str, int]], *, label: str) -> str:
    """Horizontal bars, one per name (inline SVG)."""
    width, row_h, name_w = 760, 24, 170
    height = row_h * len(values) + 8
    peak = max((v for _, v in values), default=0) or 1
    bar_w = width - name_w - 90
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{esc(label)}">'
    ]
    for i, (name, value) in enumerate(values):
        y = 4 + i * row_h
        w = bar_w * value / peak
        shown = name if len(name) <= 26 else name[:25] + "…"
        parts.append(
            f'<text class="label" x="{name_w - 8}" y="{y + 16}" text-anchor="end">{esc(shown)}'
            f"<title>{esc(name)}</title></text>"
            f'<rect class="o-sent" x="{name_w}" y="{y + 4}" width="{w:.1f}" height="{row_h - 8}"/>'
            f'<text class="axis" x="{name_w + w + 6:.1f}" y="{y + 16}">{num(value)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


CSS = """
:root{--ink:#1f2933;--muted:#616e7c;--line:#d9e2ec;--head:#f0f4f8;--ok:#1e6b43;--ok-bg:#e7f5ec;
--bad:#a8201a;--bad-bg:#fdecea;--warn:#8a5300;--warn-bg:#fff3d6;--sent:#2f6db5;
--blocked:#e0a030;--failed:#98a2b3;--unknown:#c0392b}
*{box-sizing:border-box}
body{margin:0;color:var(--ink);background:#fff;font:14px/1.45 system-ui,-apple-system,
"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:32px 28px 48px}
h1{font-size:26px;margin:0 0 6px}
h2{font-size:17px;margin:34px 0 4px;padding-bottom:4px;border-bottom:2px solid var(--line)}
p.note,p.lead,footer{color:var(--muted)}
p.note{margin:0 0 10px;font-size:13px}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:12px 0;font-size:13px}
dl.meta dt{color:var(--muted)}dl.meta dd{margin:0;word-break:break-all}
table{width:100%;border-collapse:collapse;font-size:12.5px;margin:6px 0}
th,td{text-align:left;padding:5px 7px;border-bottom:1px solid var(--line);vertical-align:top}
th{background:var(--head);font-weight:600;font-size:12px}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.missing{color:var(--muted);font-style:italic}
.warn{color:var(--warn);background:var(--warn-bg);padding:0 4px;border-radius:3px}
.third{color:var(--warn)}
.okay{color:var(--ok)}
.chip{display:inline-block;border:1px solid var(--line);border-radius:9px;padding:0 7px;
margin:1px 2px 1px 0;font-size:12px;background:#fff}
code,.id{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:11.5px}
.status{border-left:6px solid;border-radius:4px;padding:12px 16px;margin:18px 0}
.status small{color:var(--muted)}
.status.ok{border-color:var(--ok);background:var(--ok-bg)}
.status.ok strong{color:var(--ok)}
.status.bad{border-color:var(--bad);background:var(--bad-bg)}
.status.bad strong{color:var(--bad)}
.status.warn-box{border-color:#d99a00;background:var(--warn-bg)}
.status.warn-box strong{color:var(--warn)}
.status ul{margin:6px 0}
.tiles{display:flex;flex-wrap:wrap;gap:8px;margin:14px 0}
.tile{flex:1 1 96px;border:1px solid var(--line);border-radius:6px;padding:8px 10px}
.tile>span{color:var(--muted);font-size:12px}
.tile b{display:block;font-size:20px;white-space:nowrap}
.tile small{display:block;font-size:11px;font-weight:400;color:var(--muted);white-space:normal}
.v+.v{margin-top:5px}
.when{white-space:nowrap}
table.narrow{width:auto;min-width:55%}
figure{margin:10px 0 0}
figcaption{font-size:13px;margin:0 0 4px;color:var(--muted);font-weight:600}
svg.chart{width:100%;height:auto;max-width:760px;display:block}
svg .grid{stroke:var(--line);stroke-width:1}
svg .axis{fill:var(--muted);font-size:11px}svg .label{fill:var(--ink);font-size:12px}
.o-sent{fill:var(--sent);background:var(--sent)}.o-blocked{fill:var(--blocked);background:var(--blocked)}
.o-failed{fill:var(--failed);background:var(--failed)}.o-unknown{fill:var(--unknown);background:var(--unknown)}
.legend{display:flex;gap:16px;font-size:12px;color:var(--muted);margin:4px 0 8px}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px}
svg.share{display:block;width:100%;max-width:520px;height:12px;border-radius:3px;margin:6px 0 2px}
dl.record{display:grid;grid-template-columns:minmax(180px,24%) 1fr;margin:8px 0;font-size:13px;
border-top:1px solid var(--line)}
dl.record dt,dl.record dd{margin:0;padding:7px 8px;border-bottom:1px solid var(--line)}
dl.record dt{font-weight:600;background:var(--head)}
dl.record dt small{display:block;font-weight:400;font-size:11px;color:var(--muted)}
dl.record dd .sub{margin-top:6px;color:var(--muted);font-size:12px}
.lines{white-space:pre-line}
.hint{color:var(--muted);font-size:11.5px}
ul.plain,ul.measures{margin:0;padding-left:18px}
ul.plain li+li,ul.measures li+li{margin-top:3px}
.chip .warn{font-size:11px}
.status.incomplete{border-color:#d99a00;background:var(--warn-bg);padding:8px 14px}
.status.incomplete strong{color:var(--warn)}
.empty{padding:28px;text-align:center;border:1px dashed var(--line);border-radius:6px;
color:var(--muted);font-size:16px;margin:20px 0}
footer{margin-top:36px;font-size:12px;border-top:1px solid var(--line);padding-top:10px}
@page{size:A4 landscape;margin:12mm}
@media print{
body{font-size:9.5pt}main{max-width:none;padding:0}
h2{break-after:avoid;margin-top:18px}tr,.status,.tiles,figure,dl.record dd{break-inside:avoid}
thead{display:table-header-group}
*{-webkit-print-color-adjust:exact;print-color-adjust:exact}}
"""
