"""A ``postgres://`` URL (libpq's and Heroku's spelling) is taken as ``postgresql://``."""

from __future__ import annotations

import pytest
from conftest import isolated_url
from sqlalchemy import inspect

from privacy_lock.db import create_tool_engine, parse_url, safe_url
from sns import build_sns


@pytest.mark.parametrize(("given", "driver"), [
    ("postgres://u:pw@db/sns", "postgresql"),
    ("postgres+psycopg://u:pw@db/sns", "postgresql+psycopg"),
    ("postgresql://u:pw@db/sns", "postgresql"),
    ("mysql://u@db/sns", "mysql"),
])
def test_the_short_scheme_is_postgresql(given, driver):
    assert parse_url(given).drivername == driver
    assert "pw" not in safe_url(given)


@pytest.fixture
def pg_url(tmp_path):
    """A private PostgreSQL schema (the scheme names PostgreSQL only: no other dialect)."""
    yield from isolated_url("postgresql", tmp_path)


def test_postgres_scheme_connects(pg_url, tmp_path):
    short = "postgres" + pg_url.removeprefix("postgresql")
    assert short.startswith("postgres+psycopg://")
    sns = build_sns(pg_url, tmp_path, init=False)
    sns.url = short
    out = sns.run("init")
    assert "database: postgresql" in out.stderr
    bare = "postgres://" + pg_url.partition("://")[2]  # no driver named: psycopg
    engine = create_tool_engine(bare)
    try:
        assert "privacy_lock_locks" in inspect(engine).get_table_names()
    finally:
        engine.dispose()
