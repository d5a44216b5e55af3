"""Least-privilege grants for the database role (or MySQL/MariaDB account) the tool runs as.

What the tool needs and why, and nothing else:

- the audit trail: SELECT and INSERT only (events are appended, never changed);
- the audit head row: SELECT and UPDATE (every append moves it forward; on PostgreSQL a trigger
  refuses any other change);
- locks, snapshots and revert requests: SELECT, INSERT, and UPDATE of the columns whose value
  changes (state, outcome, approval; a lock's bindings when it gains a kind) — never a stored
  original, who took a lock or who asked for a revert — and no DELETE (the seals in the trail
  catch what an account with more rights changes: seal.py);
- the stored policy (the two-person rule): SELECT only. Changing it (``privacy-lock policy
  set``, audited) takes the tables' owner's login, as ``init`` does: an operator working
  through this role cannot switch the rule off, through the tool or by hand;
- each mapped content table: SELECT on the id, owner and visibility columns and UPDATE on the
  visibility column only (``SELECT ... FOR UPDATE`` needs UPDATE on one column, which this is);
- the accounts table, if configured: SELECT on its id column;
- MySQL/MariaDB only: table-level REFERENCES on those tables, because reading a table's
  definition (SHOW CREATE TABLE) needs a table-level privilege and this one touches no data.

Tables are created by their owner (``privacy-lock init`` run by a DBA), never by the tool's role:
only the owner can disable the append-only triggers, so the role must not own the tables.
``sql/roles-postgresql.sql`` is ``grants_sql("postgresql", PSQL_ROLE)``; a test keeps it in step.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.dialects import mysql, postgresql

from privacy_lock.config import Accounts, ContentKind
from privacy_lock.errors import UsageError
from privacy_lock.schema import (
    audit_events,
    audit_head,
    find_usage,
    locks,
    policy,
    revert_requests,
    snapshots,
)

PSQL_ROLE = ':"tool_role"'  # a psql variable: psql -v tool_role=NAME -f sql/roles-postgresql.sql

TOOL_TABLE_PRIVILEGES = (
    (audit_events.name, "SELECT, INSERT", "append-only: never UPDATE, DELETE or TRUNCATE"),
    (audit_head.name, "SELECT, UPDATE", "moves forward one event per append"),
    (locks.name, "SELECT, INSERT, UPDATE (active_subject, state, updated_at, reverted_at, "
     "reverted_by, binding)", "state changes; who took it, why and when never change"),
    (snapshots.name, "SELECT, INSERT, UPDATE (state, resolved_at)",
     "outcome changes; a stored original never changes"),
    (revert_requests.name, "SELECT, INSERT, UPDATE (state, open_lock_id, approved_by, "
     "approved_os_user, approved_host, approved_db_user, approved_at, finished_at, outcome)",
     "approval and outcome; who asked never changes"),
    (policy.name, "SELECT", "read only: `policy set` runs as the tables' owner"),
    (find_usage.name, "SELECT, INSERT", "the find rate limit: rows are only added"),
)
# PostgreSQL: the BIGSERIAL sequences behind the tool tables' ids (nextval needs USAGE).
PG_SEQUENCES = (
    "privacy_lock_locks_lock_id_seq",
    "privacy_lock_snapshots_snapshot_id_seq",
    "privacy_lock_revert_requests_request_id_seq",
    "privacy_lock_find_usage_usage_id_seq",
)

# Optional on MySQL/MariaDB (docs/DBA.md): refuse UPDATE and DELETE of audit events even from
# accounts that hold those privileges. TRUNCATE fires no trigger there; only grants stop it.
MYSQL_APPEND_ONLY_TRIGGERS = (
    "CREATE TRIGGER privacy_lock_audit_no_update BEFORE UPDATE ON privacy_lock_audit "
    "FOR EACH ROW SIGNAL SQLSTATE '45000' "
    "SET MESSAGE_TEXT = 'privacy_lock_audit is append-only: UPDATE refused'",
    "CREATE TRIGGER privacy_lock_audit_no_delete BEFORE DELETE ON privacy_lock_audit "
    "FOR EACH ROW SIGNAL SQLSTATE '45000' "
    "SET MESSAGE_TEXT = 'privacy_lock_audit is append-only: DELETE refused'",
)

_EXAMPLE_CONTENT = {
    "diary": ContentKind("diary", "diaries", "id", "user_id", "visibility", "self"),
    "photo": ContentKind("photo", "photos", "id", "owner_id", "scope", "self"),
}


def quote_role(dialect: str, role: str) -> str:
    """The role as SQL: a quoted identifier (PostgreSQL) or 'user'@'host' (MySQL/MariaDB)."""
    role = role.strip()
    if not role:
        raise UsageError("--grants needs a role (PostgreSQL) or user[@host] (MySQL/MariaDB)")
    if role == PSQL_ROLE:
        return role
    if dialect == "postgresql":
        return '"' + role.replace('"', '""') + '"'
    user, _, host = role.rpartition("@") if "@" in role else (role, "", "%")
    user, host = user.strip("'`\""), host.strip("'`\"")

    def literal(text: str) -> str:
        return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"
    return f"{literal(user)}@{literal(host)}"


def grants_sql(
    dialect: str,
    role: str,
    content: Mapping[str, ContentKind] | None = None,
    accounts: Accounts | None = None,
) -> str:
    """The GRANT script for ``role`` on ``dialect``; content grants from the content map.

    Without a content map the content section is a commented example (the demo's tables).
    """
    if dialect not in ("postgresql", "mysql"):
        raise UsageError("grants are for postgresql and mysql; SQLite has no users or grants")
    who = quote_role(dialect, role)
    prep = (postgresql if dialect == "postgresql" else mysql).dialect().identifier_preparer
    q = prep.quote
    pg = dialect == "postgresql"
    out = [
        f"-- privacy-lock: least-privilege grants for the tool's database "
        f"{'role' if pg else 'account'} ({dialect}).",
        f"-- Generated by `privacy-lock sql --dialect {dialect} --grants ROLE`; see docs/DBA.md.",
    ]
    if role == PSQL_ROLE:
        out += [
            "-- :\"tool_role\" is a psql variable naming the role; run as the tables' owner:",
            "--   psql -v tool_role=privacy_lock_tool -d sns -f sql/roles-postgresql.sql",
            "-- `privacy-lock --config privacy-lock.toml sql --dialect postgresql --grants NAME`",
            "-- prints this script with the role filled in and the content grants of your map.",
        ]
    if pg:
        out += [
            "--",
            "-- Create the role yourself (your password policy), and never make it the owner",
            "-- of the tables: only the owner can disable the append-only triggers.",
            f"--   CREATE ROLE {who} LOGIN PASSWORD '...';",
            "-- If the tables are not in schema public, also:",
            f"--   GRANT USAGE ON SCHEMA sns TO {who};",
        ]
    else:
        out += [
            "-- Run it connected to the target database (mysql sns < grants.sql), as an account",
            "-- allowed to grant. Create the account yourself first:",
            f"--   CREATE USER {who} IDENTIFIED BY '...';",
            "-- MySQL/MariaDB has no TRUNCATE or UPDATE guard beyond these grants: keep DROP,",
            "-- DELETE, UPDATE, ALTER and TRIGGER on privacy_lock_audit away from every account",
            "-- but the DBA's.",
        ]
    out += ["", "-- The tool's own tables."]
    for table, privileges, why in TOOL_TABLE_PRIVILEGES:
        if pg:
            out.append(f"REVOKE ALL ON {q(table)} FROM {who};")
        out.append(f"GRANT {privileges} ON {q(table)} TO {who};  -- {why}")
    if pg:
        out.append(f"GRANT USAGE ON SEQUENCE {', '.join(PG_SEQUENCES)} TO {who};")
    out += ["", "-- The mapped content: read id/owner/visibility, change visibility only."]
    example = content is None
    statements = _content_grants(dialect, who, content or _EXAMPLE_CONTENT,
                                 accounts if content is not None else Accounts("users", "id"))
    if example:
        out.append("-- Example for the demo's tables; generate yours from your content map:")
        statements = [f"-- {line}" for line in statements]
    out += statements
    out.append("")
    return "\n".join(out)


def _content_grants(
    dialect: str, who: str, content: Mapping[str, ContentKind], accounts: Accounts | None
) -> list[str]:
    prep = (postgresql if dialect == "postgresql" else mysql).dialect().identifier_preparer
    q = prep.quote
    read: dict[str, list[str]] = {}
    write: dict[str, list[str]] = {}
    for kind in content.values():
        cols = read.setdefault(kind.table, [])
        cols += [c for c in (kind.id, kind.owner, kind.visibility) if c not in cols]
        if kind.visibility not in write.setdefault(kind.table, []):
            write[kind.table].append(kind.visibility)
    if accounts is not None:
        cols = read.setdefault(accounts.table, [])
        cols += [accounts.id] if accounts.id not in cols else []
    lines = []
    for table, cols in read.items():
        if dialect == "postgresql":
            lines.append(f"REVOKE ALL ON {q(table)} FROM {who};")
        grant = f"SELECT ({', '.join(map(q, cols))})"
        if write.get(table):
            grant += f", UPDATE ({', '.join(map(q, write[table]))})"
        if dialect == "mysql":
            # SHOW CREATE TABLE (how the tool checks the map against the live schema) needs a
            # table-level privilege; REFERENCES is one that reads and changes no data.
            grant += ", REFERENCES"
        lines.append(f"GRANT {grant} ON {q(table)} TO {who};")
    return lines
