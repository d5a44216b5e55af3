"""The Python API: one plain function per command, as alembic's ``command.py``.

Each function takes a :class:`Target` (the settings and the database they name) and plain
values, returns a result, and never prints: lines for the operator go to the target's ``note``
callback, progress to a ``progress`` factory. Everything that can refuse a command (arguments,
the request file, the ``--output`` path, the approver) is checked before the first change and
raised as a :class:`~privacy_lock.errors.UsageError`. The CLI parses options, calls one of these
functions, renders the result and exits; the tests and the bench call them directly::

    target = Target.load("privacy-lock.toml")
    result = service.apply(target, ["42"], identity=Identity("alice", "T-1", "lost login"))
    assert not result.failed
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from privacy_lock import approvals, output
from privacy_lock import report as reporting
from privacy_lock.anchors import (
    KEY_OPTION,
    AuditKey,
    append_line,
    checkpoint_line,
    load_key,
    read_checkpoints,
    require_key_if_keyed,
)
from privacy_lock.audit import (
    Actor,
    EventFilters,
    VerifyResult,
    query_events,
    record_views,
    utc_now,
    verify_chain,
)
from privacy_lock.config import (
    ContentMap,
    Settings,
    bind_content_map,
    load_settings,
    missing_owner_indexes,
)
from privacy_lock.db import (
    CHANGED,
    DEFAULT_LOCK_TIMEOUT,
    connect_check,
    create_tool_engine,
    parse_url,
    reading,
    safe_url,
    translate_errors,
)
from privacy_lock.dialects import for_connection
from privacy_lock.engine import (
    Outcome,
    check_users,
    find_lock,
    missing_locks,
    planned_items,
    run_batch,
    user_status,
)
from privacy_lock.errors import OutputError, UsageError
from privacy_lock.output import check_writable
from privacy_lock.pacing import DEFAULT_CHUNK_TIME, Pacer, default_chunk_size
from privacy_lock.policy import (
    PolicyChange,
    check_rule,
    ignored_config,
    policy_rows,
    read_policy,
    seed_policy,
    set_rule,
)
from privacy_lock.progress import RunStats
from privacy_lock.render import outcome_rows, render, report_pieces, report_text
from privacy_lock.requests import Request, load_requests, read_request_ids
from privacy_lock.schema import create_tool_tables, ddl_for, require_tool_tables
from privacy_lock.stored_text import TextLimit, stored_limits, text_problem
from privacy_lock.vocabulary import Mode, Status

Note = Callable[[str], None]


def ignore(_message: str) -> None:
    """The default ``note``: say nothing."""


# --- one way to connect -----------------------------------------------------------------------


class Target:
    """The settings a command runs under and the database they name: one engine (NullPool),
    opened on first use and announced once through ``note`` (password hidden). Every
    connection waits at most ``lock_timeout`` seconds for any lock (:meth:`use_lock_timeout`)."""

    def __init__(self, settings: Settings, note: Note = ignore,
                 lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> None:
        self.settings = settings
        self.note = note
        self.lock_timeout = lock_timeout
        self._engine: Engine | None = None
        self._audit_key: AuditKey | None = None

    @classmethod
    def load(cls, config: str | None = None, database_url: str | None = None,
             note: Note = ignore, audit_key_file: str | None = None) -> Target:
        """Settings resolved as the CLI does: option, environment, config file, default."""
        return cls(load_settings(config, database_url, audit_key_file), note)

    @property
    def audit_key(self) -> AuditKey | None:
        """The audit key, read on first use (a usage error when its file is unfit)."""
        if self._audit_key is None and self.settings.audit_key_file is not None:
            self._audit_key = load_key(self.settings.audit_key_file)
        return self._audit_key

    def zone_name(self, tz: str | None) -> str:
        """The display zone's name: ``tz`` (the CLI's --tz or PRIVACY_LOCK_TZ), else the
        config's ``[display] timezone``, else UTC."""
        return tz or self.settings.timezone or "UTC"

    @property
    def text_limits(self) -> Mapping[str, tuple[TextLimit, ...]]:
        """What the tool's columns hold on the target database (read from the URL's scheme:
        checking a value needs no connection)."""
        return stored_limits(parse_url(self.settings.database_url).get_backend_name())

    @property
    def url(self) -> str:
        """The database URL with its password hidden, safe to print."""
        return safe_url(self.settings.database_url)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self.open_engine(create=False)
        return self._engine

    def use_lock_timeout(self, seconds: float) -> None:
        """Make every later connection wait at most ``seconds`` for a lock (a run's
        ``--lock-timeout``); an engine already open with another timeout is replaced."""
        if seconds == self.lock_timeout:
            return
        self.lock_timeout = seconds
        if self._engine is not None:
            self._engine.dispose()
            self._engine = create_tool_engine(self.settings.database_url, seconds)

    def open_engine(self, create: bool) -> Engine:
        """Connect once to fail early; ``create`` allows a new SQLite file (``init``)."""
        # a malformed URL stops here
        engine = create_tool_engine(self.settings.database_url, self.lock_timeout)
        self.note(f"database: {self.url}")
        connect_check(engine, create=create)
        self._engine = engine
        return engine

    @contextlib.contextmanager
    def connect(self) -> Iterator[Connection]:
        """One connection for the whole command; work on it is done in short transactions.
        Driver errors leave it as one-line DatabaseErrors naming the database. The audit key
        (checked before connecting) travels with the connection to every append and verify.
        A lock wait that ran out is the one "could not lock" error: exit 2 until a writing
        transaction of this connection has committed, exit 1 after."""
        key = self.audit_key
        infos: list[dict[Any, Any]] = []  # the connection's info outlives its closing

        def changed() -> bool:
            return any(info.get(CHANGED) for info in infos)

        with (translate_errors(self.settings.database_url, self.lock_timeout, changed),
              self.engine.connect() as conn):
            infos.append(conn.info)
            if key is not None:
                conn.execution_options(**{KEY_OPTION: key})
            yield conn

    def content_map(self, conn: Connection) -> ContentMap:
        """The content map checked against the live schema, after checking the tool's tables."""
        with reading(conn):
            require_tool_tables(conn)
            require_key_if_keyed(conn)  # refuse before any change, not at the first append
            return bind_content_map(conn, self.settings)

    @staticmethod
    def require_tables(conn: Connection) -> None:
        with reading(conn):
            require_tool_tables(conn)

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


