"""Batch request files and live-site safety (issue: batch requests), on every dialect."""

from __future__ import annotations

import csv
import json
import os
import select as os_select
import signal
import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.pool import NullPool

from privacy_lock.render import View, echo_outcomes
from privacy_lock.schema import audit_events
from sns import IDENTITY, build_sns


@pytest.fixture
def sns(db_url, tmp_path):
    return build_sns(db_url, tmp_path)


def write(path, content):
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return str(path)


def cli_cmd(sns, *args):
    return [sys.executable, "-m", "privacy_lock", "--config", str(sns.config_path),
            "--database-url", sns.url, *args]


def test_invalid_file_reports_every_problem_and_changes_nothing(sns, tmp_path):
    u1, u2, _ = sns.users
    path = write(tmp_path / "req.csv",
                 "user_id,ticket,reason,kinds,colour\n"
                 f"{u1},T-1,lost login,diary,red\n"
                 f"{u2},T-2,,photo;album,\n"
                 "nobody,T-3,why,,\n"
                 f"{u1},T-4,dup,,\n")
    before, audit_before = sns.everything(), sns.audit_count()
    result = sns.run("apply", "--from-file", path, "--operator", "op", expect=2)
    message = result.stderr
    for fragment in ("5 problems", "nothing was changed", "line 1: unknown column 'colour'",
                     "line 3: empty reason", "line 3: unknown kind 'album'",
                     "line 4: ", "line 5: duplicate user"):
        assert fragment in message, message
    assert "Traceback" not in result.output
    assert sns.everything() == before and sns.lock_rows() == []
    assert sns.audit_count() == audit_before


def test_bom_and_japanese_reasons_round_trip_into_the_audit(sns, tmp_path):
    u1, u2, _ = sns.users
    reason = "キャリアメールが使えなくなった。日記と写真は消さずに非公開に（本人確認済み）"
    path = write(tmp_path / "req.csv", "\ufeffuser_id,ticket,reason\n"
                 f"{u1},問い合わせ-1,{reason}\n{u2},T-2,\"二行の\n理由\"\n")
    sns.run("apply", "--from-file", path, "--operator", "さくら")
    with sns.engine.connect() as conn:
        rows = conn.execute(select(audit_events.c.subject, audit_events.c.reason,
                                   audit_events.c.ticket, audit_events.c.operator)
                            .where(audit_events.c.action == "apply")).all()
    assert {(r.subject, r.reason, r.ticket, r.operator) for r in rows} == {
        (str(u1), reason, "問い合わせ-1", "さくら"), (str(u2), "二行の\n理由", "T-2", "さくら")}
    assert all(v == sns.private for v in sns.items_of(u1).values())


def test_json_file_dry_run_shows_the_plan_and_writes_nothing(sns, tmp_path):
    u1, u2, _ = sns.users
    path = write(tmp_path / "req.json", json.dumps([
        {"user_id": u1, "ticket": "T-1", "reason": "r", "kinds": "diary"},
        {"user_id": u2, "ticket": "T-2", "reason": "r"},
    ], indent=1))
    before, audit_before = sns.everything(), sns.audit_count()
    out = sns.run("apply", "--from-file", path, "--operator", "op", "--dry-run",
                  "--format", "json")
    plan = json.loads(out.stdout)
    assert [(p["user"], p["status"]) for p in plan] == [
        (str(u1), "would-lock"), (str(u2), "would-lock")]
    assert plan[0]["line"] < plan[1]["line"]  # where each object starts in the file
    assert set(plan[0]["kinds"]) == {"diary"} and plan[0]["kinds"]["diary"]["changed"] == 9
    assert plan[1]["kinds"]["photo"]["changed"] == 9
    assert sns.everything() == before and sns.lock_rows() == []
    assert sns.audit_count() == audit_before
    assert "dry run, nothing was changed" in out.stderr


def test_rerunning_the_same_file_changes_nothing(sns, tmp_path):
    u1, u2, _ = sns.users
    path = write(tmp_path / "req.csv", f"user_id\n{u1}\n{u2}\n")
    sns.run("apply", "--from-file", path, *IDENTITY)
    state, snaps = sns.everything(), sns.snapshot_rows()
    out = sns.run("apply", "--from-file", path, *IDENTITY, "--format", "json")
    assert [r["status"] for r in json.loads(out.stdout)] == ["already-locked"] * 2
    assert sns.everything() == state and sns.snapshot_rows() == snaps
    assert len(sns.lock_rows()) == 2

    revert_file = write(tmp_path / "back.csv",
                        f"user_id,lock_id\n{u1},\n,{sns.lock_rows()[1]['lock_id']}\n")
    sns.run("revert", "--from-file", revert_file, *IDENTITY)
    out = sns.run("revert", "--from-file", revert_file, *IDENTITY, "--format", "json")
    assert [r["status"] for r in json.loads(out.stdout)] == ["not-locked"] * 2


