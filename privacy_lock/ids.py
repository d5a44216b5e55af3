"""The one rule for an integer id a person types: a user id (when owner ids are integers), a lock
id or a request id, on the command line or in a request file.

An id is written with the ASCII digits 0-9 only; leading zeros are allowed (``007`` is 7) and
whitespace around it is ignored. Nothing else Python's ``int()`` would take: not ``+42``,
``4_2`` or full-width ``４２`` — a support engineer who typed one of those meant something we
cannot be sure of, so it is refused (exit 2) rather than read as 42. A user id may start with
``-`` (owner columns are signed); lock and request ids start at 1. Every id must fit a signed
64-bit integer (SQLite's INTEGER, BIGINT elsewhere), and a user id the site's owner columns (a
PostgreSQL or MariaDB INTEGER holds 32 bits: ``ContentMap.normalize_user``).
"""

from __future__ import annotations

import re

from privacy_lock.errors import UsageError

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
_UNSIGNED = re.compile(r"[0-9]+")  # not \d: that also matches full-width and other digits
_SIGNED = re.compile(r"-?[0-9]+")
_SHOWN = 40  # characters of a refused id quoted back


def parse_id(text: str, what: str, *, minimum: int = INT64_MIN, maximum: int = INT64_MAX) -> int:
    """``text`` as an integer id under the rule above; a :class:`UsageError` naming ``what``
    (e.g. ``"user id"``, ``"lock_id"``) and the value otherwise."""
    value = text.strip()
    shown = repr(value if len(value) <= _SHOWN else value[:_SHOWN] + "...")
    digits = _SIGNED if minimum < 0 else _UNSIGNED
    if not digits.fullmatch(value):
        sign = ", after an optional '-'" if minimum < 0 else ""
        raise UsageError(f"{what} {shown} is not an integer: use the digits 0-9 only{sign} "
                         "(not '+', '_' or full-width digits)")
    # Python refuses to read more than 4,300 digits (ValueError); no id has more than 19
    # significant ones, so a longer one is out of range without reading it.
    significant = value.lstrip("-").lstrip("0") or "0"
    number = (-1 if value.startswith("-") else 1) * (
        int(significant) if len(significant) <= 20 else 10**20)
    if not max(minimum, INT64_MIN) <= number <= min(maximum, INT64_MAX):
        raise UsageError(f"{what} {shown} is out of range: {minimum}..{maximum}")
    return number
