"""The one place that turns rows into table / csv / json / html text."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any

import click
from tabulate import tabulate
from wcwidth import wcswidth, wcwidth

from privacy_lock import report as reporting
from privacy_lock.errors import UsageError
from privacy_lock.vocabulary import Mode

if TYPE_CHECKING:
    from privacy_lock.engine import KindCounts, Outcome

# The formats of every command that prints rows (as WP-CLI has them): ndjson is one JSON
# object per line, ids the listing's ids on one line, count how many there are.
FORMATS = ("table", "csv", "json", "ndjson", "ids", "count")
# html is for reports meant to be read or archived (audit report), not for operators' commands.
REPORT_FORMATS = (*FORMATS, "html")
# tsv is written to a file named .tsv (--output), never asked for by --format.
FILE_FORMATS = {".csv": "csv", ".json": "json", ".ndjson": "ndjson", ".tsv": "tsv"}


def render(
    rows: Sequence[dict[str, Any]],
    fmt: str,
    columns: Sequence[str] | None = None,
    payload: Any = None,
    value_columns: Sequence[str] = (),
) -> str:
    """Render ``rows`` (one dict per line) in ``fmt``.

    ``payload`` is what JSON output prints instead of the flat rows, when the command has a
    richer machine-readable shape (e.g. counts nested per kind); tables and CSV always show rows.
    In a table, a missing value shows as "-", except in ``value_columns`` (visibility values),
    where NULL means "site default" and is shown as NULL.
    """
    if fmt == "json":
        data = payload if payload is not None else list(rows)
        return json.dumps(data, **_JSON_STYLE)
    if fmt == "ndjson":
        items = payload if isinstance(payload, list) else rows
        return "\n".join(json.dumps(item, ensure_ascii=False, default=str) for item in items)
    columns = list(columns or dict.fromkeys(k for row in rows for k in row))
    if fmt in ("csv", "tsv"):
        return "".join(delimited_lines(rows, columns, fmt)).rstrip("\n")
    if fmt == "table":
        if not rows:
            return "(none)"
        body = [[_table_cell(row.get(c), c in value_columns) for c in columns] for row in rows]
        return tabulate(body, headers=columns, tablefmt="simple", disable_numparse=True)
    if fmt == "html":
        from privacy_lock.html_report import html_document

        return html_document(rows, columns, payload)
    raise ValueError(f"unknown format {fmt!r}")


_JSON_STYLE: dict[str, Any] = {"ensure_ascii": False, "indent": 2, "default": str}


def delimited_lines(
    rows: Iterable[dict[str, Any]], columns: Sequence[str], fmt: str = "csv"
) -> Iterator[str]:
    """CSV (or, for ``tsv``, tab-separated) text of ``rows``, a header first, one line per row
    as each is read (a generator of rows is never held whole)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore",
                            lineterminator="\n", delimiter="\t" if fmt == "tsv" else ",")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: _csv_cell(row.get(c)) for c in columns})
        if out.tell() > 65536:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
    yield out.getvalue()


def json_pieces(data: Any) -> Iterator[str]:
    """``data`` as indented JSON text, in pieces as it is encoded (for large outputs)."""
    return json.JSONEncoder(**_JSON_STYLE).iterencode(data)


def outcome_rows(outcomes: Sequence[Outcome], mode: Mode) -> list[dict[str, Any]]:
    """One flat row per request and kind, for tables and CSV (the line column only for a file)."""
    counts = ("changed", "already_private") if mode == "apply" else (
        "restored", "conflicts", "gone")
    from_file = any(o.request.line for o in outcomes)
    rows = []
    for outcome in outcomes:
        kinds: dict[str, KindCounts | None] = {**outcome.kinds} or {"-": None}
        for kind, kind_counts in kinds.items():
            row: dict[str, Any] = {"line": outcome.request.line} if from_file else {}
            row.update({"user": outcome.user, "lock": outcome.lock_id,
                        "status": outcome.status, "kind": kind})
            for name in counts:
                row[name] = getattr(kind_counts, name) if kind_counts else 0
            if outcome.error:
                row["error"] = outcome.error
            rows.append(row)
    return rows


