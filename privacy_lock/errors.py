"""The one exception hierarchy, the one exit-code rule and the one way an error becomes text.

Exit codes (decided by :func:`exit_code`, used by the CLI in one place):

- 0: done.
- 1: an operational failure (the database, a lock the site would not give up, a file that could
  not be written after the run), any failed request in a batch, or a run stopped by Ctrl-C:
  whatever changed something and then failed is 1.
- 2: a usage or validation error (arguments, config, request file, unknown user, kind, lock or
  request, an approver who filed the request, an ``--output`` that cannot be written), raised
  before anything changed.
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, SQLAlchemyError


class PrivacyLockError(Exception):
    """An operational failure: the database, the network, a lock that cannot be taken. Exit 1.

    Inside a batch, one of these raised by a request makes that request's outcome ``failed``
    and the batch goes on.
    """

    exit_code = 1


class UsageError(PrivacyLockError):
    """Bad input (arguments, config, request file, unknown user or kind). Exit 2, and nothing
    was changed: raise it only before the first change."""

    exit_code = 2


class ConfigError(UsageError):
    """The config file or the content map is wrong (a typo, a missing table or column)."""


class DatabaseError(PrivacyLockError):
    """The database could not be reached or refused a statement."""


class NotInitializedError(DatabaseError):
    """The tool's own tables are missing from the target database."""


class LockStateError(PrivacyLockError):
    """A lock changed state under a running command (e.g. reverted while an apply was running)."""

    def __init__(self, message: str, lock_id: int | None = None) -> None:
        super().__init__(message)
        self.lock_id = lock_id  # the lock it is about, for the outcome's lock column


class LockTimeoutError(PrivacyLockError):
    """A chunk could not get its row locks within the retries; nothing in it changed (or: a
    wait outside the chunks ran out after earlier transactions had committed). Exit 1."""


class LockWaitError(PrivacyLockError):
    """A statement outside the chunks (schema reflection, init, the plan, the audit head)
    waited ``--lock-timeout`` for a lock another session holds, before this command had
    committed anything. Exit 2: nothing was changed."""

    exit_code = 2


# Driver error codes that mean "someone else holds the lock; try again later".
_PG_LOCK_CONFLICT = {"55P03", "40P01", "40001"}  # lock_not_available, deadlock, serialization
_MYSQL_LOCK_CONFLICT = {1205, 1213}  # lock wait timeout (row or metadata lock), deadlock


def is_lock_conflict(exc: BaseException) -> bool:
    """Whether a database error is a lock wait timeout or deadlock: PostgreSQL's
    ``lock_timeout``, MariaDB's ``lock_wait_timeout``/``innodb_lock_wait_timeout`` and
    SQLite's busy timeout all end in one of these."""
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in _PG_LOCK_CONFLICT:
        return True
    args = getattr(orig, "args", ())
    if args and args[0] in _MYSQL_LOCK_CONFLICT:
        return True
    text = str(orig).lower()
    return "database is locked" in text or "database table is locked" in text


def could_not_lock(seconds: float, *, retries: int | None = None,
                   changed: bool = False) -> str:
    """The one "could not lock" message, with its advice: after a chunk's ``retries``, or
    for a wait outside the chunks (``changed``: transactions had committed before it)."""
    if retries is not None:
        return (f"could not lock the rows within {seconds:g} s after {retries} retries (the "
                "site holds them); nothing in that chunk changed, re-run later")
    done = ("the transactions committed before it stand; re-run the same command later to "
            "finish" if changed else "nothing was changed; re-run later")
    return (f"could not lock within {seconds:g} s (--lock-timeout): another session holds a "
            f"lock on a table or rows this command needs; {done}")


class StaleChunk(PrivacyLockError):
    """A chunk's rows no longer fit its plan (more items than the chunk holds, an owner the
    database matched by collation, a count that did not add up while the rows were locked):
    the chunk's transaction is rolled back, nothing in it changed, and the engine runs its
    users one by one (a user alone that still does not fit fails with this message)."""


class TamperedError(PrivacyLockError):
    """What a revert depends on (a stored original, a lock's binding, an approval) no longer
    matches what the audit trail sealed: the revert is refused before anything changes. Exit 1:
    an operational failure an auditor must look at, not bad input."""


class OutputError(PrivacyLockError):
    """A result file could not be written after the run (the run's changes stand). Exit 1."""


class FailuresReported(PrivacyLockError):
    """The command finished and has already shown what failed (failed requests, a broken audit
    chain): exit 1 with no further message."""

    def __init__(self, message: str = "failures were reported") -> None:
        super().__init__(message)


class Interrupted(Exception):  # noqa: N818 - the name says what happened, as KeyboardInterrupt
    """Ctrl-C stopped a run between two chunks.

    Not a :class:`PrivacyLockError` on purpose: it is not a failure of the request in flight,
    and request handling that turns a ``PrivacyLockError`` into a failed outcome must let it
    through to the run, which marks that request interrupted and the rest not started. If it
    reaches the CLI it exits 1: the run may have committed chunks and did not finish (re-run
    the same command to finish it).
    """

    exit_code = 1


# What a command may end with and still print one line: the tool's errors, Ctrl-C, and driver
# errors that escaped translate_errors. Anything else is a bug and keeps its traceback.
EXPECTED = (PrivacyLockError, Interrupted, SQLAlchemyError)


def exit_code(exc: BaseException) -> int:
    """The exit code for an exception that ended a command (see the module docstring)."""
    code = getattr(exc, "exit_code", None)
    if isinstance(exc, PrivacyLockError | Interrupted) and isinstance(code, int):
        return code
    return 1  # a database error, or a bug: something may have changed


def first_line(exc: BaseException) -> str:
    """The first line of a driver error, without SQLAlchemy's statement dump and background link."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip() or type(orig).__name__
    return text.splitlines()[0].strip()


def error_text(exc: BaseException, database: str | None = None) -> str:
    """The one line an operator reads for ``exc``: a tool error's own message; for a database
    error, its driver's first line after "database error on DATABASE:" (``database`` is the
    password-free URL, when known) or "database error:"."""
    if isinstance(exc, SQLAlchemyError):
        where = f" on {database}" if database else ""
        return f"database error{where}: {first_line(exc)}"
    return str(exc).strip() or type(exc).__name__
