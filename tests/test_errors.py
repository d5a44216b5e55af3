"""Bad input never loses data: one clear line on stderr, the right exit code, nothing changed,
no traceback (unless --debug), and never a password."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from privacy_lock.cli import cli
from sns import IDENTITY, build_sns


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def assert_one_line_error(result, code, *fragments):
    assert result.exit_code == code, (result.exit_code, result.output)
    errors = [line for line in result.stderr.splitlines() if line.startswith("privacy-lock: ")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.fixture
def sns(db_url, tmp_path):
    return build_sns(db_url, tmp_path)


def test_unknown_user_unknown_kind_and_bad_ids_change_nothing(sns):
    before, audit_before = sns.everything(), sns.audit_count()
    assert_one_line_error(sns.run("apply", "9999", *IDENTITY, expect=None), 2,
                          "unknown user '9999'")
    # one bad user among good ones: validated before anything changes
    good = str(sns.users[0])
    assert_one_line_error(sns.run("apply", good, "9999", *IDENTITY, expect=None), 2, "9999")
    assert_one_line_error(sns.run("apply", good, "--kind", "album", *IDENTITY, expect=None), 2,
                          "unknown kind 'album'", "diary, photo")
    assert_one_line_error(sns.run("revert", "424242", *IDENTITY, expect=None), 2,
                          "no lock with id 424242")
    assert_one_line_error(sns.run("apply", good, expect=None), 2, "--operator")
    assert sns.everything() == before and sns.lock_rows() == []
    assert sns.audit_count() == audit_before


def test_config_mistakes_name_the_key_table_or_column(sns, tmp_path):
    good = sns.config_path.read_text()
    cases = [
        (good.replace('owner = "user_id"', 'owner = "userid"'), "content.diary.owner", "userid"),
        (good.replace('table = "photos"', 'table = "fotos"'), "content.photo.table", "fotos"),
        (good.replace("visibility = \"visibility\"", "visiblity = \"visibility\""),
         "unknown key", "visiblity"),
        (good + "\n[extra]\nx = 1\n", "unknown section", "extra"),
        (good.replace("[content.diary]", "[content.diary"), "invalid TOML", ""),
        (good.replace('private = "self"', "private = 9", 1), "content.diary.private", "9"),
    ]
    for text, *fragments in cases:
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        result = invoke("--config", str(bad), "--database-url", sns.url,
                        "apply", str(sns.users[0]), *IDENTITY)
        assert_one_line_error(result, 2, *[f for f in fragments if f])
    assert sns.lock_rows() == []
    result = invoke("--config", str(tmp_path / "missing.toml"), "status", "1")
    assert_one_line_error(result, 2, "missing.toml not found")


def test_missing_tool_tables_say_run_init(db_url, tmp_path):
    sns = build_sns(db_url, tmp_path, init=False)
    before = sns.everything()
    for args in (["apply", str(sns.users[0]), *IDENTITY], ["locks"], ["audit", "verify"]):
        result = sns.run(*args, expect=None)
        assert_one_line_error(result, 1, "run `privacy-lock init`")
    assert sns.everything() == before


def test_read_only_database_fails_cleanly_without_partial_change(db_url, tmp_path, dialect):
    sns = build_sns(db_url, tmp_path)
    before = sns.everything()
    url = make_url(db_url)
    if dialect == "sqlite":
        read_only = f"sqlite:///file:{url.database}?mode=ro&uri=true"
    elif dialect == "postgresql":
        options = url.query.get("options", "") + " -cdefault_transaction_read_only=on"
        read_only = url.update_query_dict({"options": options}).render_as_string(False)
    else:
        read_only = url.update_query_dict(
            {"init_command": "SET SESSION TRANSACTION READ ONLY"}
        ).render_as_string(False)
    result = invoke("--config", str(sns.config_path), "--database-url", read_only,
                    "apply", str(sns.users[0]), *IDENTITY)
    assert_one_line_error(result, 1, "database error")
    assert sns.everything() == before and sns.lock_rows() == []


def test_unreachable_database_and_bad_urls(tmp_path):
    result = invoke("--database-url", "postgresql://support:s3cret@127.0.0.1:1/sns", "locks")
    assert_one_line_error(result, 1, "cannot connect", "support:***@127.0.0.1:1/sns")
    assert "s3cret" not in result.output
    assert_one_line_error(invoke("--database-url", "not a url", "locks"), 2, "invalid database URL")
    assert_one_line_error(invoke("--database-url", "oracle+nodriver://x/y", "locks"), 2,
                          "oracle+nodriver")
    missing = tmp_path / "typo.db"
    result = invoke("--database-url", f"sqlite:///{missing}", "locks")
    assert_one_line_error(result, 1, "does not exist")
    assert not missing.exists()  # a typo in a path never creates an empty database


def test_debug_shows_the_traceback_and_keeps_the_exit_code(tmp_path):
    missing = ["--database-url", f"sqlite:///{tmp_path / 'x.db'}", "locks"]
    result = invoke("--debug", *missing)
    assert result.exit_code == invoke(*missing).exit_code == 1
    assert "Traceback" in result.stderr and "DatabaseError" in result.stderr
    assert "does not exist" in result.stderr.splitlines()[-1]


def test_debug_keeps_exit_2_for_a_usage_error(sns):
    """--debug used to turn every 2 into 1 (the exception escaped to Python)."""
    before = sns.everything()
    result = invoke("--debug", "--config", str(sns.config_path), "--database-url", sns.url,
                    "apply", "9999", *IDENTITY)
    assert result.exit_code == 2, result.output
    assert "Traceback" in result.stderr and "UsageError" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("privacy-lock: error: unknown user '9999'")
    assert sns.everything() == before and sns.lock_rows() == []


def test_every_command_names_its_database_without_the_password(sns):
    for args in (["status", str(sns.users[0])], ["locks"], ["audit", "verify"]):
        result = sns.run(*args)
        shown = make_url(sns.url).render_as_string(hide_password=True)
        assert f"database: {shown}" in result.stderr
