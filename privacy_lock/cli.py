"""The command line: parse arguments, call one operation, render. No SQL here."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import click
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from privacy_lock import __version__, approvals, batch, locking
from privacy_lock import report as reporting
from privacy_lock.audit import ACTIONS, Actor, EventFilters, record_views, verify_chain
from privacy_lock.config import (
    ContentMap,
    Settings,
    bind_content_map,
    load_settings,
    missing_owner_indexes,
)
from privacy_lock.db import (
    connect_check,
    create_tool_engine,
    first_line,
    reading,
    safe_url,
    translate_errors,
)
from privacy_lock.errors import PrivacyLockError, UsageError
from privacy_lock.pacing import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, Pacer
from privacy_lock.progress import Progress, RunStats
from privacy_lock.render import FORMATS, REPORT_FORMATS, echo_outcomes, render
from privacy_lock.requests import Request, load_requests
from privacy_lock.schema import create_tool_tables, ddl_for, require_tool_tables


class App:
    """What every command shares: settings, the engine, the bound content map."""

    def __init__(self, config: str | None, database_url: str | None, debug: bool) -> None:
        self.config_option = config
        self.url_option = database_url
        self.debug = debug
        self._engine: Engine | None = None

    @cached_property
    def settings(self) -> Settings:
        return load_settings(self.config_option, self.url_option)

    @property
    def engine(self) -> Engine:
        """The engine for the target database, announced on stderr (password hidden)."""
        if self._engine is None:
            self._engine = self.open_engine(create=False)
        return self._engine

    def open_engine(self, create: bool) -> Engine:
        """Connect once to fail early; ``create`` allows a new SQLite file (``init``)."""
        url = self.settings.database_url
        note(f"database: {safe_url(url)}")
        engine = create_tool_engine(url)
        connect_check(engine, create=create)
        self._engine = engine
        return engine

    @contextlib.contextmanager
    def connect(self) -> Iterator[Connection]:
        """One connection for the whole command; work on it is done in short transactions."""
        with translate_errors(self.settings.database_url), self.engine.connect() as conn:
            yield conn

    def content_map(self, conn: Connection) -> ContentMap:
        """The content map checked against the live schema, after checking the tool's tables."""
        with reading(conn):
            require_tool_tables(conn)
            return bind_content_map(conn, self.settings)

    @staticmethod
    def require_tables(conn: Connection) -> None:
        with reading(conn):
            require_tool_tables(conn)


def note(message: str) -> None:
    """A line for the operator on stderr, so stdout stays clean for csv/json."""
    click.echo(message, err=True)


