"""Two-person revert ([policy] revert_requires_approval, the default) and access logging
([policy] audit_reads), asserted in the database."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from privacy_lock import approvals, service
from privacy_lock.engine import BatchResult, Outcome
from privacy_lock.errors import UsageError
from privacy_lock.requests import Request
from privacy_lock.schema import audit_events, revert_requests
from privacy_lock.vocabulary import Status
from sns import build_sns, tool_session


def set_policy(sns, **policy: bool) -> None:
    """Replace the test config's [policy] section."""
    config = sns.config_path.read_text(encoding="utf-8").split("[policy]")[0]
    lines = "".join(f"{k} = {'true' if v else 'false'}\n" for k, v in policy.items())
    sns.config_path.write_text(config + ("[policy]\n" + lines if lines else ""), "utf-8")


@pytest.fixture
def sns(db_url, tmp_path):
    sns = build_sns(db_url, tmp_path, init=False)
    set_policy(sns)  # no [policy] section: init stores the defaults
    sns.run("init")
    return sns


def as_(operator: str, ticket: str = "T-1", reason: str = "test") -> tuple[str, ...]:
    return ("--operator", operator, "--ticket", ticket, "--reason", reason, "-q")


def actions(sns) -> list[tuple]:
    with sns.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(audit_events.c.action, audit_events.c.operator, audit_events.c.ticket)
            .order_by(audit_events.c.seq))]


def request_rows(sns) -> list[dict]:
    with sns.engine.connect() as conn:
        return [dict(r) for r in conn.execute(
            select(revert_requests).order_by(revert_requests.c.request_id)).mappings()]


def test_revert_files_a_request_and_a_second_operator_runs_it(sns):
    user = sns.users[0]
    before = sns.everything()
    sns.run("apply", str(user), *as_("alice"))
    hidden = sns.everything()

    out = sns.run("revert", "--user", str(user), *as_("alice", "T-2", "user is back"),
                  "--format", "json")
    [filed] = json.loads(out.stdout)
    assert filed["status"] == "pending-approval" and filed["requested_by"] == "alice"
    assert "privacy-lock approve 1 --operator NAME" in out.stderr
    assert sns.everything() == hidden  # nothing changed
    assert sns.lock_rows()[0]["state"] == "active"
    [req] = request_rows(sns)
    assert (req["state"], req["requested_by"], req["ticket"], req["reason"]) == (
        "pending", "alice", "T-2", "user is back")
    assert req["requested_os_user"] and req["requested_host"]
    assert actions(sns)[-1] == ("revert-requested", "alice", "T-2")

    # asking again names the open request instead of filing a second one
    again = json.loads(sns.run("revert", str(filed["lock"]), *as_("dave"),
                               "--format", "json").stdout)
    assert again[0]["status"] == "already-requested" and again[0]["request"] == 1
    assert len(request_rows(sns)) == 1 and actions(sns)[-1][0] == "revert-requested"

    listed = json.loads(sns.run("requests", "--format", "json").stdout)
    assert [(r["request"], r["state"], r["requested_by"]) for r in listed] == [
        (1, "pending", "alice")]

    out = sns.run("approve", "1", "--operator", "bob", "--format", "json")
    [done] = json.loads(out.stdout)
    assert done["status"] == "reverted" and done["approved_by"] == "bob"
    assert sns.everything() == before  # restored exactly
    [req] = request_rows(sns)
    assert (req["state"], req["approved_by"], req["outcome"], req["open_lock_id"]) == (
        "done", "bob", "reverted", None)
    trail = [a for a in actions(sns) if a[0].startswith(("revert", "restore"))]
    assert trail[:2] == [("revert-requested", "alice", "T-2"), ("revert-approved", "bob", "T-2")]
    assert trail[-1] == ("revert", "bob", "T-2")  # the run's events are the approver's
    assert {a for a in trail[2:]} <= {("restore", "bob", "T-2"), ("revert", "bob", "T-2")}
    assert sns.lock_rows()[0]["reverted_by"] == "bob"
    assert json.loads(sns.run("requests", "--format", "json").stdout) == []
    assert sns.run("audit", "verify").stdout.startswith(f"{sns.audit_count()}/")

    again = sns.run("approve", "1", "--operator", "carol", expect=2)
    assert "request 1 is already done" in again.stderr


