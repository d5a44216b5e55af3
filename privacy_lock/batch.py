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
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Connection, func, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from privacy_lock import grouped, locking
from privacy_lock.audit import Actor
from privacy_lock.config import ContentMap
from privacy_lock.db import first_line, reading
from privacy_lock.errors import PrivacyLockError
from privacy_lock.pacing import Interrupted, LockTimeoutError, Pacer
from privacy_lock.requests import COLUMNS, Request
from privacy_lock.schema import locks, snapshots

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
            "kinds": {name: c.as_dict() for name, c in self.kinds.items()},
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
    share_chunks: bool = True,
) -> BatchResult:
    """Run every request in order; one failing does not stop the others, Ctrl-C does.

    With ``share_chunks``, consecutive requests of users with few items share chunks (see
    grouped.py), and a dry run counts them together; without it, every transaction stays inside
    one user's rows.
    """
    run = _BatchRun(conn, cmap, mode, pacer, dry_run, on_done)
    with pacer.stop_on_sigint():
        try:
            if share_chunks and len(requests) > 1:
                run.grouped(requests)
            else:
                for request in requests:
                    run.one_by_one(request)
        except Interrupted:
            run.stopped(requests)
    return BatchResult([run.outcomes[id(r)] for r in requests], run.interrupted)


