"""The command line: parse options, call one service function, render, exit. No SQL here.

Every command ends in :meth:`CommandGroup.invoke`, the one place that turns an exception into a
line on stderr and an exit code (:func:`privacy_lock.errors.exit_code`).
"""

from __future__ import annotations

import math
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import click

from privacy_lock import __version__, service
from privacy_lock.anchors import KEY_ENV, MIN_KEY_BYTES
from privacy_lock.audit import ACTIONS, VerifyResult
from privacy_lock.errors import (
    EXPECTED,
    FailuresReported,
    OutputError,
    UsageError,
    error_text,
    exit_code,
)
from privacy_lock.ids import parse_id
from privacy_lock.pacing import DEFAULT_CHUNK_SIZE, DEFAULT_CHUNK_TIME, MAX_CHUNK_SIZE, Pacer
from privacy_lock.progress import Progress
from privacy_lock.render import (
    CSV_RAW_ENV,
    FORMATS,
    REPORT_FORMATS,
    csv_raw,
    echo_outcomes,
    outcome_rows,
    printable,
    render,
)
from privacy_lock.report import LOCK_COLUMNS
from privacy_lock.service import Identity, Target


def note(message: str) -> None:
    """A line for the operator on stderr, so stdout stays clean for csv/json; control
    characters of stored or given text shown escaped."""
    click.echo(printable(message, keep_newlines=True), err=True)


class FiniteFloat(click.FloatRange):
    """A float option within [min, max] that also refuses nan and inf (exit 2, nothing
    changed): ``time.sleep(inf)`` raised only after the first chunk had committed, and nan
    passes every comparison a range check makes. Every float option uses it."""

    name = "finite float"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)


class IdParam(click.ParamType):
    """A lock or request id argument, by the one id rule (:mod:`privacy_lock.ids`): digits
    0-9 within 1..2**63-1, so ``status``-style lookups never overflow a driver."""

    name = "integer"

    def __init__(self, what: str) -> None:
        self.what = what

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_id(str(value), self.what, minimum=1)
        except UsageError as exc:
            self.fail(str(exc), param, ctx)


LOCK_ID, REQUEST_ID = IdParam("lock id"), IdParam("request id")


@dataclass
class App:
    """The global options, and the target they name once a command asks for it."""

    config: str | None
    database_url: str | None
    debug: bool
    audit_key_file: str | None = None
    _target: Target | None = field(default=None, repr=False)

    @property
    def target(self) -> Target:
        """Settings loaded on first use (``demo`` and ``sql`` need none), with the database
        announced on stderr when the command first connects."""
        if self._target is None:
            self._target = Target.load(self.config, self.database_url, note=note,
                                       audit_key_file=self.audit_key_file)
        return self._target