class CommandGroup(click.Group):
    """Turns every expected failure into one line on stderr and its exit code (2 = nothing changed).

    With --debug the traceback is shown instead.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (PrivacyLockError, SQLAlchemyError) as exc:
            app = ctx.obj
            if isinstance(app, App) and app.debug:
                raise
            if isinstance(exc, SQLAlchemyError):
                url = safe_url(app.settings.database_url) if isinstance(app, App) else "database"
                message, code = f"database error on {url}: {first_line(exc)}", 1
            else:
                message, code = str(exc), exc.exit_code
            click.echo(f"privacy-lock: error: {message}", err=True)
            ctx.exit(code)


format_option = click.option(
    "--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
    help="Output format.",
)


def identity_options(func: Any) -> Any:
    """--operator / --ticket / --reason, shared by the commands that change content."""
    func = click.option("--reason", help="Why, in the support engineer's words.")(func)
    func = click.option("--ticket", help="Support ticket id the change is made under.")(func)
    func = click.option(
        "--operator", envvar="PRIVACY_LOCK_OPERATOR",
        help="Your name as the audit trail should show it [env: PRIVACY_LOCK_OPERATOR].",
    )(func)
    return func


def pacing_options(func: Any) -> Any:
    """How large each transaction is, how the run yields to the live site, and how it reports."""
    options = [
        click.option("--chunk-size", type=click.IntRange(1, MAX_CHUNK_SIZE),
                     default=DEFAULT_CHUNK_SIZE, show_default=True,
                     help="Items per transaction (several small users may share one)."),
        click.option("--max-chunk-seconds", type=click.FloatRange(min=0.001),
                     help="Grow or shrink chunks to keep each transaction near this long."),
        click.option("--sleep", type=click.FloatRange(min=0), default=0.0, show_default=True,
                     help="Seconds to pause between chunks (gives a busy site room)."),
        click.option("--pause-file", type=click.Path(dir_okay=False, path_type=Path),
                     help="While this file exists, wait between chunks."),
        click.option("--lock-timeout", type=click.FloatRange(min=0.001), default=2.0,
                     show_default=True,
                     help="Seconds to wait for a row the site holds before backing off."),
        click.option("--retries", type=click.IntRange(0, 100), default=5, show_default=True,
                     help="Retries (with backoff) of a chunk that could not get its locks."),
        click.option("--quiet", "-q", is_flag=True, help="No progress output."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def batch_options(func: Any) -> Any:
    """--from-file / --output, shared by apply and revert."""
    func = click.option(
        "--output", type=click.Path(dir_okay=False, path_type=Path),
        help="Also write the per-request results here (.json or .csv); failed requests go to "
        "NAME.failed.csv, ready for --from-file.",
    )(func)
    func = click.option(
        "--from-file", type=click.Path(dir_okay=False, path_type=Path),
        help="Request file (CSV with a header, or JSON): one request per row.",
    )(func)
    return func


def make_actor(operator: str | None, ticket: str | None, reason: str | None) -> Actor:
    """The audited identity; all three values are required for a real change."""
    missing = [name for name, value in
               (("--operator", operator), ("--ticket", ticket), ("--reason", reason))
               if not (value and value.strip())]
    if missing:
        raise UsageError(f"{', '.join(missing)} required: every change is audited with them")
    return Actor.current(operator.strip(), ticket.strip(), reason.strip())  # type: ignore[union-attr]


@click.group(cls=CommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config", type=click.Path(dir_okay=False), envvar="PRIVACY_LOCK_CONFIG",
    help="Content map (TOML) [env: PRIVACY_LOCK_CONFIG; default ./privacy-lock.toml].",
)
@click.option(
    "--database-url", envvar="PRIVACY_LOCK_DATABASE_URL",
    help="SQLAlchemy URL of the target database [env: PRIVACY_LOCK_DATABASE_URL; "
    "default: the config's, else sqlite:///privacy-lock.db].",
)
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(__version__, prog_name="privacy-lock")
@click.pass_context
def cli(ctx: click.Context, config: str | None, database_url: str | None, debug: bool) -> None:
    """Hide a person's diaries and photos (owner only), exactly reversibly, with an audit trail.

    \b
    Try it:
      privacy-lock demo
      privacy-lock apply 42 --operator alice --ticket T-1 --reason "lost login"
      privacy-lock status 42
      privacy-lock revert --user 42 --operator alice --ticket T-2 --reason "came back"
    """
    ctx.obj = App(config, database_url, debug)


@cli.command()
@click.pass_obj
def init(app: App) -> None:
    """Create the tool's own tables in the target database (safe to run again).

    \b
    Example:
      privacy-lock --database-url postgresql://support@db/sns init
    """
    app.open_engine(create=True)
    with app.connect() as conn, conn.begin():
        created = create_tool_tables(conn)
    if created:
        click.echo(f"created: {', '.join(created)}")
    else:
        click.echo("all privacy-lock tables already exist; nothing to do")
    if app.settings.content:
        with app.connect() as conn, reading(conn):
            suggestions = missing_owner_indexes(conn, bind_content_map(conn, app.settings))
        if suggestions:
            note("note: these content tables have no (owner, id) index; each chunk would scan "
                 "the table. Ask a DBA to review and create:")
            for line in suggestions:
                note(f"  {line}")


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path), default="sns-demo.db")
@click.option("--force", is_flag=True, help="Rebuild even if the files exist.")
@click.option("--users", type=click.IntRange(1, 100_000), default=200, show_default=True)
def demo(path: Path, force: bool, users: int) -> None:
    """Build a demo SNS database (SQLite) and its config, ready to try every command.

    The config is written next to the database as privacy-lock.toml.

    \b
    Example:
      privacy-lock demo            # ./sns-demo.db and ./privacy-lock.toml
      privacy-lock demo /tmp/try/sns.db
    """
    from privacy_lock.demo import build_demo

    config_path = path.parent / "privacy-lock.toml"
    summary = build_demo(path, config_path, users=users, overwrite=force)
    url = f"sqlite:///{summary.database_path.as_posix()}"
    engine = create_tool_engine(url)
    with translate_errors(url), engine.begin() as conn:
        create_tool_tables(conn)
    engine.dispose()
    click.echo(f"demo database: {summary.database_path}")
    click.echo(f"config:        {summary.config_path}")
    click.echo(
        f"{summary.users} users, {summary.diaries} diaries, {summary.photos} photos; "
        "privacy-lock tables created"
    )
    here = summary.config_path.resolve() == Path("privacy-lock.toml").resolve()
    prefix = "privacy-lock" if here else f"privacy-lock --config {config_path}"
    user = summary.sample_user
    click.echo("\nnext, try:")
    for line in (
        f"{prefix} status {user}",
        f'{prefix} apply {user} --operator you --ticket T-1 --reason "lost access, keep private"',
        f"{prefix} status {user} --items",
        f'{prefix} revert --user {user} --operator you --ticket T-2 --reason "user is back"',
        f"{prefix} requests",
        f"{prefix} approve 1 --operator reviewer",
        f"{prefix} locks --state all",
        f"{prefix} audit verify",
        f"{prefix} audit report --format html --output audit-report.html",
    ):
        click.echo(f"  {line}")


@cli.command()
@click.argument("users", nargs=-1)
@batch_options
@identity_options
@click.option("--kind", "kinds", multiple=True, help="Only this kind (repeatable); default all.")
@click.option("--dry-run", is_flag=True, help="Show exactly what would change; change nothing.")
@pacing_options
@format_option
@click.pass_obj
def apply(app: App, users: tuple[str, ...], kinds: tuple[str, ...], **options: Any) -> None:
    """Make every diary/photo of USER... visible to the owner only, remembering each old value.

    A user who already has an active lock gets it extended with whatever became visible since;
    no stored original is ever overwritten. With --from-file, the whole file is checked first
    and nothing changes if any row is wrong; re-running a file is safe. Users with few items
    are done several to a transaction, each user whole in one.

    \b
    Example:
      privacy-lock apply 42 --operator alice --ticket SUP-1234 \\
          --reason "lost carrier mail; asked to hide, not delete"
      privacy-lock apply 42 43 --kind diary --dry-run
      privacy-lock apply --from-file tickets.csv --operator alice --output result.csv
    """
    run_requests(app, "apply", users, (), kinds, **options)


@cli.command()
@click.argument("lock_ids", nargs=-1, type=int)
@click.option("--user", "users", multiple=True, help="Revert this user's active lock (repeatable).")
@batch_options
@identity_options
@click.option("--dry-run", is_flag=True, help="Show what would be restored; change nothing.")
@pacing_options
@format_option
@click.pass_obj
def revert(app: App, lock_ids: tuple[int, ...], users: tuple[str, ...], **options: Any) -> None:
    """Restore the items of a lock to their exact old values, where nobody changed them since.

    An item changed since the lock is left as it is and reported as a conflict; an item deleted
    since is reported as gone. The snapshot rows stay, marked with what happened to each item.

    \b
    Example:
      privacy-lock revert 7 --operator alice --ticket SUP-1300 --reason "user is back"
      privacy-lock revert --user 42 --dry-run
      privacy-lock revert --from-file returning.csv --operator alice
    """
    run_requests(app, "revert", users, lock_ids, (), **options)


@dataclass
class TrackedRun:
    """A batch's progress display and final statistics, fed by its pacer and its outcomes."""

    mode: batch.Mode
    dry_run: bool
    progress: Progress
    stats: RunStats
    pacer: Pacer

    @classmethod
    def start(cls, conn: Connection, cmap: ContentMap, mode: batch.Mode,
              requests: list[Request], dry_run: bool, quiet: bool, pacer: Pacer) -> TrackedRun:
        """Plan the totals (aggregate queries) and hook the pacer to the display: quiet for
        one small request (or none)."""
        total = batch.planned_items(conn, cmap, mode, requests)
        progress = Progress(total, len(requests), quiet=quiet or len(requests) <= 1 and total
                            < DEFAULT_CHUNK_SIZE)
        stats = RunStats(action=("would be " if dry_run else "")
                         + ("hidden" if mode == "apply" else "restored"))
        pacer.on_note = progress.note
        pacer.on_chunk = lambda user, kind, n: (progress.item_done(user, kind, n),
                                                stats.add_items(kind, n))
        return cls(mode, dry_run, progress, stats, pacer)

    def done(self, outcome: batch.Outcome) -> None:
        """One request finished (its users' items were counted chunk by chunk)."""
        if self.dry_run:  # no chunk is written to count them: count what would change
            for name, counts in outcome.kinds.items():
                items = counts.changed if self.mode == "apply" else counts.restored
                self.progress.item_done(outcome.user or "", name, items)
                self.stats.add_items(name, items)
        self.progress.user_done(outcome.user or "", outcome.status)
        self.stats.add_user(failed=outcome.failed,
                            conflicts=sum(c.conflicts for c in outcome.kinds.values()),
                            gone=sum(c.gone for c in outcome.kinds.values()))

    def finish(self, started: float) -> RunStats:
        self.stats.retries, self.stats.elapsed = self.pacer.retried, time.monotonic() - started
        self.stats.chunks = self.pacer.chunks
        return self.stats


