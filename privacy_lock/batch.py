"""Running a list of requests (from USER arguments or a request file) one after another.

A request that fails at run time (a lock the site will not give up, a lost connection) is
reported as failed and the others go on; Ctrl-C stops between two chunks and marks what was
not started. The outcome of every request is kept for the final table and ``--output``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Connection, func, select
from sqlalchemy.exc import SQLAlchemyError

from privacy_lock import locking
from privacy_lock.audit import Actor
from privacy_lock.config import ContentMap
from privacy_lock.db import first_line, reading
from privacy_lock.errors import PrivacyLockError
from privacy_lock.pacing import Interrupted, Pacer
from privacy_lock.requests import COLUMNS, Request
from privacy_lock.schema import snapshots

Mode = Literal["apply", "revert"]
FAILED, NOT_STARTED, INTERRUPTED = "failed", "not-started", "interrupted"
IN_BATCH = 1000  # users or locks per aggregate query when planning progress totals


@dataclass
class Outcome:
    """What happened to one request."""

    request: Request
    user: str | None
    lock_id: int | None
    status: str
    kinds: dict[str, locking.KindCounts] = field(default_factory=dict)
    error: str | None = None
    dry_run: bool = False
    chunks: int = 0

    @property
    def failed(self) -> bool:
        return self.status in (FAILED, INTERRUPTED, NOT_STARTED)

    @property
    def label(self) -> str:
        """'user 42' or 'lock 7', with the request file line when there is one."""
        who = f"user {self.user}" if self.user else f"lock {self.lock_id}"
        return f"line {self.request.line}, {who}" if self.request.line else who

    def as_dict(self) -> dict[str, Any]:
        return {
            "line": self.request.line or None,
            "user": self.user,
            "lock_id": self.lock_id,
            "status": self.status,
            "dry_run": self.dry_run,
            "chunks": self.chunks,
            "kinds": {name: asdict(c) for name, c in self.kinds.items()},
            "error": self.error,
            "ticket": self.request.ticket,
            "operator": self.request.operator,
        }


@dataclass
class BatchResult:
    outcomes: list[Outcome]
    interrupted: bool = False

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.failed]


def run_batch(
    conn: Connection,
    cmap: ContentMap,
    mode: Mode,
    requests: Sequence[Request],
    pacer: Pacer,
    dry_run: bool = False,
    on_done: Callable[[Outcome], None] | None = None,
) -> BatchResult:
    """Run every request in order; one failing does not stop the others, Ctrl-C does."""
    outcomes: list[Outcome] = []
    interrupted = False
    with pacer.stop_on_sigint():
        for index, request in enumerate(requests):
            try:
                pacer.check_stop()
                outcome = _run_one(conn, cmap, mode, request, pacer, dry_run)
            except Interrupted:
                interrupted = True
                outcomes.append(Outcome(request, request.user_id, request.lock_id, INTERRUPTED,
                                        error="stopped by Ctrl-C; re-run to finish"))
                outcomes += [Outcome(r, r.user_id, r.lock_id, NOT_STARTED)
                             for r in requests[index + 1:]]
                break
            except (PrivacyLockError, SQLAlchemyError) as exc:
                message = (str(exc) if isinstance(exc, PrivacyLockError)
                           else f"database error: {first_line(exc)}")
                outcome = Outcome(request, request.user_id, request.lock_id, FAILED,
                                  error=message)
            outcomes.append(outcome)
            if on_done:
                on_done(outcome)
    return BatchResult(outcomes, interrupted)


def _run_one(
    conn: Connection, cmap: ContentMap, mode: Mode, request: Request, pacer: Pacer,
    dry_run: bool,
) -> Outcome:
    actor = Actor.current(request.operator, request.ticket, request.reason)
    if mode == "apply":
        subject = cmap.normalize_user(request.user_id or "")
        result = locking.apply_lock(conn, cmap, subject, cmap.select(request.kinds), actor,
                                    pacer, dry_run)
        return Outcome(request, subject, result.lock_id, result.status, result.kinds,
                       dry_run=dry_run, chunks=result.chunks)
    lock_id = request.lock_id
    subject = cmap.normalize_user(request.user_id) if request.user_id else None
    if lock_id is None:
        with reading(conn):
            lock_id = locking.active_lock_id(conn, subject or "")
        if lock_id is None:
            return Outcome(request, subject, None, "not-locked", dry_run=dry_run)
    result = locking.revert_lock(conn, cmap, lock_id, actor, pacer, dry_run)
    return Outcome(request, result.user, lock_id, result.status, result.kinds,
                   dry_run=dry_run, chunks=result.chunks)


def planned_items(
    conn: Connection, cmap: ContentMap, mode: Mode, requests: Sequence[Request]
) -> int:
    """How many items the batch will touch, for the progress bar (aggregate queries)."""
    total = 0
    with reading(conn):
        if mode == "apply":
            kinds_of = {cmap.normalize_user(r.user_id or ""): r.kinds for r in requests}
            for kind in cmap.kinds.values():
                owners = [cmap.owner_value(kind, s) for s, only in kinds_of.items()
                          if not only or kind.name in only]
                for start in range(0, len(owners), IN_BATCH):
                    total += conn.execute(
                        select(func.count()).where(
                            kind.owner_col.in_(owners[start:start + IN_BATCH]),
                            locking.visible(kind),
                        )
                    ).scalar_one()
        else:
            lock_ids = [r.lock_id for r in requests if r.lock_id is not None]
            lock_ids += [lid for r in requests if r.user_id
                         if (lid := locking.active_lock_id(conn, cmap.normalize_user(r.user_id)))]
            for start in range(0, len(lock_ids), IN_BATCH):
                total += conn.execute(
                    select(func.count()).select_from(snapshots).where(
                        snapshots.c.lock_id.in_(lock_ids[start:start + IN_BATCH]),
                        snapshots.c.state == locking.PENDING,
                    )
                ).scalar_one()
    return int(total)


def outcome_rows(outcomes: Sequence[Outcome], mode: Mode) -> list[dict[str, Any]]:
    """One flat row per request and kind, for tables and CSV."""
    counts = ("changed", "already_private") if mode == "apply" else (
        "restored", "conflicts", "gone")
    from_file = any(o.request.line for o in outcomes)
    rows = []
    for outcome in outcomes:
        for kind, kind_counts in (outcome.kinds or {"-": None}).items():
            row: dict[str, Any] = {"line": outcome.request.line} if from_file else {}
            row.update({"user": outcome.user, "lock": outcome.lock_id,
                        "status": outcome.status, "kind": kind})
            for name in counts:
                row[name] = getattr(kind_counts, name) if kind_counts else 0
            if outcome.error:
                row["error"] = outcome.error
            rows.append(row)
    return rows


def write_output(path: Path, outcomes: Sequence[Outcome], mode: Mode) -> Path | None:
    """Write the per-request results (JSON for .json, else CSV); when some failed, also write
    ``<name>.failed.csv``, a request file of just those rows, and return its path."""
    if path.suffix.lower() == ".json":
        path.write_text(
            json.dumps([o.as_dict() for o in outcomes], ensure_ascii=False, indent=2) + "\n",
            encoding="utf-8",
        )
    else:
        rows = outcome_rows(outcomes, mode)
        columns = list(dict.fromkeys(k for row in rows for k in row))
        path.write_text(_csv(rows, columns), encoding="utf-8")
    failed = [o for o in outcomes if o.failed]
    if not failed:
        return None
    retry_path = path.with_name(path.stem + ".failed.csv")
    columns = [c for c in COLUMNS[mode] if c != "kinds" or mode == "apply"]
    rows = [{
        "user_id": o.request.user_id or "",
        "lock_id": o.request.lock_id if o.request.lock_id is not None else "",
        "ticket": o.request.ticket, "reason": o.request.reason,
        "kinds": ";".join(o.request.kinds), "operator": o.request.operator,
    } for o in failed]
    if mode == "revert" and all(r["lock_id"] == "" for r in rows):
        columns.remove("lock_id")
    elif mode == "revert" and all(r["user_id"] == "" for r in rows):
        columns.remove("user_id")
    elif mode == "revert":
        # A revert row names a user or a lock, not both: keep the lock where the row had one.
        for row in rows:
            if row["lock_id"] != "":
                row["user_id"] = ""
    retry_path.write_text(_csv(rows, columns), encoding="utf-8")
    return retry_path


def _csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: "" if row.get(c) is None else row.get(c) for c in columns})
    return out.getvalue()
