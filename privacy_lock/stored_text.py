"""The one rule for text the tool will store: an operator's name, a ticket, a reason, a user id.

Every place text enters (request files, command-line options, environment variables, the
Python API of :mod:`privacy_lock.service`) asks :func:`text_problem` before anything changes,
so that a value the database would refuse, cut or mangle is a usage error with the field's
name (and, in a request file, its line), never a failure in the middle of a batch:

- **Valid Unicode.** A lone surrogate (``"\\ud800"`` in JSON, or a byte that is not UTF-8 in an
  argument, which Python hands over as ``"\\udcff"``) cannot be encoded for any database.
- **No control characters** in a ticket or operator (tab allowed; a reason also keeps its line
  breaks): an escape sequence stored in the trail would run in an auditor's terminal.
- **Not longer than the column holds**, measured as the database measures it (characters for
  VARCHAR(n), bytes of UTF-8 for MariaDB's TEXT). The limits are read from the tool's own
  tables (:data:`privacy_lock.schema.metadata`: every column declares in ``info["holds"]``
  which input it keeps) and the dialect's strategy (:meth:`Dialect.text_limit`), in
  :func:`stored_limits`; nothing here lists a length.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache

from privacy_lock.schema import metadata

# Control characters (C0, DEL, C1) a ticket or operator may not hold. Tab is allowed; a reason
# may also keep its line breaks. Every output shows the rest escaped (render.printable).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_CONTROL_IN_REASON = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# The fields whose characters are checked for control characters (user ids are the site's).
_WORDS = ("operator", "ticket", "reason")


@dataclass(frozen=True)
class TextLimit:
    """How much a column holds: ``size`` characters or bytes (UTF-8), and which column."""

    size: int
    unit: str  # "characters" | "bytes"
    column: str  # "table.column", for the message

    def length(self, value: str) -> int:
        """``value``'s length as the database counts it for this column."""
        return len(value.encode("utf-8")) if self.unit == "bytes" else len(value)


def text_problem(name: str, value: str, limits: Iterable[TextLimit] = ()) -> str | None:
    """What is wrong with ``value`` given as ``name`` ("ticket", "operator", "reason" or
    "user id"), None when nothing is: not valid Unicode, a control character (not in a user
    id, which is the site's), or longer than one of ``limits``."""
    if invalid := unicode_problem(value):
        return f"{name} {invalid}"
    if name in _WORDS:
        if "\x00" in value:
            return f"{name} contains a NUL character"
        found = (_CONTROL_IN_REASON if name == "reason" else _CONTROL).search(value)
        if found is not None:
            allowed = "tab and line breaks" if name == "reason" else "tab"
            return (f"{name} contains the control character {found.group()!r} at position "
                    f"{found.start() + 1} (only {allowed} allowed)")
    for limit in limits:
        if (size := limit.length(value)) > limit.size:
            return (f"{name} is {size:,} {limit.unit} long; {limit.column} holds at most "
                    f"{limit.size:,} {limit.unit}")
    return None


def unicode_problem(value: str) -> str | None:
    """"is not valid text: ..." when ``value`` holds a lone surrogate: a byte that was not
    UTF-8 in an argument or environment variable (Python decodes it as U+DC80..U+DCFF) or a
    JSON ``\\ud800`` escape; no database can store it. None when ``value`` is valid."""
    bad = _SURROGATE.search(value)
    if bad is None:
        return None
    code = ord(bad.group())
    given = (f"the byte 0x{code - 0xDC00:02x} is not UTF-8" if 0xDC80 <= code <= 0xDCFF
             else f"a lone surrogate U+{code:04X} (e.g. a JSON \\u{code:04x} escape)")
    return f"is not valid text: {given} (at character {bad.start() + 1})"


@cache
def stored_limits(dialect: str = "default") -> Mapping[str, tuple[TextLimit, ...]]:
    """For each input the tool's tables keep (``info["holds"]`` of a column: "operator",
    "ticket", "reason", "user id"), the limits of the columns that keep it on ``dialect`` (a
    SQLAlchemy backend name; "default" is the strategies' default, MySQL/MariaDB), one per
    distinct size; an input no column limits there has none."""
    from privacy_lock.dialects import named  # the strategies import config, which imports us

    strategy = named(dialect)
    limits: dict[str, dict[tuple[int, str], TextLimit]] = {}
    for table in metadata.sorted_tables:
        for column in table.columns:
            holds = column.info.get("holds")
            size_unit = strategy.text_limit(column.type) if holds else None
            if holds and size_unit is not None:
                limits.setdefault(holds, {}).setdefault(
                    size_unit, TextLimit(*size_unit, f"{table.name}.{column.name}"))
    return {holds: tuple(found.values()) for holds, found in limits.items()}
