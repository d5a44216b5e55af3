"""The tool's Python API in a process of its own: ``python -m bench.worker SPEC.json``.

It does what the CLI does for several USER arguments, through the service layer (validate the
users, then run them as one batch on one connection, where small users share chunks) and prints
a JSON report: seconds, items, number of transactions, the longest one, and the largest
chunk. Transactions are timed with SQLAlchemy engine events from here, so the product carries
no timing code.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from sqlalchemy import Connection, Engine, event

from privacy_lock import service
from privacy_lock.pacing import DEFAULT_CHUNK_TIME, Pacer, default_chunk_size


class TransactionTimer:
    """Times every transaction of an engine, from ``begin`` to the end of the DBAPI commit.

    The ``begin`` listener goes first (``insert=True``) so that SQLite's ``BEGIN IMMEDIATE``,
    where a writer may wait, is inside the measured time; the end is taken after the driver's
    commit returns, so the commit (WAL flush, fsync) is inside it too. A transaction that ran
    an INSERT, UPDATE, DELETE or a locking read counts as *writing*: those are the ones that
    hold row locks the live site could wait on; a read-only one (validating 10,000 users)
    holds none.
    """

    def __init__(self, engine: Engine) -> None:
        self.count = self.writing_count = 0
        self.longest = self.longest_writing = 0.0
        # How much of the longest ones was the commit alone: on these small machines a commit
        # can wait for the disk behind the previous contender's writes (bench/README in
        # docs/BENCHMARKS.md), which is not time the tool's statements took.
        self.longest_commit = self.longest_writing_commit = 0.0
        self._started: float | None = None
        self._commit_started: float | None = None
        self._writing = False
        event.listen(engine, "begin", self._begin, insert=True)
        event.listen(engine, "before_cursor_execute", self._statement)
        dialect = engine.dialect
        real_commit, real_rollback = dialect.do_commit, dialect.do_rollback

        def do_commit(dbapi_connection: Any) -> None:
            self._commit_started = time.perf_counter()
            real_commit(dbapi_connection)
            self._end()

        def do_rollback(dbapi_connection: Any) -> None:
            real_rollback(dbapi_connection)
            self._end()

        dialect.do_commit = do_commit  # type: ignore[method-assign]
        dialect.do_rollback = do_rollback  # type: ignore[method-assign]

    def _begin(self, _conn: Connection) -> None:
        self._started = time.perf_counter()
        self._writing = False

    def _statement(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        head = statement.lstrip()[:6].upper()
        if head in ("INSERT", "UPDATE", "DELETE") or "FOR UPDATE" in statement:
            self._writing = True

    def _end(self) -> None:
        if self._started is None:
            return  # the pool's reset-on-return rollback, outside any transaction
        ended = time.perf_counter()
        seconds = ended - self._started
        commit = ended - self._commit_started if self._commit_started is not None else 0.0
        if seconds > self.longest:
            self.longest, self.longest_commit = seconds, commit
        self.count += 1
        if self._writing:
            if seconds > self.longest_writing:
                self.longest_writing, self.longest_writing_commit = seconds, commit
            self.writing_count += 1
        self._started = self._commit_started = None


def peak_rss_mb(pid: int | str = "self") -> float | None:
    """The process's peak resident set size (VmHWM) in MB, from /proc; None off Linux."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Apply or revert ``spec["subjects"]`` through the service layer (as the CLI does, minus
    the CLI); return the report."""
    target = service.Target.load(spec["config"], spec["url"])
    # As the CLI runs by default: chunks sized by time, --chunk-size their upper bound (the
    # CLI contender inherits PRIVACY_LOCK_CHUNK_TIME from the environment, as this does).
    chunk_time = float(os.environ.get("PRIVACY_LOCK_CHUNK_TIME", DEFAULT_CHUNK_TIME))
    pacer = Pacer(spec["chunk_size"] or default_chunk_size(chunk_time), chunk_time=chunk_time)
    watcher = ChunkWatcher(pacer)
    timer = TransactionTimer(target.engine)
    started = time.perf_counter()
    # Revert by user, as support does: the batch finds each user's active lock.
    command = service.apply if spec["operation"] == "apply" else service.revert
    result = command(target, users=spec["subjects"], identity=IDENTITY, pacer=pacer,
                     progress=lambda _count, _requests: watcher)
    finished = time.perf_counter()
    target.dispose()
    if not isinstance(result, service.RunResult):
        raise SystemExit("revert filed requests for a second operator: the bench's database "
                         "must store revert_requires_approval = false")
    failed = [o for o in result.outcomes if o.failed]
    if failed:
        raise SystemExit(f"{len(failed)} requests failed, e.g. {failed[0].error}")
    counted = "changed" if spec["operation"] == "apply" else "restored"
    items = sum(getattr(c, counted) for o in result.outcomes for c in o.kinds.values())
    return {
        "seconds": finished - started,
        "validate_seconds": watcher.started_at - started if watcher.started_at else 0.0,
        "items": items,
        "transactions": timer.count,
        "writing_transactions": timer.writing_count,
        "longest_txn_ms": timer.longest * 1000,
        "longest_writing_txn_ms": timer.longest_writing * 1000,
        "longest_txn_commit_ms": timer.longest_commit * 1000,
        "longest_writing_txn_commit_ms": timer.longest_writing_commit * 1000,
        "max_chunk_items": max(watcher.chunk_items.values(), default=0),
        "chunks": pacer.chunks,
        "peak_rss_mb": peak_rss_mb(),
    }


IDENTITY = service.Identity("bench", "BENCH-1", "benchmark")


class ChunkWatcher:
    """The progress watcher the service feeds: here it only counts the items of each committed
    chunk (several users may share one) and notes when the run began (validation done)."""

    def __init__(self, pacer: Pacer) -> None:
        self.pacer = pacer
        self.chunk_items: dict[int, int] = {}
        self.started_at: float | None = None

    def note(self, _message: str) -> None:
        pass

    def item_done(self, _user: str, _kind: str, items: int) -> None:
        if self.started_at is None:
            self.started_at = time.perf_counter()
        self.chunk_items[self.pacer.chunks] = self.chunk_items.get(self.pacer.chunks, 0) + items

    def user_done(self, _user: str, _status: str) -> None:
        pass

    def close(self) -> None:
        pass


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as fh:
        spec = json.load(fh)
    print(json.dumps(run(spec)))


if __name__ == "__main__":
    main()