def report_text(report: reporting.Report, fmt: str, summary: bool,
                fields: Sequence[str] = (), wide: bool = False,
                notes: list[str] | None = None) -> str:
    """The text of ``audit report`` built from ``report``: the html page (``summary``: the
    summary only), the --summary, or the table of the events it kept (the exports, which can
    be of any size, are :func:`report_pieces`). Notes about columns left out to fit the
    terminal are added to ``notes``, for stderr."""
    if fmt == "html":
        from privacy_lock.html_report import report_html

        return report_html(report, summary_only=summary)
    if summary:
        return _summary_text(report, fmt)
    columns = list(fields or reporting.EVENT_TABLE_COLUMNS)
    rows = [reporting.table_row(r) for r in report.events]
    text, fitted = listing_text(Listing(rows, columns, optional=("lock",),
                                       cut=("details", "reason")),
                               View("table", tuple(fields), wide))
    lines = [text]
    if notes is not None:
        notes += fitted
    rest = report.event_total - len(report.events)
    if rest > 0 and report.events:
        lines.append(f"... {rest:,} more events: {report.rest_command(report.events[-1]['seq'])}")
    return "\n".join(lines)


def report_pieces(
    events: Iterable[dict[str, Any]], fmt: str, fields: Sequence[str] = ()
) -> Iterator[str]:
    """An export of ``events`` (report rows, read as they come) in ``fmt``: csv, tsv, json,
    ndjson, ids or count, in pieces, so a million events are never held at once."""
    columns = list(fields or reporting.EVENT_COLUMNS)
    if fmt in ("csv", "tsv"):
        yield from delimited_lines(events, columns, fmt)
    elif fmt in ("json", "ndjson"):
        indent = None if fmt == "ndjson" else 2
        yield "" if indent is None else "["
        for n, row in enumerate(events):
            item = reporting.event_json(row)
            if fields:
                item = {c: item.get(c) for c in columns}
            text = json.dumps(item, ensure_ascii=False, indent=indent, default=str)
            if indent is None:
                yield text + "\n"
            else:
                yield ("," if n else "") + "\n  " + text.replace("\n", "\n  ")
        if indent is not None:
            yield "\n]"
    elif fmt == "ids":
        for n, row in enumerate(events):
            yield (" " if n else "") + str(row["seq"])
    elif fmt == "count":
        yield str(sum(1 for _ in events))
    else:
        raise ValueError(f"not an export format: {fmt!r}")


def _summary_text(report: reporting.Report, fmt: str) -> str:
    """The --summary output: the figures, counts per action x operator x day, then active
    locks by age."""
    if fmt in ("json", "ndjson"):
        return render([], "json", payload=report.summary_json())
    if fmt in ("csv", "tsv"):
        return render(report.counts, fmt, columns=reporting.COUNT_COLUMNS)
    if fmt in ("ids", "count"):
        raise UsageError(f"--summary has no {fmt} format (use table, csv, json or html)")
    figures = report.figures.as_dict()
    return "\n".join([
        "figures: " + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in figures.items()),
        "",
        render(report.counts, fmt, columns=reporting.COUNT_COLUMNS), "",
        "active locks by age (days since applied):",
        render(report.ages, fmt, columns=["age", "locks", "oldest_days"]),
    ])


# --- listings: the rows a command prints, in the format and width asked for ----------------------


@dataclass(frozen=True)
class View:
    """How the rows are asked for: ``--format``, ``--fields`` (these columns, in this order)
    and ``--wide`` (every column, whatever the terminal's width)."""

    fmt: str = "table"
    fields: tuple[str, ...] = ()
    wide: bool = False


@dataclass
class Listing:
    """A command's rows and what the formats need to know about them.

    ``payload`` is the richer JSON shape printed when no ``--fields`` narrows the rows (a list
    is also what ndjson prints, one item per line). ``optional`` columns are left out, in this
    order, when a table is wider than the terminal; ``cut`` columns (free text) are then
    shortened with an ellipsis, the first named first. ``id_column`` is what ``--format ids``
    prints."""

    rows: Sequence[dict[str, Any]]
    columns: Sequence[str] = ()
    id_column: str | None = None
    payload: Any = None
    value_columns: Sequence[str] = ()
    optional: Sequence[str] = ()
    cut: Sequence[str] = ()


# A table longer than this is a flood, not an answer: batch runs print a summary instead.
SHORT_RESULT_ROWS = 50
# Tables fit this many columns when stdout is not a terminal (a terminal: its own width).
DEFAULT_TABLE_WIDTH = 120
MIN_TABLE_WIDTH = 80
MIN_CUT_WIDTH = 16  # a shortened text column keeps at least this many columns
FAILURES_LISTED = 20  # failed requests listed in a summary; the rest are in the result file


