"""Hostile or careless input (issue 14): URLs never leak a password, a damaged audit trail is
never repaired behind the auditor's back, and ids outside 64 bits or in surprising forms are
usage errors — one line, exit 2, nothing changed."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner
from sqlalchemy import delete, select
from sqlalchemy.engine import make_url

from helpers import head_of, tamper
from privacy_lock.cli import cli
from privacy_lock.db import create_tool_engine, safe_url
from privacy_lock.errors import UsageError
from privacy_lock.ids import parse_id
from privacy_lock.schema import audit_head, create_tool_tables
from sns import IDENTITY, build_sns

SECRET = "Sup3rSecret"


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def assert_one_line_error(result, code: int, *fragments: str) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines()
              if line.startswith(("privacy-lock: ", "Error: "))]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def sns(db_url, tmp_path):
    return build_sns(db_url, tmp_path)


# --- 1. URLs: one way to print them, never a password ------------------------------------------


MALFORMED = [
    # (URL, what the error says is wrong); each holds SECRET (or its tail) where it must not show
    (f"postgresql:/u:{SECRET}@host/db", "no '://' after the scheme"),
    (f"postgresql//u:{SECRET}@host/db", "does not start with a scheme"),
    (f"postgres ql://u:{SECRET}@host/db", "the scheme before '://'"),
    (f"postgresql://u:p@{SECRET}@host/db", "the host contains '@'"),
    (f"mysql+pymysql://u:p@{SECRET}@host/db", "the host contains '@'"),
    (f"postgresql://u:p@x:{SECRET}@host/db", "the port is not a number"),
    (f"postgresql://u:{SECRET}@host:5x432/db", "the port is not a number"),
    (f"postgresql://u:{SECRET}@host:99999/db", "the port must be a number from 1 to 65535"),
    (SECRET, "does not start with a scheme"),
]


@pytest.mark.parametrize(("url", "problem"), MALFORMED)
def test_a_malformed_url_is_never_echoed_and_says_which_part_is_wrong(url, problem, tmp_path):
    for command in (["locks"], ["init"], ["status", "1"], ["audit", "verify"]):
        result = invoke("--database-url", url, *command)
        line = assert_one_line_error(result, 2, "invalid database URL", problem)
        assert SECRET not in result.output, result.output
        assert "not shown" in line
    # the same from the environment and from a config file
    result = CliRunner(env={"PRIVACY_LOCK_DATABASE_URL": url}).invoke(cli, ["locks"])
    assert_one_line_error(result, 2, problem)
    assert SECRET not in result.output
    config = tmp_path / "c.toml"
    config.write_text(f'[database]\nurl = "{url}"\n', encoding="utf-8")
    result = invoke("--config", str(config), "locks")
    assert_one_line_error(result, 2, problem)
    assert SECRET not in result.output


def test_safe_url_hides_the_password_and_every_secret_query_parameter():
    shown = safe_url(f"postgresql://u:{SECRET}@h:5432/db?PassWord={SECRET}&sslpassword={SECRET}"
                     f"&pwd={SECRET}&passwd={SECRET}&auth_token={SECRET}&sslmode=require"
                     f"&password={SECRET}x")
    assert SECRET not in shown
    assert shown.startswith("postgresql://u:***@h:5432/db?")
    for name in ("PassWord", "sslpassword", "pwd", "passwd", "auth_token", "password"):
        assert f"{name}=***" in shown, shown
    assert "sslmode=require" in shown
    assert safe_url(f"postgresql:/u:{SECRET}@h/db") == "<invalid database URL, not shown>"
    assert safe_url(f"postgresql://u:p@{SECRET}@h/db") == "<invalid database URL, not shown>"
    # an engine's URL (driver added, charset added) is rendered the same way
    engine = create_tool_engine(f"mysql+pymysql://u@h/db?passwd={SECRET}")
    assert SECRET not in safe_url(engine.url) and "passwd=***" in safe_url(engine.url)


def with_secret_parameter(url: str) -> tuple[str, str]:
    """The test database's URL with SECRET in the query parameter its driver reads a password
    from (or, on SQLite, one it ignores); and that parameter's name."""
    name = {"sqlite": "pwd", "postgresql": "sslpassword", "mysql": "passwd"}[
        make_url(url).get_backend_name()]
    return make_url(url).update_query_dict({name: SECRET}).render_as_string(False), name


