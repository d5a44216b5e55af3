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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Connection, Engine

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
from privacy_lock.db import connect_check, create_tool_engine, reading, safe_url, translate_errors
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
from privacy_lock.pacing import DEFAULT_CHUNK_TIME, Pacer
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
from privacy_lock.render import render, report_text
from privacy_lock.requests import Request, load_requests, text_problem
from privacy_lock.schema import create_tool_tables, ddl_for, require_tool_tables
from privacy_lock.vocabulary import Mode

Note = Callable[[str], None]


def ignore(_message: str) -> None:
    """The default ``note``: say nothing."""


# --- one way to connect -----------------------------------------------------------------------


class Target:
    """The settings a command runs under and the database they name: one engine (NullPool),
    opened on first use and announced once through ``note`` (password hidden)."""

    def __init__(self, settings: Settings, note: Note = ignore) -> None:
        self.settings = settings
        self.note = note
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

    @property
    def url(self) -> str:
        """The database URL with its password hidden, safe to print."""
        return safe_url(self.settings.database_url)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self.open_engine(create=False)
        return self._engine

    def open_engine(self, create: bool) -> Engine:
        """Connect once to fail early; ``create`` allows a new SQLite file (``init``)."""
        engine = create_tool_engine(self.settings.database_url)  # a malformed URL stops here
        self.note(f"database: {self.url}")
        connect_check(engine, create=create)
        self._engine = engine
        return engine

    @contextlib.contextmanager
    def connect(self) -> Iterator[Connection]:
        """One connection for the whole command; work on it is done in short transactions.
        Driver errors leave it as one-line DatabaseErrors naming the database. The audit key
        (checked before connecting) travels with the connection to every append and verify."""
        key = self.audit_key
        with translate_errors(self.settings.database_url), self.engine.connect() as conn:
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

    def actor(self) -> Actor:
        """The audited identity; a usage error names whichever of the three is missing."""
        missing = [name for name, value in (("--operator", self.operator),
                                            ("--ticket", self.ticket),
                                            ("--reason", self.reason))
                   if not (value and value.strip())]
        if missing:
            raise UsageError(f"{', '.join(missing)} required: every change is audited with them")
        self.check()
        assert self.operator and self.ticket and self.reason  # checked just above
        return Actor.current(self.operator.strip(), self.ticket.strip(), self.reason.strip())

    def check(self) -> None:
        """A usage error for a value given with a character a request file may not hold
        (a control character other than tab; a reason may also hold line breaks)."""
        for name, value in (("operator", self.operator), ("ticket", self.ticket),
                            ("reason", self.reason)):
            if value and (found := text_problem(name, value.strip())):
                raise UsageError(f"--{name}: {found}")


class Watcher(Protocol):
    """What a run reports as it goes (:class:`privacy_lock.progress.Progress` is one)."""

    def item_done(self, user: str, kind: str, items: int) -> None: ...
    def user_done(self, user: str, status: str) -> None: ...
    def note(self, message: str) -> None: ...
    def close(self) -> None: ...


# (planned items, requests) -> the watcher of the run
ProgressFactory = Callable[[int, int], Watcher]


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
        self.watcher = (progress(planned_items(conn, cmap, mode, batch), len(batch))
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
    with target.connect() as conn, conn.begin():
        created = create_tool_tables(conn)
        seeded = seed_policy(conn, target.settings.policy)
    suggestions: list[str] = []
    if target.settings.content:
        with target.connect() as conn, reading(conn):
            suggestions = missing_owner_indexes(conn, bind_content_map(conn, target.settings))
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
    progress: ProgressFactory | None = None,
) -> RunResult:
    """Hide every item of the users (or of each row of ``from_file``) that is not owner-only,
    remembering each old value; a dry run counts what would change."""
    result = _run_requests(target, "apply", users, (), kinds, from_file, identity, dry_run,
                           pacer, output, progress)
    assert isinstance(result, RunResult)  # only revert files requests
    return result


