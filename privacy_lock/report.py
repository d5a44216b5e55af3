"""What auditors read: the audit events and locks, filtered, in a display time zone, summarized.

Times are stored and compared in UTC (ISO-8601 text with 'Z'); ``--tz`` only changes how they are
shown and which calendar day a bare ``--since/--until`` date or a summary day means. Every filter
is applied in SQL once, and every format (table, csv, json, html) renders the same rows, so an
export can never show more (or less) than the screen did.
"""

from __future__ import annotations

import json
import shlex
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from sqlalchemy import Connection, func, select

from privacy_lock import __version__
from privacy_lock.audit import EventFilters, VerifyResult, query_events, verify_chain
from privacy_lock.db import reading
from privacy_lock.errors import UsageError
from privacy_lock.schema import locks, snapshots
from privacy_lock.vocabulary import TIME_FORMAT, LockState

# Active locks are grouped by days since they were applied: (label, lowest age in days).
AGE_BUCKETS = (("0-6 days", 0), ("7-29 days", 7), ("30-89 days", 30), ("90-364 days", 90),
               ("365+ days", 365))
# Event columns: every stored field (csv/json carry enough to re-check each event's hash, and
# with the audit key its MAC).
EVENT_COLUMNS = ["seq", "time", "occurred_at", "action", "user", "lock", "operator", "os_user",
                 "host", "ticket", "reason", "details", "tool_version", "prev_hash", "hash",
                 "mac"]
EVENT_TABLE_COLUMNS = ["seq", "time", "action", "user", "lock", "operator", "ticket", "reason",
                       "details"]
COUNT_COLUMNS = ["day", "action", "operator", "events"]
# The figures an auditor reconciles with `locks` and `status` (see Figures).
FIGURE_NAMES = ["locks_opened", "locks_closed", "items_hidden", "items_restored", "conflicts",
                "gone", "apply_runs", "revert_runs"]
# Events an html report lists unless --limit says otherwise (the rest: --after SEQ).
HTML_EVENTS = 1000
# Events a terminal table lists unless --limit says otherwise.
TABLE_EVENTS = 50
LOCK_COLUMNS = ["lock_id", "user", "state", "items", "age_days", "operator", "ticket",
                "created_at", "reverted_at", "reverted_by", "reason"]


# --- time ----------------------------------------------------------------------------------------


