"""Chunk boundaries, on every dialect: a chunk is exactly the items it walked, whether the
dialect names them by key list (PostgreSQL, MariaDB) or by key range (SQLite, one writer)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import insert, select

from privacy_lock import locking
from privacy_lock.audit import Actor
from privacy_lock.pacing import Interrupted, Pacer
from privacy_lock.schema import audit_events, snapshots
from sns import build_sns, tool_session

SHAPES = [("int", "text"), ("uuid", "code")]
ACTOR = Actor.current("op", "T-1", "test")


@pytest.fixture(params=SHAPES, ids=lambda s: f"{s[0]}-ids-{s[1]}-visibility")
def sns(request, db_url, tmp_path):
    id_style, vis_style = request.param
    return build_sns(db_url, tmp_path, id_style, vis_style)


def _stop_after(chunks: int) -> Pacer:
    """Chunks of 3 that stop the run (as Ctrl-C does) after ``chunks`` committed chunks."""
    def on_chunk(_user, _kind, _items):
        if pacer.chunks >= chunks:
            pacer._stop = True
    pacer = Pacer(size=3, on_chunk=on_chunk)
    return pacer


def half_reverted(sns, user):
    """Lock ``user``, then revert one chunk of 3 items and stop, as Ctrl-C does:
    (engine, content map, lock id) of the tool's session."""
    sns.apply(user)
    engine, cmap = tool_session(sns)
    [lock_id] = [lk["lock_id"] for lk in sns.lock_rows() if lk["subject"] == str(user)]
    with engine.connect() as conn, pytest.raises(Interrupted):
        locking.revert_lock(conn, cmap, lock_id, ACTOR, _stop_after(1))
    return engine, cmap, lock_id


def test_apply_chunks_skip_other_users_and_private_items_between_their_keys(sns):
    user, other = sns.users[0], sns.users[1]
    # interleave keys: the user's items alternate with another user's and with private ones
    for _ in range(4):
        sns.add_item("diary", user, sns.public)
        sns.add_item("diary", other, sns.public)
        sns.add_item("diary", user, sns.private)
        sns.add_item("diary", user, None)
    before = sns.everything()
    visible = {(k, str(i)): v for (k, i), v in sns.items_of(user).items() if v != sns.private}
    engine, cmap = tool_session(sns)
    with engine.connect() as conn:
        result = locking.apply_lock(conn, cmap, str(user), list(cmap.kinds.values()), ACTOR,
                                    Pacer(size=3))
    engine.dispose()
    assert result.chunks > 3
    snaps = sns.snapshot_rows()
    assert {(s["kind"], s["item_id"]): sns.original_of(s) for s in snaps} == visible
    assert len(snaps) == len(visible)
    assert all(v == sns.private for v in sns.items_of(user).values())
    assert sns.items_of(other) == {(k, i): row[1] for k, rows in before.items()
                                   for i, row in rows.items() if row[0] == other}


