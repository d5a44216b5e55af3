"""Several small users in one chunk (grouped.py): the same end state, snapshots and outcomes as
user by user, each user whole in one transaction, and the per-user way whenever a group fails."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import OperationalError

from privacy_lock import batch, grouped
from privacy_lock.audit import Actor
from privacy_lock.pacing import Pacer
from privacy_lock.requests import Request
from privacy_lock.schema import audit_events
from sns import IDENTITY, build_sns, tool_session
from test_chunk_paths import half_reverted
from test_concurrency import (
    SiteWriter,
    assert_no_edit_lost,
    while_the_site_holds,
    widen_race_window,
)


def events(sns, action=None):
    """(action, subject, details) of every event, in chain order."""
    query = select(audit_events.c.action, audit_events.c.subject, audit_events.c.details)
    if action:
        query = query.where(audit_events.c.action == action)
    with sns.engine.connect() as conn:
        rows = conn.execute(query.order_by(audit_events.c.seq)).all()
    return [(a, s, json.loads(d)) for a, s, d in rows]


def requests_for(*users):
    return [Request(line=0, user_id=str(u), lock_id=None, ticket="T-1", reason="test",
                    operator="tester", kinds=()) for u in users]


def assert_locked_with_originals(sns, before, users):
    """Every item of ``users`` is owner-only, and each one that was visible has exactly one
    snapshot, holding its original, in the lock of its own owner."""
    lock_subject = {r["lock_id"]: r["subject"] for r in sns.lock_rows()}
    snaps = {(s["kind"], s["item_id"]): s for s in sns.snapshot_rows()}
    for kind, rows in before.items():
        for item_id, (owner, vis) in rows.items():
            if owner not in users:
                assert (kind, str(item_id)) not in snaps
                continue
            assert sns.vis(kind, item_id) == sns.private
            if vis == sns.private:
                assert (kind, str(item_id)) not in snaps
            else:
                snap = snaps[(kind, str(item_id))]
                assert sns.original_of(snap) == vis
                assert lock_subject[snap["lock_id"]] == str(owner)
    assert len(snaps) == len(sns.snapshot_rows())


@pytest.mark.parametrize(("id_style", "vis_style"), [("int", "text"), ("uuid", "code")])
def test_small_users_share_one_chunk_and_keep_every_original(db_url, tmp_path, id_style,
                                                              vis_style):
    sns = build_sns(db_url, tmp_path, id_style=id_style, vis_style=vis_style)
    before = sns.everything()
    out = sns.run("apply", *map(str, sns.users), *IDENTITY, "--chunk-size", "100",
                  "--format", "json")
    assert_locked_with_originals(sns, before, sns.users)
    results = json.loads(out.stdout)
    assert [(r["user"], r["status"], r["chunks"]) for r in results] == [
        (str(u), "locked", 1) for u in sns.users]
    assert all(r["kinds"]["diary"]["changed"] == 9 and r["kinds"]["photo"]["changed"] == 9
               and r["kinds"]["diary"]["already_private"] == 3 for r in results)
    assert "1 chunk," in out.stderr.splitlines()[-1]
    trail = events(sns)
    assert [(a, s) for a, s, _d in trail] == [
        (a, str(u)) for u in sns.users for a in ("lock", "apply")]
    assert all(d["chunk_shared_by"] == 3 for a, _s, d in trail if a == "apply")
    assert "events valid" in sns.run("audit", "verify").stdout

    sns.revert_user(*sns.users)
    assert sns.everything() == before


def test_a_shared_chunk_extends_locks_and_never_overwrites_an_original(db_url, tmp_path):
    sns = build_sns(db_url, tmp_path)
    u1, u2, u3 = sns.users
    before = sns.everything()
    sns.apply(u1, u3)
    reopened = next(i for (k, i), v in sns.items_of(u1, "diary").items()
                    if before["diary"][i][1] == sns.public)
    sns.set_vis("diary", reopened, sns.friends)  # the site shows one item again
    out = sns.run("apply", str(u1), str(u2), str(u3), *IDENTITY, "--format", "json")
    outcome = {r["user"]: r for r in json.loads(out.stdout)}
    assert {u: r["status"] for u, r in outcome.items()} == {
        str(u1): "extended", str(u2): "locked", str(u3): "already-locked"}
    assert outcome[str(u1)]["kinds"]["diary"]["changed"] == 1
    assert outcome[str(u1)]["kinds"]["diary"]["snapshotted"] == 9  # no second snapshot
    assert_locked_with_originals(sns, before, sns.users)  # the original is still "public"
    assert len(sns.lock_rows()) == 3

    sns.revert_user(u1, u2, u3)
    assert sns.everything() == before


def test_bigger_users_go_one_by_one_and_the_outcomes_keep_file_order(db_url, tmp_path):
    sns = build_sns(db_url, tmp_path)
    u1, u2, u3 = sns.users
    for _ in range(30):
        sns.add_item("diary", u2, sns.public)
    before = sns.everything()
    path = tmp_path / "req.csv"
    path.write_text(f"user_id\n{u1}\n{u3}\n{u2}\n", encoding="utf-8")
    out = sns.run("apply", "--from-file", str(path), *IDENTITY, "--chunk-size", "40",
                  "--format", "json")
    assert [r["user"] for r in json.loads(out.stdout)] == [str(u1), str(u3), str(u2)]
    assert_locked_with_originals(sns, before, sns.users)
    shared = {s: d.get("chunk_shared_by") for a, s, d in events(sns, "apply")}
    assert shared == {str(u1): 2, str(u3): 2, str(u2): None}
    hides = [s for a, s, _d in events(sns, "hide")]
    assert hides == [str(u2), str(u2)]  # its 39 diaries in one chunk of 40, its 9 photos


def test_a_group_that_no_longer_fits_rolls_back_whole(db_url, tmp_path):
    sns = build_sns(db_url, tmp_path)
    before, audit_before = sns.everything(), sns.audit_count()
    engine, cmap = tool_session(sns)
    actor = Actor.current("tester", "T-1", "test")
    kinds = list(cmap.kinds.values())
    try:
        with engine.connect() as conn:
            with conn.begin():
                plans = grouped.plan_apply(conn, cmap, [(str(u), kinds, actor)
                                                        for u in sns.users])
            group = [plans[str(u)] for u in sns.users]
            with pytest.raises(grouped.StaleGroup):
                Pacer().chunk(conn, lambda: grouped.apply_group(conn, cmap, group, 50))
    finally:
        engine.dispose()
    # The photos did not fit after the diaries: the locks it opened and the diaries it
    # snapshotted and hid went back with the rest.
    assert sns.everything() == before
    assert sns.lock_rows() == [] and sns.snapshot_rows() == []
    assert sns.audit_count() == audit_before


def test_when_a_group_fails_each_of_its_users_goes_one_by_one(db_url, tmp_path, monkeypatch):
    sns = build_sns(db_url, tmp_path)
    before = sns.everything()

    def fail(*_args):
        raise grouped.StaleGroup("as if the site had added items since the plan")

    monkeypatch.setattr(grouped, "apply_group", fail)
    out = sns.run("apply", *map(str, sns.users), *IDENTITY, "--format", "json")
    assert {r["status"] for r in json.loads(out.stdout)} == {"locked"}
    assert "3 users could not share a chunk (as if the site" in out.stderr
    assert_locked_with_originals(sns, before, sns.users)
    assert all(d.get("chunk_shared_by") is None for _a, _s, d in events(sns, "apply"))


def test_a_crash_inside_a_shared_chunk_leaves_nothing_then_a_rerun_finishes(
        db_url, tmp_path, monkeypatch):
    sns = build_sns(db_url, tmp_path)
    before, audit_before = sns.everything(), sns.audit_count()

    def crash(*_args):
        raise KeyboardInterrupt  # the process dies after the UPDATE, before the commit

    monkeypatch.setattr(grouped, "append_events", crash)
    engine, cmap = tool_session(sns)
    try:
        with engine.connect() as conn, pytest.raises(KeyboardInterrupt):
            batch.run_batch(conn, cmap, "apply", requests_for(*sns.users), Pacer())
    finally:
        engine.dispose()
    assert sns.everything() == before
    assert sns.lock_rows() == [] and sns.snapshot_rows() == []
    assert sns.audit_count() == audit_before

    monkeypatch.undo()
    sns.apply(*sns.users)
    assert_locked_with_originals(sns, before, sns.users)
    assert "events valid" in sns.run("audit", "verify").stdout


def add_users(sns, count):
    """``count`` more users (ids 10, 11, ...) with one diary and one photo of each value."""
    users = list(range(10, 10 + count))
    with sns.engine.begin() as conn:
        conn.execute(insert(sns.tables["diary"].metadata.tables["users"]),
                     [{"id": u, "name": f"user {u}"} for u in users])
    for user in users:
        for value in sns.values:
            sns.add_item("diary", user, value)
            sns.add_item("photo", user, value)
    return users


def batch_while_the_site_writes(sns, users, mode, seed):
    """Run ``mode`` for ``users`` as one batch (chunks of 30, so several shared chunks) while
    the site keeps editing their items; (the batch result, the site writer)."""
    keys = sorted((key for u in users for key in sns.items_of(u)), key=str)
    engine, cmap = tool_session(sns)
    widen_race_window(engine)
    writer = SiteWriter(sns, keys, seed=seed)
    writer.start()
    try:
        with engine.connect() as conn:
            result = batch.run_batch(conn, cmap, mode, requests_for(*users), Pacer(size=30))
    finally:
        writer.finish()
        engine.dispose()
    return result, writer


def test_site_edits_during_shared_chunks_are_never_lost(db_url, tmp_path):
    sns = build_sns(db_url, tmp_path, items_per_value=2)
    users = [*sns.users, *add_users(sns, 12)]  # several shared chunks
    initial = {key: v for u in users for key, v in sns.items_of(u).items()}
    result, writer = batch_while_the_site_writes(sns, users, "apply", seed=2)
    assert {o.status for o in result.outcomes} == {"locked"}
    final = {key: v for u in users for key, v in sns.items_of(u).items()}
    assert_no_edit_lost(sns, writer, initial, final)
    shared = [d.get("chunk_shared_by") for _a, _s, d in events(sns, "apply")]
    assert max(s or 0 for s in shared) > 1


def test_site_edits_during_a_shared_revert_are_never_undone(db_url, tmp_path):
    sns = build_sns(db_url, tmp_path, items_per_value=2)
    users = [*sns.users, *add_users(sns, 12)]
    initial = {key: v for u in users for key, v in sns.items_of(u).items()}
    sns.apply(*users)
    snapped = {(s["kind"], s["item_id"]): sns.original_of(s) for s in sns.snapshot_rows()}
    result, writer = batch_while_the_site_writes(sns, users, "revert", seed=3)
    assert {o.status for o in result.outcomes} == {"reverted"}
    assert max(d.get("chunk_shared_by") or 0 for _a, _s, d in events(sns, "revert")) > 1
    states = {(s["kind"], s["item_id"]): s["state"] for s in sns.snapshot_rows()}
    final = {key: v for u in users for key, v in sns.items_of(u).items()}
    for key, value in final.items():
        skey = (key[0], str(key[1]))
        if key in writer.last:  # the site only writes visible values: a revert never undoes one
            assert value == writer.last[key], (key, value)
        elif skey in snapped:
            assert value == snapped[skey] and states[skey] == "restored", (key, value)
        else:
            assert value == initial[key] == sns.private
    assert writer.writes > 0 and "locked" not in states.values()  # every snapshot resolved


def test_an_edit_the_site_commits_while_a_shared_chunk_waits_is_what_gets_snapshotted(
        db_url, dialect, tmp_path):
    # The site holds a row (its edit not yet committed) when the shared chunk reaches it; the
    # chunk must hide the row with the site's new value in its snapshot, never the old one.
    sns = build_sns(db_url, tmp_path)
    before = sns.everything()
    kind = "diary"
    item_id = next(key[1] for key, value in sns.items_of(sns.users[1], kind).items()
                   if value == sns.public)
    engine, cmap = tool_session(sns)

    def run_batch():
        with engine.connect() as conn:
            return batch.run_batch(conn, cmap, "apply", requests_for(*sns.users),
                                   Pacer(size=100))

    result = while_the_site_holds(sns, dialect, (kind, item_id), {"visibility": sns.friends},
                                  run_batch)
    engine.dispose()
    assert {o.status for o in result.outcomes} == {"locked"}
    before[kind][item_id] = (before[kind][item_id][0], sns.friends)
    assert_locked_with_originals(sns, before, sns.users)
    assert max(d.get("chunk_shared_by") or 0 for _a, _s, d in events(sns, "apply")) > 1


@pytest.mark.parametrize("edit", ["visibility", "title"])
def test_an_edit_the_site_commits_while_a_shared_revert_waits_stands(db_url, dialect, tmp_path,
                                                                     edit):
    # The site holds a hidden item (its edit not yet committed) when the shared revert reaches
    # it. Made visible, it is a conflict and keeps the site's value; with only its title
    # edited, it is still owner-only and is restored, and the title stays.
    sns = build_sns(db_url, tmp_path)
    before = sns.everything()
    sns.apply(*sns.users)
    item_id = next(i for i, (owner, vis) in before["diary"].items()
                   if owner == sns.users[1] and vis == sns.public)
    engine, cmap = tool_session(sns)

    def run_batch():
        with engine.connect() as conn:
            return batch.run_batch(conn, cmap, "revert", requests_for(*sns.users),
                                   Pacer(size=100))

    changes = {"visibility": sns.friends} if edit == "visibility" else {"title": "edited"}
    result = while_the_site_holds(sns, dialect, ("diary", item_id), changes, run_batch)
    engine.dispose()
    assert {o.status for o in result.outcomes} == {"reverted"}
    diary = {o.user: o.kinds["diary"] for o in result.outcomes}
    conflicts = 1 if edit == "visibility" else 0
    assert (diary[str(sns.users[1])].restored, diary[str(sns.users[1])].conflicts) == (
        8 + 1 - conflicts, conflicts)
    expected = {k: dict(rows) for k, rows in before.items()}
    if edit == "visibility":
        expected["diary"][item_id] = (sns.users[1], sns.friends)
    assert sns.everything() == expected
    state = {s["item_id"]: s["state"] for s in sns.snapshot_rows() if s["kind"] == "diary"}
    assert state[str(item_id)] == ("conflict" if edit == "visibility" else "restored")
    with sns.engine.connect() as conn:
        diaries = sns.tables["diary"]
        title = conn.execute(select(diaries.c.title).where(diaries.c.id == item_id)).scalar()
    assert title == ("edited" if edit == "title" else None)
    assert max(d.get("chunk_shared_by") or 0 for _a, _s, d in events(sns, "revert")) > 1


def test_one_user_per_chunk_keeps_every_transaction_inside_one_user(db_url, tmp_path):
    sns = build_sns(db_url, tmp_path)
    text = sns.config_path.read_text(encoding="utf-8")
    sns.config_path.write_text("[database]\none_user_per_chunk = true\n\n" + text,
                               encoding="utf-8")
    before = sns.everything()
    sns.apply(*sns.users)
    assert_locked_with_originals(sns, before, sns.users)
    assert all("chunk_shared_by" not in d for _a, _s, d in events(sns, "apply"))
    assert {s for _a, s, _d in events(sns, "hide")} == {str(u) for u in sns.users}


def dry_run_both_ways(sns, mode, *users):
    """The outcomes of a dry run of ``users`` counted together, checked equal to one by one."""
    engine, cmap = tool_session(sns)
    try:
        with engine.connect() as conn:
            grouped_run, one_by_one = (
                batch.run_batch(conn, cmap, mode, requests_for(*users), Pacer(),
                                dry_run=True, share_chunks=share)
                for share in (True, False))
            planned = [o.as_dict() for o in grouped_run.outcomes]
            assert planned == [o.as_dict() for o in one_by_one.outcomes]
    finally:
        engine.dispose()
    return planned


def test_a_grouped_dry_run_says_what_one_by_one_would(db_url, tmp_path):
    sns = build_sns(db_url, tmp_path)
    u1, u2, u3 = sns.users
    sns.apply(u1)
    sns.set_vis("photo", next(iter(sns.items_of(u1, "photo")))[1], sns.public)
    before, audit_before = sns.everything(), sns.audit_count()
    planned = dry_run_both_ways(sns, "apply", u1, u2, u3)
    assert [(p["status"], p["kinds"]["photo"]["changed"]) for p in planned] == [
        ("would-extend", 1), ("would-lock", 9), ("would-lock", 9)]
    assert sns.everything() == before and sns.audit_count() == audit_before


def test_a_grouped_revert_dry_run_says_what_one_by_one_would(db_url, tmp_path):
    sns = build_sns(db_url, tmp_path)
    u1, u2, u3 = sns.users
    sns.apply(u1, u2, u3)
    snapped = {(s["kind"], s["item_id"]) for s in sns.snapshot_rows()}

    def a_snapshotted(user, kind):
        return next(i for k, i in sns.items_of(user, kind) if (k, str(i)) in snapped)

    sns.set_vis("diary", a_snapshotted(u1, "diary"), sns.friends)  # a conflict
    sns.delete("photo", a_snapshotted(u2, "photo"))  # gone
    before, audit_before = sns.everything(), sns.audit_count()
    planned = dry_run_both_ways(sns, "revert", u1, u2, u3)
    counts = {p["user"]: {k: (c["restored"], c["conflicts"], c["gone"])
                          for k, c in p["kinds"].items()} for p in planned}
    assert counts == {str(u1): {"diary": (8, 1, 0), "photo": (9, 0, 0)},
                      str(u2): {"diary": (9, 0, 0), "photo": (8, 0, 1)},
                      str(u3): {"diary": (9, 0, 0), "photo": (9, 0, 0)}}
    assert {p["status"] for p in planned} == {"would-revert"}
    assert sns.everything() == before and sns.audit_count() == audit_before


def test_a_shared_revert_restores_each_item_or_reports_it_conflicting_or_gone(db_url, tmp_path):
    sns = build_sns(db_url, tmp_path)
    u1, u2, u3 = sns.users
    before = sns.everything()
    sns.apply(u1, u2, u3)
    was_public = [i for i, (owner, vis) in before["diary"].items() if vis == sns.public]
    changed = next(i for i in was_public if before["diary"][i][0] == u1)
    deleted = next(i for i in was_public if before["diary"][i][0] == u2)
    moved = next(i for i in was_public if before["diary"][i][0] == u3)
    sns.set_vis("diary", changed, sns.friends)  # someone changed it after the lock
    sns.delete("diary", deleted)
    diaries, (id_col, owner_col, _vis) = sns.tables["diary"], sns.columns["diary"]
    with sns.engine.begin() as conn:  # now somebody else's (u1 has no snapshot of it)
        conn.execute(diaries.update().where(diaries.c[id_col] == moved).values({owner_col: u1}))
    path = tmp_path / "back.csv"
    path.write_text(f"user_id\n{u1}\n{u2}\n{u3}\n", encoding="utf-8")
    out = sns.run("revert", "--from-file", str(path), *IDENTITY, "--format", "json")
    outcome = {r["user"]: r for r in json.loads(out.stdout)}
    assert {u: r["status"] for u, r in outcome.items()} == dict.fromkeys(map(str, sns.users),
                                                                          "reverted")
    assert outcome[str(u1)]["kinds"]["diary"] | {"snapshotted": 9} == {
        "changed": 0, "already_private": 0, "snapshotted": 9, "restored": 8, "conflicts": 1,
        "gone": 0}
    assert outcome[str(u2)]["kinds"]["diary"]["gone"] == 1
    assert outcome[str(u3)]["kinds"]["diary"]["gone"] == 1
    after = sns.everything()
    for kind, rows in before.items():
        for item_id, (owner, vis) in rows.items():
            if (kind, item_id) == ("diary", changed):
                assert after[kind][item_id] == (owner, sns.friends)  # the edit stands
            elif (kind, item_id) == ("diary", moved):
                assert after[kind][item_id] == (u1, sns.private)  # not u3's any more
            elif (kind, item_id) != ("diary", deleted):
                assert after[kind][item_id] == (owner, vis)
    assert {r["state"] for r in sns.lock_rows()} == {"reverted"}
    assert not [s for s in sns.snapshot_rows() if s["state"] == "locked"]
    reverts = events(sns, "revert")
    assert [s for _a, s, _d in reverts] == [str(u) for u in sns.users]
    assert all(d["chunk_shared_by"] == 3 for _a, _s, d in reverts)
    assert events(sns, "restore") == []
    assert "events valid" in sns.run("audit", "verify").stdout


def test_a_lock_named_twice_is_reverted_once(db_url, tmp_path):
    sns = build_sns(db_url, tmp_path)
    u1, u2, _u3 = sns.users
    before = sns.everything()
    sns.apply(u1, u2)
    lock_u1 = next(r["lock_id"] for r in sns.lock_rows() if r["subject"] == str(u1))
    path = tmp_path / "back.csv"
    path.write_text(f"user_id,lock_id\n{u1},\n,{lock_u1}\n{u2},\n", encoding="utf-8")
    out = sns.run("revert", "--from-file", str(path), *IDENTITY, "--format", "json")
    assert [r["status"] for r in json.loads(out.stdout)] == ["reverted", "not-locked",
                                                             "reverted"]
    assert sns.everything() == before
    assert len(events(sns, "revert")) == 2


def test_a_crash_inside_a_shared_revert_leaves_every_lock_as_it_was(db_url, tmp_path,
                                                                    monkeypatch):
    sns = build_sns(db_url, tmp_path)
    before = sns.everything()
    sns.apply(*sns.users)
    locked, snapshots_then = sns.everything(), sns.snapshot_rows()
    audit_then = sns.audit_count()

    def crash(*_args):
        raise KeyboardInterrupt

    monkeypatch.setattr(grouped, "append_events", crash)
    engine, cmap = tool_session(sns)
    try:
        with engine.connect() as conn, pytest.raises(KeyboardInterrupt):
            requests = [Request(0, str(u), None, "T-1", "test", "tester", ())
                        for u in sns.users]
            batch.run_batch(conn, cmap, "revert", requests, Pacer())
    finally:
        engine.dispose()
    assert sns.everything() == locked and sns.snapshot_rows() == snapshots_then
    assert {r["state"] for r in sns.lock_rows()} == {"active"}
    assert sns.audit_count() == audit_then
    monkeypatch.undo()
    sns.revert_user(*sns.users)
    assert sns.everything() == before


def test_a_database_that_refuses_shared_chunks_gets_one_user_per_chunk(db_url, tmp_path,
                                                                      monkeypatch):
    sns = build_sns(db_url, tmp_path)
    users = add_users(sns, 6)  # weights 7: groups of 2 at --chunk-size 15
    before = sns.everything()
    calls = []

    def refused(*_args):
        calls.append(1)
        raise OperationalError("UPDATE privacy_lock_audit_head ...", {},
                               Exception("permission denied for table privacy_lock_audit_head"))

    monkeypatch.setattr(grouped, "apply_group", refused)
    out = sns.run("apply", *map(str, users), *IDENTITY, "--chunk-size", "15")
    assert len(calls) == 1  # not tried again for every group
    assert out.stderr.count("users cannot share chunks here (database error: permission "
                            "denied") == 1
    assert "doing the rest of the batch one by one" in out.stderr
    assert_locked_with_originals(sns, before, users)


def test_a_batch_apply_leaves_a_user_whose_revert_is_unfinished_to_fail_alone(db_url, tmp_path):
    sns = build_sns(db_url, tmp_path)
    u1, u2, u3 = sns.users
    engine, _cmap, lock_id = half_reverted(sns, u1)
    engine.dispose()
    halfway = {k: {i: r for i, r in rows.items() if r[0] == u1}
               for k, rows in sns.everything().items()}
    out = sns.run("apply", str(u1), str(u2), str(u3), *IDENTITY, "--format", "json",
                  "--dry-run", expect=1)
    assert [r["status"] for r in json.loads(out.stdout)] == ["failed", "would-lock",
                                                             "would-lock"]
    out = sns.run("apply", str(u1), str(u2), str(u3), *IDENTITY, "--format", "json", expect=1)
    outcome = {r["user"]: r for r in json.loads(out.stdout)}
    assert {u: r["status"] for u, r in outcome.items()} == {
        str(u1): "failed", str(u2): "locked", str(u3): "locked"}
    assert "is being reverted" in outcome[str(u1)]["error"]
    assert outcome[str(u1)]["lock_id"] == lock_id
    assert {k: {i: r for i, r in rows.items() if r[0] == u1}
            for k, rows in sns.everything().items()} == halfway
