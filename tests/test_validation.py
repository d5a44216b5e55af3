"""Issue 14, validation and interrupted output: text the tool would store that is not valid
Unicode or longer than its column holds is refused before any change (exit 2, with the line
of a request file or the name of the option or variable); every date option takes every
date; ``--user`` filters follow the id rule and a string id is never stripped; Ctrl-C or a
closed standard output still leave the results file, the failed-rows file and the summary.

How a careless colleague or an attacker would misuse each, and what is tested here:

- a request file exported by a tool that writes lone surrogates (``"\\ud800"``) or Latin-1
  bytes, or an argument typed in a terminal set to another encoding: refused up front, never
  half a batch;
- a reason pasted from a long e-mail thread (70,000 characters, or 22,000 Japanese ones, which
  are 66,000 bytes): refused where the database would cut or refuse it (MariaDB TEXT);
- ``--until 9999-12-31`` as "no end", ``--since 0001-01-01`` as "from the beginning", in any
  zone: they work; a year 10000 is a usage error;
- ``locks --user 042`` looking for user 42 and finding nothing, so an auditor concludes the
  user was never locked: the id rule applies;
- ``"u-alice "`` (a trailing space from a spreadsheet) locking u-alice, or on a NO PAD
  collation two accounts becoming one target: never stripped, refused with a hint;
- ``| tee log`` with Ctrl-C, ``| head -1``: the results file and the failed rows are written
  first, exactly the users done / not done, then the summary, exit 1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from sqlalchemy import insert, text

from helpers import add_users
from privacy_lock.cli import cli
from privacy_lock.errors import UsageError
from privacy_lock.service import Identity, Target
from privacy_lock.service import apply as apply_api
from sns import IDENTITY, build_sns

BAD = "\udcff"  # a byte 0xff that was not UTF-8, as Python hands an argument over


@pytest.fixture
def sns(db_url, tmp_path):
    return build_sns(db_url, tmp_path)


@pytest.fixture
def uuid_sns(db_url, tmp_path):
    return build_sns(db_url, tmp_path, id_style="uuid")


def write(path, content) -> str:
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return str(path)


def error_lines(result) -> list[str]:
    assert "Traceback" not in result.output
    return [line for line in result.stderr.splitlines() if line.startswith("privacy-lock: ")]


def assert_nothing_changed(sns, before) -> None:
    assert sns.everything() == before
    assert sns.lock_rows() == [] and sns.snapshot_rows() == []


def cli_cmd(sns, *args: str) -> list[str]:
    return [sys.executable, "-m", "privacy_lock", "--config", str(sns.config_path),
            "--database-url", sns.url, *args]


# --- 1. invalid Unicode ------------------------------------------------------------------------


def test_a_json_lone_surrogate_is_refused_with_its_line_before_anything(sns, tmp_path):
    """json.loads accepts "\\ud800"; it used to pass validation and crash the batch after the
    first user was locked."""
    u1, u2, u3 = sns.users
    before = sns.everything()
    path = write(tmp_path / "req.json", (
        "[\n"
        f'  {{"user_id": "{u1}", "ticket": "T-1", "reason": "ok"}},\n'
        f'  {{"user_id": "{u2}", "ticket": "T-2", "reason": "bad \\ud800 text"}},\n'
        f'  {{"user_id": "{u3}", "ticket": "T-3", "reason": "ok", "operator": "x\\udc00"}},\n'
        f'  {{"user_id": "\\ud83d", "ticket": "T-4", "reason": "ok"}}\n'
        "]\n"))
    result = sns.run("apply", "--from-file", path, "--operator", "tester", expect=2)
    assert "line 3: object 2: reason is not valid text: a lone surrogate U+D800" in result.output
    assert "line 4: object 3: operator is not valid text: a lone surrogate U+DC00" in result.output
    assert "line 5: object 4: user id is not valid text: a lone surrogate U+D83D" in result.output
    assert "Traceback" not in result.output
    assert_nothing_changed(sns, before)


def test_invalid_utf8_in_a_csv_request_file_is_refused_with_its_line(sns, tmp_path):
    u1, u2, u3 = sns.users
    before = sns.everything()
    path = write(tmp_path / "req.csv",
                 f"user_id,ticket,reason\n{u1},T-1,ok\n{u2},T-2,caf\xe9\n{u3},T-3,ok\n"
                 .encode("latin-1"))
    result = sns.run("apply", "--from-file", path, "--operator", "tester", expect=2)
    assert "line 3: not UTF-8 (byte 0xe9" in result.output
    assert_nothing_changed(sns, before)


def test_invalid_utf8_in_arguments_and_environment_names_them(sns):
    """Every option, argument and environment variable that is not valid text is one line
    naming it, exit 2, before the database is touched."""
    before = sns.everything()
    base = ["--config", str(sns.config_path), "--database-url", sns.url]
    cases = [  # (arguments, environment, what the line names)
        ([*base, "apply", "1", "--operator", BAD, "--ticket", "T", "--reason", "r"], {},
         "--operator"),
        ([*base, "apply", f"1{BAD}", *IDENTITY], {}, "the argument USERS"),
        ([*base, "apply", "1", "--ticket", "T", "--reason", "r"],
         {"PRIVACY_LOCK_OPERATOR": f"al{BAD}ce"}, "the environment variable "
         "PRIVACY_LOCK_OPERATOR"),
        ([*base, "apply", "1", "--kind", f"diary{BAD}", *IDENTITY], {}, "--kind"),
        ([*base, "revert", "--user", "1", "--operator", "a", "--ticket", "T", "--reason",
          f"r{BAD}"], {}, "--reason"),
        ([*base, "approve", "1", "--operator", "bob", "--reason", f"ok{BAD}"], {}, "--reason"),
        ([*base, "status", "1"], {"PRIVACY_LOCK_OPERATOR": BAD},
         "the environment variable PRIVACY_LOCK_OPERATOR"),
        ([*base, "policy", "set", "approval", "distinct-names", "--operator", "a", "--ticket",
          f"T{BAD}", "--reason", "r"], {}, "--ticket"),
        ([*base, "audit", "report", "--operator", BAD], {}, "--operator"),
        ([*base, "locks", "--since", f"2026-01-01{BAD}"], {}, "--since"),
        (["--config", str(sns.config_path), "status", "1"],
         {"PRIVACY_LOCK_DATABASE_URL": sns.url + BAD},
         "the environment variable PRIVACY_LOCK_DATABASE_URL"),
        ([*base, "apply", "--from-file", f"req{BAD}.csv", "--operator", "a"], {},
         "--from-file"),
    ]
    for args, env, named in cases:
        result = CliRunner(env=env).invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 2, (args, result.output)
        lines = error_lines(result)
        assert len(lines) == 1, result.output
        assert lines[0].startswith(f"privacy-lock: error: {named} is not valid text: the byte "
                                   "0xff is not UTF-8"), (named, lines[0])
        assert lines[0].endswith("nothing was changed")
    assert_nothing_changed(sns, before)

    # The same through a real process, whose argv and environment are bytes.
    env = {**os.environ, "PRIVACY_LOCK_OPERATOR": os.fsdecode(b"op\xfe")}
    done = subprocess.run(cli_cmd(sns, "apply", "1", "--ticket", "T", "--reason", "r"),
                          env=env, capture_output=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.decode().strip().splitlines() == [
        "privacy-lock: error: the environment variable PRIVACY_LOCK_OPERATOR is not valid "
        "text: the byte 0xfe is not UTF-8 (at character 3); nothing was changed"]
    done = subprocess.run([*cli_cmd(sns, "apply", "1", "--operator", "op", "--ticket"),
                           os.fsdecode(b"T-\xff"), "--reason", "r"],
                          capture_output=True, timeout=120)
    assert done.returncode == 2 and b"--ticket is not valid text" in done.stderr
    assert_nothing_changed(sns, before)


def test_the_python_api_refuses_invalid_text_too(sns):
    before = sns.everything()
    target = Target.load(str(sns.config_path), sns.url)
    for identity in (Identity("al\ud800ce", "T-1", "r"), Identity("alice", f"T{BAD}", "r"),
                     Identity("alice", "T-1", "\udfff")):
        with pytest.raises(UsageError, match="is not valid text"):
            apply_api(target, [str(sns.users[0])], identity=identity)
    with pytest.raises(UsageError, match="user id is not valid text"):
        apply_api(target, ["\ud800"], identity=Identity("a", "T", "r"))
    target.dispose()
    assert_nothing_changed(sns, before)


# --- 2. values longer than their column holds ----------------------------------------------------


def test_ticket_and_operator_over_191_characters_are_refused_up_front(sns, tmp_path):
    """Caught only by the database before (exit 1 on MariaDB and PostgreSQL; SQLite stored
    them): refused on every database, since the DDL says VARCHAR(191)."""
    u1, u2, _ = sns.users
    before = sns.everything()
    result = sns.run("apply", str(u1), "--operator", "a", "--ticket", "T" * 192,
                     "--reason", "r", expect=2)
    assert error_lines(result) == [
        "privacy-lock: error: --ticket: ticket is 192 characters long; "
        "privacy_lock_audit.ticket holds at most 191 characters"]
    path = write(tmp_path / "req.csv",
                 f"user_id,operator\n{u1},alice\n{u2},{'ö' * 192}\n")
    result = sns.run("apply", "--from-file", path, "--ticket", "T", "--reason", "r", expect=2)
    assert "line 3: operator is 192 characters long" in result.output
    assert_nothing_changed(sns, before)

    # 191 characters (of any width: characters, not bytes) are stored exactly.
    sns.run("apply", str(u1), "--operator", "界" * 191, "--ticket", "T" * 191, "--reason", "r")
    (lock,) = sns.lock_rows()
    assert (lock["operator"], lock["ticket"]) == ("界" * 191, "T" * 191)


def test_a_reason_is_refused_where_the_database_counts_bytes(sns, tmp_path, dialect):
    """MariaDB's TEXT holds 65,535 bytes: a 70,000-character reason in a request file, or
    22,000 three-byte characters as --reason, used to fail at run time after other rows had
    committed. PostgreSQL and SQLite hold them, and store them exactly."""
    u1, u2, u3 = sns.users
    before = sns.everything()
    long_ascii = "x" * 70_000
    at_limit = "あ" * 21_845  # 65,535 bytes of UTF-8
    path = write(tmp_path / "req.csv",
                 f"user_id,reason\n{u1},short\n{u2},{long_ascii}\n")
    if dialect == "mysql":
        result = sns.run("apply", "--from-file", path, "--operator", "a", "--ticket", "T",
                         expect=2)
        assert ("line 3: reason is 70,000 bytes long; privacy_lock_audit.reason holds at "
                "most 65,535 bytes") in result.output
        result = sns.run("apply", str(u3), "--operator", "a", "--ticket", "T", "--reason",
                         at_limit + "a", expect=2)
        assert error_lines(result) == [
            "privacy-lock: error: --reason: reason is 65,536 bytes long; "
            "privacy_lock_audit.reason holds at most 65,535 bytes"]
        assert_nothing_changed(sns, before)
        sns.run("apply", str(u3), "--operator", "a", "--ticket", "T", "--reason", at_limit)
        assert [lock["reason"] for lock in sns.lock_rows()] == [at_limit]
    else:
        sns.run("apply", "--from-file", path, "--operator", "a", "--ticket", "T")
        sns.run("apply", str(u3), "--operator", "a", "--ticket", "T", "--reason",
                at_limit + "a")
        assert [lock["reason"] for lock in sns.lock_rows()] == ["short", long_ascii,
                                                                 at_limit + "a"]


def test_a_string_user_id_longer_than_the_owner_column_is_refused(uuid_sns, tmp_path):
    """The site's owner columns are VARCHAR(36) here: a longer id cannot be anyone's."""
    sns = uuid_sns
    before = sns.everything()
    result = sns.run("apply", "u" * 37, *IDENTITY, expect=2)
    (line,) = error_lines(result)
    assert "user id is 37 characters long" in line and "holds at most 36 characters" in line
    path = write(tmp_path / "req.csv", f"user_id\nu-alice\n{'v' * 200}\n")
    result = sns.run("apply", "--from-file", path, *IDENTITY, expect=2)
    assert "line 3: user id is 200 characters long" in result.output
    assert_nothing_changed(sns, before)


# --- 3. dates at the ends of the calendar -------------------------------------------------------

DATE_CASES = [  # (options, whether the lock and its events are inside)
    (["--until", "9999-12-31"], True),
    (["--until", "9999-12-31", "--tz", "America/New_York"], True),
    (["--until", "9999-12-31T23:59:59.999999"], True),
    (["--since", "0001-01-01"], True),
    (["--since", "0001-01-01", "--tz", "Asia/Tokyo"], True),
    (["--since", "0900-01-01"], True),  # stored text sorts years below 1000 right
    (["--since", "0001-01-01", "--until", "9999-12-31", "--tz", "Pacific/Kiritimati"], True),
    (["--since", "9999-12-31", "--tz", "America/New_York"], False),
    (["--since", "9999-12-31T23:59:59.999999"], False),
    (["--until", "0001-01-01", "--tz", "Asia/Tokyo"], False),
    (["--until", "0001-01-01T00:00+09:00"], False),
]


def test_every_date_option_of_every_command_takes_any_date(sns):
    user = str(sns.users[0])
    sns.apply(user)
    for options, inside in DATE_CASES:
        locks = json.loads(sns.run("locks", "--state", "all", *options, "--format",
                                   "json").stdout)
        assert [row["user"] for row in locks] == ([user] if inside else []), options
        events = json.loads(sns.run("audit", "report", *options, "--format", "json").stdout)
        assert bool(events) is inside and {e["user"] for e in events} <= {user}, options
    for options, _inside in DATE_CASES[:2]:  # the summary and the page walk days in the range
        assert "apply" in sns.run("audit", "report", *options, "--summary").stdout
        assert "<html" in sns.run("audit", "report", *options, "--format", "html").stdout
    for command in (["locks"], ["audit", "report"]):
        for option in ("--since", "--until"):
            for value in ("10000-01-01", "0000-12-31", "2026-02-30"):
                result = sns.run(*command, option, value, expect=2)
                assert error_lines(result) == [
                    f"privacy-lock: error: {option}: not a date or time: {value!r} (use "
                    "YYYY-MM-DD, YYYY-MM-DDTHH:MM or YYYY-MM-DDTHH:MM+09:00, years 0001-9999)"]


# --- 4. the id rule in filters, and string ids taken exactly -----------------------------------


def test_user_filters_follow_the_id_rule(sns):
    """On an integer owner column 001 is user 1 in every filter, as in apply."""
    user = str(sns.users[0])
    sns.apply(user)
    for written in ("001", f" {user} ", user):
        locks = json.loads(sns.run("locks", "--user", written, "--format", "json").stdout)
        assert [row["user"] for row in locks] == [user], written
        events = json.loads(sns.run("audit", "report", "--user", written, "--format",
                                    "json").stdout)
        assert events and {e["user"] for e in events} == {user}, written
    for command in (["locks"], ["audit", "report"]):
        result = sns.run(*command, "--user", f"+{user}", expect=2)
        assert "is not an integer" in error_lines(result)[0]


PADDED = ("privacy-lock: error: user id 'u-alice ' ends with a space: the tool's tables on "
          "MySQL/MariaDB compare it equal to 'u-alice' (a PAD SPACE collation), so its lock "
          "could not be kept apart from that user's; refused")


def hint(written: str) -> str:
    return (f"unknown user {written!r} (not in users) (a user id is taken exactly, spaces "
            "included: did you mean 'u-alice'? it exists)")


def test_a_string_id_with_spaces_is_never_stripped(uuid_sns, tmp_path, dialect):
    """'u-alice ' is never u-alice: unknown (with a hint naming u-alice) where the tool can
    tell them apart, refused on MySQL/MariaDB, whose tool tables cannot (PAD SPACE)."""
    sns = uuid_sns
    before = sns.everything()
    for written in (" u-alice", "u-alice ", "\tu-alice"):
        result = sns.run("apply", written, *IDENTITY, expect=2)
        expected = PADDED if dialect == "mysql" and written.endswith(" ") else \
            f"privacy-lock: error: {hint(written)}"
        assert error_lines(result) == [expected]
    path = write(tmp_path / "req.csv", "user_id,ticket,reason\nu-bob,T,r\n u-alice,T,r\n"
                                       "u-alice ,T,r\n")
    result = sns.run("apply", "--from-file", path, "--operator", "a", expect=2)
    assert "line 3: " + hint(" u-alice").replace(" (not in users)", "") in result.output
    assert "line 4: " + (PADDED.removeprefix("privacy-lock: error: ") if dialect == "mysql"
                         else hint("u-alice ").replace(" (not in users)", "")) in result.output
    result = sns.run("apply", " u-nobody", *IDENTITY, expect=2)
    assert "did you mean" not in result.output
    assert_nothing_changed(sns, before)
    # Filters take a string id exactly too: never u-alice's lock.
    sns.apply("u-alice")
    assert json.loads(sns.run("locks", "--user", " u-alice", "--format", "json").stdout) == []
    if dialect == "mysql":
        assert error_lines(sns.run("locks", "--user", "u-alice ", expect=2)) == [PADDED]
    else:
        assert json.loads(sns.run("locks", "--user", "u-alice ", "--format",
                                  "json").stdout) == []


def test_a_spaced_id_is_its_own_account_on_a_no_pad_collation(uuid_sns, dialect):
    """On a MariaDB utf8mb4_nopad_bin accounts table (and on PostgreSQL and SQLite, which
    never pad) 'u-alice ' and 'u-alice' are two people. Where the tool can keep them apart
    each is locked alone, under its own lock, and reverted alone; on MariaDB, whose tool
    tables pad, 'u-alice ' is refused and u-alice's lock never touches its items."""
    sns = uuid_sns
    if dialect == "mysql":
        with sns.engine.begin() as conn:
            for table, column in (("users", "id"), ("diaries", "user_id"),
                                  ("photos", "owner_id")):
                conn.execute(text(f"ALTER TABLE {table} MODIFY {column} VARCHAR(36) CHARACTER "
                                  "SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL"))
    spaced = "u-alice "
    with sns.engine.begin() as conn:
        conn.execute(insert(sns.tables["diary"].metadata.tables["users"]),
                     [{"id": spaced, "name": "another person"}])
    mine = {("diary", sns.add_item("diary", spaced, sns.public)),
            ("photo", sns.add_item("photo", spaced, sns.friends))}
    before = sns.everything()

    def changed_since(then):
        now = sns.everything()
        return {(k, i) for k in now for i in now[k] if now[k][i] != then[k][i]}

    if dialect == "mysql":
        assert error_lines(sns.run("apply", spaced, *IDENTITY, expect=2)) == [PADDED]
        assert_nothing_changed(sns, before)
    else:
        sns.apply(spaced)
        assert changed_since(before) == mine
        assert [lock["subject"] for lock in sns.lock_rows()] == [spaced]

    then = sns.everything()
    sns.apply("u-alice")
    alices = set(sns.items_of("u-alice"))
    assert changed_since(then) == {key for key in alices if then[key[0]][key[1]][1]
                                   != sns.private}
    assert all(v == sns.private for v in sns.items_of("u-alice").values())
    assert not mine & alices

    if dialect != "mysql":
        assert sorted(lock["subject"] for lock in sns.lock_rows()) == ["u-alice", spaced]
        sns.revert_user(spaced)
        for kind, item in mine:
            assert sns.vis(kind, item) == before[kind][item][1]
        assert all(v == sns.private for v in sns.items_of("u-alice").values())


