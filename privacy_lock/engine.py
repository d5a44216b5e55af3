"""apply and revert: one chunked, crash-safe protocol for one user, a heavy user and a batch.

``plan -> schedule -> run_chunk``:

- :func:`plan` reads, set-based, what each request has to do (a user's visible items per kind
  and active lock; a lock's pending snapshots). The plan is also the progress total and the
  dry run's answer.
- :func:`schedule` packs the planned work into chunks, in request order. A chunk is made of
  *slices*: several small users share one chunk, each user whole in it (a single small user is
  a batch of one); a user heavier than a chunk gets chunks of one *ranged* slice each (the next
  ``size`` keys after the last one done), then a closing chunk that finishes it. With
  ``[database] one_user_per_chunk`` every chunk holds one user.
- :func:`run_chunk` is the one transaction protocol, for every shape, in this order:

  1. lock the chunk's lock rows, in lock id order (so that concurrent runs never deadlock),
     opening the missing ones (apply) — an apply and a revert of the same user never
     interleave chunks, and a failed first chunk leaves no empty lock behind;
  2. the guards: the lock is still the one the run works under and still active; apply never
     hides items of a lock whose revert has begun (an item the revert gave back would be hidden
     again under a snapshot already resolved, and stay hidden once the revert closes it);
  3. the statements of the dialect strategy for the slice's shape (dialects.py): snapshot and
     hide, or restore, each item locked (or compared-and-set) so that a site edit committed
     meanwhile is never undone or mis-snapshotted;
  4. the bookkeeping: the lock's ``updated_at``, totals, closing the lock (revert);
  5. the audit events, last (the audit head row is the one lock every writer shares).

A crash at any instant rolls back the open chunk; committed chunks are complete (content,
snapshots and events together). Re-running the same command walks whatever is left.

The walk of a heavy user is keyset pagination on (owner, id) for apply and on the snapshot id
for revert: each item is visited at most once per run, so a site that keeps editing the
person's items cannot keep a run going forever.

Audit shape (docs/AUDIT.md): every transaction that changes a lock's items writes exactly one
event for that lock. The transaction that finishes the lock's run writes ``apply`` (or
``revert``, which closes it) with the run's totals; a transaction of a ranged slice, whose
user goes on in a later one, writes ``hide`` (or ``restore``) with what it did. The
transaction that opens a lock also writes ``lock``, before. So a user done in one transaction
gets ``lock``, ``apply`` whether it shared it or not, and a heavy user ``lock``, ``hide``...,
``apply``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property, partial
from typing import Any

from sqlalchemy import Connection, and_, case, func, literal, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from privacy_lock import binding, seal
from privacy_lock.audit import Actor, EventSpec, append_events
from privacy_lock.config import BoundKind, ContentMap, bind_value
from privacy_lock.db import reading
from privacy_lock.dialects import (
    Dialect,
    LockOf,
    RevertCounts,
    for_connection,
    original_col,
    revert_outcome,
    snapshot_item_as_id,
    visible,
)
from privacy_lock.errors import (
    Interrupted,
    LockStateError,
    LockTimeoutError,
    PrivacyLockError,
    StaleChunk,
    UsageError,
    error_text,
)
from privacy_lock.pacing import AbortedBySecondCtrlC, Pacer
from privacy_lock.requests import Request
from privacy_lock.schema import locks, snapshots
from privacy_lock.vocabulary import (
    RESOLVED,
    TIME_FORMAT,
    UNFINISHED,
    LockState,
    Mode,
    SnapshotState,
    Status,
    utc_now,
)

IN_BATCH = 1000  # requests planned per window; users or locks per aggregate query
MAX_GROUP_USERS = 500  # users per shared chunk: keeps every statement's parameters bounded
OPEN_ATTEMPTS = 3  # tries of a user whose lock another operator opened at the same moment
TOTALS_PIECE = 10_000  # snapshot rows a heavy lock's totals count per short read (31 ms
# quiet at 50,000: several times that on a loaded 2-core machine, where a site writer waits it)
PLAN_PIECE = 5_000  # content rows a plan counts per short read (counted_owners: 6 ms quiet)
PENDING = SnapshotState.PENDING


# --- results -------------------------------------------------------------------------------------


@dataclass
class KindCounts:
    """What happened (or, in a dry run, would happen) to one kind of one user's content."""

    changed: int = 0  # apply: hidden by this run
    already_private: int = 0  # apply: already owner-only, left alone, not snapshotted
    snapshotted: int = 0  # apply: snapshot rows this lock holds for the kind, in total
    restored: int = 0  # revert: set back to the stored original
    conflicts: int = 0  # revert: changed by someone since the lock, left as it is
    gone: int = 0  # revert: deleted (or no longer this user's) since the lock

    def as_dict(self) -> dict[str, int]:
        """The counts by name (cheaper than dataclasses.asdict, which deep-copies)."""
        return dict(vars(self))

    def add_reverted(self, counts: RevertCounts) -> None:
        self.restored += counts.restored
        self.conflicts += counts.conflicts
        self.gone += counts.gone


@dataclass
class Outcome:
    """What happened to one request."""

    request: Request
    user: str | None
    lock_id: int | None
    status: str
    kinds: dict[str, KindCounts] = field(default_factory=dict)
    error: str | None = None
    dry_run: bool = False
    chunks: int = 0

    @property
    def failed(self) -> bool:
        return self.status in UNFINISHED

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


# --- the plan ------------------------------------------------------------------------------------


@dataclass
class Work:
    """One request as planned: the user (apply) or the lock (revert) and what it has to do."""

    request: Request
    subject: str
    actor: Actor
    kinds: list[BoundKind]  # apply: the kinds asked; revert: the kinds the lock holds
    lock_id: int | None  # the active lock when planned (apply: None until one is opened)
    # apply: per kind, changed = visible now and already_private; revert: filled as it runs
    counts: dict[str, KindCounts]
    pending: int = 0  # revert: snapshots still to resolve, every kind
    alone: bool = False  # must run on its own, as ranged slices (see plan_apply)
    chunks: int = 0  # transactions that changed its items so far
    opened: bool = False  # apply: this run opened its lock (no snapshot of it predates the run)

    @property
    def weight(self) -> int:
        """What the work costs a chunk: its items to change, plus one for its lock row."""
        if self.pending or not self.counts:
            return self.pending + 1
        return sum(c.changed for c in self.counts.values()) + 1


Planned = Work | Outcome


@dataclass
class Context:
    """What every step of a run shares."""

    conn: Connection
    cmap: ContentMap
    mode: Mode
    pacer: Pacer
    dialect: Dialect

    last_time: str = ""

    def chunk_time(self) -> str:
        """The time a chunk stamps on what it writes: the clock, or one microsecond after the
        last chunk's when the clock has not moved (a coarse or frozen clock). The seal of a
        chunk's snapshots names them by lock and this time, so it must not repeat."""
        now = utc_now()
        if now <= self.last_time:
            later = datetime.strptime(self.last_time, TIME_FORMAT) + timedelta(microseconds=1)
            now = later.strftime(TIME_FORMAT)
        self.last_time = now
        return now

    @cached_property
    def resolver(self) -> binding.Resolver:
        """The kinds of locks as they record them (revert and status use it, not the config)."""
        return binding.Resolver(self.conn, self.cmap)


def plan(ctx: Context, requests: Sequence[Request]) -> list[Planned]:
    """What each request has to do, from a few set-based reads in short read transactions
    (the counts of an apply in pieces: :func:`counted_owners`): a :class:`Work`, or the
    request's :class:`Outcome` when there is nothing to run (a revert of
    a user with no active lock, a request that cannot run, a lock named twice)."""
    if ctx.mode == "apply":
        return _plan_apply(ctx, requests)
    return _plan_revert(ctx, requests)


def _failed(request: Request, exc: BaseException, user: str | None = None,
            lock_id: int | None = None) -> Outcome:
    return Outcome(request, user or request.user_id,
                   getattr(exc, "lock_id", None) or lock_id or request.lock_id, Status.FAILED,
                   error=error_text(exc))


