"""The command line: parse options, call one service function, render, exit. No SQL here.

Every command ends in :meth:`CommandGroup.invoke`, the one place that turns an exception into a
line on stderr and an exit code (:func:`privacy_lock.errors.exit_code`).
"""

from __future__ import annotations

import io
import math
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import click
from click.core import ParameterSource

from privacy_lock import __version__, service
from privacy_lock.anchors import KEY_ENV, MIN_KEY_BYTES
from privacy_lock.approvals import id_ranges
from privacy_lock.audit import ACTIONS, VerifyResult
from privacy_lock.errors import (
    EXPECTED,
    FailuresReported,
    Interrupted,
    OutputError,
    UsageError,
    error_text,
    exit_code,
)
from privacy_lock.ids import parse_id, parse_id_ranges
from privacy_lock.pacing import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_CHUNK_TIME,
    MAX_CHUNK_SIZE,
    Pacer,
    default_chunk_size,
)
from privacy_lock.progress import Progress
from privacy_lock.render import (
    CSV_RAW_ENV,
    FAILURES_LISTED,
    FORMATS,
    REPORT_FORMATS,
    Listing,
    View,
    check_fields,
    csv_raw,
    echo_listing,
    echo_outcomes,
    outcome_rows,
    parse_fields,
    printable,
    render,
)
from privacy_lock.report import EVENT_COLUMNS, LOCK_COLUMNS, resolve_zone
from privacy_lock.service import Identity, Target
from privacy_lock.stored_text import unicode_problem
from privacy_lock.vocabulary import utc_now


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


LOCK_ID = IdParam("lock id")


identity_check_option = click.option(
    "--identity-check", "identity_check", type=IdParam("audit event"), metavar="EVENT",
    help="The passed identity-verdict event (verify-identity) this change is made on; "
    "recorded in the change's events.")


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


# Click 8.2+ raises this usage error to show a group's help when it is run without a command.
_NO_ARGS_IS_HELP: Any = getattr(click.exceptions, "NoArgsIsHelpError", ())


class ArgumentError(click.ClickException):
    """A Click usage error (an unknown option, a bad value, a missing argument) shown as every
    other error is, ``privacy-lock: error: ...`` on one line, with the same exit code 2."""

    exit_code = 2

    def __init__(self, error: click.UsageError) -> None:
        super().__init__(error.format_message())
        self.ctx = error.ctx

    def show(self, file: Any = None) -> None:
        message = " ".join(self.format_message().split())  # Click's "Did you mean" is a line
        command = self.ctx.command_path.partition(" ")[2] if self.ctx else ""
        where = f"{command}: " if command else ""
        hint = f" (see `{self.ctx.command_path} --help`)" if self.ctx else ""
        click.echo(printable(f"privacy-lock: error: {where}{message}{hint}"), err=True)
def check_arguments(ctx: click.Context) -> None:
    """A usage error naming the option, argument or environment variable whose value is not
    valid text (a byte that is not UTF-8: Python hands it over as a lone surrogate, which no
    database stores and no terminal prints). Paths too: every one is printed somewhere."""
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        for one in value if isinstance(value, tuple | list) else (value,):
            if not isinstance(one, str | Path) or not (found := unicode_problem(str(one))):
                continue
            source = ctx.get_parameter_source(param.name or "")
            if source is ParameterSource.ENVIRONMENT and param.envvar:
                envvar = param.envvar if isinstance(param.envvar, str) else param.envvar[0]
                where = f"the environment variable {envvar}"
            elif isinstance(param, click.Option):
                where = max(param.opts, key=len)
            else:
                where = f"the argument {param.human_readable_name}"
            raise UsageError(f"{where} {found}; nothing was changed")


class CheckedCommand(click.Command):
    """A command whose text arguments are checked (:func:`check_arguments`) before it runs."""

    def invoke(self, ctx: click.Context) -> Any:
        check_arguments(ctx)
        return super().invoke(ctx)


class CommandGroup(click.Group):
    """Turns every expected failure into one line on stderr and its exit code, here only
    (2 = nothing changed). With --debug the traceback is shown too; the exit code stays.
    Click's own usage errors get the same one-line form (:class:`ArgumentError`); its
    commands and groups check their text arguments before they run."""

    command_class = CheckedCommand
    group_class = type  # subgroups (audit, policy) are CommandGroups too

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except _NO_ARGS_IS_HELP:
            raise  # `privacy-lock` alone: Click shows the help
        except click.UsageError as exc:
            raise ArgumentError(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            check_arguments(ctx)
            return super().invoke(ctx)
        except _NO_ARGS_IS_HELP:
            raise  # `privacy-lock audit` alone: Click shows the help
        except click.UsageError as exc:
            raise ArgumentError(exc) from None
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
    "--format", "fmt", type=click.Choice(FORMATS[:3]), default="table", show_default=True,
    help="Output format.",
)

