"""The command line: parse arguments, call one operation, render. No SQL here."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

import click
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from privacy_lock import __version__, locking
from privacy_lock.audit import Actor, verify_chain
from privacy_lock.config import ContentMap, Settings, bind_content_map, load_settings
from privacy_lock.db import (
    connect_check,
    create_tool_engine,
    first_line,
    safe_url,
    translate_errors,
)
from privacy_lock.errors import PrivacyLockError, UsageError
from privacy_lock.render import FORMATS, render
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
        with conn.begin():
            require_tool_tables(conn)
            return bind_content_map(conn, self.settings)

    @staticmethod
    def require_tables(conn: Connection) -> None:
        with conn.begin():
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
    """--chunk-size / --sleep: how large each transaction is and the pause between them."""
    func = click.option(
        "--sleep", type=click.FloatRange(min=0), default=0.0, show_default=True,
        help="Seconds to pause between chunks (gives a busy site room).",
    )(func)
    func = click.option(
        "--chunk-size", type=click.IntRange(1, locking.MAX_CHUNK_SIZE),
        default=locking.DEFAULT_CHUNK_SIZE, show_default=True,
        help="Items per transaction.",
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
        f"{prefix} locks --state all",
        f"{prefix} audit verify",
    ):
        click.echo(f"  {line}")


@cli.command()
@click.argument("users", nargs=-1)
@identity_options
@click.option("--kind", "kinds", multiple=True, help="Only this kind (repeatable); default all.")
@click.option("--dry-run", is_flag=True, help="Count what would change; change nothing.")
@pacing_options
@format_option
@click.pass_obj
def apply(
    app: App, users: tuple[str, ...], operator: str | None, ticket: str | None,
    reason: str | None, kinds: tuple[str, ...], dry_run: bool, chunk_size: int, sleep: float,
    fmt: str,
) -> None:
    """Make every diary/photo of USER... visible to the owner only, remembering each old value.

    A user who already has an active lock gets it extended with whatever became visible since;
    no stored original is ever overwritten.

    \b
    Example:
      privacy-lock apply 42 --operator alice --ticket SUP-1234 \\
          --reason "lost carrier mail; asked to hide, not delete"
      privacy-lock apply 42 43 --kind diary --dry-run
    """
    if not users:
        raise UsageError("name at least one USER")
    actor = None if dry_run else make_actor(operator, ticket, reason)
    policy = locking.ChunkPolicy(chunk_size, sleep)
    results = []
    with app.connect() as conn:
        cmap = app.content_map(conn)
        selected = cmap.select(kinds)
        subjects = locking.check_users(conn, cmap, users)
        for subject in subjects:
            results.append(locking.apply_lock(
                conn, cmap, subject, selected, actor or Actor.current(""), policy, dry_run
            ))
    print_results(results, fmt, apply_view=True)


@cli.command()
@click.argument("lock_ids", nargs=-1, type=int)
@click.option("--user", "users", multiple=True, help="Revert this user's active lock (repeatable).")
@identity_options
@click.option("--dry-run", is_flag=True, help="Count what would be restored; change nothing.")
@pacing_options
@format_option
@click.pass_obj
def revert(
    app: App, lock_ids: tuple[int, ...], users: tuple[str, ...], operator: str | None,
    ticket: str | None, reason: str | None, dry_run: bool, chunk_size: int, sleep: float,
    fmt: str,
) -> None:
    """Restore the items of a lock to their exact old values, where nobody changed them since.

    An item changed since the lock is left as it is and reported as a conflict; an item deleted
    since is reported as gone. The snapshot rows stay, marked with what happened to each item.

    \b
    Example:
      privacy-lock revert 7 --operator alice --ticket SUP-1300 --reason "user is back"
      privacy-lock revert --user 42 --dry-run
    """
    if not lock_ids and not users:
        raise UsageError("name at least one LOCK_ID or --user USER")
    actor = None if dry_run else make_actor(operator, ticket, reason)
    policy = locking.ChunkPolicy(chunk_size, sleep)
    results: list[locking.UserResult] = []
    with app.connect() as conn:
        cmap = app.content_map(conn)
        subjects = locking.check_users(conn, cmap, users)
        with conn.begin():
            for lock_id in lock_ids:
                locking.find_lock(conn, lock_id)
            targets = list(lock_ids)
            for subject in subjects:
                lock_id = locking.active_lock_id(conn, subject)
                if lock_id is None:
                    results.append(locking.UserResult(subject, None, "not-locked", dry_run))
                else:
                    targets.append(lock_id)
        for lock_id in dict.fromkeys(targets):
            results.append(locking.revert_lock(
                conn, cmap, lock_id, actor or Actor.current(""), policy, dry_run
            ))
    print_results(results, fmt, apply_view=False)


def print_results(results: list[locking.UserResult], fmt: str, apply_view: bool) -> None:
    """One row per user and kind; JSON keeps the nested per-kind counts."""
    counts = ("changed", "already_private") if apply_view else ("restored", "conflicts", "gone")
    rows = []
    for result in results:
        for kind, kind_counts in (result.kinds or {"-": None}).items():
            row = {"user": result.user, "lock": result.lock_id, "status": result.status,
                   "kind": kind}
            for name in counts:
                row[name] = getattr(kind_counts, name) if kind_counts else 0
            rows.append(row)
    click.echo(render(rows, fmt, payload=[r.as_dict() for r in results]))
    if fmt == "table" and any(r.dry_run for r in results):
        note("dry run: nothing was changed")
    if not apply_view and any(c.conflicts for r in results for c in r.kinds.values()):
        note("conflicts were left as they are: the item was changed after the lock "
             "(see `status USER --items`)")


@cli.command()
@click.argument("users", nargs=-1, required=True)
@click.option("--items", is_flag=True, help="Also list every snapshotted item.")
@format_option
@click.pass_obj
def status(app: App, users: tuple[str, ...], items: bool, fmt: str) -> None:
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
                                                   "current"]))


def parse_when(value: str | None, end: bool = False) -> str | None:
    """A --since/--until value (YYYY-MM-DD or ISO time, UTC) as the stored text form.

    A bare --until date includes that whole day.
    """
    if not value:
        return None
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return (day + timedelta(days=1) if end else day).isoformat()
        return datetime.fromisoformat(value.replace("Z", "")).isoformat()
    except ValueError:
        raise UsageError(f"not a date: {value!r} (use YYYY-MM-DD or YYYY-MM-DDTHH:MM)") from None


@cli.command("locks")
@click.option("--state", type=click.Choice(["active", "reverted", "all"]), default="active",
              show_default=True)
@click.option("--operator", help="Only locks opened by this operator.")
@click.option("--since", help="Opened on or after this UTC date (YYYY-MM-DD).")
@click.option("--until", help="Opened on or before this UTC date (YYYY-MM-DD).")
@format_option
@click.pass_obj
def locks_command(
    app: App, state: str, operator: str | None, since: str | None, until: str | None, fmt: str
) -> None:
    """List locks with their items, operator, ticket and dates.

    \b
    Example:
      privacy-lock locks --state all --since 2026-11-01 --format csv
    """
    since_at, until_at = parse_when(since), parse_when(until, end=True)
    with app.connect() as conn:
        app.require_tables(conn)
        rows = locking.list_locks(conn, state, operator, since_at, until_at)
    columns = ["lock_id", "user", "state", "items", "operator", "ticket", "created_at",
               "reverted_at", "reason"]
    click.echo(render(rows, fmt, columns=columns))


@cli.group()
def audit() -> None:
    """Check and report on the hash-chained audit trail."""


@audit.command("verify")
@click.option("--expect-head", help="A head hash published earlier; it must still be in the chain.")
@click.pass_obj
def audit_verify(app: App, expect_head: str | None) -> None:
    """Recompute the audit chain and name the first event that was edited, removed or inserted.

    \b
    Example:
      privacy-lock audit verify
      privacy-lock audit verify --expect-head 3f7a...
    """
    with app.connect() as conn:
        app.require_tables(conn)
        with conn.begin():
            result = verify_chain(conn, expect_head)
    if result.ok:
        click.echo(f"{result.valid}/{result.total} events valid; head {result.head_hash}")
        return
    click.echo(f"BROKEN: {result.problem}", err=True)
    click.echo(f"{result.valid}/{result.total} events valid before it; last good head "
               f"{result.head_hash}")
    sys.exit(1)


@cli.command("sql")
@click.option("--dialect", type=click.Choice(["sqlite", "postgresql", "mysql"]),
              default="sqlite", show_default=True)
def sql_command(dialect: str) -> None:
    """Print the DDL of the tool's tables for a DBA to review (same as sql/DIALECT.sql).

    \b
    Example:
      privacy-lock sql --dialect postgresql > review.sql
    """
    click.echo(ddl_for(dialect), nl=False)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="privacy-lock")
