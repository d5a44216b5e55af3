"""What the seals missed (issue: the hostile tester's gaps), and the legitimate flows that must
not trip what now catches them.

Each attack is SQL an operator with database access would run, on every dialect: `audit
verify` exits 1 naming it, and revert/approve refuse with nothing changed. A lock made before
seals existed is written by that release itself (``git archive b9760ea~1``, run in a
subprocess against the same database), then extended and reverted by this one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import event, select, text

from helpers import half_reverted, requests_for, run_engine, stop_after
from privacy_lock import seal
from privacy_lock.db import reading
from privacy_lock.schema import audit_events, revert_requests
from sns import IDENTITY, build_sns, tool_session

ROOT = Path(__file__).resolve().parent.parent
BEFORE_SEALS = "b9760ea~1"  # the release before seals (b9760ea brought them)


@pytest.fixture
def sns(db_url, tmp_path):
    return build_sns(db_url, tmp_path)


def _sql(sns, *statements: str) -> None:
    """Statements as an operator with database access runs them, in one transaction."""
    with sns.engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))


def _seq(sns, action: str, lock_id: int, last: bool = False) -> int:
    """The first (or ``last``) ``action`` event of the lock."""
    with sns.engine.connect() as conn:
        seqs = conn.execute(select(audit_events.c.seq).where(
            audit_events.c.action == action, audit_events.c.lock_id == lock_id)
            .order_by(audit_events.c.seq)).scalars().all()
    return seqs[-1 if last else 0]


def _problems(sns, lock_ids=None) -> seal.SealCheck:
    with sns.engine.connect() as conn, reading(conn):
        return seal.check_seals(conn, lock_ids)


def _tool_rows(sns) -> tuple:
    """Everything the tool keeps, and the site's content."""
    with sns.engine.connect() as conn:
        requests = [dict(r) for r in conn.execute(
            select(revert_requests).order_by(revert_requests.c.request_id)).mappings()]
    return sns.everything(), sns.lock_rows(), sns.snapshot_rows(), requests, sns.audit_count()


def _refused(sns, why: str, *command: str) -> None:
    """``command`` exits 1 refusing, naming ``why``, and nothing changed."""
    before = _tool_rows(sns)
    out = sns.run(*command, expect=1)
    assert f"refusing to {command[0]}, nothing was changed" in out.stderr, out.output
    assert why in out.stderr, out.stderr
    assert _tool_rows(sns) == before


def _broken(sns, why: str) -> None:
    out = sns.run("audit", "verify", expect=1)
    assert "BROKEN: sealed rows were changed" in out.stderr and why in out.stderr, out.stderr


def _two_person(sns) -> None:
    sns.run("policy", "set", "revert_requires_approval", "true", *IDENTITY)


def _file_request(sns, user, operator: str = "alice") -> None:
    sns.run("revert", "--user", str(user), "--operator", operator, "--ticket", "T-2",
            "--reason", "back")


def _verifies(sns) -> str:
    out = sns.run("audit", "verify").stdout
    assert "events valid" in out, out
    return out


# --- 1. a lock deleted with its snapshots and requests -----------------------------------------


def test_a_lock_deleted_with_its_snapshots_and_requests_is_caught(sns):
    user = sns.users[0]
    sns.apply(user)
    _two_person(sns)
    _file_request(sns, user)
    hidden = sns.everything()
    _sql(sns, "DELETE FROM privacy_lock_revert_requests WHERE lock_id = 1",
         "DELETE FROM privacy_lock_snapshots WHERE lock_id = 1",
         "DELETE FROM privacy_lock_locks WHERE lock_id = 1")
    lock_seq = _seq(sns, "lock", 1)
    _broken(sns, f"lock 1, sealed by event {lock_seq}, is gone")
    problems = _problems(sns).problems
    assert any(p.startswith("the snapshots of lock 1 written at") and "the lock was deleted" in p
               for p in problems), problems
    assert any(p.startswith("revert request 1, sealed by event") and p.endswith("is gone")
               for p in problems), problems
    # nothing is left to revert or approve: both say so, and change nothing
    assert "no revert request with id 1" in sns.run("approve", "1", "--operator", "bob",
                                                    expect=2).stderr
    assert "no lock with id 1" in sns.run("revert", "1", *IDENTITY, expect=2).stderr
    assert sns.everything() == hidden