class RowLockHolder(threading.Thread):
    """Holds the site's lock on one item (a row lock; on SQLite, the database write lock)
    until released."""

    def __init__(self, sns, kind, item_id):
        super().__init__(daemon=True)
        self.sns, self.kind, self.item_id = sns, kind, item_id
        self.holding, self.release = threading.Event(), threading.Event()

    def run(self):
        engine = create_engine(self.sns.url, poolclass=NullPool)
        table = self.sns.tables[self.kind]
        id_col = self.sns.columns[self.kind][0]
        with engine.connect() as conn:
            if self.sns.url.startswith("sqlite"):
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.begin()
                conn.execute(select(table).where(table.c[id_col] == self.item_id)
                             .with_for_update()).all()
            self.holding.set()
            self.release.wait(60)
            conn.rollback()
        engine.dispose()


def test_a_row_the_site_holds_fails_only_its_request_and_the_rerun_finishes(
        sns, tmp_path, dialect):
    u1, u2, u3 = sns.users
    held = next(i for (k, i), v in sns.items_of(u2, "diary").items() if v == sns.public)
    path = write(tmp_path / "req.csv", f"user_id\n{u1}\n{u2}\n{u3}\n")
    u2_before = sns.items_of(u2)
    holder = RowLockHolder(sns, "diary", held)
    holder.start()
    assert holder.holding.wait(10)
    try:
        out = sns.run("apply", "--from-file", path, *IDENTITY, "--lock-timeout", "0.2",
                      "--retries", "1", "--output", str(tmp_path / "result.json"),
                      "--format", "json", expect=1)
    finally:
        holder.release.set()
        holder.join()
    statuses = {r["user"]: r["status"] for r in json.loads(out.stdout)}
    if dialect == "sqlite":  # the whole database was locked: every request failed, cleanly
        assert set(statuses.values()) == {"failed"}
    else:
        assert statuses == {str(u1): "locked", str(u2): "failed", str(u3): "locked"}
    assert sns.items_of(u2) == u2_before  # the failed request changed nothing
    assert "retry 1/1" in out.stderr and "requests failed" in out.stderr.splitlines()[-1]
    saved = json.loads((tmp_path / "result.json").read_text())
    assert {r["user"]: r["status"] for r in saved} == statuses
    retry_file = tmp_path / "result.failed.csv"
    with retry_file.open(encoding="utf-8") as fh:
        retry_rows = list(csv.DictReader(fh))
    assert {r["user_id"] for r in retry_rows} == {u for u, s in statuses.items() if s == "failed"}
    assert all(r["ticket"] == "T-1" and r["operator"] == "tester" for r in retry_rows)

    sns.run("apply", "--from-file", str(retry_file))
    for user in sns.users:
        assert all(v == sns.private for v in sns.items_of(user).values())
    assert len(sns.lock_rows()) == 3