# The columns --fields may name, per command that prints rows.
APPLY_FIELDS = ["line", "user", "lock", "status", "kind", "changed", "already_private", "error"]
REVERT_FIELDS = ["line", "user", "lock", "status", "kind", "restored", "conflicts", "gone",
                 "error", "request", "requested_by"]
APPROVE_FIELDS = ["request", "user", "lock", "status", "kind", "restored", "conflicts", "gone",
                  "error"]
STATUS_FIELDS = ["row", "user", "lock", "state", "kind", "visible", "private", "snapshots",
                 "pending", "restored", "conflicts", "gone", "item", "original", "item_state",
                 "current"]
REQUEST_FIELDS = ["request", "lock", "user", "state", "age_days", "requested_by",
                  "requested_from", "ticket", "reason", "requested_at", "approved_by"]
_VIEW = "privacy_lock.view"


def listing_options(what: str, fields: list[str], formats: tuple[str, ...] = FORMATS) -> Any:
    """--format, --fields and --wide, the same on every command that prints rows. --fields is
    checked against ``fields`` while the options are parsed, before anything runs (exit 2)."""
    def keep_fields(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        try:
            ctx.meta.setdefault(_VIEW, {})["fields"] = check_fields(
                parse_fields(value), fields, what)
        except UsageError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None

    def keep_wide(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        ctx.meta.setdefault(_VIEW, {})["wide"] = value

    def decorate(func: Any) -> Any:
        func = click.option(
            "--wide", is_flag=True, expose_value=False, callback=keep_wide,
            help="Tables show every column in full (by default they fit the terminal, "
            "or 120 columns).")(func)
        func = click.option(
            "--fields", metavar="FIELD,...", expose_value=False, callback=keep_fields,
            help=f"Only these columns, in this order: {', '.join(fields)}.")(func)
        return click.option(
            "--format", "fmt", type=click.Choice(formats), default="table", show_default=True,
            help="Output format (ndjson: one JSON object a line; ids: the ids on one line; "
            "count: how many).")(func)
    return decorate


def view_of(fmt: str) -> View:
    """The --format / --fields / --wide of the command being run."""
    ctx = click.get_current_context(silent=True)
    asked = ctx.meta.get(_VIEW, {}) if ctx is not None else {}
    return View(fmt, asked.get("fields", ()), asked.get("wide", False))


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
                     help="The most items one transaction holds (several small users may "
                     f"share one) [default: {MAX_CHUNK_SIZE:,} when sized by --chunk-time, "
                     f"{DEFAULT_CHUNK_SIZE:,} with --chunk-time 0]."),
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
    """--from-file / --encoding / --delimiter / --output, shared by apply and revert."""
    func = click.option(
        "--delimiter", metavar="CHAR",
        help="Column separator of a CSV request file: one character, or 'tab' [default: tab "
        "for .tsv, else ',']",
    )(func)
    func = click.option(
        "--encoding", metavar="NAME",
        help="Encoding of a CSV/TSV request file: utf-8 or cp932 (shift_jis, Excel's 'CSV' "
        "in Japan) [default: UTF-8 with or without BOM, else CP932 if the file is valid CP932].",
    )(func)
    func = click.option(
        "--output", type=click.Path(dir_okay=False, path_type=Path),
        help="Also write the per-request results here (.json or .csv); failed requests go to "
        "NAME.failed.csv, ready for --from-file.",
    )(func)
    func = click.option(
        "--from-file", type=click.Path(dir_okay=False, path_type=Path),
        help="Request file (CSV or TSV with a header, or JSON): one request per row.",
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
        note("note: these indexes are missing (a content table without its (owner, id) "
             "index makes each chunk scan it; `find` without its trigram indexes scans the "
             "searched columns). Ask a DBA to review and create:")
        for line in result.index_suggestions:
            note(f"  {line}")


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path), default="sns-demo.db")
@click.option("--force", is_flag=True, help="Rebuild even if the files exist.")
@click.option("--users", type=click.IntRange(1, 100_000), default=200, show_default=True,
              help="How many demo users to create, each with diaries and photos.")
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
        f"{summary.users:,} users, {summary.diaries:,} diaries, {summary.photos:,} photos; "
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
@identity_check_option
@pacing_options
@listing_options("apply", APPLY_FIELDS)
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
    started = utc_now()
    result = service.apply(app.target, users, kinds=kinds, **run_options(options))
    show_run(result, options["fmt"], started)


@cli.command()
@click.argument("lock_ids", nargs=-1, type=LOCK_ID)
@click.option("--user", "users", multiple=True, help="Revert this user's active lock (repeatable).")
@batch_options
@identity_options
@click.option("--dry-run", is_flag=True, help="Show what would be restored; change nothing.")
@identity_check_option
@pacing_options
@listing_options("revert", REVERT_FIELDS)
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
    started = utc_now()
    result = service.revert(app.target, lock_ids, users, **run_options(options))
    if isinstance(result, service.FiledRequests):
        show_filed(result, options["fmt"])
    else:
        show_run(result, options["fmt"], started)