def run_requests(
    app: App, mode: batch.Mode, users: tuple[str, ...], lock_ids: tuple[int, ...],
    kinds: tuple[str, ...], *, from_file: Path | None, output: Path | None,
    operator: str | None, ticket: str | None, reason: str | None, dry_run: bool,
    chunk_size: int, max_chunk_seconds: float | None, sleep: float, pause_file: Path | None,
    lock_timeout: float, retries: int, quiet: bool, fmt: str,
) -> None:
    """Validate every request, run them one by one, print the outcome table and a last line
    that says how the run ended; exit 1 if any request failed."""
    if from_file and (users or lock_ids):
        raise UsageError("give USER/LOCK_ID arguments or --from-file, not both")
    if not from_file and not (users or lock_ids):
        raise UsageError("name at least one USER" if mode == "apply"
                         else "name at least one LOCK_ID or --user USER (or --from-file)")
    if from_file and kinds:
        raise UsageError("--kind applies to USER arguments; in a request file use a kinds column")
    started = time.monotonic()
    with app.connect() as conn:
        cmap = app.content_map(conn)
        if from_file:
            # Each batch of existence checks is a short read of its own (no long snapshot).
            requests = load_requests(
                from_file, mode, default_ticket=ticket, default_reason=reason,
                default_operator=operator, known_kinds=list(cmap.kinds),
                normalize_user=cmap.normalize_user,
                unknown_users=partial(read_once, conn, cmap.unknown_users),
                missing_locks=partial(read_once, conn, batch.missing_locks),
            )
        else:
            requests = argument_requests(conn, cmap, mode, users, lock_ids, kinds,
                                         operator, ticket, reason, dry_run)
        if mode == "revert" and not dry_run and app.settings.policy.revert_requires_approval:
            file_revert_requests(conn, cmap, requests, fmt, output)
            return
        run = TrackedRun.start(conn, cmap, mode, requests, dry_run, quiet,
                               Pacer(chunk_size, sleep, max_chunk_seconds, lock_timeout, retries,
                                     pause_file=pause_file))
        try:
            result = batch.run_batch(conn, cmap, mode, requests, run.pacer, dry_run,
                                     on_done=run.done,
                                     share_chunks=not app.settings.one_user_per_chunk)
        finally:
            run.progress.close()
        if dry_run and app.settings.policy.audit_reads:
            record_views(conn, f"{mode} --dry-run", [
                (Actor.current(o.request.operator, o.request.ticket or None,
                               o.request.reason or None), o.user, o.lock_id)
                for o in result.outcomes if o.user and not o.failed])
    stats = run.finish(started)
    echo_outcomes(fmt, lambda: batch.outcome_rows(result.outcomes, mode),
                  lambda: [o.as_dict() for o in result.outcomes])
    if output:
        retry_file = batch.write_output(output, result.outcomes, mode)
        note(f"results written to {output}")
        if retry_file:
            note(f"failed requests written to {retry_file}: re-run them with "
                 f"`privacy-lock {mode} --from-file {retry_file}`")
    if mode == "revert" and stats.conflicts:
        note("conflicts were left as they are: the item was changed after the lock "
             "(see `status USER --items`)")
    failed = result.failed
    for outcome in failed:
        if outcome.error:
            note(f"privacy-lock: error: {outcome.label}: {outcome.error}")
    if dry_run:
        note(stats.summary_line("dry run, nothing was changed"))
    elif result.interrupted:
        note(stats.summary_line("interrupted") + f"; {len(failed)} of {len(requests)} "
             "requests not finished: re-run the same command to finish them")
    elif failed:
        note(stats.summary_line("finished with failures") + f"; {len(failed)} of "
             f"{len(requests)} requests failed (see the error column)")
    else:
        note(stats.summary_line("done"))
    if failed:
        sys.exit(1)


