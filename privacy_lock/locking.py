"""apply / revert / status: the chunked, crash-safe core.

Every chunk is one short transaction that, in this order:
  1. locks the lock row (so an apply and a revert of the same user never interleave chunks),
  2. locks the next bounded set of content rows in key order (``SELECT ... FOR UPDATE``;
     SQLite has no row locks, so there every transaction is ``BEGIN IMMEDIATE``),
  3. copies their current visibility into snapshot rows server-side (``INSERT ... SELECT``),
  4. changes visibility with one set-based ``UPDATE`` restricted to those locked rows,
  5. appends the audit event last (the audit head row is the one lock every writer shares).
Rows are locked before they are read, so a concurrent edit by the site either commits before
the chunk (and its value is what gets snapshotted) or waits until after it (and stays as the
person set it). A crash at any instant rolls back the open chunk; committed chunks are complete.
Re-running walks whatever is still visible, so the same command resumes and finishes.

The walk is keyset pagination on (owner, id): each item is visited at most once per run, so a
site that keeps editing the person's items cannot keep a run going forever.

SQLite has one writer: a chunk's ``BEGIN IMMEDIATE`` holds the database's write lock (and SQLite
transactions are serializable in any case), so no row can change between two statements of a
chunk. There a chunk is named by its key range instead of its key list: the walk returns only
its last key, and the snapshot and the change cover ``owner = ? AND after < id <= last``,
exactly the walked items. Binding a 1000-key list into three statements per chunk cost more
than all of the chunk's SQL (bench/).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sqlalchemy import (
    Connection,
    Integer,
    String,
    and_,
    any_,
    bindparam,
    case,
    cast,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from privacy_lock.audit import Actor, append_event, utc_now
from privacy_lock.config import BoundKind, ContentMap, bind_value
from privacy_lock.db import reading
from privacy_lock.errors import ConfigError, LockStateError, UsageError
from privacy_lock.pacing import Pacer
from privacy_lock.schema import locks, snapshots

ACTIVE, REVERTED = "active", "reverted"
USERS_PER_QUERY = 1000  # users per existence query when validating user arguments
PENDING, RESTORED, CONFLICT, GONE = "locked", "restored", "conflict", "gone"
RESOLVED = (RESTORED, CONFLICT, GONE)  # the states only a revert gives a snapshot


@dataclass
class KindCounts:
    """What happened (or, in a dry run, would happen) to one kind of one user's content."""

    changed: int = 0  # apply: hidden by this run
    already_private: int = 0  # apply: already owner-only, left alone, not snapshotted
    snapshotted: int = 0  # apply: snapshot rows this lock holds for the kind, in total
    restored: int = 0  # revert: set back to the stored original
    conflicts: int = 0  # revert: changed by someone since the lock, left as it is
    gone: int = 0  # revert: deleted (or no longer this user's) since the lock

    def as_dict(self) -> dict[str, int]:
        """The counts by name (cheaper than dataclasses.asdict, which deep-copies)."""
        return dict(vars(self))


@dataclass
class UserResult:
    """The outcome of apply or revert for one user."""

    user: str
    lock_id: int | None
    status: str
    dry_run: bool = False
    kinds: dict[str, KindCounts] = field(default_factory=dict)
    chunks: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "lock_id": self.lock_id,
            "status": self.status,
            "dry_run": self.dry_run,
            "chunks": self.chunks,
            "kinds": {name: counts.as_dict() for name, counts in self.kinds.items()},
        }


# --- shared SQL pieces ---------------------------------------------------------------------------


def visible(kind: BoundKind) -> ColumnElement[bool]:
    """Not owner-only: NULL ("site default") counts as visible."""
    return or_(kind.vis_col != kind.private, kind.vis_col.is_(None))


def id_as_text(kind: BoundKind) -> ColumnElement[Any]:
    """The item id as snapshot rows store it."""
    if isinstance(kind.id_col.type, String):
        return kind.id_col
    return cast(kind.id_col, String(191))


def snapshot_item_as_id(kind: BoundKind) -> ColumnElement[Any]:
    """A snapshot's item id in the content id column's own type (so the id index is used)."""
    if isinstance(kind.id_col.type, String):
        return snapshots.c.item_id
    return cast(snapshots.c.item_id, kind.id_col.type)


def in_keys(
    conn: Connection, col: Any, keys: Sequence[Any], bounded: bool = False
) -> ColumnElement[bool]:
    """``col IN (keys)`` for a chunk's keys. On PostgreSQL one array parameter (``= ANY``)
    instead of a thousand: a 1000-key statement takes 5-6 ms instead of 16-21 (bench/).

    ``bounded`` adds, for integer keys, the redundant ``col BETWEEN min AND max``, which keeps
    a plan to the keys' slice of an index: a heavy user's chunk on MariaDB, and on PostgreSQL a
    table with no statistics yet (the snapshot table of a new install), where the totals of 100
    locks took a sequential scan, 85 ms, instead of 1.5. (Text keys get no range: Python's
    order is not the database collation's.)
    """
    if conn.dialect.name == "postgresql":
        match = col == any_(bindparam(None, list(keys), type_=ARRAY(col.type)))
    else:
        match = col.in_(keys)
    if bounded and keys and isinstance(keys[0], int):
        return and_(match, col.between(min(keys), max(keys)))
    return match


