"""The live site keeps writing while apply/revert run, in every chunk shape: no edit is lost or
mis-snapshotted, an edit the site commits while a chunk waits for its row is the one the chunk
sees, runs finish, and two operators locking the same person at once produce one lock."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import select

from helpers import (
    SHAPES,
    Shape,
    add_users,
    assert_locked_with_originals,
    assert_no_edit_lost,
    events,
    run_while_the_site_writes,
    while_the_site_holds,
)
from sns import IDENTITY, build_sns


@pytest.fixture(params=list(SHAPES))
def shape(request):
    return SHAPES[request.param]


def test_an_edit_the_site_commits_while_a_chunk_waits_is_what_gets_snapshotted(
        db_url, dialect, tmp_path, shape):
    # The site holds a row (its edit not yet committed) when the chunk reaches it; the chunk
    # must hide the row with the site's new value in its snapshot, never the old one.
    sns = shape.prepare(build_sns(db_url, tmp_path))
    user = sns.users[1]
    before = sns.everything()
    initial = sns.items_of(user)
    key = sorted(k for k, v in initial.items() if k[0] == "diary" and v == sns.public)[1]

    result = while_the_site_holds(sns, dialect, key, {"visibility": sns.friends},
                                  lambda: shape.run(sns, "apply", *sns.users))
    assert {o.status for o in result.outcomes} == {"locked"}
    outcome = result.outcomes[1]
    assert outcome.chunks > 1 if shape.name == "ranged" else outcome.chunks == 1
    assert outcome.kinds["diary"].changed == 9
    snaps = {(s["kind"], s["item_id"]): sns.original_of(s) for s in sns.snapshot_rows()}
    assert snaps[(key[0], str(key[1]))] == sns.friends
    assert {k: snaps[(k[0], str(k[1]))] for k, v in initial.items() if v != sns.private} == {
        k: sns.friends if k == key else v for k, v in initial.items() if v != sns.private}
    assert set(sns.items_of(user).values()) == {sns.private}
    before[key[0]][key[1]] = (user, sns.friends)
    assert_locked_with_originals(sns, before, sns.users)
    assert all(d["chunk_shared_by"] == shape.shared_by(3) for _a, _s, d in events(sns, "apply"))


@pytest.mark.parametrize(("shape", "edit"), [
    (SHAPES["shared"], "visibility"), (SHAPES["alone"], "title"),
    (SHAPES["ranged"], "visibility"), (SHAPES["ranged"], "title")], ids=str)
def test_an_edit_the_site_commits_while_a_revert_waits_stands(db_url, dialect, tmp_path, shape,
                                                              edit):
    # The site holds a hidden item (its edit not yet committed) when the revert reaches it.
    # Made visible, it is a conflict and keeps the site's value; with only its title edited,
    # it is still owner-only and is restored, and the title stays.
    sns = shape.prepare(build_sns(db_url, tmp_path))
    before = sns.everything()
    sns.apply(*sns.users)
    item_id = next(i for i, (owner, vis) in before["diary"].items()
                   if owner == sns.users[1] and vis == sns.public)

    changes = {"visibility": sns.friends} if edit == "visibility" else {"title": "edited"}
    result = while_the_site_holds(sns, dialect, ("diary", item_id), changes,
                                  lambda: shape.run(sns, "revert", *sns.users))
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
    assert all(d["chunk_shared_by"] == shape.shared_by(3)
               for _a, _s, d in events(sns, "revert"))


def _busy_shape(shape: Shape) -> Shape:
    """Many chunks: two users of 12 visible items per shared chunk, or slices of 5."""
    return Shape(shape.name, 5 if shape.name == "ranged" else 30, shape.share)


def test_site_edits_during_apply_are_never_lost(db_url, tmp_path, shape):
    sns = shape.prepare(build_sns(db_url, tmp_path, items_per_value=2))
    users = [*sns.users, *add_users(sns, 3)]  # several chunks of each shape
    initial = {key: v for u in users for key, v in sns.items_of(u).items()}
    result, writer = run_while_the_site_writes(sns, _busy_shape(shape), "apply", users, seed=1)
    assert {o.status for o in result.outcomes} == {"locked"}
    assert all(o.chunks > 1 if shape.name == "ranged" else o.chunks == 1
               for o in result.outcomes)
    final = {key: v for u in users for key, v in sns.items_of(u).items()}
    assert_no_edit_lost(sns, writer, initial, final)
    shared = [d["chunk_shared_by"] for _a, _s, d in events(sns, "apply")]
    assert max(shared) > 1 if shape.name == "shared" else set(shared) == {1}


def test_site_edits_during_revert_are_never_undone(db_url, tmp_path, shape):
    sns = shape.prepare(build_sns(db_url, tmp_path, items_per_value=2))
    users = [*sns.users, *add_users(sns, 3)]
    initial = {key: v for u in users for key, v in sns.items_of(u).items()}
    sns.apply(*users)
    snapped = {(s["kind"], s["item_id"]): sns.original_of(s) for s in sns.snapshot_rows()}
    result, writer = run_while_the_site_writes(sns, _busy_shape(shape), "revert", users, seed=3)
    assert {o.status for o in result.outcomes} == {"reverted"}
    shared = [d["chunk_shared_by"] for _a, _s, d in events(sns, "revert")]
    assert max(shared) > 1 if shape.name == "shared" else set(shared) == {1}
    states = {(s["kind"], s["item_id"]): s["state"] for s in sns.snapshot_rows()}
    final = {key: v for u in users for key, v in sns.items_of(u).items()}
    for key, value in final.items():
        skey = (key[0], str(key[1]))
        if key in writer.last:  # the site only writes visible values: a revert never undoes one
            assert value == writer.last[key], (key, value)
            if skey in states:
                assert states[skey] in ("restored", "conflict")
        elif skey in snapped:
            assert value == snapped[skey] and states[skey] == "restored", (key, value)
        else:
            assert value == initial[key] == sns.private
    assert writer.writes > 0 and "locked" not in states.values()  # every snapshot resolved
    assert any(s == "conflict" for s in states.values())


def test_two_operators_locking_the_same_user_at_once_make_one_lock(db_url, tmp_path):
    sns = build_sns(db_url, tmp_path, items_per_value=15)
    user = sns.users[0]
    visible = {(k, str(i)): v for (k, i), v in sns.items_of(user).items() if v != sns.private}
    cmd = [sys.executable, "-m", "privacy_lock", "--config", str(sns.config_path),
           "--database-url", sns.url, "apply", str(user), *IDENTITY, "--chunk-size", "3"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outcomes = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outcomes
    assert len(sns.lock_rows()) == 1
    snaps = sns.snapshot_rows()
    assert {(s["kind"], s["item_id"]): sns.original_of(s) for s in snaps} == visible
    assert len(snaps) == len(visible)
    assert all(v == sns.private for v in sns.items_of(user).values())
    assert "events valid" in sns.run("audit", "verify").stdout