def _plan_apply(ctx: Context, requests: Sequence[Request]) -> list[Planned]:
    """Count every user's visible and private items per kind (one grouped query per kind) and
    find their active locks. A user whose rows the database matched by collation rather than
    exactly (``'Alice'`` for ``'alice'`` on MariaDB) runs alone, as ranged slices, whose
    statements name its owner id exactly."""
    conn, cmap = ctx.conn, ctx.cmap
    planned: list[Planned] = []
    works: dict[str, Work] = {}
    for request in requests:
        try:
            subject = cmap.normalize_user(request.user_id or "")
            kinds = cmap.select(request.kinds)
        except PrivacyLockError as exc:
            planned.append(_failed(request, exc))
            continue
        work = Work(request, subject,
                    Actor.current(request.operator, request.ticket, request.reason),
                    kinds, None, {k.name: KindCounts() for k in kinds})
        if subject in works:  # named twice: the second runs after the first, on its own
            work.alone = True
        else:
            works[subject] = work
        planned.append(work)
    for kind in cmap.kinds.values():
        owners = {cmap.owner_value(kind, w.subject): w for w in works.values()
                  if kind.name in w.counts}
        if not owners:
            continue
        counted, alone = counted_owners(conn, ctx.dialect, kind, list(owners))
        for owner, counts in counted.items():
            owners[owner].counts[kind.name] = counts
        for owner in alone:  # matched by collation: these users run alone
            owners[owner].alone = True
    refused: dict[str, PrivacyLockError] = {}
    with reading(conn):
        for subject, lock_id, recorded in conn.execute(
            select(locks.c.active_subject, locks.c.lock_id, locks.c.binding)
            .where(ctx.dialect.in_keys(locks.c.active_subject, list(works)))
        ).all():
            work = works[subject]
            work.lock_id = int(lock_id)
            try:  # a kind it holds under another mapping than the config's now
                binding.extended(recorded, work.kinds, work.lock_id, subject)
            except UsageError as exc:
                refused[subject] = LockStateError(str(exc), work.lock_id)
        begun = reverts_begun(conn, [w.lock_id for w in works.values()
                                     if w.lock_id is not None])
    for work in works.values():
        if work.lock_id in begun:
            refused[work.subject] = being_reverted(work.lock_id, work.subject)
    return [
        _failed(p.request, refused[p.subject], p.subject)
        if isinstance(p, Work) and p.subject in refused else p
        for p in planned
    ]


def _plan_revert(ctx: Context, requests: Sequence[Request]) -> list[Planned]:
    """The active lock each request names (by id, or the user's), with its pending snapshots
    per kind; every kind it holds must still be in the content map."""
    conn, cmap = ctx.conn, ctx.cmap
    subject_of: dict[int, str] = {}
    planned: list[Planned | None] = [None] * len(requests)
    for position, request in enumerate(requests):
        if request.lock_id is None:
            try:
                subject_of[position] = cmap.normalize_user(request.user_id or "")
            except PrivacyLockError as exc:
                planned[position] = _failed(request, exc)
    with reading(conn):
        active = active_lock_ids(conn, list(subject_of.values()))
    lock_at: dict[int, int] = {}
    for position, request in enumerate(requests):
        if planned[position] is not None:
            continue
        lock_id = request.lock_id
        if lock_id is None:
            lock_id = active.get(subject_of[position])
            if lock_id is None:
                planned[position] = Outcome(request, subject_of[position], None,
                                            Status.NOT_LOCKED)
                continue
        lock_at[position] = int(lock_id)
    lock_ids = sorted(set(lock_at.values()))
    rows: dict[int, Any] = {}
    pending: dict[int, int] = {}
    held: dict[int, list[str]] = {}
    if lock_ids:
        # Each from an index alone (the pending one, the (lock, kind, item) one): counting
        # pending snapshots per kind read every snapshot row of a heavy lock, in one read.
        with reading(conn):
            ctx.dialect.plan_for_actual_keys(conn)
            rows = {row.lock_id: row for row in conn.execute(
                select(locks.c.lock_id, locks.c.subject, locks.c.state, locks.c.binding)
                .where(ctx.dialect.in_keys(locks.c.lock_id, lock_ids))).all()}
            pending = {int(lock_id): int(n) for lock_id, n in conn.execute(
                select(snapshots.c.lock_id, func.count())
                .where(ctx.dialect.in_keys(snapshots.c.lock_id, lock_ids),
                       snapshots.c.state == PENDING)
                .group_by(snapshots.c.lock_id)).all()}
        with reading(conn):
            ctx.dialect.plan_for_actual_keys(conn)
            for lock_id, kind_name in conn.execute(
                select(snapshots.c.lock_id, snapshots.c.kind).distinct()
                .where(ctx.dialect.in_keys(snapshots.c.lock_id, lock_ids))
            ).all():
                held.setdefault(int(lock_id), []).append(kind_name)
    seen: set[int] = set()
    with reading(conn):  # the resolver may reflect a table a lock records
        for position, lock_id in lock_at.items():
            request = requests[position]
            row = rows.get(lock_id)
            if row is None:
                planned[position] = _failed(request, UsageError(f"no lock with id {lock_id}"))
                continue
            if row.state != LockState.ACTIVE:
                planned[position] = Outcome(request, row.subject, lock_id, Status.NOT_LOCKED)
                continue
            try:
                kinds = ctx.resolver.kinds(lock_id, row.binding, held.get(lock_id, []))
            except UsageError as exc:
                planned[position] = _failed(request, exc, row.subject, lock_id)
                continue
            work = Work(request, row.subject,
                        Actor.current(request.operator, request.ticket, request.reason),
                        kinds, lock_id, {}, pending.get(lock_id, 0))
            work.alone = lock_id in seen  # named twice: the second runs after the first
            seen.add(lock_id)
            planned[position] = work
    return [p for p in planned if p is not None]


# --- the schedule --------------------------------------------------------------------------------


def schedule(
    planned: Sequence[Planned], size: Callable[[], int], share: Callable[[], bool]
) -> Iterator[Outcome | list[Work]]:
    """The plan in request order, packed: an :class:`Outcome` as it is, and lists of works to
    run as one chunk each. Small works share a chunk while their weights fit ``size()``; a
    work alone (heavier than a chunk, or that must run alone, or with ``share()`` false) is a
    list of one, whose runner cuts it into ranged slices when it does not fit."""
    group: list[Work] = []
    weight = 0
    for item in planned:
        if isinstance(item, Outcome):
            yield item
            continue
        if item.alone or item.weight > size() or not share():
            if group:
                yield group
                group, weight = [], 0
            yield [item]
            continue
        if group and (weight + item.weight > size() or len(group) >= MAX_GROUP_USERS):
            yield group
            group, weight = [], 0
        group.append(item)
        weight += item.weight
    if group:
        yield group


# --- running -------------------------------------------------------------------------------------


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
    """Run every request in order; one failing does not stop the others, Ctrl-C does (between
    two chunks). With ``share_chunks`` small users share chunks; without it every transaction
    stays inside one user's rows."""
    ctx = Context(conn, cmap, mode, pacer, for_connection(conn))
    if mode == "revert" and not dry_run:
        preflight_revert(ctx, requests)
    run = _Run(ctx, dry_run, on_done, share_chunks)
    with pacer.stop_on_sigint():
        try:
            pacer.check_stop()  # Ctrl-C while the batch was planned: start nothing
            for start in range(0, len(requests), IN_BATCH):
                run.window(requests[start:start + IN_BATCH])
        except Interrupted:
            run.stopped(requests)
        except AbortedBySecondCtrlC:
            # The chunk in flight was rolled back, or had just committed.
            # The run still ends with its outcomes (and the caller writes its results file).
            run.stopped(requests, unsure=True)
    return BatchResult([run.outcomes[id(r)] for r in requests], run.interrupted)


