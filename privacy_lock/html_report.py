"""The audit report as one self-contained HTML file: inline CSS, an inline SVG chart, no scripts,
no external URLs (a Content-Security-Policy forbids loading anything), so it can be archived or
mailed and opened offline years later, and shows the same thing everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

from privacy_lock.render import printable
from privacy_lock.report import (
    COUNT_COLUMNS,
    EVENT_TABLE_COLUMNS,
    Report,
    details_text,
    zone_name,
)

# Bars: one group per day, apply then revert.
CHART_HEIGHT, PLOT_TOP, PLOT_BOTTOM, PLOT_LEFT = 250, 16, 180, 72
MIN_CHART_WIDTH = 360
BAR_WIDTH, BAR_GAP, GROUP_GAP = 12, 2, 10
MAX_ACTIVE_LOCKS_LISTED = 200
_PLURAL = {"apply": ("apply", "applies"), "revert": ("revert", "reverts")}

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "Hiragino Sans", "Noto Sans CJK JP",
       sans-serif; color: #1d1d1f; margin: 2rem; max-width: 1200px; }
h1 { font-size: 1.5rem; margin: 0 0 .25rem; }
h2 { font-size: 1.15rem; margin: 2rem 0 .5rem; border-bottom: 1px solid #ddd; }
.meta { color: #555; margin: 0; }
.verify { padding: .75rem 1rem; border-radius: 6px; margin: 1rem 0; }
.verify.ok { background: #e8f5e9; border: 1px solid #66bb6a; }
.verify.broken { background: #ffebee; border: 1px solid #e53935; }
.hash { font-family: ui-monospace, Menlo, Consolas, monospace; word-break: break-all; }
table { border-collapse: collapse; margin: .5rem 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.null { color: #999; font-style: italic; }
td.time { white-space: nowrap; }
td.hash { font-size: 11px; }
tr.broken td { background: #ffcdd2; font-weight: 600; }
.broken-note { color: #b71c1c; font-weight: 600; }
.cards { display: flex; gap: 1rem; flex-wrap: wrap; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: .5rem 1rem; min-width: 8rem; }
.card b { display: block; font-size: 1.4rem; }
svg .apply { fill: #1e6fd9; } svg .revert { fill: #e07b00; }
svg text { font-size: 11px; fill: #444; } svg .axis { stroke: #999; stroke-width: 1; }
.legend span { display: inline-block; width: .8em; height: .8em; margin: 0 .3em 0 1em; }
.chart-wrap { overflow-x: auto; }
@media print { body { margin: 0; } .chart-wrap { overflow: visible; } }
"""


def html_document(
    rows: Sequence[dict[str, Any]], columns: Sequence[str] | None, payload: Any = None
) -> str:
    """The html format: the full audit report for a Report payload, else a page with the rows."""
    if isinstance(payload, Report):
        return report_html(payload)
    return _page("privacy-lock", _table(rows, list(columns or (rows[0] if rows else []))))


def report_html(report: Report, summary_only: bool = False) -> str:
    """The audit report page: verify result, figures, chart, active locks, and the events the
    report kept (the first ``--limit``, 1,000 by default), with the count of the rest and the
    command that lists them; ``summary_only``: no events. Its size is bounded by the events
    kept, the days charted and the active locks listed, never by the trail's length."""
    zone = zone_name(report.zone)
    parts = [
        "<h1>privacy-lock audit report</h1>",
        f'<p class="meta">database {_text(report.database)} &middot; generated '
        f"{escape(report.generated_at)} &middot; times in {escape(zone)} &middot; "
        f"privacy-lock {escape(report.tool_version)}</p>",
        f'<p class="meta" id="filters">filters: '
        f"{_text(' '.join(report.filter_words)) or 'none (every event)'}</p>",
        _verify_block(report),
        "<h2>Summary</h2>",
        _cards(report),
        "<h2>Applies and reverts per day</h2>",
        _chart(report),
        "<h2>Events per action, operator and day</h2>",
        _table(report.counts, COUNT_COLUMNS, table_id="counts"),
        "<h2>Active locks by age (days since applied)</h2>",
        _table(report.ages, ["age", "locks", "oldest_days"], table_id="ages"),
        _active_locks(report),
    ]
    if not summary_only:
        parts += _events(report)
    else:
        parts.append(f'<p id="events-omitted">{report.event_total:,} events selected; '
                     "<code>--summary</code> lists none.</p>")
    return _page("privacy-lock audit report", "\n".join(parts))


