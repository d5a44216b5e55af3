"""Click's own usage errors read like every other error (`privacy-lock: error: ...`, one line,
exit 2, nothing changed), and every option has help text."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from privacy_lock.cli import cli


def run(*args: str):
    return CliRunner().invoke(cli, list(args), prog_name="privacy-lock")


@pytest.mark.parametrize(("args", "expected"), [
    (("--nope",), "privacy-lock: error: No such option '--nope'. (see `privacy-lock --help`)"),
    (("apply", "1", "--oprator", "x"),
     "privacy-lock: error: apply: No such option '--oprator'. Did you mean '--operator'? "
     "(see `privacy-lock apply --help`)"),
    (("apply", "--chunk-size", "0", "1"), "privacy-lock: error: apply: Invalid value for "
     "'--chunk-size': 0 is not in the range 1<=x<=10000. (see `privacy-lock apply --help`)"),
    (("audit", "verify", "--bogus"), "privacy-lock: error: audit verify: No such option "
     "'--bogus'. (see `privacy-lock audit verify --help`)"),
    (("reject",), "privacy-lock: error: reject: Missing argument 'REQUEST_ID|FROM-TO...'. "
     "(see `privacy-lock reject --help`)"),
    (("nosuch",), "privacy-lock: error: No such command 'nosuch'. (see `privacy-lock --help`)"),
    (("locks", "--state", "gone"), "privacy-lock: error: locks: Invalid value for '--state': "
     "'gone' is not one of 'active', 'reverted', 'all'. (see `privacy-lock locks --help`)"),
])
def test_click_usage_errors_are_one_privacy_lock_line_exit_2(args, expected, tmp_path,
                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = run(*args)
    assert out.exit_code == 2
    assert out.stderr.splitlines() == [expected]
    assert out.stdout == ""
    assert not list(tmp_path.iterdir())  # nothing was created (no database, no config)


def test_help_still_works_and_exits_0():
    out = run("approve", "--help")
    assert out.exit_code == 0 and "--all-pending" in out.stdout
    assert run("--version").exit_code == 0


def every_option(command: click.Command, path: str = ""):
    for param in command.params:
        if isinstance(param, click.Option):
            yield f"{path} {param.opts[0]}".strip(), param
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from every_option(sub, f"{path} {name}".strip())


def test_every_option_has_help_text():
    missing = [name for name, option in every_option(cli)
               if not option.help and not option.hidden and name.split()[-1] != "--help"]
    assert missing == []
