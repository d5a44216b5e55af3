"""How the engine cuts a run into transactions, on every dialect: small users share a chunk,
each user whole in it; a user heavier than a chunk goes in ranged slices, each exactly the keys
it walked; a shared chunk that cannot run rolls back whole and its users go one by one; a
heavy lock's totals are read in short pieces before the transaction that closes it."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import OperationalError

from helpers import (
    SHAPES,
    add_users,
    assert_locked_with_originals,
    events,
    requests_for,
    run_engine,
    stop_after,
)
from privacy_lock import engine as core
from privacy_lock.dialects import for_connection
from privacy_lock.engine import Chunk, Context, plan, run_chunk
from privacy_lock.errors import StaleChunk
from privacy_lock.pacing import Pacer
from privacy_lock.requests import Request
from privacy_lock.schema import audit_events, snapshots
from privacy_lock.vocabulary import utc_now
from sns import IDENTITY, build_sns, tool_session

STYLES = [("int", "text"), ("uuid", "code")]


@pytest.fixture(params=STYLES, ids=lambda s: f"{s[0]}-ids-{s[1]}-visibility")
def sns(request, db_url, tmp_path):
    id_style, vis_style = request.param
    return build_sns(db_url, tmp_path, id_style, vis_style)


def test_small_chunks_walk_everything_once(sns):
    user = sns.users[0]
    out = sns.apply(user, extra=("--chunk-size", "2", "--format", "json"))
    [result] = json.loads(out.stdout)
    assert result["chunks"] == 10  # 9 diaries + 9 photos in chunks of 2
    assert all(v == sns.private for v in sns.items_of(user).values())
    assert [a for a, _s, _d in events(sns)] == ["lock", *["hide"] * 10, "apply"]
    out = sns.revert_user(user, extra=("--chunk-size", "4", "--format", "json"))
    assert json.loads(out.stdout)[0]["kinds"]["diary"]["restored"] == 9


def test_bigger_users_go_one_by_one_and_the_outcomes_keep_file_order(db_url, tmp_path):
    sns = build_sns(db_url, tmp_path)
    u1, u2, u3 = sns.users
    with sns.engine.begin() as conn:  # 30 more public diaries: 39 visible
        conn.execute(insert(sns.tables["diary"]), [{"user_id": u2, "visibility": sns.public}] * 30)
    before = sns.everything()
    path = tmp_path / "req.csv"
    path.write_text(f"user_id\n{u1}\n{u3}\n{u2}\n", encoding="utf-8")
    out = sns.run("apply", "--from-file", str(path), *IDENTITY, "--chunk-size", "40",
                  "--format", "json")
    assert [r["user"] for r in json.loads(out.stdout)] == [str(u1), str(u3), str(u2)]
    assert_locked_with_originals(sns, before, sns.users)
    shared = {s: d.get("chunk_shared_by") for a, s, d in events(sns, "apply")}
    assert shared == {str(u1): 2, str(u3): 2, str(u2): 1}  # u2 closed alone
    hides = [s for a, s, _d in events(sns, "hide")]
    assert hides == [str(u2), str(u2)]  # its 39 diaries in one chunk of 40, its 9 photos


def test_a_shared_chunk_that_no_longer_fits_rolls_back_whole(db_url, tmp_path):
    sns = build_sns(db_url, tmp_path)
    before, audit_before = sns.everything(), sns.audit_count()
    engine, cmap = tool_session(sns)
    try:
        with engine.connect() as conn:
            ctx = Context(conn, cmap, "apply", Pacer(size=50), for_connection(conn))
            works = plan(ctx, requests_for(*sns.users))
            with pytest.raises(StaleChunk):
                ctx.pacer.chunk(conn, lambda: run_chunk(ctx, Chunk(works)))
    finally:
        engine.dispose()
    # The photos did not fit after the diaries: the locks it opened and the diaries it
    # snapshotted and hid went back with the rest.
    assert sns.everything() == before
    assert sns.lock_rows() == [] and sns.snapshot_rows() == []
    assert sns.audit_count() == audit_before


def test_when_a_shared_chunk_fails_each_of_its_users_goes_one_by_one(db_url, tmp_path,
                                                                    monkeypatch):
    sns = build_sns(db_url, tmp_path)
    before = sns.everything()
    real = core.run_chunk

    def fail_shared(ctx, chunk):
        if len(chunk.works) > 1:
            raise StaleChunk("as if the site had added items since the plan")
        return real(ctx, chunk)

    monkeypatch.setattr(core, "run_chunk", fail_shared)
    out = sns.run("apply", *map(str, sns.users), *IDENTITY, "--format", "json")
    assert {r["status"] for r in json.loads(out.stdout)} == {"locked"}
    assert_locked_with_originals(sns, before, sns.users)
    # each went in a transaction of its own: lock, apply, shared by nobody
    assert [(a, s) for a, s, _d in events(sns)] == [
        (a, str(u)) for u in sns.users for a in ("lock", "apply")]
    assert all(d["chunk_shared_by"] == 1 for _a, _s, d in events(sns, "apply"))


def test_a_database_that_refuses_shared_chunks_gets_one_user_per_chunk(db_url, tmp_path,
                                                                      monkeypatch):
    sns = build_sns(db_url, tmp_path)
    users = add_users(sns, 6)  # weights 7: groups of 2 at --chunk-size 15
    before = sns.everything()
    calls = []
    real = core.run_chunk

    def refused(ctx, chunk):
        if len(chunk.works) > 1:
            calls.append(1)
            raise OperationalError("UPDATE privacy_lock_audit_head ...", {}, Exception(
                "permission denied for table privacy_lock_audit_head"))
        return real(ctx, chunk)

    monkeypatch.setattr(core, "run_chunk", refused)
    out = sns.run("apply", *map(str, users), *IDENTITY, "--chunk-size", "15",
                  "--format", "json")
    assert len(calls) == 1  # not tried again for every group
    assert {r["status"] for r in json.loads(out.stdout)} == {"locked"}
    assert_locked_with_originals(sns, before, users)
    applies = events(sns, "apply")
    assert [s for _a, s, _d in applies] == [str(u) for u in users]
    assert all(d["chunk_shared_by"] == 1 for _a, _s, d in applies)  # one user per chunk


def test_one_user_per_chunk_keeps_every_transaction_inside_one_user(db_url, tmp_path):
    sns = SHAPES["alone"].prepare(build_sns(db_url, tmp_path))
    before = sns.everything()
    sns.apply(*sns.users)
    assert_locked_with_originals(sns, before, sns.users)
    assert all(d["chunk_shared_by"] == 1 for _a, _s, d in events(sns, "apply"))
    # each user whole in a transaction of its own: lock, apply (no hide)
    assert [(a, s) for a, s, _d in events(sns)] == [
        (a, str(u)) for u in sns.users for a in ("lock", "apply")]


def test_ctrl_c_between_chunks_interrupts_the_request_in_flight_and_starts_no_other(sns):
    # Ctrl-C stops a run between two chunks: what is committed stays, the request in flight
    # says "interrupted" (re-run to finish), the ones after it "not-started".
    u1, u2, u3 = sns.users
    others = {u: sns.items_of(u) for u in (u2, u3)}
    result = run_engine(sns, "apply", requests_for(u1, u2, u3), stop_after(2))
    assert result.interrupted
    assert [o.status for o in result.outcomes] == ["interrupted", "not-started", "not-started"]
    [lock] = sns.lock_rows()
    assert lock["subject"] == str(u1) and lock["state"] == "active"
    assert len(sns.snapshot_rows()) == 6  # its first two chunks of 3, each with its snapshots
    hidden = [k for k, v in sns.items_of(u1).items() if v == sns.private]
    assert len(hidden) == 6 + 6  # the 6 already private, and those 6
    assert [a for a, _s, _d in events(sns)] == ["lock", "hide", "hide"]
    assert {u: sns.items_of(u) for u in (u2, u3)} == others


def test_a_fresh_lock_that_holds_a_snapshot_after_all_keeps_its_original(sns):
    # A run that opened the lock inserts snapshots without ON CONFLICT on PostgreSQL; if the
    # lock does hold one of the items (another apply of the user ran meanwhile), the chunk
    # must go on, and the stored original must stay the first one.
    user = sns.users[0]
    diaries_only = Request(0, str(user), None, "T-1", "test", "tester", ("diary",))
    result = run_engine(sns, "apply", [diaries_only], Pacer(size=4))
    [outcome] = result.outcomes
    hides = [d for _a, _s, d in events(sns, "hide")]
    assert len(hides) > 1 and all(h["snapshotted"] == h["hidden"] for h in hides)
    assert sum(h["snapshotted"] for h in hides) == len(sns.snapshot_rows())
    # an item whose original differs from what the person sets now
    snap = next(s for s in sns.snapshot_rows() if sns.original_of(s) != sns.friends)
    original = sns.original_of(snap)
    item_id = next(k[1] for k in sns.items_of(user, "diary") if str(k[1]) == snap["item_id"])
    sns.set_vis("diary", item_id, sns.friends)  # the person shows it again
    engine, cmap = tool_session(sns)
    kind = cmap.kinds["diary"]
    try:
        with engine.connect() as conn, conn.begin():
            hid = for_connection(conn).hide_range(
                conn, kind, outcome.lock_id, cmap.owner_value(kind, str(user)), None, 1000,
                now=utc_now(), fresh=True)
    finally:
        engine.dispose()
    assert (hid.hidden, hid.snapshotted) == (1, 0)
    assert sns.vis("diary", item_id) == sns.private
    assert sns.original_of({s["item_id"]: s for s in sns.snapshot_rows()}[str(item_id)]) == (
        original)


@pytest.mark.parametrize("piece", [1, 4])
def test_a_locks_totals_read_in_pieces_are_the_totals_of_one_count(sns, monkeypatch, piece):
    # A heavy lock's totals are read in short pieces before the closing transaction; cut into
    # pieces of 1 or 4 rows, within a kind and across kinds, they must add up exactly.
    monkeypatch.setattr(core, "TOTALS_PIECE", piece)
    user = sns.users[0]
    [applied] = run_engine(sns, "apply", requests_for(user), Pacer(size=5)).outcomes
    lock_id = applied.lock_id
    engine, _cmap = tool_session(sns)
    try:
        with engine.connect() as conn, conn.begin():
            one_count = core.snapshot_totals(conn, [lock_id])[lock_id]
        assert {n: c.snapshotted for n, c in applied.kinds.items()} == {
            n: t["total"] for n, t in one_count.items()} == {"diary": 9, "photo": 9}
        snap = next(s for s in sns.snapshot_rows() if s["kind"] == "photo")
        item_id = next(k[1] for k in sns.items_of(user, "photo") if str(k[1]) == snap["item_id"])
        sns.delete("photo", item_id)
        [reverted] = run_engine(sns, "revert", requests_for(user), Pacer(size=5)).outcomes
        with engine.connect() as conn, conn.begin():
            one_count = core.snapshot_totals(conn, [lock_id])[lock_id]
    finally:
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
    [lock_id] = [lk["lock_id"] for lk in sns.lock_rows()]
    counted = core.counted_in_pieces
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

    monkeypatch.setattr(core, "counted_in_pieces", count_then_add)
    [result] = run_engine(sns, "revert", requests_for(user), Pacer(size=5)).outcomes
    assert result.status == "reverted" and len(added) == 1
    assert result.kinds["photo"].snapshotted == result.kinds["photo"].restored == 10
    assert sns.vis("photo", added[0]) == sns.public
    assert {s["state"] for s in sns.snapshot_rows()} == {"restored"}
    after = sns.everything()
    del after["photo"][added[0]]
    assert after == before