def test_self_approval_is_refused_audited_and_changes_nothing(sns):
    user = sns.users[0]
    sns.run("apply", str(user), *as_("alice"))
    sns.run("revert", "--user", str(user), *as_("alice"))
    hidden, requests_before = sns.everything(), request_rows(sns)
    for name in ("alice", " ALICE ", "Alice"):
        result = sns.run("approve", "1", "--operator", name, expect=2)
        errors = [line for line in result.stderr.splitlines() if "error" in line]
        assert errors == ["privacy-lock: error: request 1 was filed by alice: a revert needs a "
                          "second operator's approval (refused; nothing was changed)"]
        assert "Traceback" not in result.output
    assert sns.everything() == hidden
    assert request_rows(sns) == requests_before
    refused = [a for a in actions(sns) if a[0] == "revert-refused"]
    assert [a[1] for a in refused] == ["alice", "ALICE", "Alice"]
    assert sns.run("approve", "1", expect=2).stderr.count("--operator required") == 1
    assert "no revert request with id 9" in sns.run("approve", "9", "--operator", "bob",
                                                    expect=2).stderr


def test_dry_run_needs_no_approval_and_policy_off_reverts_at_once(sns):
    user = sns.users[0]
    before = sns.everything()
    sns.run("apply", str(user), *as_("alice"))
    plan = json.loads(sns.run("revert", "--user", str(user), "--dry-run",
                              "--format", "json").stdout)
    assert plan[0]["status"] == "would-revert" and request_rows(sns) == []
    sns.run("policy", "set", "revert_requires_approval", "false", *as_("dba")[:-1])
    sns.run("revert", "--user", str(user), *as_("alice"))
    assert sns.everything() == before and request_rows(sns) == []


def failing_locks(monkeypatch, *lock_ids: int) -> None:
    """Make the reverts of ``lock_ids`` fail (changing nothing) in approve's batch, at the
    engine's boundary: the other requests run for real."""
    real = approvals.run_batch

    def run_batch(conn, cmap, mode, requests, pacer, dry_run=False, on_done=None,
                  share_chunks=True):
        fine = [r for r in requests if r.lock_id not in lock_ids]
        ran = iter(real(conn, cmap, mode, fine, pacer, dry_run, on_done=on_done,
                        share_chunks=share_chunks).outcomes)
        outcomes = [next(ran) if r.lock_id not in lock_ids else Outcome(
            r, None, r.lock_id, Status.FAILED, error="connection lost (simulated)")
            for r in requests]
        return BatchResult(outcomes)

    monkeypatch.setattr(approvals, "run_batch", run_batch)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_an_interrupted_approved_revert_is_finished_by_approving_again(sns, monkeypatch):
    user = sns.users[0]
    before = sns.everything()
    sns.run("apply", str(user), *as_("alice"))
    sns.run("revert", "--user", str(user), *as_("alice"))
    failing_locks(monkeypatch, sns.lock_rows()[0]["lock_id"])
    assert "simulated" in sns.run("approve", "1", "--operator", "bob", expect=1).stderr
    [req] = request_rows(sns)
    assert req["state"] == "approved" and req["approved_by"] == "bob"
    # while it is approved but unfinished it is still open: no second request for the lock
    assert json.loads(sns.run("revert", "--user", str(user), *as_("dave"),
                              "--format", "json").stdout)[0]["status"] == "already-requested"
    assert "approved" in sns.run("requests").stdout

    monkeypatch.undo()
    assert "alice" in sns.run("approve", "1", "--operator", "alice", expect=2).stderr
    out = json.loads(sns.run("approve", "1", "--operator", "bob", "--format", "json").stdout)
    assert out[0]["status"] == "reverted" and out[0]["resumed"] is True
    assert sns.everything() == before
    assert request_rows(sns)[0]["state"] == "done"
    assert [a[0] for a in actions(sns)].count("revert-approved") == 1


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_request_file_files_one_request_per_row(sns, tmp_path):
    sns.run("apply", str(sns.users[0]), str(sns.users[1]), *as_("alice"))
    path = tmp_path / "back.csv"
    path.write_text(f"user_id,ticket,reason\n{sns.users[0]},T-5,back\n{sns.users[1]},T-6,back\n"
                    f"{sns.users[2]},T-7,never locked\n", encoding="utf-8")
    out = json.loads(sns.run("revert", "--from-file", str(path), "--operator", "alice",
                             "--format", "json").stdout)
    assert [o["status"] for o in out] == ["pending-approval", "pending-approval", "not-locked"]
    assert [(r["ticket"], r["state"]) for r in request_rows(sns)] == [
        ("T-5", "pending"), ("T-6", "pending")]
    assert all(lk["state"] == "active" for lk in sns.lock_rows())
    sns.run("approve", "1", "2", "--operator", "bob")
    assert all(lk["state"] == "reverted" for lk in sns.lock_rows())