def read_once(conn: Connection, ask: Callable[[Connection, list[Any]], Any],
              keys: list[Any]) -> Any:
    """``ask(conn, keys)`` in a read-only transaction of its own."""
    with reading(conn):
        return ask(conn, keys)


def argument_requests(
    conn: Connection, cmap: ContentMap, mode: batch.Mode, users: tuple[str, ...],
    lock_ids: tuple[int, ...], kinds: tuple[str, ...], operator: str | None,
    ticket: str | None, reason: str | None, dry_run: bool,
) -> list[Request]:
    """Requests from command-line arguments, checked like a request file's rows."""
    if dry_run:
        operator, ticket, reason = operator or "", ticket or "", reason or ""
    else:
        actor = make_actor(operator, ticket, reason)
        operator, ticket, reason = actor.operator, actor.ticket or "", actor.reason or ""
    cmap.select(kinds)  # unknown kinds are a usage error before anything runs
    subjects = locking.check_users(conn, cmap, users)
    with reading(conn):
        for lock_id in lock_ids:
            locking.find_lock(conn, lock_id)
    made = [Request(0, s, None, ticket, reason, operator, tuple(kinds)) for s in subjects]
    made += [Request(0, None, lock_id, ticket, reason, operator, ()) for lock_id in lock_ids]
    return made


