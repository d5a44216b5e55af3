"""The append-only, hash-chained audit trail: append an event, verify the chain, query events.

Each event stores the hash of the event before it, and its own hash covers every stored field
plus that previous hash, so editing, deleting, inserting or reordering any event breaks the chain
at that point. Appends lock the single head row first: concurrent operators are serialized into
one chain, and the event commits in the same transaction as the change it describes.

A chain alone cannot show that events were cut off its end (or that the whole chain was rewritten
and re-hashed): for that, publish the head hash (``audit verify`` prints it) and later check that
the chain still contains it (``audit verify --expect-head HASH``). See docs/AUDIT.md.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pwd
import socket
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Connection, func, select

from privacy_lock import __version__
from privacy_lock.anchors import UNKEYED_APPEND, Checkpoint, TrailChecks, key_of
from privacy_lock.db import insert_rows, reading
from privacy_lock.dialects import for_connection
from privacy_lock.errors import UsageError
from privacy_lock.schema import (
    GENESIS_HASH,
    audit_events,
    audit_head,
    missing_head_error,
    missing_head_message,
)
from privacy_lock.seal import check_seals
from privacy_lock.vocabulary import utc_now as utc_now  # re-exported (others import it here)

# The fields an event's hash covers, in this order.
HASHED_FIELDS = (
    "seq", "occurred_at", "action", "subject", "lock_id", "operator", "os_user", "host",
    "ticket", "reason", "details", "tool_version", "prev_hash",
)

# Every action the tool writes, with what it means (docs/AUDIT.md explains each in full).
ACTIONS = {
    "lock": "a lock was opened for the user (before any item changed)",
    "hide": "one chunk of the user's items was snapshotted and set to owner only",
    "apply": "an apply run finished for the user (totals per kind; a user done in a chunk "
             "shared with others has no hide event, and chunk_shared_by says with how many)",
    "restore": "one chunk of a lock's items was restored (or found changed/gone)",
    "revert": "a lock was closed: every item restored, conflicting or gone (totals; "
              "chunk_shared_by as for apply)",
    "viewed": "status or a dry run showed the user's content ([policy] audit_reads)",
    "revert-requested": "a revert was asked for and waits for a second operator",
    "revert-approved": "a second operator approved a revert request (the revert follows)",
    "revert-rejected": "a pending revert request was cancelled (`privacy-lock reject`); it "
                       "can no longer be approved",
    "revert-refused": "an approval was refused (the approver is the requester, or under "
                      "approval = distinct-accounts shares the requester's OS account or "
                      "database login)",
    "policy-changed": "a rule of the stored policy was changed (`privacy-lock policy set`)",
    "find": "a search for an account from what a caller remembers (fragments masked or "
            "keyed-hashed, the candidates listed, a coarse count)",
    "find-refused": "a search was refused (a fragment too short, the rate limit)",
    "identity-answer": "verify-identity: a caller's answer judged right or wrong (by the tool, "
                       "or corrected by the operator); never the answer itself",
    "identity-verdict": "verify-identity: the verdict the operator confirmed (passed or not)",
    "identity-refused": "verify-identity was refused (no find under the ticket listed the "
                        "account, too little data to ask)",
}


@dataclass(frozen=True)
class Actor:
    """Who acts and why: the operator's stated name, the OS account and host, ticket and reason."""

    operator: str
    ticket: str | None = None
    reason: str | None = None
    os_user: str = ""
    host: str = ""

    @classmethod
    def current(cls, operator: str, ticket: str | None = None, reason: str | None = None) -> Actor:
        """An actor for this process, with the OS user and host filled in."""
        return cls(operator, ticket, reason, *_os_user_and_host())


@functools.cache
def _os_user_and_host() -> tuple[str, str]:
    """Who runs this process, and where (asked once: a batch makes an actor per request).

    The account is the process's real uid looked up in the password database, never $LOGNAME
    or $USER (``getpass.getuser()`` reads those first, so ``LOGNAME=bob`` would pass as bob);
    a uid without a passwd entry (a container) is recorded as ``uid:N``."""
    uid = os.getuid()
    try:
        os_user = pwd.getpwuid(uid).pw_name
    except KeyError:
        os_user = f"uid:{uid}"
    return os_user, socket.gethostname()