def preflight_revert(ctx: Context, requests: Sequence[Request]) -> None:
    """Before a revert changes anything: :func:`preflight` of every lock it names (by id, or
    the user's latest lock: a lock closed by hand must not pass as "nothing to revert")."""
    conn = ctx.conn
    lock_ids = sorted({r.lock_id for r in requests if r.lock_id is not None})
    subjects = []
    for request in requests:
        if request.lock_id is None:
            try:
                subjects.append(ctx.cmap.normalize_user(request.user_id or ""))
            except PrivacyLockError:
                continue  # its own outcome says so
    for start in range(0, len(subjects), IN_BATCH):
        with reading(conn):
            lock_ids += [int(i) for i in conn.execute(
                select(func.max(locks.c.lock_id))
                .where(locks.c.subject.in_(subjects[start:start + IN_BATCH]))
                .group_by(locks.c.subject)).scalars()]
    preflight(conn, ctx.cmap, lock_ids, "revert", ctx.resolver)


def preflight(
    conn: Connection, cmap: ContentMap, lock_ids: Iterable[int], command: str,
    resolver: binding.Resolver | None = None,
) -> set[int]:
    """Refuse ``command`` before it changes anything unless every active lock among
    ``lock_ids`` is still bound as it records (else :class:`UsageError`, exit 2) and every lock
    among them, in any state, is still what the trail sealed (else :class:`TamperedError`,
    exit 1). Short reads, a thousand locks at a time, the seals in pieces of their own
    (:func:`privacy_lock.seal.check_seals`: on SQLite a long read would keep the site's writers
    waiting); returns the active locks checked."""
    resolver = resolver or binding.Resolver(conn, cmap)
    ids, active = sorted(set(lock_ids)), set[int]()
    for start in range(0, len(ids), IN_BATCH):
        part = ids[start:start + IN_BATCH]
        with reading(conn):
            rows = conn.execute(
                select(locks.c.lock_id, locks.c.binding, locks.c.state)
                .where(locks.c.lock_id.in_(part))).all()
            bound = [int(lock_id) for lock_id, recorded, state in rows
                     if recorded is not None and state == LockState.ACTIVE]
            held: dict[int, list[str]] = {}
            for lock_id, kind_name in conn.execute(  # one read for the part, not one per lock
                select(snapshots.c.lock_id, snapshots.c.kind).distinct()
                .where(snapshots.c.lock_id.in_(bound))
            ).all() if bound else []:
                held.setdefault(int(lock_id), []).append(kind_name)
            for lock_id, recorded, state in rows:
                if recorded is not None and state == LockState.ACTIVE:
                    resolver.kinds(int(lock_id), recorded, held.get(int(lock_id), []))
        seal.check_sealed(conn, [int(lock_id) for lock_id, _r, _s in rows], command)
        active.update(int(lock_id) for lock_id, _r, state in rows if state == LockState.ACTIVE)
    return active


class _Run:
    """The outcomes of a run as it goes."""

    def __init__(self, ctx: Context, dry_run: bool, on_done: Callable[[Outcome], None] | None,
                 share: bool) -> None:
        self.ctx, self.dry_run, self.on_done, self.share = ctx, dry_run, on_done, share
        self.outcomes: dict[int, Outcome] = {}
        self.in_flight: Request | None = None
        self.interrupted = False

    def finish(self, outcome: Outcome) -> None:
        self.outcomes[id(outcome.request)] = outcome
        if self.on_done:
            self.on_done(outcome)

    def window(self, requests: Sequence[Request]) -> None:
        """Plan a window of requests, then run its chunks in order."""
        planned = plan(self.ctx, requests)
        for item in schedule(planned, lambda: self.ctx.pacer.size, lambda: self.share):
            if isinstance(item, Outcome):
                self.finish(item)
            elif self.dry_run:
                self.dry(item)
            elif len(item) == 1:
                self.alone(item[0])
            else:
                self.shared(item)

    def dry(self, works: list[Work]) -> None:
        """What the works would do, counted as a real run would find it now."""
        if self.ctx.mode == "apply":
            for work in works:
                if work.alone:  # counted exactly, owner by owner
                    with reading(self.ctx.conn):
                        work.counts = {k.name: count_for_apply(self.ctx.conn, self.ctx.cmap,
                                                               work.subject, k)
                                       for k in work.kinds}
                status = Status.WOULD_EXTEND if work.lock_id else Status.WOULD_LOCK
                self.finish(Outcome(work.request, work.subject, work.lock_id, status,
                                    work.counts, dry_run=True))
            return
        with reading(self.ctx.conn):
            self.ctx.dialect.plan_for_actual_keys(self.ctx.conn)
            counted = count_revert_group(self.ctx, works)
        for work, kinds in zip(works, counted, strict=True):
            self.finish(Outcome(work.request, work.subject, work.lock_id, Status.WOULD_REVERT,
                                kinds, dry_run=True))

    def shared(self, works: list[Work]) -> None:
        """One chunk for several whole users; when it fails, each goes on its own."""
        pacer = self.ctx.pacer
        pacer.check_stop()
        try:
            outcomes = pacer.chunk(self.ctx.conn, partial(run_chunk, self.ctx, Chunk(works)),
                                   sum(w.weight for w in works))
        except (PrivacyLockError, SQLAlchemyError) as exc:
            if isinstance(exc, StaleChunk | IntegrityError | LockTimeoutError):
                pacer.note(f"{len(works):,} users could not share a chunk "
                           f"({error_text(exc)}); doing them one by one")
            else:  # not a passing state of the data: do not try again in this run
                self.share = False
                pacer.note(f"users cannot share chunks here ({error_text(exc)}); doing the "
                           "rest of the batch one by one")
            for work in works:
                self.alone(work, replan=True)
            return
        self._count_chunk(outcomes)
        for outcome in outcomes:
            self.finish(outcome)
        pacer.between_chunks()

    def alone(self, work: Work, replan: bool = False) -> None:
        """Run one work on its own (a failure becomes its outcome): as one whole chunk when it
        fits, else as ranged slices and a closing chunk. ``replan``: plan it again first (a
        shared chunk failed, or it waited behind the same user's first request)."""
        self.ctx.pacer.check_stop()
        self.in_flight = work.request  # Ctrl-C (Interrupted) leaves it set: see stopped()
        self.finish(self._alone(work, replan or work.alone))
        self.in_flight = None

    def _alone(self, work: Work, replan: bool) -> Outcome:
        for attempt in range(OPEN_ATTEMPTS):
            try:
                if replan:
                    replanned = plan(self.ctx, [work.request])[0]
                    if isinstance(replanned, Outcome):
                        return replanned
                    work = replanned
                return self._run_alone(work)
            except IntegrityError as exc:
                # Another operator opened this user's lock between our look and our insert
                # (the unique active_subject): plan again and join that lock.
                if attempt == OPEN_ATTEMPTS - 1:
                    return _failed(work.request, exc, work.subject, work.lock_id)
                replan = True
            except (PrivacyLockError, SQLAlchemyError) as exc:
                return _failed(work.request, exc, work.subject, work.lock_id)
        raise AssertionError("unreachable")

    def _run_alone(self, work: Work) -> Outcome:
        pacer = self.ctx.pacer
        if not work.alone and work.weight <= pacer.size:
            try:
                outcome = pacer.chunk(self.ctx.conn, partial(run_chunk, self.ctx, Chunk([work])),
                                      work.weight)
            except StaleChunk:
                pass  # it grew since the plan: ranged slices
            else:
                self._count_chunk(outcome)
                pacer.between_chunks()
                return outcome[0]
        if self.ctx.mode == "apply":
            return self._apply_ranged(work)
        return self._revert_ranged(work)

    def _count_chunk(self, outcomes: list[Outcome]) -> None:
        counted = "changed" if self.ctx.mode == "apply" else "restored"
        self.ctx.pacer.count_chunk([(o.user or "", name, getattr(c, counted))
                                    for o in outcomes for name, c in o.kinds.items()
                                    if getattr(c, counted)])

    def _apply_ranged(self, work: Work) -> Outcome:
        """A user heavier than a chunk: ranged slices per kind along the key walk, then the
        closing chunk with the totals counted in short reads before it."""
        ctx, pacer = self.ctx, self.ctx.pacer
        done = {k.name: KindCounts(already_private=work.counts[k.name].already_private)
                for k in work.kinds}
        opened = False
        for kind in work.kinds:
            after: Any = None
            # The walk ends at the first chunk that is not full (or at once when the plan
            # found nothing visible): no extra transaction to learn that nothing is left.
            more = work.counts[kind.name].changed > 0 or work.alone
            while more:
                size = pacer.size
                ranged = Slice(kind, after, size)
                pacer.chunk(ctx.conn, partial(run_chunk, ctx, Chunk([work], ranged)),
                            ranged.visited)
                if ranged.opened:
                    opened = True
                if ranged.last is None:
                    break
                after, more = ranged.last, ranged.seen >= size
                done[kind.name].changed += ranged.changed
                pacer.after_chunk(work.subject, kind.name, ranged.changed)
        work.counts = done
        totals = (counted_in_pieces(ctx.conn, work.lock_id, done) if work.lock_id is not None
                  else {})
        closing = Chunk([work], totals=totals, opened_before=opened)
        return pacer.chunk(ctx.conn, partial(run_chunk, ctx, closing))[0]

    def _revert_ranged(self, work: Work) -> Outcome:
        """A lock heavier than a chunk: ranged slices per kind along the snapshot ids, then the
        closing chunk; a snapshot added meanwhile sends it back to walk."""
        ctx, pacer = self.ctx, self.ctx.pacer
        work.counts = {k.name: KindCounts() for k in work.kinds}
        while True:
            for kind in work.kinds:
                after, more = 0, True
                while more:  # until a chunk that is not full: nothing pending behind it
                    size = pacer.size
                    ranged = Slice(kind, after, size)
                    pacer.chunk(ctx.conn, partial(run_chunk, ctx, Chunk([work], ranged)),
                                ranged.visited)
                    if ranged.closed:
                        return Outcome(work.request, work.subject, work.lock_id,
                                       Status.NOT_LOCKED, chunks=work.chunks)
                    if ranged.last is None:
                        break
                    after, more = ranged.last, ranged.reverted.resolved >= size
                    pacer.after_chunk(work.subject, kind.name, ranged.reverted.restored)
            # Counted before the closing transaction, in short reads (see counted_in_pieces).
            totals = counted_in_pieces(ctx.conn, work.lock_id or 0,
                                       [k.name for k in work.kinds], by_state=True)
            closing = Chunk([work], totals=totals)
            try:
                return pacer.chunk(ctx.conn, partial(run_chunk, ctx, closing))[0]
            except StaleChunk:
                with reading(ctx.conn):  # an apply extended the lock while we were reverting
                    work.kinds = ctx.resolver.kinds(
                        work.lock_id or 0, recorded_binding(ctx.conn, work.lock_id or 0),
                        kinds_held(ctx.conn, work.lock_id or 0))

    def stopped(self, requests: Sequence[Request], unsure: bool = False) -> None:
        """Ctrl-C: the request in flight is interrupted, the ones not reached not started.
        ``unsure`` (a second Ctrl-C, inside a chunk that may have committed before its
        outcome was recorded): every request without an outcome is interrupted."""
        self.interrupted = True
        for request in requests:
            if id(request) in self.outcomes:
                continue
            if request is self.in_flight or unsure:
                self.outcomes[id(request)] = Outcome(
                    request, request.user_id, request.lock_id, Status.INTERRUPTED,
                    error="stopped by Ctrl-C; re-run to finish")
            else:
                self.outcomes[id(request)] = Outcome(request, request.user_id, request.lock_id,
                                                     Status.NOT_STARTED)


