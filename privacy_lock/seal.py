"""Seals: digests, written into the audit trail, of exactly the rows a revert depends on.

An event's own hash covers its fields, not the rows of the other tables. Editing a stored
original (``UPDATE privacy_lock_snapshots SET original_text = 'public'``), a lock's binding or an
approval would leave the chain intact and make revert publish what was private. So each event
that writes such rows carries, in its ``details``, a seal of exactly those rows as the
transaction wrote them:

- ``lock`` (and ``apply`` when a lock gains a kind): ``{"lock": DIGEST}`` of the lock row's
  fields the tool trusts later (user, who, ticket, reason, when, and the content binding);
- ``apply`` / ``hide`` (the transaction's snapshots of one lock): ``{"snapshots": N, "at": T,
  "digest": DIGEST}`` over the (kind, item, original) rows that transaction wrote, which all
  carry ``snapshotted_at = T``;
- ``revert-requested``: ``{"request": DIGEST}`` of the request row's fields as filed;
  ``revert-approved``: ``{"approval": DIGEST}`` of those and the approver's, as approved (who
  asked and who approved is what the two-person rule rests on).

``audit verify`` recomputes every seal from the tables; revert and approve recompute the seals
of the locks they are about to restore, and refuse (nothing changed) when one does not match.
A digest is SHA-256 over a canonical JSON text, so it is the same on every database and in
every Python.

What the seals do not cover is checked against the trail too, without a key: every lock the
trail names still exists, and every lock row was opened by a ``lock`` event (the tool never
deletes or inserts one otherwise); every revert request was filed by a ``revert-requested``
event naming it, and an approved one approved by a ``revert-approved`` event; a reverted lock
was closed by a ``revert`` event and its snapshots are in the states that event counted; an
active lock has no ``revert`` event, and its resolved snapshots are exactly those its
``restore`` events counted (a revert stopped half-way).

Before seals: a lock whose ``lock`` event seals it is sealed from birth (every snapshot group
must be sealed). One made by an older release is checked from the first event that seals it
(an apply of a newer release records its binding and seals it): unsealed groups written before
that event are counted as legacy, later ones must be sealed; one never sealed is counted, not
checked. Requests filed by an unsealed event are counted. State counts are checked for every
lock: the ``revert`` and ``restore`` events have counted them in one shape since the first
release (a ``revert`` event of another shape is counted, not checked).
"""

from __future__ import annotations

import hashlib
import heapq
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, func, select

from privacy_lock.db import reading
from privacy_lock.errors import TamperedError
from privacy_lock.schema import audit_events, audit_head, locks, revert_requests, snapshots
from privacy_lock.vocabulary import RESOLVED, LockState, RequestState, SnapshotState

SnapshotRow = tuple[str, str, str | None, int | None]  # kind, item id, original text / int

LOCK_FIELDS = ("lock_id", "subject", "operator", "ticket", "reason", "created_at", "binding")
REQUEST_FIELDS = ("request_id", "lock_id", "subject", "requested_by", "requested_os_user",
                  "requested_host", "requested_db_user", "ticket", "reason", "requested_at")
APPROVAL_FIELDS = (*REQUEST_FIELDS, "approved_by", "approved_os_user", "approved_host",
                   "approved_db_user", "approved_at")
# A rejected request as `reject` left it: what it was, and that and when it was closed.
REJECTION_FIELDS = (*REQUEST_FIELDS, "state", "finished_at")


def _digest(payload: Any) -> str:
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def snapshot_digest(rows: Iterable[SnapshotRow]) -> str:
    """The digest of a set of snapshot rows, whatever order the database returned them in.
    An original's type is part of it: ``'1'`` and ``1`` and NULL and ``''`` all differ."""
    return _digest(sorted(
        [str(kind), str(item), text, None if number is None else int(number)]
        for kind, item, text, number in rows))


def snapshot_seal(rows: list[SnapshotRow], at: str) -> dict[str, Any]:
    """What an event that wrote ``rows`` (all with ``snapshotted_at = at``) carries."""
    return {"snapshots": len(rows), "at": at, "digest": snapshot_digest(rows)}


def fields_digest(row: Mapping[str, Any], fields: Iterable[str]) -> str:
    """The digest of the named fields of one row (a lock, a request)."""
    return _digest({name: _plain(row[name]) for name in fields})