def test_pause_file_holds_the_run_between_chunks(sns, tmp_path):
    user = sns.users[0]
    pause = tmp_path / "pause"
    pause.touch()
    before = sns.items_of(user)
    proc = subprocess.Popen(cli_cmd(sns, "apply", str(user), *IDENTITY, "--pause-file",
                                    str(pause), "--chunk-size", "4"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Wait for the tool to say it is paused (however long start-up takes on a loaded machine),
    # reading the raw pipe so that nothing sits unseen in a buffer.
    said = b""
    deadline = time.monotonic() + 120
    while b"paused:" not in said and time.monotonic() < deadline and proc.poll() is None:
        if os_select.select([proc.stderr], [], [], 0.5)[0]:
            said += os.read(proc.stderr.fileno(), 65536)
    assert b"paused:" in said, said
    time.sleep(0.5)  # paused means paused: nothing moves while the file is there
    assert proc.poll() is None  # still waiting
    assert sns.items_of(user) == before
    pause.unlink()
    out, rest = proc.communicate(timeout=60)
    err = (said + rest).decode()
    assert proc.returncode == 0, err
    assert "paused:" in err and str(pause) in err and "resumed" in err
    assert all(v == sns.private for v in sns.items_of(user).values())


def test_ctrl_c_stops_after_the_current_chunk_and_a_rerun_finishes(sns, tmp_path):
    u1, u2, _ = sns.users
    path = write(tmp_path / "req.csv", f"user_id\n{u1}\n{u2}\n")
    private_before = sum(1 for v in sns.items_of(u1).values() if v == sns.private)
    proc = subprocess.Popen(cli_cmd(sns, "apply", "--from-file", path, *IDENTITY,
                                    "--chunk-size", "2", "--sleep", "0.3"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not sns.snapshot_rows() and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted:") and "re-run the same command" in last
    snaps = sns.snapshot_rows()
    assert 0 < len(snaps) < 18  # stopped part-way through the first user
    hidden = [k for k, v in sns.items_of(u1).items() if v == sns.private]
    assert len(hidden) == len(snaps) + private_before  # every hidden item has its snapshot

    sns.run("apply", "--from-file", path, *IDENTITY)
    assert all(v == sns.private for u in (u1, u2) for v in sns.items_of(u).values())
    assert len(sns.lock_rows()) == 2
    assert "events valid" in sns.run("audit", "verify").stdout


def test_lock_timeout_is_set_for_the_chunk_transaction(db_url, tmp_path, dialect):
    """The short lock wait is really in force inside the chunk (so the site wins)."""
    from privacy_lock.db import create_tool_engine
    from privacy_lock.pacing import Pacer

    engine = create_tool_engine(db_url)
    query = {"postgresql": "SHOW lock_timeout", "sqlite": "PRAGMA busy_timeout",
             "mysql": "SELECT @@innodb_lock_wait_timeout"}[dialect]
    with engine.connect() as conn:
        seen = Pacer(lock_timeout=3).chunk(conn, lambda: conn.execute(text(query)).scalar())
    engine.dispose()
    assert str(seen) == {"postgresql": "3s", "sqlite": "3000", "mysql": "3"}[dialect]


@pytest.mark.parametrize("accounts", [True, False], ids=["accounts", "no-accounts"])
def test_a_file_names_unknown_users_and_locks_found_by_a_few_queries(sns, tmp_path, accounts):
    u1, u2, u3 = sns.users
    if not accounts:  # then a user is known by owning content or having a lock
        text = sns.config_path.read_text(encoding="utf-8")
        sns.config_path.write_text(text.replace('[accounts]\ntable = "users"\nid = "id"\n', ""),
                                   encoding="utf-8")
    sns.apply(u3)
    for kind in sns.tables:
        for item in sns.items_of(u3, kind):
            sns.delete(kind, item[1])  # u3 now owns nothing, but has a lock
    lock = sns.lock_rows()[0]["lock_id"]
    path = write(tmp_path / "req.csv", f"user_id\n{u1}\n777\n{u3}\n0888\n{u2}\n")
    result = sns.run("apply", "--from-file", path, *IDENTITY, expect=2)
    assert "line 3: unknown user '777'" in result.stderr
    assert "line 5: unknown user '888'" in result.stderr
    assert "2 problems" in result.stderr
    path = write(tmp_path / "back.csv", f"lock_id\n{lock}\n4242\n")
    result = sns.run("revert", "--from-file", path, *IDENTITY, expect=2)
    assert "line 3: no lock 4242" in result.stderr and "1 problem," in result.stderr
    assert len(sns.lock_rows()) == 1


@pytest.mark.parametrize("fmt", ["json", "csv", "table"])
def test_outcomes_are_built_only_in_the_shape_their_format_prints(fmt, capsys):
    rows = [{"line": 2, "user": "42", "status": "locked", "kind": "diary", "changed": 3}]
    payload = [{"line": 2, "user": "42", "status": "locked", "kinds": {"diary": {"changed": 3}},
                "note": "é"}]

    def never():
        raise AssertionError("built for a format that does not print it")

    echo_outcomes(View(fmt), never if fmt == "json" else lambda: rows,
                  (lambda: payload) if fmt == "json" else never)
    out = capsys.readouterr().out
    if fmt == "json":
        assert out == json.dumps(payload, ensure_ascii=False, indent=2) + "\n"
    else:
        assert out.splitlines()[0].split("," if fmt == "csv" else None)[:2] == ["line", "user"]


def test_chunks_of_every_shape_leave_no_compiled_statement_behind(sns, monkeypatch):
    """A cached statement keeps the values of its first run, and a chunk statement's values
    are its keys: the tool's engines cache none (a 30,000-user revert on MariaDB peaked at
    174 MB with SQLAlchemy's cache, 110 MB without), and a batch of chunks of many shapes,
    every statement compiled afresh, does exactly its work."""
    from helpers import add_users, requests_for, run_engine
    from privacy_lock import db
    from privacy_lock.pacing import Pacer

    users = [*sns.users, *add_users(sns, 12)]
    before = {u: sns.items_of(u) for u in users}
    engines = []
    create = db.create_tool_engine
    monkeypatch.setattr(db, "create_tool_engine",
                        lambda *a, **k: engines.append(create(*a, **k)) or engines[-1])
    result = run_engine(sns, "apply", requests_for(*users), Pacer(size=13))
    assert {o.status for o in result.outcomes} == {"locked"}
    for user in users:
        assert set(sns.items_of(user).values()) == {sns.private}
        assert len(sns.items_of(user)) == len(before[user])
    assert engines and all(e._compiled_cache is None for e in engines)