# --- what the run functions take and give -------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """Who acts and why, as given (``--operator``/``--ticket``/``--reason``); a real change
    needs all three, a dry run none."""

    operator: str | None = None
    ticket: str | None = None
    reason: str | None = None

    def actor(self, limits: Mapping[str, tuple[TextLimit, ...]] | None = None) -> Actor:
        """The audited identity; a usage error names whichever of the three is missing, or
        one that :meth:`check` refuses."""
        missing = [name for name, value in (("--operator", self.operator),
                                            ("--ticket", self.ticket),
                                            ("--reason", self.reason))
                   if not (value and value.strip())]
        if missing:
            raise UsageError(f"{', '.join(missing)} required: every change is audited with them")
        self.check(limits)
        assert self.operator and self.ticket and self.reason  # checked just above
        return Actor.current(self.operator.strip(), self.ticket.strip(), self.reason.strip())

    def check(self, limits: Mapping[str, tuple[TextLimit, ...]] | None = None) -> None:
        """A usage error for a value a request file could not hold either
        (:func:`~privacy_lock.stored_text.text_problem`: not valid Unicode, a control character
        other than tab — a reason may also hold line breaks —, longer than ``limits``, by
        default the tool's columns on any database)."""
        limits = stored_limits() if limits is None else limits
        for name, value in (("operator", self.operator), ("ticket", self.ticket),
                            ("reason", self.reason)):
            if value and (found := text_problem(name, value.strip(), limits.get(name, ()))):
                raise UsageError(f"--{name}: {found}")


class Watcher(Protocol):
    """What a run reports as it goes (:class:`privacy_lock.progress.Progress` is one)."""

    def item_done(self, user: str, kind: str, items: int) -> None: ...
    def user_done(self, user: str, status: str) -> None: ...
    def note(self, message: str) -> None: ...
    def close(self) -> None: ...


# (a function counting the planned items, requests) -> the watcher of the run. The count is a
# read of every named user's items (or locks' snapshots): call it only to show it.
ProgressFactory = Callable[[Callable[[], int], int], Watcher]


class Ending(StrEnum):
    """How a run of requests ended (its last line says so)."""

    DONE = "done"
    DRY_RUN = "dry run, nothing was changed"
    INTERRUPTED = "interrupted"
    FAILURES = "finished with failures"


@dataclass
class RunResult:
    """What ``apply`` or ``revert`` did (or in a dry run would do), request by request."""

    mode: Mode
    dry_run: bool
    outcomes: list[Outcome]
    interrupted: bool
    stats: RunStats
    output: Path | None = None  # the results file written
    retry_file: Path | None = None  # NAME.failed.csv, when some failed
    output_error: str | None = None  # the results file could not be written (the run stands)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.failed]

    @property
    def ending(self) -> Ending:
        if self.dry_run:
            return Ending.DRY_RUN
        if self.interrupted:
            return Ending.INTERRUPTED
        return Ending.FAILURES if self.failed else Ending.DONE


@dataclass
class FiledRequests:
    """What ``revert`` did under ``[policy] revert_requires_approval``: filed requests for a
    second operator, changed no content."""

    outcomes: list[approvals.RequestOutcome]
    output: Path | None = None
    output_error: str | None = None

    @property
    def waiting(self) -> list[approvals.RequestOutcome]:
        """The requests now waiting for approval (filed now or before)."""
        return [o for o in self.outcomes if o.request_id is not None]


@dataclass
class ApproveResult:
    """What ``approve`` did: the requests run (in the order given) and their reverts."""

    approver: Actor
    approved: list[approvals.ApprovalOutcome]
    finished_meanwhile: list[str]  # requests another approver finished since we looked
    interrupted: bool
    stats: RunStats
    output: Path | None = None
    output_error: str | None = None

    @property
    def failed(self) -> list[approvals.ApprovalOutcome]:
        return [a for a in self.approved if a.outcome.failed]


class _TrackedRun:
    """A batch's progress and final statistics, fed by its pacer and its outcomes."""

    def __init__(self, conn: Connection, cmap: ContentMap, mode: Mode, batch: list[Request],
                 dry_run: bool, pacer: Pacer, progress: ProgressFactory | None,
                 note: Note) -> None:
        """Plan the totals (aggregate queries) and hook the pacer to the watcher."""
        self.mode, self.dry_run, self.pacer = mode, dry_run, pacer
        self.started = time.monotonic()
        self.watcher = (progress(lambda: planned_items(conn, cmap, mode, batch), len(batch))
                        if progress else None)
        self.stats = RunStats(action=("would be " if dry_run else "")
                              + ("hidden" if mode == "apply" else "restored"))
        pacer.on_note = self.watcher.note if self.watcher else note
        pacer.on_chunk = self.chunk_done

    def chunk_done(self, user: str, kind: str, items: int) -> None:
        if self.watcher:
            self.watcher.item_done(user, kind, items)
        self.stats.add_items(kind, items)

    def done(self, outcome: Outcome) -> None:
        """One request finished (its users' items were counted chunk by chunk)."""
        if self.dry_run:  # no chunk is written to count them: count what would change
            for name, counts in outcome.kinds.items():
                self.chunk_done(outcome.user or "", name,
                                counts.changed if self.mode == "apply" else counts.restored)
        if self.watcher:
            self.watcher.user_done(outcome.user or "", outcome.status)
        self.stats.add_user(failed=outcome.failed,
                            conflicts=sum(c.conflicts for c in outcome.kinds.values()),
                            gone=sum(c.gone for c in outcome.kinds.values()))

    def close(self) -> RunStats:
        if self.watcher:
            self.watcher.close()
        self.stats.retries, self.stats.chunks = self.pacer.retried, self.pacer.chunks
        self.stats.elapsed = time.monotonic() - self.started
        return self.stats


# --- the commands -----------------------------------------------------------------------------


@dataclass
class InitResult:
    created: list[str]  # the tool's tables created now (none: they all existed)
    index_suggestions: list[str]  # CREATE INDEX statements a DBA should review
    policy_seeded: list[str] = field(default_factory=list)  # "rule = value"


def init(target: Target) -> InitResult:
    """Create the tool's own tables (idempotent) and store the policy rules not stored yet
    (from the config's [policy], else the defaults; audited); suggest the content tables'
    missing (owner, id) indexes."""
    target.open_engine(create=True)
    suggestions: list[str] = []
    if target.settings.content:  # read first: a wait here (a locked table) changes nothing
        with target.connect() as conn, reading(conn):
            suggestions = missing_owner_indexes(conn, bind_content_map(conn, target.settings))
    with target.connect() as conn, conn.begin():
        created = create_tool_tables(conn)
        seeded = seed_policy(conn, target.settings.policy)
    if target.settings.identity:
        from privacy_lock.config import bind_identity
        from privacy_lock.finder import index_ddl

        with target.connect() as conn:
            with reading(conn):
                bound = bind_identity(conn, target.settings)
            suggestions += [f"{s};" for s in index_ddl(conn, bound)]
    return InitResult(created, suggestions, seeded)


@dataclass
class DemoResult:
    summary: Any  # privacy_lock.demo.DemoSummary
    config_path: Path  # as given (relative when the database path was)


def demo(path: Path, *, force: bool = False, users: int = 200) -> DemoResult:
    """Build the demo SNS database at ``path`` and its config next to it, with the tool's
    tables created."""
    from privacy_lock.demo import build_demo

    config_path = path.parent / "privacy-lock.toml"
    summary = build_demo(path, config_path, users=users, overwrite=force)
    url = f"sqlite:///{summary.database_path.as_posix()}"
    engine = create_tool_engine(url)
    with translate_errors(url), engine.begin() as conn:
        create_tool_tables(conn)
    engine.dispose()
    return DemoResult(summary, config_path)


def apply(
    target: Target, users: Sequence[str] = (), *, kinds: Sequence[str] = (),
    from_file: Path | None = None, identity: Identity = Identity(), dry_run: bool = False,
    pacer: Pacer | None = None, output: Path | None = None,
    progress: ProgressFactory | None = None, encoding: str | None = None,
    delimiter: str | None = None, identity_check: int | None = None,
) -> RunResult:
    """Hide every item of the users (or of each row of ``from_file``, read in ``encoding``
    and split on ``delimiter`` as :func:`load_requests` says) that is not owner-only,
    remembering each old value; a dry run counts what would change. ``identity_check``: the
    passed identity-verdict event of the one user named, recorded in its events."""
    result = _run_requests(target, "apply", users, (), kinds, from_file, identity, dry_run,
                           pacer, output, progress, encoding, delimiter, identity_check)
    assert isinstance(result, RunResult)  # only revert files requests
    return result


def revert(
    target: Target, lock_ids: Sequence[int] = (), users: Sequence[str] = (), *,
    from_file: Path | None = None, identity: Identity = Identity(), dry_run: bool = False,
    pacer: Pacer | None = None, output: Path | None = None,
    progress: ProgressFactory | None = None, encoding: str | None = None,
    delimiter: str | None = None, identity_check: int | None = None,
) -> RunResult | FiledRequests:
    """Restore the locks (by id, by user, or each row of ``from_file``) where nobody changed
    an item since; under ``[policy] revert_requires_approval`` (not in a dry run) only file
    requests for a second operator."""
    return _run_requests(target, "revert", users, lock_ids, (), from_file, identity, dry_run,
                         pacer, output, progress, encoding, delimiter,
                         identity_check)


def _run_requests(
    target: Target, mode: Mode, users: Sequence[str], lock_ids: Sequence[int],
    kinds: Sequence[str], from_file: Path | None, identity: Identity, dry_run: bool,
    pacer: Pacer | None, output_path: Path | None, progress: ProgressFactory | None,
    encoding: str | None = None, delimiter: str | None = None,
    identity_check: int | None = None,
) -> RunResult | FiledRequests:
    """Validate every request and the output path, then run them as one batch."""
    if identity_check is not None and (from_file or len(users) + len(lock_ids) != 1):
        raise UsageError("--identity-check cites the verification of one person: name one "
                         "USER (or one LOCK_ID), not a request file")
    if from_file and (users or lock_ids):
        raise UsageError("give USER/LOCK_ID arguments or --from-file, not both")
    if not from_file and not (users or lock_ids):
        raise UsageError("name at least one USER" if mode == "apply"
                         else "name at least one LOCK_ID or --user USER (or --from-file)")
    if from_file and kinds:
        raise UsageError("--kind applies to USER arguments; in a request file use a kinds column")
    if not from_file and (encoding or delimiter):
        raise UsageError("--encoding and --delimiter describe a --from-file request file")
    if output_path:
        output.file_format(output_path)
        output.check_writable(output_path, with_failed=True)
    pacer = pacer or Pacer(default_chunk_size(DEFAULT_CHUNK_TIME), chunk_time=DEFAULT_CHUNK_TIME)
    target.use_lock_timeout(pacer.lock_timeout)
    policy = target.settings.policy
    with target.connect() as conn:
        cmap = target.content_map(conn)
        with reading(conn):  # the two-person rule is the database's, never the config's
            rules = read_policy(conn)
        if mode == "revert" and not dry_run:
            for line in ignored_config(rules, policy):
                target.note(line)
        if from_file:
            # Each batch of existence checks is a short read of its own (no long snapshot).
            batch = load_requests(
                from_file, mode, default_ticket=identity.ticket,
                default_reason=identity.reason, default_operator=identity.operator,
                known_kinds=list(cmap.kinds), normalize_user=cmap.normalize_user,
                unknown_users=partial(_read_once, conn, cmap.unknown_users),
                missing_locks=partial(_read_once, conn, missing_locks),
                encoding=encoding, delimiter=delimiter, note=target.note,
                limits=target.text_limits,
                spaces_hint=partial(_read_once, conn, cmap.spaces_hint),
            )
        else:
            batch = _argument_requests(conn, cmap, users, lock_ids, kinds, identity, dry_run,
                                       target.text_limits)
        if identity_check is not None:
            batch = [_cite_identity_check(conn, batch[0], identity_check)]
        if mode == "revert" and not dry_run and rules.revert_requires_approval:
            if identity_check is not None:
                raise UsageError("--identity-check is not yet carried by a revert request "
                                 "that waits for approval ([policy] revert_requires_approval); "
                                 "cite the verification in --reason")
            filed = FiledRequests(approvals.request_reverts(conn, cmap, batch))
            _say_why_not_locked(conn, target, [(o.lock_id, o.user) for o in filed.outcomes
                                               if o.status == Status.NOT_LOCKED])
            if output_path:
                rows = [o.as_dict() for o in filed.outcomes]
                fmt = output.file_format(output_path)
                filed.output, filed.output_error = _write(output_path, render(
                    rows, fmt, payload=rows if fmt == "ndjson" else None))
            return filed
        if mode == "revert" and not dry_run:
            _fresh_snapshot_statistics(conn)
        # From here Ctrl-C stops the run between chunks and never the writing of its results:
        # the results file and NAME.failed.csv hold exactly what finished and what did not.
        with pacer.stop_on_sigint():
            run = _TrackedRun(conn, cmap, mode, batch, dry_run, pacer, progress, target.note)
            try:
                done = run_batch(conn, cmap, mode, batch, pacer, dry_run, on_done=run.done,
                                 share_chunks=not target.settings.one_user_per_chunk)
            finally:
                stats = run.close()
            if mode == "revert":
                _say_why_not_locked(conn, target, [(o.lock_id, o.user) for o in done.outcomes
                                                   if o.status == Status.NOT_LOCKED])
            if dry_run and policy.audit_reads:
                record_views(conn, f"{mode} --dry-run", [
                    (Actor.current(o.request.operator, o.request.ticket or None,
                                   o.request.reason or None), o.user, o.lock_id)
                    for o in done.outcomes if o.user and not o.failed])
            result = RunResult(mode, dry_run, done.outcomes, done.interrupted, stats)
            if output_path:
                try:
                    with pacer.stop_on_sigint(second_aborts=False):
                        result.retry_file = output.write_outcomes(output_path,
                                                                  result.outcomes, mode)
                    result.output = output_path
                except OutputError as exc:  # checked before the run, yet failed: it stands
                    result.output_error = str(exc)
            result.interrupted = result.interrupted or pacer.stop_requested
    return result


def _say_why_not_locked(conn: Connection, target: Target,
                        named: list[tuple[int | None, str | None]]) -> None:
    """For each lock or user a revert found no active lock for, say when and by whom it was
    reverted (or that the user was never locked)."""
    if named:
        for line in reporting.closed_lock_lines(conn, named):
            target.note(line)


def _fresh_snapshot_statistics(conn: Connection) -> None:
    """Let the database gather the snapshot table's statistics before a revert plans on it,
    when the strategy says so (:meth:`privacy_lock.dialects.Dialect.refresh_snapshot_statistics`).
    Best effort, in a transaction of its own: a lock wait or a refusal only leaves the plans
    as they would have been."""
    try:
        with reading(conn):  # changes no row: a lock wait after it is still "nothing changed"
            for_connection(conn).refresh_snapshot_statistics(conn)
    except DBAPIError:
        pass


def _write(path: Path, text: str) -> tuple[Path | None, str | None]:
    """(path, None) when written, (None, why) when not (the command's changes stand)."""
    try:
        output.write_text(path, text)
    except OutputError as exc:
        return None, str(exc)
    return path, None


def _read_once(conn: Connection, ask: Callable[[Connection, list[Any]], Any],
               keys: list[Any]) -> Any:
    """``ask(conn, keys)`` in a read-only transaction of its own."""
    with reading(conn):
        return ask(conn, keys)


def _argument_requests(
    conn: Connection, cmap: ContentMap, users: Sequence[str], lock_ids: Sequence[int],
    kinds: Sequence[str], identity: Identity, dry_run: bool,
    limits: Mapping[str, tuple[TextLimit, ...]],
) -> list[Request]:
    """Requests from command-line arguments, checked like a request file's rows."""
    if dry_run:
        identity.check(limits)
        operator, ticket, reason = (identity.operator or "", identity.ticket or "",
                                    identity.reason or "")
    else:
        actor = identity.actor(limits)
        operator, ticket, reason = actor.operator, actor.ticket or "", actor.reason or ""
    cmap.select(tuple(kinds))  # unknown kinds are a usage error before anything runs
    subjects = check_users(conn, cmap, list(users))
    with reading(conn):
        for lock_id in lock_ids:
            find_lock(conn, lock_id)
    made = [Request(0, s, None, ticket, reason, operator, tuple(kinds)) for s in subjects]
    made += [Request(0, None, lock_id, ticket, reason, operator, ()) for lock_id in lock_ids]
    return made


def _cite_identity_check(conn: Connection, request: Request, event: int) -> Request:
    """The request with the verification it cites, checked: a passed identity-verdict about
    the request's user (a lock's subject for a LOCK_ID)."""
    from dataclasses import replace

    from privacy_lock.verify import check_identity_event

    subject = request.user_id
    if subject is None and request.lock_id is not None:
        with reading(conn):
            subject = find_lock(conn, request.lock_id).subject
    check_identity_event(conn, event, str(subject))
    return replace(request, identity_check=event)


@dataclass(frozen=True)
class PendingFilter:
    """``approve --all-pending``: every pending request, or those under a ticket and/or filed
    by one operator; ``yes`` confirms "every pending request" when no filter narrows it."""

    ticket: str | None = None
    requested_by: str | None = None
    yes: bool = False

    @property
    def narrowed(self) -> bool:
        return bool((self.ticket or "").strip() or (self.requested_by or "").strip())


def _approval_ids(
    conn: Connection, target: Target, request_ids: Sequence[int], from_file: Path | None,
    pending: PendingFilter | None, approver: Actor,
) -> list[int]:
    """The request ids ``approve`` names: the arguments, a file of ids, or the pending
    requests ``pending`` selects less the approver's own (left out, and said so)."""
    if sum((bool(request_ids), from_file is not None, pending is not None)) != 1:
        raise UsageError("name the requests one way: REQUEST_ID... (ranges such as 1-200 "
                         "allowed), --from-file FILE or --all-pending")
    if from_file is not None:
        return read_request_ids(from_file)
    if pending is None:
        return list(dict.fromkeys(request_ids))
    rows = approvals.pending_requests(conn, ticket=pending.ticket,
                                      requested_by=pending.requested_by)
    own = approvals.own_requests(conn, rows, approver)
    ids = [row.request_id for row in rows if row not in own]
    if own:
        target.note(f"left out {len(own):,} pending request(s) the two-person rule does not "
                    f"let you approve ({approvals.id_ranges([r.request_id for r in own])}): "
                    "another operator approves them")
    if not ids:
        raise UsageError("no pending request " + ("matches" if pending.narrowed else "is left")
                         + (" that you may approve" if own else "") + "; nothing was approved")
    if not pending.narrowed and not pending.yes:
        asked = sorted({r.requested_by for r in rows if r not in own})
        raise UsageError(
            f"--all-pending without --ticket or --requested-by would approve every pending "
            f"request: {len(ids):,} ({approvals.id_ranges(ids)}), filed by "
            f"{', '.join(asked)}; review them (`privacy-lock requests --state pending`), then "
            "add --yes, or narrow with --ticket / --requested-by; nothing was approved")
    return ids


def approve(
    target: Target, request_ids: Sequence[int] = (), *, operator: str | None,
    reason: str | None = None, pacer: Pacer | None = None,
    progress: ProgressFactory | None = None, from_file: Path | None = None,
    all_pending: PendingFilter | None = None, output: Path | None = None,
) -> ApproveResult:
    """Approve revert requests as a second operator and run them as one batch: the ids given,
    those of ``from_file`` (:func:`read_request_ids`), or with ``all_pending`` the pending
    ones it selects (without the approver's own; every pending one only when confirmed).

    Refused before anything is approved or run (a usage error): no operator, an unknown,
    finished or rejected request, a lock no longer bound as it records, a request another
    operator approved, or any request the approver filed (each such refusal is recorded as a
    ``revert-refused`` event); a lock whose seals fail, as a :class:`TamperedError`.
    """
    if not (operator and operator.strip()):
        raise UsageError("--operator required: the approval is audited under your name")
    Identity(operator, None, reason).check(target.text_limits)
    approver = Actor.current(operator.strip(), None, (reason or "").strip() or None)
    if output:
        check_writable(output)
    pacer = pacer or Pacer(default_chunk_size(DEFAULT_CHUNK_TIME), chunk_time=DEFAULT_CHUNK_TIME)
    target.use_lock_timeout(pacer.lock_timeout)
    with target.connect() as conn:
        cmap = target.content_map(conn)
        ids = _approval_ids(conn, target, request_ids, from_file, all_pending, approver)
        approved = approvals.approve_requests(conn, cmap, ids, approver)
        if not approved.runnable:  # each was finished or approved by another since we looked
            raise UsageError("; ".join(approved.finished_meanwhile))
        _fresh_snapshot_statistics(conn)
        run = _TrackedRun(conn, cmap, "revert", approved.requests, False, pacer, progress,
                          target.note)
        try:
            done = approvals.run_approved(conn, cmap, approved, pacer,
                                          share_chunks=not target.settings.one_user_per_chunk,
                                          on_done=run.done)
        finally:
            stats = run.close()
    result = ApproveResult(approver, done.approved, done.finished_meanwhile, done.interrupted,
                           stats)
    if output:
        json_file = output.suffix.lower() == ".json"
        rows = [approval_row(a) for a in result.approved] if json_file else [
            {"request": a.request["request_id"], **row} for a in result.approved
            for row in outcome_rows([a.outcome], "revert")]
        result.output, result.output_error = _write(output, render(
            rows, "json" if json_file else "csv"))
    return result


def approval_row(approval: approvals.ApprovalOutcome) -> dict[str, Any]:
    """One approved request and its revert, as ``approve --format json`` and ``--output``
    show it."""
    return {"request": approval.request["request_id"],
            "requested_by": approval.request["requested_by"],
            "approved_by": approval.request["approved_by"], "resumed": approval.resumed,
            **approval.outcome.as_dict()}


def reject(
    target: Target, request_ids: Sequence[int], *, operator: str | None, reason: str | None,
) -> list[approvals.RejectedRequest]:
    """Cancel pending revert requests (``revert-rejected``, sealed); all or none."""
    missing = [name for name, value in (("--operator", operator), ("--reason", reason))
               if not (value and value.strip())]
    if missing:
        raise UsageError(f"{', '.join(missing)} required: a rejection is audited with them")
    Identity(operator, None, reason).check(target.text_limits)
    assert operator and reason  # checked just above
    rejecter = Actor.current(operator.strip(), None, reason.strip())
    with target.connect() as conn:
        target.require_tables(conn)
        return approvals.reject_requests(conn, request_ids, rejecter)


def status(
    target: Target, users: Sequence[str], *, items: bool = False, operator: str | None = None
) -> list[dict[str, Any]]:
    """Each user's lock and counts per kind (with ``items``, every snapshotted item); logged
    as ``viewed`` under ``[policy] audit_reads``."""
    Identity(operator).check(target.text_limits)
    with target.connect() as conn:
        cmap = target.content_map(conn)
        subjects = check_users(conn, cmap, list(users))
        reports = [user_status(conn, cmap, s, items) for s in subjects]
        if target.settings.policy.audit_reads:
            viewer = Actor.current((operator or "").strip())
            record_views(conn, "status --items" if items else "status", [
                (viewer, r["user"], (r["lock"] or {}).get("lock_id")) for r in reports])
    return reports


def time_range(since: str | None, until: str | None, tz: str) -> tuple[Any, Any, Any]:
    """(zone, since, until-exclusive) as the stored UTC text the filters compare with."""
    zone = reporting.resolve_zone(tz)
    since_at = reporting.parse_bound(since, zone, "--since")
    until_before = reporting.parse_bound(until, zone, "--until", end=True)
    reporting.check_range(since_at, until_before)
    return zone, since_at, until_before


def locks(
    target: Target, *, state: str = "active", operator: str | None = None,
    user: str | None = None, ticket: str | None = None, since: str | None = None,
    until: str | None = None, tz: str | None = None,
) -> list[dict[str, Any]]:
    """Locks with their items, age, operator, ticket and dates (times shown in ``tz``, by
    default the config's zone, else UTC)."""
    zone, since_at, until_before = time_range(since, until, target.zone_name(tz))
    with target.connect() as conn:
        target.require_tables(conn)
        filters = reporting.LockFilters(state, operator, _user_filter(target, conn, user),
                                        ticket, None, since_at, until_before)
        return reporting.lock_rows(conn, filters, zone)


def _user_filter(target: Target, conn: Connection, user: str | None) -> str | None:
    """A ``--user`` filter as locks and events store the user: by the content map's id rule
    when a map is configured (on an integer owner column ``042`` is user 42; a string id is
    taken exactly), else as written. Not checked for existence: a report may name a user
    whose account is gone."""
    if user is None or not target.settings.content:
        return user
    with reading(conn):  # not Target.content_map: a report needs no audit key
        return bind_content_map(conn, target.settings).normalize_user(user)


def requests(target: Target, *, state: str = "open", tz: str | None = None,
             ticket: str | None = None, requested_by: str | None = None
             ) -> list[dict[str, Any]]:
    """Revert requests in ``state`` (open, pending, approved, done, rejected, all), only
    those under ``ticket`` / filed by ``requested_by`` (as approve --all-pending selects)."""
    zone = reporting.resolve_zone(target.zone_name(tz))
    with target.connect() as conn:
        target.require_tables(conn)
        rows = approvals.list_requests(conn, state, zone)
    if ticket is not None:
        rows = [r for r in rows if r["ticket"] == ticket.strip()]
    if requested_by is not None:
        rows = [r for r in rows if approvals.same_operator(r["requested_by"], requested_by)]
    return rows


def audit_verify(target: Target, expect_head: str | None = None,
                 checkpoints: Path | None = None) -> VerifyResult:
    """Recompute the audit chain (and find a head published earlier); with the target's audit
    key, check every MAC; check the trail against every line of a ``checkpoints`` file."""
    published = read_checkpoints(checkpoints) if checkpoints else []
    with target.connect() as conn:
        target.require_tables(conn)
        return verify_chain(conn, expect_head, checkpoints=published)


@dataclass
class CheckpointResult:
    verify: VerifyResult  # the trail checked first: a broken one gets no checkpoint
    line: str | None  # the checkpoint line (None when the trail is broken)
    output: Path | None = None  # the file it was appended to


def audit_checkpoint(target: Target, output_path: Path | None = None) -> CheckpointResult:
    """Verify the trail and give the checkpoint line of its head (keyed with the target's
    audit key), appended to ``output_path`` when given; nothing when the trail is broken."""
    if output_path:
        output.check_writable(output_path)
    with target.connect() as conn:
        target.require_tables(conn)
        result = verify_chain(conn)
    if not result.ok:
        return CheckpointResult(result, None)
    line = checkpoint_line(result.head_seq, result.head_hash, result.head_time, utc_now(),
                           result.first_keyed, target.audit_key)
    if output_path:
        append_line(output_path, line)
    return CheckpointResult(result, line, output_path)


@dataclass
class AuditReport:
    report: reporting.Report
    text: str  # the report in the format asked ("" when it was streamed)
    output: Path | None = None  # where it was written (else the caller shows ``text``)
    exported: int | None = None  # events an export wrote (csv, json, ndjson, ids, count)
    last_seq: int | None = None  # the last event an export wrote
    more: bool = False  # --limit stopped an export before the last selected event
    notes: list[str] = field(default_factory=list)  # for stderr (columns left out to fit)


# Formats whose events are read and written in pieces, never held: any number of events.
EXPORT_FORMATS = ("csv", "tsv", "json", "ndjson", "ids", "count")


def audit_report(
    target: Target, *, since: str | None = None, until: str | None = None, tz: str = "UTC",
    operator: str | None = None, user: str | None = None, actions: Sequence[str] = (),
    ticket: str | None = None, lock_id: int | None = None, summary: bool = False,
    fmt: str = "table", output_path: Path | None = None, limit: int | None = None,
    after: int | None = None, fields: Sequence[str] = (), wide: bool = False,
    echo: Callable[[str], None] | None = None,
) -> AuditReport:
    """Who changed whose content, when, under which ticket and reason, in ``fmt``; written
    whole to ``output_path`` when given (checked writable before reading).

    The exports (csv, tsv, json, ndjson, ids, count) stream: events are read in keyset
    batches and written (to ``output_path``, else through ``echo``) as they come, in constant
    memory. The table and the html page list the first ``limit`` events (50 and 1,000 by
    default; 0 = all) and say how to get the rest (``--after SEQ``); ``summary``: none."""
    if output_path:
        output.check_writable(output_path)
    zone, since_at, until_before = time_range(since, until, tz)
    named = {"since": since, "until": until, "operator": operator, "user": user,
             "action": tuple(actions), "ticket": ticket, "lock": lock_id}
    words = reporting.describe_filters(**named, after=after)
    args = reporting.filter_args(**named, tz=None if tz.upper() in ("UTC", "Z") else tz)
    streamed = fmt in EXPORT_FORMATS and not summary
    with target.connect() as conn:
        target.require_tables(conn)
        filters = EventFilters(since_at, until_before, operator,
                               _user_filter(target, conn, user), tuple(actions), ticket,
                               lock_id, after)
        if streamed:
            return _export_report(conn, filters, zone, fmt, fields, limit, output_path, echo,
                                  reporting.Report(zone, filters, words, target.url, "",
                                                   filter_args=args))
        if summary:
            keep: int | None = 0
        elif limit is None:
            keep = reporting.HTML_EVENTS if fmt == "html" else reporting.TABLE_EVENTS
        else:
            keep = limit or None  # 0: every event
        report = reporting.build_report(conn, filters, zone, database=target.url,
                                        filter_words=words, keep_events=keep,
                                        verify=fmt in ("html", "table"))
    report.filter_args = args
    notes: list[str] = []
    result = AuditReport(report, report_text(report, fmt, summary, fields, wide, notes),
                         notes=notes)
    if output_path:
        output.write_text(output_path, result.text)
        result.output = output_path
    return result


def _export_report(
    conn: Connection, filters: EventFilters, zone: Any, fmt: str, fields: Sequence[str],
    limit: int | None, output_path: Path | None, echo: Callable[[str], None] | None,
    report: reporting.Report,
) -> AuditReport:
    """Stream the selected events (the first ``limit``, when given) as ``fmt`` to
    ``output_path`` or ``echo``, inside one read transaction; count them in ``report``. Then
    verify the whole trail (in batches, constant memory too) into ``report.verify``, as the
    table and the html page do: an export of a broken trail is still written, and fails."""
    result = AuditReport(report, "", exported=0)

    def rows() -> Iterator[dict[str, Any]]:
        for event in query_events(conn, filters):
            if limit and report.event_total >= limit:
                result.more = True
                return
            report.event_total += 1
            result.last_seq = event["seq"]
            yield reporting.event_row(event, zone)

    with reading(conn):
        pieces = report_pieces(rows(), fmt, fields)
        if output_path:
            output.write_text(output_path, pieces)
            result.output = output_path
        else:
            write = echo or (lambda text: print(text, end=""))
            last = ""
            for piece in pieces:
                if piece:
                    write(piece)
                    last = piece
            if not last.endswith("\n"):
                write("\n")
    result.exported = report.event_total
    report.verify = verify_chain(conn)
    return result


def policy_show(target: Target) -> list[dict[str, Any]]:
    """The stored policy: each rule's value, whether it is stored or the default, who set it
    and when, and what the config says of it (ignored when it differs)."""
    with target.connect() as conn:
        target.require_tables(conn)
        with reading(conn):
            rules = read_policy(conn)
    return policy_rows(rules, target.settings.policy)


def policy_set(target: Target, rule: str, value: str, identity: Identity) -> PolicyChange:
    """Change one stored rule, audited as ``policy-changed`` in the same transaction (needs
    --operator, --ticket and --reason; the tool's own role may only read the policy)."""
    actor = identity.actor(target.text_limits)
    check_rule(rule, value)  # a typo is a usage error before connecting
    with target.connect() as conn:
        target.require_tables(conn)
        return set_rule(conn, rule, value, actor)


def find(
    target: Target, *, mail: Sequence[str] = (), nickname: str | None = None,
    joined: str | None = None, texts: Sequence[str] = (), identity: Identity = Identity(),
    reindex: bool = False,
) -> Any:
    """Rank the accounts that fit what a caller remembers (masked evidence), audited and
    rate-limited; a search too weak to list anyone gets a coarse count (finder.py). With
    ``reindex`` only rebuild the index the tool maintains (a str saying what was done)."""
    from privacy_lock import finder
    from privacy_lock.config import bind_identity
    from privacy_lock.identity import remembered

    if reindex and (mail or nickname or joined or texts):
        raise UsageError("--reindex takes no search: run it alone, then search")
    actor = None if reindex else identity.actor()
    with target.connect() as conn:
        target.require_tables(conn)
        with reading(conn):
            require_key_if_keyed(conn)
            bound = bind_identity(conn, target.settings)
        if reindex:
            return finder.reindex(conn, bound)
        assert actor is not None
        try:
            memory = remembered(mail, nickname, joined, texts)
        except UsageError as exc:  # too short a fragment: refused, and the refusal audited
            raise finder.refuse(conn, actor, str(exc), {"fragments": len(mail) + len(texts)
                                                        + (nickname is not None)}) from None
        return finder.search(conn, bound, memory, actor)


def verify_identity(target: Target, user: str, talk: Any, *,
                    identity: Identity = Identity(), rng: Any = None) -> Any:
    """Ask the caller questions built from ``user``'s own data, each answer recorded (right or
    wrong) before support sees the account's; end with the verdict the operator confirms
    (verify.py). ``talk`` is a :class:`privacy_lock.verify.Interview`."""
    import random

    from privacy_lock import verify
    from privacy_lock.config import bind_identity

    if not (identity.operator and identity.operator.strip()
            and identity.ticket and identity.ticket.strip()):
        raise UsageError("--operator and --ticket required: every verification is audited "
                         "with them")
    identity.check()
    actor = Actor.current(identity.operator.strip(), identity.ticket.strip(),
                          (identity.reason or "").strip() or None)
    with target.connect() as conn:
        target.require_tables(conn)
        with reading(conn):
            require_key_if_keyed(conn)
            bound = bind_identity(conn, target.settings)
        cmap = target.content_map(conn)
        [subject] = check_users(conn, cmap, [user])
        return verify.interview(conn, bound, subject, actor, talk,
                                rng or random.SystemRandom())


def find_index_sql(dialect: str, settings: Settings) -> str:
    """The indexes `find` wants on the site's tables for ``dialect`` (from the config's
    [identity]), as commented SQL for a DBA; empty where the tool keeps its own or none."""
    from privacy_lock.dialects import named

    spec = settings.identity
    if spec is None or settings.accounts is None:
        return ""
    columns = [(settings.accounts.table, spec.mail)]
    if spec.mail_history:
        columns.append((spec.mail_history.table, spec.mail_history.address))
    if spec.nickname:
        columns.append((settings.accounts.table, spec.nickname))
    columns += [(m.table, m.text) for m in spec.memory]
    statements = named(dialect).find_index_ddl(columns)
    if not statements:
        return ""
    lines = ["", "-- `privacy-lock find` ([identity]): trigram indexes on the searched columns of "
             "the site's tables.", "-- Not created by the tool; review and run yourself "
             "(CONCURRENTLY: outside a transaction)."]
    return "\n".join(lines + [f"{s};" for s in statements]) + "\n"


def sql(dialect: str, role: str | None = None, settings: Settings | None = None) -> str:
    """The DDL of the tool's tables for ``dialect``; with ``role``, the least-privilege GRANTs
    instead (column grants from the settings' content map)."""
    if role is None:
        ddl = ddl_for(dialect)
        if settings is not None and settings.identity is not None:
            ddl += find_index_sql(dialect, settings)
        return ddl
    from privacy_lock.roles import grants_sql

    if settings is None:
        return grants_sql(dialect, role)
    return grants_sql(dialect, role, settings.content or None, settings.accounts)
