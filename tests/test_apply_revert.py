"""apply / revert semantics (DESIGN.md "Semantics"), asserted in the database, in every chunk
shape (helpers.Shape: ``shared``, ``alone``, ``ranged``) on every dialect.

Each scenario runs the person under test, ``user``, with a ``companion`` in the same run (so
that the ``shared`` shape really shares its chunks), and leaves ``other`` alone as a bystander.
"""

from __future__ import annotations

import json

import pytest

from helpers import (
    CASES,
    SHAPES,
    assert_locked_with_originals,
    case_id,
    events,
    half_reverted,
    owned,
    requests_for,
    run_engine,
    shaped_sns,
    snaps_of,
)
from privacy_lock.pacing import Pacer
from sns import IDENTITY

STYLES = [("int", "text"), ("uuid", "code")]
# Each statement family in both id/visibility styles: whole users (shared, alone) and ranged.
EVERY_CASE = [(shape, *style) for shape in SHAPES for style in STYLES]


@pytest.fixture(params=CASES, ids=case_id)
def case(request):
    return request.param


@pytest.fixture
def shape(case):
    return SHAPES[case[0]]


@pytest.fixture
def sns(case, db_url, tmp_path):
    return shaped_sns(case, db_url, tmp_path)


@pytest.mark.parametrize("case", EVERY_CASE, ids=case_id)
def test_apply_then_revert_restores_every_value_exactly_and_leaves_private_items_alone(sns,
                                                                                      shape):
    user, other, companion = sns.users
    before = sns.everything()
    outcomes = shape.cli(sns, "apply", user, companion)
    assert [(r["user"], r["status"]) for r in outcomes] == [
        (str(user), "locked"), (str(companion), "locked")]
    assert all(r["kinds"]["diary"]["changed"] == 9 and r["kinds"]["photo"]["changed"] == 9
               and r["kinds"]["diary"]["already_private"] == 3 for r in outcomes)
    # one transaction per user (shared: one for both), or ranged slices
    assert all((r["chunks"] > 1) if shape.name == "ranged" else (r["chunks"] == 1)
               for r in outcomes)
    mine = sns.items_of(user)
    assert mine and all(v == sns.private for v in mine.values())
    # one snapshot per item that was not already private, holding its exact old value
    visible_before = {
        (k, i): vis for k, rows in before.items() for i, (own, vis) in rows.items()
        if own == user and vis != sns.private
    }
    snaps = snaps_of(sns, user)
    assert len(snaps) == len(visible_before)
    for snap in snaps:
        key_matches = [k for k in visible_before
                       if k[0] == snap["kind"] and str(k[1]) == snap["item_id"]]
        assert len(key_matches) == 1
        assert sns.original_of(snap) == visible_before[key_matches[0]]
        assert snap["state"] == "locked"
    # NULL ("site default") was snapshotted as NULL, not as '' or 0
    assert sum(1 for s in snaps if s["original_text"] is None and s["original_int"] is None) == 6
    assert sns.items_of(other) == {k: v[1] for k, v in owned(before, other).items()}
    assert_locked_with_originals(sns, before, [user, companion])
    # items already private are left alone and not snapshotted
    private_ids = {(k, i) for (k, i), (own, vis) in owned(before, user).items()
                   if vis == sns.private}
    assert len(private_ids) == 6
    assert not {(s["kind"], s["item_id"]) for s in sns.snapshot_rows()} & {
        (k, str(i)) for k, i in private_ids}
    # the audit shape does not depend on the chunk shape: lock, (hide...,) apply per user
    for person in (user, companion):
        shape.assert_trail(sns, "apply", person)
    subjects = [s for _a, s, _d in events(sns)]  # each user's events together, in run order
    assert subjects == sorted(subjects, key=[str(user), str(companion)].index)
    assert [d["chunk_shared_by"] for _a, _s, d in events(sns, "apply")] == [
        shape.shared_by(2)] * 2
    assert "events valid" in sns.run("audit", "verify").stdout

    shape.cli(sns, "revert", user, companion)
    assert sns.everything() == before  # exact: values, types and NULLs
    for kind, item_id in private_ids:
        assert sns.vis(kind, item_id) == sns.private
    assert {s["state"] for s in sns.snapshot_rows()} == {"restored"}
    assert [(lk["state"], lk["active_subject"]) for lk in sns.lock_rows()] == [
        ("reverted", None)] * 2
    for person in (user, companion):
        shape.assert_trail(sns, "revert", person)
    assert [d["chunk_shared_by"] for _a, _s, d in events(sns, "revert")] == [
        shape.shared_by(2)] * 2


