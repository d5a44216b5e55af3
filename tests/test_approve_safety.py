"""What `approve` refuses before it records an approval, who may finish an approved request,
the outcome a request records, and a kind renamed under a lock; asserted in the database."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select, text

from privacy_lock import approvals
from privacy_lock.audit import Actor
from privacy_lock.schema import audit_events, revert_requests
from sns import IDENTITY, build_sns, tool_session


@pytest.fixture
def sns(db_url, tmp_path):
    return build_sns(db_url, tmp_path)


def as_(operator: str) -> tuple[str, ...]:
    return ("--operator", operator, "-q")


FILED = ("--ticket", "T-2", "--reason", "back")


def filed_by_alice(sns) -> object:
    """User 0 locked, the two-person rule on, and a revert of it filed by alice (request 1)."""
    user = sns.users[0]
    sns.apply(user)
    sns.run("policy", "set", "revert_requires_approval", "true", *IDENTITY)
    sns.run("revert", "--user", str(user), *as_("alice"), *FILED)
    return user


def request_row(sns) -> dict:
    with sns.engine.connect() as conn:
        [row] = conn.execute(select(revert_requests)).mappings().all()
        return dict(row)


def trail(sns) -> list[tuple[str, str]]:
    with sns.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(audit_events.c.action, audit_events.c.operator).order_by(audit_events.c.seq))]


def tool_rows(sns) -> tuple:
    """The tool's rows approve could change: locks, snapshots, the request, the trail."""
    return sns.lock_rows(), sns.snapshot_rows(), request_row(sns), trail(sns)


def state_of(sns) -> tuple:
    """Everything approve could change: the site and the tool's rows."""
    return sns.everything(), *tool_rows(sns)


def errors(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("privacy-lock:")]


def interrupt_after_one_chunk(monkeypatch) -> None:
    """approve's revert stops after its first committed chunk, as Ctrl-C does."""
    real = approvals.run_batch

    def run_batch(conn, cmap, mode, requests, pacer, *args, **kwargs):
        earlier = pacer.on_chunk

        def stop(user, kind, items):
            if earlier:
                earlier(user, kind, items)
            pacer._stop = True
        pacer.on_chunk = stop
        return real(conn, cmap, mode, requests, pacer, *args, **kwargs)

    monkeypatch.setattr(approvals, "run_batch", run_batch)


# --- 1. a revert that cannot run is refused before the approval is recorded -----------------


def test_approve_refuses_a_lock_the_live_schema_no_longer_matches_before_approving(sns):
    user = filed_by_alice(sns)
    with sns.engine.begin() as conn:
        conn.execute(text("ALTER TABLE photos RENAME COLUMN scope TO scope2"))
    sns.config_path.write_text(sns.config_path.read_text(encoding="utf-8").replace(
        'visibility = "scope"', 'visibility = "scope2"'), encoding="utf-8")
    before = tool_rows(sns), sns.rows("diary")  # photos no longer has the column sns reads
    out = sns.run("approve", "1", *as_("bob"), expect=2)
    assert errors(out) == [
        f"privacy-lock: error: lock 1 was taken with photo = photos(id id, owner owner_id, "
        f"visibility scope, private {sns.private!r}), but column photos.scope no longer "
        "exists; nothing was changed"]
    assert (tool_rows(sns), sns.rows("diary")) == before
    assert request_row(sns)["state"] == "pending" and request_row(sns)["approved_by"] is None
    assert "revert-approved" not in [action for action, _ in trail(sns)]
    assert sns.lock_rows()[0]["state"] == "active"
    assert all(v == sns.private for v in sns.items_of(user, "diary").values())


# --- 2. only the approver finishes an approved request; its outcome is the lock's -----------


def test_an_approved_request_is_finished_by_its_approver_and_refused_to_anyone_else(
        sns, monkeypatch):
    before = sns.everything()
    filed_by_alice(sns)
    interrupt_after_one_chunk(monkeypatch)
    out = sns.run("approve", "1", *as_("bob"), "--chunk-size", "2", expect=1)
    assert "interrupted" in out.stderr
    monkeypatch.undo()
    req = request_row(sns)
    assert (req["state"], req["approved_by"]) == ("approved", "bob")
    assert any(s["state"] == "restored" for s in sns.snapshot_rows())  # begun, not finished
    assert sns.lock_rows()[0]["state"] == "active"

    halfway = state_of(sns)
    for other in ("carol", "dave"):
        out = sns.run("approve", "1", *as_(other), "--chunk-size", "2", expect=2)
        assert errors(out) == [
            f"privacy-lock: error: request 1 was approved by bob at {req['approved_at']}: bob "
            "runs `privacy-lock approve 1` again to finish it (refused; nothing was changed)"]
        assert state_of(sns) == halfway

    out = sns.run("approve", "1", "--operator", "bob", "--format", "json", "--chunk-size", "2")
    [done] = json.loads(out.stdout)
    assert (done["status"], done["resumed"], done["approved_by"]) == ("reverted", True, "bob")
    assert sns.everything() == before
    req = request_row(sns)
    assert (req["state"], req["approved_by"], req["outcome"]) == ("done", "bob", "reverted")
    assert sns.lock_rows()[0]["reverted_by"] == "bob"
    run = [(a, o) for a, o in trail(sns) if a in ("revert-approved", "restore", "revert")]
    assert run[0] == ("revert-approved", "bob") and run[-1] == ("revert", "bob")
    assert {o for _a, o in run} == {"bob"}
    assert sns.run("audit", "verify").stdout.startswith(f"{sns.audit_count()}/")


