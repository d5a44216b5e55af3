"""The tool's DDL: one source (schema.py), reviewed files in sql/, idempotent init."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, inspect
from sqlalchemy.pool import NullPool

from privacy_lock.cli import cli
from privacy_lock.schema import TOOL_TABLES, ddl_for

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "mysql"])
def test_sql_files_match_schema(dialect):
    """sql/<dialect>.sql is what DBAs review: it must be exactly what schema.py creates."""
    on_disk = (SQL_DIR / f"{dialect}.sql").read_text(encoding="utf-8")
    assert on_disk == ddl_for(dialect), (
        f"sql/{dialect}.sql drifted from schema.py: run "
        f"`privacy-lock sql --dialect {dialect} > sql/{dialect}.sql`"
    )
    printed = CliRunner().invoke(cli, ["sql", "--dialect", dialect], catch_exceptions=False)
    assert printed.exit_code == 0 and printed.output == on_disk


def test_init_is_idempotent(db_url):
    runner = CliRunner()
    first = runner.invoke(cli, ["--database-url", db_url, "init"], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert "created:" in first.stdout
    second = runner.invoke(cli, ["--database-url", db_url, "init"], catch_exceptions=False)
    assert second.exit_code == 0 and "already exist" in second.stdout
    engine = create_engine(db_url, poolclass=NullPool)
    assert set(TOOL_TABLES) <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_init_suggests_the_owner_index_a_content_table_lacks(db_url, tmp_path):
    from sqlalchemy import text

    from sns import build_sns

    sns = build_sns(db_url, tmp_path, init=False)
    with sns.engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_photos_owner" + (" ON photos" if "mysql" in db_url
                                                          else "")))
    result = sns.run("init")
    assert "CREATE INDEX ix_photos_owner_id_id ON photos (owner_id, id);" in result.stderr
    assert "diaries" not in result.stderr