def count_viewed(sns) -> int:
    with sns.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(audit_events)
                            .where(audit_events.c.action == "viewed")).scalar_one()


def test_reads_are_logged_only_when_the_policy_says_so(sns):
    user, other = sns.users[0], sns.users[1]
    sns.run("apply", str(user), *as_("alice"))
    sns.run("status", str(user), str(other))
    sns.run("apply", str(other), "--dry-run")
    sns.run("revert", "--user", str(user), "--dry-run")
    assert count_viewed(sns) == 0

    set_policy(sns, audit_reads=True, revert_requires_approval=False)
    sns.run("status", str(user), str(other), "--items", "--operator", "dana")
    sns.run("apply", str(other), "--dry-run", "--operator", "erin")
    sns.run("revert", "--user", str(user), "--dry-run")
    with sns.engine.connect() as conn:
        viewed = [dict(r) for r in conn.execute(
            select(audit_events).where(audit_events.c.action == "viewed")
            .order_by(audit_events.c.seq)).mappings()]
    lock_id = sns.lock_rows()[0]["lock_id"]
    assert [(v["subject"], v["lock_id"], v["operator"], json.loads(v["details"])["command"])
            for v in viewed] == [
        (str(user), lock_id, "dana", "status --items"), (str(other), None, "dana",
                                                         "status --items"),
        (str(other), None, "erin", "apply --dry-run"),
        (str(user), lock_id, None, "revert --dry-run"),
    ]
    assert all(v["os_user"] and v["host"] for v in viewed)
    assert sns.run("audit", "verify").exit_code == 0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_policy_keys_are_checked(sns):
    set_policy(sns)
    text = sns.config_path.read_text(encoding="utf-8")
    sns.config_path.write_text(text + "[policy]\nrevert_requires_approval = \"yes\"\n", "utf-8")
    result = sns.run("requests", expect=2)
    assert "policy.revert_requires_approval must be true or false" in result.stderr
    sns.config_path.write_text(text + "[policy]\naudit_read = true\n", "utf-8")
    assert "unknown key 'policy.audit_read'" in sns.run("requests", expect=2).stderr


def test_one_open_request_per_lock_even_if_the_check_is_raced(sns):
    """The unique open_lock_id column is what holds when two operators ask at the same time."""
    sns.run("apply", str(sns.users[0]), *as_("alice"))
    sns.run("revert", "--user", str(sns.users[0]), *as_("alice"))
    [req] = request_rows(sns)
    row = {k: v for k, v in req.items() if k != "request_id"}
    with pytest.raises(Exception, match="(?i)unique|duplicate"):  # noqa: PT011
        with sns.engine.begin() as conn:
            conn.execute(revert_requests.insert().values(row))
    with sns.engine.begin() as conn:
        conn.execute(update(revert_requests).values(open_lock_id=None, state="done"))
        conn.execute(revert_requests.insert().values({**row, "state": "done",
                                                      "open_lock_id": None}))
    assert len(request_rows(sns)) == 2  # closed requests do not block each other


def test_many_filed_requests_get_one_approve_hint_not_one_line_each(capsys):
    from privacy_lock import cli

    filed = [approvals.RequestOutcome(n, n, str(n), "pending-approval", "alice")
             for n in [*range(1, 24), 30, 31, 40]]
    cli.show_filed(service.FiledRequests(filed), "csv")
    err = capsys.readouterr().err.splitlines()
    assert "  privacy-lock approve 1-23,30-31,40 --operator NAME" in err  # ranges approve takes
    assert "(pending: 26 requests, 1-23, 30-31, 40; see `privacy-lock requests`)" in err
    assert sum(line.startswith("  privacy-lock approve") for line in err) == 1
    scattered = [approvals.RequestOutcome(n, n, str(n), "pending-approval", "alice")
                 for n in range(1, 100, 2)]  # 50 spans: too many to name
    cli.show_filed(service.FiledRequests(scattered), "csv")
    assert "  privacy-lock approve REQUEST_ID... --operator NAME" in \
        capsys.readouterr().err.splitlines()

    few = filed[:3]
    cli.show_filed(service.FiledRequests(few), "csv")
    assert "  privacy-lock approve 1 2 3 --operator NAME" in capsys.readouterr().err.splitlines()


def events_of(sns, action: str) -> list[dict]:
    with sns.engine.connect() as conn:
        return [json.loads(d) for d in conn.execute(
            select(audit_events.c.details).where(audit_events.c.action == action)
            .order_by(audit_events.c.seq)).scalars()]