def check_fields(fields: Sequence[str], available: Sequence[str], what: str) -> tuple[str, ...]:
    """``--fields`` as a tuple of known columns; a usage error naming the unknown one and the
    fields there are (exit 2: checked before a command changes anything)."""
    unknown = [f for f in fields if f not in available]
    if unknown:
        raise UsageError(f"unknown field {unknown[0]!r} for {what} (fields: "
                         f"{', '.join(available)})")
    if len(set(fields)) != len(fields):
        raise UsageError(f"--fields names a field twice: {', '.join(fields)}")
    return tuple(fields)


def parse_fields(text: str | None) -> tuple[str, ...]:
    """``--fields a,b, c`` as ("a", "b", "c")."""
    return tuple(f.strip() for f in (text or "").split(",") if f.strip())


def listing_text(listing: Listing, view: View, width: int | None = None) -> tuple[str, list[str]]:
    """The text of ``listing`` as ``view`` asks, and notes for stderr (columns left out)."""
    columns = list(view.fields or listing.columns
                   or dict.fromkeys(k for row in listing.rows for k in row))
    fmt = view.fmt
    if fmt == "ids":
        return " ".join(str(i) for i in listing_ids(listing)), []
    if fmt == "count":
        return str(listing_count(listing)), []
    if fmt in ("json", "ndjson"):
        if view.fields or listing.payload is None:
            rows = [{c: row.get(c) for c in columns} for row in listing.rows]
            return render(rows, fmt), []
        return render(listing.rows, fmt, payload=listing.payload), []
    if fmt != "table" or not listing.rows:
        return render(listing.rows, fmt, columns=columns), []
    return fitted_table(listing, columns, width if width is not None else table_width(),
                        wide=view.wide)


def echo_listing(listing: Listing, view: View) -> None:
    """Print ``listing`` as ``view`` asks (notes about left-out columns on stderr)."""
    text, notes = listing_text(listing, view)
    click.echo(text)
    for line in notes:
        click.echo(line, err=True)


def listing_ids(listing: Listing) -> list[Any]:
    """The distinct ids of the listing, in order (a user with two kinds is one id)."""
    if listing.id_column is None:
        raise UsageError("--format ids: this listing has no id column")
    return [i for i in dict.fromkeys(row.get(listing.id_column) for row in listing.rows)
            if i is not None]


def listing_count(listing: Listing) -> int:
    """How many things the listing shows: distinct ids where it has an id column (a lock
    with two kinds is one), else rows."""
    if listing.id_column is None:
        return len(listing.rows)
    return len(dict.fromkeys((row.get(listing.id_column), row.get("line"), row.get("user"))
                             for row in listing.rows))


def table_width() -> int:
    """The width tables fit: the terminal's when stdout is one, else $COLUMNS, else 120;
    never below 80 (narrower, too little of each row would be left)."""
    stream = sys.stdout
    if _is_terminal(stream):
        width = shutil.get_terminal_size((DEFAULT_TABLE_WIDTH, 24)).columns
    else:
        env = os.environ.get("COLUMNS", "")
        width = int(env) if env.isdigit() else DEFAULT_TABLE_WIDTH
    return max(width, MIN_TABLE_WIDTH)


