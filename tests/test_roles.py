"""The least-privilege database role: the tool works with exactly the documented grants, and the
audit trail cannot be edited through them (PostgreSQL role, MariaDB/MySQL account)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import isolated_url
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from privacy_lock.cli import cli
from privacy_lock.roles import MYSQL_APPEND_ONLY_TRIGGERS, PSQL_ROLE, grants_sql
from sns import IDENTITY, build_sns

ROOT = Path(__file__).resolve().parent.parent


def test_roles_file_matches_the_generator():
    on_disk = (ROOT / "sql" / "roles-postgresql.sql").read_text(encoding="utf-8")
    assert on_disk == grants_sql("postgresql", PSQL_ROLE), (
        "sql/roles-postgresql.sql drifted from privacy_lock/roles.py: regenerate it with "
        "python -c 'from privacy_lock.roles import *; print(grants_sql(\"postgresql\", "
        "PSQL_ROLE), end=\"\")' > sql/roles-postgresql.sql")


def test_grants_for_sqlite_are_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["sql", "--dialect", "sqlite", "--grants", "x"])
    assert result.exit_code == 2 and "SQLite has no users or grants" in result.stderr


def run_as(sns, url: str, *args: str, expect: int = 0):
    result = CliRunner().invoke(
        cli, ["--config", str(sns.config_path), "--database-url", url, *args],
        catch_exceptions=False)
    assert result.exit_code == expect, (result.exit_code, result.output)
    return result


def grants_for(sns, dialect: str, role: str) -> str:
    """What a DBA runs: the printed grants for the content map, as a script."""
    return run_as(sns, sns.url, "sql", "--dialect", dialect, "--grants", role).stdout


def statements(script: str) -> list[str]:
    """The SQL statements of a grants script (one per line; comments dropped)."""
    out = []
    for line in script.splitlines():
        code = line.split("--", 1)[0].strip()
        if code:
            out.append(code.rstrip(";"))
    return out


def refused(engine, statement: str) -> str:
    """Run ``statement``; return the database's refusal (the test fails if it is accepted)."""
    try:
        with engine.begin() as conn:
            conn.execute(text(statement))
    except Exception as exc:  # noqa: BLE001 - the driver's own error class
        return str(getattr(exc, "orig", exc))
    pytest.fail(f"accepted: {statement}")


@pytest.fixture
def pg_url(tmp_path):
    yield from isolated_url("postgresql", tmp_path)


def test_postgresql_role_can_apply_and_revert_but_not_touch_the_trail(pg_url, tmp_path):
    owner = build_sns(pg_url, tmp_path)  # tables created by the owner (a DBA), as documented
    role = f"pl_t_role_{uuid.uuid4().hex[:10]}"
    schema = make_url(pg_url).query["options"].split("=", 1)[1]
    admin = owner.engine
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
            conn.execute(text(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"'))
            # sql/roles-postgresql.sql as psql would run it with -v tool_role=ROLE
            script = (ROOT / "sql" / "roles-postgresql.sql").read_text(encoding="utf-8")
            for statement in statements(script.replace(PSQL_ROLE, f'"{role}"')):
                conn.execute(text(statement))
            content = [s for s in statements(grants_for(owner, "postgresql", role))
                       if " ON privacy_lock_" not in s and "SEQUENCE" not in s]
            assert any("UPDATE (visibility) ON diaries" in s for s in content)
            for statement in content:
                conn.execute(text(statement))
        role_url = make_url(pg_url).set(username=role).render_as_string(hide_password=False)
        as_role = create_engine(role_url, poolclass=NullPool)
        with as_role.connect() as conn:
            assert conn.execute(text("SELECT current_user")).scalar() == role

        # the tool works through the role: apply, status, two-person revert, verify, report
        user = owner.users[0]
        before = owner.everything()
        run_as(owner, role_url, "apply", str(user), *IDENTITY)
        assert all(v == owner.private for v in owner.items_of(user).values())
        run_as(owner, role_url, "status", str(user))
        run_as(owner, role_url, "revert", "--user", str(user), *IDENTITY)
        assert owner.everything() == before
        # two-person revert through the role too
        run_as(owner, role_url, "apply", str(user), *IDENTITY)
        # the policy is the database's: the role may only read it, the owner changes it
        run_as(owner, role_url, "policy", "set", "revert_requires_approval", "true", *IDENTITY,
               expect=1)
        run_as(owner, role_url, "policy", "show")
        run_as(owner, pg_url, "policy", "set", "revert_requires_approval", "true", *IDENTITY)
        run_as(owner, role_url, "revert", "--user", str(user), *IDENTITY)
        run_as(owner, role_url, "requests")
        run_as(owner, role_url, "approve", "1", "--operator", "second")
        assert owner.everything() == before
        run_as(owner, role_url, "audit", "verify")
        run_as(owner, role_url, "audit", "report", "--format", "csv")

        # nor what revert depends on: stored originals, who took a lock, who asked (and what
        # an account with more rights changes there, the seals catch: test_integrity.py)
        for statement in ("UPDATE privacy_lock_snapshots SET original_text = 'public'",
                          "UPDATE privacy_lock_snapshots SET item_id = '1'",
                          "UPDATE privacy_lock_locks SET operator = 'mallory'",
                          "UPDATE privacy_lock_revert_requests SET requested_by = 'mallory'"):
            assert "permission denied" in refused(as_role, statement), statement
        # and it cannot edit the trail, disable its guard, or touch anything else
        for statement in ("UPDATE privacy_lock_audit SET reason = 'x'",
                          "DELETE FROM privacy_lock_audit", "TRUNCATE privacy_lock_audit",
                          "DELETE FROM privacy_lock_locks", "DELETE FROM privacy_lock_snapshots",
                          "UPDATE privacy_lock_policy SET value = 'false'",
                          "INSERT INTO privacy_lock_policy VALUES ('x', 'y', 'z', 'w')"):
            assert "permission denied" in refused(as_role, statement), statement
        assert "must be owner" in refused(
            as_role, "ALTER TABLE privacy_lock_audit DISABLE TRIGGER USER")
        assert "only moves forward along the trail" in refused(
            as_role, "UPDATE privacy_lock_audit_head SET seq = seq - 1")
        assert "permission denied" in refused(as_role, "UPDATE diaries SET title = 'x'")
        assert "permission denied" in refused(as_role, "SELECT name FROM users")
        assert "permission denied" in refused(as_role, "DELETE FROM diaries")
        assert "must be owner" in refused(as_role, "DROP TABLE privacy_lock_audit")
        as_role.dispose()
        assert run_as(owner, pg_url, "audit", "verify").stdout.startswith(
            f"{owner.audit_count()}/{owner.audit_count()} events valid")
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP OWNED BY "{role}"'))
            conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))