def plan_for_actual_keys(conn: Connection) -> None:
    """On PostgreSQL, plan the rest of this transaction for its actual owner and keys.

    psycopg prepares a statement after its fifth run, and PostgreSQL may then switch to a
    generic plan that knows neither: for a heavy user it reads every item of the owner for
    each chunk (a 100,000-item revert took 24-150 s instead of 10, bench/).
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")


def original_col(kind: BoundKind) -> Any:
    """The snapshot column that holds a kind's original value (integer or text codes)."""
    return snapshots.c.original_int if kind.value_kind == "int" else snapshots.c.original_text


def _lock_row(conn: Connection, lock_id: int) -> Any:
    """Lock and return the lock row; every chunk takes it first (see the module docstring)."""
    row = conn.execute(
        select(locks).where(locks.c.lock_id == lock_id).with_for_update()
    ).first()
    if row is None:
        raise LockStateError(f"lock {lock_id} does not exist")
    return row


def active_lock_id(conn: Connection, subject: str) -> int | None:
    """The id of the user's active lock, if any."""
    return conn.execute(
        select(locks.c.lock_id).where(locks.c.active_subject == subject)
    ).scalar()


def active_lock_ids(
    conn: Connection, subjects: Sequence[str], lock: bool = False
) -> dict[str, int]:
    """The active lock of each of ``subjects`` that has one, by subject; with ``lock``, those
    lock rows are locked (in lock id order, so that concurrent batches do not deadlock)."""
    query = select(locks.c.active_subject, locks.c.lock_id).where(
        in_keys(conn, locks.c.active_subject, subjects))
    if lock:
        query = query.order_by(locks.c.lock_id).with_for_update()
    return {subject: int(lock_id) for subject, lock_id in conn.execute(query).all()}


# --- validation ----------------------------------------------------------------------------------


def check_users(conn: Connection, cmap: ContentMap, raw_users: Iterable[str]) -> list[str]:
    """Normalize every user id and reject unknown ones, all before anything changes (a few
    set-based queries per thousand users)."""
    subjects = [cmap.normalize_user(raw) for raw in raw_users]
    duplicates = sorted(s for s, n in Counter(subjects).items() if n > 1)
    if duplicates:
        raise UsageError(f"user {duplicates[0]} is named more than once")
    for start in range(0, len(subjects), USERS_PER_QUERY):
        # One short read per thousand users: a 10,000-user batch held one snapshot 300 ms.
        with reading(conn):
            unknown = cmap.unknown_users(conn, subjects[start:start + USERS_PER_QUERY])
        if unknown:
            if cmap.accounts_table is not None:
                raise UsageError(
                    f"unknown user {unknown[0]!r} (not in {cmap.accounts_table.name})")
            raise UsageError(
                f"user {unknown[0]!r} owns no {'/'.join(cmap.kinds)} items and has no lock "
                "(configure [accounts] to tell unknown users from users with no content)"
            )
    return subjects


def count_for_apply(
    conn: Connection, cmap: ContentMap, subject: str, kind: BoundKind
) -> KindCounts:
    """How many of the user's items of ``kind`` are visible (would change) and already private."""
    owner = cmap.owner_value(kind, subject)
    n_visible = func.coalesce(func.sum(case((visible(kind), 1), else_=0)), 0)
    n_private = func.coalesce(func.sum(case((kind.vis_col == kind.private, 1), else_=0)), 0)
    row = conn.execute(select(n_visible, n_private).where(kind.owner_col == owner)).one()
    return KindCounts(changed=int(row[0]), already_private=int(row[1]))


def open_lock(conn: Connection, subject: str, actor: Actor, pacer: Pacer) -> tuple[int, bool]:
    """Return the user's active lock, opening one if there is none: (lock_id, opened_now).

    The unique ``active_subject`` column makes this race-free: when two operators open a lock
    for the same user at once, one insert fails and that operator joins the other's lock.
    """

    def find_or_open() -> tuple[int, bool]:
        existing = active_lock_id(conn, subject)
        if existing is not None:
            return existing, False
        now = utc_now()
        lock_id = conn.execute(
            insert(locks).values(
                subject=subject, active_subject=subject, state=ACTIVE,
                operator=actor.operator, ticket=actor.ticket or "",
                reason=actor.reason or "", created_at=now, updated_at=now,
            )
        ).inserted_primary_key[0]
        append_event(conn, "lock", actor, subject=subject, lock_id=lock_id)
        return int(lock_id), True

    for _attempt in range(3):
        try:
            return pacer.chunk(conn, find_or_open)
        except IntegrityError:
            continue  # another operator opened it between our look and our insert: join it
    raise LockStateError(f"could not open or find the active lock of user {subject}")


