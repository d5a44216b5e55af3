"""apply / revert semantics (DESIGN.md "Semantics"), asserted in the database, on every dialect."""

from __future__ import annotations

import json

import pytest

from sns import build_sns

SHAPES = [("int", "text"), ("uuid", "code")]


@pytest.fixture(params=SHAPES, ids=lambda s: f"{s[0]}-ids-{s[1]}-visibility")
def sns(request, db_url, tmp_path):
    id_style, vis_style = request.param
    return build_sns(db_url, tmp_path, id_style, vis_style)


def test_apply_then_revert_restores_every_value_exactly(sns):
    user, other = sns.users[0], sns.users[1]
    before = sns.everything()
    sns.apply(user)
    mine = sns.items_of(user)
    assert mine and all(v == sns.private for v in mine.values())
    # one snapshot per item that was not already private, holding its exact old value
    visible_before = {
        (k, i): vis for k, rows in before.items() for i, (own, vis) in rows.items()
        if own == user and vis != sns.private
    }
    snaps = sns.snapshot_rows()
    assert len(snaps) == len(visible_before)
    for snap in snaps:
        key_matches = [k for k in visible_before
                       if k[0] == snap["kind"] and str(k[1]) == snap["item_id"]]
        assert len(key_matches) == 1
        assert sns.original_of(snap) == visible_before[key_matches[0]]
        assert snap["state"] == "locked"
    # NULL ("site default") was snapshotted as NULL, not as '' or 0
    assert sum(1 for s in snaps if s["original_text"] is None and s["original_int"] is None) == 6
    assert sns.items_of(other) == {k: v[1] for k, v in _owned(before, other).items()}

    sns.revert_user(user)
    assert sns.everything() == before  # exact: values, types and NULLs
    assert {s["state"] for s in sns.snapshot_rows()} == {"restored"}
    [lock] = sns.lock_rows()
    assert lock["state"] == "reverted" and lock["active_subject"] is None


def _owned(everything, owner):
    return {(k, i): row for k, rows in everything.items() for i, row in rows.items()
            if row[0] == owner}


def test_already_private_items_are_left_alone_and_not_snapshotted(sns):
    user = sns.users[0]
    private_ids = {key for key, vis in sns.items_of(user).items() if vis == sns.private}
    sns.apply(user)
    snapped = {(s["kind"], s["item_id"]) for s in sns.snapshot_rows()}
    assert not snapped & {(k, str(i)) for k, i in private_ids}
    sns.revert_user(user)
    for kind, item_id in private_ids:
        assert sns.vis(kind, item_id) == sns.private


def test_reapply_extends_the_same_lock_without_overwriting_originals(sns):
    user = sns.users[0]
    sns.apply(user)
    [snap] = [s for s in sns.snapshot_rows()
              if s["kind"] == "diary" and sns.original_of(s) == sns.public][:1]
    item_id = next(i for i in sns.rows("diary") if str(i) == snap["item_id"])
    sns.set_vis("diary", item_id, sns.friends)          # the person (or anyone) shows it again
    new_id = sns.add_item("photo", user, sns.public)  # and posts something new
    before = len(sns.snapshot_rows())

    out = sns.apply(user, extra=("--format", "json"))
    [result] = json.loads(out.stdout)
    assert result["status"] == "extended"
    assert result["kinds"]["diary"]["changed"] == 1 and result["kinds"]["photo"]["changed"] == 1
    assert len(sns.lock_rows()) == 1
    snaps = sns.snapshot_rows()
    assert len(snaps) == before + 1  # only the new photo got a snapshot
    assert sns.vis("diary", item_id) == sns.private
    again = [s for s in snaps if s["kind"] == "diary" and s["item_id"] == snap["item_id"]]
    assert len(again) == 1 and sns.original_of(again[0]) == sns.public  # original kept
    assert sns.vis("photo", new_id) == sns.private

    sns.revert_user(user)
    assert sns.vis("diary", item_id) == sns.public
    assert sns.vis("photo", new_id) == sns.public