def test_a_password_in_a_query_parameter_is_never_printed(sns, tmp_path):
    """stderr's database line, errors, and the archived HTML report's header: never SECRET.
    (PostgreSQL takes sslpassword and connects; MariaDB's passwd is refused by an account with
    no password: the connection error must not show it either.)"""
    url, name = with_secret_parameter(sns.url)
    base = ["--config", str(sns.config_path), "--database-url", url]
    report = tmp_path / "report.html"
    for args in (["status", str(sns.users[0])], ["locks"], ["audit", "verify"],
                 ["audit", "report", "--format", "html", "--output", str(report)],
                 ["apply", "9999", *IDENTITY]):
        result = CliRunner().invoke(cli, [*base, *args], catch_exceptions=False)
        assert "Traceback" not in result.output
        assert SECRET not in result.output, (args, result.output)
        if result.exit_code in (0, 2):  # connected
            assert f"{name}=***" in result.stderr, result.stderr
        else:
            assert_one_line_error(result, 1, "cannot connect to", f"{name}=***")
    if report.exists():
        page = report.read_text(encoding="utf-8")
        assert SECRET not in page and f"{name}=***" in page


# --- 2. init never repairs the audit trail ------------------------------------------------------


def test_a_deleted_head_row_is_an_error_everywhere_and_init_does_not_recreate_it(sns):
    sns.apply(sns.users[0])
    tamper(sns, delete(audit_head))
    before = (sns.everything(), sns.lock_rows(), sns.snapshot_rows(), sns.audit_count())
    message = f"is missing while the trail holds {sns.audit_count()} events"

    result = sns.run("init", expect=None)
    assert_one_line_error(result, 1, message, "will not recreate it", "privacy-lock audit verify")
    assert "nothing to do" not in result.output
    with sns.engine.connect() as conn:
        assert conn.execute(select(audit_head)).first() is None

    result = sns.run("audit", "verify", expect=None)
    assert_one_line_error(result, 1, message, "events 1..")
    assert "beyond the head row" not in result.output  # the real events are not blamed

    result = sns.run("apply", str(sns.users[1]), *IDENTITY, expect=None)
    assert result.exit_code == 1 and message in result.output, result.output
    assert (sns.everything(), sns.lock_rows(), sns.snapshot_rows(), sns.audit_count()) == before


def test_a_fresh_database_still_gets_its_head(db_url, tmp_path):
    sns = build_sns(db_url, tmp_path, init=False)
    engine = create_tool_engine(sns.url)
    with engine.begin() as conn:  # tables made, head lost, no event yet
        create_tool_tables(conn)
    engine.dispose()
    tamper(sns, delete(audit_head))
    result = sns.run("init")
    assert "nothing to do" in result.stdout or "policy stored" in result.stdout
    assert head_of(sns)[0] >= 0
    sns.run("audit", "verify")


# --- 3. ids: one rule, 64 bits ------------------------------------------------------------------

HUGE = "99999999999999999999"


def test_ids_outside_64_bits_are_usage_errors_naming_them(sns):
    sns.apply(sns.users[0])
    before = (sns.everything(), sns.lock_rows(), sns.audit_count())
    for args in (["status", HUGE], ["apply", HUGE, *IDENTITY], ["apply", "1", HUGE, *IDENTITY],
                 ["revert", "--user", HUGE, *IDENTITY]):
        assert_one_line_error(sns.run(*args, expect=None), 2, f"user id '{HUGE}'",
                              "out of range")
    assert_one_line_error(sns.run("status", str(2**63), expect=None), 2, "out of range")
    sns.run("status", str(2**31 - 1), expect=2)  # in range: an unknown user, not a crash
    assert_one_line_error(sns.run("status", str(2**31), expect=None), 2,
                          "out of range" if sns.engine.dialect.name != "sqlite" else "unknown")
    for args in (["revert", HUGE, *IDENTITY], ["audit", "report", "--lock", HUGE],
                 ["approve", HUGE, "--operator", "bob"]):
        assert_one_line_error(sns.run(*args, expect=None), 2, f"'{HUGE}'", "out of range")
    assert (sns.everything(), sns.lock_rows(), sns.audit_count()) == before