def test_reapply_extends_the_same_lock_without_overwriting_originals(sns, shape):
    user, other, companion = sns.users
    before = sns.everything()
    shape.cli(sns, "apply", user, companion)
    [snap] = [s for s in snaps_of(sns, user)
              if s["kind"] == "diary" and sns.original_of(s) == sns.public][:1]
    item_id = next(i for i in sns.rows("diary") if str(i) == snap["item_id"])
    sns.set_vis("diary", item_id, sns.friends)          # the person (or anyone) shows it again
    new_id = sns.add_item("photo", user, sns.public)  # and posts something new
    mine_before = len(snaps_of(sns, user))

    outcome = {r["user"]: r for r in shape.cli(sns, "apply", user, other, companion)}
    assert {u: r["status"] for u, r in outcome.items()} == {
        str(user): "extended", str(other): "locked", str(companion): "already-locked"}
    result = outcome[str(user)]
    assert result["kinds"]["diary"]["changed"] == 1 and result["kinds"]["photo"]["changed"] == 1
    assert result["kinds"]["diary"]["snapshotted"] == 9  # no second snapshot
    assert len([lk for lk in sns.lock_rows() if lk["subject"] == str(user)]) == 1
    assert len(sns.lock_rows()) == 3
    snaps = snaps_of(sns, user)
    assert len(snaps) == mine_before + 1  # only the new photo got a snapshot
    assert sns.vis("diary", item_id) == sns.private
    again = [s for s in snaps if s["kind"] == "diary" and s["item_id"] == snap["item_id"]]
    assert len(again) == 1 and sns.original_of(again[0]) == sns.public  # original kept
    assert sns.vis("photo", new_id) == sns.private
    assert_locked_with_originals(sns, before, sns.users)  # the original is still "public"
    # an extension is one more apply event of the same lock (no new lock event)
    applies = [(a, d) for a, s, d in events(sns) if s == str(user)]
    assert [a for a, _d in applies][-2:] == ["apply", "apply"]
    assert applies[-1][1]["status"] == "extended"
    shape.assert_trail(sns, "apply", other)

    shape.cli(sns, "revert", user, other, companion)
    assert sns.vis("diary", item_id) == sns.public
    assert sns.vis("photo", new_id) == sns.public
    after = sns.everything()
    del after["photo"][new_id]
    assert after == before


