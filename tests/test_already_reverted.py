"""`revert` of a lock (or user) that is no longer locked says it was reverted, when and by
whom, instead of only "no active lock was named"; with or without the two-person rule."""

from __future__ import annotations

import pytest

from sns import build_sns, build_sns_under_stored_policy


@pytest.mark.parametrize("two_people", [False, True])
def test_reverting_again_says_when_and_by_whom(db_url, tmp_path, two_people):
    if two_people:
        sns = build_sns_under_stored_policy(db_url, tmp_path)
    else:
        sns = build_sns(db_url, tmp_path)
    first, never = sns.users[0], sns.users[1]
    sns.apply(first)
    if two_people:
        sns.run("revert", "--user", str(first), "--operator", "alice", "--ticket", "T-2",
                "--reason", "back")
        sns.run("approve", "1", "--operator", "bob", "-q")
    else:
        sns.run("revert", "--user", str(first), "--operator", "bob", "--ticket", "T-2",
                "--reason", "back", "-q")
    [lock] = sns.lock_rows()
    assert lock["state"] == "reverted" and lock["reverted_by"] == "bob"
    events = sns.audit_count()

    when = lock["reverted_at"][:19] + "Z"
    out = sns.run("revert", "1", "--operator", "carol", "--ticket", "T-3", "--reason", "again")
    assert f"lock 1 (user {first}) was already reverted at {when} by bob" in out.stderr
    out = sns.run("revert", "--user", str(first), "--user", str(never), "--operator",
                  "carol", "--ticket", "T-3", "--reason", "again")
    assert (f"user {first} has no active lock: their last lock 1 was already reverted at "
            f"{when} by bob") in out.stderr
    assert f"user {never} has never been locked" in out.stderr
    assert sns.lock_rows() == [lock]  # nothing changed
    if two_people:
        assert sns.audit_count() == events  # no request filed