@pytest.mark.parametrize("written", ["４２", "+42", "4_2", "4 2", "٤٢", "42.0", "0x2a"])
def test_an_id_in_any_form_but_ascii_digits_is_refused(written):
    with pytest.raises(UsageError, match="is not an integer: use the digits 0-9 only"):
        parse_id(written, "user id")
    with pytest.raises(UsageError, match="is not an integer"):
        parse_id(written, "lock id", minimum=1)


def test_leading_zeros_and_surrounding_spaces_are_the_same_id():
    assert parse_id(" 42 ", "user id") == parse_id("042", "user id") == 42
    assert parse_id("-7", "user id") == -7
    with pytest.raises(UsageError, match="is not an integer"):
        parse_id("-7", "lock id", minimum=1)
    with pytest.raises(UsageError, match=r"'0' is out of range: 1\.\."):
        parse_id("0", "lock id", minimum=1)


def test_the_rule_is_the_same_for_arguments_and_request_files(sns, tmp_path):
    user = sns.users[0]
    refused = [f"+{user}", f"{user}_0", chr(0xFF10 + user), HUGE]
    before = (sns.everything(), sns.lock_rows(), sns.audit_count())
    for written in refused:
        assert_one_line_error(sns.run("status", written, expect=None), 2, f"user id {written!r}")
    path = tmp_path / "tickets.csv"
    path.write_text("user_id,ticket,reason\n" + "".join(f"{w},T-1,r\n" for w in refused),
                    encoding="utf-8")
    result = sns.run("apply", "--from-file", str(path), "--operator", "tester", expect=2)
    for line, written in enumerate(refused, start=2):
        assert f"line {line}: user id {written!r}" in result.stderr, result.stderr
    lock_file = tmp_path / "locks.csv"
    lock_file.write_text(f"lock_id,ticket,reason\n+1,T,r\n{HUGE},T,r\n", encoding="utf-8")
    result = sns.run("revert", "--from-file", str(lock_file), "--operator", "tester", expect=2)
    assert "line 2: lock_id '+1' is not an integer" in result.stderr
    assert f"line 3: lock_id '{HUGE}' is out of range" in result.stderr
    assert (sns.everything(), sns.lock_rows(), sns.audit_count()) == before
    # accepted forms are the same user, in an argument and in a file
    sns.run("apply", f" 0{user} ", *IDENTITY)
    assert [lock["subject"] for lock in sns.lock_rows()] == [str(user)]
    path.write_text(f"user_id,ticket,reason\n00{user},T-2,r\n", encoding="utf-8")
    sns.run("revert", "--from-file", str(path), "--operator", "tester")


# --- 4. what the fuzzer found (tests/test_fuzz.py) -----------------------------------------------


def state(sns) -> tuple:
    return sns.everything(), sns.lock_rows(), sns.snapshot_rows(), sns.audit_count()


def test_a_json_key_written_twice_in_one_object_is_refused_not_read_as_the_last(sns, tmp_path):
    """The json module keeps the last value of a repeated key without a word: {"user_id": 1,
    "user_id": 2} locked user 2, and {"user_id": 1, "User_ID": 2} too (keys ignore case)."""
    first, second = sns.users[0], sns.users[1]
    before = state(sns)
    path = tmp_path / "tickets.json"
    for written in (f'[{{"user_id": {first}, "user_id": {second}}}]',
                    f'[\n{{"ticket": "T-1"}},\n{{"user_id": "{first}", "User_ID": "{second}"}}]',
                    f'[{{" user_id ": {first}, "user_id": {first}}}]'):
        path.write_text(written, encoding="utf-8")
        result = sns.run("apply", "--from-file", str(path), *IDENTITY, expect=None)
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        assert "twice" in result.stderr or "both mean 'user_id'" in result.stderr, result.stderr
        assert state(sns) == before
    path.write_text(f'[{{"user_id": {first}, "USER_ID": {second}}}]', encoding="utf-8")
    result = sns.run("revert", "--from-file", str(path), *IDENTITY, expect=2)
    assert "line 1: object 1: the keys 'user_id' and 'USER_ID' both mean 'user_id'" \
        in result.stderr, result.stderr
    assert state(sns) == before