def resolve_zone(name: str | None) -> tzinfo:
    """The display zone for ``--tz`` (an IANA name such as Asia/Tokyo); UTC when not given."""
    if not name or name.upper() in ("UTC", "Z"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        if not available_timezones():
            raise UsageError(f"cannot use time zone {name!r}: this machine has no time zone "
                             "database (pip install tzdata)") from None
        raise UsageError(f"unknown time zone {name!r} (use an IANA name such as Asia/Tokyo, "
                         "Europe/Berlin or UTC)") from None


def now_utc() -> datetime:
    """The current time (one place, so ages are computed against one clock)."""
    return datetime.now(UTC)


def zone_name(zone: tzinfo) -> str:
    """How a zone is named in report headers."""
    return "UTC" if zone is UTC else str(zone)


def to_stored(moment: datetime) -> str:
    """An aware datetime in the stored UTC text form (:data:`TIME_FORMAT`), the year always
    four digits (strftime writes year 900 as "900", which sorts after "2026");
    OverflowError when it is outside 0001-01-01..9999-12-31 in UTC."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def from_stored(text: str) -> datetime:
    """A stored timestamp as an aware UTC datetime."""
    return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=UTC)


def show_time(stored: str | None, zone: tzinfo) -> str | None:
    """A stored timestamp for display in ``zone``, to the second (``...Z`` in UTC)."""
    if stored is None:
        return None
    shown = from_stored(stored).astimezone(zone)
    if zone is UTC:
        return shown.strftime("%Y-%m-%dT%H:%M:%SZ")
    return shown.isoformat(timespec="seconds")


def day_of(stored: str, zone: tzinfo) -> str:
    """The calendar day (YYYY-MM-DD) in ``zone`` of a stored timestamp."""
    return from_stored(stored).astimezone(zone).date().isoformat()


# The first and last instants a bound can name: Python's (and the stored text's) range.
EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)


def parse_bound(value: str | None, zone: tzinfo, option: str, end: bool = False) -> str | None:
    """A ``--since``/``--until`` value as the stored UTC text it is compared with.

    A bare date is that day in ``zone``; a time without an offset is in ``zone``; an explicit
    offset or 'Z' wins. ``end`` gives the exclusive upper bound: a bare ``--until`` date includes
    that whole day, a time includes that instant. Any date from 0001-01-01 to 9999-12-31 works
    in any zone: a bound past the edge of that range in UTC (``--until 9999-12-31``, or
    ``--since 0001-01-01`` in Asia/Tokyo, which begins in year 0 in UTC) is an open end, None
    for the side it bounds.
    """
    if not value:
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime(day.year, day.month, day.day)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{option}: not a date or time: {value!r} (use YYYY-MM-DD, "
                         "YYYY-MM-DDTHH:MM or YYYY-MM-DDTHH:MM+09:00, years 0001-9999)"
                         ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    try:
        if end:  # the instant after the day or time given
            moment += timedelta(days=1) if len(text) == 10 else timedelta(microseconds=1)
        return to_stored(moment)
    except OverflowError:  # beyond year 9999, or before year 1, in UTC
        late = moment.year > 1
        if end:
            return None if late else to_stored(EARLIEST)
        return to_stored(LATEST) if late else None


def check_range(since: str | None, until_before: str | None) -> None:
    """Refuse an empty range (it is almost always swapped arguments)."""
    if since and until_before and since >= until_before:
        raise UsageError("--since is not before --until: the range is empty")


# --- events --------------------------------------------------------------------------------------


def event_row(event: dict[str, Any], zone: tzinfo) -> dict[str, Any]:
    """A stored event as a report row; ``details`` stays the stored JSON text."""
    return {
        "seq": event["seq"],
        "time": show_time(event["occurred_at"], zone),
        "occurred_at": event["occurred_at"],
        "action": event["action"],
        "user": event["subject"],
        "lock": event["lock_id"],
        "operator": event["operator"],
        "os_user": event["os_user"],
        "host": event["host"],
        "ticket": event["ticket"],
        "reason": event["reason"],
        "details": event["details"],
        "tool_version": event["tool_version"],
        "prev_hash": event["prev_hash"],
        "hash": event["hash"],
        "mac": event.get("mac"),
    }


def event_json(row: dict[str, Any]) -> dict[str, Any]:
    """A report row for JSON: the same fields, ``details`` as an object."""
    return {**row, "details": json.loads(row["details"])}


def details_text(details: str) -> str:
    """The details JSON as short ``key=value`` words for tables (nested kinds flattened)."""
    try:
        data = json.loads(details)
    except ValueError:
        return details
    words: list[str] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix and prefix != "kinds" else key, inner)
        else:
            words.append(f"{prefix}={value}")

    walk("", data)
    return " ".join(words) or "-"


def table_row(row: dict[str, Any]) -> dict[str, Any]:
    """A report row for the terminal table: details shortened."""
    return {**row, "details": details_text(row["details"])}


# --- locks ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LockFilters:
    """Which locks ``locks`` lists (and the report's active-lock section counts).

    ``state`` is a :class:`LockState` value, or ``"all"`` for every lock."""

    state: str = LockState.ACTIVE
    operator: str | None = None
    user: str | None = None
    ticket: str | None = None
    lock_id: int | None = None
    since: str | None = None
    until_before: str | None = None


def lock_rows(
    conn: Connection, filters: LockFilters, zone: tzinfo, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Locks with item counts and age (whole days since applied), filtered in SQL."""
    now = now or now_utc()
    items = (
        select(snapshots.c.lock_id, func.count().label("items"))
        .group_by(snapshots.c.lock_id)
        .subquery()
    )
    query = (
        select(locks, func.coalesce(items.c["items"], 0).label("items"))
        .select_from(locks.outerjoin(items, items.c.lock_id == locks.c.lock_id))
        .order_by(locks.c.lock_id)
    )
    c = locks.c
    for column, value in ((c.operator, filters.operator), (c.subject, filters.user),
                          (c.ticket, filters.ticket), (c.lock_id, filters.lock_id)):
        if value is not None:
            query = query.where(column == value)
    if filters.state != "all":
        query = query.where(c.state == filters.state)
    if filters.since:
        query = query.where(c.created_at >= filters.since)
    if filters.until_before:
        query = query.where(c.created_at < filters.until_before)
    with reading(conn):
        rows = conn.execute(query).all()
    return [
        {
            "lock_id": row.lock_id, "user": row.subject, "state": row.state,
            "items": int(row.items), "age_days": (now - from_stored(row.created_at)).days,
            "operator": row.operator, "ticket": row.ticket,
            "created_at": show_time(row.created_at, zone),
            "reverted_at": show_time(row.reverted_at, zone), "reverted_by": row.reverted_by,
            "reason": row.reason,
        }
        for row in rows
    ]


def age_buckets(active: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Active locks counted per age bucket, with the oldest age in each."""
    out = []
    bounds = [low for _, low in AGE_BUCKETS[1:]] + [None]
    for (label, low), high in zip(AGE_BUCKETS, bounds, strict=True):
        ages = [r["age_days"] for r in active
                if r["age_days"] >= low and (high is None or r["age_days"] < high)]
        out.append({"age": label, "locks": len(ages), "oldest_days": max(ages) if ages else None})
    return out


# --- the report ----------------------------------------------------------------------------------


@dataclass
class Figures:
    """What the selected events did, in the units `locks` and `status` count, so an auditor
    can reconcile them (counting events would not: a re-run that changed nothing is an
    ``apply`` event too, 8 of them for 5 locks).

    - ``locks_opened``: ``lock`` events, one per lock opened (``locks --state all`` rows);
    - ``locks_closed``: ``revert`` events, one per lock closed (``locks --state reverted``);
    - ``items_hidden``: per lock, the items it holds as of its last ``apply`` event among the
      selected ones (that event's per-kind ``snapshotted``), summed: ``locks``' items column;
    - ``items_restored``, ``conflicts``, ``gone``: summed from ``revert`` events (each closes
      its lock with the lock's totals): ``status``' restored / conflicts / gone columns;
    - ``apply_runs``, ``revert_runs``: the events themselves, re-runs included.
    """

    locks_opened: int = 0
    locks_closed: int = 0
    items_restored: int = 0
    conflicts: int = 0
    gone: int = 0
    apply_runs: int = 0
    revert_runs: int = 0
    held: dict[Any, int] = field(default_factory=dict)  # lock id -> items at its last apply

    @property
    def items_hidden(self) -> int:
        return sum(self.held.values())

    def count(self, event: dict[str, Any]) -> None:
        """Add one event (apply, revert and lock events count; the others are ignored)."""
        action = event["action"]
        if action == "lock":
            self.locks_opened += 1
            return
        if action not in ("apply", "revert"):
            return
        try:
            kinds = json.loads(event["details"]).get("kinds", {})
        except (ValueError, AttributeError):
            kinds = {}
        per_kind = [v for v in kinds.values() if isinstance(v, dict)]
        if action == "apply":
            self.apply_runs += 1
            self.held[event["lock_id"]] = sum(int(v.get("snapshotted", 0)) for v in per_kind)
            return
        self.revert_runs += 1
        self.locks_closed += 1
        self.items_restored += sum(int(v.get("restored", 0)) for v in per_kind)
        self.conflicts += sum(int(v.get("conflicts", 0)) for v in per_kind)
        self.gone += sum(int(v.get("gone", 0)) for v in per_kind)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in FIGURE_NAMES}


@dataclass
class Report:
    """Everything the report formats show, computed once from the filtered rows. ``events``
    holds at most the first ``keep_events`` (the html page's list); ``event_total`` counts
    them all."""

    zone: tzinfo
    filters: EventFilters
    filter_words: list[str]
    database: str
    generated_at: str
    events: list[dict[str, Any]] = field(default_factory=list)
    counts: list[dict[str, Any]] = field(default_factory=list)
    daily: list[dict[str, Any]] = field(default_factory=list)  # day, apply, revert
    active_locks: list[dict[str, Any]] = field(default_factory=list)
    ages: list[dict[str, Any]] = field(default_factory=list)
    event_total: int = 0
    figures: Figures = field(default_factory=Figures)
    verify: VerifyResult | None = None
    tool_version: str = __version__
    filter_args: list[str] = field(default_factory=list)  # the filters as command arguments

    def rest_command(self, last_seq: int, fmt: str = "csv") -> str:
        """The command that lists the events after ``last_seq`` with the same filters."""
        args = ["privacy-lock", "audit", "report", *self.filter_args, "--after", str(last_seq),
                "--format", fmt, "--output", f"rest.{fmt}"]
        return shlex.join(args)

    def summary_json(self) -> dict[str, Any]:
        """The --summary shape for JSON."""
        return {
            "time_zone": zone_name(self.zone),
            "filters": self.filter_words,
            "events": self.event_total,
            "figures": self.figures.as_dict(),
            "counts": self.counts,
            "active_locks_by_age": self.ages,
            "verify": self.verify.as_dict() if self.verify else None,
        }


def build_report(
    conn: Connection,
    filters: EventFilters,
    zone: tzinfo,
    *,
    database: str,
    filter_words: list[str],
    keep_events: int | None = None,
    verify: bool = True,
    now: datetime | None = None,
) -> Report:
    """Read the filtered events once and compute rows (the first ``keep_events``, every one
    when None), counts per action x operator x day, the applies/reverts per day, the figures,
    the matching active locks by age and (optionally) the chain check. Memory stays bounded
    by ``keep_events`` and the number of days, operators and locks, never by the events."""
    now = now or now_utc()
    report = Report(zone, filters, filter_words, database, show_time(to_stored(now), zone) or "")
    counts: Counter[tuple[str, str, str | None]] = Counter()
    daily: Counter[tuple[str, str]] = Counter()
    with reading(conn):
        for event in query_events(conn, filters):
            day = day_of(event["occurred_at"], zone)
            counts[(day, event["action"], event["operator"])] += 1
            if event["action"] in ("apply", "revert"):
                daily[(day, event["action"])] += 1
            report.event_total += 1
            report.figures.count(event)
            if keep_events is None or len(report.events) < keep_events:
                report.events.append(event_row(event, zone))
    report.counts = [
        {"day": day, "action": action, "operator": operator, "events": n}
        for (day, action, operator), n in sorted(counts.items(), key=lambda kv: (
            kv[0][0], kv[0][1], kv[0][2] or ""))
    ]
    report.daily = _daily_series(daily)
    lock_filter = LockFilters(LockState.ACTIVE, filters.operator, filters.user, filters.ticket,
                              filters.lock_id, filters.since, filters.until_before)
    report.active_locks = sorted(lock_rows(conn, lock_filter, zone, now),
                                 key=lambda r: (-r["age_days"], r["lock_id"]))
    report.ages = age_buckets(report.active_locks)
    if verify:
        report.verify = verify_chain(conn)
    return report


def _daily_series(daily: Counter[tuple[str, str]]) -> list[dict[str, Any]]:
    """Applies and reverts per day, every day from the first to the last (months beyond ~3)."""
    if not daily:
        return []
    days = sorted({day for day, _ in daily})
    first, last = date.fromisoformat(days[0]), date.fromisoformat(days[-1])
    if (last - first).days > 92:
        per_month: Counter[tuple[str, str]] = Counter()
        for (day, action), n in daily.items():
            per_month[(day[:7], action)] += n
        months, cursor = [], first.replace(day=1)
        while cursor <= last:
            months.append(cursor.strftime("%Y-%m"))
            cursor = (cursor + timedelta(days=32)).replace(day=1)
        return [{"day": m, "apply": per_month[(m, "apply")], "revert": per_month[(m, "revert")]}
                for m in months]
    out = []
    for offset in range((last - first).days + 1):
        day = (first + timedelta(days=offset)).isoformat()
        out.append({"day": day, "apply": daily[(day, "apply")], "revert": daily[(day, "revert")]})
    return out


def describe_filters(**values: Any) -> list[str]:
    """The filters as ``--option value`` words, for report headers."""
    args = filter_args(**values)
    return [f"{args[i]} {args[i + 1]}" for i in range(0, len(args), 2)]


def filter_args(**values: Any) -> list[str]:
    """The filters as command-line arguments (``["--since", "2026-11-01", ...]``)."""
    args = []
    for name, value in values.items():
        if value in (None, (), ""):
            continue
        for item in value if isinstance(value, tuple) else (value,):
            args += [f"--{name.replace('_', '-')}", str(item)]
    return args


def closed_lock_lines(conn: Connection, named: list[tuple[int | None, str | None]],
                      limit: int = 10) -> list[str]:
    """Why a revert found nothing to do, one line per (lock id, user) named: the lock was
    reverted (when, by whom), or the user's last lock was, or the user never had one; at most
    ``limit`` lines and a count of the rest."""
    lock_ids = sorted({i for i, _u in named if i is not None})
    users = sorted({u for i, u in named if i is None and u is not None})
    columns = (locks.c.lock_id, locks.c.subject, locks.c.state, locks.c.reverted_at,
               locks.c.reverted_by)
    by_id: dict[int, Any] = {}
    last: dict[str, Any] = {}
    with reading(conn):
        for start in range(0, len(lock_ids), 1000):
            by_id.update((row.lock_id, row) for row in conn.execute(
                select(*columns).where(locks.c.lock_id.in_(lock_ids[start:start + 1000]))))
        for start in range(0, len(users), 1000):
            for row in conn.execute(select(*columns).where(
                    locks.c.subject.in_(users[start:start + 1000])).order_by(locks.c.lock_id)):
                last[row.subject] = row  # the latest lock of each user wins
    lines = []
    for lock_id, user in named:
        lock: Any = by_id.get(lock_id) if lock_id is not None else last.get(user or "")
        if lock is None:
            lines.append(f"user {user} has never been locked")
        elif lock.state == LockState.REVERTED:
            whose = (f"lock {lock.lock_id} (user {lock.subject})" if lock_id is not None
                     else f"user {user} has no active lock: their last lock {lock.lock_id}")
            lines.append(f"{whose} was already reverted at "
                         f"{show_time(lock.reverted_at, UTC)} by {lock.reverted_by}")
    if len(lines) > limit:
        lines = lines[:limit] + [f"... and {len(lines) - limit:,} more"]
    return lines
