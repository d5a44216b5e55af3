"""The tool's own tables: the single source of the DDL in ``sql/`` and of ``privacy-lock init``."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.schema import CreateColumn, CreateIndex, CreateTable

from privacy_lock.errors import NotInitializedError, PrivacyLockError, TamperedError
from privacy_lock.vocabulary import LockState, RequestState, SnapshotState, Status

metadata = MetaData()

# SQLite only autoincrements an INTEGER PRIMARY KEY; elsewhere ids are 64-bit.
BigId = BigInteger().with_variant(Integer(), "sqlite")



def ExactString(length: int) -> String:  # noqa: N802 - reads as the type it is
    """A text column of the tool's, compared byte for byte on every database: on MySQL/MariaDB
    ``utf8mb4_bin`` whatever the database's default collation, so that comparing it with a
    site column of any utf8mb4 collation is allowed (the ``_bin`` side wins) and exact."""
    return String(length).with_variant(
        mysql.VARCHAR(length, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb")


# Which input a column keeps (privacy_lock.stored_text reads these): a value longer than any
# such column holds on the target database is refused before anything changes.
USER_ID = {"holds": "user id"}
OPERATOR = {"holds": "operator"}
TICKET = {"holds": "ticket"}
REASON = {"holds": "reason"}

# Timestamps are stored as ISO-8601 UTC text ("2026-11-28T08:32:29.123456Z"): exact on every
# dialect (no silent loss of microseconds on MySQL DATETIME), sortable as text, and hashed into
# the audit chain exactly as stored.
Timestamp = ExactString(32)

locks = Table(
    "privacy_lock_locks",
    metadata,
    Column("lock_id", BigId, primary_key=True, autoincrement=True),
    Column("subject", ExactString(191), nullable=False,
           comment="the user (content owner) id, as text", info=USER_ID),
    # Equal to subject while the lock is active and NULL once reverted: the unique constraint on
    # it is what makes "one active lock per user" hold even for two operators racing.
    Column("active_subject", ExactString(191), nullable=True, info=USER_ID),
    Column("state", ExactString(16), nullable=False, comment=" | ".join(LockState)),
    Column("operator", ExactString(191), nullable=False, info=OPERATOR),
    Column("ticket", ExactString(191), nullable=False, info=TICKET),
    Column("reason", Text, nullable=False, info=REASON),
    Column("created_at", Timestamp, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
    Column("reverted_at", Timestamp, nullable=True),
    Column("reverted_by", ExactString(191), nullable=True, info=OPERATOR),
    # What the lock was taken under, per kind: the table, the id / owner / visibility columns,
    # the owner-only value and its type (JSON). Revert and status use it, never today's config;
    # sealed in the trail by the lock's events (seal.py). NULL on locks made before it existed.
    Column("binding", Text, nullable=True, comment="JSON: per kind, the content binding used"),
    UniqueConstraint("active_subject", name="uq_privacy_lock_locks_active_subject"),
    Index("ix_privacy_lock_locks_subject", "subject"),
)

snapshots = Table(
    "privacy_lock_snapshots",
    metadata,
    Column("snapshot_id", BigId, primary_key=True, autoincrement=True),
    Column("lock_id", BigId, ForeignKey("privacy_lock_locks.lock_id"), nullable=False),
    Column("kind", ExactString(64), nullable=False),
    Column("item_id", ExactString(191), nullable=False, comment="the content row's id, as text"),
    # The original visibility, in the column matching the content column's type; both NULL means
    # the original was NULL ("site default"). Which one applies is fixed by the content map.
    Column("original_text", Text, nullable=True),
    Column("original_int", BigInteger, nullable=True),
    Column("state", ExactString(16), nullable=False, comment=" | ".join(SnapshotState)),
    Column("snapshotted_at", Timestamp, nullable=False),
    Column("resolved_at", Timestamp, nullable=True),
    UniqueConstraint("lock_id", "kind", "item_id", name="uq_privacy_lock_snapshots_item"),
    Index("ix_privacy_lock_snapshots_pending", "lock_id", "state", "snapshot_id"),
)

audit_events = Table(
    "privacy_lock_audit",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False, comment="chain position"),
    Column("occurred_at", Timestamp, nullable=False),
    Column("action", ExactString(32), nullable=False),
    Column("subject", ExactString(191), nullable=True, info=USER_ID),
    Column("lock_id", BigInteger, nullable=True),
    Column("operator", ExactString(191), nullable=True, info=OPERATOR),
    Column("os_user", ExactString(191), nullable=True),
    Column("host", ExactString(191), nullable=True),
    Column("ticket", ExactString(191), nullable=True, info=TICKET),
    Column("reason", Text, nullable=True, info=REASON),
    Column("details", Text, nullable=False, comment="JSON: counts and other facts"),
    Column("tool_version", ExactString(32), nullable=False),
    Column("prev_hash", ExactString(64), nullable=False),
    Column("hash", ExactString(64), nullable=False),
    # With an audit key (anchors.py): "KEYID:HMAC-SHA256(key, event hash)", so that database
    # access alone cannot recompute the chain. NULL on events written without a key.
    Column("mac", ExactString(96), nullable=True, comment="key id : HMAC of hash"),
    Index("ix_privacy_lock_audit_subject", "subject"),
    Index("ix_privacy_lock_audit_lock", "lock_id", "seq"),
    Index("ix_privacy_lock_audit_occurred_at", "occurred_at"),
)

# One row (id = 1) holding the chain's head. Every append locks it first, which serializes
# appends across processes so two operators still produce one unbroken chain.
audit_head = Table(
    "privacy_lock_audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", ExactString(64), nullable=False),
)

# A revert waiting for a second operator's approval ([policy] revert_requires_approval).
revert_requests = Table(
    "privacy_lock_revert_requests",
    metadata,
    Column("request_id", BigId, primary_key=True, autoincrement=True),
    Column("lock_id", BigId, ForeignKey("privacy_lock_locks.lock_id"), nullable=False),
    Column("subject", ExactString(191), nullable=False,
           comment="the user (content owner) id, as text", info=USER_ID),
    Column("state", ExactString(16), nullable=False, comment=" | ".join(RequestState)),
    # Equal to lock_id until the request is done, NULL after: the unique constraint on it keeps
    # one open request per lock even when two operators ask at once.
    Column("open_lock_id", BigInteger, nullable=True),
    Column("requested_by", ExactString(191), nullable=False, info=OPERATOR),
    Column("requested_os_user", ExactString(191), nullable=False),
    Column("requested_host", ExactString(191), nullable=False),
    Column("ticket", ExactString(191), nullable=False, info=TICKET),
    Column("reason", Text, nullable=False, info=REASON),
    Column("requested_at", Timestamp, nullable=False),
    Column("approved_by", ExactString(191), nullable=True, info=OPERATOR),
    Column("approved_os_user", ExactString(191), nullable=True),
    Column("approved_host", ExactString(191), nullable=True),
    Column("approved_at", Timestamp, nullable=True),
    # The database login each side used (PostgreSQL current_user, MariaDB CURRENT_USER());
    # NULL on SQLite, which has no logins, and on requests made before these columns existed.
    Column("requested_db_user", ExactString(191), nullable=True),
    Column("approved_db_user", ExactString(191), nullable=True),
    Column("finished_at", Timestamp, nullable=True),
    Column("outcome", ExactString(16), nullable=True,
           comment=f"{Status.REVERTED} | {Status.NOT_LOCKED}"),
    UniqueConstraint("open_lock_id", name="uq_privacy_lock_revert_requests_open_lock"),
    Index("ix_privacy_lock_revert_requests_state", "state", "request_id"),
)

# The site's rules for the tool, one row per name (privacy_lock/policy.py): kept in the database,
# not in an operator's config, so that a copied config cannot switch the two-person rule off.
# ``init`` seeds the missing rows from the config; ``privacy-lock policy set`` changes one,
# audited. A missing row means the secure default.
policy = Table(
    "privacy_lock_policy",
    metadata,
    Column("name", ExactString(64), primary_key=True),
    Column("value", ExactString(64), nullable=False),
    Column("set_by", ExactString(191), nullable=False, info=OPERATOR),
    Column("set_at", Timestamp, nullable=False),
)

# One row per `find` search that ran (refused ones are only audited): the per-operator rate
# limit ([identity] searches_per_hour) counts them. Kept in the database, so a second process,
# machine or config cannot reset it; an operator is counted by the key of their stated name
# (approvals.operator_keys) and by their OS account, so a new --operator spelling does not
# reset it either.
find_usage = Table(
    "privacy_lock_find_usage",
    metadata,
    Column("usage_id", BigId, primary_key=True, autoincrement=True),
    Column("operator_key", ExactString(191), nullable=False),
    Column("os_account", ExactString(191), nullable=False),
    Column("searched_at", Timestamp, nullable=False),
    Column("event_seq", BigInteger, nullable=False, comment="the find event in the audit trail"),
    Index("ix_privacy_lock_find_usage_operator", "operator_key", "searched_at"),
    Index("ix_privacy_lock_find_usage_os_account", "os_account", "searched_at"),
)

GENESIS_HASH = "0" * 64
TOOL_TABLES = [t.name for t in metadata.sorted_tables]

# PostgreSQL makes the audit trail append-only in the database itself, so that not even the
# tool's own role (nor a mistaken hand-written statement) can edit it: UPDATE, DELETE and
# TRUNCATE of events are refused, and the head row can only move forward, to an event that is
# in the trail with that hash (it cannot be deleted, rolled back to hide removed events, or
# pointed past the last event). One append may move it by several events (a chunk shared by
# several users writes theirs together). Only the tables' owner can
# disable these triggers: grant the tool a role that does not own them (sql/roles-postgresql.sql).
PG_APPEND_ONLY_DDL = (
    """CREATE OR REPLACE FUNCTION privacy_lock_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'privacy_lock_audit is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$""",
    """CREATE TRIGGER privacy_lock_audit_no_update_delete
    BEFORE UPDATE OR DELETE ON privacy_lock_audit
    FOR EACH ROW EXECUTE FUNCTION privacy_lock_audit_append_only()""",
    """CREATE TRIGGER privacy_lock_audit_no_truncate
    BEFORE TRUNCATE ON privacy_lock_audit
    FOR EACH STATEMENT EXECUTE FUNCTION privacy_lock_audit_append_only()""",
    """CREATE OR REPLACE FUNCTION privacy_lock_audit_head_forward_only() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    in_trail boolean := false;
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.id = OLD.id AND NEW.seq > OLD.seq THEN
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I.privacy_lock_audit '
                       'WHERE seq = $1 AND hash = $2)', TG_TABLE_SCHEMA)
            INTO in_trail USING NEW.seq, NEW.hash;
        IF in_trail THEN
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION 'privacy_lock_audit_head only moves forward along the trail: % refused',
        TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$""",
    """CREATE TRIGGER privacy_lock_audit_head_forward_only
    BEFORE UPDATE OR DELETE ON privacy_lock_audit_head
    FOR EACH ROW EXECUTE FUNCTION privacy_lock_audit_head_forward_only()""",
    """CREATE TRIGGER privacy_lock_audit_head_no_truncate
    BEFORE TRUNCATE ON privacy_lock_audit_head
    FOR EACH STATEMENT EXECUTE FUNCTION privacy_lock_audit_head_forward_only()""",
)
PG_TRIGGERS = {
    "privacy_lock_audit_no_update_delete": "privacy_lock_audit",
    "privacy_lock_audit_no_truncate": "privacy_lock_audit",
    "privacy_lock_audit_head_forward_only": "privacy_lock_audit_head",
    "privacy_lock_audit_head_no_truncate": "privacy_lock_audit_head",
}