def make_pacer(chunk_size: int | None, chunk_time: float, sleep: float,
               pause_file: Path | None, lock_timeout: float, retries: int) -> Pacer:
    """The pacer the --chunk-time ... --retries options describe."""
    return Pacer(chunk_size or default_chunk_size(chunk_time), sleep, chunk_time, lock_timeout,
                 retries, pause_file=pause_file)


def progress_factory(quiet: bool) -> service.ProgressFactory:
    """Progress on stderr; quiet when asked (then the items are not even counted: on 8,000
    spread users that read took 0.3 s of a 3.7 s run), and for one small request (or none)."""
    def start(count_items: Callable[[], int], requests: int) -> Progress:
        if quiet:
            return Progress(0, requests, quiet=True)
        items = count_items()
        return Progress(items, requests, quiet=requests <= 1 and items < DEFAULT_CHUNK_SIZE)
    return start


def run_options(options: dict[str, Any]) -> dict[str, Any]:
    """apply's and revert's options as the service takes them."""
    return {
        "from_file": options["from_file"], "output": options["output"],
        "encoding": options["encoding"], "delimiter": options["delimiter"],
        "identity": Identity(options["operator"], options["ticket"], options["reason"]),
        "dry_run": options["dry_run"],
        "pacer": make_pacer(options["chunk_size"], options["chunk_time"],
                            options["sleep"], options["pause_file"], options["lock_timeout"],
                            options["retries"]),
        "progress": progress_factory(options["quiet"]),
        "identity_check": options["identity_check"],
    }


def to_stdout(write: Callable[[], object]) -> str | None:
    """Run ``write`` (results for standard output); when the reader closes the pipe early
    (``| head -1``, a ``| tee`` killed by the same Ctrl-C) or Ctrl-C comes while it writes,
    stop writing there and say why, so that the caller still prints its summary on stderr
    (the results file was written before). None when everything was written."""
    try:
        write()
        sys.stdout.flush()
        return None
    except BrokenPipeError:
        try:  # nothing more can go there; keep the interpreter's last flush from failing
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, io.UnsupportedOperation):
            pass
        return "standard output was closed before all the results were written"
    except KeyboardInterrupt:
        return "Ctrl-C while the results were written to standard output"


def full_table_hint(output: Path | None, action: str, started: str, dry_run: bool,
                    *, has_output: bool = True) -> str:
    """Where the full table of a run printed as a summary is (or how to get it): the
    --output file, else the run's own events in the audit trail (a dry run has none)."""
    if output:
        return f"the full table is in {output}"
    if dry_run:
        return "run it again with --output FILE (.csv .json .ndjson .tsv) for the full table"
    first = "--output FILE next time; " if has_output else ""
    return (f"the full table: {first}this run's events: privacy-lock audit report --action "
            f"{action} --since {started} --format csv")


def show_run(result: service.RunResult, fmt: str, started: str = "") -> None:
    """Print the outcome table (a summary when it is longer than a screen), where the results
    went, the failures, and a last line that says how the run ended; exit 1 if any request
    failed or the run or its output was cut."""
    mode = result.mode
    summarized = False

    def write() -> None:
        nonlocal summarized
        summarized = echo_outcomes(
            view_of(fmt), lambda: outcome_rows(result.outcomes, mode),
            lambda: [o.as_dict() for o in result.outcomes],
            columns=APPLY_FIELDS if mode == "apply" else REVERT_FIELDS,
            full_hint=full_table_hint(result.output, mode, started, result.dry_run))

    cut = to_stdout(write)
    if result.output:
        note(f"results written to {result.output}")
        if result.retry_file:
            note(f"failed requests written to {result.retry_file}: re-run them with "
                 f"`privacy-lock {mode} --from-file {result.retry_file}`")
    stats, failed = result.stats, result.failed
    if mode == "revert" and stats.conflicts:
        note("conflicts were left as they are: the item was changed after the lock "
             "(see `status USER --items`)")
    erred = [o for o in failed if o.error]
    for outcome in erred[:FAILURES_LISTED] if summarized else erred:
        note(f"privacy-lock: error: {outcome.label}: {outcome.error}")
    if summarized and len(erred) > FAILURES_LISTED:
        note(f"privacy-lock: error: ... and {len(erred) - FAILURES_LISTED:,} more failed "
             "requests (listed in the result file)")
    ending, total = result.ending, len(result.outcomes)
    if ending is service.Ending.INTERRUPTED:
        note(stats.summary_line(ending) + f"; {len(failed)} of {total} requests not finished: "
             "re-run the same command to finish them")
    elif ending is service.Ending.FAILURES:
        note(stats.summary_line(ending) + f"; {len(failed)} of {total} requests failed (see "
             "the error column)")
    else:
        note(stats.summary_line(ending))
    finish(failed=bool(failed) or result.interrupted, output_error=result.output_error,
           cut=cut, output=result.output)


