"""The plans of the chunk statements, pinned with EXPLAIN on every dialect (issue #15).

A chunk must reach the content table through an index (its (owner, id) index, or the primary
key from a snapshot's item id), never by a scan of the whole table: on a site's table of
millions of rows one scan per chunk is the difference between 5 ms and 500 ms, and nothing but
the plan protects against it. The planners decide from statistics, so the tables here have
never been analysed (and PostgreSQL's autovacuum and InnoDB's automatic statistics are off for
them): the state of a table created or loaded since the last ANALYZE. Owners are integers and
strings (``VARCHAR(36)``); the items of the heavy user and of the small users are spread
through the table among other users' rows.

Every statement a chunk sends that names a content table is explained, in the chunk's own
transaction and with its own parameters, just before it runs: whole users sharing a chunk, a
heavy user's ranged slices, and the revert of both.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import Engine, event, insert, text

from helpers import requests_for, run_engine
from privacy_lock.pacing import Pacer
from sns import build_sns

CONTENT = ("diaries", "photos")
FILLER_USERS = 300  # other users, 8 items each, between every item of the users under test
HEAVY_ITEMS = 150  # visible diaries added to the heavy user, spread among the filler
# Filler users run as a batch: a planner without statistics guesses that each owner of a
# chunk's list holds a share of the table (PostgreSQL: 0.5%), so a chunk of 80 owners
# "holds" 40% of it, and a plan that scans the table looks cheapest.
SMALL_USERS = 80


class ExplainingPacer(Pacer):
    """A pacer that marks the statements run inside its chunks (not the plan's reads)."""

    in_chunk = False

    def chunk(self, conn: Any, work: Any, items: Any = None) -> Any:
        def marked() -> Any:
            self.in_chunk = True
            try:
                return work()
            finally:
                self.in_chunk = False
        return super().chunk(conn, marked, items)


def full_scans(dialect: str, cursor: Any, statement: str, parameters: Any,
               ranged: bool = False) -> list[str]:
    """What the plan of ``statement`` scans of a content table whole (empty: none), and, for a
    walk (``LIMIT``), a sort: a walk reads the index in order and stops after its keys,
    instead of reading all of an owner's remaining items and sorting them. In a heavy user's
    ``ranged`` chunk on MariaDB also the owner index's equality alone (``ref`` on a constant)
    in a statement that bounds the chunk's keys: it reads all of the user's items, from the
    first, for every chunk, where the key range or key list reads only the chunk's (a heavy
    revert took 100 s instead of 5)."""
    walk = re.search(r"\bLIMIT\b", statement) is not None
    # whether the statement bounds the chunk's keys (not the first walk of a user)
    keyed = re.search(rf"\b({'|'.join(CONTENT)})\.id (>|IN \(|BETWEEN)", statement)
    if dialect == "sqlite":
        cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
        details = [row[3] for row in cursor.fetchall()]
        return [d for d in details if re.match(rf"SCAN ({'|'.join(CONTENT)})\b", d)
                or walk and "TEMP B-TREE FOR ORDER BY" in d]
    cursor.execute("EXPLAIN " + statement, parameters)
    rows = cursor.fetchall()
    if dialect == "postgresql":
        return [row[0] for row in rows
                if re.search(rf"Seq Scan on ({'|'.join(CONTENT)})\b", row[0])
                or walk and re.search(r"\bSort\b", row[0])]
    names = [d[0] for d in cursor.description]
    found = [dict(zip(names, row, strict=True)) for row in rows]
    return [f"{r['table']}: type {r['type']}, key {r['key']}, rows {r['rows']}, {r['Extra']}"
            for r in found
            if r["table"] in CONTENT and (r["type"] in ("ALL", "index")
                                          or walk and "filesort" in (r["Extra"] or "")
                                          or ranged and keyed and r["type"] == "ref"
                                          and r["ref"] == "const")]


def spread_sns(db_url, tmp_path, id_style):
    """The test SNS, its content tables never analysed, its users' items spread among those
    of FILLER_USERS other users, and a heavy first user."""
    sns = build_sns(db_url, tmp_path, id_style, "code")
    dialect = sns.engine.dialect.name
    with sns.engine.begin() as conn:
        for table in CONTENT:
            if dialect == "postgresql":
                conn.execute(text(f"ALTER TABLE {table} SET (autovacuum_enabled = false)"))
            elif dialect == "mysql":
                conn.execute(text(f"ALTER TABLE {table} STATS_AUTO_RECALC = 0"))
        heavy = sns.users[0]
        for kind, table in sns.tables.items():
            id_col, owner_col, vis_col = sns.columns[kind]
            rows = []
            for n in range(FILLER_USERS * 8):
                owner: Any = 1000 + n % FILLER_USERS
                if id_style == "uuid":
                    owner = f"00000000-0000-4000-8000-{owner:012d}"
                rows.append({owner_col: owner, vis_col: sns.values[n % 4]})
                if kind == "diary" and n % 16 == 0 and n // 16 < HEAVY_ITEMS:
                    rows.append({owner_col: heavy, vis_col: sns.public})
            if id_style == "uuid":
                for row in rows:
                    row[id_col] = sns.new_id()
            conn.execute(insert(table), rows)
    return sns


@pytest.mark.parametrize("id_style", ["int", "uuid"], ids=["int-owners", "string-owners"])
def test_no_chunk_scans_a_content_table(db_url, tmp_path, id_style):
    sns = spread_sns(db_url, tmp_path, id_style)
    dialect = sns.engine.dialect.name
    heavy = sns.users[0]
    small = [1000 + n for n in range(SMALL_USERS)]
    if id_style == "uuid":
        small = [f"00000000-0000-4000-8000-{u:012d}" for u in small]
    pacer = ExplainingPacer()
    ranged = False
    explained: list[str] = []
    scans: list[tuple[str, list[str]]] = []

    def explain(conn, cursor, statement, parameters, context, executemany):
        if executemany or not pacer.in_chunk or not re.search(
                rf"\b({'|'.join(CONTENT)})\b", statement, re.IGNORECASE):
            return
        if statement.lstrip().upper().startswith(("SET", "SAVEPOINT", "RELEASE")):
            return
        explained.append(statement)
        found = full_scans(dialect, cursor, statement, parameters, ranged)
        if found:
            scans.append((statement, found))

    event.listen(Engine, "before_cursor_execute", explain)
    try:
        for mode in ("apply", "revert"):
            # the small users share chunks of 600 items; the heavy one goes in ranged slices
            for users, size in ((small, 600), ([heavy], 40)):
                pacer = ExplainingPacer(size=size)
                ranged = users == [heavy]
                result = run_engine(sns, mode, requests_for(*users), pacer)
                assert not result.failed, [o.error for o in result.failed]
                assert pacer.chunks > 1
    finally:
        event.remove(Engine, "before_cursor_execute", explain)
    assert len(explained) > 10  # the hook saw the chunks' statements
    assert not scans, "\n\n".join(f"{s}\n-> {found}" for s, found in scans)
    # and the runs did their work
    assert sns.lock_rows() and all(lk["state"] == "reverted" for lk in sns.lock_rows())
    assert {s["state"] for s in sns.snapshot_rows()} == {"restored"}