def create_tool_tables(conn: Connection) -> list[str]:
    """Create whatever tool tables are missing (idempotent); return the names created."""
    existing = set(inspect(conn).get_table_names())
    if {audit_head.name, audit_events.name} <= existing:  # before any DDL (MySQL commits it)
        head = conn.execute(select(audit_head.c.id).where(audit_head.c.id == 1)).first()
        if head is None and trail_length(conn):
            raise missing_head_error(conn)
    created = [t.name for t in metadata.sorted_tables if t.name not in existing]
    created += add_missing_columns(conn, [t for t in metadata.sorted_tables if t.name in existing])
    metadata.create_all(conn, checkfirst=True)
    head = conn.execute(audit_head.select().where(audit_head.c.id == 1)).first()
    if head is None:
        conn.execute(audit_head.insert().values(id=1, seq=0, hash=GENESIS_HASH))
    from privacy_lock.dialects import for_connection  # the strategies import these tables

    return created + for_connection(conn).after_create_tables(conn)


def trail_length(conn: Connection) -> int:
    """How many events the audit trail holds."""
    return int(conn.execute(select(func.count()).select_from(audit_events)).scalar_one())


def missing_head_message(events: int) -> str:
    """What init, apply, revert and verify all say when the audit head row is gone from a trail
    of ``events`` events."""
    if not events:
        return f"the audit head row ({audit_head.name}) is missing: run `privacy-lock init`"
    return (f"the audit head row ({audit_head.name}) is missing while the trail holds {events} "
            "events: it was deleted outside privacy-lock, which will not recreate it (that would "
            "hide the deletion). Check the trail with `privacy-lock audit verify --checkpoints "
            "FILE` and restore the row (docs/AUDIT.md, \"The head row is missing\")")