def test_revert_reports_conflicts_and_gone_and_never_touches_new_items(sns):
    user, other = sns.users[0], sns.users[1]
    before = sns.everything()
    sns.apply(user)
    snaps = sns.snapshot_rows()
    ids = {str(i): i for i in sns.rows("diary")}
    changed = ids[next(s["item_id"] for s in snaps if s["kind"] == "diary")]
    deleted = ids[[s["item_id"] for s in snaps if s["kind"] == "diary"][1]]
    sns.set_vis("diary", changed, sns.friends)
    sns.delete("diary", deleted)
    created = sns.add_item("diary", user, sns.private)  # made after the lock, already private
    created_visible = sns.add_item("photo", user, sns.public)
    other_before = sns.items_of(other)

    out = sns.revert_user(user, extra=("--format", "json"))
    [result] = json.loads(out.stdout)
    assert result["kinds"]["diary"]["conflicts"] == 1
    assert result["kinds"]["diary"]["gone"] == 1
    assert sns.vis("diary", changed) == sns.friends  # the later edit wins
    assert sns.vis("diary", created) == sns.private  # never touched
    assert sns.vis("photo", created_visible) == sns.public
    assert sns.items_of(other) == other_before
    states = {(s["kind"], s["item_id"]): s["state"] for s in sns.snapshot_rows()}
    assert states[("diary", str(changed))] == "conflict"
    assert states[("diary", str(deleted))] == "gone"
    assert len(states) == len(snaps)  # snapshot rows are kept
    after = sns.everything()
    for kind, rows in before.items():
        for item_id, row in rows.items():
            if item_id not in (changed, deleted):
                assert after[kind][item_id] == row


def test_dry_run_counts_exactly_and_writes_nothing(sns):
    user = sns.users[0]
    before = sns.everything()
    audit_before = sns.audit_count()
    out = sns.run("apply", str(user), "--dry-run", "--format", "json")
    [result] = json.loads(out.stdout)
    assert result["dry_run"] and result["lock_id"] is None
    assert sns.everything() == before
    assert sns.lock_rows() == [] and sns.snapshot_rows() == []
    assert sns.audit_count() == audit_before

    real = json.loads(sns.apply(user, extra=("--format", "json")).stdout)[0]
    for kind in ("diary", "photo"):
        assert result["kinds"][kind]["changed"] == real["kinds"][kind]["changed"] == 9
        assert result["kinds"][kind]["already_private"] == 3

    ids = {str(i): i for i in sns.rows("photo")}
    photo_snaps = [s for s in sns.snapshot_rows() if s["kind"] == "photo"]
    sns.set_vis("photo", ids[photo_snaps[0]["item_id"]], sns.public)
    sns.delete("photo", ids[photo_snaps[1]["item_id"]])
    state = sns.everything()
    audit_before = sns.audit_count()
    plan = json.loads(sns.run("revert", "--user", str(user), "--dry-run",
                              "--format", "json").stdout)[0]
    assert plan["kinds"]["photo"] == {**plan["kinds"]["photo"], "restored": 7, "conflicts": 1,
                                      "gone": 1}
    assert plan["kinds"]["diary"]["restored"] == 9
    assert sns.everything() == state and sns.audit_count() == audit_before
    assert {s["state"] for s in sns.snapshot_rows()} == {"locked"}


def test_only_selected_kinds_are_locked(sns):
    user = sns.users[0]
    photos_before = sns.items_of(user, "photo")
    sns.apply(user, extra=("--kind", "diary"))
    assert sns.items_of(user, "photo") == photos_before
    assert all(v == sns.private for v in sns.items_of(user, "diary").values())


def test_small_chunks_walk_everything_once(sns):
    user = sns.users[0]
    out = sns.apply(user, extra=("--chunk-size", "2", "--format", "json"))
    [result] = json.loads(out.stdout)
    assert result["chunks"] == 10  # 9 diaries + 9 photos in chunks of 2
    assert all(v == sns.private for v in sns.items_of(user).values())
    out = sns.revert_user(user, extra=("--chunk-size", "4", "--format", "json"))
    assert json.loads(out.stdout)[0]["kinds"]["diary"]["restored"] == 9


def test_revert_by_lock_id_and_second_revert_is_a_no_op(sns):
    user = sns.users[0]
    before = sns.everything()
    sns.apply(user)
    [lock] = sns.lock_rows()
    sns.run("revert", str(lock["lock_id"]), "--operator", "x", "--ticket", "T", "--reason", "r")
    assert sns.everything() == before
    out = sns.run("revert", str(lock["lock_id"]), "--operator", "x", "--ticket", "T",
                  "--reason", "r", "--format", "json")
    assert json.loads(out.stdout)[0]["status"] == "not-locked"
    assert sns.everything() == before
    # a new apply after a revert opens a new lock
    sns.apply(user)
    assert [lk["state"] for lk in sns.lock_rows()] == ["reverted", "active"]