def short_result_rows() -> int:
    """Rows a run prints as a table before it prints a summary instead: 50, or the
    terminal's height when stdout is a smaller terminal."""
    if _is_terminal(sys.stdout):
        return max(10, min(SHORT_RESULT_ROWS, shutil.get_terminal_size((80, 24)).lines - 6))
    return SHORT_RESULT_ROWS


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def fitted_table(
    listing: Listing, columns: list[str], width: int, *, wide: bool = False
) -> tuple[str, list[str]]:
    """A table of ``columns`` no wider than ``width``: optional columns left out first, then
    free-text columns shortened (``wide``: neither). Widths are measured in terminal cells
    (wcwidth), so Japanese text lines up."""
    cells = {c: [_table_cell(row.get(c), c in listing.value_columns) for row in listing.rows]
             for c in columns}
    # tabulate's "simple" tables give a header two more cells than its text (MIN_PADDING)
    widths = {c: max([cell_width(c) + 2, *(cell_width(v) for v in cells[c])]) for c in columns}
    shown = list(columns)

    def total() -> int:
        return sum(widths[c] for c in shown) + 2 * (len(shown) - 1)

    dropped: list[str] = []
    for column in listing.optional if not wide else ():
        if total() <= width:
            break
        if column in shown and len(shown) > 1:
            shown.remove(column)
            dropped.append(column)
    cut: list[str] = []
    for column in listing.cut if not wide else ():
        over = total() - width
        if over <= 0:
            break
        if column not in shown or widths[column] <= MIN_CUT_WIDTH:
            continue
        cap = max(MIN_CUT_WIDTH, widths[column] - over)
        cells[column] = [shorten(v, cap) for v in cells[column]]
        widths[column] = cap
        cut.append(column)
    body = [[cells[c][i] for c in shown] for i in range(len(listing.rows))]
    text = tabulate(body, headers=shown, tablefmt="simple", disable_numparse=True)
    notes = []
    if dropped or cut:
        what = []
        if dropped:
            what.append(f"left out {', '.join(dropped)}")
        if cut:
            what.append(f"shortened {', '.join(cut)}")
        notes.append(f"(to fit {width} columns: {'; '.join(what)}. --wide shows every "
                     "column in full; --fields chooses them)")
    return text, notes


def cell_width(text: str) -> int:
    """Terminal cells ``text`` takes (a CJK character takes two)."""
    n = wcswidth(text)
    return n if n >= 0 else len(text)


def shorten(text: str, cap: int) -> str:
    """``text`` cut to ``cap`` terminal cells, ending in an ellipsis when cut."""
    if cell_width(text) <= cap:
        return text
    out, used = [], 0
    for char in text:
        w = max(wcwidth(char), 0)
        if used + w > cap - 1:
            break
        out.append(char)
        used += w
    return "".join(out) + "…"


def echo_outcomes(
    view: View, rows: Callable[[], Sequence[dict[str, Any]]], payload: Callable[[], Any], *,
    columns: Sequence[str] = (), id_column: str = "lock", full_hint: str = "",
) -> bool:
    """Print a batch's outcomes: ``rows()`` as a table or CSV, or ``payload()`` as JSON, built
    only for the format asked and, for JSON, written as it is encoded. Built whole first, the
    JSON text of 10,000 outcomes held 42 MB (``json.dumps`` with an indent joins its pieces
    at the end), and both shapes were built for every format.

    A table longer than a screen (:func:`short_result_rows`) is printed as a summary by status
    and kind with the failures listed; ``full_hint`` says where the full table is. Returns
    True when it printed the summary."""
    if view.fmt == "json" and not view.fields:
        pieces = json_pieces(payload())
        # A few thousand pieces per write: one write per piece cost 1 s per 10,000 outcomes.
        while text := "".join(islice(pieces, 4096)):
            click.echo(text, nl=False)
        click.echo()
        return False
    flat = rows()
    if view.fmt == "table" and len(flat) > short_result_rows():
        click.echo(outcome_summary(flat, full_hint))
        return True
    listing = Listing(flat, [c for c in columns if any(c in r for r in flat)] or (),
                      id_column=id_column,
                      payload=payload() if view.fmt == "ndjson" and not view.fields else None,
                      optional=("line", "already_private", "gone"), cut=("error",))
    echo_listing(listing, view)
    return False


def outcome_summary(rows: Sequence[dict[str, Any]], full_hint: str) -> str:
    """A long run's result in a screen: requests per status, the rows per status and kind
    with their counts summed, and the first failures."""
    numbers = [c for c in ("changed", "already_private", "restored", "conflicts", "gone")
               if any(c in r for r in rows)]
    requests: dict[tuple[Any, ...], str] = {}
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        requests[(row.get("line"), row.get("request"), row.get("user"), row.get("lock"))] = \
            row["status"]
        group = groups.setdefault((row["status"], row["kind"]), {
            "status": row["status"], "kind": row["kind"], "requests": 0,
            **dict.fromkeys(numbers, 0)})
        group["requests"] += 1
        for name in numbers:
            group[name] += row.get(name) or 0
    per_status: dict[str, int] = {}
    for status in requests.values():
        per_status[status] = per_status.get(status, 0) + 1
    lines = [f"{len(requests):,} requests: " + ", ".join(
        f"{n:,} {status}" for status, n in sorted(per_status.items(), key=lambda kv: -kv[1])),
        "", render(sorted(groups.values(), key=lambda g: (g["status"], g["kind"])), "table")]
    failed = [r for r in rows if r.get("error")]
    if failed:
        seen = list({(r.get("line"), r.get("request"), r.get("user")): r
                     for r in failed}.values())
        columns = [c for c in ("line", "request", "user", "lock", "status", "error")
                   if any(c in r for r in seen)]
        lines += ["", f"errors ({len(seen):,}):",
                  fitted_table(Listing(seen[:FAILURES_LISTED], columns),
                               columns, table_width())[0]]
        if len(seen) > FAILURES_LISTED:
            lines.append(f"... and {len(seen) - FAILURES_LISTED:,} more")
    lines += ["", f"({len(rows):,} result rows not shown{': ' + full_hint if full_hint else ''})"]
    return "\n".join(lines)