def missing_head_error(conn: Connection) -> PrivacyLockError:
    """The error for a missing audit head row: on a trail with events, a deletion nobody may
    paper over (a new genesis head would make verify blame the real events and every append
    fork the chain), exit 1 as any damage an auditor must look at; on an empty trail, an
    unfinished ``init``."""
    events = trail_length(conn)
    if not events:
        return NotInitializedError(missing_head_message(0))
    return TamperedError(missing_head_message(events))


def add_missing_columns(conn: Connection, tables: list[Table]) -> list[str]:
    """Add to existing tool tables the columns and indexes a newer release defines (``init`` on
    a database made by an older one). Only nullable columns are ever added to a tool table
    after its first release, so existing rows stay valid; return what was added."""
    added = []
    for table in tables:
        present = {c["name"] for c in inspect(conn).get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable:
                raise NotInitializedError(
                    f"{table.name} lacks the NOT NULL column {column.name}: this database was "
                    "made by an incompatible release")
            ddl = CreateColumn(column).compile(dialect=conn.dialect)
            conn.execute(text(f"ALTER TABLE {conn.dialect.identifier_preparer.format_table(table)}"
                              f" ADD COLUMN {ddl}"))
            added.append(f"{table.name}.{column.name}")
        indexes = {i["name"] for i in inspect(conn).get_indexes(table.name)}
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            if index.name not in indexes:
                index.create(conn)
                added.append(f"index {index.name}")
    return added


def create_append_only_triggers(conn: Connection) -> list[str]:
    """Create the PostgreSQL append-only triggers that are missing (also on older databases)."""
    existing = set(conn.exec_driver_sql(
        "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgrelid IN "
        "('privacy_lock_audit'::regclass, 'privacy_lock_audit_head'::regclass)"
    ).scalars())
    if set(PG_TRIGGERS) <= existing:
        return []
    for statement in PG_APPEND_ONLY_DDL:
        name = statement.split()[2]
        if statement.startswith("CREATE TRIGGER") and name in existing:
            continue
        conn.execute(text(statement))  # text(): the driver sees the body's % signs escaped
    return ["append-only triggers on privacy_lock_audit and privacy_lock_audit_head"]


def require_tool_tables(conn: Connection) -> None:
    """Fail with a clear instruction when ``init`` has not been run on this database."""
    existing = set(inspect(conn).get_table_names())
    missing = [name for name in TOOL_TABLES if name not in existing]
    if missing:
        raise NotInitializedError(
            f"the privacy-lock tables are missing ({', '.join(missing)}): "
            "run `privacy-lock init` on this database first"
        )
    # Every command appends to the trail: one made by an older release needs `init` first.
    present = {c["name"] for c in inspect(conn).get_columns(audit_events.name)}
    lacking = [c.name for c in audit_events.columns if c.name not in present]
    if lacking:
        raise NotInitializedError(
            f"{audit_events.name} lacks the column(s) {', '.join(lacking)} of this release: "
            "run `privacy-lock init` to add them")


def ddl_for(dialect_name: str) -> str:
    """The CREATE statements for one dialect, as ``sql/<dialect>.sql`` holds them."""
    from sqlalchemy.dialects import mysql, postgresql, sqlite

    dialect = {"sqlite": sqlite, "postgresql": postgresql, "mysql": mysql}[dialect_name].dialect()
    out = [
        f"-- privacy-lock tool tables for {dialect_name}.",
        "-- Generated from privacy_lock/schema.py by `privacy-lock sql --dialect "
        f"{dialect_name}`; do not edit by hand (a test fails when they drift).",
        "",
    ]
    for table in metadata.sorted_tables:
        out.append(str(CreateTable(table).compile(dialect=dialect)).strip() + ";")
        out.append("")
        for index in sorted(table.indexes, key=lambda i: i.name or ""):
            out.append(str(CreateIndex(index).compile(dialect=dialect)).strip() + ";")
            out.append("")
    out.append(
        f"INSERT INTO privacy_lock_audit_head (id, seq, hash) VALUES (1, 0, '{GENESIS_HASH}');"
    )
    out.append("")
    from privacy_lock.dialects import named  # the strategies import these tables

    extra = named(dialect_name).extra_ddl()
    if extra:
        out.append("-- The audit trail is append-only at the database level (see docs/DBA.md).")
        for statement in extra:
            out.append(statement + ";")
            out.append("")
    out.append(RECOMMENDED_CONTENT_INDEX)
    return "\n".join(out)


RECOMMENDED_CONTENT_INDEX = """\
-- Recommended on every mapped content table (not created by the tool; review and run yourself):
-- apply walks one owner's items in id order and revert finds items by id, so each content
-- table needs an index on (owner column, id column), e.g. for the demo's tables:
--   CREATE INDEX ix_diaries_user_id_id ON diaries (user_id, id);
--   CREATE INDEX ix_photos_owner_id_id ON photos (owner_id, id);
"""
