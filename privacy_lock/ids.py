"""The one rule for an integer id a person types: a user id (when owner ids are integers), a lock
id or a request id, on the command line or in a request file.

An id is written with the ASCII digits 0-9 only; leading zeros are allowed (``007`` is 7) and
spaces and tabs around it are ignored (no other whitespace: ``\x1c2``, or ``2`` followed by an
ideographic space, is not user 2). Nothing else Python's ``int()`` would take: not ``+42``,
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
    value = text.strip(" \t")
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


MAX_IDS_AT_ONCE = 100_000  # ids a command takes from ranges at once (`approve 1-20000`)
_RANGE = re.compile(r"([^-]*)-([^-]*)")


def parse_id_ranges(texts: list[str], what: str, *, limit: int = MAX_IDS_AT_ONCE) -> list[int]:
    """Ids from arguments such as ``7``, ``1-20000`` or ``3,5,9-12`` (each id by
    :func:`parse_id`, from 1), in the order given, without repeats.

    A range is inclusive and must go upwards. More than ``limit`` ids in all is a usage error
    counted before any list is built, so ``1-99999999999`` costs nothing: nobody approves a
    hundred thousand requests by typing a range, and a typo must not become one."""
    spans: list[tuple[int, int]] = []
    total = 0
    for text in texts:
        for token in text.replace(",", " ").split():
            found = _RANGE.fullmatch(token)
            if found:
                low = parse_id(found.group(1), what, minimum=1)
                high = parse_id(found.group(2), what, minimum=1)
                if high < low:
                    raise UsageError(f"{what} range {token!r} goes downwards: write "
                                     f"{high}-{low}")
            else:
                low = high = parse_id(token, what, minimum=1)
            spans.append((low, high))
            total += high - low + 1
            if total > limit:
                raise UsageError(f"{what}s up to {token!r} name {total:,} ids, more than the "
                                 f"{limit:,} a command takes at once; name fewer (or, for "
                                 "approve, use --all-pending with a filter)")
    if not spans:
        raise UsageError(f"no {what} given")
    seen: dict[int, None] = {}
    for low, high in spans:
        seen.update(dict.fromkeys(range(low, high + 1)))
    return list(seen)
