"""Every statement the tool runs waits at most ``--lock-timeout`` for a lock another session
holds — schema reflection, ``init``, the plan, the audit head, every chunk — and a wait that
ran out before anything was committed ends in the one "could not lock" line, exit 2, with
nothing changed.

Each test holds a table lock in another connection the way a DBA or a migration would
(PostgreSQL ``LOCK TABLE ... IN ACCESS EXCLUSIVE MODE``, MariaDB ``LOCK TABLES ... WRITE``,
SQLite ``BEGIN EXCLUSIVE``) and releases it only after the tool has returned, or after a
generous safety limit: that the tool returned while the lock was still held is the assertion,
not how long it took.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from privacy_lock import errors
from privacy_lock.db import create_tool_engine, translate_errors
from privacy_lock.errors import LockTimeoutError, LockWaitError
from privacy_lock.schema import TOOL_TABLES, audit_head, locks
from sns import IDENTITY, build_sns

SAFETY_LIMIT = 60.0  # seconds a holder keeps its lock if the tool never returns


class TableLock:
    """Another session holding an exclusive lock on ``table`` until :meth:`release` (or the
    safety limit, after which ``timed_out`` is set)."""

    def __init__(self, url: str, table: str) -> None:
        self.engine = create_engine(url, poolclass=NullPool, connect_args=(
            {"check_same_thread": False, "isolation_level": None}
            if url.startswith("sqlite") else {}))
        self.backend = self.engine.url.get_backend_name()
        self.table = table
        self.released = threading.Event()
        self.timed_out = False
        self._raw: Any = None
        self._timer = threading.Thread(target=self._hold, daemon=True)

    def __enter__(self) -> TableLock:
        self._raw = self.engine.raw_connection()
        cursor = self._raw.cursor()
        if self.backend == "postgresql":
            cursor.execute(f"LOCK TABLE {self.table} IN ACCESS EXCLUSIVE MODE")
        elif self.backend == "sqlite":
            cursor.execute("BEGIN EXCLUSIVE")
        else:
            cursor.execute(f"LOCK TABLES {self.table} WRITE")
        cursor.close()
        self._timer.start()
        return self

    def _hold(self) -> None:
        self.timed_out = not self.released.wait(SAFETY_LIMIT)
        cursor = self._raw.cursor()
        if self.backend == "mysql":
            cursor.execute("UNLOCK TABLES")
        else:
            cursor.execute("ROLLBACK")
        cursor.close()
        self._raw.close()

    def holding(self) -> bool:
        """Whether the lock is still held (the safety limit has not released it)."""
        return self._timer.is_alive() and not self.released.is_set()

    def release(self) -> None:
        self.released.set()
        self._timer.join()
        self.engine.dispose()

    def __exit__(self, *_exc: object) -> None:
        self.release()


def _state(sns) -> tuple[Any, ...]:
    """Everything a run could change: content, locks, snapshots, the trail."""
    return (sns.everything(), sns.lock_rows(), sns.snapshot_rows(), sns.audit_count())


def _returned_while_held(sns, table: str, *args: str, code: int = 2) -> str:
    """Run the CLI while ``table`` is locked elsewhere: it must return while the lock is still
    held, with exit ``code``; its output."""
    with TableLock(sns.url, table) as held:
        result = sns.run(*args, expect=None)
        still_held = held.holding()
    assert still_held and not held.timed_out, "the tool only returned once the lock was gone"
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return result.output


def _refused_while_held(sns, table: str, *args: str, seconds: str = "1") -> None:
    """:func:`_returned_while_held` with exit 2 and the one "could not lock" line."""
    out = _returned_while_held(sns, table, *args)
    assert (f"privacy-lock: error: could not lock within {seconds} s (--lock-timeout): another "
            "session holds a lock on a table or rows this command needs; nothing was changed; "
            "re-run later") in out


@pytest.mark.parametrize("table", ["photos", locks.name, audit_head.name])
def test_apply_returns_while_a_table_is_locked_and_changes_nothing(db_url, tmp_path, table):
    sns = build_sns(db_url, tmp_path)
    before = _state(sns)
    _refused_while_held(sns, table, "apply", str(sns.users[0]), *IDENTITY,
                        "--lock-timeout", "1")
    assert _state(sns) == before
    sns.apply(sns.users[0])  # and once the lock is gone the same command runs
    assert sns.lock_rows()


@pytest.mark.parametrize("table", ["photos", locks.name])
def test_revert_returns_while_a_table_is_locked_and_changes_nothing(db_url, tmp_path, table):
    sns = build_sns(db_url, tmp_path)
    sns.apply(sns.users[0])
    before = _state(sns)
    _refused_while_held(sns, table, "revert", "--user", str(sns.users[0]), *IDENTITY,
                        "--lock-timeout", "1")
    assert _state(sns) == before


def test_init_returns_while_a_content_table_is_locked_and_creates_nothing(db_url, tmp_path):
    sns = build_sns(db_url, tmp_path, init=False)
    content = sns.everything()
    _refused_while_held(sns, "photos", "init", seconds="2")
    with sns.engine.connect() as conn:
        assert not set(TOOL_TABLES) & set(inspect(conn).get_table_names())
    assert sns.everything() == content


def test_init_again_returns_while_a_tool_table_is_locked(db_url, tmp_path):
    sns = build_sns(db_url, tmp_path)
    before = _state(sns)
    _refused_while_held(sns, audit_head.name, "init", seconds="2")
    assert _state(sns) == before


def test_every_connection_waits_at_most_the_lock_timeout_from_its_first_statement(db_url):
    """Set at connect time, outside any chunk (reflection and init run there): PostgreSQL's
    lock_timeout, MariaDB's lock_wait_timeout and innodb_lock_wait_timeout (whole seconds),
    SQLite's busy timeout; PostgreSQL's statement_timeout stays the server's."""
    engine = create_tool_engine(db_url, lock_timeout=3.5)
    backend = engine.url.get_backend_name()
    with engine.connect() as conn:
        if backend == "postgresql":
            assert conn.execute(text("SHOW lock_timeout")).scalar() == "3500ms"
            assert conn.execute(text("SHOW statement_timeout")).scalar() == "0"
        elif backend == "sqlite":
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 3500
        else:
            row = conn.execute(text("SELECT @@SESSION.lock_wait_timeout, "
                                    "@@SESSION.innodb_lock_wait_timeout")).one()
            assert tuple(row) == (4, 4)
    engine.dispose()


