"""The tool's statements on its own tables plan well without statistics: on a fresh install
(autovacuum off or not run yet, MariaDB's persistent statistics taken on the empty table,
SQLite with no ANALYZE) a run that grows the snapshot table from empty must still reach it
through its indexes, never by a full scan per chunk (a heavy user's revert on PostgreSQL once
took about 1.1 s per 1,000-item chunk while holding its row locks; docs/BENCHMARKS.md).

The test records every statement a heavy user's apply and revert send about the snapshot
table and asks the database for each one's plan (EXPLAIN), on tables never analysed. On
PostgreSQL no statement shape avoided it (with every estimate at one row the planner cannot
tell the unique index lookup from the range), so a revert first analyses the snapshot table
when it grew since its last analysis (``PostgresqlDialect.refresh_snapshot_statistics``): the
test checks it did, and that no plan then walks the chunk's snapshots once per item.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event, insert, text

from privacy_lock.schema import TOOL_TABLES, snapshots
from sns import build_sns

HEAVY_ITEMS = 20_000  # enough that a full scan costs more than the index on every planner
SNAPSHOTS = snapshots.name


@contextmanager
def recorded_statements() -> Iterator[list[tuple[str, Any]]]:
    """Every (statement, parameters) any engine runs about the snapshot table meanwhile."""
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any,
               executemany: bool) -> None:
        if SNAPSHOTS in statement and not executemany and not statement.startswith("EXPLAIN"):
            seen.append((statement, parameters))

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def full_scans(conn: Any, dialect: str, statement: str, parameters: Any) -> list[str]:
    """The plan lines of ``statement`` that read the whole snapshot table (or all of one of
    its indexes), or (PostgreSQL) read the chunk's snapshots again for each item."""
    if dialect == "sqlite":
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
        return [r[-1] for r in rows if re.match(rf"SCAN (TABLE )?{SNAPSHOTS}\b", r[-1])]
    if dialect == "postgresql":
        plan = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters).scalar()
        plan = json.loads(plan) if isinstance(plan, str) else plan
        # the heavy kind's chunks: a light kind's few snapshots are cheap to walk per item
        return list(_pg_scans_per_chunk(plan[0]["Plan"], inner=False,
                                        looped_ok="diaries" not in statement))
    rows = conn.exec_driver_sql(f"EXPLAIN {statement}", parameters).mappings().all()
    return [str(dict(r)) for r in rows
            if r["table"] == SNAPSHOTS and r["type"] in ("ALL", "index")]


def _pg_scans_per_chunk(node: dict[str, Any], inner: bool,
                        looped_ok: bool = False) -> Iterator[str]:
    """A sequential scan of the snapshot table, or an index scan of it repeated for each row
    of a nested loop's outer side that does not look the item up (it walks the chunk's range
    again for every item)."""
    if node.get("Relation Name") == SNAPSHOTS:
        if node["Node Type"] == "Seq Scan":
            yield "Seq Scan"
        elif inner and not looped_ok and "item_id" not in node.get("Index Cond", ""):
            yield f"{node['Node Type']} per outer row on {node.get('Index Cond')}"
    children = node.get("Plans", [])
    for position, child in enumerate(children):
        looped = inner or (node["Node Type"] == "Nested Loop" and position == 1)
        yield from _pg_scans_per_chunk(child, looped, looped_ok)


def _per_chunk(statement: str) -> bool:
    """A statement of a revert chunk (it reads the chunk's range of snapshot ids). The others
    run once per run and lock (the seal check, the counts of the plan) and read all of a lock,
    which is nearly all of the table here: a full scan is their best plan."""
    return "snapshot_id >" in statement


def _never_analysed(sns: Any, dialect: str) -> None:
    """Keep the server from gathering statistics on the tool's and the content tables."""
    with sns.engine.begin() as conn:
        for name in [*TOOL_TABLES, "diaries", "photos"]:
            if dialect == "postgresql":
                conn.execute(text(f"ALTER TABLE {name} SET (autovacuum_enabled = false)"))
            elif dialect == "mysql":
                conn.execute(text(f"ALTER TABLE {name} STATS_AUTO_RECALC = 0"))


def _analysed(sns: Any, dialect: str) -> bool:
    """Whether the snapshot table has statistics (PostgreSQL, SQLite)."""
    with sns.engine.connect() as conn:
        if dialect == "postgresql":
            return bool(conn.execute(text(
                "SELECT count(*) FROM pg_stat_user_tables WHERE relname = :t AND "
                "(last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL)"),
                {"t": SNAPSHOTS}).scalar())
        if dialect == "sqlite":
            return bool(conn.execute(text(
                "SELECT name FROM sqlite_master WHERE name = 'sqlite_stat1'")).all())
    return False


def test_heavy_user_apply_and_revert_reach_the_snapshots_by_index_on_fresh_tables(
        db_url, tmp_path, dialect):
    sns = build_sns(db_url, tmp_path)
    _never_analysed(sns, dialect)
    user = sns.users[0]
    with sns.engine.begin() as conn:
        conn.execute(insert(sns.tables["diary"]),
                     [{"user_id": user, "visibility": "public"}] * HEAVY_ITEMS)
    with recorded_statements() as seen:
        sns.apply(user, extra=("--chunk-size", "5000"))
        assert not _analysed(sns, dialect)  # grown from empty, never analysed
        sns.revert_user(user, extra=("--chunk-size", "1000"))
    assert _analysed(sns, dialect) == (dialect == "postgresql")
    with sns.engine.connect() as conn:
        restored = conn.execute(text(
            f"SELECT count(*) FROM {SNAPSHOTS} WHERE state = 'restored'")).scalar()
        assert restored >= HEAVY_ITEMS  # the run really was a heavy user's, in many chunks
        assert seen
        scans = {statement: lines for statement, parameters in seen
                 if _per_chunk(statement)
                 and (lines := full_scans(conn, dialect, statement, parameters))}
    assert not scans, "\n\n".join(f"{s}\n  -> {lines}" for s, lines in scans.items())