def test_approving_several_requests_runs_them_as_one_batch(sns):
    before = sns.everything()
    sns.run("apply", *map(str, sns.users), *as_("alice"))
    sns.run("revert", *[a for u in sns.users for a in ("--user", str(u))], *as_("alice"))
    out = sns.run("approve", "1", "2", "3", "--operator", "bob", "--reason", "checked")
    assert sns.everything() == before
    assert [(r["state"], r["approved_by"], r["outcome"]) for r in request_rows(sns)] == [
        ("done", "bob", "reverted")] * 3
    assert [d["request_id"] for d in events_of(sns, "revert-approved")] == [1, 2, 3]
    reverts = events_of(sns, "revert")
    assert [d["chunk_shared_by"] for d in reverts] == [3, 3, 3]  # one shared chunk
    assert events_of(sns, "restore") == []
    err = out.stderr.splitlines()
    assert "requests 1-3: requested by alice, approved by bob" in err
    assert err[-1].startswith("done: 3 users, 54 items restored")
    table = out.stdout.splitlines()
    assert table[0].split() == ["request", "user", "lock", "status", "kind", "restored",
                                "conflicts", "gone"]
    assert len(table) == 2 + 3 * 2  # header, rule, one row per request and kind
    assert "events valid" in sns.run("audit", "verify").stdout


def test_a_self_approval_among_several_refuses_them_all_before_anything_runs(sns):
    """approve 1 2 3 by bob, who filed 3: it used to revert 1 and 2 and then exit 2."""
    u1, u2, u3 = sns.users
    before = sns.everything()
    sns.run("apply", *map(str, sns.users), *as_("alice"))
    sns.run("revert", "--user", str(u1), "--user", str(u2), *as_("alice"))
    sns.run("revert", "--user", str(u3), *as_("bob"))
    hidden, requests_before = sns.everything(), request_rows(sns)
    out = sns.run("approve", "1", "2", "3", "--operator", "bob", "--format", "json", expect=2)
    assert out.stdout == ""
    errors = [line for line in out.stderr.splitlines() if "error" in line]
    assert errors == [
        "privacy-lock: error: request 3 was filed by bob: a revert needs a second operator's "
        "approval (refused; nothing was changed: approve the others without it)"]
    assert sns.everything() == hidden
    assert request_rows(sns) == requests_before  # none approved
    assert all(lk["state"] == "active" for lk in sns.lock_rows())
    assert [d["request_id"] for d in events_of(sns, "revert-refused")] == [3]
    assert events_of(sns, "revert-approved") == []

    sns.run("approve", "1", "2", "--operator", "bob")  # the others, without it
    assert [r["state"] for r in request_rows(sns)] == ["done", "done", "pending"]
    after = sns.everything()
    for kind, rows in after.items():
        for item_id, (owner, vis) in rows.items():
            source = hidden if owner == u3 else before
            assert (owner, vis) == source[kind][item_id]

    sns.run("apply", str(u1), str(u2), *as_("alice"))
    sns.run("revert", "--user", str(u1), "--user", str(u2), *as_("bob"))  # 4 and 5
    out = sns.run("approve", "3", "4", "5", "--operator", "Bob", expect=2)
    assert out.stderr.splitlines()[-1] == (
        "privacy-lock: error: requests 3-5 (3) were filed by bob: a revert needs a second "
        "operator's approval (refused; nothing was changed)")
    assert [d["request_id"] for d in events_of(sns, "revert-refused")] == [3, 3, 4, 5]


def test_a_refused_approval_through_the_service_changes_nothing(sns):
    """The refusal is decided in the Python API, before anything is approved or run."""
    u1, u2, _ = sns.users
    sns.run("apply", str(u1), str(u2), *as_("alice"))
    sns.run("revert", "--user", str(u1), *as_("alice"))
    sns.run("revert", "--user", str(u2), *as_("bob"))
    hidden, requests_before = sns.everything(), request_rows(sns)
    target = service.Target.load(str(sns.config_path), sns.url)
    with pytest.raises(UsageError, match="request 2 was filed by bob"):
        service.approve(target, [1, 2], operator="bob")
    target.dispose()
    assert sns.everything() == hidden and request_rows(sns) == requests_before


