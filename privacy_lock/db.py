"""One way to connect (engines, dialect set-up, password-free URLs for printing) and one way to
insert many rows at once."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import (
    URL,
    Connection,
    Engine,
    Table,
    create_engine,
    event,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from privacy_lock import errors
from privacy_lock.errors import (
    DatabaseError,
    LockTimeoutError,
    LockWaitError,
    UsageError,
    could_not_lock,
    is_lock_conflict,
)

DEFAULT_DATABASE_URL = "sqlite:///privacy-lock.db"
DEFAULT_LOCK_TIMEOUT = 2.0  # seconds; --lock-timeout
LOCK_TIMEOUT_SET = "privacy_lock_lock_timeout"  # connection info: the lock timeout in force (ms)
CHANGED = "privacy_lock_changed"  # connection info: a writing transaction has committed

_DRIVER_HINTS = {
    "postgresql": "pip install 'privacy-lock[postgresql]'  (psycopg 3)",
    "mysql": "pip install 'privacy-lock[mysql]'  (PyMySQL)",
    "mariadb": "pip install 'privacy-lock[mysql]'  (PyMySQL)",
}
# Preferred drivers when the URL names only the database ("postgresql://", "mysql://").
_DEFAULT_DRIVERS = {"postgresql": "psycopg", "mysql": "pymysql", "mariadb": "pymysql"}


# Query parameters whose value is a secret (psycopg's password/sslpassword, PyMySQL's passwd, ODBC's
# PWD, tokens): their value is never printed. Matched anywhere in the name, in any case.
_SECRET_PARAMETER = re.compile(r"pass|pwd|secret|token", re.IGNORECASE)
_HIDDEN = "***"
_PLACEHOLDER = "PRIVACYLOCKHIDDEN"  # rendered unquoted, then replaced by _HIDDEN
_EXAMPLE = "e.g. sqlite:///sns.db or postgresql://user@host/dbname"


def parse_url(url: str) -> URL:
    """``url`` parsed, or a :class:`UsageError` that says which part of it is wrong and never
    echoes any of it: a mistyped URL can hold its password anywhere (an unescaped ``@`` in a
    password moves its tail into the host, a ``:`` into the port)."""
    scheme, separator, _rest = url.partition("://")
    problem = None
    if not separator:
        problem = ("no '://' after the scheme" if re.match(r"[\w+]+:", url)
                   else "it does not start with a scheme and '://'")
    elif not re.fullmatch(r"[\w+]+", scheme):
        problem = "the scheme before '://' may hold only letters, digits, '_' and '+'"
    else:
        try:
            parsed = make_url(url)
        except ValueError:  # int(port) failed
            problem = ("the port is not a number (a ':' or '@' in the user name or password "
                       "must be written %3A or %40)")
        except ArgumentError:
            problem = "it cannot be parsed"
        else:
            if parsed.host and "@" in parsed.host:
                problem = ("the host contains '@': an '@' in the user name or password must be "
                           "written %40")
            elif parsed.port is not None and not 0 < parsed.port < 65536:
                problem = "the port must be a number from 1 to 65535"
            else:
                return _canonical_scheme(parsed)
    raise UsageError(f"invalid database URL (not shown: it may hold a password): {problem}; "
                     f"expected {_EXAMPLE}")


def _canonical_scheme(parsed: URL) -> URL:
    """``postgres://`` (what Heroku, libpq and many a DBA's notes write) as SQLAlchemy's
    ``postgresql://``, with its driver if it names one; SQLAlchemy itself refuses the short
    name."""
    backend, plus, driver = parsed.drivername.partition("+")
    if backend == "postgres":
        return parsed.set(drivername=f"postgresql{plus}{driver}")
    return parsed


def safe_url(url: str | URL) -> str:
    """The one way a database URL is printed (the ``database:`` line, errors, report headers):
    the password in the user part and the value of every secret query parameter (``password``,
    ``passwd``, ``pwd``, ``sslpassword``, ...) shown as ``***``; a URL that cannot be parsed is
    never shown (:func:`parse_url` says why)."""
    try:
        parsed = parse_url(url) if isinstance(url, str) else url
    except UsageError:
        return "<invalid database URL, not shown>"
    hidden = {name: _PLACEHOLDER for name in parsed.query if _SECRET_PARAMETER.search(name)}
    if hidden:
        parsed = parsed.update_query_dict(hidden)
    return parsed.render_as_string(hide_password=True).replace(_PLACEHOLDER, _HIDDEN)


def hide_secrets(message: str, url: str | URL) -> str:
    """``message`` (a driver's error) with the URL's password and secret query values replaced
    by ``***``, in case the driver quoted them back."""
    try:
        parsed = parse_url(url) if isinstance(url, str) else url
    except UsageError:
        return message
    secrets = [parsed.password or ""]
    for name, value in parsed.query.items():
        if _SECRET_PARAMETER.search(name):
            secrets += [value] if isinstance(value, str) else list(value)
    for secret in sorted({str(s) for s in secrets if len(str(s)) >= 3}, key=len, reverse=True):
        message = message.replace(secret, _HIDDEN)
    return message


def timeout_millis(seconds: float) -> int:
    """A lock timeout in whole milliseconds, at least 1 (0 would mean "wait forever")."""
    return max(1, int(seconds * 1000))


def create_tool_engine(url: str, lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> Engine:
    """An engine for ``url`` set up the way the tool needs on each dialect.

    - NullPool: a command connects, works in short transactions and leaves.
    - Every connection waits at most ``lock_timeout`` seconds for any lock, from its first
      statement (schema reflection, ``init``, the plan, the audit head, every chunk): set at
      connect time by the dialect's strategy (:meth:`privacy_lock.dialects.Dialect.
      session_timeouts`). No statement timeout is set: a long statement that holds no one up
      is not the problem, a wait behind the site's lock is.
    - SQLite: every transaction starts with ``BEGIN IMMEDIATE`` (SQLite has no ``SELECT ... FOR
      UPDATE``; taking the write lock up front is what makes read-then-write chunks safe against a
      concurrent writer); its busy timeout is the lock timeout.
    - MySQL/MariaDB: READ COMMITTED, so a chunk's locking reads take row locks only, not the
      gap locks REPEATABLE READ would hold on the live site's rows; utf8mb4 by default.
    - No compiled-statement cache (SQLAlchemy keeps 500): a cached statement keeps the values
      of its first run, and a chunk statement's are its keys (up to 10,000 ids, a ``CASE``
      branch per owner on MariaDB), so the cache grew with the run: a 30,000-user revert on
      MariaDB peaked at 174 MB with it, 168 MB with 64 entries, 110 MB with none, at the same
      speed (compiling costs about 0.1 s of CPU in a 4 s batch of 8,000 users on SQLite).
    """
    parsed = parse_url(url)
    backend = parsed.get_backend_name()
    if parsed.drivername in _DEFAULT_DRIVERS:
        parsed = parsed.set(drivername=f"{parsed.drivername}+{_DEFAULT_DRIVERS[parsed.drivername]}")
    kwargs: dict[str, Any] = {"poolclass": NullPool, "query_cache_size": 0}
    if backend == "sqlite":
        kwargs["connect_args"] = {"timeout": lock_timeout}
    elif backend in ("mysql", "mariadb"):
        kwargs["isolation_level"] = "READ COMMITTED"
        if "charset" not in parsed.query:
            parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    try:
        engine = create_engine(parsed, **kwargs)
    except NoSuchModuleError:
        raise UsageError(f"unsupported database URL scheme {parsed.drivername!r}") from None
    except ImportError as exc:
        hint = _DRIVER_HINTS.get(backend, "install its driver")
        raise UsageError(f"no driver for {backend} ({exc.name}): {hint}") from None
    if backend == "sqlite":
        _use_begin_immediate(engine)
    _bound_lock_waits(engine, backend, lock_timeout)
    _remember_changes(engine)
    return engine


def _bound_lock_waits(engine: Engine, backend: str, seconds: float) -> None:
    """Run the strategy's lock-timeout statements on every new connection, before SQLAlchemy
    or the tool runs anything on it, and remember the timeout in force."""
    from privacy_lock.dialects import named  # dialects imports config, which imports us

    statements = named(backend).session_timeouts(seconds)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            for statement in statements:
                cursor.execute(statement)
        finally:
            cursor.close()
        dbapi_connection.commit()  # psycopg opened a transaction for the SET: keep it
        record.info[LOCK_TIMEOUT_SET] = timeout_millis(seconds)


def _remember_changes(engine: Engine) -> None:
    """Mark a connection once a transaction that may have written commits (every one but
    :func:`reading`'s): a lock wait after that is no longer "nothing was changed"."""

    @event.listens_for(engine, "commit")
    def _commit(conn: Connection) -> None:
        if not conn.info.get(_READING):
            conn.info[CHANGED] = True


def _use_begin_immediate(engine: Engine) -> None:
    """Make pysqlite leave transactions to us, and start each one as BEGIN IMMEDIATE."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN" if conn.info.get(_READING) else "BEGIN IMMEDIATE")


_READING = "privacy_lock_reading"


@contextlib.contextmanager
def reading(conn: Connection) -> Iterator[Connection]:
    """A transaction that only reads. On SQLite it starts as a plain (deferred) BEGIN, so it
    neither takes nor waits for the write lock a busy site holds; elsewhere it is an ordinary
    transaction, and every transaction that writes keeps BEGIN IMMEDIATE."""
    conn.info[_READING] = True
    try:
        with conn.begin():
            yield conn
    finally:
        conn.info.pop(_READING, None)


def insert_rows(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert many rows (of text, integer and NULL values) in one round trip, the way the
    connection's database does it best (:meth:`privacy_lock.dialects.Dialect.insert_rows`)."""
    from privacy_lock.dialects import for_connection  # dialects imports config, which imports us

    for_connection(conn).insert_rows(conn, table, rows)


first_line = errors.first_line  # the driver's first line; errors.error_text is the whole rule


@contextlib.contextmanager
def translate_errors(url: str, lock_timeout: float | None = None,
                     changed: Callable[[], bool] = lambda: True) -> Iterator[None]:
    """Turn driver errors into one-line DatabaseErrors that name the (password-free) database.

    A lock wait that ran out (``lock_timeout`` given) becomes the one "could not lock" message:
    exit 2 when ``changed()`` says no transaction that writes has committed, else exit 1."""
    try:
        yield
    except SQLAlchemyError as exc:
        if lock_timeout is not None and is_lock_conflict(exc):
            if changed():
                raise LockTimeoutError(could_not_lock(lock_timeout, changed=True)) from exc
            raise LockWaitError(could_not_lock(lock_timeout)) from exc
        raise DatabaseError(hide_secrets(errors.error_text(exc, safe_url(url)), url)) from exc


def connect_check(engine: Engine, create: bool = False) -> None:
    """Open and close one connection, so an unreachable database fails before any work starts.

    A SQLite file that does not exist is an error unless ``create`` (``init``): connecting would
    silently create an empty database where a typo in the path was meant to be caught.
    """
    url = engine.url
    if url.get_backend_name() == "sqlite" and not create:
        path = url.database or ""
        in_memory = path in ("", ":memory:") or url.query.get("mode") == "memory"
        if not in_memory and not path.startswith("file:") and not Path(path).exists():
            raise DatabaseError(
                f"database file {path} does not exist (wrong path? `privacy-lock init` creates "
                "a new one, `privacy-lock demo` a demo)"
            )
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as exc:
        raise DatabaseError(
            f"cannot connect to {safe_url(engine.url)}: {hide_secrets(first_line(exc), engine.url)}"
        ) from exc