# --- 3. a revert request inserted, or approved, by hand -----------------------------------------


def test_a_request_inserted_by_hand_is_refused_by_approve_and_caught(sns):
    user = sns.users[0]
    sns.apply(user)
    _two_person(sns)
    # alice wants to revert alone: she writes her own request, then approves it as bob
    _sql(sns, "INSERT INTO privacy_lock_revert_requests (lock_id, subject, state, open_lock_id, "
              "requested_by, requested_os_user, requested_host, ticket, reason, requested_at) "
              f"VALUES (1, '{user}', 'pending', 1, 'carol', 'carol', 'pc-9', 'T-9', 'back', "
              "'2026-12-01T00:00:00.000000Z')")
    why = "revert request 1 was filed by no event (inserted by hand?)"
    _broken(sns, why)
    _refused(sns, why, "approve", "1", "--operator", "alice")
    assert all(s["state"] == "locked" for s in sns.snapshot_rows())


def test_an_approval_written_by_hand_cannot_be_resumed(sns):
    user = sns.users[0]
    sns.apply(user)
    _two_person(sns)
    _file_request(sns, user)
    # alice marks her request approved by bob, then "resumes" bob's approval herself
    _sql(sns, "UPDATE privacy_lock_revert_requests SET state = 'approved', approved_by = 'bob', "
              "approved_os_user = 'bob', approved_host = 'pc-2', "
              "approved_at = '2026-12-01T00:00:00.000000Z'")
    why = "revert request 1 was approved by no event"
    _broken(sns, why)
    _refused(sns, why, "approve", "1", "--operator", "bob")


# --- 4. states: snapshots and locks -------------------------------------------------------------


@pytest.mark.parametrize("state", ["restored", "conflict"])
def test_snapshots_resolved_by_hand_make_revert_refuse(sns, state):
    user = sns.users[0]
    sns.apply(user)
    _sql(sns, f"UPDATE privacy_lock_snapshots SET state = '{state}' WHERE lock_id = 1")
    why = "the resolved snapshots of lock 1 (active) no longer match what its restores recorded"
    _broken(sns, why)
    assert f"diary {state}: 0 then, 9 now" in _problems(sns).problems[0]
    _refused(sns, why, "revert", "--user", str(user), *IDENTITY)


def test_a_lock_closed_by_hand_is_caught_and_its_request_refused(sns):
    user = sns.users[0]
    sns.apply(user)
    _two_person(sns)
    _file_request(sns, user)
    _sql(sns, "UPDATE privacy_lock_locks SET state = 'reverted', active_subject = NULL "
              "WHERE lock_id = 1")
    why = "lock 1 is reverted, but no event reverted it"
    _broken(sns, why)
    _refused(sns, why, "approve", "1", "--operator", "bob")
    # revert finds no active lock and changes nothing (its preflight checks active locks)
    before = sns.everything()
    sns.run("revert", "--user", str(user), *IDENTITY, expect=None)
    assert sns.everything() == before
    assert all(s["state"] == "locked" for s in sns.snapshot_rows())


def test_a_reverted_lock_reopened_by_hand_makes_revert_refuse(sns):
    user = sns.users[0]
    sns.apply(user)
    sns.revert_user(user)
    revert_seq = _seq(sns, "revert", 1)
    _sql(sns, f"UPDATE privacy_lock_locks SET state = 'active', active_subject = '{user}', "
              "reverted_at = NULL, reverted_by = NULL WHERE lock_id = 1",
         "UPDATE privacy_lock_snapshots SET state = 'locked', resolved_at = NULL")
    why = f"lock 1 is active, but event {revert_seq} reverted it"
    _broken(sns, why)
    _refused(sns, why, "revert", "--user", str(user), *IDENTITY)