def test_resumed_revert_never_touches_items_an_earlier_run_resolved(sns):
    user, other = sns.users[0], sns.users[1]
    before = sns.everything()
    engine, cmap, lock_id = half_reverted(sns, user)
    snaps = sns.snapshot_rows()
    resolved = [s for s in snaps if s["state"] != "locked"]
    pending = [s for s in snaps if s["state"] == "locked" and s["kind"] == resolved[0]["kind"]]
    assert len(resolved) == 3 and len(pending) >= 3
    ids = {str(i): i for i in sns.rows(resolved[0]["kind"])}
    kind = resolved[0]["kind"]
    # after the first run: a restored item is made private again by the person (it must stay so),
    # a pending one is set back to its original by hand (a conflict, not a restore), one is
    # deleted, one now belongs to someone else (both gone); the rest are restored.
    again_private = ids[resolved[0]["item_id"]]
    sns.set_vis(kind, again_private, sns.private)
    by_hand, deleted, moved = (ids[s["item_id"]] for s in pending[:3])
    sns.set_vis(kind, by_hand, sns.original_of(pending[0]))
    sns.delete(kind, deleted)
    table = sns.tables[kind]
    id_col, owner_col, _ = sns.columns[kind]
    with sns.engine.begin() as conn:
        conn.execute(table.update().where(table.c[id_col] == moved).values({owner_col: other}))

    with engine.connect() as conn:
        result = locking.revert_lock(conn, cmap, lock_id, ACTOR, Pacer(size=3))
    engine.dispose()
    assert result.status == "reverted"
    states = {(s["kind"], s["item_id"]): s["state"] for s in sns.snapshot_rows()}
    assert states[(kind, str(again_private))] == "restored"
    assert states[(kind, str(by_hand))] == "conflict"
    assert states[(kind, str(deleted))] == "gone"
    assert states[(kind, str(moved))] == "gone"
    assert sum(1 for s in states.values() if s == "restored") == len(snaps) - 3
    counts = result.kinds[kind]
    assert (counts.conflicts, counts.gone) == (1, 2)
    after = sns.everything()
    assert after[kind][again_private][1] == sns.private  # an earlier run's item: untouched
    assert after[kind][moved] == (other, sns.private)
    for k, rows in before.items():
        for item_id, row in rows.items():
            if (k, item_id) not in {(kind, again_private), (kind, deleted), (kind, moved)}:
                assert after[k][item_id] == row, (k, item_id)


def test_a_fresh_lock_that_holds_a_snapshot_after_all_keeps_its_original(sns):
    # A run that opened the lock inserts snapshots without ON CONFLICT on PostgreSQL; if the
    # lock does hold one of the items (another apply of the user ran meanwhile), the chunk
    # must go on, and the stored original must stay the first one.
    user = sns.users[0]
    engine, cmap = tool_session(sns)
    kind = cmap.kinds["diary"]
    with engine.connect() as conn:
        result = locking.apply_lock(conn, cmap, str(user), [kind], ACTOR, Pacer(size=4))
        with sns.engine.connect() as read:
            hides = [json.loads(d) for d in read.execute(
                select(audit_events.c.details).where(audit_events.c.action == "hide")).scalars()]
        assert len(hides) > 1 and all(h["snapshotted"] == h["hidden"] for h in hides)
        assert sum(h["snapshotted"] for h in hides) == len(sns.snapshot_rows())
        # an item whose original differs from what the person sets now
        snap = next(s for s in sns.snapshot_rows() if sns.original_of(s) != sns.friends)
        original = sns.original_of(snap)
        item_id = next(k[1] for k in sns.items_of(user, "diary") if str(k[1]) == snap["item_id"])
        sns.set_vis("diary", item_id, sns.friends)  # the person shows it again
        with conn.begin():
            hidden, snapshotted, _last, _seen = locking.snapshot_and_hide_chunk(
                conn, kind, result.lock_id, cmap.owner_value(kind, str(user)), None, 1000,
                fresh=True)
    engine.dispose()
    assert (hidden, snapshotted) == (1, 0)
    assert sns.vis("diary", item_id) == sns.private
    assert sns.original_of({s["item_id"]: s for s in sns.snapshot_rows()}[str(item_id)]) == (
        original)