def snapshot_and_hide_chunk(
    conn: Connection, kind: BoundKind, lock_id: int, owner: Any, after: Any, limit: int,
    fresh: bool = False,
) -> tuple[int, int, Any, int]:
    """Snapshot and hide the next ``limit`` visible items after key ``after``.

    Returns (items hidden, snapshot rows written, last key visited, keys visited); last key
    is None when there was nothing left to visit. Runs inside the caller's transaction.
    ``fresh``: this run opened the lock, so it holds no snapshot of the items ahead of the walk
    (unless another operator's apply of the same user ran meanwhile).
    """
    walk = select(kind.id_col).where(kind.owner_col == owner, visible(kind))
    if after is not None:
        walk = walk.where(kind.id_col > after)
    walk = walk.order_by(kind.id_col).limit(limit)
    if conn.dialect.name == "sqlite":
        # One writer (see the module docstring): the range (after, last] is the walked items.
        chunk = walk.subquery()
        seen, last = conn.execute(select(func.count(), func.max(chunk.c[0]))).one()
        if not seen:
            return 0, 0, None, 0
        these_rows = and_(kind.owner_col == owner, kind.id_col <= last, visible(kind))
        if after is not None:
            these_rows = and_(these_rows, kind.id_col > after)
        return (*_snapshot_and_hide(conn, kind, lock_id, these_rows, fresh), last, seen)
    if conn.dialect.name == "postgresql":
        # PostgreSQL locks only the rows a locking read returns (its filter runs before the
        # lock), whatever index the plan walks: here the walk itself locks, one statement less.
        # (Walk, snapshot and hide as one statement with CTEs was slower at 100,000 items:
        # 5.6-5.8 s against 4.7-5.3 s, same runs.)
        candidates = ids = conn.execute(walk.with_for_update()).scalars().all()
        if not ids:
            return 0, 0, None, 0
        in_range = kind.id_col.between(ids[0], ids[-1])
    else:
        # Find the next keys with a plain read, then lock exactly those rows by key. Locking in
        # the walk itself would let MariaDB choose a primary-key scan for ORDER BY ... LIMIT (it
        # does on small or skewed tables) and wait on, or lock, other users' rows.
        candidates = conn.execute(walk).scalars().all()
        if not candidates:
            return 0, 0, None, 0
        # The key range is redundant with the key list but bounds every plan to this chunk's
        # slice of the (owner, id) index.
        in_range = kind.id_col.between(candidates[0], candidates[-1])
        ids = conn.execute(
            select(kind.id_col)
            .where(kind.owner_col == owner, in_range, in_keys(conn, kind.id_col, candidates),
                   visible(kind))
            .with_for_update()
        ).scalars().all()
        if not ids:  # all of them were hidden by someone else meanwhile
            return 0, 0, candidates[-1], len(candidates)
    # A prepared (generic) PostgreSQL plan uses only the owner as index condition and checks a
    # 1000-key list against every item of a heavy user: the key range keeps it to the chunk.
    these_rows = and_(
        kind.owner_col == owner, in_range, in_keys(conn, kind.id_col, ids), visible(kind)
    )
    return (*_snapshot_and_hide(conn, kind, lock_id, these_rows, fresh), candidates[-1],
            len(candidates))


def _snapshot_and_hide(
    conn: Connection, kind: BoundKind, lock_id: int, these_rows: ColumnElement[bool],
    fresh: bool = False,
) -> tuple[int, int]:
    """Snapshot ``these_rows`` (unless the lock holds them already), then hide them:
    (items hidden, snapshot rows written). The rows must be locked (or SQLite's)."""
    # An item the lock already holds a snapshot for (made visible again since) is hidden again,
    # but its stored original is never overwritten.
    already_snapshotted = (
        select(snapshots.c.snapshot_id)
        .where(
            snapshots.c.lock_id == lock_id,
            snapshots.c.kind == kind.name,
            snapshots.c.item_id == id_as_text(kind),
        )
        .exists()
    )
    source = select(
        literal(lock_id, snapshots.c.lock_id.type),
        literal(kind.name, snapshots.c.kind.type),
        id_as_text(kind),
        kind.vis_col,
        literal(PENDING, snapshots.c.state.type),
        literal(utc_now(), snapshots.c.snapshotted_at.type),
    )
    target = ["lock_id", "kind", "item_id", original_col(kind).name, "state", "snapshotted_at"]
    if conn.dialect.name in ("postgresql", "sqlite"):
        # The unique (lock_id, kind, item_id) index decides in the insert's own probe. With NOT
        # EXISTS PostgreSQL estimates a growing lock's snapshots as a handful and rescans all of
        # them for every item (quadratic: minutes per chunk for a 100,000-item user); SQLite
        # probes the index twice per item (1000-row chunk: 5.5 ms against 3.9 ms).
        dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        statement = (
            dialect_insert(snapshots).from_select(target, source.where(these_rows))
            .on_conflict_do_nothing(index_elements=["lock_id", "kind", "item_id"])
        )
    else:
        statement = insert(snapshots).from_select(
            target, source.where(these_rows, ~already_snapshotted)
        )
    # SQLAlchemy keeps an INSERT's row count only when asked (psycopg's is gone once the
    # cursor closes: the hide events said -1 on PostgreSQL).
    counted = {"preserve_rowcount": True}
    if fresh and conn.dialect.name == "postgresql":
        # A plain insert costs a quarter less per row than ON CONFLICT; if the lock does hold
        # one of these items (another apply of this user ran meanwhile), the unique index
        # refuses it and the savepoint lets the chunk go on the ON CONFLICT way.
        try:
            with conn.begin_nested():
                snapshotted = conn.execute(
                    insert(snapshots).from_select(target, source.where(these_rows)),
                    execution_options=counted,
                ).rowcount
        except IntegrityError:
            snapshotted = conn.execute(statement, execution_options=counted).rowcount
    else:
        snapshotted = conn.execute(statement, execution_options=counted).rowcount
    hidden = conn.execute(
        update(kind.table).where(these_rows).values({kind.vis_col.name: kind.private})
    ).rowcount
    return hidden, snapshotted