def finish(*, failed: bool, output_error: str | None = None, cut: str | None = None,
           output: Path | None = None) -> None:
    """End a command that has shown its results: a result file that could not be written is
    an error of its own, and so is standard output ``cut`` short (:func:`to_stdout`); failed
    or interrupted requests exit 1 without another message."""
    if output_error:
        raise OutputError(output_error)
    if cut:
        where = f"; {output} holds them all" if output else ""
        raise Interrupted(f"{cut}{where}")
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
@listing_options("status", STATUS_FIELDS)
@click.pass_obj
def status(
    app: App, users: tuple[str, ...], items: bool, operator: str | None, fmt: str
) -> None:
    """Show a user's lock and how many items are visible, private and snapshotted.

    With --items, a table shows two tables (counts per kind, then the items); csv, ndjson
    and --fields give one table whose `row` column says which (`kind` or `item`).

    \b
    Example:
      privacy-lock status 42
      privacy-lock status 42 --items --format csv
    """
    view = view_of(fmt)
    reports = service.status(app.target, users, items=items, operator=operator)
    rows: list[dict[str, Any]] = []
    item_rows: list[dict[str, Any]] = []
    for report in reports:
        lock = report["lock"] or {}
        of_user = {"user": report["user"], "lock": lock.get("lock_id"),
                   "state": lock.get("state", "not locked")}
        rows += [{"row": "kind", **of_user, **kind} for kind in report["kinds"]]
        item_rows += [{"row": "item", **of_user, "kind": item["kind"], "item": item["item"],
                       "original": item["original"], "item_state": item["state"],
                       "current": item["current"]} for item in report["items"]]
    values = ("original", "current")
    kind_columns = STATUS_FIELDS[1:12]
    if fmt == "table" and items and not view.fields:
        echo_listing(Listing(rows, kind_columns, id_column="user",
                             optional=("pending", "gone", "lock")), view)
        click.echo("")
        echo_listing(Listing(item_rows, ["user", "kind", "item", "original", "item_state",
                                         "current"], value_columns=values), view)
        return
    # One table: with --items, the kind rows then the item rows, told apart by `row`.
    columns = STATUS_FIELDS if items else kind_columns
    echo_listing(Listing(rows + item_rows, columns, id_column="user",
                         payload=reports, value_columns=values,
                         optional=("pending", "gone", "lock")), view)


TZ_ENV = "PRIVACY_LOCK_TZ"


def tz_option(func: Any) -> Any:
    """--tz: the zone times are shown in, and bare --since/--until dates are days of; resolved
    as --tz, then PRIVACY_LOCK_TZ, then the config's [display] timezone, then UTC."""
    return click.option(
        "--tz", "tz_name", metavar="ZONE", envvar=TZ_ENV, callback=resolve_tz,
        help="Show times in this IANA zone (e.g. Asia/Tokyo); bare dates are days there "
        f"[env: {TZ_ENV}; default: the config's [display] timezone, else UTC].",
    )(func)


def resolve_tz(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    """The zone name --tz resolves to, checked now (an unknown name is exit 2, one line that
    says where it came from); ``ctx.meta["tz_source"]`` says where, for :func:`note_zone`."""
    app = ctx.find_object(App)
    if value is not None and value.strip():
        source = (TZ_ENV if ctx.get_parameter_source(param.name or "")
                  is click.core.ParameterSource.ENVIRONMENT else "--tz")
    elif app is not None and app.target.settings.timezone:
        value = app.target.settings.timezone
        source = f"{app.target.settings.config_path} [display] timezone"
    else:
        value, source = "UTC", "default"
    try:
        resolve_zone(value)
    except UsageError as exc:
        raise UsageError(f"{source}: {exc}") from None
    ctx.meta["tz_source"] = source
    return value.strip()


def note_zone(tz_name: str) -> None:
    """Say on stderr which zone the times shown are in, and where that came from."""
    source = click.get_current_context().meta.get("tz_source", "default")
    note(f"times in {tz_name}" + ("" if source == "default" else f" (from {source})"))


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
              show_default=True,
              help="active = items still hidden; reverted = closed by a revert; all = both.")
@click.option("--operator", help="Only locks opened by this operator.")
@click.option("--user", help="Only this user's locks.")
@click.option("--ticket", help="Only locks opened under this ticket.")
@when_options("Opened")
@tz_option
@listing_options("locks", LOCK_COLUMNS)
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
    echo_listing(Listing(rows, LOCK_COLUMNS, id_column="lock_id",
                         optional=("reverted_by", "reverted_at", "age_days"),
                         cut=("reason", "ticket")), view_of(fmt))
    note_zone(tz_name)


@cli.group()
def audit() -> None:
    """Check and report on the hash-chained audit trail."""


@audit.command("verify")
@click.option("--expect-head", metavar="HASH",
              help="A head hash published earlier; it must still be in the chain.")
@click.option("--checkpoints", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="A file of `audit checkpoint` lines; the trail must hold every one.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True,
              help="json: the result as one object (ok, valid, total, head_hash, broken_seq, "
              "problem, ...), for monitoring; the exit code is the same.")
