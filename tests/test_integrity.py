"""What revert depends on is bound to the lock and sealed in the trail (issue 13, items 1, 3, 6).

Each attack is done the way an operator with database access (or a careless colleague editing
the config) would do it, on every dialect; each test asserts what the database holds after.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from click.testing import CliRunner
from conftest import SERVER_URLS, required, server_problem
from sqlalchemy import create_engine, insert, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from privacy_lock.cli import cli
from privacy_lock.schema import audit_events, locks, snapshots
from sns import IDENTITY, build_sns


@pytest.fixture
def sns(db_url, tmp_path):
    return build_sns(db_url, tmp_path)


def _execute(sns, statement, params=None):
    with sns.engine.begin() as conn:
        return conn.execute(statement, params or {}).rowcount


def _verify_and_revert_refuse(sns, user, why: str) -> None:
    """audit verify names ``why``; revert of ``user`` refuses with it and changes nothing."""
    before = sns.everything()
    assert why in sns.run("audit", "verify", expect=1).stderr
    out = sns.run("revert", "--user", str(user), *IDENTITY, expect=1)
    assert "refusing to revert, nothing was changed" in out.stderr and why in out.stderr
    assert sns.everything() == before
    assert all(row["state"] == "active" for row in sns.lock_rows())


def test_an_edited_original_makes_revert_refuse_and_changes_nothing(sns):
    user = sns.users[0]
    sns.apply(user)
    hidden = sns.items_of(user)
    snap = next(s for s in sns.snapshot_rows() if s["original_text"] not in (None, "public"))
    # An operator with database access turns a friends-only original into public.
    assert _execute(sns, update(snapshots).where(
        snapshots.c.snapshot_id == snap["snapshot_id"]).values(original_text="public")) == 1
    verified = sns.run("audit", "verify", expect=1)
    assert "BROKEN: sealed rows were changed: the snapshots of lock" in verified.stderr
    out = sns.run("revert", "--user", str(user), *IDENTITY, expect=1)
    assert "refusing to revert, nothing was changed" in out.stderr
    assert f"lock {snap['lock_id']}" in out.stderr
    assert sns.items_of(user) == hidden  # nothing was restored
    assert all(row["state"] == "active" for row in sns.lock_rows())
    assert all(s["state"] == "locked" for s in sns.snapshot_rows())


def test_a_snapshot_row_added_by_hand_makes_revert_refuse(sns):
    user, other = sns.users[0], sns.users[1]
    sns.apply(user)
    lock_id = sns.lock_rows()[0]["lock_id"]
    # Smuggle another user's public diary into the lock, with a "public" original.
    item = next(i for (k, i), v in sns.items_of(other, "diary").items() if v == sns.public)
    _execute(sns, insert(snapshots).values(
        lock_id=lock_id, kind="diary", item_id=str(item), original_text="public",
        state="locked", snapshotted_at="2026-01-01T00:00:00.000000Z"))
    _verify_and_revert_refuse(sns, user, "sealed by no event")


def test_an_edited_lock_binding_makes_revert_refuse(sns):
    user = sns.users[0]
    sns.apply(user)
    row = sns.lock_rows()[0]
    bindings = json.loads(row["binding"])
    # Point the diary binding at the photos table: a diary's original would land in a photo.
    bindings["diary"].update(table="photos", owner="owner_id", visibility="scope")
    _execute(sns, update(locks).where(locks.c.lock_id == row["lock_id"])
             .values(binding=json.dumps(bindings)))
    _verify_and_revert_refuse(sns, user, "content binding was edited")


def test_editing_who_took_a_lock_is_caught_by_verify(sns):
    sns.apply(sns.users[0])
    assert "seals: 2 sealed" in sns.run("audit", "verify").stdout
    _execute(sns, update(locks).values(operator="mallory", ticket="SUP-0"))
    assert "lock 1 no longer matches what event" in sns.run("audit", "verify", expect=1).stderr


def test_each_lock_records_its_binding_and_seals_it(sns):
    user = sns.users[0]
    sns.apply(user)
    row = sns.lock_rows()[0]
    assert json.loads(row["binding"]) == {
        "diary": {"table": "diaries", "schema": None, "id": "id", "owner": "user_id",
                  "visibility": "visibility", "private": sns.private, "value_kind": "text"},
        "photo": {"table": "photos", "schema": None, "id": "id", "owner": "owner_id",
                  "visibility": "scope", "private": sns.private, "value_kind": "text"},
    }
    with sns.engine.connect() as conn:
        details = [json.loads(d) for d in conn.execute(
            select(audit_events.c.details).where(audit_events.c.action.in_(("lock", "apply")))
        ).scalars()]
    assert "lock" in details[0]["sealed"]
    assert details[1]["sealed"]["snapshots"] == len(sns.snapshot_rows())


@pytest.mark.parametrize("vis_style", ["text", "code"])
def test_a_changed_private_value_in_the_config_never_strands_an_item(db_url, tmp_path,
                                                                      vis_style):
    sns = build_sns(db_url, tmp_path, vis_style=vis_style)
    user = sns.users[0]
    before = sns.items_of(user)
    sns.apply(user)
    config = sns.config_path.read_text(encoding="utf-8")
    changed = (config.replace('private = "self"', 'private = "friends"') if vis_style == "text"
               else config.replace("private = 9", "private = 1"))
    assert changed != config
    sns.config_path.write_text(changed, encoding="utf-8")
    # extending the lock under the other mapping is refused, and changes nothing
    out = sns.run("apply", str(user), *IDENTITY, expect=1)
    assert "was taken with diary = diaries" in out.stderr
    assert "revert lock" in out.stderr
    # revert uses the lock's own record: every item back exactly, no "conflict"
    out = sns.run("revert", "--user", str(user), *IDENTITY, "--format", "json")
    kinds = json.loads(out.stdout)[0]["kinds"]
    assert all(k["conflicts"] == 0 for k in kinds.values())
    assert sns.items_of(user) == before


def test_revert_refuses_when_the_live_schema_no_longer_matches_the_lock(sns, dialect):
    user = sns.users[0]
    sns.apply(user)
    hidden = sns.items_of(user)
    rename = "ALTER TABLE photos RENAME COLUMN scope TO audience"
    _execute(sns, text(rename))
    sns.config_path.write_text(sns.config_path.read_text(encoding="utf-8").replace(
        'visibility = "scope"', 'visibility = "audience"'), encoding="utf-8")
    out = sns.run("revert", "--user", str(user), *IDENTITY, expect=2)
    assert "photos.scope no longer exists; nothing was changed" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 2  # the database line and the error
    assert set(sns.items_of(user, "diary").items()) <= set(hidden.items())
    assert all(v == sns.private for v in sns.items_of(user, "diary").values())
    assert sns.lock_rows()[0]["state"] == "active"


# --- MariaDB/MySQL: exact owners whatever the collation ----------------------------------------


@pytest.fixture(params=["utf8mb4_unicode_ci", "utf8mb4_general_ci", "utf8mb4_bin"])
def mysql_collated_url(request):
    problem = server_problem("mysql")
    if problem:
        if "mysql" in required():
            pytest.fail(problem)
        pytest.skip(problem)
    name = f"pl_t_{int(time.time())}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(SERVER_URLS["mysql"], poolclass=NullPool)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 "
                          f"COLLATE {request.param}"))
    try:
        yield make_url(SERVER_URLS["mysql"]).set(database=name).render_as_string(
            hide_password=False), request.param
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


def test_mysql_owners_match_exactly_whatever_the_collation(mysql_collated_url, tmp_path):
    url, collation = mysql_collated_url
    sns = build_sns(url, tmp_path, id_style="uuid")
    with sns.engine.begin() as conn:
        # The site's columns in a collation other than the tool tables' (as on a real site).
        for table, column in (("diaries", "user_id"), ("photos", "owner_id")):
            conn.execute(text(f"ALTER TABLE {table} MODIFY {column} VARCHAR(36) CHARACTER SET "
                              "utf8mb4 COLLATE utf8mb4_general_ci NOT NULL"))
        # Look-alike owners: another case, and a trailing space (PAD SPACE collations).
        conn.execute(text("INSERT INTO diaries (id, user_id, visibility, title) VALUES "
                          "('look-1', 'U-ALICE', 'public', 't'), "
                          "('look-2', 'u-alice ', 'public', 't')"))
    user = sns.users[0]
    assert user == "u-alice"
    before = sns.items_of(user)
    sns.apply(user)
    assert sns.vis("diary", "look-1") == "public" and sns.vis("diary", "look-2") == "public"
    assert {s["item_id"] for s in sns.snapshot_rows()}.isdisjoint({"look-1", "look-2"})
    sns.apply(*sns.users)  # a shared chunk too
    assert sns.vis("diary", "look-1") == "public" and sns.vis("diary", "look-2") == "public"
    sns.run("revert", "--user", str(user), *IDENTITY)
    assert sns.items_of(user) == before
    assert len(sns.lock_rows()) == 3, collation  # no empty lock left by a failed apply


def _requested_by_alice(sns):
    """User 0 locked, the two-person rule on, and a revert of it filed by alice (request 1)."""
    user = sns.users[0]
    sns.apply(user)
    sns.run("policy", "set", "revert_requires_approval", "true", *IDENTITY)
    sns.run("revert", "--user", str(user), "--operator", "alice", "--ticket", "T-2",
            "--reason", "back")
    return user


def test_a_rewritten_requester_cannot_let_alice_approve_her_own_revert(sns):
    user = _requested_by_alice(sns)
    hidden = sns.items_of(user)
    with sns.engine.begin() as conn:
        conn.execute(text("UPDATE privacy_lock_revert_requests SET requested_by = 'bob'"))
    out = sns.run("approve", "1", "--operator", "alice", expect=1)
    assert "refusing to approve, nothing was changed: revert request 1 no longer matches" in (
        out.stderr)
    assert sns.items_of(user) == hidden and sns.lock_rows()[0]["state"] == "active"
    with sns.engine.connect() as conn:
        assert conn.execute(text("SELECT state FROM privacy_lock_revert_requests")).scalar() == (
            "pending")
    assert "revert request 1 no longer matches" in sns.run("audit", "verify", expect=1).stderr


def test_a_rewritten_approver_is_caught_by_verify(sns):
    _requested_by_alice(sns)
    sns.run("approve", "1", "--operator", "bob")
    assert "events valid" in sns.run("audit", "verify").stdout
    with sns.engine.begin() as conn:
        conn.execute(text("UPDATE privacy_lock_revert_requests SET approved_by = 'carol'"))
    assert "who asked or who approved" in sns.run("audit", "verify", expect=1).stderr


LOOKALIKE_CONFIG = """[accounts]
table = "users"
id = "id"