def revert(
    target: Target, lock_ids: Sequence[int] = (), users: Sequence[str] = (), *,
    from_file: Path | None = None, identity: Identity = Identity(), dry_run: bool = False,
    pacer: Pacer | None = None, output: Path | None = None,
    progress: ProgressFactory | None = None,
) -> RunResult | FiledRequests:
    """Restore the locks (by id, by user, or each row of ``from_file``) where nobody changed
    an item since; under ``[policy] revert_requires_approval`` (not in a dry run) only file
    requests for a second operator."""
    return _run_requests(target, "revert", users, lock_ids, (), from_file, identity, dry_run,
                         pacer, output, progress)


def _run_requests(
    target: Target, mode: Mode, users: Sequence[str], lock_ids: Sequence[int],
    kinds: Sequence[str], from_file: Path | None, identity: Identity, dry_run: bool,
    pacer: Pacer | None, output_path: Path | None, progress: ProgressFactory | None,
) -> RunResult | FiledRequests:
    """Validate every request and the output path, then run them as one batch."""
    if from_file and (users or lock_ids):
        raise UsageError("give USER/LOCK_ID arguments or --from-file, not both")
    if not from_file and not (users or lock_ids):
        raise UsageError("name at least one USER" if mode == "apply"
                         else "name at least one LOCK_ID or --user USER (or --from-file)")
    if from_file and kinds:
        raise UsageError("--kind applies to USER arguments; in a request file use a kinds column")
    if output_path:
        output.check_writable(output_path, with_failed=True)
    pacer = pacer or Pacer(chunk_time=DEFAULT_CHUNK_TIME)
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
            )
        else:
            batch = _argument_requests(conn, cmap, users, lock_ids, kinds, identity, dry_run)
        if mode == "revert" and not dry_run and rules.revert_requires_approval:
            filed = FiledRequests(approvals.request_reverts(conn, cmap, batch))
            if output_path:
                rows = [o.as_dict() for o in filed.outcomes]
                filed.output, filed.output_error = _write(output_path, render(
                    rows, "json" if output_path.suffix == ".json" else "csv"))
            return filed
        run = _TrackedRun(conn, cmap, mode, batch, dry_run, pacer, progress, target.note)
        try:
            done = run_batch(conn, cmap, mode, batch, pacer, dry_run, on_done=run.done,
                             share_chunks=not target.settings.one_user_per_chunk)
        finally:
            stats = run.close()
        if dry_run and policy.audit_reads:
            record_views(conn, f"{mode} --dry-run", [
                (Actor.current(o.request.operator, o.request.ticket or None,
                               o.request.reason or None), o.user, o.lock_id)
                for o in done.outcomes if o.user and not o.failed])
    result = RunResult(mode, dry_run, done.outcomes, done.interrupted, stats)
    if output_path:
        try:
            result.retry_file = output.write_outcomes(output_path, result.outcomes, mode)
            result.output = output_path
        except OutputError as exc:  # checked before the run, yet failed: the run stands
            result.output_error = str(exc)
    return result


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
) -> list[Request]:
    """Requests from command-line arguments, checked like a request file's rows."""
    if dry_run:
        identity.check()
        operator, ticket, reason = (identity.operator or "", identity.ticket or "",
                                    identity.reason or "")
    else:
        actor = identity.actor()
        operator, ticket, reason = actor.operator, actor.ticket or "", actor.reason or ""
    cmap.select(tuple(kinds))  # unknown kinds are a usage error before anything runs
    subjects = check_users(conn, cmap, list(users))
    with reading(conn):
        for lock_id in lock_ids:
            find_lock(conn, lock_id)
    made = [Request(0, s, None, ticket, reason, operator, tuple(kinds)) for s in subjects]
    made += [Request(0, None, lock_id, ticket, reason, operator, ()) for lock_id in lock_ids]
    return made