@cli.command()
@click.argument("users", nargs=-1, required=True)
@click.option("--items", is_flag=True, help="Also list every snapshotted item.")
@click.option(
    "--operator", envvar="PRIVACY_LOCK_OPERATOR",
    help="Your name, for the `viewed` event when [policy] audit_reads is on "
    "[env: PRIVACY_LOCK_OPERATOR].",
)
@format_option
@click.pass_obj
def status(
    app: App, users: tuple[str, ...], items: bool, operator: str | None, fmt: str
) -> None:
    """Show a user's lock and how many items are visible, private and snapshotted.

    \b
    Example:
      privacy-lock status 42
      privacy-lock status 42 --items --format csv
    """
    with app.connect() as conn:
        cmap = app.content_map(conn)
        subjects = locking.check_users(conn, cmap, users)
        reports = [locking.user_status(conn, cmap, s, items) for s in subjects]
        if app.settings.policy.audit_reads:
            viewer = Actor.current((operator or "").strip())
            record_views(conn, "status --items" if items else "status", [
                (viewer, r["user"], (r["lock"] or {}).get("lock_id")) for r in reports])
    rows = []
    for report in reports:
        lock = report["lock"] or {}
        for kind in report["kinds"]:
            rows.append({"user": report["user"], "lock": lock.get("lock_id"),
                         "state": lock.get("state", "not locked"), **kind})
    if fmt == "json":
        click.echo(render(rows, fmt, payload=reports))
        return
    click.echo(render(rows, fmt))
    if items:
        item_rows = [{"user": r["user"], **item} for r in reports for item in r["items"]]
        click.echo("")
        click.echo(render(item_rows, fmt, columns=["user", "kind", "item", "original", "state",
                                                   "current"],
                          value_columns=("original", "current")))


def tz_option(func: Any) -> Any:
    """--tz: the zone times are shown in, and bare --since/--until dates are days of."""
    return click.option(
        "--tz", "tz_name", metavar="ZONE", default="UTC", show_default=True,
        help="Show times in this IANA zone (e.g. Asia/Tokyo); bare dates are days there.",
    )(func)


def when_options(what: str) -> Any:
    """--since / --until for a listing of ``what``."""
    def decorate(func: Any) -> Any:
        func = click.option(
            "--until", metavar="DATE",
            help=f"{what} on or before this day (YYYY-MM-DD) or time (YYYY-MM-DDTHH:MM[+09:00]).",
        )(func)
        return click.option(
            "--since", metavar="DATE",
            help=f"{what} on or after this day (YYYY-MM-DD) or time.",
        )(func)
    return decorate


def time_range(since: str | None, until: str | None, tz_name: str) -> tuple[Any, Any, Any]:
    """(zone, since, until-exclusive) as the stored UTC text the filters compare with."""
    zone = reporting.resolve_zone(tz_name)
    since_at = reporting.parse_bound(since, zone, "--since")
    until_before = reporting.parse_bound(until, zone, "--until", end=True)
    reporting.check_range(since_at, until_before)
    return zone, since_at, until_before


@cli.command("locks")
@click.option("--state", type=click.Choice(["active", "reverted", "all"]), default="active",
              show_default=True)
@click.option("--operator", help="Only locks opened by this operator.")
@click.option("--user", help="Only this user's locks.")
@click.option("--ticket", help="Only locks opened under this ticket.")
@when_options("Opened")
@tz_option
@format_option
@click.pass_obj
def locks_command(
    app: App, state: str, operator: str | None, user: str | None, ticket: str | None,
    since: str | None, until: str | None, tz_name: str, fmt: str,
) -> None:
    """List locks with their items, age (days since applied), operator, ticket and dates.

    \b
    Example:
      privacy-lock locks --state all --since 2026-11-01 --format csv
      privacy-lock locks --operator alice --tz Asia/Tokyo
    """
    zone, since_at, until_before = time_range(since, until, tz_name)
    filters = reporting.LockFilters(state, operator, user, ticket, None, since_at, until_before)
    with app.connect() as conn:
        app.require_tables(conn)
        rows = reporting.lock_rows(conn, filters, zone)
    click.echo(render(rows, fmt, columns=reporting.LOCK_COLUMNS))