def _events(report: Report) -> list[str]:
    """The events section: the events kept, the tampered one marked, and the rest counted."""
    shown, total = len(report.events), report.event_total
    title = (f"Events ({total:,})" if shown >= total
             else f"Events (the first {shown:,} of {total:,})")
    broken = report.verify.broken_seq if report.verify and not report.verify.ok else None
    parts = [f"<h2>{title}</h2>"]
    if broken is not None:
        parts.append(f'<p class="broken-note">Event {broken} is where the chain breaks'
                     + (" (marked below)." if any(r["seq"] == broken for r in report.events)
                        else "; it is not among the events listed here.") + "</p>")
    parts.append(_table([{**row, "details": details_text(row["details"])}
                         for row in report.events],
                        [*EVENT_TABLE_COLUMNS, "hash"], table_id="events", broken_seq=broken))
    if shown < total and report.events:
        rest = report.rest_command(report.events[-1]["seq"])
        parts.append(f'<p id="events-rest">{total - shown:,} more events are not listed '
                     f"here (<code>--limit</code>). They are: <code>{escape(rest)}</code></p>")
    return parts


def _text(text: str) -> str:
    """Stored text for the page: control characters shown escaped (``\\x1b``, ``\\n``, as
    in the terminal table), then HTML-escaped."""
    return escape(printable(text))