# --- one chunk -----------------------------------------------------------------------------------


@dataclass
class Slice:
    """A range of one work's items: the next ``limit`` keys of ``kind`` after ``after`` (item
    key for apply, snapshot id for revert). What the chunk did is filled in as it commits."""

    kind: BoundKind
    after: Any
    limit: int
    last: Any = None  # the last key visited; None: nothing was left
    seen: int = 0
    changed: int = 0  # apply: items hidden
    opened: bool = False  # apply: the chunk opened the work's lock
    reverted: RevertCounts = field(default_factory=RevertCounts)
    closed: bool = False  # revert: the lock was closed meanwhile by another operator

    def visited(self) -> int:
        """The items the chunk went through (what its time is measured against)."""
        return self.seen + self.reverted.resolved


@dataclass
class Chunk:
    """What one transaction does: ``works`` whole (each user with all its items: one shared
    chunk, or one small user), or, with ``ranged``, a slice of the one work's items; with
    ``totals``, the closing chunk of a work done in slices (its totals counted before)."""

    works: list[Work]
    ranged: Slice | None = None
    totals: dict[str, dict[str, int]] | None = None
    opened_before: bool = False  # apply, closing chunk: an earlier slice opened the lock


def run_chunk(ctx: Context, chunk: Chunk) -> list[Outcome]:
    """The one transaction protocol (see the module docstring), inside the caller's
    transaction (:meth:`Pacer.chunk`): the outcomes of the works it finished."""
    ctx.dialect.plan_for_actual_keys(ctx.conn)  # once per chunk, for every statement in it
    if ctx.mode == "apply":
        return _apply_chunk(ctx, chunk)
    return _revert_chunk(ctx, chunk)