def test_revert_reports_conflicts_and_gone_and_never_touches_new_items(sns, shape, tmp_path):
    user, other, companion = sns.users
    before = sns.everything()
    shape.cli(sns, "apply", user, companion)
    snaps = sns.snapshot_rows()
    ids = {str(i): i for i in sns.rows("diary")}
    mine = [s["item_id"] for s in snaps_of(sns, user) if s["kind"] == "diary"]
    changed, deleted = ids[mine[0]], ids[mine[1]]
    moved = ids[next(s["item_id"] for s in snaps_of(sns, companion) if s["kind"] == "diary")]
    sns.set_vis("diary", changed, sns.friends)  # someone changed it after the lock
    sns.delete("diary", deleted)
    diaries, (id_col, owner_col, _vis) = sns.tables["diary"], sns.columns["diary"]
    with sns.engine.begin() as conn:  # now the user's (who has no snapshot of it)
        conn.execute(diaries.update().where(diaries.c[id_col] == moved)
                     .values({owner_col: user}))
    created = sns.add_item("diary", user, sns.private)  # made after the lock, already private
    created_visible = sns.add_item("photo", user, sns.public)
    other_before = sns.items_of(other)

    path = tmp_path / "back.csv"
    path.write_text(f"user_id\n{user}\n{companion}\n", encoding="utf-8")
    out = sns.run("revert", "--from-file", str(path), *IDENTITY, *shape.args, "--format", "json")
    outcome = {r["user"]: r for r in json.loads(out.stdout)}
    assert {u: r["status"] for u, r in outcome.items()} == {
        str(user): "reverted", str(companion): "reverted"}
    assert outcome[str(user)]["kinds"]["diary"] == {
        "changed": 0, "already_private": 0, "snapshotted": 9, "restored": 7, "conflicts": 1,
        "gone": 1}
    assert outcome[str(companion)]["kinds"]["diary"]["gone"] == 1
    assert sns.vis("diary", changed) == sns.friends  # the later edit wins
    assert sns.vis("diary", created) == sns.private  # never touched
    assert sns.vis("photo", created_visible) == sns.public
    assert sns.items_of(other) == other_before
    states = {(s["kind"], s["item_id"]): s["state"] for s in sns.snapshot_rows()}
    assert states[("diary", str(changed))] == "conflict"
    assert states[("diary", str(deleted))] == "gone"
    assert states[("diary", str(moved))] == "gone"
    assert len(states) == len(snaps)  # snapshot rows are kept
    assert "locked" not in states.values()
    after = sns.everything()
    for kind, rows in before.items():
        for item_id, (owner, vis) in rows.items():
            if (kind, item_id) == ("diary", changed):
                assert after[kind][item_id] == (owner, sns.friends)  # the edit stands
            elif (kind, item_id) == ("diary", moved):
                assert after[kind][item_id] == (user, sns.private)  # not the companion's now
            elif (kind, item_id) != ("diary", deleted):
                assert after[kind][item_id] == (owner, vis)
    assert {r["state"] for r in sns.lock_rows()} == {"reverted"}
    reverts = events(sns, "revert")
    assert [s for _a, s, _d in reverts] == [str(user), str(companion)]
    assert all(d["chunk_shared_by"] == shape.shared_by(2) for _a, _s, d in reverts)
    for person in (user, companion):
        shape.assert_trail(sns, "revert", person)
    assert "events valid" in sns.run("audit", "verify").stdout


@pytest.mark.parametrize("case", CASES[:3], ids=case_id)
def test_only_selected_kinds_are_locked(sns, shape):
    user, _other, companion = sns.users
    photos_before = {u: sns.items_of(u, "photo") for u in (user, companion)}
    shape.cli(sns, "apply", user, companion, extra=("--kind", "diary"))
    for person in (user, companion):
        assert sns.items_of(person, "photo") == photos_before[person]
        assert all(v == sns.private for v in sns.items_of(person, "diary").values())
    assert {s["kind"] for s in sns.snapshot_rows()} == {"diary"}


def test_apply_skips_other_users_and_private_items_between_a_users_keys(sns, shape):
    user, other, companion = sns.users
    # interleave keys: the user's items alternate with another user's and with private ones
    for _ in range(4):
        sns.add_item("diary", user, sns.public)
        sns.add_item("diary", other, sns.public)
        sns.add_item("diary", user, sns.private)
        sns.add_item("diary", user, None)
    before = sns.everything()
    visible = {(k, str(i)): v for (k, i), v in sns.items_of(user).items() if v != sns.private}
    result = shape.run(sns, "apply", user, companion)
    [outcome, _] = result.outcomes
    assert outcome.status == "locked"
    assert outcome.chunks > 3 if shape.name == "ranged" else outcome.chunks == 1
    snaps = snaps_of(sns, user)
    assert {(s["kind"], s["item_id"]): sns.original_of(s) for s in snaps} == visible
    assert len(snaps) == len(visible)
    assert all(v == sns.private for v in sns.items_of(user).values())
    assert sns.items_of(other) == {(k, i): row[1] for (k, i), row in owned(before, other).items()}