[content.diary]
table = "diaries"
id = "id"
owner = "user_id"
visibility = "visibility"
private = "self"

[policy]
revert_requires_approval = false
"""


def _lookalike_site(db_url, dialect):
    """Two people, 'alice' and 'ALICE', whose ids are equal under the owner column's
    case-insensitive collation (SQLite NOCASE, a PostgreSQL nondeterministic ICU collation,
    MariaDB's default utf8mb4_general_ci); the accounts table tells them apart."""
    engine = create_engine(db_url, poolclass=NullPool)
    owner_type = {
        "sqlite": "VARCHAR(36) COLLATE NOCASE",
        "postgresql": "VARCHAR(36) COLLATE ci",
        "mysql": "VARCHAR(36) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci",
    }[dialect]
    id_type = ("VARCHAR(36) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin" if dialect == "mysql"
               else "VARCHAR(36)")
    with engine.begin() as conn:
        if dialect == "postgresql":
            conn.execute(text("CREATE COLLATION ci (provider = icu, "
                              "locale = 'und-u-ks-level2', deterministic = false)"))
        conn.execute(text(f"CREATE TABLE users (id {id_type} PRIMARY KEY)"))
        conn.execute(text(f"CREATE TABLE diaries (id INTEGER PRIMARY KEY, user_id {owner_type} "
                          "NOT NULL, visibility VARCHAR(16))"))
        conn.execute(text("CREATE INDEX ix_diaries_owner ON diaries (user_id, id)"))
        conn.execute(text("INSERT INTO users (id) VALUES ('alice'), ('ALICE')"))
        conn.execute(text("INSERT INTO diaries (id, user_id, visibility) VALUES "
                          "(1, 'alice', 'public'), (2, 'alice', 'friends'), "
                          "(3, 'ALICE', 'friends'), (4, 'ALICE', 'public')"))
    return engine


def test_lookalike_owners_stay_two_people_in_every_command(db_url, dialect, tmp_path):
    engine = _lookalike_site(db_url, dialect)
    config = tmp_path / "privacy-lock.toml"
    config.write_text(LOOKALIKE_CONFIG, encoding="utf-8")

    def run(*args, expect=0):
        result = CliRunner().invoke(cli, ["--config", str(config), "--database-url", db_url,
                                          *args], catch_exceptions=False)
        assert result.exit_code == expect, result.output
        return result

    def rows():
        with engine.connect() as conn:
            return dict(conn.execute(text("SELECT id, visibility FROM diaries")).all())

    def snapshots_by_lock():
        with engine.connect() as conn:
            return sorted(conn.execute(text(
                "SELECT l.subject, s.item_id, s.original_text FROM privacy_lock_snapshots s "
                "JOIN privacy_lock_locks l ON l.lock_id = s.lock_id")).all())

    before = rows()
    run("init")
    dry = json.loads(run("apply", "alice", "ALICE", "--dry-run", "--format", "json").stdout)
    assert [(r["user"], r["kinds"]["diary"]["changed"]) for r in dry] == [("alice", 2),
                                                                          ("ALICE", 2)]
    run("apply", "alice", "ALICE", *IDENTITY)  # one shared chunk
    assert snapshots_by_lock() == [("ALICE", "3", "friends"), ("ALICE", "4", "public"),
                                   ("alice", "1", "public"), ("alice", "2", "friends")]
    run("revert", "--user", "alice", "--user", "ALICE", *IDENTITY)
    assert rows() == before
    # one at a time, in slices: alice's run never touches ALICE's items
    run("apply", "alice", *IDENTITY, "--chunk-size", "1")
    assert rows() == {**before, 1: "self", 2: "self"}
    status = json.loads(run("status", "ALICE", "--format", "json").stdout)
    assert status[0]["kinds"][0]["visible"] == 2 and status[0]["lock"]["state"] == "reverted"
    run("apply", "ALICE", *IDENTITY)
    run("revert", "--user", "ALICE", *IDENTITY, "--chunk-size", "1")
    assert rows() == {**before, 1: "self", 2: "self"}
    run("revert", "--user", "alice", *IDENTITY)
    assert rows() == before
    assert "events valid" in run("audit", "verify").stdout
    engine.dispose()