def _apply_chunk(ctx: Context, chunk: Chunk) -> list[Outcome]:
    conn, cmap, now = ctx.conn, ctx.cmap, ctx.chunk_time()
    works = chunk.works
    # 1. lock rows, in lock id order; the missing ones opened, each with its binding
    held = locked_lock_rows(conn, [w.subject for w in works], ctx.dialect)
    if chunk.ranged is not None or chunk.totals is not None:
        # 2. (first) guard: a work done in slices stays under the lock its first slice used
        work = works[0]
        if work.lock_id is not None and held.get(work.subject, (None, None))[0] != work.lock_id:
            raise LockStateError(
                f"lock {work.lock_id} of user {work.subject} was reverted while this apply was "
                "running; the chunks already committed stay hidden under it", work.lock_id)
    opened = {w.subject for w in works if w.subject not in held}
    new_rows: dict[str, dict[str, Any]] = {w.subject: {
        "subject": w.subject, "active_subject": w.subject, "state": LockState.ACTIVE,
        "operator": w.actor.operator, "ticket": w.actor.ticket or "",
        "reason": w.actor.reason or "", "created_at": now, "updated_at": now,
        "binding": binding.dumps({k.name: binding.binding_of(k) for k in w.kinds}),
    } for w in works if w.subject in opened}
    if new_rows:
        ctx.dialect.insert_rows(conn, locks, list(new_rows.values()))
        for subject, lock_id in active_lock_ids(conn, sorted(opened)).items():
            new_rows[subject]["lock_id"] = lock_id
            held[subject] = (lock_id, new_rows[subject]["binding"])
    # 2. guards: no lock whose revert has begun; an extended lock keeps its bindings
    rebound: dict[int, str] = {}  # extended lock -> its bindings with the kinds it gains now
    for work in works:
        work.lock_id, recorded = held[work.subject]
        if work.subject not in opened:
            try:
                gained = binding.extended(recorded, work.kinds, work.lock_id, work.subject)
            except UsageError as exc:
                if len(works) > 1:  # rolled back; alone, the user fails with this message
                    raise StaleChunk(str(exc)) from None
                raise LockStateError(str(exc), work.lock_id) from None
            if gained is not None:
                rebound[work.lock_id] = gained
    extended = sorted(held[w.subject][0] for w in works if w.subject not in opened)
    begun = reverts_begun(conn, extended, ctx.dialect)
    if begun:
        if len(works) > 1:  # rolled back; each alone then says what to do
            raise StaleChunk(f"lock {min(begun)} is being reverted")
        raise being_reverted(works[0].lock_id or 0, works[0].subject)
    for lock_id, text in rebound.items():
        conn.execute(update(locks).where(locks.c.lock_id == lock_id).values(binding=text))
    # The transaction that opens a lock writes its ``lock`` event, before the lock's other one.
    events: list[EventSpec] = []
    # 3. statements
    if chunk.ranged is not None:
        work, ranged = works[0], chunk.ranged
        hid = ctx.dialect.hide_range(conn, ranged.kind, work.lock_id or 0,
                                     cmap.owner_value(ranged.kind, work.subject), ranged.after,
                                     ranged.limit, now, fresh=work.opened or bool(opened))
        ranged.last, ranged.seen, ranged.changed = hid.last, hid.seen, hid.hidden
        ranged.opened = bool(opened)
        # A lock this run opened holds no snapshot ahead of the walk (unless another apply of
        # the user runs at once): its slices insert plainly, a quarter cheaper (dialects.py).
        work.opened = work.opened or bool(opened)
        if opened:
            events.append(_lock_event(work, new_rows[work.subject]))
        if hid.last is not None or work.lock_id in rebound:
            work.chunks += 1 if hid.last is not None else 0
            events.append(EventSpec("hide", work.actor, work.subject, work.lock_id, {
                "kind": ranged.kind.name, "hidden": hid.hidden,
                "snapshotted": hid.snapshotted,
                **_sealed(conn, work.lock_id or 0, hid.written, now, rebound)}))
        if events:
            append_events(conn, events)
        return []
    hidden: Counter[tuple[str, str]] = Counter()
    written: dict[int, list[Any]] = {}
    if chunk.totals is None:
        taken, room = 0, ctx.pacer.size
        for kind in cmap.kinds.values():
            members = [w for w in works if kind.name in w.counts]
            if not members:
                continue
            owner_lock = {cmap.owner_value(kind, w.subject): w.lock_id or 0 for w in members}
            subject_of = {cmap.owner_value(kind, w.subject): w.subject for w in members}
            per_owner, rows = ctx.dialect.hide_owners(conn, kind, owner_lock, now,
                                                      room - taken,
                                                      all_new=len(opened) == len(works))
            taken += sum(per_owner.values())
            if taken > room:
                raise StaleChunk(f"{taken} visible items, more than the chunk of {room}")
            if not per_owner.keys() <= owner_lock.keys():
                raise StaleChunk("the database matched an owner id by collation, not exactly")
            for owner, n in per_owner.items():
                hidden[subject_of[owner], kind.name] += n
            for row in rows:
                written.setdefault(int(row[0]), []).append(row)
    # 4. bookkeeping
    if chunk.totals is not None:
        totals = {works[0].lock_id or 0: chunk.totals}
    else:
        # A lock opened now holds exactly the snapshots just written: only the extended ones
        # are counted.
        totals = snapshot_totals(conn, extended, ctx.dialect) if extended else {}
    if extended:
        conn.execute(update(locks).where(ctx.dialect.in_keys(locks.c.lock_id, extended))
                     .values(updated_at=now))
    # 5. events and outcomes
    outcomes = []
    for work in works:
        lock_id = work.lock_id or 0
        was_opened = work.subject in opened or chunk.opened_before
        status = Status.LOCKED if was_opened else Status.EXTENDED
        kinds: dict[str, KindCounts] = {}
        for name, planned in work.counts.items():
            changed = (planned.changed if chunk.totals is not None
                       else hidden[work.subject, name])
            kinds[name] = KindCounts(
                changed=changed, already_private=planned.already_private,
                snapshotted=(changed if work.subject in opened and chunk.totals is None
                             else totals.get(lock_id, {}).get(name, {}).get("total", 0)))
        if chunk.totals is None and any(hidden[work.subject, n] for n in kinds):
            work.chunks += 1
        if not was_opened and not any(c.changed for c in kinds.values()):
            status = Status.ALREADY_LOCKED
        if work.subject in opened:
            events.append(_lock_event(work, new_rows[work.subject]))
        events.append(EventSpec("apply", work.actor, work.subject, lock_id, {
            **_identity_check(work),
            "status": status, "chunks": work.chunks, "chunk_shared_by": len(works),
            "kinds": {n: {"changed": c.changed, "already_private": c.already_private,
                          "snapshotted": c.snapshotted} for n, c in kinds.items()},
            **_sealed(conn, lock_id, written.get(lock_id, []), now, rebound),
        }))
        outcomes.append(Outcome(work.request, work.subject, lock_id, status, kinds,
                                chunks=work.chunks))
    append_events(conn, events)
    return outcomes


def _identity_check(work: Work) -> dict[str, Any]:
    """The verification the request cites (``--identity-check``), linked from its event."""
    cited = work.request.identity_check
    return {"identity_check": cited} if cited is not None else {}


def _lock_event(work: Work, row: dict[str, Any]) -> EventSpec:
    """The ``lock`` event of a lock opened now, sealing the lock row as inserted."""
    return EventSpec("lock", work.actor, work.subject, work.lock_id,
                     {"sealed": {"lock": seal.fields_digest(row, seal.LOCK_FIELDS)}})


def _sealed(
    conn: Connection, lock_id: int, rows: list[Any], now: str, rebound: dict[int, str]
) -> dict[str, Any]:
    """The ``sealed`` part of an apply or hide event: the snapshot rows this transaction wrote
    for the lock (each ``(lock, kind, item, text, int)``), and the lock row again when its
    bindings changed (a kind added)."""
    sealed: dict[str, Any] = {}
    if rows:
        sealed.update(seal.snapshot_seal([tuple(r[1:]) for r in rows], now))
    if lock_id in rebound:
        row = conn.execute(select(*[locks.c[f] for f in seal.LOCK_FIELDS])
                           .where(locks.c.lock_id == lock_id)).mappings().one()
        sealed["lock"] = seal.fields_digest(dict(row), seal.LOCK_FIELDS)
    return {"sealed": sealed} if sealed else {}


def locked_lock_rows(
    conn: Connection, subjects: Sequence[str], dialect: Dialect
) -> dict[str, tuple[int, str | None]]:
    """Lock the active lock rows of ``subjects`` (in lock id order, so that concurrent runs do
    not deadlock): (lock id, recorded bindings) per subject that has one."""
    rows = conn.execute(
        select(locks.c.active_subject, locks.c.lock_id, locks.c.binding)
        .where(dialect.in_keys(locks.c.active_subject, list(subjects)))
        .order_by(locks.c.lock_id).with_for_update()
    ).all()
    return {subject: (int(lock_id), recorded) for subject, lock_id, recorded in rows}