def test_an_unknown_or_finished_request_stops_the_approval_before_anything(sns):
    sns.run("apply", *map(str, sns.users), *as_("alice"))
    sns.run("revert", *[a for u in sns.users for a in ("--user", str(u))], *as_("alice"))
    trail = actions(sns)
    out = sns.run("approve", "1", "2", "9", "12", "--operator", "bob", expect=2)
    assert out.stderr.splitlines()[-1] == (
        "privacy-lock: error: no revert requests with ids 9, 12 (see `privacy-lock requests "
        "--state all`); nothing was approved")
    assert actions(sns) == trail and {r["state"] for r in request_rows(sns)} == {"pending"}
    sns.run("approve", "1", "--operator", "bob")
    trail = actions(sns)
    out = sns.run("approve", "2", "1", "3", "--operator", "bob", expect=2)
    assert out.stderr.splitlines()[-1] == (
        "privacy-lock: error: request 1 is already done (see `privacy-lock requests --state "
        "done`); nothing was approved: approve the others")
    assert actions(sns) == trail
    assert [r["state"] for r in request_rows(sns)] == ["done", "pending", "pending"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_failed_revert_among_several_stays_approved_and_the_others_finish(sns, monkeypatch):
    before = sns.everything()
    sns.run("apply", *map(str, sns.users), *as_("alice"))
    sns.run("revert", *[a for u in sns.users for a in ("--user", str(u))], *as_("alice"))
    text = sns.config_path.read_text(encoding="utf-8")  # one lock per transaction, as on Citus
    sns.config_path.write_text("[database]\none_user_per_chunk = true\n\n" + text, "utf-8")
    failing_locks(monkeypatch, 2)
    out = sns.run("approve", "1", "2", "3", "--operator", "bob", expect=1)
    assert "privacy-lock: error: request 2 (lock 2): connection lost (simulated)" in out.stderr
    assert "1 of 3 approved requests failed: approve them again" in out.stderr.splitlines()[-1]
    assert [r["state"] for r in request_rows(sns)] == ["done", "approved", "done"]
    monkeypatch.undo()
    again = json.loads(sns.run("approve", "2", "--operator", "bob", "--format",
                               "json").stdout)  # its approver finishes it
    assert (again[0]["status"], again[0]["resumed"], again[0]["approved_by"]) == (
        "reverted", True, "bob")
    assert sns.everything() == before
    assert [d["request_id"] for d in events_of(sns, "revert-approved")] == [1, 2, 3]


def test_requests_are_filed_in_one_go_and_each_lock_once(sns, tmp_path):
    u1, u2, u3 = sns.users
    sns.run("apply", str(u1), str(u2), *as_("alice"))
    sns.run("revert", "--user", str(u2), *as_("dave"))  # already open before the file
    path = tmp_path / "back.csv"
    path.write_text(f"user_id\n{u1}\n{u2}\n{u3}\n", encoding="utf-8")
    out = sns.run("revert", "--from-file", str(path), *as_("alice"), "--format", "json")
    assert [(o["request"], o["status"], o["requested_by"]) for o in json.loads(out.stdout)] == [
        (2, "pending-approval", "alice"), (1, "already-requested", "dave"),
        (None, "not-locked", None)]
    assert [(r["request_id"], r["subject"], r["requested_by"]) for r in request_rows(sns)] == [
        (1, str(u2), "dave"), (2, str(u1), "alice")]
    assert [d["request_id"] for d in events_of(sns, "revert-requested")] == [1, 2]
    assert "  privacy-lock approve 2 1 --operator NAME" in out.stderr.splitlines()

    # one lock named twice in one filing (by its user and by its id) gets one request
    sns.run("apply", str(u3), *as_("alice"))
    [lock3] = [lk["lock_id"] for lk in sns.lock_rows() if lk["subject"] == str(u3)]
    engine, cmap = tool_session(sns)
    twice = [Request(0, str(u3), None, "T-3", "back", "erin", ()),
             Request(0, None, lock3, "T-3", "back", "frank", ())]
    with engine.connect() as conn:
        filed = approvals.request_reverts(conn, cmap, twice)
    engine.dispose()
    assert [(o.request_id, o.status, o.requested_by) for o in filed] == [
        (3, "pending-approval", "erin"), (3, "already-requested", "erin")]
    assert len(request_rows(sns)) == 3
    assert "events valid" in sns.run("audit", "verify").stdout


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_filing_raced_by_another_operator_is_filed_one_by_one(sns, monkeypatch):
    sns.run("apply", *map(str, sns.users), *as_("alice"))

    def raced(conn, part):
        raise IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed (simulated)"))

    monkeypatch.setattr(approvals, "_file_requests", raced)
    out = sns.run("revert", *[a for u in sns.users for a in ("--user", str(u))],
                  *as_("alice"), "--format", "json")
    assert [(o["request"], o["status"]) for o in json.loads(out.stdout)] == [
        (1, "pending-approval"), (2, "pending-approval"), (3, "pending-approval")]
    assert len(events_of(sns, "revert-requested")) == 3
