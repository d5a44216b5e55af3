"""Two-person revert at scale: `approve` takes ranges, lists, --all-pending, --from-file and
--output; `reject` cancels pending requests; `requests --format ids`. Outcomes asserted in the
database, on every dialect."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select, update
from test_approvals import as_, request_rows, set_policy

from privacy_lock.errors import UsageError
from privacy_lock.ids import parse_id_ranges
from privacy_lock.schema import audit_events, revert_requests
from sns import build_sns


@pytest.fixture
def sns(db_url, tmp_path):
    sns = build_sns(db_url, tmp_path, init=False)
    set_policy(sns)
    sns.run("init")
    return sns


def file_requests(sns, *by: str) -> None:
    """Lock every user, then file one revert request per user, the n-th by by[n]."""
    for user in sns.users:
        sns.run("apply", str(user), *as_("carol"))
    for user, who in zip(sns.users, by, strict=False):
        sns.run("revert", "--user", str(user), *as_(who, f"T-{who}"))


def by(operator: str) -> tuple[str, ...]:
    return ("--operator", operator, "-q")


def states(sns) -> dict[int, str]:
    return {r["request_id"]: r["state"] for r in request_rows(sns)}


def lock_states(sns) -> list[str]:
    return [row["state"] for row in sns.lock_rows()]


def event_actions(sns, action: str) -> list[dict]:
    with sns.engine.connect() as conn:
        return [json.loads(d) for d in conn.execute(
            select(audit_events.c.details).where(audit_events.c.action == action)
            .order_by(audit_events.c.seq)).scalars()]


def test_a_range_and_a_list_approve_every_request_named(sns):
    before = sns.everything()
    file_requests(sns, "alice", "alice", "alice")
    sns.run("approve", "1-2,3", *by("bob"))
    assert states(sns) == {1: "done", 2: "done", 3: "done"}
    assert lock_states(sns) == ["reverted"] * 3
    assert sns.everything() == before


def test_a_range_with_your_own_requests_refuses_them_all_and_names_them(sns):
    file_requests(sns, "alice", "alice", "bob")
    hidden = sns.everything()
    # a look-alike spelling of alice is alice
    out = sns.run("approve", "1-3", *by("ＡＬＩＣＥ"), expect=2)
    assert "requests 1-2 (2) were filed by alice" in out.stderr
    assert "Traceback" not in out.output
    assert states(sns) == {1: "pending", 2: "pending", 3: "pending"}
    assert sns.everything() == hidden
    assert [e["request_id"] for e in event_actions(sns, "revert-refused")] == [1, 2]


def test_huge_backwards_and_malformed_ranges_are_usage_errors(sns):
    file_requests(sns, "alice")
    for arg in ["1-99999999999", "3-1", "1-", "x", "1--2", "４"]:
        for command in (("approve", arg, *by("bob")),
                        ("reject", arg, "--operator", "bob", "--reason", "r")):
            out = sns.run(*command, expect=2)
            assert out.stderr.count("privacy-lock: error:") == 1, out.stderr
            assert "Traceback" not in out.output
    assert states(sns) == {1: "pending"} and lock_states(sns)[0] == "active"


def test_id_ranges_are_counted_before_they_are_built():
    assert parse_id_ranges(["3", "1-2,7", "2"], "request id") == [3, 1, 2, 7]
    with pytest.raises(UsageError, match="more than the 100,000"):
        parse_id_ranges(["1-99999999999999999"], "request id")
    with pytest.raises(UsageError, match="more than the 100,000"):
        parse_id_ranges(["1-60000", "70000-130000"], "request id")


def test_all_pending_without_a_filter_needs_yes_and_leaves_your_own_out(sns):
    file_requests(sns, "alice", "bob", "alice")
    hidden = sns.everything()
    out = sns.run("approve", "--all-pending", *by("bob"), expect=2)
    assert "would approve every pending request: 2 (1, 3)" in out.stderr
    assert "--yes" in out.stderr
    assert states(sns) == {1: "pending", 2: "pending", 3: "pending"}
    assert sns.everything() == hidden

    out = sns.run("approve", "--all-pending", "--yes", *by("bob"))
    assert "left out 1 pending request(s)" in out.stderr and "(2)" in out.stderr
    assert states(sns) == {1: "done", 2: "pending", 3: "done"}
    assert lock_states(sns) == ["reverted", "active", "reverted"]
    assert not event_actions(sns, "revert-refused")  # left out, not refused

    # nothing left that bob may approve
    out = sns.run("approve", "--all-pending", "--yes", *by("bob"), expect=2)
    assert "no pending request is left that you may approve" in out.stderr


def test_all_pending_filters_by_ticket_and_requester(sns):
    file_requests(sns, "alice", "dave", "alice")
    sns.run("approve", "--all-pending", "--ticket", "T-dave", *by("bob"))
    assert states(sns) == {1: "pending", 2: "done", 3: "pending"}
    sns.run("approve", "--all-pending", "--requested-by", "Ａlice", *by("bob"))
    assert states(sns) == {1: "done", 2: "done", 3: "done"}
    out = sns.run("approve", "--all-pending", "--ticket", "T-none", *by("bob"), expect=2)
    assert "no pending request matches" in out.stderr
    out = sns.run("approve", "1", "--ticket", "T-1", *by("bob"), expect=2)
    assert "go with --all-pending" in out.stderr


def test_from_file_takes_requests_format_ids_and_csv(sns, tmp_path):
    file_requests(sns, "alice", "alice", "alice")
    ids = sns.run("requests", "--format", "ids").stdout.strip()
    assert ids == "1-3"
    (tmp_path / "ids.txt").write_text("1\n", encoding="utf-8")
    sns.run("approve", "--from-file", str(tmp_path / "ids.txt"), *by("bob"))
    assert states(sns) == {1: "done", 2: "pending", 3: "pending"}

    csv_text = sns.run("requests", "--state", "pending", "--format", "csv").stdout
    (tmp_path / "pending.csv").write_text(csv_text, encoding="utf-8")
    sns.run("approve", "--from-file", str(tmp_path / "pending.csv"), *by("bob"),
            "--output", str(tmp_path / "approved.json"))
    assert states(sns) == {1: "done", 2: "done", 3: "done"}
    written = json.loads((tmp_path / "approved.json").read_text(encoding="utf-8"))
    assert [(r["request"], r["status"], r["approved_by"]) for r in written] == [
        (2, "reverted", "bob"), (3, "reverted", "bob")]


def test_a_bad_id_file_is_refused_with_its_line(sns, tmp_path):
    file_requests(sns, "alice", "alice")
    bad = tmp_path / "bad.txt"
    bad.write_text("1\n2 x\n", encoding="utf-8")
    out = sns.run("approve", "--from-file", str(bad), *by("bob"), expect=2)
    assert "line 2:" in out.stderr and "'x'" in out.stderr
    assert states(sns) == {1: "pending", 2: "pending"}
    out = sns.run("approve", "1", "--from-file", str(bad), *by("bob"), expect=2)
    assert "name the requests one way" in out.stderr


def test_approve_output_csv_has_a_row_per_kind(sns, tmp_path):
    file_requests(sns, "alice")
    sns.run("approve", "1", *by("bob"), "--output", str(tmp_path / "out.csv"))
    lines = (tmp_path / "out.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("request,")
    assert len(lines) == 1 + len(sns.tables) and all(ln.startswith("1,") for ln in lines[1:])


def test_reject_cancels_a_pending_request_for_good(sns):
    file_requests(sns, "alice", "alice")
    hidden = sns.everything()
    out = sns.run("reject", "1", "--operator", "alice", "--reason", "wrong user", "--format",
                  "json")  # the requester may reject their own
    assert json.loads(out.stdout)[0]["status"] == "rejected"
    rows = {r["request_id"]: r for r in request_rows(sns)}
    assert rows[1]["state"] == "rejected" and rows[1]["open_lock_id"] is None
    assert rows[1]["approved_by"] is None and rows[1]["finished_at"]
    assert lock_states(sns) == ["active"] * 3 and sns.everything() == hidden
    [event] = event_actions(sns, "revert-rejected")
    assert event["request_id"] == 1 and "rejection" in event["sealed"]

    out = sns.run("approve", "1-2", *by("bob"), expect=2)
    assert "request 1 was rejected" in out.stderr
    assert states(sns) == {1: "rejected", 2: "pending"} and sns.everything() == hidden
    sns.run("reject", "1", "--operator", "bob", "--reason", "again", expect=2)
    sns.run("approve", "2", *by("bob"))
    out = sns.run("reject", "2", "--operator", "bob", "--reason", "late", expect=2)
    assert "request 2 is done" in out.stderr
    # the lock can be asked for again: a new request
    sns.run("revert", "--user", str(sns.users[0]), *as_("alice"))
    assert states(sns) == {1: "rejected", 2: "done", 3: "pending"}
    assert "events valid" in sns.run("audit", "verify").stdout


def test_reject_is_all_or_nothing_and_needs_a_reason(sns):
    file_requests(sns, "alice", "alice")
    sns.run("approve", "2", *by("bob"))
    out = sns.run("reject", "1-2", "--operator", "bob", "--reason", "x", expect=2)
    assert "request 2 is done" in out.stderr
    out = sns.run("reject", "1", "9", "--operator", "bob", "--reason", "x", expect=2)
    assert "no revert request with id 9" in out.stderr
    out = sns.run("reject", "1", "--operator", "bob", expect=2)
    assert "--reason required" in out.stderr
    assert states(sns) == {1: "pending", 2: "done"}
    assert not event_actions(sns, "revert-rejected")


def test_a_rejection_reopened_by_hand_is_detected(sns):
    file_requests(sns, "alice")
    sns.run("reject", "1", "--operator", "bob", "--reason", "no")
    with sns.engine.begin() as conn:  # someone "un-rejects" it to get it approved
        conn.execute(update(revert_requests).values(state="pending", open_lock_id=1,
                                                    finished_at=None))
    hidden = sns.everything()
    out = sns.run("approve", "1", *by("bob"), expect=1)
    assert "rejected by event" in out.stderr
    assert lock_states(sns)[0] == "active" and sns.everything() == hidden
    assert states(sns) == {1: "pending"}  # not approved either
    assert sns.run("audit", "verify", expect=1).exit_code == 1


def test_a_rejected_state_written_by_hand_is_detected(sns):
    file_requests(sns, "alice")
    with sns.engine.begin() as conn:
        conn.execute(update(revert_requests).values(state="rejected", open_lock_id=None))
    out = sns.run("audit", "verify", expect=1)
    assert "rejected by no event" in out.output


def test_a_request_rejected_while_approve_looks_is_not_run(sns, monkeypatch):
    from privacy_lock import approvals

    file_requests(sns, "alice", "alice")
    hidden = sns.everything()
    checked = approvals._refuse_others_approvals

    def reject_meanwhile(ids, found, approver):
        checked(ids, found, approver)
        monkeypatch.setattr(approvals, "_refuse_others_approvals", checked)
        sns.run("reject", "1", "--operator", "dave", "--reason", "stop")  # another desk

    monkeypatch.setattr(approvals, "_refuse_others_approvals", reject_meanwhile)
    out = sns.run("approve", "1", *by("bob"), expect=2)
    assert "request 1 was rejected meanwhile" in out.stderr
    assert states(sns) == {1: "rejected", 2: "pending"}
    assert lock_states(sns)[0] == "active" and sns.everything() == hidden
    assert not event_actions(sns, "revert-approved")


def test_many_rejections_are_written_in_parts_of_one_transaction(sns, monkeypatch):
    from privacy_lock import approvals

    monkeypatch.setattr(approvals, "APPROVE_IN_ONE", 1)  # a part per request
    file_requests(sns, "alice", "alice", "alice")
    sns.run("reject", "1-3", "--operator", "bob", "--reason", "batch of mistakes")
    assert states(sns) == {1: "rejected", 2: "rejected", 3: "rejected"}
    assert [e["request_id"] for e in event_actions(sns, "revert-rejected")] == [1, 2, 3]
    out = sns.run("audit", "verify")
    assert "seals:" in out.stdout and "match the tables" in out.stdout