def _revert_chunk(ctx: Context, chunk: Chunk) -> list[Outcome]:
    conn, cmap, now = ctx.conn, ctx.cmap, utc_now()
    works = chunk.works
    lock_ids = sorted(w.lock_id or 0 for w in works)
    # 1. lock rows, in lock id order
    states = dict(conn.execute(
        select(locks.c.lock_id, locks.c.state)
        .where(ctx.dialect.in_keys(locks.c.lock_id, lock_ids))
        .order_by(locks.c.lock_id)
        .with_for_update()
    ).all())
    # 2. guards
    if any(states.get(lock_id) != LockState.ACTIVE for lock_id in lock_ids):
        if len(works) > 1:
            raise StaleChunk("a lock was reverted by someone else meanwhile")
        if chunk.ranged is not None:
            chunk.ranged.closed = True
            return []
        work = works[0]
        return [Outcome(work.request, work.subject, work.lock_id, Status.NOT_LOCKED,
                        chunks=work.chunks)]
    # 3. statements
    if chunk.ranged is not None:
        work, ranged = works[0], chunk.ranged
        counts, last = ctx.dialect.restore_range(
            conn, ranged.kind, work.lock_id or 0, cmap.owner_value(ranged.kind, work.subject),
            ranged.after, ranged.limit)
        ranged.last, ranged.reverted = last, counts
        if last is not None:
            work.chunks += 1
            work.counts.setdefault(ranged.kind.name, KindCounts()).add_reverted(counts)
            append_events(conn, [EventSpec("restore", work.actor, work.subject, work.lock_id, {
                "kind": ranged.kind.name,
                **nonzero({"restored": counts.restored, "conflicts": counts.conflicts,
                           "gone": counts.gone})})])
        return []
    if chunk.totals is not None:
        # The closing chunk of a lock done in slices: its totals were counted before, in
        # short reads; they stay true while no snapshot is pending, checked here under the
        # lock row (every apply locks it first).
        if any(t.get(PENDING) for t in chunk.totals.values()) or holds_snapshots(
                conn, lock_ids[0], (PENDING,)):
            # An apply extended the lock while it was being reverted: the run walks again.
            raise StaleChunk("an apply extended the lock while it was being reverted")
        totals = {lock_ids[0]: chunk.totals}
    else:
        totals = snapshot_totals(conn, lock_ids, ctx.dialect)
        pending: Counter[str] = Counter()
        for per_kind in totals.values():
            for kind_name, per_state in per_kind.items():
                pending[kind_name] += per_state.get(PENDING, 0)
        room = ctx.pacer.size
        held_kinds = {(w.lock_id, k.name) for w in works for k in w.kinds}
        if any((lock_id, name) not in held_kinds for lock_id, per_kind in totals.items()
               for name in per_kind):  # an apply added a kind since the plan: plan again
            raise StaleChunk("a lock now holds a kind it did not hold when planned")
        if pending.total() > room:
            raise StaleChunk(f"{pending.total()} pending items, more than the chunk of {room}")
        restored = to_mark = 0
        for kind, members in _by_binding(works):
            count = sum(totals.get(w.lock_id or 0, {}).get(kind.name, {}).get(PENDING, 0)
                        for w in members)
            if not count:
                continue
            group = [LockOf(w.lock_id or 0, bind_value(kind.owner_col, w.subject))
                     for w in members]
            restored_kind, unmarked = ctx.dialect.restore_owners(conn, kind, group, count, now)
            restored, to_mark = restored + restored_kind, to_mark + unmarked
        if to_mark:
            # Every snapshot of these locks still pending is one just restored: nobody can add
            # one while this transaction holds the lock rows (every apply locks its row first).
            marked = conn.execute(
                update(snapshots)
                .where(ctx.dialect.in_keys(snapshots.c.lock_id, lock_ids, bounded=True),
                       snapshots.c.state == PENDING)
                .values(state=SnapshotState.RESTORED, resolved_at=now)
            ).rowcount
            if marked != to_mark:
                raise StaleChunk(f"expected {to_mark} snapshots to mark restored, the database "
                                 f"matched {marked}")
        if restored == pending.total():  # every pending snapshot is now a restored one
            for per_kind in totals.values():
                for per_state in per_kind.values():
                    if PENDING in per_state:
                        per_state[SnapshotState.RESTORED] = (
                            per_state.get(SnapshotState.RESTORED, 0) + per_state.pop(PENDING))
        else:  # some were conflicts or gone: count again
            totals = snapshot_totals(conn, lock_ids, ctx.dialect)
        if pending.total():
            for work in works:
                work.chunks += 1
    # 4. bookkeeping: close the locks, each as reverted by its own request's operator
    by_operator: dict[str, list[int]] = {}
    for work in works:
        by_operator.setdefault(work.actor.operator, []).append(work.lock_id or 0)
    for operator, ids in by_operator.items():
        conn.execute(
            update(locks).where(ctx.dialect.in_keys(locks.c.lock_id, ids))
            .values(state=LockState.REVERTED, active_subject=None, reverted_at=now,
                    updated_at=now, reverted_by=operator))
    # 5. events and outcomes
    outcomes, events = [], []
    for work in works:
        kinds = {
            name: KindCounts(snapshotted=per_state["total"],
                             restored=per_state.get(SnapshotState.RESTORED, 0),
                             conflicts=per_state.get(SnapshotState.CONFLICT, 0),
                             gone=per_state.get(SnapshotState.GONE, 0))
            for name, per_state in sorted(totals.get(work.lock_id or 0, {}).items())
        }
        events.append(EventSpec("revert", work.actor, work.subject, work.lock_id, {
            **_identity_check(work),
            "chunks": work.chunks, "chunk_shared_by": len(works),
            "kinds": {n: nonzero(c.as_dict()) for n, c in kinds.items()},
        }))
        outcomes.append(Outcome(work.request, work.subject, work.lock_id, Status.REVERTED,
                                kinds, chunks=work.chunks))
    append_events(conn, events)
    return outcomes


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    """The counts that are not zero (what audit event details keep)."""
    return {k: v for k, v in counts.items() if v}


# --- reads the runs and the other commands share -------------------------------------------------


def active_lock_id(conn: Connection, subject: str) -> int | None:
    """The id of the user's active lock, if any."""
    found = conn.execute(
        select(locks.c.lock_id).where(locks.c.active_subject == subject)).scalar()
    return None if found is None else int(found)


def active_lock_ids(
    conn: Connection, subjects: Sequence[str], lock: bool = False
) -> dict[str, int]:
    """The active lock of each of ``subjects`` that has one, by subject; with ``lock``, those
    lock rows are locked (in lock id order, so that concurrent runs do not deadlock)."""
    if not subjects:
        return {}
    query = select(locks.c.active_subject, locks.c.lock_id).where(
        for_connection(conn).in_keys(locks.c.active_subject, list(subjects)))
    if lock:
        query = query.order_by(locks.c.lock_id).with_for_update()
    return {subject: int(lock_id) for subject, lock_id in conn.execute(query).all()}


def find_lock(conn: Connection, lock_id: int) -> Any:
    """The lock row, or a usage error naming the id."""
    row = conn.execute(select(locks).where(locks.c.lock_id == lock_id)).first()
    if row is None:
        raise UsageError(f"no lock with id {lock_id}")
    return row


def missing_locks(conn: Connection, lock_ids: list[int]) -> list[int]:
    """Of ``lock_ids``, those with no lock row (in any state): one query."""
    found = set(conn.execute(
        select(locks.c.lock_id).where(locks.c.lock_id.in_(lock_ids))
    ).scalars().all())
    return [lock_id for lock_id in lock_ids if lock_id not in found]


def check_users(conn: Connection, cmap: ContentMap, raw_users: Iterable[str]) -> list[str]:
    """Normalize every user id and reject unknown ones, all before anything changes (a few
    set-based queries per thousand users, each in a short read of its own)."""
    subjects = [cmap.normalize_user(raw) for raw in raw_users]
    duplicates = sorted(s for s, n in Counter(subjects).items() if n > 1)
    if duplicates:
        raise UsageError(f"user {duplicates[0]} is named more than once")
    dialect = for_connection(conn)
    for start in range(0, len(subjects), IN_BATCH):
        with reading(conn):
            dialect.plan_for_actual_keys(conn)  # a thousand owners: the index, not a scan
            unknown = cmap.unknown_users(conn, subjects[start:start + IN_BATCH])
            hint = cmap.spaces_hint(conn, unknown[:1]).get(unknown[0], "") if unknown else ""
        if unknown:
            if cmap.accounts_table is not None:
                raise UsageError(
                    f"unknown user {unknown[0]!r} (not in {cmap.accounts_table.name}){hint}")
            raise UsageError(
                f"user {unknown[0]!r} owns no {'/'.join(cmap.kinds)} items and has no lock "
                "(configure [accounts] to tell unknown users from users with no content)"
            )
    return subjects