# --- what a field may hold once it is printed or opened in a spreadsheet -------------------------

# A spreadsheet runs a CSV field that begins with = + - or @ as a formula (OWASP "CSV
# injection"); tab and CR too, as some importers strip them and look at what follows.
_FORMULA = re.compile(r"'*[=+\-@\t\r]")  # after any "'"s (see _NEUTRALIZED)
_PLAIN_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# What csv_text wrote: a "'" before quotes and a formula character. Reading takes one "'" off,
# so every value round-trips (a value written "'=x" of its own is stored as "''=x").
_NEUTRALIZED = re.compile(r"'+[=+\-@\t\r]")
CSV_RAW_ENV = "PRIVACY_LOCK_CSV_RAW"
_csv_raw: ContextVar[bool] = ContextVar("privacy_lock_csv_raw", default=False)


@contextmanager
def csv_raw(raw: bool = True) -> Iterator[None]:
    """Inside, CSV output writes text fields exactly as stored (``--csv-raw``, for programs
    that read the CSV; a spreadsheet would run a field such as ``=HYPERLINK(...)``)."""
    token = _csv_raw.set(raw)
    try:
        yield
    finally:
        _csv_raw.reset(token)


def csv_text(value: str) -> str:
    """A text field as the tool's CSV holds it: ``'`` before a field a spreadsheet would run
    as a formula (it begins with = + - @ tab or CR, after any ``'``). Numbers, and text that
    is a plain number such as the id ``-5``, are not formulas and stay as they are."""
    if _FORMULA.match(value) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def csv_text_read(value: str) -> str:
    """The value :func:`csv_text` was given: one leading ``'`` taken off a field that begins
    with quotes and then a formula character (as a spreadsheet reads a leading ``'``)."""
    return value[1:] if _NEUTRALIZED.match(value) else value


_SHOWN_ESCAPED = {
    **{code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))},
    ord("\t"): "\\t", ord("\n"): "\\n", ord("\r"): "\\r",
    # bidi embeddings, overrides and isolates reorder what follows them on screen
    # ("Trojan Source"); line and paragraph separators break lines like a newline.
    **{code: f"\\u{code:04x}" for code in (*range(0x202A, 0x202F), *range(0x2066, 0x206A),
                                            0x2028, 0x2029)},
}
_SHOWN_ESCAPED_KEEP_NEWLINES = {k: v for k, v in _SHOWN_ESCAPED.items() if k != ord("\n")}


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` for a terminal or a page: every control character written as an escape
    (``\\x1b``, ``\\n``, ``\\t``), so stored text can never move the cursor, retitle the
    terminal, reorder the line or forge one. ``keep_newlines`` keeps ``\\n`` (a message of
    the tool's own that spans lines)."""
    return text.translate(_SHOWN_ESCAPED_KEEP_NEWLINES if keep_newlines else _SHOWN_ESCAPED)


def _csv_cell(value: Any) -> Any:
    """None as an empty field; text neutralized (:func:`csv_text`) unless --csv-raw; numbers
    as they are."""
    if value is None:
        return ""
    if isinstance(value, str) and not _csv_raw.get():
        return csv_text(value)
    return value


def _table_cell(value: Any, is_value: bool) -> str:
    """NULL and '' are shown so that neither is mistaken for the other; control characters
    escaped."""
    if value is None:
        return "NULL" if is_value else "-"
    if value == "":
        return "''"
    return printable(str(value))