@pytest.fixture
def mysql_url(tmp_path):
    yield from isolated_url("mysql", tmp_path)


def test_mariadb_account_with_the_documented_grants(mysql_url, tmp_path):
    owner = build_sns(mysql_url, tmp_path)
    account = f"pl_t_{uuid.uuid4().hex[:10]}"
    admin = owner.engine
    try:
        with admin.begin() as conn:
            conn.execute(text(f"CREATE USER '{account}'@'%'"))
            for statement in statements(grants_for(owner, "mysql", account)):
                conn.execute(text(statement))
        user_url = make_url(mysql_url).set(username=account).render_as_string(
            hide_password=False)
        as_user = create_engine(user_url, poolclass=NullPool)

        user = owner.users[0]
        before = owner.everything()
        run_as(owner, user_url, "apply", str(user), *IDENTITY)
        assert all(v == owner.private for v in owner.items_of(user).values())
        run_as(owner, user_url, "revert", "--user", str(user), *IDENTITY)
        assert owner.everything() == before
        run_as(owner, user_url, "audit", "verify")

        for statement in ("UPDATE privacy_lock_audit SET reason = 'x'",
                          "DELETE FROM privacy_lock_audit", "TRUNCATE privacy_lock_audit",
                          "DELETE FROM privacy_lock_locks", "UPDATE diaries SET title = 'x'",
                          "SELECT name FROM users", "DROP TABLE privacy_lock_audit"):
            assert "command denied" in refused(as_user, statement), statement
        as_user.dispose()
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP USER IF EXISTS '{account}'@'%'"))


def test_mariadb_optional_triggers_from_docs_refuse_edits_even_by_root(mysql_url, tmp_path):
    doc = (ROOT / "docs" / "DBA.md").read_text(encoding="utf-8")
    assert all(statement in doc for statement in MYSQL_APPEND_ONLY_TRIGGERS)
    sns = build_sns(mysql_url, tmp_path)
    with sns.engine.begin() as conn:
        for statement in MYSQL_APPEND_ONLY_TRIGGERS:
            conn.execute(text(statement))
    sns.run("apply", str(sns.users[0]), *IDENTITY)
    sns.run("revert", "--user", str(sns.users[0]), *IDENTITY)
    assert "append-only: UPDATE refused" in refused(
        sns.engine, "UPDATE privacy_lock_audit SET reason = 'x'")
    assert "append-only: DELETE refused" in refused(sns.engine, "DELETE FROM privacy_lock_audit")
    # lock, apply, revert: one small user is one transaction each way (docs/AUDIT.md)
    assert sns.run("audit", "verify").stdout.startswith("3/3 events valid")
