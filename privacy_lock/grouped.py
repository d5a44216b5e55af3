"""Several small users in one chunk: the batch path of apply.

A day's tickets are mostly users with a handful of items each. Done one by one, each user costs
several short transactions (open the lock, one chunk per kind, the closing event), each with its
own commit and audit-head lock, and a batch runs at about 1% of what the database can do
(docs/BENCHMARKS.md). Here consecutive requests whose visible items fit in one chunk together
share one transaction that, in this order:

  1. locks the users' active locks and opens the missing ones (one multi-row ``INSERT``),
  2. per kind, locks the users' visible rows (``owner IN (...) ... FOR UPDATE`` on MariaDB; on
     SQLite the ``BEGIN IMMEDIATE`` of every writing transaction already keeps every other
     writer out; on PostgreSQL the ``UPDATE`` of step 3 locks each row it hides and hides it
     only if it still holds the value read, see :func:`_hide_postgresql`),
  3. copies their visibility into snapshot rows of each user's own lock (one ``INSERT ...
     SELECT`` that picks the lock by owner) and hides exactly those rows (one ``UPDATE``),
  4. appends each user's ``lock`` and ``apply`` events under one lock of the audit head.

Each user is done whole inside one transaction, with its snapshots and its events: a crash rolls
the whole group back and a re-run does it again. A user with more visible items than a chunk
takes the per-user way (:func:`privacy_lock.locking.apply_lock`), and so does every user of a
group whose transaction fails (the site holds a row past the retries, another operator opens a
lock for one of them at that moment, the plan went stale): one stubborn user fails alone.

With ``[database] one_user_per_chunk = true`` nothing is grouped, so that every transaction
stays inside one user's rows, as engines that shard by owner id need.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Connection,
    String,
    and_,
    any_,
    bindparam,
    case,
    cast,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.sql.util import ClauseAdapter

from privacy_lock.audit import Actor, EventSpec, append_events, utc_now
from privacy_lock.config import BoundKind, ContentMap, bind_value, stored_as
from privacy_lock.db import insert_rows
from privacy_lock.locking import (
    ACTIVE,
    CONFLICT,
    GONE,
    PENDING,
    RESOLVED,
    RESTORED,
    REVERTED,
    KindCounts,
    UserResult,
    active_lock_ids,
    counts_by_outcome,
    id_as_text,
    in_keys,
    nonzero,
    original_col,
    plan_for_actual_keys,
    resolve_counted,
    revert_outcome,
    reverts_begun,
    snapshot_item_as_id,
    snapshot_totals,
    visible,
)
from privacy_lock.schema import locks, snapshots

_HIDE_PASSES = 5  # a PostgreSQL shared apply retries the rows the site changed under it
MAX_GROUP_USERS = 500  # users per shared chunk: keeps every statement's parameters bounded


class StaleGroup(Exception):
    """The users' rows no longer fit the plan (more visible items than a chunk, an owner the
    database matched by collation); the transaction is rolled back and each goes on its own."""


@dataclass
class Planned:
    """One apply request as planned from one read: what a per-user apply would find now."""

    subject: str
    kinds: list[BoundKind]
    actor: Actor
    counts: dict[str, KindCounts]  # per kind: changed = visible now, already_private
    lock_id: int | None  # the user's active lock when planned

    @property
    def weight(self) -> int:
        """What the user costs a shared chunk: its visible items, plus one for its lock row."""
        return sum(c.changed for c in self.counts.values()) + 1

    def dry_run_result(self) -> UserResult:
        status = "would-extend" if self.lock_id else "would-lock"
        return UserResult(self.subject, self.lock_id, status, True, self.counts)


def plan_apply(
    conn: Connection, cmap: ContentMap, wanted: Sequence[tuple[str, list[BoundKind], Actor]]
) -> dict[str, Planned]:
    """Count every user's visible and private items per kind (one grouped query per kind, like
    :func:`privacy_lock.locking.count_for_apply` for each) and find their active locks.

    Users whose rows the database matched by collation rather than exactly (``'Alice'`` for
    ``'alice'`` on MariaDB), and users whose lock a revert has begun to give back, are left
    out: the per-user way handles them.
    """
    plan_for_actual_keys(conn)
    plans = {
        subject: Planned(subject, kinds, actor, {k.name: KindCounts() for k in kinds}, None)
        for subject, kinds, actor in wanted
    }
    per_user: set[str] = set()  # left to the per-user way
    for kind in cmap.kinds.values():
        owners = {cmap.owner_value(kind, p.subject): p.subject
                  for p in plans.values() if kind.name in p.counts}
        if not owners:
            continue
        n_visible = func.sum(case((visible(kind), 1), else_=0))
        n_private = func.sum(case((kind.vis_col == kind.private, 1), else_=0))
        rows = conn.execute(
            select(kind.owner_col, n_visible, n_private)
            .where(in_keys(conn, kind.owner_col, list(owners)))
            .group_by(kind.owner_col)
        ).all()
        for owner, n_vis, n_priv in rows:
            subject = owners.get(owner)
            if subject is None:
                per_user.update(owners.values())
                continue
            plans[subject].counts[kind.name] = KindCounts(changed=int(n_vis or 0),
                                                          already_private=int(n_priv or 0))
    active = {s: lock_id for s, lock_id in active_lock_ids(conn, list(plans)).items()
              if s in plans}
    for subject, lock_id in active.items():
        plans[subject].lock_id = lock_id
    begun = reverts_begun(conn, list(active.values()))
    # The per-user way refuses a lock a revert has begun to give back, saying why.
    per_user |= {s for s, lock_id in active.items() if lock_id in begun}
    return {s: p for s, p in plans.items() if s not in per_user}


def apply_group(
    conn: Connection, cmap: ContentMap, group: Sequence[Planned], limit: int
) -> list[UserResult]:
    """Lock, snapshot and hide every visible item of every user in ``group`` and write their
    events, all inside the caller's transaction; raise :class:`StaleGroup` (roll back) when
    they now have more than ``limit`` visible items together."""
    plan_for_actual_keys(conn)
    now = utc_now()
    lock_of, opened = _lock_or_open(conn, group, now)
    hidden: dict[tuple[str, str], int] = Counter()
    taken = 0
    for kind in cmap.kinds.values():
        members = [p for p in group if kind.name in p.counts]
        if not members:
            continue
        owner_lock = {cmap.owner_value(kind, p.subject): lock_of[p.subject] for p in members}
        subject_of = {cmap.owner_value(kind, p.subject): p.subject for p in members}
        if conn.dialect.name == "postgresql":
            per_owner = _hide_postgresql(conn, kind, owner_lock, now, limit - taken,
                                         all_new=len(opened) == len(group))
        else:
            per_owner = _HIDE[conn.dialect.name](conn, kind, owner_lock, now, limit - taken)
        taken += sum(per_owner.values())
        if taken > limit:
            raise StaleGroup(f"{taken} visible items, more than the chunk of {limit}")
        if not per_owner.keys() <= owner_lock.keys():
            raise StaleGroup("the database matched an owner id by collation, not exactly")
        for owner, n in per_owner.items():
            hidden[subject_of[owner], kind.name] += n

    # A lock opened now holds exactly the snapshots just written, and its updated_at is now:
    # only the extended ones are asked and touched.
    extended = sorted(lock_of[p.subject] for p in group if p.subject not in opened)
    totals = snapshot_totals(conn, extended) if extended else {}
    for lock_id, per_kind in totals.items():
        if any(state in per_state for per_state in per_kind.values() for state in RESOLVED):
            # Rolled back whole; the user's own apply then says what to do (being_reverted).
            raise StaleGroup(f"lock {lock_id} is being reverted")
    if extended:
        conn.execute(update(locks).where(in_keys(conn, locks.c.lock_id, extended))
                     .values(updated_at=now))
    results, events = [], []
    for plan in group:
        lock_id = lock_of[plan.subject]
        result = UserResult(plan.subject, lock_id, "locked" if plan.subject in opened
                            else "extended")
        for name, planned in plan.counts.items():
            n_hidden = hidden[plan.subject, name]
            result.kinds[name] = KindCounts(
                changed=n_hidden, already_private=planned.already_private,
                snapshotted=(n_hidden if plan.subject in opened
                             else totals.get(lock_id, {}).get(name, {}).get("total", 0)),
            )
        changed = sum(c.changed for c in result.kinds.values())
        result.chunks = 1 if changed else 0
        if plan.subject not in opened and not changed:
            result.status = "already-locked"
        if plan.subject in opened:
            events.append(EventSpec("lock", plan.actor, plan.subject, lock_id))
        events.append(EventSpec("apply", plan.actor, plan.subject, lock_id, {
            "status": result.status,
            "chunks": result.chunks,
            "chunk_shared_by": len(group),
            "kinds": {n: {"changed": c.changed, "already_private": c.already_private,
                          "snapshotted": c.snapshotted} for n, c in result.kinds.items()},
        }))
        results.append(result)
    append_events(conn, events)
    return results


def _lock_or_open(
    conn: Connection, group: Sequence[Planned], now: str
) -> tuple[dict[str, int], set[str]]:
    """Lock the users' active lock rows and open the missing ones: (lock id per user, the
    users whose lock was opened now). Another operator opening one at the same moment makes
    the insert fail (the unique ``active_subject``), and the group goes user by user."""
    lock_of = active_lock_ids(conn, [p.subject for p in group], lock=True)
    missing = [p for p in group if p.subject not in lock_of]
    if missing:
        insert_rows(conn, locks, [
            {"subject": p.subject, "active_subject": p.subject, "state": ACTIVE,
             "operator": p.actor.operator, "ticket": p.actor.ticket or "",
             "reason": p.actor.reason or "", "created_at": now, "updated_at": now}
            for p in missing
        ])
        lock_of.update(active_lock_ids(conn, [p.subject for p in missing]))
    return lock_of, {p.subject for p in missing}


def _hide_by_key(
    conn: Connection, kind: BoundKind, owner_lock: dict[Any, int], now: str, room: int
) -> Counter[Any]:
    """MySQL/MariaDB: lock the users' visible rows (a plain locking read on the owner index),
    then snapshot and hide exactly those rows, by key: a row the site inserts meanwhile is
    neither snapshotted nor hidden. Returns the rows hidden per owner."""
    rows = conn.execute(
        select(kind.id_col, kind.owner_col)
        .where(in_keys(conn, kind.owner_col, list(owner_lock)), visible(kind))
        .with_for_update()
    ).all()
    if rows and len(rows) <= room:
        these_rows = (in_keys(conn, kind.owner_col, list(owner_lock)),
                      in_keys(conn, kind.id_col, [row[0] for row in rows]), visible(kind))
        _insert_snapshots(conn, kind, owner_lock, these_rows, now)
        conn.execute(update(kind.table).where(*these_rows)
                     .values({kind.vis_col.name: kind.private}))
    return Counter(owner for _id, owner in rows)


def _hide_sqlite(
    conn: Connection, kind: BoundKind, owner_lock: dict[Any, int], now: str, room: int
) -> Counter[Any]:
    """SQLite: the transaction began with BEGIN IMMEDIATE, so no other writer runs until it
    ends and the users' visible rows are exactly ``owner IN (...) AND visible``: count them,
    snapshot them, hide them, with no key lists (binding them cost more than the work)."""
    these_rows = (kind.owner_col.in_(list(owner_lock)), visible(kind))
    per_owner: Counter[Any] = Counter(dict(conn.execute(
        select(kind.owner_col, func.count()).where(*these_rows).group_by(kind.owner_col)
    ).all()))
    if per_owner and sum(per_owner.values()) <= room:
        _insert_snapshots(conn, kind, owner_lock, these_rows, now)
        conn.execute(update(kind.table).where(*these_rows)
                     .values({kind.vis_col.name: kind.private}))
    return per_owner


def _hide_postgresql(
    conn: Connection, kind: BoundKind, owner_lock: dict[Any, int], now: str, room: int,
    all_new: bool = False,
) -> Counter[Any]:
    """PostgreSQL: one statement per pass, with no row locked before it is hidden.

    A CTE reads the users' visible rows (id, owner, visibility) as of the statement's start.
    The ``UPDATE`` hides each of them only if its row, when the update locks it, still has
    that owner and that visibility: when the site changed it in between, READ COMMITTED
    rechecks the condition against the new version and skips the row. So every row hidden
    had, at the instant it was hidden, exactly the value the snapshot stores, and the
    snapshots are inserted from the update's own ``RETURNING``. A row skipped is still
    visible: the statement runs again (a new snapshot of the database sees its new value)
    until it hides every row it saw. Locking the rows first (``FOR UPDATE``) did the same
    but wrote every row twice: 47-51 ms per 850 items against 25-30 for the floor.

    With ``all_new`` (every lock of the group was opened in this transaction, so none can hold
    a snapshot yet) the snapshots are inserted plainly: ``ON CONFLICT DO NOTHING`` costs a
    quarter more per row.
    """
    owners, lock_ids = list(owner_lock), list(owner_lock.values())
    seen = (
        select(kind.id_col.label("id"), kind.owner_col.label("owner"),
               kind.vis_col.label("vis"))
        .where(kind.owner_col == any_(bindparam("owners", owners,
                                                 type_=ARRAY(kind.owner_col.type))),
               visible(kind))
        .cte("seen")
    )
    hidden = (
        update(kind.table)
        .where(kind.id_col == seen.c.id, kind.owner_col == seen.c.owner,
               kind.vis_col.is_not_distinct_from(seen.c.vis))
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
    id_text = hidden.c.id if isinstance(kind.id_col.type, String) else cast(hidden.c.id,
                                                                             String(191))
    snapshotted = pg_insert(snapshots).from_select(
        ["lock_id", "kind", "item_id", original_col(kind).name, "state", "snapshotted_at"],
        select(lock_of.c.lock_id, literal(kind.name, snapshots.c.kind.type), id_text,
               hidden.c.vis, literal(PENDING, snapshots.c.state.type),
               literal(now, snapshots.c.snapshotted_at.type))
        .select_from(hidden.join(lock_of, lock_of.c.owner == hidden.c.owner)),
    )
    if not all_new:
        snapshotted = snapshotted.on_conflict_do_nothing(
            index_elements=["lock_id", "kind", "item_id"])
    counts = (
        select(seen.c.owner, func.count(hidden.c.id), func.count())
        .select_from(seen.outerjoin(hidden, hidden.c.id == seen.c.id))
        .group_by(seen.c.owner)
        .add_cte(snapshotted.cte("snapshotted"))
    )
    per_owner: Counter[Any] = Counter()
    for _pass in range(_HIDE_PASSES):
        rows = conn.execute(counts).all()
        per_owner.update({owner: n_hidden for owner, n_hidden, _n_seen in rows if n_hidden})
        if all(n_hidden == n_seen for _owner, n_hidden, n_seen in rows):
            return per_owner
        if sum(per_owner.values()) > room:
            return per_owner  # the caller rolls the group back
    raise StaleGroup(f"the site changed the users' rows during {_HIDE_PASSES} tries to hide them")


_HIDE = {"sqlite": _hide_sqlite, "mysql": _hide_by_key, "mariadb": _hide_by_key}


def _insert_snapshots(
    conn: Connection, kind: BoundKind, owner_lock: dict[Any, int], these_rows: Any, now: str
) -> None:
    """Snapshot ``these_rows`` into their owner's lock. As in the per-user chunk, an item its
    lock already holds a snapshot of (made visible again since) is hidden again, but its stored
    original is never overwritten."""
    target = ["lock_id", "kind", "item_id", original_col(kind).name, "state", "snapshotted_at"]
    values = (literal(kind.name, snapshots.c.kind.type), id_as_text(kind), kind.vis_col,
              literal(PENDING, snapshots.c.state.type),
              literal(now, snapshots.c.snapshotted_at.type))
    if conn.dialect.name == "sqlite":
        # Each row finds its owner's lock by the lock's subject, and the unique (lock_id, kind,
        # item_id) index skips what the lock holds, as in the per-user chunk: no CASE over the
        # owners built for every chunk, and one index probe per item, not two.
        its_lock = and_(in_keys(conn, locks.c.lock_id, list(owner_lock.values())),
                        kind.owner_col == stored_as(kind.owner_col, locks.c.subject))
        source = (select(locks.c.lock_id, *values)
                  .select_from(kind.table.join(locks, its_lock)).where(*these_rows))
        conn.execute(sqlite_insert(snapshots).from_select(target, source)
                     .on_conflict_do_nothing(index_elements=["lock_id", "kind", "item_id"]))
        return
    lock_id = case(
        {owner: literal(lid, snapshots.c.lock_id.type) for owner, lid in owner_lock.items()},
        value=kind.owner_col,
    )
    already_snapshotted = (
        select(snapshots.c.snapshot_id)
        .where(snapshots.c.lock_id == lock_id, snapshots.c.kind == kind.name,
               snapshots.c.item_id == id_as_text(kind))
        .exists()
    )
    source = select(lock_id, *values).where(*these_rows, ~already_snapshotted)
    conn.execute(insert(snapshots).from_select(target, source))


# --- revert --------------------------------------------------------------------------------------


@dataclass
class PlannedRevert:
    """One revert request as planned: an active lock and what it holds pending."""

    lock_id: int
    subject: str
    actor: Actor
    pending: int  # snapshots still to resolve, every kind
    kinds: set[str] = field(default_factory=set)  # every kind it holds snapshots of

    @property
    def weight(self) -> int:
        return self.pending + 1


def plan_revert(
    conn: Connection, cmap: ContentMap, wanted: Sequence[tuple[int, Actor]]
) -> dict[int, PlannedRevert]:
    """The active locks among ``wanted`` (lock id, actor) whose every snapshot kind is in the
    content map, with their pending snapshot counts; the others take the per-user way, which
    reports them (not locked, a kind missing from the config)."""
    plan_for_actual_keys(conn)
    lock_ids = [lock_id for lock_id, _actor in wanted]
    actor_of = dict(wanted)
    active = dict(conn.execute(
        select(locks.c.lock_id, locks.c.subject)
        .where(in_keys(conn, locks.c.lock_id, lock_ids), locks.c.state == ACTIVE)
    ).all())
    plans = {int(lock_id): PlannedRevert(int(lock_id), subject, actor_of[int(lock_id)], 0)
             for lock_id, subject in active.items()}
    unmapped: set[int] = set()
    rows = conn.execute(
        select(snapshots.c.lock_id, snapshots.c.kind,
               func.sum(case((snapshots.c.state == PENDING, 1), else_=0)))
        .where(in_keys(conn, snapshots.c.lock_id, list(plans)))
        .group_by(snapshots.c.lock_id, snapshots.c.kind)
    ).all() if plans else []
    for lock_id, kind_name, pending in rows:
        if kind_name not in cmap.kinds:
            unmapped.add(int(lock_id))
        plans[int(lock_id)].pending += int(pending or 0)
        plans[int(lock_id)].kinds.add(kind_name)
    return {lock_id: p for lock_id, p in plans.items() if lock_id not in unmapped}


def count_revert_group(
    conn: Connection, cmap: ContentMap, group: Sequence[PlannedRevert]
) -> list[UserResult]:
    """What reverting the locks of ``group`` would do now, counted as the per-user dry run
    counts one lock (:func:`privacy_lock.locking.count_for_revert`): of each kind's pending
    snapshots, the items still owner-only (restored), changed since (conflicts) and deleted or
    no longer the lock's user's (gone). One read per kind for the whole group; 10,000 locks
    one by one took longer than reverting them."""
    lock_ids = [p.lock_id for p in group]
    found: dict[tuple[int, str], dict[str, int]] = {}
    for kind in cmap.kinds.values():
        if not any(kind.name in p.kinds for p in group):
            continue
        # Each snapshot's item must still belong to its own lock's user, bound as the per-user
        # count binds it (the lock's subject in the owner column's type).
        owner_of_lock = case(
            {p.lock_id: literal(bind_value(kind.owner_col, p.subject), kind.owner_col.type)
             for p in group},
            value=snapshots.c.lock_id,
        )
        its_item = and_(kind.id_col == snapshot_item_as_id(kind),
                        kind.owner_col == owner_of_lock)
        outcome = revert_outcome(kind)
        rows = conn.execute(
            select(snapshots.c.lock_id, outcome, func.count())
            .select_from(snapshots.outerjoin(kind.table, its_item))
            .where(in_keys(conn, snapshots.c.lock_id, lock_ids, bounded=True),
                   snapshots.c.kind == kind.name, snapshots.c.state == PENDING)
            .group_by(snapshots.c.lock_id, outcome)
        ).all()
        for lock_id, state, n in rows:
            found.setdefault((int(lock_id), kind.name), {})[state] = int(n)

    return [
        UserResult(plan.subject, plan.lock_id, "would-revert", True, {
            kind.name: counts_by_outcome(found.get((plan.lock_id, kind.name), {}))
            for kind in cmap.kinds.values() if kind.name in plan.kinds
        })
        for plan in group
    ]


def revert_group(
    conn: Connection, cmap: ContentMap, group: Sequence[PlannedRevert], limit: int
) -> list[UserResult]:
    """Restore every pending item of every lock in ``group``, close the locks and write their
    ``revert`` events, inside the caller's transaction; raise :class:`StaleGroup` (roll back)
    when a lock was closed or extended beyond ``limit`` items since the plan.

    As in the per-user revert, each item is locked before it is looked at and put back only if
    it is still owner-only and still its lock's user's; otherwise it is a conflict or gone.
    """
    plan_for_actual_keys(conn)
    lock_ids = sorted(p.lock_id for p in group)
    states = dict(conn.execute(
        select(locks.c.lock_id, locks.c.state)
        .where(in_keys(conn, locks.c.lock_id, lock_ids))
        .order_by(locks.c.lock_id)
        .with_for_update()
    ).all())
    if any(states.get(lock_id) != ACTIVE for lock_id in lock_ids):
        raise StaleGroup("a lock was reverted by someone else meanwhile")
    totals = snapshot_totals(conn, lock_ids)  # before: recounted only if some not restored
    pending: Counter[str] = Counter()
    for per_kind in totals.values():
        for kind_name, per_state in per_kind.items():
            pending[kind_name] += per_state.get(PENDING, 0)
    if pending.total() > limit:
        raise StaleGroup(f"{pending.total()} pending items, more than the chunk of {limit}")
    now = utc_now()
    restore_kind = _RESTORE.get(conn.dialect.name, _restore_by_key)
    restored = to_mark = 0
    for kind_name, count in sorted(pending.items()):
        if not count:
            continue
        if kind_name not in cmap.kinds:
            raise StaleGroup(f"a lock now holds {kind_name!r} items, which the config lacks")
        restored_kind, unmarked = restore_kind(conn, cmap.kinds[kind_name], group, count, now)
        restored, to_mark = restored + restored_kind, to_mark + unmarked
    if to_mark:
        # Every snapshot of these locks still pending is one just restored: nobody can add one
        # while this transaction holds the lock rows (every apply locks its lock row first).
        marked = conn.execute(
            update(snapshots)
            .where(in_keys(conn, snapshots.c.lock_id, lock_ids, bounded=True),
                   snapshots.c.state == PENDING)
            .values(state=RESTORED, resolved_at=now)
        ).rowcount
        if marked != to_mark:
            raise StaleGroup(f"expected {to_mark} snapshots to mark restored, "
                             f"the database matched {marked}")
    _close_locks(conn, group, now)
    if restored == pending.total():  # every pending snapshot is now a restored one
        for per_kind in totals.values():
            for per_state in per_kind.values():
                if PENDING in per_state:
                    per_state[RESTORED] = per_state.get(RESTORED, 0) + per_state.pop(PENDING)
    else:  # some were conflicts or gone: count again, per lock
        totals = snapshot_totals(conn, lock_ids)
    results, events = [], []
    for plan in group:
        result = UserResult(plan.subject, plan.lock_id, "reverted", chunks=1)
        for name, per_state in sorted(totals.get(plan.lock_id, {}).items()):
            result.kinds[name] = KindCounts(
                snapshotted=per_state["total"], restored=per_state.get(RESTORED, 0),
                conflicts=per_state.get(CONFLICT, 0), gone=per_state.get(GONE, 0))
        events.append(EventSpec("revert", plan.actor, plan.subject, plan.lock_id, {
            "chunks": 1,
            "chunk_shared_by": len(group),
            "kinds": {n: nonzero(c.as_dict()) for n, c in result.kinds.items()},
        }))
        results.append(result)
    append_events(conn, events)
    return results


def _restore_set_based(
    conn: Connection, kind: BoundKind, group: Sequence[PlannedRevert], pending: int, now: str
) -> tuple[int, int]:
    """Lock the items of the group's ``pending`` snapshots of one kind, mark the gone and the
    conflicting ones, restore those still owner-only and still their lock's user's (SQLite and
    PostgreSQL); return (how many were restored, how many of their snapshots are left for the
    caller to mark restored). No key lists and no rows fetched: each snapshot finds its item
    through the content id and its lock's subject, as the owner column holds it.

    On PostgreSQL the items still owner-only are first restored without being locked
    beforehand (:func:`_restore_unlocked`); only what that leaves pending, usually nothing, is
    locked and resolved as below.

    Each count is checked against what the statements matched, so a chunk that would not add up
    changes nothing (as in :func:`privacy_lock.locking.restore_chunk`).
    """
    lock_ids = [p.lock_id for p in group]
    ours = and_(in_keys(conn, snapshots.c.lock_id, lock_ids, bounded=True),
                snapshots.c.kind == kind.name,
                snapshots.c.state == PENDING)
    its_item = and_(
        kind.id_col == snapshot_item_as_id(kind),
        locks.c.lock_id == snapshots.c.lock_id,
        kind.owner_col == stored_as(kind.owner_col, locks.c.subject),
    )
    restored_first = 0
    if conn.dialect.name == "postgresql":
        restored_first = _restore_unlocked(conn, kind, ours, its_item, now)
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

    def mismatch(expected: int, matched: int, state: str) -> StaleGroup:
        return StaleGroup(f"expected {expected} {kind.name} items to be {state}, "
                          f"the database matched {matched}")

    counted = KindCounts(restored=still_private, conflicts=present - still_private,
                         gone=pending - present)
    # The restored snapshots are marked once for every kind, after the last (revert_group).
    resolve_counted(conn, kind, ours, its_item, counted, now, mismatch, mark_restored=False)
    return restored_first + still_private, still_private


def _restore_unlocked(
    conn: Connection, kind: BoundKind, ours: Any, its_item: Any, now: str
) -> int:
    """PostgreSQL: restore the items of ``ours`` (pending snapshots) still owner-only and still
    their lock's user's, and mark exactly their snapshots restored, in one statement; return
    how many. No item is locked beforehand: the ``UPDATE`` locks each row it changes, and READ
    COMMITTED rechecks its condition against the row's newest version, so an item the site
    made visible, deleted or gave away meanwhile is left alone (and left pending, for the
    locking pass). Locking the items first wrote every row twice (10 ms of a 100-user chunk).
    """
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


def _restore_by_key(
    conn: Connection, kind: BoundKind, group: Sequence[PlannedRevert], _pending: int, now: str
) -> tuple[int, int]:
    """:func:`_restore_set_based` with key lists, for MariaDB and MySQL: fetch the pending
    snapshots of one kind, lock their items by key, decide in Python, mark the gone and the
    conflicting ones and restore the rest; return (how many were restored, the same: their
    snapshots are left for the caller to mark)."""
    lock_ids = [p.lock_id for p in group]
    pending = conn.execute(
        select(snapshots.c.snapshot_id, snapshots.c.lock_id, snapshots.c.item_id)
        .where(in_keys(conn, snapshots.c.lock_id, lock_ids), snapshots.c.kind == kind.name,
               snapshots.c.state == PENDING)
    ).all()
    owner_of_lock = {p.lock_id: bind_value(kind.owner_col, p.subject) for p in group}
    owners = list(set(owner_of_lock.values()))
    item_ids = list({bind_value(kind.id_col, row.item_id) for row in pending})
    current = {
        item: (owner, vis) for item, owner, vis in conn.execute(
            select(id_as_text(kind), kind.owner_col, kind.vis_col)
            .where(in_keys(conn, kind.owner_col, owners), in_keys(conn, kind.id_col, item_ids))
            .with_for_update()
        ).all()
    }
    if not {owner for owner, _vis in current.values()} <= set(owners):
        raise StaleGroup("the database matched an owner id by collation, not exactly")
    by_state: dict[str, list[int]] = {RESTORED: [], CONFLICT: [], GONE: []}
    for row in pending:
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
                         .where(in_keys(conn, snapshots.c.snapshot_id, by_state[state]))
                         .values(state=state, resolved_at=now))
    if by_state[RESTORED]:
        # Each restored item gets the original of its own lock's snapshot, found through the
        # unique (lock, kind, item) index.
        to_restore = set(by_state[RESTORED])
        restored_items = [bind_value(kind.id_col, row.item_id) for row in pending
                          if row.snapshot_id in to_restore]
        lock_of_owner = case({owner: literal(lock_id, snapshots.c.lock_id.type)
                              for lock_id, owner in owner_of_lock.items()},
                             value=kind.owner_col)
        original = (
            select(original_col(kind))
            .where(snapshots.c.lock_id == lock_of_owner, snapshots.c.kind == kind.name,
                   snapshots.c.item_id == id_as_text(kind))
            .scalar_subquery()
        )
        restored = conn.execute(
            update(kind.table)
            .values({kind.vis_col.name: original})
            .where(
                in_keys(conn, kind.owner_col, owners),
                in_keys(conn, kind.id_col, restored_items),
                kind.vis_col == kind.private,
            )
        ).rowcount
        if restored != len(by_state[RESTORED]):  # cannot happen while the rows are locked
            raise StaleGroup(f"expected to restore {len(by_state[RESTORED])} {kind.name} items "
                             f"but the database matched {restored}")
    return len(by_state[RESTORED]), len(by_state[RESTORED])


_RESTORE = {"sqlite": _restore_set_based, "postgresql": _restore_set_based}


def _close_locks(conn: Connection, group: Sequence[PlannedRevert], now: str) -> None:
    """Close the locks, each as reverted by its own request's operator (one statement per
    operator: a batch file usually has one)."""
    by_operator: dict[str, list[int]] = {}
    for plan in group:
        by_operator.setdefault(plan.actor.operator, []).append(plan.lock_id)
    for operator, lock_ids in by_operator.items():
        conn.execute(
            update(locks).where(in_keys(conn, locks.c.lock_id, lock_ids))
            .values(state=REVERTED, active_subject=None, reverted_at=now, updated_at=now,
                    reverted_by=operator)
        )