def apply_lock(
    conn: Connection,
    cmap: ContentMap,
    subject: str,
    kinds: list[BoundKind],
    actor: Actor,
    pacer: Pacer | None = None,
    dry_run: bool = False,
) -> UserResult:
    """Move every visible item of ``kinds`` owned by ``subject`` to owner-only, with snapshots.

    Extends the user's active lock if there is one. A dry run only counts and writes nothing.
    """
    pacer = pacer or Pacer()
    with reading(conn):
        planned = {k.name: count_for_apply(conn, cmap, subject, k) for k in kinds}
        existing = active_lock_id(conn, subject)
        if existing is not None and holds_snapshots(conn, existing, RESOLVED):
            raise being_reverted(existing, subject)
    if dry_run:
        return UserResult(subject, existing, "would-extend" if existing else "would-lock",
                          True, planned)

    lock_id, opened = open_lock(conn, subject, actor, pacer)
    result = UserResult(subject, lock_id, "locked" if opened else "extended")

    def hide_next_chunk(kind: BoundKind, owner: Any, after: Any) -> tuple[int, int, Any, int]:
        if _lock_row(conn, lock_id).state != ACTIVE:
            raise LockStateError(
                f"lock {lock_id} of user {subject} was reverted while this apply was "
                "running; the chunks already committed stay hidden under it", lock_id)
        if holds_snapshots(conn, lock_id, RESOLVED):
            raise being_reverted(lock_id, subject)
        hidden, snapshotted, last, seen = snapshot_and_hide_chunk(
            conn, kind, lock_id, owner, after, pacer.size, fresh=opened
        )
        if last is not None:
            append_event(
                conn, "hide", actor, subject=subject, lock_id=lock_id,
                details={"kind": kind.name, "hidden": hidden, "snapshotted": snapshotted},
            )
        return hidden, snapshotted, last, seen

    for kind in kinds:
        counts = result.kinds.setdefault(kind.name, KindCounts())
        counts.already_private = planned[kind.name].already_private
        owner, after = cmap.owner_value(kind, subject), None
        # The walk ends at the first chunk that is not full (or at once when the plan found
        # nothing visible): no extra transaction just to learn that nothing is left.
        more = planned[kind.name].changed > 0
        while more:
            size = pacer.size
            hidden, _snapshotted, last, seen = pacer.chunk(
                conn, partial(hide_next_chunk, kind, owner, after)
            )
            if last is None:
                break
            after, more = last, seen >= size
            counts.changed += hidden
            result.chunks += 1
            pacer.after_chunk(subject, kind.name, hidden)

    if opened is False and not any(c.changed for c in result.kinds.values()):
        result.status = "already-locked"

    # Per kind only: counted from the (lock_id, kind, item_id) index alone, where per state
    # reads every snapshot row (80 ms of a 100,000-item apply on SQLite); before the closing
    # transaction, in short reads, so that a heavy lock's count does not lengthen it.
    totals = counted_in_pieces(conn, lock_id, result.kinds)
    for name, counts in result.kinds.items():
        counts.snapshotted = totals.get(name, {}).get("total", 0)

    def finish() -> None:
        _lock_row(conn, lock_id)
        conn.execute(
            update(locks).where(locks.c.lock_id == lock_id).values(updated_at=utc_now())
        )
        append_event(
            conn, "apply", actor, subject=subject, lock_id=lock_id,
            details={
                "status": result.status,
                "chunks": result.chunks,
                "kinds": {n: {"changed": c.changed, "already_private": c.already_private,
                              "snapshotted": c.snapshotted} for n, c in result.kinds.items()},
            },
        )

    pacer.chunk(conn, finish)
    return result


# --- revert --------------------------------------------------------------------------------------


def _snapshot_totals(conn: Connection, lock_id: int) -> dict[str, dict[str, int]]:
    """Snapshot rows of a lock per kind and state, plus a per-kind "total"."""
    return snapshot_totals(conn, [lock_id]).get(lock_id, {})


def snapshot_totals(
    conn: Connection, lock_ids: Sequence[int]
) -> dict[int, dict[str, dict[str, int]]]:
    """Snapshot rows per lock, kind and state, plus a per-kind "total", for each lock."""
    rows = conn.execute(
        select(snapshots.c.lock_id, snapshots.c.kind, snapshots.c.state, func.count())
        .where(in_keys(conn, snapshots.c.lock_id, lock_ids, bounded=True))
        .group_by(snapshots.c.lock_id, snapshots.c.kind, snapshots.c.state)
    ).all()
    totals: dict[int, dict[str, dict[str, int]]] = {}
    for lock_id, kind, state, n in rows:
        per_kind = totals.setdefault(int(lock_id), {}).setdefault(kind, {"total": 0})
        per_kind[state] = int(n)
        per_kind["total"] += int(n)
    return totals


TOTALS_PIECE = 50_000  # snapshot rows a heavy lock's totals count per short read