def test_a_request_approved_by_another_between_our_look_and_our_approval_is_not_run(
        sns, monkeypatch):
    before = sns.everything()
    filed_by_alice(sns)
    engine, cmap = tool_session(sns)
    real = approvals._refuse_requests

    def bob_approves_first(conn, ids, found, approver, *args):
        # carol has read the request pending; bob approves it now, on his own connection
        if approver.operator == "carol":
            with engine.connect() as other:
                approvals.approve_requests(other, cmap, ids, Actor.current("bob", None, None))
        return real(conn, ids, found, approver, *args)

    monkeypatch.setattr(approvals, "_refuse_requests", bob_approves_first)
    out = sns.run("approve", "1", *as_("carol"), expect=2)
    monkeypatch.undo()
    engine.dispose()
    req = request_row(sns)
    assert errors(out) == [
        f"privacy-lock: error: request 1 was approved meanwhile by bob at {req['approved_at']}: "
        "bob runs `privacy-lock approve 1` again to finish it"]
    assert (req["state"], req["approved_by"]) == ("approved", "bob")
    assert [o for a, o in trail(sns) if a == "revert-approved"] == ["bob"]
    assert sns.lock_rows()[0]["state"] == "active"  # nobody ran it
    sns.run("approve", "1", *as_("bob"))
    assert sns.everything() == before and request_row(sns)["outcome"] == "reverted"


def test_a_second_run_of_the_approver_that_finds_the_lock_closed_records_reverted(
        sns, monkeypatch):
    """Two `approve 1 --operator bob` at once: the second finds the lock closed by the first
    and marks the request done before the first does; the outcome is still the lock's."""
    before = sns.everything()
    filed_by_alice(sns)
    real = approvals._mark_done
    second: list = []

    def the_other_run_marks_first(conn, finished):
        if not second:  # the first run has closed the lock; the second one runs now
            second.append(None)
            second[0] = sns.run("approve", "1", "--operator", "bob", "--format", "json")
        return real(conn, finished)

    monkeypatch.setattr(approvals, "_mark_done", the_other_run_marks_first)
    first = json.loads(sns.run("approve", "1", *as_("bob"), "--format", "json").stdout)
    monkeypatch.undo()
    [late] = json.loads(second[0].stdout)
    assert (late["status"], late["resumed"]) == ("not-locked", True)  # it found it closed
    assert first[0]["status"] == "reverted"
    assert sns.everything() == before
    req = request_row(sns)
    assert (req["state"], req["approved_by"], req["outcome"]) == ("done", "bob", "reverted")
    assert sns.lock_rows()[0]["reverted_by"] == "bob"


def test_a_lock_closed_by_someone_else_leaves_the_request_not_locked(sns, monkeypatch):
    user = filed_by_alice(sns)
    interrupt_after_one_chunk(monkeypatch)
    sns.run("approve", "1", *as_("bob"), "--chunk-size", "2", expect=1)
    monkeypatch.undo()
    sns.run("policy", "set", "revert_requires_approval", "false", *IDENTITY)
    sns.run("revert", "--user", str(user), *as_("dave"), *FILED)  # no request needed now
    assert sns.lock_rows()[0]["reverted_by"] == "dave"
    [done] = json.loads(sns.run("approve", "1", *as_("bob"), "--format", "json").stdout)
    assert done["status"] == "not-locked"
    req = request_row(sns)
    assert (req["state"], req["outcome"]) == ("done", "not-locked")


# --- 3. a kind renamed in the config under a lock ---------------------------------------------


def test_a_kind_renamed_under_a_lock_is_refused_and_revert_restores_the_first_original(sns):
    user = sns.users[0]
    before = sns.everything()
    sns.apply(user)
    [item] = [i for i, (owner, vis) in before["diary"].items()
              if owner == user and vis == sns.friends][:1]
    sns.set_vis("diary", item, sns.public)  # the person shows one diary again
    config = sns.config_path.read_text(encoding="utf-8")
    sns.config_path.write_text(config.replace("[content.diary]", "[content.aaa]"), "utf-8")
    shown = state_of_lock(sns)
    out = sns.run("apply", str(user), *IDENTITY, expect=1)
    assert errors(out) == [
        f"privacy-lock: error: user {user}: lock 1 of user {user} holds the items of "
        "diaries.visibility as kind 'diary'; the content map now calls them 'aaa': revert "
        "lock 1 first, or restore the name [content.diary]"]
    assert state_of_lock(sns) == shown  # nothing changed
    assert {s["kind"] for s in sns.snapshot_rows()} == {"diary", "photo"}

    sns.config_path.write_text(config, "utf-8")
    sns.set_vis("diary", item, sns.private)  # and hides it again
    sns.revert_user(user)
    assert sns.vis("diary", item) == sns.friends  # the original from before the lock
    assert sns.everything() == before


def state_of_lock(sns) -> tuple:
    return sns.everything(), sns.lock_rows(), sns.snapshot_rows()