def test_an_id_of_thousands_of_digits_is_out_of_range_not_a_crash(sns, tmp_path):
    """Python reads no integer of more than 4,300 digits: parse_id and the JSON reader raised
    ValueError (a traceback, exit 1) for a pasted column of digits."""
    digits = "9" * 5000
    with pytest.raises(UsageError, match="out of range"):
        parse_id(digits, "user id")
    with pytest.raises(UsageError, match="out of range"):
        parse_id("-" + "0" * 30 + "1" * 5000, "user id")
    assert parse_id("0" * 5000 + "42", "user id") == 42  # leading zeros are still just zeros
    before = state(sns)
    csv_file = tmp_path / "tickets.csv"
    csv_file.write_text(f"user_id\n{digits}\n", encoding="utf-8")
    result = sns.run("apply", "--from-file", str(csv_file), *IDENTITY, expect=2)
    assert "line 2: user id '99999" in result.stderr and "out of range" in result.stderr
    lock_file = tmp_path / "locks.csv"
    lock_file.write_text(f"lock_id\n{digits}\n", encoding="utf-8")
    result = sns.run("revert", "--from-file", str(lock_file), *IDENTITY, expect=2)
    assert "line 2: lock_id '99999" in result.stderr and "out of range" in result.stderr
    json_file = tmp_path / "tickets.json"
    json_file.write_text(f'[\n{{"user_id": 1}},\n{{"user_id": {digits}}}]', encoding="utf-8")
    result = sns.run("apply", "--from-file", str(json_file), *IDENTITY, expect=2)
    assert "line 3: object 2: a number of more than 4300 digits" in result.stderr
    assert_one_line_error(sns.run("status", digits, expect=None), 2, "out of range")
    assert "Traceback" not in result.output
    assert state(sns) == before


CONTROL_IN_MAP = [  # (key of [content.diary], the value as TOML writes it)
    ("table", "diaries\\u0000"), ("visibility", "\\u001b[31mvisibility"),
    ("owner", "user_id\\n"), ("id", " "), ("private", "se\\u0000lf"),
]


def test_a_control_character_in_a_mapped_name_is_a_config_error(sns):
    """A NUL in a table or column name reached the driver: "the query contains a null
    character" (SQLite) or "NUL characters not allowed" (PostgreSQL), exit 1 as an operational
    failure. A name with a control character is refused before the database is asked."""
    config = sns.config_path.read_text(encoding="utf-8")
    before = state(sns)
    for key, value in CONTROL_IN_MAP:
        head, rest = config.split("[content.diary]")
        diary, photo = rest.split("[content.photo]")
        diary = re.sub(rf"(?m)^{key} = .*$", lambda _m, k=key, v=value: f'{k} = "{v}"',
                       diary, count=1)
        sns.config_path.write_text(f"{head}[content.diary]{diary}[content.photo]{photo}",
                                   encoding="utf-8")
        for args in (["apply", str(sns.users[0]), *IDENTITY], ["status", str(sns.users[0])]):
            result = sns.run(*args, expect=None)
            assert_one_line_error(result, 2, f"content.diary.{key}")
    assert state(sns) == before


def test_an_audit_key_file_name_the_system_cannot_open_is_a_usage_error(sns):
    """A name longer than the system allows made Path.exists() raise OSError: a traceback
    instead of one line about the key file (a NUL in it, ValueError, likewise)."""
    config = sns.config_path.read_text(encoding="utf-8")
    before = state(sns)
    for key_file in ("x" * 5000, "key\\u0000file"):
        sns.config_path.write_text(config + f'\n[audit]\nkey_file = "{key_file}"\n',
                                   encoding="utf-8")
        result = sns.run("apply", str(sns.users[0]), *IDENTITY, expect=None)
        assert_one_line_error(result, 2, "audit key file")
    assert state(sns) == before