def approve(
    target: Target, request_ids: Sequence[int], *, operator: str | None,
    reason: str | None = None, pacer: Pacer | None = None,
    progress: ProgressFactory | None = None,
) -> ApproveResult:
    """Approve revert requests as a second operator and run them as one batch.

    Refused before anything is approved or run (a usage error): no operator, an unknown or
    finished request, a lock no longer bound as it records, a request another operator
    approved, or any request the approver filed (each such refusal is recorded as a
    ``revert-refused`` event); a lock whose seals fail, as a :class:`TamperedError`.
    """
    if not (operator and operator.strip()):
        raise UsageError("--operator required: the approval is audited under your name")
    Identity(operator, None, reason).check()
    approver = Actor.current(operator.strip(), None, (reason or "").strip() or None)
    pacer = pacer or Pacer(chunk_time=DEFAULT_CHUNK_TIME)
    with target.connect() as conn:
        cmap = target.content_map(conn)
        approved = approvals.approve_requests(conn, cmap, request_ids, approver)
        if not approved.runnable:  # each was finished or approved by another since we looked
            raise UsageError("; ".join(approved.finished_meanwhile))
        run = _TrackedRun(conn, cmap, "revert", approved.requests, False, pacer, progress,
                          target.note)
        try:
            done = approvals.run_approved(conn, cmap, approved, pacer,
                                          share_chunks=not target.settings.one_user_per_chunk,
                                          on_done=run.done)
        finally:
            stats = run.close()
    return ApproveResult(approver, done.approved, done.finished_meanwhile, done.interrupted,
                         stats)


def status(
    target: Target, users: Sequence[str], *, items: bool = False, operator: str | None = None
) -> list[dict[str, Any]]:
    """Each user's lock and counts per kind (with ``items``, every snapshotted item); logged
    as ``viewed`` under ``[policy] audit_reads``."""
    Identity(operator).check()
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
    until: str | None = None, tz: str = "UTC",
) -> list[dict[str, Any]]:
    """Locks with their items, age, operator, ticket and dates (times shown in ``tz``)."""
    zone, since_at, until_before = time_range(since, until, tz)
    filters = reporting.LockFilters(state, operator, user, ticket, None, since_at, until_before)
    with target.connect() as conn:
        target.require_tables(conn)
        return reporting.lock_rows(conn, filters, zone)


def requests(target: Target, *, state: str = "open", tz: str = "UTC") -> list[dict[str, Any]]:
    """Revert requests in ``state`` (open, pending, approved, done, all)."""
    zone = reporting.resolve_zone(tz)
    with target.connect() as conn:
        target.require_tables(conn)
        return approvals.list_requests(conn, state, zone)


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
    text: str  # the report in the format asked
    output: Path | None = None  # where it was written (else the caller shows ``text``)


def audit_report(
    target: Target, *, since: str | None = None, until: str | None = None, tz: str = "UTC",
    operator: str | None = None, user: str | None = None, actions: Sequence[str] = (),
    ticket: str | None = None, lock_id: int | None = None, summary: bool = False,
    fmt: str = "table", output_path: Path | None = None,
) -> AuditReport:
    """Who changed whose content, when, under which ticket and reason, as ``fmt`` text;
    written whole to ``output_path`` when given (checked writable before reading)."""
    if output_path:
        output.check_writable(output_path)
    zone, since_at, until_before = time_range(since, until, tz)
    filters = EventFilters(since_at, until_before, operator, user, tuple(actions), ticket,
                           lock_id)
    words = reporting.describe_filters(since=since, until=until, operator=operator, user=user,
                                       action=tuple(actions), ticket=ticket, lock=lock_id)
    with target.connect() as conn:
        target.require_tables(conn)
        report = reporting.build_report(
            conn, filters, zone, database=target.url, filter_words=words,
            keep_events=fmt == "html" or not summary, verify=fmt in ("html", "table"),
        )
    result = AuditReport(report, report_text(report, fmt, summary))
    if output_path:
        output.write_text(output_path, result.text)
        result.output = output_path
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
    actor = identity.actor()
    check_rule(rule, value)  # a typo is a usage error before connecting
    with target.connect() as conn:
        target.require_tables(conn)
        return set_rule(conn, rule, value, actor)


def sql(dialect: str, role: str | None = None, settings: Settings | None = None) -> str:
    """The DDL of the tool's tables for ``dialect``; with ``role``, the least-privilege GRANTs
    instead (column grants from the settings' content map)."""
    if role is None:
        return ddl_for(dialect)
    from privacy_lock.roles import grants_sql

    if settings is None:
        return grants_sql(dialect, role)
    return grants_sql(dialect, role, settings.content or None, settings.accounts)