@click.pass_obj
def audit_verify(app: App, expect_head: str | None, checkpoints: Path | None,
                 fmt: str) -> None:
    """Recompute the audit chain and name the first event that was edited, removed or inserted.

    Prints "N/N events valid" and the head hash to publish (e.g. in the monthly compliance
    record); exits 1 when the chain is broken, an event's time goes backwards, a MAC does not
    match the audit key, or a published head or checkpoint no longer holds.

    \b
    Example:
      privacy-lock audit verify
      privacy-lock audit verify --expect-head 3f7a...
      privacy-lock audit verify --format json
      privacy-lock --audit-key-file /etc/privacy-lock/audit.key audit verify \\
          --checkpoints checkpoints.txt
    """
    result = service.audit_verify(app.target, expect_head, checkpoints)
    if fmt == "json":
        click.echo(render([], "json", payload={
            **result.as_dict(), "seals": result.seals, "unsealed_locks": result.unsealed_locks}))
        if not result.ok:
            raise FailuresReported("the audit chain is broken")
        return
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


REPORT_FILE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".ndjson": "ndjson",
                       ".html": "html", ".htm": "html", ".txt": "table"}


def report_format(ctx: click.Context, fmt: str, output: Path | None) -> str:
    """audit report's format: --format, else the --output file's extension. A --format that
    the file's name contradicts (--format csv --output r.json) is refused (exit 2)."""
    if output is None:
        return fmt
    named = REPORT_FILE_FORMATS.get(output.suffix.lower())
    given = ctx.get_parameter_source("fmt") is not click.core.ParameterSource.DEFAULT
    if given:
        if named is not None and named != fmt:
            raise UsageError(f"--format {fmt} but --output {output.name} names {named}: "
                             "drop one, or make them agree")
        return fmt
    if named is None:
        exts = " ".join(f"NAME{ext}" for ext in REPORT_FILE_FORMATS)
        raise UsageError(f"cannot tell the format of {output.name} from its extension: name "
                         f"it {exts}, or give --format")
    return named


@audit.command("report")
@when_options("Events")
@tz_option
@click.option("--operator", help="Only events by this operator.")
@click.option("--user", help="Only events about this user (content owner id).")
@click.option("--action", "actions", multiple=True, type=click.Choice(list(ACTIONS)),
              help="Only this action (repeatable).")
@click.option("--ticket", help="Only events under this ticket.")
@click.option("--lock", "lock_id", type=LOCK_ID, help="Only events of this lock id.")
@click.option("--after", "after", type=IdParam("event number"), metavar="SEQ",
              help="Only events after this event number (the rest of a report cut by --limit).")
@click.option("--summary", is_flag=True,
              help="Figures, counts per action x operator x day, and active locks by age; "
              "no events (in html too).")
@click.option("--limit", type=click.IntRange(0), metavar="N",
              help="List at most N events (default: 50 in a table, 1000 in html, every one "
              "in csv/json/ndjson; 0 = every one). The report says how to get the rest.")
@listing_options("audit report", EVENT_COLUMNS, formats=REPORT_FORMATS)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the report to this file instead of standard output; without "
              "--format, its extension (.csv .tsv .json .ndjson .html .txt) says the format.")
@click.pass_context
def audit_report(
    ctx: click.Context, since: str | None, until: str | None, tz_name: str,
    operator: str | None, user: str | None, actions: tuple[str, ...], ticket: str | None,
    lock_id: int | None, after: int | None, summary: bool, limit: int | None, fmt: str,
    output: Path | None,
) -> None:
    """Who changed whose content, when, under which ticket and reason.

    Every filter applies to every format. Times are stored and compared in UTC and shown in
    --tz; the html page also holds the figures (locks opened and closed, items hidden and
    restored, conflicts), a chart of applies/reverts per day and the result of `audit verify`
    with the head hash. csv, json and ndjson exports stream any number of events. When the
    chain is broken, the report is still written and the command exits 1.

    \b
    Example:
      privacy-lock audit report --since 2026-11-01 --until 2026-11-30 --tz Asia/Tokyo
      privacy-lock audit report --user 42 --output user-42.csv
      privacy-lock audit report --summary --since 2026-11-01
      privacy-lock audit report --output audit-2026-11.html
    """
    app: App = ctx.obj
    fmt = report_format(ctx, fmt, output)
    view = view_of(fmt)
    result = service.audit_report(
        app.target, since=since, until=until, tz=tz_name, operator=operator, user=user,
        actions=actions, ticket=ticket, lock_id=lock_id, summary=summary, fmt=fmt,
        output_path=output, limit=limit, after=after, fields=view.fields, wide=view.wide,
        echo=lambda text: click.echo(text, nl=False))
    report = result.report
    if result.output is None and result.exported is None:
        click.echo(result.text)
    for line in result.notes:
        note(line)
    if result.output:
        note(f"wrote {result.output} ({report.event_total:,} events)")
    if result.more and result.last_seq is not None:
        note(f"the first {report.event_total:,} events (--limit); the rest: "
             f"{report.rest_command(result.last_seq, 'csv' if fmt == 'table' else fmt)}")
    if report.verify is not None and not report.verify.ok:
        note(f"warning: the audit chain is BROKEN: {report.verify.problem} "
             "(run `privacy-lock audit verify`)")
        raise FailuresReported("the audit chain is broken")
    if report.verify is not None and fmt == "table":
        note(f"{report.event_total:,} events; chain: {report.verify.valid}/"
             f"{report.verify.total} events valid, head {report.verify.head_hash}")


