"""Fixtures that run every test on SQLite, PostgreSQL and MariaDB/MySQL.

Server URLs come from PRIVACY_LOCK_TEST_POSTGRESQL_URL / PRIVACY_LOCK_TEST_MYSQL_URL, defaulting
to the local servers of this project's machines. A server that does not answer skips its tests
with the reason, unless it is named in PRIVACY_LOCK_TEST_REQUIRE (as CI does), where it fails.
Each test gets a fresh PostgreSQL schema / MySQL database of its own, dropped afterwards;
leftovers of a killed run (hours old) are dropped when the session starts.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from functools import cache

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

DIALECTS = ("sqlite", "postgresql", "mysql")
SERVER_URLS = {
    "postgresql": os.environ.get(
        "PRIVACY_LOCK_TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    ),
    "mysql": os.environ.get(
        "PRIVACY_LOCK_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"
    ),
}
# Chunks sized by time change shape with the machine's load: the suite runs with fixed chunks
# of --chunk-size (as `--chunk-time 0` does), so that the chunk shapes it asserts hold on a
# loaded machine; tests/test_chunk_time.py gives --chunk-time where it tests the sizing.
os.environ["PRIVACY_LOCK_CHUNK_TIME"] = "0"
PREFIX = "pl_t_"
STALE_AFTER = 3 * 3600  # a test database older than this is a leftover of a killed run


def _is_stale(name: str) -> bool:
    """Names are pl_t_<unix time>_<random>; only old ones are dropped, so that two test runs
    on the same server (two developers, or a developer and CI) do not drop each other's."""
    try:
        return time.time() - int(name[len(PREFIX):].split("_")[0]) > STALE_AFTER
    except ValueError:
        return True


def required() -> set[str]:
    return {d.strip() for d in os.environ.get("PRIVACY_LOCK_TEST_REQUIRE", "").split(",") if d}


@cache
def server_problem(dialect: str) -> str | None:
    """None when the server answers, else why not. Also drops leftovers of earlier runs."""
    engine = create_engine(SERVER_URLS[dialect], poolclass=NullPool)
    try:
        with engine.begin() as conn:
            if dialect == "postgresql":
                names = conn.execute(text(
                    "SELECT nspname FROM pg_namespace WHERE nspname LIKE :p"
                ), {"p": PREFIX + "%"}).scalars().all()
                for name in filter(_is_stale, names):
                    conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
            else:
                names = conn.execute(text("SHOW DATABASES LIKE :p"), {"p": PREFIX + "%"}).scalars()
                for name in list(filter(_is_stale, names)):
                    conn.execute(text(f"DROP DATABASE `{name}`"))
        return None
    except Exception as exc:  # noqa: BLE001 - any failure to connect means "not available"
        return f"{dialect} server at {make_url(SERVER_URLS[dialect]).render_as_string()} " \
               f"not available: {str(exc).splitlines()[0]}"
    finally:
        engine.dispose()


def isolated_url(dialect: str, tmp_path) -> Iterator[str]:
    """A URL to an empty, private database (file, schema or database) for one test."""
    if dialect == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    problem = server_problem(dialect)
    if problem:
        if dialect in required():
            pytest.fail(f"{problem} (required by PRIVACY_LOCK_TEST_REQUIRE)")
        pytest.skip(problem)
    name = f"{PREFIX}{int(time.time())}_{uuid.uuid4().hex[:8]}"
    base = make_url(SERVER_URLS[dialect])
    admin = create_engine(base, poolclass=NullPool)
    with admin.begin() as conn:
        if dialect == "postgresql":
            conn.execute(text(f'CREATE SCHEMA "{name}"'))
        else:
            conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    if dialect == "postgresql":
        url = base.update_query_dict({"options": f"-csearch_path={name}"})
    else:
        url = base.set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            if dialect == "postgresql":
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
            else:
                conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


@pytest.fixture(params=DIALECTS)
def db_url(request, tmp_path) -> Iterator[str]:
    """An empty database of each dialect in turn."""
    yield from isolated_url(request.param, tmp_path)


@pytest.fixture
def dialect(db_url: str) -> str:
    return make_url(db_url).get_backend_name()