def _lock_conflict() -> OperationalError:
    class Locked(Exception):
        sqlstate = "55P03"

    return OperationalError("SELECT 1", {}, Locked("canceling statement due to lock timeout"))


def test_a_lock_wait_after_a_commit_is_exit_1_and_says_what_stands():
    """A careless reading would call every lock wait "nothing was changed": once a writing
    transaction has committed, the same wait is exit 1 and says the committed work stands."""
    with pytest.raises(LockTimeoutError) as after:
        with translate_errors("sqlite://", 1.5, changed=lambda: True):
            raise _lock_conflict()
    assert errors.exit_code(after.value) == 1
    assert "committed before it stand; re-run the same command later" in str(after.value)
    with pytest.raises(LockWaitError) as before:
        with translate_errors("sqlite://", 1.5, changed=lambda: False):
            raise _lock_conflict()
    assert errors.exit_code(before.value) == 2
    assert "could not lock within 1.5 s" in str(before.value)


def test_a_status_read_is_bounded_too(db_url, tmp_path):
    """Not only apply and revert: a read-only command (default --lock-timeout, 2 s) returns
    while a table it reads is held."""
    sns = build_sns(db_url, tmp_path)
    sns.apply(sns.users[0])
    _refused_while_held(sns, locks.name, "status", str(sns.users[0]), seconds="2")