def _page(title: str, body: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{STYLE}</style>
</head>
<body>
{body}
</body>
</html>
"""


def _verify_block(report: Report) -> str:
    result = report.verify
    if result is None:
        return ""
    if result.ok:
        return (
            f'<div class="verify ok" id="verify"><b>Audit chain intact:</b> {result.valid}/'
            f"{result.total} events valid (the whole trail, not only the filtered events).<br>"
            f'Head: event {result.head_seq}, <span class="hash" id="head-hash">'
            f"{escape(result.head_hash)}</span></div>"
        )
    return (
        f'<div class="verify broken" id="verify"><b>Audit chain BROKEN:</b> '
        f"{escape(result.problem or '')}<br>{result.valid}/{result.total} events valid before "
        f'it. Last intact head: event {result.head_seq}, <span class="hash" id="head-hash">'
        f"{escape(result.head_hash)}</span></div>"
    )





# The cards: (label, Figures attribute or None for computed ones, what it counts).
_FIGURE_CARDS = [
    ("locks opened", "locks_opened", "lock events: rows of `privacy-lock locks --state all`"),
    ("locks closed", "locks_closed", "revert events: rows of `locks --state reverted`"),
    ("items hidden", "items_hidden",
     "items the locks hold as of their last apply here: the `items` column of `locks`"),
    ("items restored", "items_restored", "`restored` in `privacy-lock status`"),
    ("conflicts", "conflicts",
     "items changed after the lock, left as they were: `conflicts` in `status`"),
    ("gone", "gone", "items deleted after the lock: `gone` in `status`"),
    ("apply runs", "apply_runs", "apply events, re-runs that changed nothing included"),
]


def _cards(report: Report) -> str:
    """The figures an auditor reconciles with `locks` and `status`, each with what it counts
    (its tooltip), then the events, active locks and operators."""
    figures = report.figures
    cards = [(name, getattr(figures, attr), what, attr.replace("_", "-"))
             for name, attr, what in _FIGURE_CARDS]
    cards += [("events", report.event_total, "audit events selected by the filters", "events"),
              ("active locks", len(report.active_locks), "`privacy-lock locks` (same filters)",
               "active-locks"),
              ("operators", len({r["operator"] for r in report.counts if r["operator"]}),
               "distinct operator names among the events", "operators")]
    inner = "".join(f'<div class="card" id="card-{key}" title="{escape(what)}">{escape(name)}'
                    f"<b>{n:,}</b></div>" for name, n, what, key in cards)
    return f'<div class="cards" id="summary">{inner}</div>'


def _chart(report: Report) -> str:
    series = report.daily
    if not series:
        return ('<p id="chart-empty">No applies or reverts among the selected events.</p>')
    peak = max(max(d["apply"], d["revert"]) for d in series) or 1
    group = 2 * BAR_WIDTH + BAR_GAP + GROUP_GAP
    width = max(MIN_CHART_WIDTH, PLOT_LEFT + group * len(series) + 20)
    plot_height = PLOT_BOTTOM - PLOT_TOP
    label_every = max(1, len(series) // 20)
    out = [
        f'<svg id="chart" role="img" width="{width}" height="{CHART_HEIGHT}" '
        f'viewBox="0 0 {width} {CHART_HEIGHT}" aria-label="applies and reverts per day">',
        f"<title>Applies and reverts per day ({escape(zone_name(report.zone))})</title>",
        f'<line class="axis" x1="{PLOT_LEFT}" y1="{PLOT_BOTTOM}" x2="{width - 10}" '
        f'y2="{PLOT_BOTTOM}"/>',
        f'<line class="axis" x1="{PLOT_LEFT}" y1="{PLOT_TOP}" x2="{PLOT_LEFT}" '
        f'y2="{PLOT_BOTTOM}"/>',
    ]
    for tick in sorted({0, peak // 2, peak}):
        y = PLOT_BOTTOM - plot_height * tick / peak
        out.append(f'<text x="{PLOT_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{tick}</text>')
    for index, day in enumerate(series):
        x = PLOT_LEFT + 6 + index * group
        out.append(f'<g class="day" data-day="{escape(day["day"])}">')
        for offset, action in enumerate(("apply", "revert")):
            n = day[action]
            height = plot_height * n / peak
            out.append(
                f'<rect class="bar {action}" x="{x + offset * (BAR_WIDTH + BAR_GAP)}" '
                f'y="{PLOT_BOTTOM - height:.1f}" width="{BAR_WIDTH}" height="{height:.1f}">'
                f"<title>{escape(day['day'])}: {n} {_PLURAL[action][n != 1]}</title></rect>"
            )
        if index % label_every == 0:
            lx, ly = x + BAR_WIDTH, PLOT_BOTTOM + 12
            out.append(f'<text x="{lx}" y="{ly}" text-anchor="end" '
                       f'transform="rotate(-45 {lx} {ly})">{escape(day["day"])}</text>')
        out.append("</g>")
    out.append("</svg>")
    legend = ('<p class="legend"><span class="apply" style="background:#1e6fd9"></span>apply '
              '(run finished)<span class="revert" style="background:#e07b00"></span>revert '
              "(lock closed)</p>")
    return f'<div class="chart-wrap">{"".join(out)}</div>{legend}'


def _active_locks(report: Report) -> str:
    if not report.active_locks:
        return "<p>No active locks match the filters.</p>"
    shown = report.active_locks[:MAX_ACTIVE_LOCKS_LISTED]
    note = ""
    if len(report.active_locks) > len(shown):
        note = (f"<p>The {len(shown)} oldest of {len(report.active_locks)} are listed; "
                "<code>privacy-lock locks --format csv</code> lists all.</p>")
    columns = ["lock_id", "user", "age_days", "items", "operator", "ticket", "created_at",
               "reason"]
    return _table(shown, columns, table_id="active-locks") + note


_CELL_CLASS = {"hash": ' class="hash"', "prev_hash": ' class="hash"', "time": ' class="time"',
               "created_at": ' class="time"', "day": ' class="time"'}


def _table(rows: Sequence[dict[str, Any]], columns: list[str], table_id: str = "",
           broken_seq: int | None = None) -> str:
    """A table; an empty cell shows "-" (as in the terminal), the row of ``broken_seq`` (the
    event where the chain breaks) is marked."""
    if not rows:
        return "<p>(none)</p>"
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            if value is None:
                cells.append('<td class="null">-</td>')
            elif isinstance(value, int | float) and not isinstance(value, bool):
                cells.append(f'<td class="num">{value}</td>')
            elif column in ("hash", "prev_hash"):
                # The head hash is printed in full above; per event a prefix identifies it (the
                # csv/json export carries every full hash for re-checking).
                cells.append(f'<td class="hash" title="{escape(value)}">'
                             f"{escape(value[:16])}&hellip;</td>")
            else:
                css = _CELL_CLASS.get(column, "")
                cells.append(f"<td{css}>{_text(str(value))}</td>")
        if broken_seq is not None and row.get("seq") == broken_seq:
            body.append(f'<tr class="broken" id="broken-event" title="the audit chain breaks '
                        f'here">{"".join(cells)}</tr>')
        else:
            body.append(f"<tr>{''.join(cells)}</tr>")
    ident = f' id="{table_id}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