def counted_in_pieces(
    conn: Connection, lock_id: int, kinds: Iterable[str], by_state: bool = False
) -> dict[str, dict[str, int]]:
    """A lock's snapshot rows per kind (per state too with ``by_state``) plus a per-kind
    "total", as :func:`snapshot_totals`, but read in pieces of at most ``TOTALS_PIECE`` rows
    along the (lock, kind, item) index, each piece in a short read transaction of its own. In
    one statement, the totals of a 1,000,000-item lock took 0.9 s on PostgreSQL (bench/), all
    of it inside the transaction that closes the lock; a small lock is still one read.

    Snapshots are only ever added (pending) or resolved once, never removed: totals that
    found no pending snapshot stay true while nothing pending is added, which the caller
    checks in the transaction that uses them (:func:`holds_snapshots`).
    """
    totals: dict[str, dict[str, int]] = {}
    todo = [(name, None) for name in sorted(kinds)]
    while todo:
        budget = TOTALS_PIECE
        with reading(conn):
            while todo and budget > 0:
                name, after = todo.pop(0)
                piece = select(snapshots.c.item_id, snapshots.c.state).where(
                    snapshots.c.lock_id == lock_id, snapshots.c.kind == name)
                if after is not None:
                    piece = piece.where(snapshots.c.item_id > after)
                piece = piece.order_by(snapshots.c.item_id).limit(budget).subquery()
                group = [piece.c.state] if by_state else []
                rows = conn.execute(
                    select(*group, func.count(), func.max(piece.c.item_id)).group_by(*group)
                ).all()
                seen = sum(int(row[-2]) for row in rows)
                if not seen:
                    continue
                per_kind = totals.setdefault(name, {"total": 0})
                per_kind["total"] += seen
                if by_state:
                    for state, n, _last in rows:
                        per_kind[state] = per_kind.get(state, 0) + int(n)
                budget -= seen
                if budget <= 0:  # the piece was full: the kind may go on past its last item
                    todo.insert(0, (name, max(row[-1] for row in rows)))
    return totals


def holds_snapshots(conn: Connection, lock_id: int, states: Sequence[str]) -> bool:
    """Whether the lock holds a snapshot in one of ``states`` (one probe of the pending index):
    ``(PENDING,)``, one still to revert; ``RESOLVED``, a revert has begun (it was interrupted,
    or runs now) and has not closed the lock."""
    return conn.execute(
        select(snapshots.c.snapshot_id)
        .where(snapshots.c.lock_id == lock_id, snapshots.c.state.in_(states))
        .limit(1)
    ).first() is not None


def reverts_begun(conn: Connection, lock_ids: Sequence[int]) -> set[int]:
    """Of ``lock_ids``, those holding a ``RESOLVED`` snapshot (see :func:`holds_snapshots`),
    in one query."""
    if not lock_ids:
        return set()
    return {int(lock_id) for lock_id in conn.execute(
        select(snapshots.c.lock_id).distinct()
        .where(in_keys(conn, snapshots.c.lock_id, lock_ids), snapshots.c.state.in_(RESOLVED))
    ).scalars()}


def being_reverted(lock_id: int, subject: str) -> LockStateError:
    """Apply must not hide items of a lock a revert has begun to give back: an item the revert
    restored would be hidden again under a snapshot already resolved, and stay hidden once the
    revert closes the lock."""
    return LockStateError(
        f"lock {lock_id} of user {subject} is being reverted (a revert restored some of its "
        f"items and has not finished): finish it with `privacy-lock revert {lock_id}`, then "
        "apply again", lock_id)


def _lock_kinds(conn: Connection, cmap: ContentMap, lock_id: int) -> list[BoundKind]:
    """The kinds a lock holds snapshots of; every one must still be in the content map.

    One probe of the (lock, kind, item) index per kind found (``DISTINCT`` read every snapshot
    of the lock: 0.24 s for 1,000,000 on PostgreSQL)."""
    names: list[str] = []
    while True:
        after = select(snapshots.c.kind).where(snapshots.c.lock_id == lock_id)
        if names:
            after = after.where(snapshots.c.kind > names[-1])
        name = conn.execute(after.order_by(snapshots.c.kind).limit(1)).scalar()
        if name is None:
            break
        names.append(name)
    missing = sorted(n for n in names if n not in cmap.kinds)
    if missing:
        raise ConfigError(
            f"lock {lock_id} holds {missing[0]!r} items but the content map has no "
            f"[content.{missing[0]}]: restore that section to revert the lock"
        )
    return [k for k in cmap.kinds.values() if k.name in names]


def count_for_revert(conn: Connection, kind: BoundKind, lock_id: int, owner: Any) -> KindCounts:
    """For the lock's pending snapshots: how many would be restored, conflict, or are gone."""
    joined = snapshots.outerjoin(
        kind.table, and_(kind.id_col == snapshot_item_as_id(kind), kind.owner_col == owner)
    )
    outcome = revert_outcome(kind)
    rows = conn.execute(
        select(outcome, func.count())
        .select_from(joined)
        .where(snapshots.c.lock_id == lock_id, snapshots.c.kind == kind.name,
               snapshots.c.state == PENDING)
        .group_by(outcome)
    ).all()
    return counts_by_outcome({state: int(n) for state, n in rows})