def test_edited_states_of_a_reverted_lock_are_caught(sns):
    user = sns.users[0]
    sns.apply(user)
    changed = next(s for s in sns.snapshot_rows() if s["kind"] == "diary")
    sns.set_vis("diary", type(sns.users[0])(changed["item_id"]), sns.friends)  # a conflict
    sns.revert_user(user)
    _verifies(sns)
    # a reviewer counting conflicts is shown none
    _sql(sns, "UPDATE privacy_lock_snapshots SET state = 'restored' WHERE state = 'conflict'")
    _broken(sns, f"the snapshots of lock 1 are no longer in the states event "
                 f"{_seq(sns, 'revert', 1)} counted when it reverted the lock (diary conflict: "
                 "1 then, 0 now; diary restored:")


# --- legitimate flows ----------------------------------------------------------------------------


def test_a_half_done_revert_verifies_and_then_finishes(sns):
    user = sns.users[0]
    before = sns.items_of(user)
    half_reverted(sns, user)  # a ranged restore slice, then Ctrl-C
    _verifies(sns)
    assert _problems(sns, [1]).ok
    sns.run("apply", str(user), *IDENTITY, expect=1)  # refused: its revert has begun
    sns.revert_user(user)  # the rest in one chunk
    _verifies(sns)
    assert sns.items_of(user) == before


def test_many_small_locks_reverted_in_one_chunk_verify(sns):
    before = sns.everything()
    sns.apply(*sns.users)
    lock_of = {lk["lock_id"]: lk["subject"] for lk in sns.lock_rows()}
    item = next(type(sns.users[0])(s["item_id"]) for s in sns.snapshot_rows()
                if s["kind"] == "photo" and lock_of[s["lock_id"]] == str(sns.users[1]))
    sns.delete("photo", item)  # gone
    sns.revert_user(*sns.users)  # one shared chunk
    _verifies(sns)
    del before["photo"][item]
    assert sns.everything() == before
    # and again: a new lock for the same users, reverted in slices
    sns.apply(*sns.users)
    sns.revert_user(*sns.users, extra=("--chunk-size", "4"))
    _verifies(sns)
    assert sns.everything() == before


def test_a_revert_committed_while_the_check_reads_is_no_false_alarm(db_url, dialect, tmp_path):
    if dialect == "sqlite":
        pytest.skip("a SQLite read transaction is one snapshot (and a writer waits for it)")
    sns = build_sns(db_url, tmp_path)
    user = sns.users[0]
    sns.apply(user)
    engine, _cmap = tool_session(sns)  # READ COMMITTED: each statement sees earlier commits
    reads = []

    @event.listens_for(engine, "before_cursor_execute")
    def another_operator(_conn, _cursor, statement, *_args):
        if "privacy_lock_snapshots.snapshotted_at" in statement:  # the snapshot rows
            reads.append(statement)
            if len(reads) == 1:  # between the events read and the snapshots read
                assert run_engine(sns, "revert", requests_for(user), stop_after(1)).interrupted

    try:
        with engine.connect() as conn, reading(conn):
            check = seal.check_seals(conn, [1])
    finally:
        engine.dispose()
    assert check.ok, check.problems
    assert len(reads) == 2  # read again once an event named the lock
    assert sum(s["state"] == "restored" for s in sns.snapshot_rows()) == 3


# --- a lock made before seals -------------------------------------------------------------------


