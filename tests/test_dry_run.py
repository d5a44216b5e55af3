"""--dry-run counts exactly what a real run would change, the same in every chunk shape, and
changes nothing (no content, lock, snapshot or event), on every dialect."""

from __future__ import annotations

import json

import pytest

from helpers import CASES, SHAPES, case_id, dry_run_every_shape, shaped_sns, snaps_of
from sns import build_sns


@pytest.fixture(params=CASES, ids=case_id)
def case(request):
    return request.param


@pytest.fixture
def shape(case):
    return SHAPES[case[0]]


@pytest.fixture
def sns(case, db_url, tmp_path):
    return shaped_sns(case, db_url, tmp_path)


def test_dry_run_counts_exactly_and_writes_nothing(sns, shape):
    user, _other, companion = sns.users
    before = sns.everything()
    audit_before = sns.audit_count()
    planned = shape.cli(sns, "apply", user, companion, extra=("--dry-run",))
    result = planned[0]
    assert all(p["dry_run"] and p["lock_id"] is None for p in planned)
    assert [p["status"] for p in planned] == ["would-lock", "would-lock"]
    assert sns.everything() == before
    assert sns.lock_rows() == [] and sns.snapshot_rows() == []
    assert sns.audit_count() == audit_before

    real = shape.cli(sns, "apply", user, companion)
    for kind in ("diary", "photo"):
        assert result["kinds"][kind]["changed"] == real[0]["kinds"][kind]["changed"] == 9
        assert result["kinds"][kind]["already_private"] == 3
    assert [p["kinds"] for p in planned] == [
        {k: {**c, "snapshotted": 0} for k, c in r["kinds"].items()} for r in real]

    ids = {str(i): i for i in sns.rows("photo")}
    photo_snaps = [s for s in snaps_of(sns, user) if s["kind"] == "photo"]
    sns.set_vis("photo", ids[photo_snaps[0]["item_id"]], sns.public)
    sns.delete("photo", ids[photo_snaps[1]["item_id"]])
    state = sns.everything()
    audit_before = sns.audit_count()
    reverts = shape.cli(sns, "revert", user, companion, extra=("--dry-run",))
    plan = reverts[0]
    assert plan["kinds"]["photo"] == {**plan["kinds"]["photo"], "restored": 7, "conflicts": 1,
                                      "gone": 1}
    assert plan["kinds"]["diary"]["restored"] == 9
    assert sns.everything() == state and sns.audit_count() == audit_before
    assert {s["state"] for s in sns.snapshot_rows()} == {"locked"}

    done = shape.cli(sns, "revert", user, companion)
    counted = ("restored", "conflicts", "gone")
    assert [{k: [c[n] for n in counted] for k, c in p["kinds"].items()} for p in reverts] == [
        {k: [c[n] for n in counted] for k, c in r["kinds"].items()} for r in done]


def test_an_apply_dry_run_says_the_same_in_every_shape_and_what_a_real_run_does(db_url,
                                                                               tmp_path):
    sns = build_sns(db_url, tmp_path)
    u1, u2, u3 = sns.users
    sns.apply(u1)
    sns.set_vis("photo", next(iter(sns.items_of(u1, "photo")))[1], sns.public)
    before, audit_before = sns.everything(), sns.audit_count()
    planned = dry_run_every_shape(sns, "apply", u1, u2, u3)
    assert [(p["status"], p["kinds"]["photo"]["changed"]) for p in planned] == [
        ("would-extend", 1), ("would-lock", 9), ("would-lock", 9)]
    assert sns.everything() == before and sns.audit_count() == audit_before

    real = json.loads(sns.apply(u1, u2, u3, extra=("--format", "json")).stdout)
    assert [{k: c["changed"] for k, c in r["kinds"].items()} for r in real] == [
        {k: c["changed"] for k, c in p["kinds"].items()} for p in planned]


def test_a_revert_dry_run_says_the_same_in_every_shape_and_what_a_real_run_does(db_url,
                                                                               tmp_path):
    sns = build_sns(db_url, tmp_path)
    u1, u2, u3 = sns.users
    sns.apply(u1, u2, u3)
    snapped = {(s["kind"], s["item_id"]) for s in sns.snapshot_rows()}

    def a_snapshotted(user, kind):
        return next(i for k, i in sns.items_of(user, kind) if (k, str(i)) in snapped)

    sns.set_vis("diary", a_snapshotted(u1, "diary"), sns.friends)  # a conflict
    sns.delete("photo", a_snapshotted(u2, "photo"))  # gone
    before, audit_before = sns.everything(), sns.audit_count()
    planned = dry_run_every_shape(sns, "revert", u1, u2, u3)
    counts = {p["user"]: {k: (c["restored"], c["conflicts"], c["gone"])
                          for k, c in p["kinds"].items()} for p in planned}
    assert counts == {str(u1): {"diary": (8, 1, 0), "photo": (9, 0, 0)},
                      str(u2): {"diary": (9, 0, 0), "photo": (8, 0, 1)},
                      str(u3): {"diary": (9, 0, 0), "photo": (9, 0, 0)}}
    assert {p["status"] for p in planned} == {"would-revert"}
    assert sns.everything() == before and sns.audit_count() == audit_before

    sns.revert_user(u1, u2, u3)
    subject = {lk["lock_id"]: lk["subject"] for lk in sns.lock_rows()}
    states: dict = {}
    for s in sns.snapshot_rows():
        states.setdefault(subject[s["lock_id"]], {}).setdefault(s["kind"], [0, 0, 0])[
            ("restored", "conflict", "gone").index(s["state"])] += 1
    assert {u: {k: tuple(v) for k, v in kinds.items()} for u, kinds in states.items()} == counts