@cli.group()
def audit() -> None:
    """Check and report on the hash-chained audit trail."""


@audit.command("verify")
@click.option("--expect-head", metavar="HASH",
              help="A head hash published earlier; it must still be in the chain.")
@click.pass_obj
def audit_verify(app: App, expect_head: str | None) -> None:
    """Recompute the audit chain and name the first event that was edited, removed or inserted.

    Prints "N/N events valid" and the head hash to publish (e.g. in the monthly compliance
    record); exits 1 when the chain is broken or no longer contains --expect-head.

    \b
    Example:
      privacy-lock audit verify
      privacy-lock audit verify --expect-head 3f7a...
    """
    with app.connect() as conn:
        app.require_tables(conn)
        result = verify_chain(conn, expect_head)
    if result.ok:
        click.echo(f"{result.valid}/{result.total} events valid")
        when = f", {result.head_time}" if result.head_time else ""
        click.echo(f"head: {result.head_hash} (event {result.head_seq}{when})")
        if result.expect_head_seq is not None:
            click.echo(f"published head found at event {result.expect_head_seq}: nothing "
                       "before it was changed or removed")
        return
    click.echo(f"privacy-lock: BROKEN: {result.problem}", err=True)
    click.echo(f"{result.valid}/{result.total} events valid before the first broken one"
               + (f" (event {result.broken_seq})" if result.broken_seq else ""))
    click.echo(f"last intact head: {result.head_hash} (event {result.head_seq})")
    sys.exit(1)


@audit.command("report")
@when_options("Events")
@tz_option
@click.option("--operator", help="Only events by this operator.")
@click.option("--user", help="Only events about this user (content owner id).")
@click.option("--action", "actions", multiple=True, type=click.Choice(list(ACTIONS)),
              help="Only this action (repeatable).")
@click.option("--ticket", help="Only events under this ticket.")
@click.option("--lock", "lock_id", type=int, help="Only events of this lock id.")
@click.option("--summary", is_flag=True,
              help="Counts per action x operator x day, and active locks by age.")
@click.option("--format", "fmt", type=click.Choice(REPORT_FORMATS), default="table",
              show_default=True, help="Output format (html: one self-contained page).")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the report to this file instead of standard output.")
@click.pass_obj
def audit_report(
    app: App, since: str | None, until: str | None, tz_name: str, operator: str | None,
    user: str | None, actions: tuple[str, ...], ticket: str | None, lock_id: int | None,
    summary: bool, fmt: str, output: Path | None,
) -> None:
    """Who changed whose content, when, under which ticket and reason.

    Every filter applies to every format. Times are stored and compared in UTC and shown in
    --tz; the html page also holds the summary, a chart of applies/reverts per day and the
    result of `audit verify` with the head hash.

    \b
    Example:
      privacy-lock audit report --since 2026-11-01 --until 2026-11-30 --tz Asia/Tokyo
      privacy-lock audit report --user 42 --format csv --output user-42.csv
      privacy-lock audit report --summary --since 2026-11-01
      privacy-lock audit report --format html --output audit-2026-11.html
    """
    zone, since_at, until_before = time_range(since, until, tz_name)
    filters = EventFilters(since_at, until_before, operator, user, actions, ticket, lock_id)
    words = reporting.describe_filters(since=since, until=until, operator=operator, user=user,
                                       action=actions, ticket=ticket, lock=lock_id)
    with app.connect() as conn:
        app.require_tables(conn)
        report = reporting.build_report(
            conn, filters, zone, database=safe_url(app.settings.database_url),
            filter_words=words, keep_events=fmt == "html" or not summary,
            verify=fmt in ("html", "table"),
        )
    if fmt == "html":
        text = render(report.events, fmt, payload=report)
    elif summary:
        text = summary_text(report, fmt)
    elif fmt == "json":
        text = render(report.events, fmt, payload=[reporting.event_json(r)
                                                   for r in report.events])
    elif fmt == "csv":
        text = render(report.events, fmt, columns=reporting.EVENT_COLUMNS)
    else:
        text = render([reporting.table_row(r) for r in report.events], fmt,
                      columns=reporting.EVENT_TABLE_COLUMNS)
    write_or_echo(text, output)
    if output:
        note(f"wrote {output} ({report.event_total} events)")
    if report.verify is not None and not report.verify.ok:
        note(f"warning: the audit chain is BROKEN: {report.verify.problem} "
             "(run `privacy-lock audit verify`)")
    elif report.verify is not None and fmt == "table":
        note(f"{report.event_total} events; chain: {report.verify.valid}/"
             f"{report.verify.total} events valid, head {report.verify.head_hash}")