def revert_outcome(kind: BoundKind) -> Any:
    """SQL: what a revert would make of a pending snapshot's item, outer-joined (NULL: gone)."""
    return case(
        (kind.id_col.is_(None), GONE), (kind.vis_col == kind.private, RESTORED), else_=CONFLICT
    )


def counts_by_outcome(found: dict[str, int]) -> KindCounts:
    """Counts of :func:`revert_outcome` as a dry run's KindCounts."""
    return KindCounts(restored=found.get(RESTORED, 0), conflicts=found.get(CONFLICT, 0),
                      gone=found.get(GONE, 0))


def restore_chunk(
    conn: Connection, kind: BoundKind, lock_id: int, owner: Any, after: int, limit: int
) -> tuple[KindCounts, int | None]:
    """Restore the next ``limit`` pending snapshots of ``kind`` after snapshot id ``after``.

    Each item is put back only if it is still owner-only; otherwise it is a conflict (someone
    changed it since) or gone (deleted, or no longer this user's). Returns the counts and the
    last snapshot id visited (None when nothing was left). Runs in the caller's transaction.
    """
    plan_for_actual_keys(conn)
    if conn.dialect.name in ("sqlite", "postgresql"):
        return _restore_range(conn, kind, lock_id, owner, after, limit)
    pending = conn.execute(
        select(snapshots.c.snapshot_id, snapshots.c.item_id)
        .where(snapshots.c.lock_id == lock_id, snapshots.c.kind == kind.name,
               snapshots.c.state == PENDING, snapshots.c.snapshot_id > after)
        .order_by(snapshots.c.snapshot_id)
        .limit(limit)
    ).all()
    if not pending:
        return KindCounts(), None
    snapshot_ids = [row.snapshot_id for row in pending]
    # Key ranges, redundant with the key lists, bound every plan to this chunk's slice of the
    # (owner, id) and snapshot indexes instead of all of a heavy user's items and snapshots.
    these_snapshots = and_(snapshots.c.lock_id == lock_id,
                           snapshots.c.snapshot_id.between(snapshot_ids[0], snapshot_ids[-1]))
    # Lock the items first, by key, then decide: while we hold them nobody can change them.
    item_ids = [bind_value(kind.id_col, row.item_id) for row in pending]
    these_items = and_(kind.owner_col == owner,
                       in_keys(conn, kind.id_col, item_ids, bounded=True))
    current = dict(
        conn.execute(
            select(id_as_text(kind), kind.vis_col).where(these_items).with_for_update()
        ).all()
    )
    by_state: dict[str, list[int]] = {RESTORED: [], CONFLICT: [], GONE: []}
    for row in pending:
        if row.item_id not in current:
            by_state[GONE].append(row.snapshot_id)
        elif current[row.item_id] == kind.private:
            by_state[RESTORED].append(row.snapshot_id)
        else:
            by_state[CONFLICT].append(row.snapshot_id)

    if by_state[RESTORED]:
        restored = conn.execute(
            update(kind.table)
            .values({kind.vis_col.name: original_col(kind)})
            .where(
                these_items,
                kind.vis_col == kind.private,
                kind.id_col == snapshot_item_as_id(kind),
                these_snapshots,
                in_keys(conn, snapshots.c.snapshot_id, by_state[RESTORED]),
            )
        ).rowcount
        if restored != len(by_state[RESTORED]):
            raise _restore_mismatch(lock_id, kind, len(by_state[RESTORED]), restored)
    now = utc_now()
    for state, ids in by_state.items():
        if ids:
            conn.execute(
                update(snapshots)
                .where(these_snapshots, in_keys(conn, snapshots.c.snapshot_id, ids))
                .values(state=state, resolved_at=now)
            )
    counts = KindCounts(restored=len(by_state[RESTORED]), conflicts=len(by_state[CONFLICT]),
                        gone=len(by_state[GONE]))
    return counts, snapshot_ids[-1]