def show_filed(result: service.FiledRequests, fmt: str) -> None:
    """revert under [policy] revert_requires_approval: the requests filed, and who runs them."""
    rows = [o.as_dict() for o in result.outcomes]
    columns = ["request", "lock", "user", "status", "requested_by"]
    cut = to_stdout(lambda: echo_listing(Listing(rows, columns, id_column="request"),
                                         view_of(fmt)))
    if result.output:
        note(f"results written to {result.output}")
    waiting = result.waiting
    if not waiting:
        note("nothing to revert: no active lock was named (see above)")
    else:
        ids = [o.request_id for o in waiting if o.request_id is not None]
        asked = sorted({o.requested_by for o in waiting if o.requested_by})
        note(f"nothing was changed yet: a revert needs a second operator's approval "
             f"([policy] revert_requires_approval). Someone other than {', '.join(asked)} "
             "runs:")
        if len(ids) <= APPROVE_HINT_IDS:
            note(f"  privacy-lock approve {' '.join(map(str, ids))} --operator NAME")
        else:  # a request file of thousands: one line, not one per request
            spans = id_ranges(ids).split(", ")
            named = ",".join(spans) if len(spans) <= APPROVE_HINT_IDS else "REQUEST_ID..."
            note(f"  privacy-lock approve {named} --operator NAME")
            note(f"(pending: {len(ids):,} requests, {id_ranges(ids)}; see `privacy-lock "
                 "requests`)")
    finish(failed=False, output_error=result.output_error, cut=cut, output=result.output)


APPROVE_HINT_IDS = 20  # request ids named in the approve hint before it names ranges instead


@cli.command()
@click.argument("request_ids", nargs=-1, metavar="[REQUEST_ID|FROM-TO]...")
@click.option(
    "--operator", envvar="PRIVACY_LOCK_OPERATOR",
    help="Your name; it must differ from the requester's [env: PRIVACY_LOCK_OPERATOR].",
)
@click.option("--reason", help="Why you approve (recorded in the revert-approved event).")
@click.option("--all-pending", is_flag=True,
              help="Every pending request you may approve (not your own); without --ticket "
              "or --requested-by it also needs --yes.")
@click.option("--ticket", help="With --all-pending: only requests under this ticket.")
@click.option("--requested-by", metavar="NAME",
              help="With --all-pending: only requests this operator filed.")
@click.option("--yes", is_flag=True,
              help="Confirm --all-pending with no filter: approve every pending request.")
@click.option("--from-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Request ids from a file: `requests --format ids` output, or a CSV with a "
              "request column.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the per-request results here (.json or .csv).")
@pacing_options
@listing_options("approve", APPROVE_FIELDS)
@click.pass_obj
def approve(
    app: App, request_ids: tuple[str, ...], operator: str | None, reason: str | None,
    all_pending: bool, ticket: str | None, requested_by: str | None, yes: bool,
    from_file: Path | None, output: Path | None, fmt: str, quiet: bool, **pacing: Any,
) -> None:
    """Approve pending revert requests and run them (a second operator, not the requester).

    Name requests by id or range (`1-20000`, `3,5,9-12`; at most 100,000 ids), with
    --from-file, or with --all-pending (your own requests are left out, and said so; with no
    --ticket or --requested-by it names every pending request, so it needs --yes).

    Each revert runs under its request's ticket and reason, as you; several run as one batch,
    where small locks share chunks. If you filed any of the requests named, the approval is
    refused (exit 2) and recorded as revert-refused, and none of them runs. Approving again an
    approved request whose run was interrupted finishes it.

    \b
    Example:
      privacy-lock requests
      privacy-lock approve 3 --operator bob
      privacy-lock approve 1-20000 --operator bob --output approved.csv
      privacy-lock approve --all-pending --ticket SUP-1300 --operator bob
    """
    if (ticket is not None or requested_by is not None or yes) and not all_pending:
        raise UsageError("--ticket, --requested-by and --yes go with --all-pending")
    ids = parse_id_ranges(list(request_ids), "request id") if request_ids else []
    pending = service.PendingFilter(ticket, requested_by, yes) if all_pending else None
    started = utc_now()
    result = service.approve(app.target, ids, operator=operator, reason=reason,
                             pacer=make_pacer(**pacing), progress=progress_factory(quiet),
                             from_file=from_file, all_pending=pending, output=output)
    show_approved(result, fmt, started)


@cli.command()
@click.argument("request_ids", nargs=-1, required=True, metavar="REQUEST_ID|FROM-TO...")
@click.option("--operator", envvar="PRIVACY_LOCK_OPERATOR",
              help="Your name, as the trail records it [env: PRIVACY_LOCK_OPERATOR].")