def summary_text(report: reporting.Report, fmt: str) -> str:
    """The --summary output: counts per action x operator x day, then active locks by age."""
    if fmt == "json":
        return render([], fmt, payload=report.summary_json())
    if fmt == "csv":
        return render(report.counts, fmt, columns=reporting.COUNT_COLUMNS)
    return "\n".join([
        render(report.counts, fmt, columns=reporting.COUNT_COLUMNS), "",
        "active locks by age (days since applied):",
        render(report.ages, fmt, columns=["age", "locks", "oldest_days"]),
    ])


def write_or_echo(text: str, output: Path | None) -> None:
    """Print ``text``, or write it to ``output`` whole (a reader never sees half a report)."""
    if output is None:
        click.echo(text)
        return
    partial = output.with_name(output.name + ".partial")
    try:
        partial.write_text(text + "\n", encoding="utf-8")
        partial.replace(output)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise UsageError(f"cannot write {output}: {exc.strerror or exc}") from None


def file_revert_requests(
    conn: Connection, cmap: ContentMap, requests: list[Request], fmt: str, output: Path | None
) -> None:
    """revert under [policy] revert_requires_approval: file requests, change no content."""
    outcomes = approvals.request_reverts(conn, cmap, requests)
    rows = [o.as_dict() for o in outcomes]
    text = render(rows, fmt, columns=["request", "lock", "user", "status", "requested_by"])
    click.echo(text)
    if output:
        write_or_echo(render(rows, "json" if output.suffix == ".json" else "csv"), output)
        note(f"results written to {output}")
    waiting = [o for o in outcomes if o.request_id is not None]
    if not waiting:
        note("nothing to revert: no active lock was named")
        return
    ids = [o.request_id for o in waiting if o.request_id is not None]
    asked = sorted({o.requested_by for o in waiting if o.requested_by})
    note(f"nothing was changed yet: a revert needs a second operator's approval "
         f"([policy] revert_requires_approval). Someone other than {', '.join(asked)} runs:")
    if len(ids) <= APPROVE_HINT_IDS:
        note(f"  privacy-lock approve {' '.join(map(str, ids))} --operator NAME")
    else:  # a request file of thousands: one line, not one per request
        note("  privacy-lock approve REQUEST_ID... --operator NAME")
        note(f"(pending: {len(ids):,} requests, {id_ranges(ids)}; see `privacy-lock requests`)")


APPROVE_HINT_IDS = 20  # request ids named in the approve hint before it names ranges instead


def id_ranges(ids: list[int]) -> str:
    """Ids as short ranges: [1, 2, 3, 7, 9, 10] -> "1-3, 7, 9-10"."""
    spans: list[list[int]] = []
    for i in sorted(set(ids)):
        if spans and i == spans[-1][1] + 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in spans)


