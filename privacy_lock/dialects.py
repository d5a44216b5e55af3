"""The statements that differ between databases: one strategy class per dialect, registered by
name (as alembic's ``DefaultImpl`` / ``PostgresqlImpl``). Everything else in the tool is
written once, against :class:`Dialect`.

A chunk comes in two shapes (engine.py): *whole users* (several small users sharing one
transaction, each with all its items) and a *range* of one heavy user's items (the key walk).
Each shape has its own statements, side by side in each class: :meth:`Dialect.hide_owners` /
:meth:`Dialect.hide_range` for apply, :meth:`Dialect.restore_owners` /
:meth:`Dialect.restore_range` for revert. Every statement here runs inside the caller's chunk
transaction, after the lock rows of the chunk were locked (engine.py says in which order).

- **SQLite** has one writer: every writing transaction begins with ``BEGIN IMMEDIATE``, so no
  row can change between two statements of a chunk. Chunks are named by key ranges, never by
  key lists (binding a 1000-key list into three statements cost more than the chunk's SQL).
- **PostgreSQL** locks what its locking reads return and rechecks an ``UPDATE``'s condition
  against a row changed meanwhile (READ COMMITTED): the whole-user statements hide and
  restore without locking rows first. Key lists go as one array parameter.
- **MySQL/MariaDB** (READ COMMITTED) finds keys with a plain read, then locks exactly those rows
  by key: a locking walk could take a primary-key scan and lock other users' rows.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Connection,
    Integer,
    SmallInteger,
    String,
    Table,
    Text,
    and_,
    any_,
    bindparam,
    case,
    cast,
    func,
    insert,
    literal,
    literal_column,
    null,
    or_,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.dialects import mysql as mysql_types
from sqlalchemy.dialects.mysql import BINARY
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.util import ClauseAdapter

from privacy_lock.config import BoundKind, bind_value, stored_as
from privacy_lock.errors import StaleChunk
from privacy_lock.schema import (
    PG_APPEND_ONLY_DDL,
    TOOL_TABLES,
    create_append_only_triggers,
    locks,
    snapshots,
)
from privacy_lock.vocabulary import SnapshotState, utc_now

PENDING, RESTORED = SnapshotState.PENDING, SnapshotState.RESTORED
CONFLICT, GONE = SnapshotState.CONFLICT, SnapshotState.GONE
HIDE_PASSES = 5  # a PostgreSQL whole-user hide retries the rows the site changed under it
SNAPSHOT_TARGET = ["lock_id", "kind", "item_id", "state", "snapshotted_at"]
# What a snapshot insert gives back of each row it wrote, for the seal of the chunk's event.
WRITTEN = (snapshots.c.lock_id, snapshots.c.kind, snapshots.c.item_id, snapshots.c.original_text,
           snapshots.c.original_int)


@dataclass
class RevertCounts:
    """What a revert did (or would do) to the pending snapshots of one kind."""

    restored: int = 0
    conflicts: int = 0
    gone: int = 0

    @property
    def resolved(self) -> int:
        return self.restored + self.conflicts + self.gone


@dataclass
class RangeHidden:
    """What one ranged apply statement set did: items hidden, the snapshot rows written (see
    :data:`WRITTEN`), the last key visited (None: nothing left to visit) and how many keys were
    visited."""

    hidden: int
    written: list[Any]
    last: Any
    seen: int

    @property
    def snapshotted(self) -> int:
        return len(self.written)


@dataclass(frozen=True)
class LockOf:
    """A lock taking part in a whole-user chunk: its id and its user, as the owner column of
    one kind holds the user id."""

    lock_id: int
    owner: Any


# --- SQL pieces every dialect shares -------------------------------------------------------------


def visible(kind: BoundKind, col: Any = None) -> ColumnElement[bool]:
    """Not owner-only: NULL ("site default") counts as visible. ``col``: the kind's visibility
    column as a subquery names it (default: the column itself)."""
    col = kind.vis_col if col is None else col
    return or_(col != kind.private, col.is_(None))


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


def original_col(kind: BoundKind) -> Any:
    """The snapshot column that holds a kind's original value (integer or text codes)."""
    return snapshots.c.original_int if kind.value_kind == "int" else snapshots.c.original_text


def revert_outcome(kind: BoundKind) -> Any:
    """SQL: what a revert would make of a pending snapshot's item, outer-joined (NULL: gone)."""
    return case(
        (kind.id_col.is_(None), GONE), (kind.vis_col == kind.private, RESTORED), else_=CONFLICT
    )


def mismatch(what: str, expected: int, matched: int, state: str) -> StaleChunk:
    """A count that did not add up while the rows were locked: cannot happen; if it does, the
    chunk rolls back and changes nothing."""
    return StaleChunk(f"expected {expected} {what} items to be {state}, the database matched "
                      f"{matched}; chunk rolled back, re-run")


# --- the strategies ------------------------------------------------------------------------------