@click.option("--reason", help="Why the revert must not happen (recorded).")
@format_option
@click.pass_obj
def reject(app: App, request_ids: tuple[str, ...], operator: str | None, reason: str | None,
           fmt: str) -> None:
    """Cancel pending revert requests, so that nobody can approve them.

    Each becomes `rejected` with a revert-rejected event (sealed, like every request state
    change); its lock stays active, and a new request for it can be filed with `revert`.
    Only pending requests can be rejected (not approved or done ones); the operator who filed
    a request may reject it too. All or nothing: one request that cannot be rejected refuses
    the command (exit 2).

    \b
    Example:
      privacy-lock reject 12 --operator bob --reason "wrong user: see SUP-1301"
      privacy-lock reject 40-45 --operator bob --reason "filed twice"
    """
    ids = parse_id_ranges(list(request_ids), "request id")
    rejected = service.reject(app.target, ids, operator=operator, reason=reason)
    click.echo(render([r.as_dict() for r in rejected], fmt,
                      columns=["request", "lock", "user", "status", "requested_by", "ticket"]))
    count = len(rejected)
    note(f"{'request' if count == 1 else f'{count:,} requests'} "
         f"{id_ranges([r.request_id for r in rejected])} rejected; "
         f"{'its lock stays' if count == 1 else 'their locks stay'} active")


def show_approved(result: service.ApproveResult, fmt: str, started: str = "") -> None:
    """The reverts approve ran, what to know about them, and a last line for a batch."""
    ran, stats = result.approved, result.stats
    cut = to_stdout(lambda: echo_outcomes(
        view_of(fmt),
        lambda: [{"request": item.request["request_id"], **row} for item in ran
                 for row in outcome_rows([item.outcome], "revert")],
        lambda: [service.approval_row(a) for a in ran],
        columns=APPROVE_FIELDS, id_column="request",
        full_hint=full_table_hint(result.output, "revert", started, False)))
    if len(ran) == 1:
        req, outcome = ran[0].request, ran[0].outcome
        note(f"request {req['request_id']}: requested by {req['requested_by']}, approved by "
             f"{req['approved_by']}; lock {req['lock_id']} {outcome.status}")
    elif ran:
        by = sorted({a.request["requested_by"] for a in ran})
        note(f"requests {id_ranges([a.request['request_id'] for a in ran])}: requested "
             f"by {', '.join(by)}, approved by {result.approver.operator}")
    if result.output:
        note(f"results written to {result.output}")
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
            note(stats.summary_line(service.Ending.INTERRUPTED) + f"; {len(failed):,} of "
                 f"{len(ran):,} approved requests not finished: approve them again to finish "
                 "them")
        elif failed:
            note(stats.summary_line(service.Ending.FAILURES) + f"; {len(failed):,} of "
                 f"{len(ran):,} approved requests failed: approve them again to finish them")
        else:
            note(stats.summary_line())
    finish(failed=bool(failed), output_error=result.output_error, cut=cut)


@cli.command("requests")
@click.option("--state", type=click.Choice(["open", "pending", "approved", "done", "rejected",
                                            "all"]),
              default="open", show_default=True,
              help="open = waiting for approval, or approved but not finished.")
@click.option("--ticket", help="Only requests under this ticket.")
@click.option("--requested-by", metavar="NAME", help="Only requests this operator filed.")
@tz_option
@listing_options("requests", REQUEST_FIELDS)
@click.pass_obj
def requests_command(app: App, state: str, ticket: str | None, requested_by: str | None,
                     tz_name: str, fmt: str) -> None:
    """List revert requests waiting for a second operator's approval.

    \b
    Example:
      privacy-lock requests
      privacy-lock requests --state all --format csv
      privacy-lock requests --state pending --ticket SUP-1300 --format ids > ids.txt
      privacy-lock approve --from-file ids.txt --operator bob
    """
    rows = service.requests(app.target, state=state, tz=tz_name, ticket=ticket,
                            requested_by=requested_by)
    if fmt == "ids":  # ranges on one line: what approve --from-file reads, 20,000 ids in a line
        click.echo(id_ranges([r["request"] for r in rows]).replace(", ", " "))
        note(f"{len(rows):,} request(s)")
        return
    echo_listing(Listing(rows, REQUEST_FIELDS, id_column="request",
                         optional=("requested_from", "age_days", "approved_by"),
                         cut=("reason", "ticket")), view_of(fmt))
    note_zone(tz_name)


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


@cli.command("find")
@click.option("--mail-fragment", "mail", multiple=True, metavar="TEXT",
              help="Part of an address the caller had, now or before (repeatable): 'taro85', "
              "'taro@ezweb', 'vodafone'.")
@click.option("--nickname", metavar="TEXT", help="The nickname, or part of it.")
@click.option("--joined", metavar="WHEN", help="When they joined: 2006, 2006-04 or "
              "2006-04..2007-03.")