def _plain(value: Any) -> Any:
    """Values as JSON keeps them the same on every database (ids as integers)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


# --- checking --------------------------------------------------------------------------------


@dataclass
class SealCheck:
    """What recomputing the seals found: how many were checked, what was written before seals
    existed (counted, not checked), and the problems, each naming the row and the event."""

    checked: int = 0
    legacy_locks: int = 0  # locks no event ever sealed
    legacy_groups: int = 0  # unsealed snapshot groups of a lock, written before its first seal
    legacy_requests: int = 0  # requests filed (or approved) by an event without a seal
    legacy_reverts: int = 0  # revert events whose counts have no shape this check knows
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, other: SealCheck) -> None:
        """Add what another part of the check found."""
        self.checked += other.checked
        self.legacy_locks += other.legacy_locks
        self.legacy_groups += other.legacy_groups
        self.legacy_requests += other.legacy_requests
        self.legacy_reverts += other.legacy_reverts
        self.problems += other.problems


SEALING_ACTIONS = ("lock", "apply", "hide", "revert-requested", "revert-approved",
                   "revert-rejected")
# The events a lock's rows are checked against: what seals them, and what resolves its
# snapshots and closes it (whose counts are checked without a key).
LOCK_ACTIONS = (*SEALING_ACTIONS, "restore", "revert")
LOCKS_PER_READ = 250  # locks per part: their events are one read
SNAPSHOTS_PER_READ = 2_000  # snapshot rows per short read (12 ms quiet, ~13x that loaded)
READS = 5  # reads in pieces tried while operators keep changing the locks (see _check_part)
# A revert event's counts per kind, by the snapshot state they count.
COUNTED_STATES = {"restored": SnapshotState.RESTORED, "conflicts": SnapshotState.CONFLICT,
                  "gone": SnapshotState.GONE}


def check_seals(conn: Connection, lock_ids: Sequence[int] | None = None) -> SealCheck:
    """Recompute the seals of ``lock_ids`` (every lock when None: those in the lock table and
    those the trail names, so a deleted lock is missed) from the lock, snapshot and request
    tables and compare them with what the trail's events sealed and counted. Read-only.

    Inside a transaction the check reads in it (``audit verify``'s snapshot). Outside one it
    reads in short read transactions of its own, a few hundred locks and at most
    ``SNAPSHOTS_PER_READ`` snapshot rows each: on SQLite a reader keeps a site writer from
    committing, and the 100,000 snapshots of one lock took 3.9 s to read on a loaded machine.
    See :func:`_check_part` for why reading in pieces finds what one consistent read finds."""
    reads = _Reads(conn, own=not conn.in_transaction())
    if lock_ids is None:
        found: set[int] = set()
        with reads() as reader:
            for query in (select(locks.c.lock_id),
                          select(audit_events.c.lock_id).distinct().where(
                              audit_events.c.lock_id.is_not(None),
                              audit_events.c.action.in_(LOCK_ACTIONS)),
                          select(snapshots.c.lock_id).distinct(),
                          select(revert_requests.c.lock_id).distinct()):
                found.update(int(i) for i in reader.execute(query).scalars())
        lock_ids = sorted(found)
    check = SealCheck()
    for start in range(0, len(lock_ids), LOCKS_PER_READ):
        _check_part(reads, list(lock_ids[start:start + LOCKS_PER_READ]), check)
    return check


def check_sealed(conn: Connection, lock_ids: Sequence[int], command: str) -> None:
    """Refuse ``command`` (revert, approve) before it changes anything when what it depends on
    for ``lock_ids`` (their locks, snapshots and revert requests) no longer matches the seals:
    :class:`TamperedError`, naming the first problem. Call it outside a transaction, so that it
    reads in short ones (:func:`check_seals`)."""
    check = check_seals(conn, lock_ids)
    if not check.ok:
        more = (f" (and {len(check.problems) - 1} more problems)"
                if len(check.problems) > 1 else "")
        raise TamperedError(f"refusing to {command}, nothing was changed: {check.problems[0]}"
                            f"{more}; run `privacy-lock audit verify`")


def _head_seq(conn: Connection) -> int | None:
    return conn.execute(select(audit_head.c.seq)).scalar()


@dataclass
class _Reads:
    """Where a check reads: each ``with reads() as conn`` block is a short read transaction of
    its own (``own``), or the caller's transaction."""

    conn: Connection
    own: bool

    def __call__(self) -> AbstractContextManager[Connection]:
        return reading(self.conn) if self.own else nullcontext(self.conn)


@dataclass
class _Trail:
    """What the trail says about one lock."""

    opened: tuple[int, bool] | None = None  # its lock event: seq, whether it sealed the row
    lock_seal: tuple[int, str] | None = None  # the latest seal of the lock row: seq, digest
    first_seal: tuple[int, str] | None = None  # the first event sealing it: seq, occurred_at
    groups: dict[str, tuple[int, int, str]] = field(default_factory=dict)  # at -> seq, n, d
    restores: list[int] = field(default_factory=list)  # restore events' seqs
    resolved: Counter[tuple[str, str]] = field(default_factory=Counter)  # by them
    restores_known: bool = True  # every restore event has the shape counted here
    reverted: tuple[int, Any] | None = None  # the revert event: seq, its kinds


@dataclass
class _Filing:
    """The events about one revert request: (seq, digest or None when unsealed)."""

    lock_id: int
    filed: tuple[int, str | None] | None = None
    approved: tuple[int, str | None] | None = None
    rejected: tuple[int, str | None] | None = None


def _check_part(reads: _Reads, lock_ids: list[int], check: SealCheck) -> None:
    """Check a part's locks, read in pieces (:func:`_read_part`), and add what it found to
    ``check``.

    Why pieces find what one consistent read finds: the tool changes what this check compares of
    a lock's rows (the lock, its snapshots, its revert requests) only in a transaction that also
    appends an event naming the lock (marking an approved request done, with no event, changes
    nothing it compares), and an event's ``seq`` follows the audit head, which every such
    transaction locks. The part's first read notes the head; its last read looks for an event
    naming one of its locks after it. When there is none, no run, approval or revert touched
    those rows while the pieces were read: every piece saw them as the first read did, so the
    pieces add up to one consistent read, and a tampered row is found exactly as one read would
    find it (each row is read once, by its unique key). When there is one (an apply extended a
    lock between two pieces, another operator reverted it), the pieces may mix before and after,
    and their verdict, pass or fail, is not trusted: the part is read again, up to ``READS``
    times, then once in a single read transaction, which is consistent however busy the locks
    are."""
    for _attempt in range(READS):
        found = SealCheck()
        if not _read_part(reads, lock_ids, found):
            check.add(found)
            return
    if reads.own:  # operators kept changing these locks: one read transaction, as before pieces
        found = SealCheck()
        with reads() as conn:
            _read_part(_Reads(conn, own=False), lock_ids, found)
    check.add(found)


def _read_part(reads: _Reads, lock_ids: list[int], check: SealCheck) -> bool:
    """Read a part's trail, lock rows, snapshots and requests, and check them into ``check``;
    True when an event naming one of the locks was appended meanwhile (see :func:`_check_part`)."""
    trails: dict[int, _Trail] = {lock_id: _Trail() for lock_id in lock_ids}
    filings: dict[int, _Filing] = {}
    with reads() as conn:
        head = _head_seq(conn) or 0
        events = conn.execute(
            select(audit_events.c.seq, audit_events.c.lock_id, audit_events.c.action,
                   audit_events.c.occurred_at, audit_events.c.details)
            .where(audit_events.c.lock_id.in_(lock_ids),
                   audit_events.c.action.in_(LOCK_ACTIONS))
            .order_by(audit_events.c.seq)
        ).all()
        rows = {int(row["lock_id"]): dict(row) for row in conn.execute(
            select(locks.c.state, locks.c.active_subject, *[locks.c[f] for f in LOCK_FIELDS])
            .where(locks.c.lock_id.in_(lock_ids))).mappings()}
        sizes = {int(lock_id): int(n) for lock_id, n in conn.execute(  # the index alone
            select(snapshots.c.lock_id, func.count())
            .where(snapshots.c.lock_id.in_(lock_ids)).group_by(snapshots.c.lock_id)).all()}
    for seq, lock_id, action, at, details in events:  # parsed with no read lock held
        _read_event(trails[int(lock_id)], filings, int(seq), int(lock_id), action, at,
                    _details(details))
    with reads() as conn:
        requests = _request_rows(conn, lock_ids, filings)
    groups = {lock_id: _Groups(trails[lock_id].groups) for lock_id in lock_ids}
    states: dict[int, Counter[tuple[str, str]]] = {}
    for lock_id, at, kind, item, text, number, state in _snapshot_pieces(reads, sizes):
        groups[int(lock_id)].add(at, (kind, item, text, number))
        states.setdefault(int(lock_id), Counter())[kind, state] += 1
    with reads() as conn:
        moved = conn.execute(
            select(audit_events.c.seq)
            .where(audit_events.c.lock_id.in_(lock_ids), audit_events.c.seq > head).limit(1)
        ).first() is not None
    for lock_id in lock_ids:
        trail, row = trails[lock_id], rows.get(lock_id)
        if row is None:
            _check_gone(lock_id, trail, groups[lock_id], check)
            continue
        if not _check_lock(lock_id, trail, row, check):
            continue
        _check_groups(lock_id, trail, groups[lock_id], check)
        _check_state(lock_id, trail, row, states.get(lock_id, Counter()), check)
    _check_requests(requests, filings, check)
    return moved


class _Groups:
    """A lock's snapshot rows as read, by group (one transaction's rows, by their time): how
    many there are now, and for each group an event sealed whether they still match its digest.
    A sealed group's rows are kept only until it holds as many as its seal says, then digested
    and dropped, so memory holds the groups not yet complete, not the lock (a lock of 1,000,000
    items kept 150 MB of rows before): the walk (:func:`_walk_lock`) reads a lock's rows in the
    order they were written (whatever their state now), where a group's rows come together."""

    def __init__(self, sealed: dict[str, tuple[int, int, str]]) -> None:
        self.sealed = sealed  # at -> (seq, rows, digest), from the trail
        self.counts: Counter[str] = Counter()
        self.unfinished: dict[str, list[SnapshotRow]] = {}
        self.matched: dict[str, bool] = {}  # complete sealed groups: digest equal

    def add(self, at: str, row: SnapshotRow) -> None:
        self.counts[at] += 1
        if at not in self.sealed:
            return  # counted: no seal to compare with
        if at in self.matched:  # more rows than the seal says
            self.matched[at] = False
            return
        rows = self.unfinished.setdefault(at, [])
        rows.append(row)
        if len(rows) == self.sealed[at][1]:
            self.matched[at] = snapshot_digest(rows) == self.sealed[at][2]
            del self.unfinished[at]

    def matches(self, at: str) -> bool:
        """The group has exactly the rows its seal digested (fewer: it never completed)."""
        _seq, count, digest = self.sealed[at]
        if count == 0:  # nothing to complete: an empty group is the empty set's digest
            return self.counts[at] == 0 and snapshot_digest([]) == digest
        return self.matched.get(at, False) and self.counts[at] == count


SNAPSHOT_COLUMNS = (snapshots.c.lock_id, snapshots.c.snapshotted_at, snapshots.c.kind,
                    snapshots.c.item_id, snapshots.c.original_text, snapshots.c.original_int,
                    snapshots.c.state)


def _snapshot_pieces(reads: _Reads, sizes: dict[int, int]) -> Iterator[Any]:
    """Every snapshot row of the locks ``sizes`` counts, once each, in reads of about
    ``SNAPSHOTS_PER_READ`` rows: small locks together, a large one along its (lock, state,
    snapshot id) index (:func:`_walk_lock`)."""
    together: list[int] = []
    total = 0
    for lock_id in sorted(sizes):
        if sizes[lock_id] > SNAPSHOTS_PER_READ:
            yield from _walk_lock(reads, lock_id)
            continue
        if together and total + sizes[lock_id] > SNAPSHOTS_PER_READ:
            yield from _read_locks(reads, together)
            together, total = [], 0
        together.append(lock_id)
        total += sizes[lock_id]
    if together:
        yield from _read_locks(reads, together)


def _read_locks(reads: _Reads, lock_ids: list[int]) -> list[Any]:
    with reads() as conn:
        return list(conn.execute(select(*SNAPSHOT_COLUMNS).where(
            snapshots.c.lock_id.in_(lock_ids))).all())


def _walk_lock(reads: _Reads, lock_id: int) -> Iterator[Any]:
    """One lock's snapshot rows in the order they were written (snapshot id), so that a
    group's rows come together (:class:`_Groups`): each state's rows are read along the (lock,
    state, snapshot id) index, ``SNAPSHOTS_PER_READ`` at a time, and the states merged by
    snapshot id. Read state by state instead, a group split between states (every other item
    a conflict) waited for its other rows, and the first state's rows were all held (half the
    lock)."""
    with reads() as conn:  # the index alone
        states = conn.execute(
            select(snapshots.c.state).where(snapshots.c.lock_id == lock_id)
            .group_by(snapshots.c.state)).scalars().all()
    yield from (row[:-1] for row in heapq.merge(
        *[_walk_state(reads, lock_id, state) for state in sorted(states)],
        key=itemgetter(len(SNAPSHOT_COLUMNS))))  # the snapshot id, read last


def _walk_state(reads: _Reads, lock_id: int, state: str) -> Iterator[Any]:
    """One state's snapshot rows of a lock (each with its snapshot id, last), in snapshot id
    order, ``SNAPSHOTS_PER_READ`` at a time."""
    after: int | None = None
    while True:
        with reads() as conn:
            piece = select(*SNAPSHOT_COLUMNS, snapshots.c.snapshot_id).where(
                snapshots.c.lock_id == lock_id, snapshots.c.state == state)
            if after is not None:
                piece = piece.where(snapshots.c.snapshot_id > after)
            rows = conn.execute(
                piece.order_by(snapshots.c.snapshot_id).limit(SNAPSHOTS_PER_READ)).all()
        yield from rows
        if len(rows) < SNAPSHOTS_PER_READ:
            return
        after = int(rows[-1].snapshot_id)


def _read_event(trail: _Trail, filings: dict[int, _Filing], seq: int, lock_id: int,
                action: str, at: str, details: dict[str, Any]) -> None:
    sealed = details.get("sealed")
    sealed = sealed if isinstance(sealed, dict) else {}
    if action == "lock" and trail.opened is None:
        trail.opened = (seq, "lock" in sealed)
    if "lock" in sealed:
        trail.lock_seal = (seq, sealed["lock"])
    if "digest" in sealed:
        trail.groups[sealed["at"]] = (seq, int(sealed["snapshots"]), sealed["digest"])
    if ("lock" in sealed or "digest" in sealed) and trail.first_seal is None:
        trail.first_seal = (seq, at)
    if action == "restore":
        trail.restores.append(seq)
        if isinstance(details.get("kind"), str):
            for name, state in COUNTED_STATES.items():
                trail.resolved[details["kind"], state] += int(details.get(name) or 0)
        else:
            trail.restores_known = False
    elif action == "revert":
        trail.reverted = (seq, details.get("kinds"))
    elif (action in ("revert-requested", "revert-approved", "revert-rejected")
          and "request_id" in details):
        filing = filings.setdefault(int(details["request_id"]), _Filing(lock_id))
        if action == "revert-requested":
            filing.filed = (seq, sealed.get("request"))
        elif action == "revert-approved":
            filing.approved = (seq, sealed.get("approval"))
        else:
            filing.rejected = (seq, sealed.get("rejection"))


def _check_gone(lock_id: int, trail: _Trail, groups: _Groups, check: SealCheck) -> None:
    """A lock the trail names (or snapshots name) whose row is gone: the tool never deletes one."""
    if trail.lock_seal is not None:
        check.problems.append(f"lock {lock_id}, sealed by event {trail.lock_seal[0]}, is gone")
    elif trail.opened is not None:
        check.problems.append(f"lock {lock_id}, opened by event {trail.opened[0]}, is gone")
    elif groups.counts:
        check.problems.append(
            f"{groups.counts.total()} snapshot row(s) name lock {lock_id}, which no "
            "event opened and which does not exist (added by hand?)")
    for at, (seq, count, _digest) in sorted(trail.groups.items()):
        check.problems.append(
            f"the snapshots of lock {lock_id} written at {at} no longer match what event {seq} "
            f"sealed ({count} rows then, {groups.counts[at]} now; the lock was deleted)")


def _check_lock(lock_id: int, trail: _Trail, row: dict[str, Any], check: SealCheck) -> bool:
    """The lock row against its lock event and latest seal; False when no event opened it."""
    if trail.opened is None:
        check.problems.append(f"lock {lock_id} was opened by no event (inserted by hand?)")
        return False
    if trail.lock_seal is None:
        check.legacy_locks += 1
    else:
        seq, digest = trail.lock_seal
        check.checked += 1
        if fields_digest(row, LOCK_FIELDS) != digest:
            check.problems.append(
                f"lock {lock_id} no longer matches what event {seq} sealed (its user, "
                "operator, ticket, reason, time or content binding was edited)")
    return True


def _check_groups(lock_id: int, trail: _Trail, groups: _Groups, check: SealCheck) -> None:
    """Each snapshot group (one transaction's rows, by their time) against the event that
    sealed it. A lock sealed from its birth (its lock event seals the row) must have every
    group sealed; a lock made before seals, sealed later by an apply of a newer release,
    accepts unsealed groups written before that first seal (legacy, counted); a lock never
    sealed is legacy as a whole (counted by :func:`_check_lock`)."""
    if trail.first_seal is None:
        return
    born_sealed = bool(trail.opened and trail.opened[1])
    first_seq, first_at = trail.first_seal
    for at in sorted(set(groups.counts) | set(trail.groups)):
        rows = groups.counts[at]
        if at not in trail.groups:
            if not born_sealed and at <= first_at:
                check.legacy_groups += 1
                continue
            after = "" if born_sealed else (
                f", and were written after event {first_seq} first sealed the lock")
            check.problems.append(
                f"{rows} snapshot row(s) of lock {lock_id} written at {at} are sealed by "
                f"no event{after} (added by hand?)")
            continue
        seq, count, _digest = trail.groups[at]
        check.checked += 1
        if not groups.matches(at):
            check.problems.append(
                f"the snapshots of lock {lock_id} written at {at} no longer match what event "
                f"{seq} sealed ({count} rows then, {rows} now; a stored original, item or "
                "kind was edited, added or removed)")


def _check_state(lock_id: int, trail: _Trail, row: dict[str, Any],
                 found: Counter[tuple[str, str]], check: SealCheck) -> None:
    """The lock's state and its snapshots' states against the events that changed them (no
    key needed: the events' counts are in the chain). A reverted lock has the revert event
    that closed it, and its snapshots are in the states that event counted; an active lock
    has no revert event, and its resolved snapshots are exactly those its ``restore`` events
    (slices of a revert that has not finished) counted."""
    state, subject, active_subject = row["state"], row["subject"], row["active_subject"]
    if state == LockState.REVERTED:
        if trail.reverted is None:
            check.problems.append(f"lock {lock_id} is reverted, but no event reverted it (its "
                                  "state was edited?)")
            return
        if active_subject is not None:
            check.problems.append(f"lock {lock_id} is reverted, yet still holds user "
                                  f"{active_subject}'s active lock (its state was edited?)")
        seq, kinds = trail.reverted
        expected = _reverted_states(kinds)
        if expected is None:
            check.legacy_reverts += 1
            return
        if expected != +found:
            check.problems.append(
                f"the snapshots of lock {lock_id} are no longer in the states event {seq} "
                f"counted when it reverted the lock ({_difference(expected, found)}; a "
                "snapshot's state was edited)")
        return
    if state != LockState.ACTIVE:
        check.problems.append(f"lock {lock_id} is in state {state!r}, which no event gives a "
                              "lock (its state was edited?)")
        return
    if trail.reverted is not None:
        check.problems.append(f"lock {lock_id} is active, but event {trail.reverted[0]} "
                              "reverted it (its state was edited?)")
        return
    if active_subject != subject:
        check.problems.append(f"lock {lock_id} is active, but is not user {subject}'s active "
                              "lock (its active_subject was edited?)")
    if not trail.restores_known:
        check.legacy_reverts += 1
        return
    resolved = +Counter({key: n for key, n in found.items() if key[1] in RESOLVED})
    if resolved != +trail.resolved:
        events = (f"events {', '.join(map(str, trail.restores))}" if trail.restores
                  else "no restore event")
        check.problems.append(
            f"the resolved snapshots of lock {lock_id} (active) no longer match what its "
            f"restores recorded ({events}: {_difference(trail.resolved, resolved)}; a "
            "snapshot's state was edited)")


def _reverted_states(kinds: Any) -> Counter[tuple[str, str]] | None:
    """The snapshot states a ``revert`` event's ``kinds`` counted (restored, conflicts, gone;
    the rest of ``snapshotted`` still pending), or None when they have another shape."""
    if not isinstance(kinds, dict):
        return None
    expected: Counter[tuple[str, str]] = Counter()
    for name, counts in kinds.items():
        if not isinstance(counts, dict):
            return None
        resolved = 0
        for key, state in COUNTED_STATES.items():
            expected[name, state] = int(counts.get(key) or 0)
            resolved += expected[name, state]
        expected[name, SnapshotState.PENDING] = int(counts.get("snapshotted") or 0) - resolved
    return +expected


def _difference(expected: Counter[tuple[str, str]], found: Counter[tuple[str, str]]) -> str:
    """'diary restored: 6 then, 0 now; diary locked: 0 then, 6 now'."""
    keys = sorted(k for k in set(expected) | set(found) if expected[k] != found[k])
    return "; ".join(f"{kind} {state}: {expected[kind, state]} then, {found[kind, state]} now"
                     for kind, state in keys)


def _request_rows(conn: Connection, lock_ids: list[int],
                  filings: dict[int, _Filing]) -> dict[int, dict[str, Any]]:
    """The revert requests of these locks, and those their events name, by request id."""
    rows: dict[int, dict[str, Any]] = {}
    for query in (select(revert_requests).where(revert_requests.c.lock_id.in_(lock_ids)),
                  select(revert_requests).where(revert_requests.c.request_id.in_(
                      sorted(filings)))):
        rows.update((int(row["request_id"]), dict(row)) for row in conn.execute(query).mappings())
    return rows


def _check_requests(rows: dict[int, dict[str, Any]], filings: dict[int, _Filing],
                    check: SealCheck) -> None:
    """Every request row of these locks was filed by a ``revert-requested`` event naming it,
    and approved (when it is) by a ``revert-approved`` one; each sealed one matches its
    seals. An event without a seal (before seals existed) is counted, not checked."""
    for request_id in sorted(set(rows) | set(filings)):
        row, filing = rows.get(request_id), filings.get(request_id)
        if row is None:
            assert filing is not None
            seq = (filing.filed or filing.approved or (0, None))[0]
            how = "sealed" if (filing.filed or (0, None))[1] else "filed"
            check.problems.append(f"revert request {request_id}, {how} by event {seq}, is gone")
            continue
        if filing is None or filing.filed is None:
            check.problems.append(f"revert request {request_id} was filed by no event "
                                  "(inserted by hand?)")
            continue
        rejected = row["state"] == RequestState.REJECTED
        if rejected and filing.rejected is None:
            check.problems.append(f"revert request {request_id} was rejected by no event "
                                  "(its state was written by hand?)")
            continue
        if filing.rejected is not None and not rejected:
            check.problems.append(f"revert request {request_id} was rejected by event "
                                  f"{filing.rejected[0]} but is {row['state']} now (reopened "
                                  "by hand?)")
            continue
        approved = row["approved_by"] is not None or row["state"] not in (
            RequestState.PENDING, RequestState.REJECTED)
        if approved and filing.approved is None:
            check.problems.append(f"revert request {request_id} was approved by no event "
                                  "(its approval was written by hand?)")
            continue
        unsealed = False
        for what, fields, event in (("request", REQUEST_FIELDS, filing.filed),
                                    ("approval", APPROVAL_FIELDS, filing.approved),
                                    ("rejection", REJECTION_FIELDS, filing.rejected)):
            if event is None:
                continue
            seq, digest = event
            if digest is None:
                unsealed = True
                continue
            check.checked += 1
            if fields_digest(row, fields) != digest:
                who = {"request": "who asked, from where, ticket or reason",
                       "approval": "who asked or who approved, from where, or when",
                       "rejection": "who asked, from where, or when it was rejected"}[what]
                check.problems.append(
                    f"revert request {request_id} no longer matches what event {seq} sealed "
                    f"({who} was edited)")
        check.legacy_requests += unsealed


def _details(details: str | None) -> dict[str, Any]:
    try:
        parsed = json.loads(details or "{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}
