"""The README's quick start is real: its commands run and print what the README shows.
Every command's --help carries an example."""

from __future__ import annotations

import re
import shlex

import click
from click.testing import CliRunner

from helpers import README, RUN_DURATION, readme_transcript
from privacy_lock.cli import cli

# Parts of the output that differ from run to run: durations, hashes, clock times, accounts.
VOLATILE = [
    RUN_DURATION,
    (re.compile(r"\b[0-9a-f]{64}\b"), "HASH"),
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"), "TIME"),
    (re.compile(r"OS account \([^)]*\)"), "OS account (USER@HOST)"),
]


def normalize(text: str, tmp: str) -> list[str]:
    text = text.replace(tmp, "/tmp/tmp.x1")
    for pattern, replacement in VOLATILE:
        text = pattern.sub(replacement, text)
    return [line.rstrip() for line in text.strip().splitlines()]


def quickstart_transcript() -> list[tuple[str, list[str]]]:
    """(command, expected output lines) from the README's console block."""
    return readme_transcript("<!-- quickstart-output")


def test_quickstart_output_is_what_the_tool_prints(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PRIVACY_LOCK_CONFIG", raising=False)
    monkeypatch.delenv("PRIVACY_LOCK_DATABASE_URL", raising=False)
    steps = quickstart_transcript()
    assert [cmd.split()[1] for cmd, _ in steps] == [
        "demo", "apply", "status", "revert", "approve", "audit"]
    for command, expected in steps:
        args = shlex.split(command)
        assert args[0] == "privacy-lock"
        result = CliRunner().invoke(cli, args[1:], catch_exceptions=False)
        assert result.exit_code == 0, (command, result.output)
        real = normalize(result.output, str(tmp_path.resolve()))
        assert real == normalize("\n".join(expected), str(tmp_path.resolve())), command


def test_the_one_line_quickstart_runs_the_same_commands():
    text = README.read_text(encoding="utf-8")
    one_liner = next(line for line in text.splitlines()
                     if line.startswith("python3 -m venv .venv && . .venv/bin/activate"))
    run = [part.strip() for part in one_liner.split("&&") if "privacy-lock" in part]
    assert run == [cmd for cmd, _ in quickstart_transcript()]


def test_ci_runs_the_readmes_test_command():
    text = README.read_text(encoding="utf-8")
    command = "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && " \
              ".venv/bin/python -m pytest"
    assert command in text
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert ci.rstrip().splitlines()[-1] == command


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command


def test_every_command_has_help_with_an_example():
    for path, _command in _commands(cli):
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, path
        assert "Example:" in result.output, f"`privacy-lock {' '.join(path)} --help` lacks one"