@click.option("--text", "texts", multiple=True, metavar="TEXT",
              help="Text they remember writing (a diary title, a community), repeatable.")
@click.option("--reindex", is_flag=True,
              help="Only rebuild the search index the tool maintains (SQLite's FTS5 table).")
@identity_options
@format_option
@click.pass_obj
def find_command(app: App, mail: tuple[str, ...], nickname: str | None, joined: str | None,
                 texts: tuple[str, ...], reindex: bool, operator: str | None,
                 ticket: str | None, reason: str | None, fmt: str) -> None:
    """Find the account of a caller who cannot log in, from what they remember.

    Fragments match anywhere, forgive a typo, case and width (ｔａｒｏ = taro), and a carrier's
    renamed domains (ezweb.ne.jp = au.com; jp-t.ne.jp = vodafone = softbank). Addresses are
    shown masked, dates as year-month. Every search is audited (fragments masked) and
    rate-limited; a search too weak to tell people apart shows only a coarse count.

    \b
    Example:
      privacy-lock find --mail-fragment miyuki503 --mail-fragment @vodafone \\
          --operator alice --ticket SUP-1234 --reason "caller lost their login"
      privacy-lock find --nickname みゆき --joined 2005 --text 花火 --format json \\
          --operator alice --ticket SUP-1234 --reason "caller lost their login"
      privacy-lock find --reindex      # SQLite: rebuild the trigram index (from cron)
    """
    result = service.find(app.target, mail=mail, nickname=nickname, joined=joined, texts=texts,
                          identity=Identity(operator, ticket, reason), reindex=reindex)
    if isinstance(result, str):
        click.echo(result)
        return
    rows = [{"user": c.user, "score": f"{c.score:.2f}", "joined": c.joined,
             "evidence": "; ".join(c.evidence)} for c in result.candidates]
    payload = [c.as_dict() for c in result.candidates]
    click.echo(render(rows, fmt, columns=["user", "score", "joined", "evidence"],
                      payload=payload))
    for line in result.notes:
        note(line)
    if result.more:
        note("more candidates fit than are listed: add a fragment to narrow the search")
    note(f"search recorded as audit event {result.event_seq}")


class PromptInterview:
    """verify-identity on the terminal: ask, take what the caller said, reveal, confirm."""

    def ask(self, number: int, question: Any) -> str:
        click.echo(f"\nquestion {number}: {question.text}")
        return str(click.prompt("  what the caller said (empty: does not know)", default="",
                                show_default=False))

    def reveal(self, question: Any, judged_right: bool) -> bool:
        shown = ", ".join(printable(a) for a in question.answers[:5])
        click.echo(f"  the account holds: {shown}")
        click.echo(f"  the tool judges the answer {'RIGHT' if judged_right else 'WRONG'} "
                   "(recorded)")
        return click.confirm("  is the answer right?", default=judged_right)

    def confirm_verdict(self, passed: bool, right: int, asked: int) -> bool:
        click.echo(f"\nverdict: {'PASSED' if passed else 'NOT PASSED'} ({right} of {asked} "
                   "answers right)")
        return click.confirm("  confirm and record this verdict?", default=False)


@cli.command("verify-identity")
@click.argument("user")
@click.option("--operator", envvar="PRIVACY_LOCK_OPERATOR",
              help="Your name as the audit trail should show it [env: PRIVACY_LOCK_OPERATOR].")
@click.option("--ticket", help="The support ticket the find was made under.")
@click.pass_obj
def verify_identity(app: App, user: str, operator: str | None, ticket: str | None) -> None:
    """Ask the caller questions only the owner of USER should know, from the account's data.

    USER must have been listed by a `find` under the same ticket. Type what the caller said;
    the tool records the answer as right or wrong before it shows you what the account holds;
    you may correct its judgement (recorded too). At the end, confirm the verdict: its audit
    event number is what apply/revert --identity-check cites.

    \b
    Example:
      privacy-lock verify-identity 42 --operator alice --ticket SUP-1234
      privacy-lock apply 42 --identity-check 57 --operator alice --ticket SUP-1234 \\
          --reason "caller verified; asked to hide"
    """
    outcome = service.verify_identity(app.target, user, PromptInterview(),
                                      identity=Identity(operator, ticket))
    state = "passed" if outcome.passed else "not passed"
    if not outcome.confirmed:
        state += " (not confirmed by the operator)"
    click.echo(f"identity of user {outcome.user}: {state}; recorded as audit event "
               f"{outcome.verdict_event}")
    if outcome.passed:
        click.echo(f"cite it with: --identity-check {outcome.verdict_event}")


@cli.command("sql")
@click.option("--dialect", type=click.Choice(["sqlite", "postgresql", "mysql"]),
              default="sqlite", show_default=True,
              help="The database the DDL is for (mysql also covers MariaDB).")
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
    settings = app.target.settings if role is not None or app.config else None
    click.echo(service.sql(dialect, role, settings), nl=False)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="privacy-lock")
