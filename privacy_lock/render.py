"""The one place that turns rows into table / csv / json / html text."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from itertools import islice
from typing import TYPE_CHECKING, Any

import click
from tabulate import tabulate

from privacy_lock import report as reporting
from privacy_lock.vocabulary import Mode

if TYPE_CHECKING:
    from privacy_lock.engine import KindCounts, Outcome

FORMATS = ("table", "csv", "json")
# html is for reports meant to be read or archived (audit report), not for operators' commands.
REPORT_FORMATS = (*FORMATS, "html")


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
    columns = list(columns or dict.fromkeys(k for row in rows for k in row))
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: _csv_cell(row.get(c)) for c in columns})
        return out.getvalue().rstrip("\n")
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


def report_text(report: reporting.Report, fmt: str, summary: bool) -> str:
    """The text of ``audit report``: the html page, the --summary, or the events in ``fmt``."""
    if fmt == "html":
        return render(report.events, fmt, payload=report)
    if summary:
        return _summary_text(report, fmt)
    if fmt == "json":
        return render(report.events, fmt, payload=[reporting.event_json(r)
                                                   for r in report.events])
    if fmt == "csv":
        return render(report.events, fmt, columns=reporting.EVENT_COLUMNS)
    return render([reporting.table_row(r) for r in report.events], fmt,
                  columns=reporting.EVENT_TABLE_COLUMNS)


def _summary_text(report: reporting.Report, fmt: str) -> str:
    """The --summary output: counts per action x operator x day, then active locks by age."""
    if fmt == "json":
        return render([], fmt, payload=report.summary_json())
    if fmt == "csv":
        return render(report.counts, fmt, columns=reporting.COUNT_COLUMNS)
    return "\n".join([
        render(report.counts, fmt, columns=reporting.COUNT_COLUMNS), "",
        "active locks by age (days since applied):",
        render(report.ages, fmt, columns=["age", "locks", "oldest_days"]),
    ])


def echo_outcomes(
    fmt: str, rows: Callable[[], Sequence[dict[str, Any]]], payload: Callable[[], Any]
) -> None:
    """Print a batch's outcomes: ``rows()`` as a table or CSV, or ``payload()`` as JSON, built
    only for the format asked and, for JSON, written as it is encoded. Built whole first, the
    JSON text of 10,000 outcomes held 42 MB (``json.dumps`` with an indent joins its pieces
    at the end), and both shapes were built for every format."""
    if fmt == "json":
        pieces = json_pieces(payload())
        # A few thousand pieces per write: one write per piece cost 1 s per 10,000 outcomes.
        while text := "".join(islice(pieces, 4096)):
            click.echo(text, nl=False)
        click.echo()
        return
    click.echo(render(rows(), fmt))


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