def test_values_nested_too_deeply_for_the_readers_are_refused_not_a_crash(sns, tmp_path):
    """The json module and tomllib read nested lists recursively, and tomllib reads integers
    with int(): a request value or a config value nested 100,000 deep was a RecursionError,
    and a 5,000-digit config number a ValueError, each a traceback."""
    before = state(sns)
    deep = "[" * 100_000 + "]" * 100_000
    path = tmp_path / "tickets.json"
    path.write_text(f'[{{"user_id": 1}},\n{{"user_id": {deep}}}]', encoding="utf-8")
    result = sns.run("apply", "--from-file", str(path), *IDENTITY, expect=2)
    assert "line 2: object 2: lists or objects nested too deeply" in result.stderr
    config = sns.config_path.read_text(encoding="utf-8")
    for value, problem in ((deep, "nested too deeply"), ("{a = " * 5_000 + "1" + "}" * 5_000,
                                                        "nested too deeply"),
                           ("9" * 5_000, "a number of more than 4300 digits")):
        sns.config_path.write_text(f"{config}\n[database]\nx = {value}\n", encoding="utf-8")
        assert_one_line_error(sns.run("apply", str(sns.users[0]), *IDENTITY, expect=None), 2,
                              "invalid TOML", problem)
    assert state(sns) == before


def test_a_file_option_naming_a_path_the_system_refuses_is_a_usage_error(sns, tmp_path):
    """A name longer than the system allows made Path.is_dir()/exists() raise OSError in the
    --output check and before the first chunk (--pause-file): a traceback, exit 1."""
    long_name = str(tmp_path / ("x" * 5000))
    long_csv = long_name + ".csv"  # --output goes by its extension: a name without one is
    before = state(sns)             # refused before its length is looked at
    for args, problem in (
        (["apply", str(sns.users[0]), *IDENTITY, "--output", long_csv], "cannot write"),
        (["revert", "--user", str(sns.users[0]), *IDENTITY, "--output", long_csv],
         "cannot write"),
        (["apply", str(sns.users[0]), *IDENTITY, "--pause-file", long_name], "--pause-file"),
        (["audit", "report", "--output", long_csv], "cannot write"),
        (["audit", "checkpoint", "--output", long_name], "cannot write"),
    ):
        result = sns.run(*args, expect=None)
        assert_one_line_error(result, 2, problem, "File name too long")
    assert state(sns) == before


def test_a_table_name_the_database_cannot_hold_is_a_config_error(sns):
    """MariaDB answers a name beyond U+FFFF ("Invalid utf8mb4 character string") or longer
    than 64 characters ("Identifier name is too long") with an error, which ended the command
    as a database failure, exit 1; every database now refuses such a map with exit 2."""
    config = sns.config_path.read_text(encoding="utf-8")
    before = state(sns)
    for name in ("\U00010000", "diaries\U0001f600", "x" * 70_000):
        for key in ("accounts", "content.diary"):
            head, rest = config.split(f"[{key}]")
            rest = rest.replace('table = "users"' if key == "accounts" else 'table = "diaries"',
                                f'table = "{name}"', 1)
            sns.config_path.write_text(f"{head}[{key}]{rest}", encoding="utf-8")
            result = sns.run("apply", str(sns.users[0]), *IDENTITY, expect=None)
            assert_one_line_error(result, 2, f"{key}.table")
    assert state(sns) == before


def test_a_table_name_in_another_case_is_a_config_error_on_every_database(sns):
    """SQLite finds 'DIARIES' when the table is 'diaries', but asked the inspector for its
    unique constraints under the name as written and failed: a database error, exit 1.
    PostgreSQL and MariaDB on Linux do not find it at all. Every database now says how the
    database spells it, exit 2."""
    config = sns.config_path.read_text(encoding="utf-8")
    before = state(sns)
    for written, key in (("DIARIES", "content.diary"), ("Users", "accounts")):
        original = "diaries" if key == "content.diary" else "users"
        sns.config_path.write_text(config.replace(f'table = "{original}"',
                                                  f'table = "{written}"', 1), encoding="utf-8")
        result = sns.run("apply", str(sns.users[0]), *IDENTITY, expect=None)
        line = assert_one_line_error(result, 2, f"{key}.table", repr(written))
        if sns.engine.dialect.name == "sqlite":
            assert f"spelled {original!r}" in line, line
    assert state(sns) == before