def _restore_range(
    conn: Connection, kind: BoundKind, lock_id: int, owner: Any, after: int, limit: int
) -> tuple[KindCounts, int | None]:
    """restore_chunk set-based on the chunk's snapshot id range (after, last], with no key
    lists and no rows fetched (SQLite and PostgreSQL).

    The chunk's items are locked by key first (a join on the snapshot range, ``FOR UPDATE OF``
    the content table; SQLite has one writer) and counted as they are then: missing (gone),
    changed (conflict), still owner-only (to restore). Gone and conflicting snapshots are
    marked; every pending snapshot left in the range then holds a locked item that is still
    owner-only, which is restored and marked. Each count is checked against what the statements
    matched, so a chunk that would not add up changes nothing.
    """
    chunk = (
        select(snapshots.c.snapshot_id, snapshots.c.item_id)
        .where(snapshots.c.lock_id == lock_id, snapshots.c.kind == kind.name,
               snapshots.c.state == PENDING, snapshots.c.snapshot_id > after)
        .order_by(snapshots.c.snapshot_id)
        .limit(limit)
        .subquery()
    )
    integer_ids = isinstance(kind.id_col.type, Integer)
    bounds = [func.count(), func.max(chunk.c.snapshot_id)]
    if integer_ids:
        as_id = cast(chunk.c.item_id, kind.id_col.type)
        bounds += [func.min(as_id), func.max(as_id)]
    one_writer = conn.dialect.name == "sqlite"
    query = select(*bounds)
    if one_writer:  # nothing to lock: count the items as they are in the same statement
        as_id = chunk.c.item_id if isinstance(kind.id_col.type, String) else as_id
        query = query.add_columns(
            func.count(kind.id_col), func.count(case((kind.vis_col == kind.private, 1)))
        ).select_from(chunk.outerjoin(
            kind.table, and_(kind.id_col == as_id, kind.owner_col == owner)
        ))
    found = conn.execute(query).one()
    total, last = found[0], found[1]
    if not total:
        return KindCounts(), None
    in_chunk = and_(
        snapshots.c.lock_id == lock_id, snapshots.c.kind == kind.name,
        snapshots.c.state == PENDING, snapshots.c.snapshot_id > after,
        snapshots.c.snapshot_id <= last,
    )
    # The item of a snapshot. The id range, redundant with the join, keeps every plan to the
    # chunk's slice of the (owner, id) index instead of all of a heavy user's items.
    its_item = and_(kind.id_col == snapshot_item_as_id(kind), kind.owner_col == owner)
    if integer_ids:
        its_item = and_(its_item, kind.id_col.between(found[2], found[3]))
    if one_writer:
        present, still_private = found[-2], found[-1]
    else:
        items = (
            select(kind.vis_col)
            .select_from(kind.table.join(snapshots, its_item))
            .where(in_chunk)
            .with_for_update(of=kind.table)
            .subquery()
        )
        present, still_private = conn.execute(
            select(func.count(), func.count(case((items.c[0] == kind.private, 1))))
        ).one()
    counted = KindCounts(restored=still_private, conflicts=present - still_private,
                         gone=total - present)
    resolve_counted(conn, kind, in_chunk, its_item, counted, utc_now(),
                    partial(_restore_mismatch, lock_id, kind), mark_restored=True)
    return counted, last


def resolve_counted(
    conn: Connection,
    kind: BoundKind,
    pending: ColumnElement[bool],
    its_item: ColumnElement[bool],
    counted: KindCounts,
    now: str,
    mismatch: Callable[[int, int, str], Exception],
    mark_restored: bool,
) -> None:
    """Resolve the ``pending`` snapshots of one kind as ``counted`` while their items were
    locked: mark the gone ones (no item of theirs left: ``its_item`` joins a snapshot to its
    item), the conflicting ones (their item is no longer owner-only), and restore the items
    still owner-only (marking those snapshots too with ``mark_restored``). Every statement's
    row count is checked against its count, ``mismatch(expected, matched, state)`` raised
    otherwise, so a chunk that would not add up changes nothing."""
    item = select(kind.id_col).where(its_item)

    def check(expected: int, matched: int, state: str) -> None:
        if matched != expected:
            raise mismatch(expected, matched, state)

    def mark(state: str, expected: int, *where: ColumnElement[bool]) -> None:
        statement = update(snapshots).where(pending, *where)
        check(expected, conn.execute(statement.values(state=state, resolved_at=now)).rowcount,
              state)

    if counted.gone:
        mark(GONE, counted.gone, ~item.exists())
    if counted.conflicts:
        mark(CONFLICT, counted.conflicts, ~item.where(kind.vis_col == kind.private).exists())
    if counted.restored:
        restored = conn.execute(
            update(kind.table)
            .values({kind.vis_col.name: original_col(kind)})
            .where(its_item, kind.vis_col == kind.private, pending)
        ).rowcount
        check(counted.restored, restored, RESTORED)
        if mark_restored:
            mark(RESTORED, counted.restored)


def _restore_mismatch(
    lock_id: int, kind: BoundKind, expected: int, matched: int, state: str = RESTORED
) -> Exception:
    """Cannot happen while the rows are locked; if it does, the chunk changes nothing."""
    return LockStateError(
        f"lock {lock_id}: expected {expected} {kind.name} items to be {state} but the database "
        f"matched {matched}; chunk rolled back, re-run revert", lock_id)


def find_lock(conn: Connection, lock_id: int) -> Any:
    """The lock row, or a usage error naming the id."""
    row = conn.execute(select(locks).where(locks.c.lock_id == lock_id)).first()
    if row is None:
        raise UsageError(f"no lock with id {lock_id}")
    return row


