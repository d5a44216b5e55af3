"""Live-site safety for the chunk loops: chunks sized by time, short lock waits with bounded
retries, a pause between chunks, a pause file, and a clean stop on Ctrl-C.

The unit of work is time, not a count of items (the idea of pt-online-schema-change's
``--chunk-time``): each chunk is sized to take about ``chunk_time`` seconds, the longest a site
write should wait behind the tool. The first chunk is small (``START_CHUNK_ITEMS``); each next
one is sized from the measured rate of the last, at most doubling, and never above ``size``
(``--chunk-size``: by default 10,000 then, so that time alone sizes the chunks of a fast
database). ``chunk_time = 0`` keeps every chunk at ``size`` items (by default 1,000).

Where one transaction keeps every other writer out (SQLite), the write lock is left free after
each chunk for as long as a waiting writer's busy handler may sleep (:meth:`Dialect.yield_after`),
so the site's writes go in between the tool's chunks instead of after the run.

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
from collections import deque
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

DEFAULT_CHUNK_SIZE = 1000  # every chunk's items when chunks are not sized by time
MAX_CHUNK_SIZE = 10_000  # keeps every IN (...) list well inside each driver's parameter limit
DEFAULT_CHUNK_TIME = 0.1  # seconds: the longest a site write should wait behind one chunk
START_CHUNK_ITEMS = 100  # the first chunk of a time-sized run, before any rate is known
RATE_WINDOW = 8  # chunks the time per item and the fixed time per chunk are fitted to
# The fewest items time alone shrinks a chunk to (unless --chunk-size is lower): on a loaded
# machine a chunk of 5 spread items took 60-100 ms, nearly all of it commit and bookkeeping, and
# a 100,000-item user would have taken 20,000 commits (issue #15's spread data, PostgreSQL).
MIN_TIMED_ITEMS = 25
T = TypeVar("T")


def default_chunk_size(chunk_time: float) -> int:
    """``--chunk-size`` when not given: the most a time-sized chunk may grow to (a bound of
    1,000 kept chunks of a fast database at 20-40 ms, each paying a commit and, on SQLite, the
    free gap after it: issue #15's heavy apply on SQLite took 1.9 s in 75 chunks, 0.9 s in 13
    with 10,000), or every chunk's items when they are not sized by time."""
    return MAX_CHUNK_SIZE if chunk_time else DEFAULT_CHUNK_SIZE
_TIMEOUT_SET = LOCK_TIMEOUT_SET  # connection info key: the lock timeout in force


class AbortedBySecondCtrlC(KeyboardInterrupt):
    """A second Ctrl-C inside a run: the chunk in flight is abandoned (its transaction rolls
    back), and the run still ends with its outcomes (engine.run_batch)."""


@dataclass
class Pacer:
    """How big each transaction is, and how the run paces and protects itself between them."""

    size: int = DEFAULT_CHUNK_SIZE  # given: the most items a chunk holds; then: the next one's
    sleep: float = 0.0
    chunk_time: float = 0.0  # seconds a chunk should take; 0: every chunk ``size`` items
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
    # (items, seconds) of the last chunks of known size: what the next size is fitted to
    _measured: deque[tuple[int, float]] = field(
        default_factory=lambda: deque(maxlen=RATE_WINDOW), repr=False)

    def __post_init__(self) -> None:
        for name, seconds in (("--sleep", self.sleep), ("--lock-timeout", self.lock_timeout),
                              ("--chunk-time", self.chunk_time), ("backoff", self.backoff)):
            if seconds is not None and not math.isfinite(seconds):  # nan passes < and >
                raise UsageError(f"{name} must be a finite number of seconds, got {seconds}")
        if not 1 <= self.size <= MAX_CHUNK_SIZE:
            raise UsageError(f"chunk size must be between 1 and {MAX_CHUNK_SIZE}, got {self.size}")
        if self.sleep < 0:
            raise UsageError("--sleep must not be negative")
        if self.chunk_time < 0:
            raise UsageError("--chunk-time must not be negative")
        if self.pause_file is not None:
            try:  # asked before each chunk: a name the system refuses would fail mid-run
                self.pause_file.exists()
            except OSError as exc:
                raise UsageError(f"--pause-file {self.pause_file}: "
                                 f"{exc.strerror or exc}") from None
        self.max_size = self.size
        if self.chunk_time:
            self.size = min(self.max_size, START_CHUNK_ITEMS)

    def chunk(self, conn: Connection, work: Callable[[], T],
              items: int | Callable[[], int] | None = None) -> T:
        """Run ``work`` in one transaction on ``conn`` with short lock waits, retrying lock
        conflicts with backoff; size the next chunk from the time this one held its locks
        (``items``: how many items it held, or a function that says so once it ran; None: it
        says nothing about the rate, such as a chunk that closes a lock); on SQLite, leave the
        write lock free for a waiting writer before returning."""
        self.wait_if_paused()
        dialect = for_connection(conn)
        for attempt in range(self.retries + 1):
            started = time.monotonic()
            try:
                self._set_sqlite_busy_timeout(conn)
                with conn.begin():
                    # From here to the commit the chunk holds its locks (SQLite: the database
                    # write lock, from BEGIN IMMEDIATE): what a site write may wait behind.
                    started = time.monotonic()
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
            held = time.monotonic() - started
            self._adapt(held, items() if callable(items) else items)
            gap = dialect.yield_after(held)
            if gap:
                time.sleep(gap)
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

    def _adapt(self, seconds: float, items: int | None = None) -> None:
        """Size the next chunk to take about ``chunk_time``.

        A chunk's time is a fixed part (the commit, the lock rows, the audit event: the same
        for 10 items or 1000) and a part per item; both are fitted (least squares) to the last
        ``RATE_WINDOW`` chunks. The next chunk gets the items whose time fits in what the fixed
        part leaves of ``chunk_time``, or in half of it when the fixed part takes more (on a
        loaded machine a commit alone may outlast the budget: chunks of a few items would only
        add commits). It grows at most double and shrinks at least to a quarter at once, and
        never below ``MIN_TIMED_ITEMS``. A
        chunk of no known size (one that closes a lock) is not measured; a chunk at most half
        full says little about the rate and never grows the next one."""
        self.longest_chunk = max(self.longest_chunk, seconds)
        if not self.chunk_time or seconds <= 0 or items is None or items < 1:
            return
        self._measured.append((items, seconds))
        fixed, per_item = self._fit()
        budget = max(self.chunk_time - fixed, self.chunk_time / 2)
        fits = budget / per_item if per_item > 0 else self.size * 2.0
        if fits < self.size:
            floor = min(self.max_size, MIN_TIMED_ITEMS)
            self.size = max(floor, min(self.size, int(max(fits, self.size / 4))))
        elif items * 2 >= self.size:
            self.size = min(self.max_size, int(min(fits, self.size * 2)))

    def _fit(self) -> tuple[float, float]:
        """(fixed seconds per chunk, seconds per item) of the last chunks: a least-squares
        line through their (items, seconds); with one size only, all of it per item."""
        n = len(self._measured)
        mean_items = sum(i for i, _s in self._measured) / n
        mean_seconds = sum(s for _i, s in self._measured) / n
        spread = sum((i - mean_items) ** 2 for i, _s in self._measured)
        if spread > 0:
            per_item = sum((i - mean_items) * (s - mean_seconds)
                           for i, s in self._measured) / spread
            fixed = mean_seconds - per_item * mean_items
            if per_item > 0 and fixed >= 0:
                return fixed, per_item
        return 0.0, mean_seconds / mean_items