@cli.command()
@click.argument("request_ids", nargs=-1, type=int, required=True)
@click.option(
    "--operator", envvar="PRIVACY_LOCK_OPERATOR",
    help="Your name; it must differ from the requester's [env: PRIVACY_LOCK_OPERATOR].",
)
@click.option("--reason", help="Why you approve (recorded in the revert-approved event).")
@pacing_options
@format_option
@click.pass_obj
def approve(
    app: App, request_ids: tuple[int, ...], operator: str | None, reason: str | None,
    fmt: str, **pacing: Any,
) -> None:
    """Approve pending revert requests and run them (a second operator, not the requester).

    Each revert runs under its request's ticket and reason, as you; several run as one batch,
    where small locks share chunks. An approval by the requester is refused (exit 2) and
    recorded as revert-refused; the other requests still run. Approving again an approved
    request whose run was interrupted finishes it.

    \b
    Example:
      privacy-lock requests
      privacy-lock approve 3 --operator bob
    """
    if not (operator and operator.strip()):
        raise UsageError("--operator required: the approval is audited under your name")
    started = time.monotonic()
    approver = Actor.current(operator.strip(), None, (reason or "").strip() or None)
    pacer = Pacer(pacing["chunk_size"], pacing["sleep"], pacing["max_chunk_seconds"],
                  pacing["lock_timeout"], pacing["retries"], pause_file=pacing["pause_file"])
    with app.connect() as conn:
        cmap = app.content_map(conn)
        approved = approvals.approve_requests(conn, request_ids, approver)
        run = TrackedRun.start(conn, cmap, "revert", approved.requests, False,
                               pacing["quiet"], pacer)
        try:
            done = approvals.run_approved(conn, cmap, approved, pacer,
                                          share_chunks=not app.settings.one_user_per_chunk,
                                          on_done=run.done)
        finally:
            run.progress.close()
    stats = run.finish(started)
    ran = done.approved
    if ran:
        echo_outcomes(
            fmt,
            lambda: [{"request": item.request["request_id"], **row} for item in ran
                     for row in batch.outcome_rows([item.outcome], "revert")],
            lambda: [{"request": a.request["request_id"],
                      "requested_by": a.request["requested_by"],
                      "approved_by": a.request["approved_by"], "resumed": a.resumed,
                      **a.outcome.as_dict()} for a in ran])
    if len(ran) == 1:
        req, outcome = ran[0].request, ran[0].outcome
        note(f"request {req['request_id']}: requested by {req['requested_by']}, approved by "
             f"{req['approved_by']}; lock {req['lock_id']} {outcome.status}")
    elif ran:
        by = sorted({a.request["requested_by"] for a in ran})
        note(f"requests {id_ranges([a.request['request_id'] for a in ran])}: requested "
             f"by {', '.join(by)}, approved by {approver.operator}")
    same = [a.request for a in ran if a.same_os_account]
    if same:
        accounts = sorted({f"{r['requested_os_user']}@{r['requested_host']}" for r in same})
        which = (f"request {same[0]['request_id']} was" if len(same) == 1 else
                 f"requests {id_ranges([r['request_id'] for r in same])} were")
        note(f"note: {which} requested and approved from the same OS account "
             f"({', '.join(accounts)}); recorded in the trail")
    if stats.conflicts:
        note("conflicts were left as they are: the item was changed after the lock "
             "(see `status USER --items`)")
    failed = [a.outcome for a in ran if a.outcome.failed]
    for a in ran:
        if a.outcome.failed and a.outcome.error:
            note(f"privacy-lock: error: request {a.request['request_id']} (lock "
                 f"{a.request['lock_id']}): {a.outcome.error}")
    if len(ran) > 1 or failed:
        if done.interrupted:
            note(stats.summary_line("interrupted") + f"; {len(failed)} of {len(ran)} "
                 "approved requests not finished: approve them again to finish them")
        elif failed:
            note(stats.summary_line("finished with failures") + f"; {len(failed)} of "
                 f"{len(ran)} approved requests failed: approve them again to finish "
                 "them")
        else:
            note(stats.summary_line())
    if done.refused:
        raise UsageError("; ".join(done.refused))
    if failed:
        sys.exit(1)


@cli.command("requests")
@click.option("--state", type=click.Choice(["open", "pending", "approved", "done", "all"]),
              default="open", show_default=True,
              help="open = waiting for approval, or approved but not finished.")
@tz_option
@format_option
@click.pass_obj
def requests_command(app: App, state: str, tz_name: str, fmt: str) -> None:
    """List revert requests waiting for a second operator's approval.

    \b
    Example:
      privacy-lock requests
      privacy-lock requests --state all --format csv
    """
    zone = reporting.resolve_zone(tz_name)
    with app.connect() as conn:
        app.require_tables(conn)
        rows = approvals.list_requests(conn, state, zone)
    columns = ["request", "lock", "user", "state", "age_days", "requested_by",
               "requested_from", "ticket", "reason", "requested_at", "approved_by"]
    click.echo(render(rows, fmt, columns=columns))


@cli.command("sql")
@click.option("--dialect", type=click.Choice(["sqlite", "postgresql", "mysql"]),
              default="sqlite", show_default=True)
@click.option("--grants", "role", metavar="ROLE",
              help="Print the least-privilege GRANTs for this role (PostgreSQL) or user[@host] "
              "(MySQL/MariaDB) instead, with column grants from the content map.")
@click.pass_obj
def sql_command(app: App, dialect: str, role: str | None) -> None:
    """Print the DDL of the tool's tables for a DBA to review (same as sql/DIALECT.sql).

    \b
    Example:
      privacy-lock sql --dialect postgresql > review.sql
      privacy-lock --config sns.toml sql --dialect postgresql --grants privacy_lock_tool
    """
    if role is None:
        click.echo(ddl_for(dialect), nl=False)
        return
    from privacy_lock.roles import grants_sql

    settings = app.settings
    click.echo(grants_sql(dialect, role, settings.content or None, settings.accounts), nl=False)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="privacy-lock")