def revert_lock(
    conn: Connection,
    cmap: ContentMap,
    lock_id: int,
    actor: Actor,
    pacer: Pacer | None = None,
    dry_run: bool = False,
) -> UserResult:
    """Restore every item of a lock that is still owner-only, then close the lock.

    Items changed since the lock are conflicts and items deleted since are gone; both are left
    as they are, and every snapshot row is kept with its outcome for the audit.
    """
    pacer = pacer or Pacer()
    with reading(conn):
        lock = find_lock(conn, lock_id)
        kinds = _lock_kinds(conn, cmap, lock_id)
        subject = lock.subject
        if lock.state != ACTIVE:
            return UserResult(subject, lock_id, "not-locked", dry_run,
                              {k.name: KindCounts() for k in kinds})
        if dry_run:
            planned = {
                k.name: count_for_revert(conn, k, lock_id, cmap.owner_value(k, subject))
                for k in kinds
            }
            return UserResult(subject, lock_id, "would-revert", True, planned)

    result = UserResult(subject, lock_id, "reverted")

    def restore_next_chunk(kind: BoundKind, owner: Any, after: int) -> tuple[KindCounts, Any]:
        if _lock_row(conn, lock_id).state != ACTIVE:
            return KindCounts(), "closed"  # another operator finished the revert
        counts, last = restore_chunk(conn, kind, lock_id, owner, after, pacer.size)
        if last is not None:
            append_event(
                conn, "restore", actor, subject=subject, lock_id=lock_id,
                details={"kind": kind.name, **nonzero(counts.as_dict())},
            )
        return counts, last

    def close_lock(totals: dict[str, dict[str, int]]) -> str:
        if _lock_row(conn, lock_id).state != ACTIVE:
            return "closed"
        if (any(t.get(PENDING) for t in totals.values())
                or holds_snapshots(conn, lock_id, (PENDING,))):
            return "pending"  # an apply extended the lock while we were reverting: walk again
        now = utc_now()
        conn.execute(
            update(locks)
            .where(locks.c.lock_id == lock_id)
            .values(state=REVERTED, active_subject=None, reverted_at=now, updated_at=now,
                    reverted_by=actor.operator)
        )
        for name, per_state in totals.items():
            result.kinds[name] = KindCounts(
                snapshotted=per_state["total"], restored=per_state.get(RESTORED, 0),
                conflicts=per_state.get(CONFLICT, 0), gone=per_state.get(GONE, 0),
            )
        append_event(
            conn, "revert", actor, subject=subject, lock_id=lock_id,
            details={"chunks": result.chunks,
                     "kinds": {n: nonzero(c.as_dict()) for n, c in result.kinds.items()}},
        )
        return "reverted"

    while True:
        for kind in kinds:
            owner, after, more = cmap.owner_value(kind, subject), 0, True
            while more:  # until a chunk that is not full: nothing pending is left behind it
                size = pacer.size
                counts, last = pacer.chunk(
                    conn, partial(restore_next_chunk, kind, owner, after)
                )
                if last == "closed":
                    result.status = "not-locked"
                    return result
                if last is None:
                    break
                after, more = last, counts.restored + counts.conflicts + counts.gone >= size
                result.chunks += 1
                pacer.after_chunk(subject, kind.name, counts.restored)
        # Counted before the closing transaction, in short reads (see counted_in_pieces).
        totals = counted_in_pieces(conn, lock_id, [kind.name for kind in kinds], by_state=True)
        outcome = pacer.chunk(conn, partial(close_lock, totals))
        if outcome == "closed":
            result.status = "not-locked"
            return result
        if outcome == "reverted":
            return result
        with reading(conn):
            kinds = _lock_kinds(conn, cmap, lock_id)


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    """The counts that are not zero (what audit event details keep)."""
    return {k: v for k, v in counts.items() if v}


# --- status and listings -------------------------------------------------------------------------


def user_status(
    conn: Connection, cmap: ContentMap, subject: str, with_items: bool = False
) -> dict[str, Any]:
    """The user's lock (active, else the latest) and, per kind, visible/private/snapshot counts."""
    with reading(conn):
        lock = conn.execute(
            select(locks).where(locks.c.subject == subject)
            .order_by(locks.c.lock_id.desc()).limit(1)
        ).first()
        totals = _snapshot_totals(conn, lock.lock_id) if lock else {}
        kinds = []
        for kind in cmap.kinds.values():
            counts = count_for_apply(conn, cmap, subject, kind)
            per_lock = totals.get(kind.name, {})
            kinds.append({
                "kind": kind.name,
                "visible": counts.changed,
                "private": counts.already_private,
                "snapshots": per_lock.get("total", 0),
                "pending": per_lock.get(PENDING, 0),
                "restored": per_lock.get(RESTORED, 0),
                "conflicts": per_lock.get(CONFLICT, 0),
                "gone": per_lock.get(GONE, 0),
            })
        items = _status_items(conn, cmap, subject, lock.lock_id) if (lock and with_items) else []
    return {
        "user": subject,
        "lock": _lock_dict(lock) if lock else None,
        "kinds": kinds,
        "items": items,
    }


def _status_items(
    conn: Connection, cmap: ContentMap, subject: str, lock_id: int
) -> list[dict[str, Any]]:
    items = []
    for kind in _lock_kinds(conn, cmap, lock_id):
        owner = cmap.owner_value(kind, subject)
        joined = snapshots.outerjoin(
            kind.table, and_(kind.id_col == snapshot_item_as_id(kind), kind.owner_col == owner)
        )
        rows = conn.execute(
            select(snapshots.c.item_id, original_col(kind), snapshots.c.state,
                   kind.vis_col, kind.id_col)
            .select_from(joined)
            .where(snapshots.c.lock_id == lock_id, snapshots.c.kind == kind.name)
            .order_by(snapshots.c.snapshot_id)
        ).all()
        for item_id, original, state, current, present in rows:
            items.append({
                "kind": kind.name, "item": item_id, "original": original, "state": state,
                "current": current if present is not None else "(gone)",
            })
    return items


def _lock_dict(row: Any) -> dict[str, Any]:
    return {
        "lock_id": row.lock_id, "user": row.subject, "state": row.state,
        "operator": row.operator, "ticket": row.ticket, "reason": row.reason,
        "created_at": row.created_at, "reverted_at": row.reverted_at,
        "reverted_by": row.reverted_by,
    }