def counted_owners(
    conn: Connection, dialect: Dialect, kind: BoundKind, owners: Sequence[Any]
) -> tuple[dict[Any, KindCounts], set[Any]]:
    """The visible and already private items of ``kind`` of each owner that has any, each
    owner compared exactly; and the owners whose rows the database also matched by collation
    (``'Alice'`` for ``'alice'`` on MariaDB), which must run alone.

    Read in short read transactions of at most about ``PLAN_PIECE`` content rows each: on
    SQLite a reader keeps a site writer from committing, and counting a heavy user's 100,000
    items in one read took 450 ms on a loaded machine. First each thousand owners' rows are
    counted from the (owner, id) index alone; owners are then counted together while their
    rows fit a piece, and an owner with more rows along its (owner, id) keys, a piece at a
    time. The counts are the plan's: each chunk reads its rows again under its locks."""
    counted: dict[Any, KindCounts] = {}
    alone: set[Any] = set()

    def count_together(part: list[Any]) -> None:
        n_visible = func.sum(case((visible(kind), 1), else_=0))
        n_private = func.sum(case((kind.vis_col == kind.private, 1), else_=0))
        owner, group = dialect.group_exactly(kind.owner_col)
        with reading(conn):
            dialect.plan_for_actual_keys(conn)  # a thousand owners: the index, not a scan
            rows = conn.execute(select(owner, n_visible, n_private)
                                .where(dialect.exactly_in(kind.owner_col, part))
                                .group_by(group)).all()
        asked = set(part)
        for owner, n_vis, n_priv in rows:
            if owner not in asked:  # matched by collation: we cannot tell whose, so all alone
                alone.update(part)
                continue
            counted[owner] = KindCounts(changed=int(n_vis or 0),
                                        already_private=int(n_priv or 0))

    def count_along_keys(owner: Any) -> None:
        total, after = KindCounts(), None
        while True:
            piece = select(kind.id_col.label("id"), kind.owner_col.label("owner"),
                           kind.vis_col.label("vis")).where(kind.owner_col == owner)
            if after is not None:
                piece = piece.where(kind.id_col > after)
            rows = piece.order_by(kind.id_col).limit(PLAN_PIECE).subquery()
            exact = dialect.exactly(rows.c.owner, owner)
            shown = visible(kind, rows.c.vis)
            with reading(conn):
                dialect.plan_for_actual_keys(conn)
                seen, n_exact, n_vis, n_priv, last = conn.execute(select(
                    func.count(), func.sum(case((exact, 1), else_=0)),
                    func.sum(case((and_(exact, shown), 1), else_=0)),
                    func.sum(case((and_(exact, rows.c.vis == kind.private), 1), else_=0)),
                    func.max(rows.c.id))).one()
            if int(n_exact or 0) < int(seen):
                alone.add(owner)
            total.changed += int(n_vis or 0)
            total.already_private += int(n_priv or 0)
            if int(seen) < PLAN_PIECE:
                break
            after = last
        if total.changed or total.already_private or owner in alone:
            counted[owner] = total

    for start in range(0, len(owners), IN_BATCH):
        part = list(owners[start:start + IN_BATCH])
        with reading(conn):  # per owner as the database groups it (collation): a size only
            dialect.plan_for_actual_keys(conn)
            sizes = {owner: int(n) for owner, n in conn.execute(
                select(kind.owner_col, func.count())
                .where(dialect.in_keys(kind.owner_col, part)).group_by(kind.owner_col))}
        together: list[Any] = []
        rows_together = 0
        for owner in part:
            size = sizes.get(owner, 0)
            if size > PLAN_PIECE:
                count_along_keys(owner)
                continue
            if together and rows_together + size > PLAN_PIECE:
                count_together(together)
                together, rows_together = [], 0
            together.append(owner)
            rows_together += size
        if together:
            count_together(together)
    return counted, alone


def count_for_apply(
    conn: Connection, cmap: ContentMap, subject: str, kind: BoundKind
) -> KindCounts:
    """How many of the user's items of ``kind`` are visible (would change) and already private."""
    owner = cmap.owner_value(kind, subject)
    n_visible = func.coalesce(func.sum(case((visible(kind), 1), else_=0)), 0)
    n_private = func.coalesce(func.sum(case((kind.vis_col == kind.private, 1), else_=0)), 0)
    row = conn.execute(select(n_visible, n_private).where(
        for_connection(conn).exactly(kind.owner_col, owner))).one()
    return KindCounts(changed=int(row[0]), already_private=int(row[1]))


def count_revert_group(ctx: Context, works: Sequence[Work]) -> list[dict[str, KindCounts]]:
    """What reverting the locks of ``works`` would do now, per work and kind: of each kind's
    pending snapshots, the items still owner-only (restored), changed since (conflicts) and
    deleted or no longer the lock's user's (gone). One read per kind for the whole group."""
    found: dict[tuple[int, str], dict[str, int]] = {}
    for kind, members in _by_binding(works):
        lock_ids = [w.lock_id or 0 for w in members]
        # Each snapshot's item must still belong to its own lock's user, bound as the owner
        # column holds it.
        owner_of_lock = case(
            {w.lock_id: literal(bind_value(kind.owner_col, w.subject), kind.owner_col.type)
             for w in members},
            value=snapshots.c.lock_id,
        )
        its_item = and_(kind.id_col == snapshot_item_as_id(kind),
                        ctx.dialect.exactly(kind.owner_col, owner_of_lock))
        outcome = revert_outcome(kind)
        rows = ctx.conn.execute(
            select(snapshots.c.lock_id, outcome, func.count())
            .select_from(snapshots.outerjoin(kind.table, its_item))
            .where(ctx.dialect.in_keys(snapshots.c.lock_id, lock_ids, bounded=True),
                   snapshots.c.kind == kind.name, snapshots.c.state == PENDING)
            .group_by(snapshots.c.lock_id, outcome)
        ).all()
        for lock_id, state, n in rows:
            found.setdefault((int(lock_id), kind.name), {})[state] = int(n)
    return [{
        kind.name: _outcome_counts(found.get((w.lock_id or 0, kind.name), {}))
        for kind in w.kinds
    } for w in works]


def _by_binding(works: Sequence[Work]) -> list[tuple[BoundKind, list[Work]]]:
    """The works grouped by each kind as their locks bind it (two locks may record one kind
    under different bindings: the config changed between them)."""
    groups: dict[int, tuple[BoundKind, list[Work]]] = {}
    for work in works:
        for kind in work.kinds:
            groups.setdefault(id(kind), (kind, []))[1].append(work)
    return sorted(groups.values(), key=lambda group: group[0].name)


def _outcome_counts(found: dict[str, int]) -> KindCounts:
    return KindCounts(restored=found.get(SnapshotState.RESTORED, 0),
                      conflicts=found.get(SnapshotState.CONFLICT, 0),
                      gone=found.get(SnapshotState.GONE, 0))


def snapshot_totals(
    conn: Connection, lock_ids: Sequence[int], dialect: Dialect | None = None
) -> dict[int, dict[str, dict[str, int]]]:
    """Snapshot rows per lock, kind and state, plus a per-kind "total", for each lock."""
    dialect = dialect or for_connection(conn)
    rows = conn.execute(
        select(snapshots.c.lock_id, snapshots.c.kind, snapshots.c.state, func.count())
        .where(dialect.in_keys(snapshots.c.lock_id, lock_ids, bounded=True))
        .group_by(snapshots.c.lock_id, snapshots.c.kind, snapshots.c.state)
    ).all()
    totals: dict[int, dict[str, dict[str, int]]] = {}
    for lock_id, kind, state, n in rows:
        per_kind = totals.setdefault(int(lock_id), {}).setdefault(kind, {"total": 0})
        per_kind[state] = int(n)
        per_kind["total"] += int(n)
    return totals


def counted_in_pieces(
    conn: Connection, lock_id: int, kinds: Iterable[str], by_state: bool = False
) -> dict[str, dict[str, int]]:
    """A lock's snapshot rows per kind (per state too with ``by_state``) plus a per-kind
    "total", as :func:`snapshot_totals`, but read in pieces of at most ``TOTALS_PIECE`` rows
    along the (lock, kind, item) index, each piece in a short read transaction of its own. In
    one statement, the totals of a 1,000,000-item lock took 0.9 s on PostgreSQL (bench/), all
    of it inside the transaction that closes the lock; a small lock is still one read.

    Snapshots are only ever added (pending) or resolved once, never removed: totals that
    found no pending snapshot stay true while nothing pending is added, which the caller
    checks in the transaction that uses them (:func:`holds_snapshots`).
    """
    totals: dict[str, dict[str, int]] = {}
    todo: list[tuple[str, Any]] = [(name, None) for name in sorted(kinds)]
    while todo:
        budget = TOTALS_PIECE
        with reading(conn):
            while todo and budget > 0:
                name, after = todo.pop(0)
                piece = select(snapshots.c.item_id, snapshots.c.state).where(
                    snapshots.c.lock_id == lock_id, snapshots.c.kind == name)
                if after is not None:
                    piece = piece.where(snapshots.c.item_id > after)
                subquery = piece.order_by(snapshots.c.item_id).limit(budget).subquery()
                group = [subquery.c.state] if by_state else []
                rows = conn.execute(
                    select(*group, func.count(), func.max(subquery.c.item_id)).group_by(*group)
                ).all()
                seen = sum(int(row[-2]) for row in rows)
                if not seen:
                    continue
                per_kind = totals.setdefault(name, {"total": 0})
                per_kind["total"] += seen
                if by_state:
                    for row in rows:
                        per_kind[row[0]] = per_kind.get(row[0], 0) + int(row[-2])
                budget -= seen
                if budget <= 0:  # the piece was full: the kind may go on past its last item
                    todo.insert(0, (name, max(row[-1] for row in rows)))
    return totals


