"""Live-site safety for the chunk loops: short lock waits with bounded retries, adaptive chunk
size, a pause between chunks, a pause file, and a clean stop on Ctrl-C.

The live site must win every lock conflict: each chunk transaction waits only ``lock_timeout``
seconds for a row the site holds (PostgreSQL ``lock_timeout``, MariaDB/MySQL
``innodb_lock_wait_timeout``, SQLite ``busy_timeout``), then rolls back entirely and is retried
after an exponential backoff, at most ``retries`` times. A chunk that never gets its locks fails
the request it belongs to, having changed nothing.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

# They live in errors.py with every other exception; imported here, where they are raised, so
# that ``pacing.Interrupted``, ``pacing.LockTimeoutError`` and ``pacing.is_lock_conflict`` keep
# working.
from privacy_lock.db import DEFAULT_LOCK_TIMEOUT, LOCK_TIMEOUT_SET, timeout_millis
from privacy_lock.dialects import for_connection
from privacy_lock.errors import (
    Interrupted,
    LockTimeoutError,
    UsageError,
    could_not_lock,
    is_lock_conflict,
)

DEFAULT_CHUNK_SIZE = 1000
MAX_CHUNK_SIZE = 10_000  # keeps every IN (...) list well inside each driver's parameter limit
T = TypeVar("T")
_TIMEOUT_SET = LOCK_TIMEOUT_SET  # connection info key: the lock timeout in force


class AbortedBySecondCtrlC(KeyboardInterrupt):
    """A second Ctrl-C inside a run: the chunk in flight is abandoned (its transaction rolls
    back), and the run still ends with its outcomes (engine.run_batch)."""


@dataclass
class Pacer:
    """How big each transaction is, and how the run paces and protects itself between them."""

    size: int = DEFAULT_CHUNK_SIZE
    sleep: float = 0.0
    max_chunk_seconds: float | None = None
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    retries: int = 5
    backoff: float = 0.5
    pause_file: Path | None = None
    # Called after each committed chunk with (user, kind, items changed).
    on_chunk: Callable[[str, str, int], None] | None = None
    # Called with a line for the operator (paused, retrying).
    on_note: Callable[[str], None] | None = None
    chunks: int = 0
    retried: int = 0
    longest_chunk: float = 0.0
    _stop: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        for name, seconds in (("--sleep", self.sleep), ("--lock-timeout", self.lock_timeout),
                              ("--max-chunk-seconds", self.max_chunk_seconds),
                              ("backoff", self.backoff)):
            if seconds is not None and not math.isfinite(seconds):  # nan passes < and >
                raise UsageError(f"{name} must be a finite number of seconds, got {seconds}")
        if not 1 <= self.size <= MAX_CHUNK_SIZE:
            raise UsageError(f"chunk size must be between 1 and {MAX_CHUNK_SIZE}, got {self.size}")
        if self.sleep < 0:
            raise UsageError("--sleep must not be negative")
        if self.max_chunk_seconds is not None and self.max_chunk_seconds <= 0:
            raise UsageError("--max-chunk-seconds must be positive")
        if self.pause_file is not None:
            try:  # asked before each chunk: a name the system refuses would fail mid-run
                self.pause_file.exists()
            except OSError as exc:
                raise UsageError(f"--pause-file {self.pause_file}: "
                                 f"{exc.strerror or exc}") from None
        self._max_size = self.size if self.max_chunk_seconds is None else MAX_CHUNK_SIZE

    def chunk(self, conn: Connection, work: Callable[[], T]) -> T:
        """Run ``work`` in one transaction on ``conn`` with short lock waits, retrying lock
        conflicts with backoff; adapt the chunk size to the time it took."""
        self.wait_if_paused()
        for attempt in range(self.retries + 1):
            started = time.monotonic()
            try:
                self._set_sqlite_busy_timeout(conn)
                with conn.begin():
                    self._set_lock_timeout(conn)
                    result = work()
            except DBAPIError as exc:
                conn.info.pop(_TIMEOUT_SET, None)  # a rolled-back SET is gone with the rest
                if not is_lock_conflict(exc):
                    raise
                if attempt == self.retries:
                    raise LockTimeoutError(could_not_lock(self.lock_timeout,
                                                          retries=self.retries)) from exc
                self.retried += 1
                delay = self.backoff * (2 ** attempt)
                self.note(f"lock conflict, retry {attempt + 1}/{self.retries} in {delay:g} s")
                time.sleep(delay)
                continue
            self._adapt(time.monotonic() - started)
            return result
        raise AssertionError("unreachable")

    def after_chunk(self, user: str, kind: str, items: int) -> None:
        """Report a committed chunk, pause if asked, and stop here if Ctrl-C was pressed."""
        self.count_chunk([(user, kind, items)])
        self.between_chunks()

    def count_chunk(self, pieces: list[tuple[str, str, int]]) -> None:
        """Report one committed chunk: (user, kind, items changed) for each user and kind in it."""
        self.chunks += 1
        if self.on_chunk:
            for user, kind, items in pieces:
                self.on_chunk(user, kind, items)

    def between_chunks(self) -> None:
        """Stop here if Ctrl-C was pressed, else sleep ``--sleep`` seconds."""
        self.check_stop()
        if self.sleep:
            time.sleep(self.sleep)

    @property
    def stop_requested(self) -> bool:
        """Whether Ctrl-C was pressed under :meth:`stop_on_sigint`."""
        return self._stop

    def check_stop(self) -> None:
        if self._stop:
            raise Interrupted("interrupted by Ctrl-C")

    def wait_if_paused(self) -> None:
        """While the pause file exists, wait (saying so once), checking for Ctrl-C."""
        if not (self.pause_file and self.pause_file.exists()):
            return
        self.note(f"paused: {self.pause_file} exists; remove it to continue")
        while self.pause_file.exists():
            self.check_stop()
            time.sleep(0.2)
        self.note("resumed")

    def note(self, message: str) -> None:
        if self.on_note:
            self.on_note(message)

    @contextmanager
    def stop_on_sigint(self, second_aborts: bool = True) -> Iterator[None]:
        """Ctrl-C asks the run to stop after the chunk in flight instead of killing it; a
        second one aborts the chunk, unless ``second_aborts`` is False (while a results file
        is written: a file cut short would be worse than a second of waiting)."""
        def ask_to_stop(_signum: int, _frame: object) -> None:
            if self._stop:
                if second_aborts:  # a second Ctrl-C: the operator really means it
                    raise AbortedBySecondCtrlC
                return
            self._stop = True
            self.note("Ctrl-C: stopping after the current chunk (press again to abort now)")

        try:
            previous = signal.signal(signal.SIGINT, ask_to_stop)
        except ValueError:  # not the main thread (e.g. in tests): no handler to install
            yield
            return
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _set_lock_timeout(self, conn: Connection) -> None:
        """Bound lock waits for this connection's session: the engine set it at connect time
        (:func:`privacy_lock.db.create_tool_engine`); only a pacer with another timeout than
        its engine's sets its own."""
        millis = timeout_millis(self.lock_timeout)
        if conn.info.get(_TIMEOUT_SET) == millis:
            return
        for_connection(conn).set_lock_timeout(conn, self.lock_timeout)
        conn.info[_TIMEOUT_SET] = millis

    def _set_sqlite_busy_timeout(self, conn: Connection) -> None:
        """What must be set before the transaction begins (SQLite waits for the database lock
        at BEGIN IMMEDIATE, before any statement of ours runs)."""
        for_connection(conn).before_transaction(conn, self.lock_timeout)

    def _adapt(self, seconds: float) -> None:
        """Keep chunks near max_chunk_seconds (the idea of pt-online-schema-change's
        --chunk-time): grow or shrink the next chunk by the ratio, at most doubling."""
        self.longest_chunk = max(self.longest_chunk, seconds)
        if self.max_chunk_seconds is None or seconds <= 0:
            return
        ratio = min(2.0, max(0.25, self.max_chunk_seconds / seconds))
        self.size = max(1, min(self._max_size, int(self.size * ratio)))