class Dialect:
    """The default strategy (MySQL/MariaDB); subclasses override what their database does
    better or differently."""

    name: ClassVar[str] = "default"
    aliases: ClassVar[tuple[str, ...]] = ()
    # Whether every writing transaction keeps every other writer out (SQLite's BEGIN IMMEDIATE).
    one_writer: ClassVar[bool] = False
    # The isolation level a consistent read of the whole audit chain needs (None: the default).
    snapshot_isolation: ClassVar[str | None] = None
    # Whether the tool's own text columns ignore trailing spaces when they compare (MySQL and
    # MariaDB utf8mb4_bin is a PAD SPACE collation): a lock's subject 'u-alice ' would then be
    # the same as 'u-alice', so a user id ending in a space is refused there (config.py).
    tool_text_pads: ClassVar[bool] = True

    # --- connection and parameters ---

    def in_keys(self, col: Any, keys: Sequence[Any], bounded: bool = False) -> ColumnElement[bool]:
        """``col IN (keys)`` for a chunk's keys. ``bounded`` adds, for integer keys, the
        redundant ``col BETWEEN min AND max``, which keeps a plan to the keys' slice of an
        index (a heavy user's chunk on MariaDB; a PostgreSQL table with no statistics yet).
        Text keys get no range: Python's order is not the database collation's."""
        match = self._in(col, keys)
        if bounded and keys and isinstance(keys[0], int):
            return and_(match, col.between(min(keys), max(keys)))
        return match

    def _in(self, col: Any, keys: Sequence[Any]) -> ColumnElement[bool]:
        return col.in_(keys)

    def name_problem(self, name: str) -> str | None:
        """Why the database cannot hold a table named ``name`` (None: it can), asked before
        reflecting one from the config, so the driver's error does not end the command as an
        operational failure (exit 1) instead of a config error (exit 2)."""
        return None

    def integer_bits(self, col: Any) -> int:
        """The bits of a signed value bound to integer column ``col``: a larger user id is a
        usage error up front, not PostgreSQL's "integer out of range" mid-command."""
        if isinstance(col.type, BigInteger):
            return 64
        return 16 if isinstance(col.type, SmallInteger) else 32

    # --- what a text column holds ---

    def text_limit(self, type_: Any) -> tuple[int, str] | None:
        """(size, "characters" or "bytes") a column of ``type_`` holds, as the database counts
        (privacy_lock.stored_text refuses a longer value before anything changes); None when
        it holds more than any input we take. MySQL/MariaDB: VARCHAR(n) holds n characters,
        but the TEXT types count bytes, and a utf8mb4 character takes up to 4 of them:
        TINYTEXT 255, TEXT 65,535, MEDIUMTEXT 16,777,215 (LONGTEXT: 4 GiB, unlimited here)."""
        for text_type, size in _MYSQL_TEXT_BYTES:
            if isinstance(type_, text_type):
                return (size, "bytes") if size else None
        return _declared_length(type_)

    # Exact comparisons. A site's text ids may have a case-insensitive or PAD SPACE collation
    # (MariaDB's default ones, SQLite's NOCASE, a PostgreSQL nondeterministic collation), where
    # 'alice' = 'Alice' = 'alice ': apply would hide Alice's posts and revert publish them. So
    # every comparison of a site's owner or item id keeps the indexed comparison and adds one
    # in the column's exact form (a byte comparison); groups and CASE mappings use that form.

    def exact_form(self, col: Any) -> Any:
        """``col`` (or any text expression) in a form compared byte for byte; None when the
        plain comparison is exact already (integers, UUIDs; here: no text collation known)."""
        return None

    def exact_value(self, value: Any) -> Any:
        """A Python value as :meth:`exact_form` of a column compares it."""
        return value

    def exactly(self, col: Any, value: Any) -> ColumnElement[bool]:
        """``col = value``, compared exactly: ``'alice'`` never matches ``'Alice'`` or
        ``'alice '``, whatever the column's collation (owner and item ids)."""
        exact = self.exact_form(col) if isinstance(col.type, String) else None
        if exact is None:
            return col == value
        bound = value if isinstance(value, ColumnElement) else literal(value, col.type)
        return and_(col == bound, exact == self.exact_form(bound))

    def exactly_in(self, col: Any, values: Sequence[Any], bounded: bool = False
                   ) -> ColumnElement[bool]:
        """:meth:`in_keys`, compared exactly (see :meth:`exactly`)."""
        exact = self.exact_form(col) if isinstance(col.type, String) else None
        if exact is None:
            return self.in_keys(col, values, bounded)
        return and_(self.in_keys(col, values, bounded),
                    exact.in_([self.exact_value(v) for v in values]))

    def group_exactly(self, col: Any) -> tuple[Any, Any]:
        """(what to select, what to group by) to group rows by ``col``'s exact value and read
        that value back."""
        exact = self.exact_form(col) if isinstance(col.type, String) else None
        return (col, col) if exact is None else (exact, exact)

    def by_owner(self, col: Any, mapping: dict[Any, int]) -> Any:
        """SQL: the lock id of each row's owner, from ``mapping`` (owner -> lock id), with
        the owner compared exactly."""
        exact = self.exact_form(col) if isinstance(col.type, String) else None
        return case({(v if exact is None else self.exact_value(v)):
                     literal(lock_id, snapshots.c.lock_id.type)
                     for v, lock_id in mapping.items()},
                    value=col if exact is None else exact)

    def owns(self, col: Any, value: Any) -> ColumnElement[bool]:
        """``col`` holds exactly ``value``, on rows a statement names by key (a ranged
        chunk's key list): :meth:`exactly`, unless the planner must not be offered the owner
        index for them (MySQL/MariaDB)."""
        return self.exactly(col, value)

    def walk_hint(self, kind: BoundKind) -> str | None:
        """An index hint for the key walk of ``kind`` (:func:`_walk`); None: none."""
        return None

    def plan_for_actual_keys(self, conn: Connection) -> None:
        """Make the rest of this transaction plan for its actual owner and keys (PostgreSQL)."""

    def session_timeouts(self, seconds: float) -> list[str]:
        """The statements that bound every lock wait of a session to ``seconds``, run on each
        new connection (:func:`privacy_lock.db.create_tool_engine`): here MariaDB/MySQL's
        ``lock_wait_timeout`` (metadata locks: ``LOCK TABLES``, DDL, reflection) and
        ``innodb_lock_wait_timeout`` (row locks), both in whole seconds, at least 1."""
        whole = max(1, round(seconds))
        return [f"SET SESSION lock_wait_timeout = {whole}, innodb_lock_wait_timeout = {whole}"]

    def set_lock_timeout(self, conn: Connection, seconds: float) -> None:
        """Bound lock waits for this connection's session (inside a transaction)."""
        for statement in self.session_timeouts(seconds):
            conn.exec_driver_sql(statement)

    def before_transaction(self, conn: Connection, seconds: float) -> None:
        """What must be set on the driver connection before a transaction begins (SQLite)."""

    def refresh_snapshot_statistics(self, conn: Connection) -> bool:
        """Before a revert reads the snapshot table: gather its statistics if it grew a lot
        since it was last analysed (PostgreSQL); whether it did. Nothing here: MariaDB's and
        SQLite's plans of the revert statements do not depend on them (tests/test_fresh_plans)."""
        return False

    def yield_after(self, held: float) -> float:
        """Seconds to leave the database free after a chunk that held its locks ``held``
        seconds, so that a writer waiting behind it gets in before the next chunk: 0 where
        waiters queue on row locks and get them at the commit (PostgreSQL, InnoDB)."""
        return 0.0

    def insert_rows(self, conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
        """Insert many rows (of text, integer and NULL values) in one round trip: executemany,
        which the drivers batch (PyMySQL writes one multi-row INSERT, sqlite3 loops in C)."""
        conn.execute(table.insert(), rows)

    def after_create_tables(self, conn: Connection) -> list[str]:
        """What ``init`` adds to the tool's tables on this database; what it created."""
        return []

    def extra_ddl(self) -> list[str]:
        """The statements ``init`` runs after the tables' DDL (for ``privacy-lock sql``)."""
        return []

    def current_login(self, conn: Connection) -> str | None:
        """The database login this connection acts as, recorded beside an operator's name on
        revert requests and approvals; None where the database has no logins (SQLite)."""
        return None

    # --- find (issue #17): the trigram search each database does best ---

    def find_index_ddl(self, columns: Sequence[tuple[str, str]],
                       ops_schema: str | None = None) -> list[str]:
        """The statements a DBA reviews and runs so that `find` uses an index on each
        (table, column) it searches (none here)."""
        return []

    def missing_find_index_ddl(self, conn: Connection, bound: Any) -> list[str]:
        """Of :meth:`find_index_ddl`, what this database still lacks."""
        return []

    def find_index_state(self, conn: Connection, bound: Any) -> str:
        """One line on how `find` searches this database."""
        return ("no trigram index: MariaDB/MySQL InnoDB has no n-gram parser here, so each "
                "fragment scans its columns (docs/BENCHMARKS.md measures it)")

    def rebuild_find_index(self, conn: Connection, bound: Any) -> str:
        """`find --reindex`: rebuild what the tool maintains; say what was done."""
        return "nothing to rebuild: " + self.find_index_state(conn, bound)

    def fragment_owners(self, conn: Connection, sources: Sequence[str], pieces: Sequence[str],
                        limit: int) -> list[str] | None:
        """Owners (as text) whose ``sources`` (names of :meth:`BoundIdentity.text_columns`)
        hold any of ``pieces``, at most ``limit``, from an index the tool maintains; None when
        there is none (the caller filters the site's columns itself)."""
        return None

    # --- apply: snapshots ---

    def insert_snapshots_from(
        self, conn: Connection, kind: BoundKind, lock_id: Any, these_rows: Sequence[Any],
        now: str, fresh: bool = False, source_from: Any = None,
    ) -> list[Any]:
        """Snapshot ``these_rows`` into lock ``lock_id`` (a lock id, or SQL that picks each
        row's lock), skipping an item the lock already holds (made visible again since: it is
        hidden again, but its stored original is never overwritten); return the rows written
        (:data:`WRITTEN`). ``fresh``: the lock was opened in this run, so it holds no snapshot
        of these items unless another apply of the same user ran meanwhile."""
        already_snapshotted = (
            select(snapshots.c.snapshot_id)
            .where(snapshots.c.lock_id == lock_id, snapshots.c.kind == kind.name,
                   snapshots.c.item_id == id_as_text(kind))
            .exists()
        )
        source = _snapshot_source(kind, lock_id, now, source_from).where(
            *these_rows, ~already_snapshotted)
        return _written(conn, insert(snapshots).from_select(_target(kind), source), kind, now)

    # --- apply: a range of one user's items ---

    def hide_range(
        self, conn: Connection, kind: BoundKind, lock_id: int, owner: Any, after: Any,
        limit: int, now: str, fresh: bool = False,
    ) -> RangeHidden:
        """Snapshot and hide the next ``limit`` visible items of ``owner`` after key ``after``.
        Here: find the next keys with a plain read, then lock exactly those rows by key.
        Locking in the walk itself would let MariaDB choose a primary-key scan for ORDER BY ...
        LIMIT (it does on small or skewed tables) and wait on, or lock, other users' rows."""
        candidates = conn.execute(_walk(self, kind, owner, after, limit)).scalars().all()
        if not candidates:
            return RangeHidden(0, [], None, 0)
        # The key range is redundant with the key list but bounds every plan to this chunk's
        # slice of the (owner, id) index.
        in_range = kind.id_col.between(candidates[0], candidates[-1])
        ids = conn.execute(
            select(kind.id_col)
            .where(self.owns(kind.owner_col, owner), in_range,
                   self.exactly_in(kind.id_col, candidates), visible(kind))
            .with_for_update()
        ).scalars().all()
        if not ids:  # all of them were hidden by someone else meanwhile
            return RangeHidden(0, [], candidates[-1], len(candidates))
        these_rows = (self.owns(kind.owner_col, owner), in_range,
                      self.exactly_in(kind.id_col, ids), visible(kind))
        hidden, written = self._snapshot_and_hide(conn, kind, lock_id, these_rows, now, fresh)
        return RangeHidden(hidden, written, candidates[-1], len(candidates))

    def _snapshot_and_hide(
        self, conn: Connection, kind: BoundKind, lock_id: int, these_rows: Sequence[Any],
        now: str, fresh: bool,
    ) -> tuple[int, list[Any]]:
        """Snapshot ``these_rows`` (locked, or SQLite's), then hide them: (hidden, written)."""
        written = self.insert_snapshots_from(conn, kind, lock_id, these_rows, now, fresh)
        hidden = conn.execute(
            update(kind.table).where(*these_rows).values({kind.vis_col.name: kind.private})
        ).rowcount
        return hidden, written

    # --- apply: whole users ---

    def hide_owners(
        self, conn: Connection, kind: BoundKind, owner_lock: dict[Any, int], now: str,
        room: int, all_new: bool = False,
    ) -> tuple[Counter[Any], list[Any]]:
        """Snapshot into its owner's lock and hide every visible item of ``kind`` of the owners
        of ``owner_lock`` (owner as the column holds it -> lock id); return the rows hidden per
        owner and the snapshot rows written (:data:`WRITTEN`). When they are more than ``room``
        nothing is written (the caller rolls back).
        Here: find the owners' visible rows with a plain read, lock exactly those rows by key,
        then snapshot and hide exactly the rows locked: a row the site inserts meanwhile is
        neither snapshotted nor hidden. (A locking read on the owner index alone may take a
        table scan on a small table and wait on another user's row the site holds: the
        other users of the chunk would fail with it.)"""
        owners = list(owner_lock)
        candidates = conn.execute(
            select(kind.id_col).where(self.exactly_in(kind.owner_col, owners), visible(kind))
        ).scalars().all()
        if not candidates or len(candidates) > room:
            return (Counter({None: len(candidates)}) if candidates else Counter()), []
        rows = conn.execute(
            select(kind.id_col, kind.owner_col)
            .where(self.exactly_in(kind.id_col, candidates),
                   self.exactly_in(kind.owner_col, owners), visible(kind))
            .with_for_update()
        ).all()
        written: list[Any] = []
        if rows:
            these_rows = (self.exactly_in(kind.owner_col, owners),
                          self.exactly_in(kind.id_col, [row[0] for row in rows]), visible(kind))
            written = self.insert_snapshots_from(
                conn, kind, self.by_owner(kind.owner_col, owner_lock), these_rows, now)
            conn.execute(update(kind.table).where(*these_rows)
                         .values({kind.vis_col.name: kind.private}))
        return Counter(owner for _id, owner in rows), written

    # --- revert: a range of one lock's snapshots ---

    def restore_range(
        self, conn: Connection, kind: BoundKind, lock_id: int, owner: Any, after: int, limit: int
    ) -> tuple[RevertCounts, int | None]:
        """Resolve the next ``limit`` pending snapshots of ``kind`` after snapshot id ``after``:
        restore each item still owner-only, mark the others conflict (changed since) or gone
        (deleted, or no longer this user's). Returns the counts and the last snapshot id
        visited (None: nothing was left). Here: fetch the snapshots with their originals, lock
        their items by key, decide in Python, and restore with one single-table ``UPDATE``
        whose ``CASE`` gives each item its original (a multi-table ``UPDATE`` joining the
        snapshots was planned from the owner index on a table without statistics, reading all
        of a heavy user's rows for every chunk: docs/BENCHMARKS.md, issue #15)."""
        pending = conn.execute(
            select(snapshots.c.snapshot_id, snapshots.c.item_id,
                   original_col(kind).label("original"))
            .where(snapshots.c.lock_id == lock_id, snapshots.c.kind == kind.name,
                   snapshots.c.state == PENDING, snapshots.c.snapshot_id > after)
            .order_by(snapshots.c.snapshot_id)
            .limit(limit)
        ).all()
        if not pending:
            return RevertCounts(), None
        snapshot_ids = [row.snapshot_id for row in pending]
        # Key ranges, redundant with the key lists, bound every plan to this chunk's slice of
        # the snapshot index.
        these_snapshots = and_(
            snapshots.c.lock_id == lock_id,
            snapshots.c.snapshot_id.between(snapshot_ids[0], snapshot_ids[-1]))
        # Lock the items first, by key, then decide: while we hold them nobody can change them.
        item_ids = [bind_value(kind.id_col, row.item_id) for row in pending]
        these_items = and_(self.owns(kind.owner_col, owner),
                           self.exactly_in(kind.id_col, item_ids, bounded=True))
        current = dict(conn.execute(
            select(id_as_text(kind), kind.vis_col).where(these_items).with_for_update()
        ).all())
        by_state: dict[str, list[int]] = {RESTORED: [], CONFLICT: [], GONE: []}
        # the items to restore, by the original each gets back (a few visibility codes)
        by_original: dict[Any, list[Any]] = {}
        for row in pending:
            if row.item_id not in current:
                by_state[GONE].append(row.snapshot_id)
            elif current[row.item_id] == kind.private:
                by_state[RESTORED].append(row.snapshot_id)
                by_original.setdefault(row.original, []).append(
                    bind_value(kind.id_col, row.item_id))
            else:
                by_state[CONFLICT].append(row.snapshot_id)
        if by_state[RESTORED]:
            # The originals were read with the snapshots in this transaction: a pending
            # snapshot's original is never rewritten, and its lock row is held.
            original = case(*[(self.exactly_in(kind.id_col, ids),
                               literal(value, kind.vis_col.type))
                              for value, ids in by_original.items()])
            restored_ids = [item for ids in by_original.values() for item in ids]
            restored = conn.execute(
                update(kind.table)
                .values({kind.vis_col.name: original})
                .where(self.owns(kind.owner_col, owner),
                       self.exactly_in(kind.id_col, restored_ids, bounded=True),
                       kind.vis_col == kind.private)
            ).rowcount
            if restored != len(by_state[RESTORED]):
                raise mismatch(kind.name, len(by_state[RESTORED]), restored, RESTORED)
        now = utc_now()
        for state, ids in by_state.items():
            if ids:
                conn.execute(
                    update(snapshots)
                    .where(these_snapshots, self.in_keys(snapshots.c.snapshot_id, ids))
                    .values(state=state, resolved_at=now))
        counts = RevertCounts(len(by_state[RESTORED]), len(by_state[CONFLICT]),
                              len(by_state[GONE]))
        return counts, snapshot_ids[-1]

    # --- revert: whole locks ---

    def restore_owners(
        self, conn: Connection, kind: BoundKind, group: Sequence[LockOf], pending: int, now: str
    ) -> tuple[int, int]:
        """Resolve every pending snapshot of ``kind`` of the locks of ``group``: restore the
        items still owner-only and still their lock's user's, mark the others conflict or gone.
        Returns (items restored, restored snapshots left for the caller to mark). Here: fetch
        the pending snapshots, lock their items by key, decide in Python."""
        lock_ids = [g.lock_id for g in group]
        rows = conn.execute(
            select(snapshots.c.snapshot_id, snapshots.c.lock_id, snapshots.c.item_id)
            .where(self.in_keys(snapshots.c.lock_id, lock_ids), snapshots.c.kind == kind.name,
                   snapshots.c.state == PENDING)
        ).all()
        owner_of_lock = {g.lock_id: g.owner for g in group}
        owners = list(set(owner_of_lock.values()))
        item_ids = list({bind_value(kind.id_col, row.item_id) for row in rows})
        current = {
            item: (owner, vis) for item, owner, vis in conn.execute(
                select(id_as_text(kind), kind.owner_col, kind.vis_col)
                .where(self.exactly_in(kind.owner_col, owners),
                       self.exactly_in(kind.id_col, item_ids))
                .with_for_update()
            ).all()
        }
        if not {owner for owner, _vis in current.values()} <= set(owners):
            raise StaleChunk("the database matched an owner id by collation, not exactly")
        by_state: dict[str, list[int]] = {RESTORED: [], CONFLICT: [], GONE: []}
        for row in rows:
            owner, vis = current.get(row.item_id, (None, None))
            if owner is None or owner != owner_of_lock[row.lock_id]:
                by_state[GONE].append(row.snapshot_id)  # deleted, or no longer this user's
            elif vis == kind.private:
                by_state[RESTORED].append(row.snapshot_id)
            else:
                by_state[CONFLICT].append(row.snapshot_id)
        for state in (CONFLICT, GONE):
            if by_state[state]:
                conn.execute(update(snapshots)
                             .where(self.in_keys(snapshots.c.snapshot_id, by_state[state]))
                             .values(state=state, resolved_at=now))
        if by_state[RESTORED]:
            # Each restored item gets the original of its own lock's snapshot, found through
            # the unique (lock, kind, item) index.
            to_restore = set(by_state[RESTORED])
            restored_items = [bind_value(kind.id_col, row.item_id) for row in rows
                              if row.snapshot_id in to_restore]
            lock_of_owner = self.by_owner(
                kind.owner_col, {owner: lock_id for lock_id, owner in owner_of_lock.items()})
            original = (
                select(original_col(kind))
                .where(snapshots.c.lock_id == lock_of_owner, snapshots.c.kind == kind.name,
                       snapshots.c.item_id == id_as_text(kind))
                .scalar_subquery()
            )
            restored = conn.execute(
                update(kind.table)
                .values({kind.vis_col.name: original})
                .where(self.exactly_in(kind.owner_col, owners),
                       self.exactly_in(kind.id_col, restored_items),
                       kind.vis_col == kind.private)
            ).rowcount
            if restored != len(by_state[RESTORED]):  # cannot happen while the rows are locked
                raise mismatch(kind.name, len(by_state[RESTORED]), restored, RESTORED)
        return len(by_state[RESTORED]), len(by_state[RESTORED])


class _SetBasedRestore(Dialect):
    """Revert with no key lists and no rows fetched (SQLite and PostgreSQL): each pending
    snapshot finds its item through the content id and its lock's subject."""

    def restore_range(
        self, conn: Connection, kind: BoundKind, lock_id: int, owner: Any, after: int, limit: int
    ) -> tuple[RevertCounts, int | None]:
        """:meth:`Dialect.restore_range` on the chunk's snapshot id range (after, last].

        The chunk's items are locked by key first (a join on the snapshot range, ``FOR UPDATE
        OF`` the content table; SQLite has one writer and counts them in the same statement)
        and counted as they are then: missing (gone), changed (conflict), still owner-only (to
        restore). Each count is checked against what the statements matched, so a chunk that
        would not add up changes nothing."""
        chunk = (
            select(snapshots.c.snapshot_id, snapshots.c.item_id)
            .where(snapshots.c.lock_id == lock_id, snapshots.c.kind == kind.name,
                   snapshots.c.state == PENDING, snapshots.c.snapshot_id > after)
            .order_by(snapshots.c.snapshot_id)
            .limit(limit)
            .subquery()
        )
        integer_ids = isinstance(kind.id_col.type, Integer)
        bounds: list[Any] = [func.count(), func.max(chunk.c.snapshot_id)]
        chunk_item: Any = chunk.c.item_id
        if integer_ids:
            chunk_item = cast(chunk.c.item_id, kind.id_col.type)
            bounds += [func.min(chunk_item), func.max(chunk_item)]
        query = select(*bounds)
        if self.one_writer:  # nothing to lock: count the items as they are, same statement
            query = query.add_columns(
                func.count(kind.id_col), func.count(case((kind.vis_col == kind.private, 1)))
            ).select_from(chunk.outerjoin(
                kind.table, and_(kind.id_col == chunk_item,
                                 self.exactly(kind.owner_col, owner))))
        found = conn.execute(query).one()
        total, last = found[0], found[1]
        if not total:
            return RevertCounts(), None
        in_chunk = and_(
            snapshots.c.lock_id == lock_id, snapshots.c.kind == kind.name,
            snapshots.c.state == PENDING, snapshots.c.snapshot_id > after,
            snapshots.c.snapshot_id <= last,
        )
        # The item of a snapshot. The id range, redundant with the join, keeps every plan to
        # the chunk's slice of the (owner, id) index instead of all of a heavy user's items.
        its_item = and_(kind.id_col == snapshot_item_as_id(kind),
                        self.exactly(kind.owner_col, owner))
        if integer_ids:
            its_item = and_(its_item, kind.id_col.between(found[2], found[3]))
        if self.one_writer:
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
        counted = RevertCounts(still_private, present - still_private, total - present)
        resolve_counted(conn, kind, in_chunk, its_item, counted, utc_now(), mark_restored=True)
        return counted, last

    def restore_owners(
        self, conn: Connection, kind: BoundKind, group: Sequence[LockOf], pending: int, now: str
    ) -> tuple[int, int]:
        """:meth:`Dialect.restore_owners` set-based: lock the items of the group's pending
        snapshots of one kind (a join through each lock's subject, as the owner column holds
        it), count them, mark the gone and the conflicting ones and restore those still
        owner-only. The restored snapshots are left for the caller to mark, once for every
        kind."""
        ours, its_item = _whole_lock_snapshots(self, kind, group)
        restored_first = self._restore_unlocked(conn, kind, ours, its_item, now)
        pending -= restored_first
        if not pending:
            return restored_first, 0
        items = (
            select(kind.vis_col)
            .select_from(snapshots.join(locks, locks.c.lock_id == snapshots.c.lock_id)
                         .join(kind.table, its_item))
            .where(ours)
            .with_for_update(of=kind.table)  # SQLite: its one writer already keeps others out
            .subquery()
        )
        present, still_private = conn.execute(
            select(func.count(), func.count(case((items.c[0] == kind.private, 1))))
        ).one()
        counted = RevertCounts(still_private, present - still_private, pending - present)
        resolve_counted(conn, kind, ours, its_item, counted, now, mark_restored=False)
        return restored_first + still_private, still_private

    def _restore_unlocked(
        self, conn: Connection, kind: BoundKind, ours: Any, its_item: Any, now: str
    ) -> int:
        """Restore, before anything is locked, what can safely be (PostgreSQL); 0 here."""
        return 0


# SQLite's default busy handler (sqlite3_busy_timeout, which Python's ``timeout`` sets): a
# waiting writer sleeps these milliseconds between tries, then 100 ms each (main.c, delays[]).
_SQLITE_BUSY_SLEEPS_MS = (1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100)
_YIELD_MARGIN = 0.005  # seconds: for the woken writer's thread to run and take the lock


class SqliteDialect(_SetBasedRestore):
    """SQLite: one writer (``BEGIN IMMEDIATE``), so chunks are key ranges, not key lists."""

    name = "sqlite"
    one_writer = True
    tool_text_pads = False

    def text_limit(self, type_: Any) -> tuple[int, str] | None:
        """TEXT holds a billion bytes (SQLITE_MAX_LENGTH): unlimited here. SQLite does not
        enforce a declared VARCHAR(n), but the tool holds its own columns to it on every
        database, so that a request file valid here is valid on the production servers."""
        return _declared_length(type_)

    def find_index_state(self, conn: Connection, bound: Any) -> str:
        built = self._fts_built(conn)
        if built is None:
            return (f"no trigram index ({FIND_FTS} is missing): each fragment scans its "
                    "columns; run `privacy-lock find --reindex` to build it")
        return (f"searched the FTS5 trigram index {FIND_FTS} built at {built} (rows added "
                "to the site since are not in it: `find --reindex` rebuilds it)")

    def _fts_built(self, conn: Connection) -> str | None:
        exists = conn.exec_driver_sql(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (FIND_FTS,)).first()
        if exists is None:
            return None
        # By rowid: the source column is not indexed, a search by it would read every row.
        row = conn.exec_driver_sql(
            f"SELECT value FROM {FIND_FTS} WHERE rowid = ? AND source = ?",
            (FIND_FTS_BUILT_ROWID, FIND_FTS_BUILT)).first()
        return row[0] if row else None

    def rebuild_find_index(self, conn: Connection, bound: Any) -> str:
        """Drop and refill the FTS5 table from every text column `find` searches (one
        INSERT ... SELECT per column, in the caller's transaction)."""
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {FIND_FTS}")
        conn.exec_driver_sql(
            f"CREATE VIRTUAL TABLE {FIND_FTS} USING fts5(owner UNINDEXED, source UNINDEXED, "
            "value, tokenize = 'trigram')")
        fts = table_of_fts()
        rows = 0
        for source, owner, col in bound.text_columns():
            rows += conn.execute(insert(fts).from_select(
                ["owner", "source", "value"],
                select(cast(owner, Text), literal(source), col).where(col.is_not(None)))
            ).rowcount
        conn.exec_driver_sql(
            f"INSERT INTO {FIND_FTS} (rowid, owner, source, value) VALUES (?, '', ?, ?)",
            (FIND_FTS_BUILT_ROWID, FIND_FTS_BUILT, utc_now()))
        return f"rebuilt the FTS5 trigram index {FIND_FTS}: {rows:,} values"

    def fragment_owners(self, conn: Connection, sources: Sequence[str], pieces: Sequence[str],
                        limit: int) -> list[str] | None:
        if self._fts_built(conn) is None:
            return None
        phrases = " OR ".join('"' + p.replace('"', '""') + '"' for p in pieces)
        fts = table_of_fts()
        query = (select(fts.c.owner).where(
            literal_column(FIND_FTS).op("MATCH")(f"value : ({phrases})"),
            fts.c.source.in_(list(sources))).distinct().limit(limit))
        return [str(o) for o in conn.execute(query).scalars()]

    def yield_after(self, held: float) -> float:
        """A writer waiting for SQLite's lock is not queued: its busy handler sleeps and tries
        again. A tool that begins its next chunk at once after a commit takes the lock back
        before that writer wakes, chunk after chunk (934 ms waits in issue #15). A writer that
        began waiting at most ``held`` seconds ago sleeps at most the busy handler's step at
        that point: leaving the lock free that long (plus a margin) lets it in between two
        chunks (25 ms after a chunk of up to 128 ms)."""
        waited, step = held * 1000, _SQLITE_BUSY_SLEEPS_MS[-1]
        for sleep_ms in _SQLITE_BUSY_SLEEPS_MS:
            if waited < sleep_ms:
                step = sleep_ms
                break
            waited -= sleep_ms
        return step / 1000 + _YIELD_MARGIN

    def integer_bits(self, col: Any) -> int:
        """64: SQLite stores any integer in 64 bits, whatever the declared type."""
        return 64

    def exact_form(self, col: Any) -> Any:
        """``x COLLATE BINARY`` (a column may be declared ``COLLATE NOCASE``)."""
        return col.collate("BINARY")

    def session_timeouts(self, seconds: float) -> list[str]:
        """The busy timeout: how long any statement (a BEGIN, a read) waits for the database
        lock another connection holds."""
        return [f"PRAGMA busy_timeout = {max(1, int(seconds * 1000))}"]

    def set_lock_timeout(self, conn: Connection, seconds: float) -> None:
        """SQLite has no row locks: its wait is the busy timeout (:meth:`before_transaction`)."""

    def before_transaction(self, conn: Connection, seconds: float) -> None:
        """SQLite waits for the database lock at BEGIN IMMEDIATE, before any statement of ours
        runs, so its bound is set on the driver connection outside the transaction."""
        millis = max(1, int(seconds * 1000))
        conn.connection.driver_connection.execute(  # type: ignore[union-attr]
            f"PRAGMA busy_timeout = {millis}")

    def insert_snapshots_from(
        self, conn: Connection, kind: BoundKind, lock_id: Any, these_rows: Sequence[Any],
        now: str, fresh: bool = False, source_from: Any = None,
    ) -> list[Any]:
        """The unique (lock_id, kind, item_id) index decides in the insert's own probe (``ON
        CONFLICT DO NOTHING``): NOT EXISTS probed the index twice per item (1000-row chunk:
        5.5 ms against 3.9 ms)."""
        source = _snapshot_source(kind, lock_id, now, source_from).where(*these_rows)
        return _written(conn, _skipping_held(sqlite_insert, kind, source), kind, now)

    def hide_range(
        self, conn: Connection, kind: BoundKind, lock_id: int, owner: Any, after: Any,
        limit: int, now: str, fresh: bool = False,
    ) -> RangeHidden:
        """One writer: the walk returns only its last key, and the snapshot and the change
        cover ``owner = ? AND after < id <= last``, exactly the walked items."""
        chunk = _walk(self, kind, owner, after, limit).subquery()
        seen, last = conn.execute(select(func.count(), func.max(chunk.c[0]))).one()
        if not seen:
            return RangeHidden(0, [], None, 0)
        these_rows: tuple[Any, ...] = (self.exactly(kind.owner_col, owner), kind.id_col <= last,
                                       visible(kind))
        if after is not None:
            these_rows += (kind.id_col > after,)
        hidden, written = self._snapshot_and_hide(conn, kind, lock_id, these_rows, now, fresh)
        return RangeHidden(hidden, written, last, seen)

    def hide_owners(
        self, conn: Connection, kind: BoundKind, owner_lock: dict[Any, int], now: str,
        room: int, all_new: bool = False,
    ) -> tuple[Counter[Any], list[Any]]:
        """One writer: the owners' visible rows are exactly ``owner IN (...) AND visible``:
        count them, snapshot them, hide them, with no key lists. Each row finds its owner's
        lock by the lock's subject (no CASE over the owners built for every chunk)."""
        these_rows = (self.exactly_in(kind.owner_col, list(owner_lock)), visible(kind))
        owner, group = self.group_exactly(kind.owner_col)
        per_owner: Counter[Any] = Counter({owner: int(n) for owner, n in conn.execute(
            select(owner, func.count()).where(*these_rows).group_by(group)
        ).all()})
        written: list[Any] = []
        if per_owner and sum(per_owner.values()) <= room:
            its_lock = and_(self.in_keys(locks.c.lock_id, list(owner_lock.values())),
                            self.exactly(kind.owner_col,
                                         stored_as(kind.owner_col, locks.c.subject)))
            written = self.insert_snapshots_from(conn, kind, locks.c.lock_id, these_rows, now,
                                                 source_from=kind.table.join(locks, its_lock))
            conn.execute(update(kind.table).where(*these_rows)
                         .values({kind.vis_col.name: kind.private}))
        return per_owner, written


class PostgresqlDialect(_SetBasedRestore):
    """PostgreSQL: array parameters, custom plans, and statements that rely on READ
    COMMITTED's recheck instead of locking rows before changing them."""

    name = "postgresql"
    snapshot_isolation = "REPEATABLE READ"
    tool_text_pads = False

    def text_limit(self, type_: Any) -> tuple[int, str] | None:
        """varchar(n) holds n characters; text holds up to 1 GB: unlimited here."""
        return _declared_length(type_)

    def find_index_ddl(self, columns: Sequence[tuple[str, str]],
                       ops_schema: str | None = None) -> list[str]:
        """pg_trgm GIN indexes on ``lower(column)``: what `find`'s ``lower(col) LIKE
        '%piece%'`` filters use. The site's tables are the DBA's: the tool prints these
        (``init``, ``sql``), it never runs them."""
        ops = f"{ops_schema}.gin_trgm_ops" if ops_schema else "gin_trgm_ops"
        out = ["CREATE EXTENSION IF NOT EXISTS pg_trgm"]
        for table, column in dict.fromkeys(columns):
            name = f"ix_{table}_{column}_trgm"[:63]
            out.append(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {table} "
                       f"USING gin (lower({column}) {ops})")
        return out

    def trgm_schema(self, conn: Connection) -> str | None:
        """The schema pg_trgm is installed in, or None when it is not installed."""
        return conn.exec_driver_sql(
            "SELECT extnamespace::regnamespace::text FROM pg_extension "
            "WHERE extname = 'pg_trgm'").scalar()

    def missing_trgm_indexes(self, conn: Connection, bound: Any) -> list[str]:
        """``table.column`` of each searched column no pg_trgm index on ``lower(column)``
        covers."""
        columns = [col for _source, _owner, col in bound.text_columns()]
        tables = sorted({col.table.name for col in columns})
        # Two catalog queries for all the columns: this runs on every search (its note).
        kinds: dict[str, str] = dict(conn.exec_driver_sql(
            "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = "
            "c.relnamespace WHERE n.nspname = ANY (current_schemas(false)) AND c.relname = "
            "ANY (%(t)s)", {"t": tables}).all())
        definitions = conn.exec_driver_sql(
            "SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = ANY "
            "(current_schemas(false)) AND tablename = ANY (%(t)s) AND indexdef LIKE "
            "'%%gin_trgm_ops%%'", {"t": tables}).all()
        missing = []
        for col in columns:
            if kinds.get(col.table.name) not in ("r", "p"):  # a view: its tables are indexed
                continue
            wanted = f"lower(({col.name})::text)"
            if not any(t == col.table.name and wanted in d for t, d in definitions):
                missing.append(f"{col.table.name}.{col.name}")
        return missing

    def missing_find_index_ddl(self, conn: Connection, bound: Any) -> list[str]:
        schema = self.trgm_schema(conn)
        statements = self.find_index_ddl(
            [(col.table.name, col.name) for _s, _o, col in bound.text_columns()], schema)
        if schema is None:
            return statements
        missing = self.missing_trgm_indexes(conn, bound)
        return [s for s in statements[1:]
                if any(f" ON {m.split('.')[0]} " in s and f"(lower({m.split('.')[1]})" in s
                       for m in missing)]

    def find_index_state(self, conn: Connection, bound: Any) -> str:
        if self.trgm_schema(conn) is None:
            available = conn.exec_driver_sql(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'").first()
            return ("no trigram index: the pg_trgm extension is not installed"
                    + ("" if available else " (nor available on this server)")
                    + "; each fragment scans its columns (`privacy-lock init` prints the DDL)")
        missing = self.missing_trgm_indexes(conn, bound)
        if missing:
            return (f"no pg_trgm index on {', '.join(missing)}: those columns are scanned "
                    "(`privacy-lock init` prints the DDL for a DBA)")
        return "searched with the pg_trgm GIN indexes"

    def exact_form(self, col: Any) -> Any:
        """``x COLLATE "C"`` (a column may have a nondeterministic ICU collation)."""
        return col.collate("C")

    def _in(self, col: Any, keys: Sequence[Any]) -> ColumnElement[bool]:
        """One array parameter (``= ANY``) instead of a thousand: a 1000-key statement takes
        5-6 ms instead of 16-21 (bench/)."""
        return col == any_(bindparam(None, list(keys), type_=ARRAY(col.type)))

    def plan_for_actual_keys(self, conn: Connection) -> None:
        """psycopg prepares a statement after its fifth run, and PostgreSQL may then switch to
        a generic plan that knows neither owner nor keys: for a heavy user it read every item
        of the owner for each chunk (a 100,000-item revert took 24-150 s instead of 10)."""
        conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
        # A table with stale or no statistics makes the planner guess that a chunk's owners
        # hold a third of it: the whole-user hide then joined its rows by a sequential scan of
        # the content table (190-540 ms per chunk of 1000 spread items, docs/BENCHMARKS.md)
        # and JIT-compiled it (50 ms). Every statement of a chunk is keyed (owner, id): no
        # sequential scan and no JIT is ever the better plan for it.
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        conn.exec_driver_sql("SET LOCAL jit = off")

    def session_timeouts(self, seconds: float) -> list[str]:
        """``lock_timeout`` (any lock: a table's, a row's, the catalog's). ``statement_timeout``
        is left as the DBA set it: it would also end a long read that holds no one up."""
        return [f"SET lock_timeout = {max(1, int(seconds * 1000))}"]

    def refresh_snapshot_statistics(self, conn: Connection) -> bool:
        """``ANALYZE`` the snapshot table when at least a chunk's worth of rows (1,000) and a
        fifth of it came since its last analysis (never analysed: all of them), as autovacuum
        would, but now, before the revert plans on it. With no statistics the planner took the
        chunk's snapshot range for one row and joined it again for every item (1,000 x 1,000
        rows, 1.1 s per chunk, holding the row locks; docs/BENCHMARKS.md). ANALYZE samples at
        most 30,000 rows (0.2 s here), takes no lock the site's statements wait for and, by a
        role that does not own the table, is skipped with a warning."""
        grown = conn.execute(text(
            "SELECT n_mod_since_analyze >= 1000 AND n_mod_since_analyze > "
            "0.2 * GREATEST(c.reltuples, 0) FROM pg_stat_user_tables s JOIN pg_class c "
            "ON c.oid = s.relid WHERE s.relid = to_regclass(:name)"), {"name": snapshots.name}
        ).scalar()
        if grown:
            conn.execute(text(f"ANALYZE {snapshots.name}"))
        return bool(grown)

    def after_create_tables(self, conn: Connection) -> list[str]:
        """The triggers that keep the audit trail append-only at the database level."""
        return create_append_only_triggers(conn)

    def extra_ddl(self) -> list[str]:
        return list(PG_APPEND_ONLY_DDL)

    def current_login(self, conn: Connection) -> str | None:
        return str(conn.exec_driver_sql("SELECT current_user").scalar_one())

    def insert_rows(self, conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
        """The rows go as one JSON parameter, turned into rows of the table's own type by
        ``json_populate_recordset``. Arrays, one per column, cost psycopg a regular-expression
        escape of every text element (200 audit events: 12 ms, most of it in Python); a VALUES
        list, binding and planning thousands of parameters (180 events: 60 ms)."""
        if len(rows) == 1:
            conn.execute(table.insert(), rows)
            return
        names = [c.name for c in table.columns if c.name in rows[0]]
        row_type: Any = literal_column(
            f"NULL::{conn.dialect.identifier_preparer.format_table(table)}")
        records = func.json_populate_recordset(
            row_type, cast(literal(json.dumps(rows, ensure_ascii=False), Text), JSON)
        ).table_valued(*names)
        conn.execute(insert(table).from_select(names, select(*records.c)))

    def insert_snapshots_from(
        self, conn: Connection, kind: BoundKind, lock_id: Any, these_rows: Sequence[Any],
        now: str, fresh: bool = False, source_from: Any = None,
    ) -> list[Any]:
        """The unique (lock_id, kind, item_id) index decides in the insert's own probe. With
        NOT EXISTS PostgreSQL estimates a growing lock's snapshots as a handful and rescans all
        of them for every item (quadratic). A lock opened in this run inserts plainly (``ON
        CONFLICT`` costs a quarter more per row) under a savepoint: if another apply of the
        same user got there first, the unique index refuses it and the chunk goes on the ``ON
        CONFLICT`` way."""
        source = _snapshot_source(kind, lock_id, now, source_from).where(*these_rows)
        if fresh:
            try:
                with conn.begin_nested():
                    return _written(conn, insert(snapshots).from_select(_target(kind), source),
                                    kind, now)
            except IntegrityError:
                pass
        return _written(conn, _skipping_held(pg_insert, kind, source), kind, now)

    def hide_range(
        self, conn: Connection, kind: BoundKind, lock_id: int, owner: Any, after: Any,
        limit: int, now: str, fresh: bool = False,
    ) -> RangeHidden:
        """PostgreSQL locks only the rows a locking read returns (its filter runs before the
        lock), whatever index the plan walks: the walk itself locks. (Walk, snapshot and hide
        as one statement with CTEs was slower at 100,000 items: 5.6-5.8 s against 4.7-5.3.)"""
        # The walk must be the (owner, id) index read in order, stopping after ``limit`` keys.
        # The exact comparison's second predicate makes the planner guess a handful of rows for
        # any owner; it then read all of a heavy user's remaining items and sorted them, for
        # every chunk (60,000 spread items: 108-154 ms a chunk against 0.2 ms; issue #15).
        conn.exec_driver_sql("SET LOCAL enable_sort = off")
        ids = conn.execute(
            _walk(self, kind, owner, after, limit).with_for_update()).scalars().all()
        conn.exec_driver_sql("SET LOCAL enable_sort = on")
        if not ids:
            return RangeHidden(0, [], None, 0)
        # A generic plan uses only the owner as index condition and checks a 1000-key list
        # against every item of a heavy user: the key range keeps it to the chunk.
        these_rows = (self.exactly(kind.owner_col, owner), kind.id_col.between(ids[0], ids[-1]),
                      self.in_keys(kind.id_col, ids), visible(kind))
        hidden, written = self._snapshot_and_hide(conn, kind, lock_id, these_rows, now, fresh)
        return RangeHidden(hidden, written, ids[-1], len(ids))

    def hide_owners(
        self, conn: Connection, kind: BoundKind, owner_lock: dict[Any, int], now: str,
        room: int, all_new: bool = False,
    ) -> tuple[Counter[Any], list[Any]]:
        """One statement per pass, with no row locked before it is hidden.

        A CTE reads the owners' visible rows (id, owner, visibility) as of the statement's
        start. The ``UPDATE`` hides each only if its row, when the update locks it, still has
        that owner and that visibility: when the site changed it in between, READ COMMITTED
        rechecks the condition against the new version and skips the row. So every row hidden
        had, at the instant it was hidden, exactly the value the snapshot stores, and the
        snapshots are inserted from the update's own ``RETURNING``. A row skipped is still
        visible: the statement runs again until it hides every row it saw. Locking the rows
        first did the same but wrote every row twice: 47-51 ms per 850 items against 25-30
        for the floor. With ``all_new`` (every lock was opened in this transaction) the
        snapshots are inserted plainly: ``ON CONFLICT DO NOTHING`` costs a quarter more."""
        owners, lock_ids = list(owner_lock), list(owner_lock.values())
        seen = (
            select(kind.id_col.label("id"), kind.owner_col.label("owner"),
                   kind.vis_col.label("vis"))
            .where(self.exactly_in(kind.owner_col, owners), visible(kind))
            .cte("seen")
        )
        hidden = (
            update(kind.table)
            .where(self.exactly_in(kind.owner_col, owners), kind.id_col == seen.c.id,
                   kind.owner_col == seen.c.owner, kind.vis_col.is_not_distinct_from(seen.c.vis))
            .values({kind.vis_col.name: kind.private})
            .returning(kind.id_col.label("id"), kind.owner_col.label("owner"),
                       seen.c.vis.label("vis"))
            .cte("hidden")
        )
        lock_of = (
            func.unnest(bindparam("lock_owners", owners, type_=ARRAY(kind.owner_col.type)),
                        bindparam("lock_ids", lock_ids, type_=ARRAY(snapshots.c.lock_id.type)))
            .table_valued("owner", "lock_id").render_derived()
        )
        id_text = (hidden.c.id if isinstance(kind.id_col.type, String)
                   else cast(hidden.c.id, String(191)))
        snapshotted = pg_insert(snapshots).from_select(
            _target(kind),
            select(lock_of.c.lock_id, literal(kind.name, snapshots.c.kind.type), id_text,
                   literal(PENDING, snapshots.c.state.type),
                   literal(now, snapshots.c.snapshotted_at.type), hidden.c.vis)
            .select_from(hidden.join(lock_of, self.exactly(hidden.c.owner, lock_of.c.owner))),
        )
        if not all_new:
            snapshotted = snapshotted.on_conflict_do_nothing(
                index_elements=["lock_id", "kind", "item_id"])
        wrote = snapshotted.returning(*WRITTEN).cte("snapshotted")
        # One statement, two kinds of rows: per owner ("n") the rows seen and hidden, and ("s")
        # each snapshot row written, for the chunk's seal.
        no_text, no_int = cast(null(), Text), cast(null(), BigInteger)
        counts = select(
            literal("n").label("what"), cast(seen.c.owner, Text).label("owner"),
            func.count(hidden.c.id).label("n_hidden"), func.count().label("n_seen"),
            no_text, no_text, no_text, no_int,
        ).select_from(seen.outerjoin(hidden, hidden.c.id == seen.c.id)).group_by(seen.c.owner)
        written_rows = select(literal("s"), no_text, wrote.c.lock_id, no_int, wrote.c.kind,
                              wrote.c.item_id, wrote.c.original_text, wrote.c.original_int)
        statement = union_all(counts, written_rows)
        owner_of = {str(owner): owner for owner in owners}
        per_owner: Counter[Any] = Counter()
        written: list[Any] = []
        for _pass in range(HIDE_PASSES):
            rows = conn.execute(statement).all()
            tallies = [(owner_of.get(r[1], r[1]), r[2], r[3]) for r in rows if r[0] == "n"]
            written += [tuple(r[2:3]) + tuple(r[4:]) for r in rows if r[0] == "s"]
            per_owner.update({owner: n_hidden for owner, n_hidden, _n_seen in tallies
                              if n_hidden})
            if all(n_hidden == n_seen for _owner, n_hidden, n_seen in tallies):
                return per_owner, written
            if sum(per_owner.values()) > room:
                return per_owner, written  # the caller rolls the group back
        raise StaleChunk(f"the site changed the users' rows during {HIDE_PASSES} tries to "
                         "hide them")

    def _restore_unlocked(
        self, conn: Connection, kind: BoundKind, ours: Any, its_item: Any, now: str
    ) -> int:
        """Restore the items of ``ours`` (pending snapshots) still owner-only and still their
        lock's user's, and mark exactly their snapshots restored, in one statement. No item is
        locked beforehand: the ``UPDATE`` locks each row it changes, and READ COMMITTED
        rechecks its condition against the row's newest version, so an item the site made
        visible, deleted or gave away meanwhile is left alone (and left pending, for the
        locking pass). Locking the items first wrote every row twice (10 ms of a 100-user
        chunk)."""
        held = snapshots.alias("held")
        as_held = ClauseAdapter(held).traverse
        restored = (
            update(kind.table)
            .where(as_held(its_item), as_held(ours), kind.vis_col == kind.private)
            .values({kind.vis_col.name: as_held(original_col(kind))})
            .returning(held.c.snapshot_id)
            .cte("restored")
        )
        return conn.execute(
            update(snapshots)
            .where(snapshots.c.snapshot_id == restored.c.snapshot_id)
            .values(state=RESTORED, resolved_at=now)
            .add_cte(restored)
        ).rowcount


class MysqlDialect(Dialect):
    """MySQL and MariaDB: the default strategy (key lists, locking reads by key)."""

    name = "mysql"
    aliases = ("mariadb",)
    snapshot_isolation = "REPEATABLE READ"

    def name_problem(self, name: str) -> str | None:
        """A MySQL/MariaDB name is at most 64 characters of the Basic Multilingual Plane
        (U+0001..U+FFFF); the server answers others with an error, not "no such table"."""
        if len(name) > 64:
            return f"is {len(name)} characters long; a MySQL/MariaDB name holds at most 64"
        outside = next((c for c in name if ord(c) > 0xFFFF), None)
        if outside is not None:
            return (f"holds {outside!r} (U+{ord(outside):X}); a MySQL/MariaDB name holds "
                    "characters up to U+FFFF only")
        return None

    def after_create_tables(self, conn: Connection) -> list[str]:
        """Tool tables made before their text columns were ``utf8mb4_bin`` (schema.ExactString)
        took the database's default collation, which a site column of another collation may
        not be compared with ("Illegal mix of collations"): convert them (``_bin`` is stricter
        than any other collation, so no unique key can gain a duplicate)."""
        converted = []
        for name in TOOL_TABLES:
            wrong = conn.execute(text(
                "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE()"
                " AND TABLE_NAME = :name AND DATA_TYPE = 'varchar'"
                " AND COLLATION_NAME <> 'utf8mb4_bin'"), {"name": name}).scalar()
            if wrong:
                conn.execute(text(
                    f"ALTER TABLE {name} CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"))
                converted.append(f"{name} converted to utf8mb4_bin")
        return converted

    def exact_form(self, col: Any) -> Any:
        """Bytes: ``CAST(x AS BINARY)`` (also trailing spaces count)."""
        return cast(col, BINARY())

    def exact_value(self, value: Any) -> Any:
        return str(value).encode("utf-8")

    def group_exactly(self, col: Any) -> tuple[Any, Any]:
        """Grouped by the bytes; every value of a group is the same, so MIN reads it back as
        text (the bytes would come back as bytes)."""
        if not isinstance(col.type, String):
            return col, col
        return func.min(col), cast(col, BINARY())

    def owns(self, col: Any, value: Any) -> ColumnElement[bool]:
        """Only the byte comparison (bytes that are equal are equal in every collation): with
        ``col = value`` too, MariaDB 10.11 reads the rows of a key list through the owner
        index's equality (``ref``), all of a heavy user's items for every chunk, where the
        key list's range on the id index reads only the chunk's (docs/BENCHMARKS.md, #15)."""
        return cast(col, BINARY()) == cast(literal(value, col.type), BINARY())

    def walk_hint(self, kind: BoundKind) -> str | None:
        """``FORCE INDEX`` of the (owner, id) index: left to itself, MariaDB ranges over the
        primary key (``id > after``), finds that costlier than the owner index's equality
        (``ref``), and reads the owner's items from the first one for every chunk (or, with
        ``ORDER BY ... LIMIT``, scans the primary key). Forced to the one index, it reads
        the range (owner, id > after) in order and stops after ``limit`` keys."""
        index = _owner_id_index(kind)
        return None if index is None else f"FORCE INDEX (`{index}`)"

    def current_login(self, conn: Connection) -> str | None:
        # CURRENT_USER(): the account the server authenticated ('user'@'host' as granted),
        # not USER(), which is the name the client merely asked for.
        return str(conn.exec_driver_sql("SELECT CURRENT_USER()").scalar_one())


_REGISTRY: dict[str, Dialect] = {}


def register(cls: type[Dialect]) -> type[Dialect]:
    """Make ``cls`` the strategy of its dialect name (and aliases)."""
    for name in (cls.name, *cls.aliases):
        _REGISTRY[name] = cls()
    return cls


for _cls in (SqliteDialect, PostgresqlDialect, MysqlDialect):
    register(_cls)


def for_connection(conn: Connection) -> Dialect:
    """The strategy of ``conn``'s database (the default one for a database not registered)."""
    return named(conn.dialect.name)


def named(name: str) -> Dialect:
    """The strategy registered under ``name`` (the default one for a name not registered)."""
    return _REGISTRY.get(name) or _REGISTRY["mysql"]


FIND_FTS = "privacy_lock_find_fts"  # SQLite: the FTS5 trigram index `find --reindex` builds
FIND_FTS_BUILT = "#built"  # its row holding when it was built
FIND_FTS_BUILT_ROWID = -1


def table_of_fts() -> Table:
    """The FTS5 table as SQLAlchemy Core sees it (a plain table of three text columns)."""
    from sqlalchemy import Column, MetaData

    return Table(FIND_FTS, MetaData(), Column("owner", Text), Column("source", Text),
                 Column("value", Text))


# --- helpers of the strategies -------------------------------------------------------------------

# MySQL/MariaDB text types by the bytes they hold (0: more than any input), narrowest first:
# each is a subclass of sqltypes.Text, which is last and holds 65,535.
_MYSQL_TEXT_BYTES: tuple[tuple[type, int], ...] = (
    (mysql_types.TINYTEXT, 255), (mysql_types.MEDIUMTEXT, 16_777_215),
    (mysql_types.LONGTEXT, 0), (Text, 65_535),
)


def _declared_length(type_: Any) -> tuple[int, str] | None:
    """A declared VARCHAR(n)/CHAR(n): n characters; anything else: no limit."""
    if isinstance(type_, String) and not isinstance(type_, Text) and type_.length:
        return type_.length, "characters"
    return None



def _owner_id_index(kind: BoundKind) -> str | None:
    """The name of the content table's index on (owner, id), as reflected (InnoDB appends the
    primary key to every secondary index, so an index on the owner alone serves when the id
    is the primary key); None when it has none (a view, or a table without it). A name with a
    backtick or a percent sign is passed over (the walk then goes unhinted): SQLAlchemy
    reflects a backtick as ``SHOW CREATE TABLE`` quotes it (doubled), and a hint's text goes to
    the driver unescaped, whose ``%`` formatting of parameters fails on it."""
    primary = [c.name for c in kind.table.primary_key.columns]
    for index in sorted(kind.table.indexes, key=lambda i: (len(i.columns), i.name or "")):
        names = [c.name for c in index.columns]
        then_id = names[1:2] == [kind.id_col.name] or (
            names[1:] == [] and primary == [kind.id_col.name])
        plain = not index.dialect_options["mysql"].get("prefix")  # not FULLTEXT / SPATIAL
        odd = index.name is None or "`" in index.name or "%" in index.name
        if not odd and plain and names[:1] == [kind.owner_col.name] and then_id:
            return index.name
    return None


def _walk(dialect: Dialect, kind: BoundKind, owner: Any, after: Any, limit: int) -> Any:
    """The next ``limit`` visible items of ``owner`` after key ``after``, in key order."""
    walk = select(kind.id_col).where(dialect.exactly(kind.owner_col, owner), visible(kind))
    hint = dialect.walk_hint(kind)
    if hint is not None:
        walk = walk.with_hint(kind.table, hint)
    if after is not None:
        walk = walk.where(kind.id_col > after)
    return walk.order_by(kind.id_col).limit(limit)


def _target(kind: BoundKind) -> list[str]:
    return [*SNAPSHOT_TARGET, original_col(kind).name]


def _snapshot_source(kind: BoundKind, lock_id: Any, now: str, source_from: Any) -> Any:
    """SELECT lock, kind, item id as text, state, time, original — for ``_target(kind)``;
    ``lock_id`` is a lock id, or SQL that picks each row's lock."""
    if not isinstance(lock_id, ColumnElement):
        lock_id = literal(lock_id, snapshots.c.lock_id.type)
    source = select(
        lock_id,
        literal(kind.name, snapshots.c.kind.type),
        id_as_text(kind),
        literal(PENDING, snapshots.c.state.type),
        literal(now, snapshots.c.snapshotted_at.type),
        kind.vis_col,
    )
    return source.select_from(source_from) if source_from is not None else source


def _skipping_held(dialect_insert: Any, kind: BoundKind, source: Any) -> Any:
    """``INSERT ... SELECT`` of snapshots that skips an item its lock holds already, in the
    unique (lock_id, kind, item_id) index's own probe (SQLite and PostgreSQL)."""
    return (dialect_insert(snapshots).from_select(_target(kind), source)
            .on_conflict_do_nothing(index_elements=["lock_id", "kind", "item_id"]))


def _written(conn: Connection, statement: Any, kind: BoundKind, now: str) -> list[Any]:
    """Run a snapshot INSERT and return the rows it wrote (:data:`WRITTEN`): from the insert's
    own ``RETURNING`` (SQLite, PostgreSQL, MariaDB), else read back (MySQL, which has no
    ``RETURNING``: the rows of this kind written now, under lock rows this transaction holds)."""
    if conn.dialect.insert_returning:
        return list(conn.execute(statement.returning(*WRITTEN)).all())
    conn.execute(statement)
    return list(conn.execute(
        select(*WRITTEN).where(snapshots.c.kind == kind.name, snapshots.c.snapshotted_at == now)
    ).all())


def _whole_lock_snapshots(
    dialect: Dialect, kind: BoundKind, group: Sequence[LockOf]
) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    """(the group's pending snapshots of ``kind``, the join of a snapshot to its item through
    its lock's subject as the owner column holds it)."""
    ours = and_(dialect.in_keys(snapshots.c.lock_id, [g.lock_id for g in group], bounded=True),
                snapshots.c.kind == kind.name, snapshots.c.state == PENDING)
    its_item = and_(
        kind.id_col == snapshot_item_as_id(kind),
        locks.c.lock_id == snapshots.c.lock_id,
        dialect.exactly(kind.owner_col, stored_as(kind.owner_col, locks.c.subject)),
    )
    return ours, its_item


def resolve_counted(
    conn: Connection, kind: BoundKind, pending: ColumnElement[bool],
    its_item: ColumnElement[bool], counted: RevertCounts, now: str, mark_restored: bool,
) -> None:
    """Resolve the ``pending`` snapshots of one kind as ``counted`` while their items were
    locked: mark the gone ones (no item of theirs left: ``its_item`` joins a snapshot to its
    item), the conflicting ones (their item is no longer owner-only), and restore the items
    still owner-only (marking those snapshots too with ``mark_restored``). Every statement's
    row count is checked against its count, so a chunk that would not add up changes
    nothing."""
    item = select(kind.id_col).where(its_item)

    def check(expected: int, matched: int, state: str) -> None:
        if matched != expected:
            raise mismatch(kind.name, expected, matched, state)

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