def holds_snapshots(conn: Connection, lock_id: int, states: Sequence[str]) -> bool:
    """Whether the lock holds a snapshot in one of ``states`` (one probe of the pending index):
    ``(PENDING,)``, one still to revert; ``RESOLVED``, a revert has begun (it was interrupted,
    or runs now) and has not closed the lock."""
    return conn.execute(
        select(snapshots.c.snapshot_id)
        .where(snapshots.c.lock_id == lock_id, snapshots.c.state.in_(states))
        .limit(1)
    ).first() is not None


def reverts_begun(
    conn: Connection, lock_ids: Sequence[int], dialect: Dialect | None = None
) -> set[int]:
    """Of ``lock_ids``, those holding a resolved snapshot (see :func:`holds_snapshots`); one
    probe for a single lock, one query for several."""
    if not lock_ids:
        return set()
    if len(lock_ids) == 1:
        return set(lock_ids) if holds_snapshots(conn, lock_ids[0], RESOLVED) else set()
    dialect = dialect or for_connection(conn)
    return {int(lock_id) for lock_id in conn.execute(
        select(snapshots.c.lock_id).distinct()
        .where(dialect.in_keys(snapshots.c.lock_id, lock_ids), snapshots.c.state.in_(RESOLVED))
    ).scalars()}


def being_reverted(lock_id: int | None, subject: str) -> LockStateError:
    """Apply must not hide items of a lock a revert has begun to give back: an item the revert
    restored would be hidden again under a snapshot already resolved, and stay hidden once the
    revert closes the lock."""
    return LockStateError(
        f"lock {lock_id} of user {subject} is being reverted (a revert restored some of its "
        f"items and has not finished): finish it with `privacy-lock revert {lock_id}`, then "
        "apply again", lock_id)


def kinds_held(conn: Connection, lock_id: int) -> list[str]:
    """The kinds a lock holds snapshots of: one probe of the (lock, kind, item) index per kind
    found (``DISTINCT`` read every snapshot of the lock: 0.24 s for 1,000,000 on PostgreSQL)."""
    names: list[str] = []
    while True:
        after = select(snapshots.c.kind).where(snapshots.c.lock_id == lock_id)
        if names:
            after = after.where(snapshots.c.kind > names[-1])
        name = conn.execute(after.order_by(snapshots.c.kind).limit(1)).scalar()
        if name is None:
            return names
        names.append(name)


def recorded_binding(conn: Connection, lock_id: int) -> str | None:
    """The bindings a lock records (None for a lock made before they were recorded)."""
    return conn.execute(select(locks.c.binding).where(locks.c.lock_id == lock_id)).scalar()


def planned_items(
    conn: Connection, cmap: ContentMap, mode: Mode, requests: Sequence[Request]
) -> int:
    """How many items the batch will touch, for the progress bar (aggregate queries, each in
    a short read transaction; an apply's in pieces, :func:`counted_owners`)."""
    total, dialect = 0, for_connection(conn)
    if mode == "apply":
        kinds_of = {cmap.normalize_user(r.user_id or ""): r.kinds for r in requests}
        for kind in cmap.kinds.values():
            owners = [cmap.owner_value(kind, s) for s, only in kinds_of.items()
                      if not only or kind.name in only]
            counted, _alone = counted_owners(conn, dialect, kind, owners)
            total += sum(c.changed for c in counted.values())
        return total
    lock_ids = [r.lock_id for r in requests if r.lock_id is not None]
    subjects = [cmap.normalize_user(r.user_id) for r in requests if r.user_id]
    for start in range(0, len(subjects), IN_BATCH):
        with reading(conn):
            active = active_lock_ids(conn, subjects[start:start + IN_BATCH])
        lock_ids += [active[s] for s in subjects[start:start + IN_BATCH] if s in active]
    for start in range(0, len(lock_ids), IN_BATCH):
        with reading(conn):  # the pending index alone
            total += conn.execute(
                select(func.count()).select_from(snapshots).where(
                    snapshots.c.lock_id.in_(lock_ids[start:start + IN_BATCH]),
                    snapshots.c.state == PENDING)
            ).scalar_one()
    return int(total)


# --- status --------------------------------------------------------------------------------------


def user_status(
    conn: Connection, cmap: ContentMap, subject: str, with_items: bool = False
) -> dict[str, Any]:
    """The user's lock (active, else the latest) and, per kind, visible/private/snapshot counts."""
    with reading(conn):
        lock = conn.execute(
            select(locks).where(locks.c.subject == subject)
            .order_by(locks.c.lock_id.desc()).limit(1)
        ).first()
        totals = snapshot_totals(conn, [lock.lock_id]).get(lock.lock_id, {}) if lock else {}
        # The kinds the lock holds are counted as the lock binds them, the others as the
        # content map does.
        held = ({k.name: k for k in binding.Resolver(conn, cmap).kinds(
            lock.lock_id, lock.binding, kinds_held(conn, lock.lock_id))}
            if lock is not None and lock.binding is not None else {})
        kinds = []
        for kind in [held.get(k.name, k) for k in cmap.kinds.values()]:
            counts = count_for_apply(conn, cmap, subject, kind)
            per_lock = totals.get(kind.name, {})
            kinds.append({
                "kind": kind.name,
                "visible": counts.changed,
                "private": counts.already_private,
                "snapshots": per_lock.get("total", 0),
                "pending": per_lock.get(PENDING, 0),
                "restored": per_lock.get(SnapshotState.RESTORED, 0),
                "conflicts": per_lock.get(SnapshotState.CONFLICT, 0),
                "gone": per_lock.get(SnapshotState.GONE, 0),
            })
        items = (_status_items(conn, cmap, subject, lock.lock_id)
                 if (lock and with_items) else [])
    return {
        "user": subject,
        "lock": _lock_dict(lock) if lock else None,
        "kinds": kinds,
        "items": items,
    }


def _status_items(
    conn: Connection, cmap: ContentMap, subject: str, lock_id: int
) -> list[dict[str, Any]]:
    items = []
    resolver = binding.Resolver(conn, cmap)
    for kind in resolver.kinds(lock_id, recorded_binding(conn, lock_id),
                               kinds_held(conn, lock_id)):
        owner = cmap.owner_value(kind, subject)
        joined = snapshots.outerjoin(
            kind.table, and_(kind.id_col == snapshot_item_as_id(kind),
                             for_connection(conn).exactly(kind.owner_col, owner))
        )
        rows = conn.execute(
            select(snapshots.c.item_id, original_col(kind), snapshots.c.state,
                   kind.vis_col, kind.id_col)
            .select_from(joined)
            .where(snapshots.c.lock_id == lock_id, snapshots.c.kind == kind.name)
            .order_by(snapshots.c.snapshot_id)
        ).all()
        for item_id, original, state, current, present in rows:
            items.append({
                "kind": kind.name, "item": item_id, "original": original, "state": state,
                "current": current if present is not None else "(gone)",
            })
    return items


def _lock_dict(row: Any) -> dict[str, Any]:
    return {
        "lock_id": row.lock_id, "user": row.subject, "state": row.state,
        "operator": row.operator, "ticket": row.ticket, "reason": row.reason,
        "created_at": row.created_at, "reverted_at": row.reverted_at,
        "reverted_by": row.reverted_by,
    }