@pytest.mark.parametrize("piece", [1, 4])
def test_a_locks_totals_read_in_pieces_are_the_totals_of_one_count(sns, monkeypatch, piece):
    # A heavy lock's totals are read in short pieces before the closing transaction; cut into
    # pieces of 1 or 4 rows, within a kind and across kinds, they must add up exactly.
    monkeypatch.setattr(locking, "TOTALS_PIECE", piece)
    user = sns.users[0]
    engine, cmap = tool_session(sns)
    with engine.connect() as conn:
        applied = locking.apply_lock(conn, cmap, str(user), list(cmap.kinds.values()), ACTOR,
                                     Pacer(size=5))
        lock_id = applied.lock_id
        with conn.begin():
            one_count = locking.snapshot_totals(conn, [lock_id])[lock_id]
        assert {n: c.snapshotted for n, c in applied.kinds.items()} == {
            n: t["total"] for n, t in one_count.items()} == {"diary": 9, "photo": 9}
        snap = next(s for s in sns.snapshot_rows() if s["kind"] == "photo")
        item_id = next(k[1] for k in sns.items_of(user, "photo") if str(k[1]) == snap["item_id"])
        sns.delete("photo", item_id)
        reverted = locking.revert_lock(conn, cmap, lock_id, ACTOR, Pacer(size=5))
        with conn.begin():
            one_count = locking.snapshot_totals(conn, [lock_id])[lock_id]
    engine.dispose()
    assert reverted.status == "reverted"
    assert {n: (c.snapshotted, c.restored, c.gone) for n, c in reverted.kinds.items()} == {
        n: (t["total"], t.get("restored", 0), t.get("gone", 0)) for n, t in one_count.items()
    } == {"diary": (9, 9, 0), "photo": (9, 8, 1)}
    with sns.engine.connect() as read:
        details = {a: json.loads(d) for a, d in read.execute(
            select(audit_events.c.action, audit_events.c.details)
            .where(audit_events.c.action.in_(["apply", "revert"]))).all()}
    assert details["apply"]["kinds"]["photo"]["snapshotted"] == 9
    assert details["revert"]["kinds"]["photo"] == {"snapshotted": 9, "restored": 8, "gone": 1}


def test_a_snapshot_added_just_before_the_revert_closes_the_lock_sends_it_back_to_walk(
        sns, monkeypatch):
    # The totals are read before the closing transaction. A snapshot added in between (an
    # apply's chunk of a new item of the person, committed just then) must send the revert
    # back to walk and restore it, not close the lock over a pending snapshot.
    user = sns.users[0]
    before = sns.everything()
    sns.apply(user)
    engine, cmap = tool_session(sns)
    [lock_id] = [lk["lock_id"] for lk in sns.lock_rows()]
    counted = locking.counted_in_pieces
    added = []

    def count_then_add(*args, **kwargs):
        totals = counted(*args, **kwargs)
        if kwargs.get("by_state") and not added:
            added.append(sns.add_item("photo", user, sns.public))
            original = "original_int" if isinstance(sns.public, int) else "original_text"
            with sns.engine.begin() as conn:  # what an apply chunk commits for that item
                conn.execute(insert(snapshots).values(
                    lock_id=lock_id, kind="photo", item_id=str(added[0]),
                    state="locked", snapshotted_at="2026-01-01T00:00:00Z",
                    **{original: sns.public}))
            sns.set_vis("photo", added[0], sns.private)
        return totals

    monkeypatch.setattr(locking, "counted_in_pieces", count_then_add)
    with engine.connect() as conn:
        result = locking.revert_lock(conn, cmap, lock_id, ACTOR, Pacer(size=5))
    engine.dispose()
    assert result.status == "reverted" and len(added) == 1
    assert result.kinds["photo"].snapshotted == result.kinds["photo"].restored == 10
    assert sns.vis("photo", added[0]) == sns.public
    assert {s["state"] for s in sns.snapshot_rows()} == {"restored"}
    after = sns.everything()
    del after["photo"][added[0]]
    assert after == before


def test_apply_refuses_a_lock_whose_revert_was_interrupted_until_the_revert_finishes(sns):
    # Re-hiding items an unfinished revert restored would leave them hidden for good: their
    # snapshots are resolved, so the rest of the revert would not give them back.
    user = sns.users[0]
    before = sns.everything()
    engine, cmap, lock_id = half_reverted(sns, user)
    halfway = sns.everything()
    out = sns.run("apply", str(user), "--operator", "bob", "--ticket", "T-9", "--reason", "dup",
                  expect=1)
    assert f"lock {lock_id} of user {user} is being reverted" in out.stderr
    assert f"privacy-lock revert {lock_id}" in out.stderr
    assert sns.everything() == halfway
    with engine.connect() as conn:
        assert locking.revert_lock(conn, cmap, lock_id, ACTOR, Pacer(size=3)).status == (
            "reverted")
    engine.dispose()
    assert sns.everything() == before
    sns.apply(user)  # a new lock, as for anyone not locked
    assert [lk["state"] for lk in sns.lock_rows()] == ["reverted", "active"]