def event_hash(event: dict[str, Any]) -> str:
    """SHA-256 over the canonical JSON of the hashed fields (including the previous hash)."""
    payload = json.dumps(
        [event[name] for name in HASHED_FIELDS], ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def append_event(
    conn: Connection,
    action: str,
    actor: Actor | None,
    *,
    subject: str | None = None,
    lock_id: int | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Append one event inside the caller's transaction and return it (with its hash).

    Call it last in a transaction: the head row lock it takes is held until commit, and every
    other append in the database waits for it.
    """
    return append_events(conn, [EventSpec(action, actor, subject, lock_id, details)])[0]


@dataclass(frozen=True)
class EventSpec:
    """One event to append: what happened, who did it, to whom, with which counts."""

    action: str
    actor: Actor | None
    subject: str | None = None
    lock_id: int | None = None
    details: dict[str, Any] | None = None


def append_events(conn: Connection, specs: Sequence[EventSpec]) -> list[dict[str, Any]]:
    """Append events in this order inside the caller's transaction, under one lock of the head
    row and with one multi-row insert; return them (with their hashes).

    Like :func:`append_event`, call it last in a transaction.
    """
    head = conn.execute(
        select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1).with_for_update()
    ).first()
    if head is None:
        raise missing_head_error(conn)
    seq, prev_hash = head.seq, head.hash
    key, last = key_of(conn), None
    if seq:
        last = conn.execute(select(audit_events.c.occurred_at, audit_events.c.mac)
                            .where(audit_events.c.seq == seq)).first()
    if key is None and last is not None and last.mac is not None:
        raise UsageError(UNKEYED_APPEND)
    # The time is taken under the head lock and never before the head event's: two operators
    # (whose clocks may differ a little) cannot make time go backwards, which verify forbids.
    now = utc_now()
    if last is not None and last.occurred_at > now:
        now = last.occurred_at
    events = []
    for spec in specs:
        actor = spec.actor
        seq += 1
        event = {
            "seq": seq,
            "occurred_at": now,
            "action": spec.action,
            "subject": spec.subject,
            "lock_id": spec.lock_id,
            "operator": (actor.operator or None) if actor else None,
            "os_user": actor.os_user if actor else None,
            "host": actor.host if actor else None,
            "ticket": actor.ticket if actor else None,
            "reason": actor.reason if actor else None,
            "details": json.dumps(spec.details or {}, ensure_ascii=False, sort_keys=True),
            "tool_version": __version__,
            "prev_hash": prev_hash,
        }
        event["hash"] = prev_hash = event_hash(event)
        event["mac"] = key.event_mac(prev_hash) if key else None
        events.append(event)
    if not events:
        return events
    insert_rows(conn, audit_events, events)
    conn.execute(
        audit_head.update().where(audit_head.c.id == 1).values(seq=seq, hash=prev_hash)
    )
    return events


def record_views(
    conn: Connection, command: str, views: Iterable[tuple[Actor, str, int | None]]
) -> int:
    """Write one ``viewed`` event per (viewer, user, lock id) in one transaction; return how many.

    Used when ``[policy] audit_reads`` is on, before the content is shown: if the access cannot
    be logged, it is not shown.
    """
    written = 0
    with conn.begin():
        for actor, subject, lock_id in views:
            append_event(conn, "viewed", actor, subject=subject, lock_id=lock_id,
                         details={"command": command})
            written += 1
    return written


# --- verify --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of recomputing the chain.

    ``valid`` events from the start are intact; ``head_hash``/``head_seq`` are the last intact
    event's. When broken, ``broken_seq`` is the first event that does not fit and ``kind`` one of
    altered, deleted, inserted, reordered, truncated, head.
    """

    total: int
    valid: int
    head_hash: str
    head_seq: int = 0
    head_time: str | None = None
    problem: str | None = None
    broken_seq: int | None = None
    kind: str | None = None
    expect_head_seq: int | None = None
    # The key and checkpoints (anchors.py): the key's id when one was given; events with a
    # MAC (checked when keyed), unkeyed ones before the first keyed, ones under another key;
    # checkpoints that held; what could not be checked.
    key_id: str | None = None
    keyed: int = 0
    unkeyed: int = 0
    other_key: int = 0
    first_keyed: int | None = None
    checkpoints: int = 0
    notes: tuple[str, ...] = ()
    # The seals (seal.py): sealed rows recomputed, and locks made before seals existed.
    seals: int = 0
    unsealed_locks: int = 0

    @property
    def ok(self) -> bool:
        return self.problem is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "total": self.total, "valid": self.valid,
            "head_seq": self.head_seq, "head_hash": self.head_hash, "head_time": self.head_time,
            "problem": self.problem, "broken_seq": self.broken_seq, "kind": self.kind,
            "expect_head_seq": self.expect_head_seq, "key_id": self.key_id,
            "keyed": self.keyed, "unkeyed": self.unkeyed, "other_key": self.other_key,
            "first_keyed": self.first_keyed, "checkpoints": self.checkpoints,
            "notes": list(self.notes),
        }


# How far from its position a moved event is looked for when naming a reorder/renumber.
_MOVE_WINDOW = 64


def normalize_head(value: str | None) -> str | None:
    """A published head hash as given on the command line: 64 hex digits (any case)."""
    if value is None:
        return None
    text = value.strip().lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise UsageError(f"--expect-head must be a 64-digit hex hash as `audit verify` prints it, "
                         f"got {value!r}")
    return text


def verify_chain(
    conn: Connection, expect_head: str | None = None, batch: int = 5000,
    checkpoints: Sequence[Checkpoint] = (),
) -> VerifyResult:
    """Recompute every event's hash in order and name the first event that does not fit.

    Runs in its own read-only transaction on one consistent snapshot (REPEATABLE READ on
    PostgreSQL and MySQL; a SQLite read transaction), so operators appending meanwhile do not
    look like tampering, and takes no locks a writer would wait for (on SQLite a writer's
    commit waits until the check ends).
    ``expect_head`` is a head hash published earlier: the chain must still contain it.
    Also (anchors.py): no event is dated before the one before it; with the connection's audit
    key, every MAC; every checkpoint still holds.
    """
    expect_head = normalize_head(expect_head)
    checks = TrailChecks(key_of(conn), checkpoints)
    if conn.in_transaction():  # the caller chose the transaction (and its isolation)
        return _with_seals(conn, _with_checks(_verify(conn, expect_head, batch, checks), checks))
    previous_level = None
    isolation = for_connection(conn).snapshot_isolation
    if isolation is not None:
        previous_level = conn.get_isolation_level()
        conn.execution_options(isolation_level=isolation)
    try:
        with reading(conn):
            return _with_seals(conn, _with_checks(_verify(conn, expect_head, batch, checks),
                                                  checks))
    finally:
        if previous_level is not None:
            conn.execution_options(isolation_level=previous_level)


def _with_seals(conn: Connection, result: VerifyResult) -> VerifyResult:
    """An intact chain's result with its seals recomputed from the lock and snapshot tables
    (seal.py): a stored original, a lock or a snapshot row that no longer matches what its
    event sealed breaks the trail as surely as an edited event."""
    if not result.ok:
        return result
    check = check_seals(conn)
    result = replace(result, seals=check.checked, unsealed_locks=check.legacy_locks)
    if check.ok:
        return result
    more = f" (and {len(check.problems) - 1} more)" if len(check.problems) > 1 else ""
    return replace(result, problem=f"sealed rows were changed: {check.problems[0]}{more}",
                   kind="sealed")


def _with_checks(result: VerifyResult, checks: TrailChecks) -> VerifyResult:
    """The result with what the key and checkpoint checks counted."""
    return replace(result, key_id=checks.key.key_id if checks.key else None,
                   keyed=checks.keyed, unkeyed=checks.unkeyed, other_key=checks.other_key,
                   first_keyed=checks.first_keyed, checkpoints=checks.checkpoints_held,
                   notes=tuple(checks.notes))


def _verify(conn: Connection, expect_head: str | None, batch: int,
            checks: TrailChecks) -> VerifyResult:
    head = conn.execute(select(audit_head).where(audit_head.c.id == 1)).first()
    total = conn.execute(select(func.count()).select_from(audit_events)).scalar_one()
    if head is None and not total:
        return VerifyResult(0, 0, GENESIS_HASH, problem=missing_head_message(0), kind="head")
    chain = _ChainWalk(conn, batch)
    prev_hash, expected, last_time, expect_seq = GENESIS_HASH, 1, None, None
    recent: deque[tuple[int, str]] = deque(maxlen=_MOVE_WINDOW + 1)  # (seq, hash), intact
    for event in chain:
        if event["seq"] != expected or event["prev_hash"] != prev_hash \
                or event_hash(event) != event["hash"]:
            kind, seq, problem = _diagnose(event, expected, prev_hash, recent, chain)
            valid = seq - 1
            good = dict(recent).get(valid, GENESIS_HASH) if valid < expected - 1 else prev_hash
            return VerifyResult(total, valid, good, valid, None, problem, seq, kind)
        found = checks.check(event)
        if found:
            return VerifyResult(total, expected - 1, prev_hash, expected - 1, last_time,
                                found[1], event["seq"], found[0])
        if expect_head and event["hash"] == expect_head:
            expect_seq = event["seq"]
        prev_hash, last_time = event["hash"], event["occurred_at"]
        recent.append((event["seq"], prev_hash))
        expected += 1
    last = expected - 1
    intact = VerifyResult(total, last, prev_hash, last, last_time)
    if head is None:  # the events were walked all the same: say whether they hold
        return replace(intact, problem=f"{missing_head_message(total)}; events 1..{last} are "
                       "intact", kind="head")
    if head.seq < last:
        return VerifyResult(total, head.seq, head.hash, head.seq, None, problem=(
            f"events {head.seq + 1}..{last} are beyond the head row (event {head.seq}): "
            "added by hand, not by privacy-lock"), broken_seq=head.seq + 1, kind="inserted")
    if head.seq > last:
        return replace(intact, problem=(
            f"the chain ends at event {last} but the head row says event {head.seq}: "
            f"events {last + 1}..{head.seq} were removed from the end"),
            broken_seq=last + 1, kind="truncated")
    if head.hash != prev_hash:
        return replace(intact, problem=(
            f"the head row's hash does not match event {last}: the head row was edited"),
            broken_seq=last, kind="head")
    found = checks.finish(last)
    if found:
        return replace(intact, problem=found[1], broken_seq=last + 1, kind=found[0])
    if expect_head and expect_seq is None:
        return replace(intact, problem=(
            f"the published head {expect_head} is not in the chain: events were removed from "
            "the end, or the trail was rewritten, after it was published"), kind="truncated")
    return replace(intact, expect_head_seq=expect_seq)


class _ChainWalk:
    """The events in seq order, fetched in batches, with a one-event look-ahead."""

    def __init__(self, conn: Connection, batch: int) -> None:
        self.conn, self.batch = conn, batch
        self.buffer: deque[dict[str, Any]] = deque()
        self.after: int | None = None
        self.done = False

    def _fill(self) -> None:
        if self.buffer or self.done:
            return
        query = select(audit_events).order_by(audit_events.c.seq).limit(self.batch)
        if self.after is not None:
            query = query.where(audit_events.c.seq > self.after)
        rows = [dict(r) for r in self.conn.execute(query).mappings()]
        self.done = len(rows) < self.batch
        if rows:
            self.after = rows[-1]["seq"]
        self.buffer.extend(rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            self._fill()
            if not self.buffer:
                return
            yield self.buffer.popleft()

    def peek(self) -> dict[str, Any] | None:
        """The event after the one last yielded, without consuming it."""
        self._fill()
        return self.buffer[0] if self.buffer else None


def _original_position(event: dict[str, Any], around: int) -> int | None:
    """The position an event's hash was computed for, if it is near ``around`` (a moved event)."""
    for distance in range(1, _MOVE_WINDOW + 1):
        for seq in (around - distance, around + distance):
            if seq >= 1 and event_hash({**event, "seq": seq}) == event["hash"]:
                return seq
    return None


def _diagnose(
    event: dict[str, Any],
    expected: int,
    prev_hash: str,
    recent: deque[tuple[int, str]],
    chain: _ChainWalk,
) -> tuple[str, int, str]:
    """Name the first break: (kind, first broken seq, one-line problem)."""
    seq = event["seq"]
    nxt = chain.peek()
    if seq != expected:
        if event["prev_hash"] == prev_hash and \
                event_hash({**event, "seq": expected}) == event["hash"]:
            return "reordered", expected, (
                f"event {expected} was renumbered: it is stored as event {seq}")
        return "deleted", expected, (
            f"event {expected} is missing: deleted (the next stored event is {seq})")
    if event_hash(event) != event["hash"]:
        original = _original_position(event, seq)
        if original is None:
            if nxt is not None and nxt["prev_hash"] == prev_hash:
                return "inserted", seq, (
                    f"event {seq} was inserted: event {nxt['seq']} follows event {seq - 1} "
                    "directly")
            return "altered", seq, (
                f"event {seq} was altered: its content no longer matches its hash")
        if original < seq:
            # The event was pushed later: the stored events between were put in front of it.
            followed = {h: s for s, h in recent}.get(event["prev_hash"])
            if followed is not None and followed == original - 1:
                return "inserted", original, (
                    f"event {original} was inserted: it is not part of the chain (the original "
                    f"event {original} now sits at {seq})")
            return "reordered", seq, (
                f"event {seq} was moved: it was written as event {original} "
                "(events were reordered or renumbered)")
        # The event was pulled earlier: either events before it were deleted and the rest
        # renumbered (the next event is shifted by as much), or events were swapped.
        shift = original - seq
        next_original = _original_position(nxt, nxt["seq"]) if nxt is not None else None
        if nxt is not None and next_original == nxt["seq"] + shift:
            gone = f"event {seq} was" if shift == 1 else f"events {seq}..{original - 1} were"
            return "deleted", seq, (
                f"{gone} deleted and the later events renumbered: the event now at {seq} was "
                f"written as event {original}")
        if nxt is not None and next_original == seq and nxt["prev_hash"] == prev_hash:
            return "reordered", seq, (
                f"events {seq} and {nxt['seq']} were swapped (reordered)")
        return "reordered", seq, (
            f"event {seq} was moved: it was written as event {original} "
            "(events were reordered or renumbered)")
    # The event matches its own hash but does not follow the event before it.
    if nxt is not None and nxt["prev_hash"] == prev_hash:
        return "inserted", seq, (
            f"event {seq} was inserted: event {nxt['seq']} follows event {seq - 1} directly")
    return "altered", seq, (
        f"event {seq} does not follow event {seq - 1} (its prev_hash is not event {seq - 1}'s "
        "hash): the chain was rewritten from here")


# --- query ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventFilters:
    """Which events a report shows. ``since``/``until_before`` are stored-form UTC texts."""

    since: str | None = None
    until_before: str | None = None
    operator: str | None = None
    user: str | None = None
    actions: tuple[str, ...] = ()
    ticket: str | None = None
    lock_id: int | None = None
    after_seq: int | None = None  # only events after this one (the rest of a cut report)

    def __post_init__(self) -> None:
        unknown = [a for a in self.actions if a not in ACTIONS]
        if unknown:
            raise UsageError(f"unknown action {unknown[0]!r} (one of: {', '.join(ACTIONS)})")

    def where(self) -> list[Any]:
        """The WHERE clauses on the audit table."""
        c = audit_events.c
        clauses: list[Any] = []
        if self.since:
            clauses.append(c.occurred_at >= self.since)
        if self.until_before:
            clauses.append(c.occurred_at < self.until_before)
        if self.operator:
            clauses.append(c.operator == self.operator)
        if self.user:
            clauses.append(c.subject == self.user)
        if self.actions:
            clauses.append(c.action.in_(self.actions))
        if self.ticket:
            clauses.append(c.ticket == self.ticket)
        if self.lock_id is not None:
            clauses.append(c.lock_id == self.lock_id)
        return clauses


def query_events(
    conn: Connection, filters: EventFilters, batch: int = 5000
) -> Iterator[dict[str, Any]]:
    """The matching events in chain order, as stored (fetched in batches of ``batch``, each a
    keyset query after the last seq read, so a million events are never held at once)."""
    after = filters.after_seq or 0
    while True:
        rows = conn.execute(
            select(audit_events)
            .where(audit_events.c.seq > after, *filters.where())
            .order_by(audit_events.c.seq)
            .limit(batch)
        ).mappings().all()
        for row in rows:
            yield dict(row)
        if len(rows) < batch:
            return
        after = rows[-1]["seq"]