class _BatchRun:
    """The outcomes of a batch as it goes, and the two ways of running its requests."""

    def __init__(self, conn: Connection, cmap: ContentMap, mode: Mode, pacer: Pacer,
                 dry_run: bool, on_done: Callable[[Outcome], None] | None) -> None:
        self.conn, self.cmap, self.mode, self.pacer = conn, cmap, mode, pacer
        self.dry_run, self.on_done = dry_run, on_done
        self.outcomes: dict[int, Outcome] = {}
        self.in_flight: Request | None = None
        self.share = True  # until a shared chunk fails for a reason that is not passing
        self.interrupted = False

    def finish(self, outcome: Outcome) -> None:
        self.outcomes[id(outcome.request)] = outcome
        if self.on_done:
            self.on_done(outcome)

    def one_by_one(self, request: Request) -> None:
        """Run one request on its own (the per-user way); a failure becomes its outcome."""
        self.pacer.check_stop()
        self.in_flight = request
        try:
            outcome = _run_one(self.conn, self.cmap, self.mode, request, self.pacer,
                               self.dry_run)
        except (PrivacyLockError, SQLAlchemyError) as exc:
            if isinstance(exc, Interrupted):
                raise
            outcome = Outcome(request, request.user_id,
                              getattr(exc, "lock_id", None) or request.lock_id, FAILED,
                              error=_message(exc))
        self.in_flight = None
        self.finish(outcome)

    def grouped(self, requests: Sequence[Request]) -> None:
        """Plan a window of requests at a time; users whose items fit a chunk together share
        it, bigger ones (and any the plan could not place) go one by one, in file order."""
        for start in range(0, len(requests), IN_BATCH):
            window = requests[start:start + IN_BATCH]
            plans = self._plan(window) if self.mode == "apply" else self._plan_revert(window)
            group: list[tuple[Request, Any]] = []
            weight = 0
            for request in window:
                plan = plans.get(id(request))
                if plan is None or plan.weight > self.pacer.size or not self.share:
                    self._run_group(group)
                    group, weight = [], 0
                    self.one_by_one(request)
                    continue
                if weight + plan.weight > self.pacer.size or len(group) >= grouped.MAX_GROUP_USERS:
                    self._run_group(group)
                    group, weight = [], 0
                group.append((request, plan))
                weight += plan.weight
            self._run_group(group)

    def _plan(self, window: Sequence[Request]) -> dict[int, grouped.Planned]:
        """Plans by request (its id()); a request that cannot be planned is left out."""
        wanted, by_subject = [], {}
        for request in window:
            try:
                subject = self.cmap.normalize_user(request.user_id or "")
                kinds = self.cmap.select(request.kinds)
            except PrivacyLockError:
                continue  # the per-user way reports it as the request's failure
            wanted.append((subject, kinds, Actor.current(request.operator, request.ticket,
                                                          request.reason)))
            by_subject[subject] = request
        with reading(self.conn):
            plans = grouped.plan_apply(self.conn, self.cmap, wanted)
        return {id(by_subject[s]): p for s, p in plans.items()}

    def _plan_revert(self, window: Sequence[Request]) -> dict[int, grouped.PlannedRevert]:
        """Plans by request (its id()) for the requests naming an active lock, each lock once."""
        wanted: dict[int, tuple[Request, Actor]] = {}
        with reading(self.conn):
            locking.plan_for_actual_keys(self.conn)
            subject_of: dict[int, str] = {}
            for request in window:
                if request.lock_id is None and request.user_id:
                    try:
                        subject_of[id(request)] = self.cmap.normalize_user(request.user_id)
                    except PrivacyLockError:
                        continue
            active = locking.active_lock_ids(self.conn, list(subject_of.values()))
            for request in window:
                lock_id = request.lock_id
                if lock_id is None and id(request) in subject_of:
                    lock_id = active.get(subject_of[id(request)])
                if lock_id is None or lock_id in wanted:
                    continue  # not locked, or named twice: the per-user way says so
                wanted[int(lock_id)] = (request, Actor.current(request.operator, request.ticket,
                                                               request.reason))
            plans = grouped.plan_revert(self.conn, self.cmap,
                                        [(lock_id, actor) for lock_id, (_r, actor)
                                         in wanted.items()])
        return {id(wanted[lock_id][0]): plan for lock_id, plan in plans.items()}

    def _run_group(self, group: list[tuple[Request, Any]]) -> None:
        """One shared chunk for the group (a dry run only reports the plan); when it fails,
        each of its users goes one by one."""
        if not group:
            return
        if self.dry_run:
            plans = [plan for _request, plan in group]
            if self.mode == "apply":
                results = [plan.dry_run_result() for plan in plans]
            else:
                with reading(self.conn):
                    locking.plan_for_actual_keys(self.conn)
                    results = grouped.count_revert_group(self.conn, self.cmap, plans)
            for (request, _plan), result in zip(group, results, strict=True):
                self.finish(Outcome(request, result.user, result.lock_id, result.status,
                                    result.kinds, dry_run=True))
            return
        if len(group) == 1:
            self.one_by_one(group[0][0])
            return
        self.pacer.check_stop()
        plans = [plan for _request, plan in group]
        run_group = grouped.apply_group if self.mode == "apply" else grouped.revert_group
        try:
            results = self.pacer.chunk(self.conn, partial(
                run_group, self.conn, self.cmap, plans, self.pacer.size))
        except (grouped.StaleGroup, PrivacyLockError, SQLAlchemyError) as exc:
            if isinstance(exc, Interrupted):
                raise
            if isinstance(exc, grouped.StaleGroup | IntegrityError | LockTimeoutError):
                self.pacer.note(f"{len(group)} users could not share a chunk "
                                f"({_message(exc)}); doing them one by one")
            else:  # not a passing state of the data: do not try again in this run
                self.share = False
                self.pacer.note(f"users cannot share chunks here ({_message(exc)}); doing "
                                "the rest of the batch one by one")
            for request, _plan in group:
                self.one_by_one(request)
            return
        counted = "changed" if self.mode == "apply" else "restored"
        self.pacer.count_chunk([(r.user, name, getattr(c, counted)) for r in results
                                for name, c in r.kinds.items() if getattr(c, counted)])
        for (request, _plan), result in zip(group, results, strict=True):
            self.finish(Outcome(request, result.user, result.lock_id, result.status,
                                result.kinds, chunks=result.chunks))
        self.pacer.between_chunks()

    def stopped(self, requests: Sequence[Request]) -> None:
        """Ctrl-C: the request in flight is interrupted, the ones not reached not started."""
        self.interrupted = True
        for request in requests:
            if id(request) in self.outcomes:
                continue
            if request is self.in_flight:
                self.outcomes[id(request)] = Outcome(
                    request, request.user_id, request.lock_id, INTERRUPTED,
                    error="stopped by Ctrl-C; re-run to finish")
            else:
                self.outcomes[id(request)] = Outcome(request, request.user_id, request.lock_id,
                                                     NOT_STARTED)


def _message(exc: BaseException) -> str:
    if isinstance(exc, PrivacyLockError | grouped.StaleGroup):
        return str(exc)
    return f"database error: {first_line(exc)}"


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


def missing_locks(conn: Connection, lock_ids: list[int]) -> list[int]:
    """Of ``lock_ids``, those with no lock row (in any state): one query."""
    found = set(conn.execute(
        select(locks.c.lock_id).where(locks.c.lock_id.in_(lock_ids))
    ).scalars().all())
    return [lock_id for lock_id in lock_ids if lock_id not in found]


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
            subjects = [cmap.normalize_user(r.user_id) for r in requests if r.user_id]
            for start in range(0, len(subjects), IN_BATCH):
                active = locking.active_lock_ids(conn, subjects[start:start + IN_BATCH])
                lock_ids += [active[s] for s in subjects[start:start + IN_BATCH] if s in active]
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