@pytest.fixture(scope="module")
def release_before_seals(tmp_path_factory) -> Path:
    """The package as it was before seals, exported from git."""
    where = tmp_path_factory.mktemp("before-seals")
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", BEFORE_SEALS, "privacy_lock"],
                             capture_output=True)
    if archive.returncode:
        pytest.skip(f"no git history to export {BEFORE_SEALS} from: "
                    f"{archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive.stdout, check=True)
    return where


def _old(sns, release: Path, *args: str, config: Path | None = None) -> str:
    """Run the release before seals against the same database."""
    env = {**os.environ, "PYTHONPATH": str(release)}
    done = subprocess.run(
        [sys.executable, "-m", "privacy_lock", "--config", str(config or sns.config_path),
         "--database-url", sns.url, *args], capture_output=True, text=True, env=env,
        cwd=release)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_lock_made_before_seals_extends_verifies_and_reverts(db_url, tmp_path,
                                                              release_before_seals):
    sns = build_sns(db_url, tmp_path, init=False)
    first, second = sns.users[0], sns.users[1]
    before = sns.everything()
    two_person = tmp_path / "two-person.toml"
    two_person.write_text(sns.config_path.read_text(encoding="utf-8").replace(
        "revert_requires_approval = false", "revert_requires_approval = true"), encoding="utf-8")
    _old(sns, release_before_seals, "init")
    _old(sns, release_before_seals, "apply", str(first), str(second), *IDENTITY)
    _old(sns, release_before_seals, "revert", "--user", str(second), "--operator", "alice",
         "--ticket", "T-2", "--reason", "back", config=two_person)  # files request 1
    sns.run("init")  # this release: the new columns and tables
    assert _problems(sns).ok and _problems(sns).legacy_locks == 2
    # extended by this release: the lock records its binding, sealed with its new snapshots
    added = sns.add_item("diary", first, sns.public)
    sns.apply(first)
    check = _problems(sns)
    assert check.ok, check.problems
    assert (check.legacy_locks, check.legacy_groups, check.legacy_requests) == (1, 1, 1)
    out = _verifies(sns)
    assert "(1 older locks carry no seals)" in out
    first_seal = _seq(sns, "apply", 1, last=True)
    lock_seq = _seq(sns, "lock", 1)
    assert first_seal > lock_seq

    # a row smuggled into it now is caught; the residual risk: one backdated before its first
    # seal reads as written by the older release (docs/AUDIT.md)
    other = next(i for (_k, i), v in sns.items_of(sns.users[2], "diary").items()
                 if v == sns.public)
    smuggle = ("INSERT INTO privacy_lock_snapshots (lock_id, kind, item_id, original_text, "
               "state, snapshotted_at) VALUES (1, 'diary', '{item}', 'public', 'locked', '{at}')")
    _sql(sns, smuggle.format(item=other, at="2099-01-01T00:00:00.000000Z"))
    _broken(sns, "1 snapshot row(s) of lock 1 written at 2099-01-01T00:00:00.000000Z are sealed "
                 f"by no event, and were written after event {first_seal} first sealed the lock")
    _refused(sns, "sealed by no event", "revert", "--user", str(first), *IDENTITY)
    _sql(sns, f"DELETE FROM privacy_lock_snapshots WHERE item_id = '{other}'",
         smuggle.format(item=other, at="2000-01-01T00:00:00.000000Z"))
    assert _problems(sns).ok and _problems(sns).legacy_groups == 2  # not detectable
    _sql(sns, f"DELETE FROM privacy_lock_snapshots WHERE item_id = '{other}'")

    # the request the older release filed (no seal) is approved and run by this one
    sns.run("approve", "1", "--operator", "bob")
    sns.revert_user(first)
    check = _problems(sns)
    assert check.ok and check.legacy_requests == 1, check.problems
    _verifies(sns)
    before["diary"][added] = (first, sns.public)
    assert sns.everything() == before


def test_a_lock_reverted_by_the_release_before_seals_verifies(db_url, tmp_path,
                                                              release_before_seals):
    sns = build_sns(db_url, tmp_path, init=False)
    user = sns.users[0]
    _old(sns, release_before_seals, "init")
    _old(sns, release_before_seals, "apply", str(user), *IDENTITY)
    _old(sns, release_before_seals, "revert", "--user", str(user), *IDENTITY,
         "--chunk-size", "4")  # restore slices, then the revert
    sns.run("init")
    _verifies(sns)
    # its counts are checked all the same: they have had one shape since the first release
    _sql(sns, "UPDATE privacy_lock_snapshots SET state = 'gone' WHERE kind = 'photo'")
    _broken(sns, "the snapshots of lock 1 are no longer in the states event")
    # the export is still written, and fails like the trail (exit 1)
    report = sns.run("audit", "report", "--action", "revert", "--format", "json", expect=1)
    assert "the audit chain is BROKEN" in report.stderr
    details = json.loads(report.stdout)[0]["details"]
    assert details["kinds"]["photo"]["restored"] == 9