class CommandGroup(click.Group):
    """Turns every expected failure into one line on stderr and its exit code, here only
    (2 = nothing changed). With --debug the traceback is shown too; the exit code stays."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EXPECTED as exc:
            app = ctx.obj if isinstance(ctx.obj, App) else None
            if isinstance(exc, FailuresReported):  # the command has said what failed
                ctx.exit(exit_code(exc))
            if app and app.debug:
                click.echo(traceback.format_exc().rstrip(), err=True)
            where = app._target.url if app and app._target else None
            click.echo(printable(f"privacy-lock: error: {error_text(exc, where)}",
                                 keep_newlines=True), err=True)
            ctx.exit(exit_code(exc))


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
        click.option("--chunk-time", "--max-chunk-seconds", "chunk_time",
                     type=FiniteFloat(min=0), default=DEFAULT_CHUNK_TIME, show_default=True,
                     envvar="PRIVACY_LOCK_CHUNK_TIME",
                     help="Seconds each transaction should take: chunks start small and are "
                     "sized from the measured rate. It is the longest a site write waits "
                     "behind the tool: set it below the site's own write timeout (0.05 for a "
                     "site that must never stall, 0.5 for a night run on an idle database). "
                     "0: every chunk --chunk-size items. [env: PRIVACY_LOCK_CHUNK_TIME]"),
        click.option("--chunk-size", type=click.IntRange(1, MAX_CHUNK_SIZE),
                     default=DEFAULT_CHUNK_SIZE, show_default=True,
                     help="The most items one transaction holds (several small users may "
                     "share one)."),
        click.option("--sleep", type=FiniteFloat(min=0), default=0.0, show_default=True,
                     help="Seconds to pause between chunks (gives a busy site room)."),
        click.option("--pause-file", type=click.Path(dir_okay=False, path_type=Path),
                     help="While this file exists, wait between chunks."),
        click.option("--lock-timeout", type=FiniteFloat(min=0.001), default=2.0,
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
@click.option(
    "--audit-key-file", type=click.Path(), envvar=KEY_ENV,
    help=f"Key (>= {MIN_KEY_BYTES} bytes, kept off the database server) that MACs every audit "
    f"event and checkpoint [env: {KEY_ENV}; default: the config's [audit] key_file].",
)
@click.option("--debug", is_flag=True,
              help="Also show the traceback of an error (the exit code stays the same).")
@click.option(
    "--csv-raw", "csv_raw_output", is_flag=True, envvar=CSV_RAW_ENV,
    help="CSV output keeps text exactly as stored, for programs that read it; by default a "
    "field a spreadsheet would run as a formula (= + - @ first) gets a leading ' "
    f"[env: {CSV_RAW_ENV}=1].",
)
@click.version_option(__version__, prog_name="privacy-lock")
@click.pass_context
def cli(ctx: click.Context, config: str | None, database_url: str | None,
        audit_key_file: str | None, debug: bool, csv_raw_output: bool) -> None:
    """Hide a person's diaries and photos (owner only), exactly reversibly, with an audit trail.

    \b
    Try it:
      privacy-lock demo
      privacy-lock apply 42 --operator alice --ticket T-1 --reason "lost login"
      privacy-lock status 42
      privacy-lock revert --user 42 --operator alice --ticket T-2 --reason "came back"
    """
    ctx.obj = App(config, database_url, debug, audit_key_file)
    if csv_raw_output:  # for every CSV the command writes, until it ends
        ctx.with_resource(csv_raw())


@cli.command()
@click.pass_obj
def init(app: App) -> None:
    """Create the tool's own tables in the target database (safe to run again).

    \b
    Example:
      privacy-lock --database-url postgresql://support@db/sns init
    """
    result = service.init(app.target)
    if result.created:
        click.echo(f"created: {', '.join(result.created)}")
    elif not result.policy_seeded:
        click.echo("all privacy-lock tables already exist; nothing to do")
    if result.policy_seeded:
        click.echo(f"policy stored: {', '.join(result.policy_seeded)} (see `privacy-lock "
                   "policy show`)")
    if result.index_suggestions:
        note("note: these content tables have no (owner, id) index; each chunk would scan "
             "the table. Ask a DBA to review and create:")
        for line in result.index_suggestions:
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
    result = service.demo(path, force=force, users=users)
    summary, config_path = result.summary, result.config_path
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
    result = service.apply(app.target, users, kinds=kinds, **run_options(options))
    show_run(result, options["fmt"])


@cli.command()
@click.argument("lock_ids", nargs=-1, type=LOCK_ID)
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
    result = service.revert(app.target, lock_ids, users, **run_options(options))
    if isinstance(result, service.FiledRequests):
        show_filed(result, options["fmt"])
    else:
        show_run(result, options["fmt"])


def make_pacer(chunk_size: int, chunk_time: float, sleep: float,
               pause_file: Path | None, lock_timeout: float, retries: int) -> Pacer:
    """The pacer the --chunk-time ... --retries options describe."""
    return Pacer(chunk_size, sleep, chunk_time, lock_timeout, retries, pause_file=pause_file)


def progress_factory(quiet: bool) -> service.ProgressFactory:
    """Progress on stderr; quiet when asked, and for one small request (or none)."""
    def start(items: int, requests: int) -> Progress:
        return Progress(items, requests,
                        quiet=quiet or requests <= 1 and items < DEFAULT_CHUNK_SIZE)
    return start


def run_options(options: dict[str, Any]) -> dict[str, Any]:
    """apply's and revert's options as the service takes them."""
    return {
        "from_file": options["from_file"], "output": options["output"],
        "identity": Identity(options["operator"], options["ticket"], options["reason"]),
        "dry_run": options["dry_run"],
        "pacer": make_pacer(options["chunk_size"], options["chunk_time"],
                            options["sleep"], options["pause_file"], options["lock_timeout"],
                            options["retries"]),
        "progress": progress_factory(options["quiet"]),
    }


def show_run(result: service.RunResult, fmt: str) -> None:
    """Print the outcome table, where the results went, every failure, and a last line that
    says how the run ended; exit 1 if any request failed."""
    mode = result.mode
    echo_outcomes(fmt, lambda: outcome_rows(result.outcomes, mode),
                  lambda: [o.as_dict() for o in result.outcomes])
    if result.output:
        note(f"results written to {result.output}")
        if result.retry_file:
            note(f"failed requests written to {result.retry_file}: re-run them with "
                 f"`privacy-lock {mode} --from-file {result.retry_file}`")
    stats, failed = result.stats, result.failed
    if mode == "revert" and stats.conflicts:
        note("conflicts were left as they are: the item was changed after the lock "
             "(see `status USER --items`)")
    for outcome in failed:
        if outcome.error:
            note(f"privacy-lock: error: {outcome.label}: {outcome.error}")
    ending, total = result.ending, len(result.outcomes)
    if ending is service.Ending.INTERRUPTED:
        note(stats.summary_line(ending) + f"; {len(failed)} of {total} requests not finished: "
             "re-run the same command to finish them")
    elif ending is service.Ending.FAILURES:
        note(stats.summary_line(ending) + f"; {len(failed)} of {total} requests failed (see "
             "the error column)")
    else:
        note(stats.summary_line(ending))
    finish(failed=bool(failed), output_error=result.output_error)


def finish(*, failed: bool, output_error: str | None = None) -> None:
    """End a command that has shown its results: a result file that could not be written is
    an error of its own; failed requests exit 1 without another message."""
    if output_error:
        raise OutputError(output_error)
    if failed:
        raise FailuresReported()


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
    reports = service.status(app.target, users, items=items, operator=operator)
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
    rows = service.locks(app.target, state=state, operator=operator, user=user, ticket=ticket,
                         since=since, until=until, tz=tz_name)
    click.echo(render(rows, fmt, columns=LOCK_COLUMNS))


@cli.group()
def audit() -> None:
    """Check and report on the hash-chained audit trail."""


@audit.command("verify")
@click.option("--expect-head", metavar="HASH",
              help="A head hash published earlier; it must still be in the chain.")
@click.option("--checkpoints", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="A file of `audit checkpoint` lines; the trail must hold every one.")
@click.pass_obj
def audit_verify(app: App, expect_head: str | None, checkpoints: Path | None) -> None:
    """Recompute the audit chain and name the first event that was edited, removed or inserted.

    Prints "N/N events valid" and the head hash to publish (e.g. in the monthly compliance
    record); exits 1 when the chain is broken, an event's time goes backwards, a MAC does not
    match the audit key, or a published head or checkpoint no longer holds.

    \b
    Example:
      privacy-lock audit verify
      privacy-lock audit verify --expect-head 3f7a...
      privacy-lock --audit-key-file /etc/privacy-lock/audit.key audit verify \\
          --checkpoints checkpoints.txt
    """
    result = service.audit_verify(app.target, expect_head, checkpoints)
    if not result.ok:
        show_broken(result)
    click.echo(f"{result.valid}/{result.total} events valid")
    when = f", {result.head_time}" if result.head_time else ""
    click.echo(f"head: {result.head_hash} (event {result.head_seq}{when})")
    for line in anchor_lines(result, checkpoints):
        click.echo(line)
    if result.expect_head_seq is not None:
        click.echo(f"published head found at event {result.expect_head_seq}: nothing "
                   "before it was changed or removed")


def show_broken(result: VerifyResult) -> NoReturn:
    """Say where the trail is broken (a ``VerifyResult``) and exit 1."""
    click.echo(f"privacy-lock: BROKEN: {result.problem}", err=True)
    if result.kind == "sealed":
        click.echo(f"{result.valid}/{result.total} events valid, but the rows they sealed "
                   "were changed since")
        click.echo(f"head: {result.head_hash} (event {result.head_seq})")
        raise FailuresReported("sealed rows were changed")
    click.echo(f"{result.valid}/{result.total} events valid"
               + (f" before the first broken one (event {result.broken_seq})"
                  if result.broken_seq else ""))
    click.echo(f"last intact head: {result.head_hash} (event {result.head_seq})")
    raise FailuresReported("the audit chain is broken")


def anchor_lines(result: VerifyResult, checkpoints: Path | None = None) -> list[str]:
    """What an intact ``VerifyResult`` says about MACs and checkpoints (nothing on a trail
    that never had a key, checked without checkpoints)."""
    lines = []
    before = (f"; {result.unkeyed} unkeyed event(s) before them (written before the key "
              "was introduced)" if result.unkeyed else "")
    if result.key_id and result.keyed:
        lines.append(f"MACs: {result.keyed} event(s) keyed and valid (key id {result.key_id}, "
                     f"from event {result.first_keyed}){before}")
    elif result.keyed:
        lines.append(f"checked hashes only: {result.keyed} event(s) carry MACs (from event "
                     f"{result.first_keyed}); checking them needs the key (--audit-key-file, "
                     f"{KEY_ENV} or [audit] key_file)")
    if result.other_key:
        lines.append(f"{result.other_key} event(s) carry MACs under an earlier key: not "
                     "checked")
    if checkpoints is not None:
        lines.append(f"checkpoints: {result.checkpoints} in {checkpoints} hold")
    if result.seals:
        lines.append(f"seals: {result.seals} sealed records (locks, snapshots, requests) "
                     "match the tables"
                     + (f" ({result.unsealed_locks} older locks carry no seals)"
                        if result.unsealed_locks else ""))
    lines += [f"note: {text}" for text in result.notes]
    return lines


@audit.command("checkpoint")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Append the line to this file (created if missing) instead of printing it.")
@click.pass_obj
def audit_checkpoint(app: App, output: Path | None) -> None:
    """Verify the trail and print a checkpoint of its head, for auditors to keep elsewhere.

    One line with the head's event number, hash and time (and, with an audit key, the line's
    own MAC). Keep the lines outside the database (a WORM store, the review's minutes); later,
    `audit verify --checkpoints FILE` shows the trail still holds every one. A broken trail
    gets no checkpoint (exit 1).

    \b
    Example:
      privacy-lock audit checkpoint
      privacy-lock audit checkpoint --output /mnt/worm/privacy-lock-checkpoints.txt
    """
    result = service.audit_checkpoint(app.target, output)
    if result.line is None:
        show_broken(result.verify)
    if result.output:
        note(f"checkpoint of event {result.verify.head_seq} appended to {result.output}")
    else:
        click.echo(result.line)


@audit.command("report")
@when_options("Events")
@tz_option
@click.option("--operator", help="Only events by this operator.")
@click.option("--user", help="Only events about this user (content owner id).")
@click.option("--action", "actions", multiple=True, type=click.Choice(list(ACTIONS)),
              help="Only this action (repeatable).")
@click.option("--ticket", help="Only events under this ticket.")
@click.option("--lock", "lock_id", type=LOCK_ID, help="Only events of this lock id.")
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
    result = service.audit_report(
        app.target, since=since, until=until, tz=tz_name, operator=operator, user=user,
        actions=actions, ticket=ticket, lock_id=lock_id, summary=summary, fmt=fmt,
        output_path=output)
    report = result.report
    if result.output is None:
        click.echo(result.text)
    if result.output:
        note(f"wrote {result.output} ({report.event_total} events)")
    if report.verify is not None and not report.verify.ok:
        note(f"warning: the audit chain is BROKEN: {report.verify.problem} "
             "(run `privacy-lock audit verify`)")
    elif report.verify is not None and fmt == "table":
        note(f"{report.event_total} events; chain: {report.verify.valid}/"
             f"{report.verify.total} events valid, head {report.verify.head_hash}")


def show_filed(result: service.FiledRequests, fmt: str) -> None:
    """revert under [policy] revert_requires_approval: the requests filed, and who runs them."""
    rows = [o.as_dict() for o in result.outcomes]
    click.echo(render(rows, fmt, columns=["request", "lock", "user", "status", "requested_by"]))
    if result.output:
        note(f"results written to {result.output}")
    waiting = result.waiting
    if not waiting:
        note("nothing to revert: no active lock was named")
    else:
        ids = [o.request_id for o in waiting if o.request_id is not None]
        asked = sorted({o.requested_by for o in waiting if o.requested_by})
        note(f"nothing was changed yet: a revert needs a second operator's approval "
             f"([policy] revert_requires_approval). Someone other than {', '.join(asked)} "
             "runs:")
        if len(ids) <= APPROVE_HINT_IDS:
            note(f"  privacy-lock approve {' '.join(map(str, ids))} --operator NAME")
        else:  # a request file of thousands: one line, not one per request
            note("  privacy-lock approve REQUEST_ID... --operator NAME")
            note(f"(pending: {len(ids):,} requests, {id_ranges(ids)}; see `privacy-lock "
                 "requests`)")
    finish(failed=False, output_error=result.output_error)


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
@click.argument("request_ids", nargs=-1, type=REQUEST_ID, required=True)
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
    fmt: str, quiet: bool, **pacing: Any,
) -> None:
    """Approve pending revert requests and run them (a second operator, not the requester).

    Each revert runs under its request's ticket and reason, as you; several run as one batch,
    where small locks share chunks. If you filed any of the requests named, the approval is
    refused (exit 2) and recorded as revert-refused, and none of them runs. Approving again an
    approved request whose run was interrupted finishes it.

    \b
    Example:
      privacy-lock requests
      privacy-lock approve 3 --operator bob
    """
    result = service.approve(app.target, request_ids, operator=operator, reason=reason,
                             pacer=make_pacer(**pacing), progress=progress_factory(quiet))
    show_approved(result, fmt)


def show_approved(result: service.ApproveResult, fmt: str) -> None:
    """The reverts approve ran, what to know about them, and a last line for a batch."""
    ran, stats = result.approved, result.stats
    echo_outcomes(
        fmt,
        lambda: [{"request": item.request["request_id"], **row} for item in ran
                 for row in outcome_rows([item.outcome], "revert")],
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
             f"by {', '.join(by)}, approved by {result.approver.operator}")
    for line in result.finished_meanwhile:
        note(f"note: {line}; not run again")
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
    failed = result.failed
    for a in failed:
        if a.outcome.error:
            note(f"privacy-lock: error: request {a.request['request_id']} (lock "
                 f"{a.request['lock_id']}): {a.outcome.error}")
    if len(ran) > 1 or failed:
        if result.interrupted:
            note(stats.summary_line(service.Ending.INTERRUPTED) + f"; {len(failed)} of "
                 f"{len(ran)} approved requests not finished: approve them again to finish "
                 "them")
        elif failed:
            note(stats.summary_line(service.Ending.FAILURES) + f"; {len(failed)} of "
                 f"{len(ran)} approved requests failed: approve them again to finish them")
        else:
            note(stats.summary_line())
    finish(failed=bool(failed))


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
    rows = service.requests(app.target, state=state, tz=tz_name)
    columns = ["request", "lock", "user", "state", "age_days", "requested_by",
               "requested_from", "ticket", "reason", "requested_at", "approved_by"]
    click.echo(render(rows, fmt, columns=columns))


@cli.group("policy")
def policy_group() -> None:
    """The rules stored in the database (the two-person rule), not in your config."""


@policy_group.command("show")
@format_option
@click.pass_obj
def policy_show(app: App, fmt: str) -> None:
    """Show the stored policy: each rule, its value, who set it and when.

    A rule that was never stored has its secure default. The config's [policy] is shown
    beside it: it is only read by `init`, to seed rules not stored yet.

    \b
    Example:
      privacy-lock policy show
    """
    rows = service.policy_show(app.target)
    click.echo(render(rows, fmt, columns=["rule", "value", "source", "set_by", "set_at",
                                          "config"]))


@policy_group.command("set")
@click.argument("rule")
@click.argument("value")
@identity_options
@click.pass_obj
def policy_set(app: App, rule: str, value: str, operator: str | None, ticket: str | None,
               reason: str | None) -> None:
    """Change a stored rule (audited as policy-changed, in the same transaction).

    Rules: revert_requires_approval (true | false) and approval (distinct-names |
    distinct-accounts: the approver must also use another OS account and database login).
    The tool's least-privilege role can only read the policy: run this with the tables'
    owner's login, as init is (docs/DBA.md).

    \b
    Example:
      privacy-lock policy set approval distinct-accounts --operator carol \\
          --ticket SEC-12 --reason "approvers have their own logins now"
    """
    change = service.policy_set(app.target, rule, value, Identity(operator, ticket, reason))
    if change.changed:
        click.echo(f"policy {change.rule}: {change.previous} -> {change.value} "
                   "(recorded as policy-changed)")
    else:
        click.echo(f"policy {change.rule} is already {change.value}; nothing was changed")


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
    settings = app.target.settings if role is not None else None
    click.echo(service.sql(dialect, role, settings), nl=False)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="privacy-lock")
