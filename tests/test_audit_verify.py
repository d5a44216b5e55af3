"""`audit verify`: every way of editing the trail is caught and named, on every dialect; appends
from concurrent processes form one valid chain; PostgreSQL refuses edits in the database itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import isolated_url
from sqlalchemy import delete, insert, text, update

from helpers import head_of, restore_trail, tamper, trail_rows
from privacy_lock.audit import event_hash
from privacy_lock.schema import audit_events, audit_head, locks, snapshots
from sns import build_sns

ROOT = Path(__file__).resolve().parent.parent


def identity(operator: str, ticket: str) -> tuple[str, ...]:
    return ("--operator", operator, "--ticket", ticket, "--reason", "test", "-q")


def make_trail(sns) -> None:
    """Three commands: 4 + 4 + 3 = 11 events. Each user has 9 visible items of each kind, more
    than a chunk of 9 holds with its lock row, so it is done in slices: lock, hide (diary),
    hide (photo), apply; restore, restore, revert (docs/AUDIT.md)."""
    sns.run("apply", str(sns.users[0]), *identity("alice", "T-1"), "--chunk-size", "9")
    sns.run("apply", str(sns.users[1]), *identity("bob", "T-2"), "--chunk-size", "9")
    sns.run("revert", "--user", str(sns.users[0]), *identity("carol", "T-3"), "--chunk-size",
            "9")


def verify(sns, *extra: str, expect: int = 0):
    return sns.run("audit", "verify", *extra, expect=expect)


def shift(first: int, by: int) -> list:
    """Renumber events >= first by ``by`` without tripping the primary key mid-statement."""
    c = audit_events.c
    return [update(audit_events).where(c.seq >= first).values(seq=c.seq + 100_000),
            update(audit_events).where(c.seq >= 100_000).values(seq=c.seq - 100_000 + by)]


def forged(after: dict, seq: int, valid_hash: bool = True) -> dict:
    event = {**after, "seq": seq, "action": "restore", "operator": "mallory",
             "reason": "forged", "prev_hash": after["hash"]}
    event["hash"] = event_hash(event) if valid_hash else "f" * 64
    return event


def test_untouched_trail_verifies_and_prints_its_head(db_url, tmp_path):
    sns = build_sns(db_url, tmp_path)
    out = verify(sns).stdout
    assert out.splitlines()[0] == "0/0 events valid"
    make_trail(sns)
    seq, hash_ = head_of(sns)
    assert seq == 11
    lines = verify(sns).stdout.splitlines()
    assert lines[0] == "11/11 events valid"
    assert lines[1].startswith(f"head: {hash_} (event 11, ")
    # a head published earlier (event 4) is still in the chain
    early = trail_rows(sns)[3]["hash"]
    out = verify(sns, "--expect-head", early.upper()).stdout
    assert "published head found at event 4" in out
    bad = sns.run("audit", "verify", "--expect-head", "abc", expect=2)
    assert "64-digit hex" in bad.stderr and "Traceback" not in bad.output


# (name, statements built from the saved events, expected words in the problem, valid count)
def scenarios(saved: list[dict], last_head: tuple[int, str]):
    c = audit_events.c
    n = len(saved)
    yield ("altered field", [update(audit_events).where(c.seq == 4).values(reason="typo")],
           "event 4 was altered", 3)
    yield ("deleted middle event", [delete(audit_events).where(c.seq == 4)],
           "event 4 is missing", 3)
    yield ("deleted and renumbered", [delete(audit_events).where(c.seq == 4), *shift(5, -1),
                                      update(audit_head).values(seq=n - 1)],
           "event 4 was deleted and the later events renumbered", 3)
    yield ("inserted forged event", [*shift(4, 1), insert(audit_events).values(
        forged(saved[2], 4)), update(audit_head).values(seq=n + 1)],
           "event 4 was inserted", 3)
    yield ("inserted event with a made-up hash", [*shift(4, 1), insert(audit_events).values(
        forged(saved[2], 4, valid_hash=False))], "event 4 was inserted", 3)
    yield ("two events swapped", [
        update(audit_events).where(c.seq == 4).values(seq=100_004),
        update(audit_events).where(c.seq == 5).values(seq=4),
        update(audit_events).where(c.seq == 100_004).values(seq=5)],
           "events 4 and 5 were swapped", 3)
    yield ("all renumbered", shift(1, 1000), "event 1 was renumbered: it is stored as event "
           "1001", 0)
    yield ("forged event appended without moving the head", [
        insert(audit_events).values(forged(saved[-1], n + 1))],
           f"events {n + 1}..{n + 1} are beyond the head row", n)
    yield ("tail deleted, head left", [delete(audit_events).where(c.seq > n - 2)],
           f"events {n - 1}..{n} were removed from the end", n - 2)
    yield ("head row edited", [update(audit_head).values(hash="0" * 64)],
           "head row's hash does not match", n)


def test_every_way_of_editing_the_trail_is_named(db_url, tmp_path):
    sns = build_sns(db_url, tmp_path)
    make_trail(sns)
    saved, saved_head = trail_rows(sns), head_of(sns)
    n = len(saved)
    for name, statements, problem, valid in scenarios(saved, saved_head):
        tamper(sns, *statements)
        result = verify(sns, expect=1)
        assert problem in result.stderr, (name, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 2, (name, result.stderr)  # db + BROKEN
        assert f"{valid}/" in result.stdout.splitlines()[0], (name, result.stdout)
        assert "Traceback" not in result.output
        restore_trail(sns, saved, saved_head)
        assert verify(sns).stdout.startswith(f"{n}/{n} events valid"), name


def test_truncation_or_rewrite_that_hides_its_tracks_is_caught_by_the_published_head(
    db_url, tmp_path
):
    sns = build_sns(db_url, tmp_path)
    make_trail(sns)
    saved = trail_rows(sns)
    published = saved[-1]["hash"]
    c = audit_events.c
    lock, snaps = sns.lock_rows()[0], [s for s in sns.snapshot_rows() if s["lock_id"] == 1]
    # cut the revert's events and move the head back to match, and put
    # lock 1 back as it was before the cut revert (verify checks its state against the
    # events): the chain alone looks fine
    tamper(sns, delete(audit_events).where(c.seq > 8),
           update(audit_head).values(seq=8, hash=saved[7]["hash"]),
           update(locks).where(locks.c.lock_id == 1).values(
               state="active", active_subject=lock["subject"], reverted_at=None,
               reverted_by=None),
           update(snapshots).where(snapshots.c.lock_id == 1).values(state="locked",
                                                                     resolved_at=None))
    assert verify(sns).stdout.startswith("8/8 events valid")
    result = verify(sns, "--expect-head", published, expect=1)
    assert f"the published head {published} is not in the chain" in result.stderr

    # rewrite: alter event 4 and re-hash everything after it, head included
    restore_trail(sns, saved, (len(saved), published))
    tamper(sns, update(locks).where(locks.c.lock_id == 1).values(
        {k: lock[k] for k in ("state", "active_subject", "reverted_at", "reverted_by")}), *[
        update(snapshots).where(snapshots.c.snapshot_id == s["snapshot_id"]).values(
            state=s["state"], resolved_at=s["resolved_at"]) for s in snaps])
    rewritten, prev = [], saved[2]["hash"]
    for event in saved[3:]:
        event = {**event, "prev_hash": prev}
        if event["seq"] == 4:
            event["reason"] = "rewritten"
        event["hash"] = prev = event_hash(event)
        rewritten.append(event)
    tamper(sns, delete(audit_events).where(c.seq >= 4), insert(audit_events).values(rewritten),
           update(audit_head).values(hash=prev))
    assert verify(sns).stdout.startswith(f"{len(saved)}/{len(saved)} events valid")
    result = verify(sns, "--expect-head", published, expect=1)
    assert "not in the chain" in result.stderr


@pytest.fixture(params=["postgresql", "mysql"])
def server_url(request, tmp_path):
    yield from isolated_url(request.param, tmp_path)


def test_concurrent_processes_append_one_valid_chain(server_url, tmp_path):
    """Operators applying (and then reverting) different users at the same moment."""
    sns = build_sns(server_url, tmp_path)

    def run_all(command: str) -> None:
        procs = []
        for user, operator in zip(sns.users, ("alice", "bob", "carol"), strict=True):
            target = [str(user)] if command == "apply" else ["--user", str(user)]
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "privacy_lock", "--config", str(sns.config_path),
                 "--database-url", sns.url, command, *target, *identity(operator, "T-1"),
                 "--chunk-size", "1", "--format", "json"],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        for proc in procs:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
            assert json.loads(out)[0]["status"] in ("locked", "reverted")

    run_all("apply")
    # per user: lock, 9 + 9 hide chunks of one item, apply
    assert verify(sns).stdout.startswith("60/60 events valid")
    run_all("revert")  # per user: 9 + 9 restore chunks, revert
    trail = trail_rows(sns)
    assert [e["seq"] for e in trail] == list(range(1, 118))
    assert all(b["prev_hash"] == a["hash"] for a, b in zip(trail, trail[1:], strict=False))
    assert verify(sns).stdout.startswith("117/117 events valid")


@pytest.fixture
def pg_url(tmp_path):
    yield from isolated_url("postgresql", tmp_path)


def test_postgresql_refuses_edits_of_the_trail_even_from_the_owner(pg_url, tmp_path):
    sns = build_sns(pg_url, tmp_path)
    make_trail(sns)
    attempts = {
        "UPDATE privacy_lock_audit SET reason = 'x' WHERE seq = 2": "append-only: UPDATE refused",
        "DELETE FROM privacy_lock_audit WHERE seq = 11": "append-only: DELETE refused",
        "TRUNCATE privacy_lock_audit": "append-only: TRUNCATE refused",
        "DELETE FROM privacy_lock_audit_head": "along the trail: DELETE refused",
        "UPDATE privacy_lock_audit_head SET seq = 9": "along the trail: UPDATE refused",
        "UPDATE privacy_lock_audit_head SET seq = seq + 3": "along the trail: UPDATE refused",
        "UPDATE privacy_lock_audit_head SET hash = repeat('0', 64)": "along the trail: UPDATE",
        "TRUNCATE privacy_lock_audit_head": "along the trail: TRUNCATE refused",
    }
    for statement, message in attempts.items():
        with pytest.raises(Exception) as caught:  # noqa: PT011 - the driver's error class
            with sns.engine.begin() as conn:
                conn.execute(text(statement))
        assert message in str(caught.value), statement
    assert verify(sns).stdout.startswith("11/11 events valid")


def test_postgresql_ddl_file_runs_as_is_and_protects_the_trail(pg_url, tmp_path):
    """What a DBA does: review sql/postgresql.sql and run it; then the tool works on it."""
    sns = build_sns(pg_url, tmp_path, init=False)
    raw = sns.engine.raw_connection()
    try:
        raw.cursor().execute((ROOT / "sql" / "postgresql.sql").read_text(encoding="utf-8"))
        raw.commit()
    finally:
        raw.close()
    first = sns.run("init").stdout  # no table to create; it stores the policy rows
    assert "created" not in first and "policy stored" in first
    assert "already exist" in sns.run("init").stdout
    make_trail(sns)
    with pytest.raises(Exception, match="append-only"):  # noqa: PT011
        with sns.engine.begin() as conn:
            conn.execute(text("DELETE FROM privacy_lock_audit"))
    assert verify(sns).stdout.startswith("11/11 events valid")


def test_init_adds_the_triggers_to_a_database_initialized_without_them(pg_url, tmp_path):
    sns = build_sns(pg_url, tmp_path)
    with sns.engine.begin() as conn:
        for name, table in (("privacy_lock_audit_no_update_delete", "privacy_lock_audit"),
                            ("privacy_lock_audit_no_truncate", "privacy_lock_audit")):
            conn.execute(text(f"DROP TRIGGER {name} ON {table}"))
    assert "append-only triggers" in sns.run("init").stdout
    assert "already exist" in sns.run("init").stdout
    with pytest.raises(Exception, match="append-only: TRUNCATE refused"):  # noqa: PT011
        with sns.engine.begin() as conn:
            conn.execute(text("TRUNCATE privacy_lock_audit"))