def test_a_resumed_revert_never_touches_items_an_earlier_run_resolved(sns, shape):
    # The first run is ranged (a revert done in one transaction cannot stop half-way); the
    # run that resumes it is of each shape.
    user, other, companion = sns.users
    before = sns.everything()
    sns.apply(companion)
    lock_id = half_reverted(sns, user)
    snaps = snaps_of(sns, user)
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

    result = shape.run(sns, "revert", user, companion)
    assert [o.status for o in result.outcomes] == ["reverted", "reverted"]
    [outcome, _] = result.outcomes
    assert outcome.lock_id == lock_id
    states = {(s["kind"], s["item_id"]): s["state"] for s in snaps_of(sns, user)}
    assert states[(kind, str(again_private))] == "restored"
    assert states[(kind, str(by_hand))] == "conflict"
    assert states[(kind, str(deleted))] == "gone"
    assert states[(kind, str(moved))] == "gone"
    assert sum(1 for s in states.values() if s == "restored") == len(snaps) - 3
    counts = outcome.kinds[kind]
    assert (counts.conflicts, counts.gone) == (1, 2)
    after = sns.everything()
    assert after[kind][again_private][1] == sns.private  # an earlier run's item: untouched
    assert after[kind][moved] == (other, sns.private)
    for k, rows in before.items():
        for item_id, row in rows.items():
            if (k, item_id) not in {(kind, again_private), (kind, deleted), (kind, moved)}:
                assert after[k][item_id] == row, (k, item_id)


def test_apply_refuses_a_lock_whose_revert_was_interrupted_until_the_revert_finishes(sns, shape):
    # Re-hiding items an unfinished revert restored would leave them hidden for good: their
    # snapshots are resolved, so the rest of the revert would not give them back. In a batch,
    # that user fails alone and the others are locked.
    user, other, companion = sns.users
    before = sns.everything()
    lock_id = half_reverted(sns, user)
    halfway = sns.everything()
    trail = events(sns)
    planned = shape.cli(sns, "apply", user, other, companion, extra=("--dry-run",), expect=1)
    assert [r["status"] for r in planned] == ["failed", "would-lock", "would-lock"]
    assert sns.everything() == halfway and events(sns) == trail
    outcome = {r["user"]: r for r in shape.cli(sns, "apply", user, other, companion, expect=1)}
    assert {u: r["status"] for u, r in outcome.items()} == {
        str(user): "failed", str(other): "locked", str(companion): "locked"}
    assert f"lock {lock_id} of user {user} is being reverted" in outcome[str(user)]["error"]
    assert f"privacy-lock revert {lock_id}" in outcome[str(user)]["error"]
    assert outcome[str(user)]["lock_id"] == lock_id
    assert owned(sns.everything(), user) == owned(halfway, user)
    assert [a for a, s, _d in events(sns) if s == str(user)] == [
        a for a, s, _d in trail if s == str(user)]  # nothing written for the refused user
    assert_locked_with_originals(sns, {k: {i: r for i, r in rows.items() if r[0] != user}
                                       for k, rows in before.items()}, [other, companion])

    reverted = run_engine(sns, "revert", requests_for(user), Pacer(size=3))
    assert [o.status for o in reverted.outcomes] == ["reverted"]
    assert owned(sns.everything(), user) == owned(before, user)
    shape.cli(sns, "apply", user)  # a new lock, as for anyone not locked
    assert [lk["state"] for lk in sns.lock_rows() if lk["subject"] == str(user)] == [
        "reverted", "active"]


@pytest.mark.parametrize("case", [("shared", "int", "text"), ("ranged", "uuid", "code")],
                         ids=case_id)
def test_revert_by_lock_id_and_second_revert_is_a_no_op(sns, shape):
    user = sns.users[0]
    before = sns.everything()
    shape.cli(sns, "apply", user)
    [lock] = sns.lock_rows()
    sns.run("revert", str(lock["lock_id"]), "--operator", "x", "--ticket", "T", "--reason", "r",
            *shape.args)
    assert sns.everything() == before
    out = sns.run("revert", str(lock["lock_id"]), "--operator", "x", "--ticket", "T",
                  "--reason", "r", "--format", "json", *shape.args)
    assert json.loads(out.stdout)[0]["status"] == "not-locked"
    assert sns.everything() == before
    assert len(events(sns, "revert")) == 1
    # a new apply after a revert opens a new lock
    shape.cli(sns, "apply", user)
    assert [lk["state"] for lk in sns.lock_rows()] == ["reverted", "active"]


@pytest.mark.parametrize("case", [("shared", "int", "text")], ids=case_id)
def test_a_lock_named_twice_is_reverted_once(sns, tmp_path):
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
