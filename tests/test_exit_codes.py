"""One exit-code rule: 0 done; 1 an operational failure, a failed request or a run stopped by
Ctrl-C; 2 a usage or validation error, and then nothing changed. A result file is checked
writable before the run and written whole."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from privacy_lock import errors, output, pacing, service
from privacy_lock.cli import cli
from privacy_lock.errors import Interrupted, OutputError, PrivacyLockError, UsageError
from privacy_lock.pacing import Pacer
from sns import IDENTITY, build_sns


@pytest.fixture
def sns(db_url, tmp_path):
    return build_sns(db_url, tmp_path)


def one_error(result, code: int) -> str:
    """The single `privacy-lock: error:` line of a result that exited with ``code``."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    [line] = [x for x in result.stderr.splitlines() if x.startswith("privacy-lock: error:")]
    return line


def request_file(sns, tmp_path) -> str:
    path = tmp_path / "req.csv"
    path.write_text("user_id\n" + "".join(f"{u}\n" for u in sns.users), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("dry_run", [False, True], ids=["real", "dry-run"])
def test_an_unwritable_output_is_refused_before_anything_changes(sns, tmp_path, dry_run):
    """apply --output missing/dir/out.csv used to commit the locks, then print a traceback."""
    before, audit_before = sns.everything(), sns.audit_count()
    extra = ["--dry-run"] if dry_run else []
    where = tmp_path / "missing" / "dir" / "out.csv"
    result = sns.run("apply", "--from-file", request_file(sns, tmp_path), *IDENTITY,
                     "--output", str(where), *extra, expect=None)
    line = one_error(result, 2)
    assert str(where) in line and "does not exist; nothing was changed" in line
    (tmp_path / "a-directory").mkdir()  # Click's own check (dir_okay=False) says so: exit 2
    result = sns.run("apply", "--from-file", request_file(sns, tmp_path), *IDENTITY,
                     "--output", str(tmp_path / "a-directory"), *extra, expect=2)
    assert "is a directory" in result.stderr
    assert sns.everything() == before and sns.lock_rows() == []
    assert sns.audit_count() == audit_before


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any directory")
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_read_only_output_directory_is_refused_before_anything_changes(sns, tmp_path):
    locked = tmp_path / "read-only"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        result = sns.run("apply", str(sns.users[0]), *IDENTITY, "--output",
                         str(locked / "out.csv"), expect=None)
    finally:
        locked.chmod(0o755)
    assert "Permission denied" in one_error(result, 2)
    assert sns.lock_rows() == []


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_revert_requests_and_audit_report_check_their_output_first(sns, tmp_path):
    sns.run("apply", str(sns.users[0]), *IDENTITY)
    # the two-person rule (the database's policy): revert files a request
    sns.run("policy", "set", "revert_requires_approval", "true", *IDENTITY)
    missing = str(tmp_path / "nowhere" / "out.csv")
    audit_before = sns.audit_count()
    one_error(sns.run("revert", "--user", str(sns.users[0]), *IDENTITY, "--output", missing,
                      expect=None), 2)
    assert sns.audit_count() == audit_before  # no request filed
    one_error(sns.run("audit", "report", "--output", missing, expect=None), 2)
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_results_are_written_whole_and_a_late_write_failure_exits_1(sns, tmp_path,
                                                                     monkeypatch):
    out = tmp_path / "result.csv"
    sns.run("apply", str(sns.users[0]), *IDENTITY, "--output", str(out))
    assert out.read_text(encoding="utf-8").startswith("user,lock,status,kind")
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []

    def disk_full(path, text):
        raise OutputError(f"cannot write {path}: No space left on device")

    monkeypatch.setattr(output, "write_text", disk_full)
    result = sns.run("apply", str(sns.users[1]), *IDENTITY, "--output", str(out),
                     expect=None)
    assert "No space left on device" in one_error(result, 1)  # the run stands: 1, not 2
    assert "locked" in result.stdout  # and its outcome is still shown
    assert len(sns.lock_rows()) == 2


def test_write_text_replaces_the_file_only_when_whole(tmp_path):
    path = tmp_path / "report.txt"
    path.write_text("old\n", encoding="utf-8")

    def pieces():
        yield "new "
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="No space left"):
        output.write_text(path, pieces())
    assert path.read_text(encoding="utf-8") == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.txt"]
    output.write_text(path, ["new ", "text"])
    assert path.read_text(encoding="utf-8") == "new text\n"


def test_interrupted_is_not_a_request_failure_and_exits_1():
    assert not issubclass(Interrupted, PrivacyLockError)  # request handling cannot swallow it
    assert pacing.Interrupted is Interrupted and pacing.LockTimeoutError is errors.LockTimeoutError
    assert errors.exit_code(Interrupted("stopped")) == 1
    assert errors.exit_code(UsageError("bad")) == 2
    assert errors.exit_code(errors.LockTimeoutError("busy")) == 1


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_ctrl_c_through_the_service_stops_between_chunks(sns):
    """The first committed chunk 'presses Ctrl-C': the run ends interrupted, exit 1, and every
    hidden item has its snapshot."""
    pacer = Pacer(4)

    class StopAfterFirstChunk:
        def item_done(self, user, kind, items):
            pacer._stop = True  # what the SIGINT handler does

        def user_done(self, user, status): ...
        def note(self, message): ...
        def close(self): ...

    target = service.Target.load(str(sns.config_path), sns.url)
    result = service.apply(target, [str(u) for u in sns.users],
                           identity=service.Identity("tester", "T-1", "test"), pacer=pacer,
                           progress=lambda items, users: StopAfterFirstChunk())
    target.dispose()
    assert result.interrupted and result.ending is service.Ending.INTERRUPTED
    assert result.failed and {o.status for o in result.failed} <= {"interrupted", "not-started"}
    hidden = sum(1 for u in sns.users for v in sns.items_of(u).values() if v == sns.private)
    private_before = 3 * 2 * 3  # three users, two kinds, three items already owner-only
    assert hidden - private_before == len(sns.snapshot_rows()) > 0


def test_ctrl_c_that_reaches_the_cli_is_one_line_and_exit_1(monkeypatch, tmp_path):
    def stopped(*_args, **_kwargs):
        raise Interrupted("interrupted by Ctrl-C")

    monkeypatch.setattr(service, "apply", stopped)
    result = CliRunner().invoke(cli, ["apply", "1", *IDENTITY], catch_exceptions=False)
    assert one_error(result, 1) == "privacy-lock: error: interrupted by Ctrl-C"


def test_check_writable_names_what_is_wrong_and_leaves_nothing(tmp_path):
    with pytest.raises(UsageError, match="it is a directory"):
        output.check_writable(tmp_path)
    with pytest.raises(UsageError, match="directory .*no does not exist"):
        output.check_writable(tmp_path / "no" / "x.csv")
    (tmp_path / "x.failed.csv").mkdir()
    with pytest.raises(UsageError, match=r"x\.failed\.csv: it is a directory"):
        output.check_writable(tmp_path / "x.csv", with_failed=True)
    output.check_writable(tmp_path / "ok.csv", with_failed=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.failed.csv"]