# --- 5. Ctrl-C and a closed standard output ------------------------------------------------------


def _batch(sns, tmp_path, count: int) -> tuple[list[str], str]:
    users = [str(u) for u in add_users(sns, count)]
    return users, write(tmp_path / "req.csv", "user_id\n" + "\n".join(users) + "\n")


def _results(path) -> dict[str, str]:
    """user -> status of a CSV results file (one row per kind; the status is the user's)."""
    import csv

    with open(path, encoding="utf-8") as fh:
        return {row["user"]: row["status"] for row in csv.DictReader(fh)}


def _failed_users(path) -> list[str]:
    import csv

    with open(path, encoding="utf-8") as fh:
        return [row["user_id"] for row in csv.DictReader(fh)]


def test_ctrl_c_mid_run_writes_results_and_failed_rows_then_the_summary(sns, tmp_path):
    """SIGINT between chunks with stdout a pipe: the run stops after the chunk in flight, the
    results file says which users finished (every item hidden) and NAME.failed.csv holds
    exactly the others, the summary is the last line on stderr, exit 1. --chunk-size and
    --sleep make the run long whatever the machine's speed: the signal is sent once two
    locks exist, and nothing is asserted about how far the run got."""
    users, path = _batch(sns, tmp_path, 12)
    before = sns.everything()
    out = tmp_path / "out.csv"
    proc = subprocess.Popen(
        cli_cmd(sns, "apply", "--from-file", path, *IDENTITY, "--output", str(out),
                "--chunk-size", "4", "--sleep", "0.5"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(sns.lock_rows()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr
    statuses = _results(out)
    assert set(statuses) == set(users)
    finished = {u for u, s in statuses.items() if s == "locked"}
    assert finished and len(finished) < len(users)
    locked = {lock["subject"] for lock in sns.lock_rows()}
    for user in users:
        items = sns.items_of(int(user))
        if user in finished:
            assert all(v == sns.private for v in items.values()), user
        elif statuses[user] == "not-started":
            assert user not in locked
            assert items == {key: before[key[0]][key[1]][1] for key in items}
        else:
            assert statuses[user] == "interrupted" and user in locked  # part-way: re-run
    assert sum(1 for s in statuses.values() if s == "interrupted") <= 1
    assert set(_failed_users(tmp_path / "out.failed.csv")) == set(users) - finished
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted:") and "re-run the same command" in last
    assert f"results written to {out}" in stderr and "locked" in stdout

    rerun = sns.run("apply", "--from-file", str(tmp_path / "out.failed.csv"), *IDENTITY)
    assert "done:" in rerun.stderr
    assert all(v == sns.private for u in users for v in sns.items_of(int(u)).values())
    assert {lock["subject"] for lock in sns.lock_rows()} == set(users)


def test_a_closed_stdout_still_gets_the_results_file_and_the_summary(sns, tmp_path):
    """`| head -1`: the reader is gone before the table is printed. The run finishes, the
    results file holds every user, the summary goes to stderr, exit 1 with one line."""
    users, path = _batch(sns, tmp_path, 5)
    out = tmp_path / "out.csv"
    proc = subprocess.Popen(
        cli_cmd(sns, "apply", "--from-file", path, *IDENTITY, "--output", str(out)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the interpreter has even started
    stderr = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr
    assert {lock["subject"] for lock in sns.lock_rows()} == set(users)
    assert _results(out) == {u: "locked" for u in users}
    assert not (tmp_path / "out.failed.csv").exists()
    lines = stderr.strip().splitlines()
    assert lines[-2].startswith("done: 5 users")
    assert lines[-1] == ("privacy-lock: error: standard output was closed before all the "
                         f"results were written; {out} holds them all")


def test_ctrl_c_while_the_results_are_printed_keeps_the_file_and_the_summary(sns, tmp_path):
    """SIGINT while the tool is blocked writing a JSON result larger than the pipe holds (we
    read one byte, so it is writing, and cannot have finished): the results file was written
    first and is whole, the summary follows on stderr, exit 1."""
    users, path = _batch(sns, tmp_path, 200)  # about 140 KB of JSON: more than a pipe holds
    out = tmp_path / "out.json"
    proc = subprocess.Popen(
        cli_cmd(sns, "apply", "--from-file", path, *IDENTITY, "--output", str(out),
                "--format", "json", "--quiet"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.read(1) == b"["
    os.kill(proc.pid, signal.SIGINT)
    stdout, stderr_bytes = proc.communicate(timeout=120)
    stderr = stderr_bytes.decode()
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr
    assert len(stdout) < len(out.read_bytes())  # stdout was cut short
    assert {o["user"]: o["status"] for o in json.loads(out.read_text())} == {
        u: "locked" for u in users}
    lines = stderr.strip().splitlines()
    assert lines[-2].startswith(f"done: {len(users)} users")
    assert lines[-1] == ("privacy-lock: error: Ctrl-C while the results were written to "
                         f"standard output; {out} holds them all")
