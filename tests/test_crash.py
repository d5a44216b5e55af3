"""A crash at any instant leaves every item untouched or changed-with-snapshot, and re-running
the same command finishes: a crash inside a chunk of each shape rolls it back whole; kill -9 at
seeded random moments of apply and revert runs, and the tool's database connection terminated
under it (PostgreSQL ``pg_terminate_backend``, MariaDB ``KILL``).

The default run kills the tool ``KILLS`` times per dialect and terminates its connection
``CONNECTION_KILLS`` times; ``PRIVACY_LOCK_LONG=1`` raises both to hundreds. Kill points come
from a random seed printed with any failure; ``PRIVACY_LOCK_CRASH_SEED=N`` replays one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import MetaData, select, text

from helpers import SHAPES, assert_locked_with_originals, events
from privacy_lock import engine as core
from sns import IDENTITY, Sns, build_sns

LONG = os.environ.get("PRIVACY_LOCK_LONG") == "1"
KILLS = 300 if LONG else 20  # kill -9 per dialect
CONNECTION_KILLS = 100 if LONG else 4  # terminated connections per server dialect
PACE = ("--chunk-size", "7", "--sleep", "0.01")


@pytest.fixture(params=list(SHAPES))
def shape(request):
    return SHAPES[request.param]


def crash(*_args):
    raise KeyboardInterrupt  # the process dies after the UPDATE, before the commit


def test_a_crash_inside_a_chunk_leaves_nothing_then_a_rerun_finishes(db_url, tmp_path, shape,
                                                                     monkeypatch):
    sns = shape.prepare(build_sns(db_url, tmp_path))
    before, audit_before = sns.everything(), sns.audit_count()
    monkeypatch.setattr(core, "append_events", crash)
    with pytest.raises(KeyboardInterrupt):
        shape.run(sns, "apply", *sns.users)
    assert sns.everything() == before
    assert sns.lock_rows() == [] and sns.snapshot_rows() == []
    assert sns.audit_count() == audit_before

    monkeypatch.undo()
    shape.cli(sns, "apply", *sns.users)
    assert_locked_with_originals(sns, before, sns.users)
    for user in sns.users:
        shape.assert_trail(sns, "apply", user)
    assert "events valid" in sns.run("audit", "verify").stdout


def test_a_crash_inside_a_revert_chunk_leaves_every_lock_as_it_was(db_url, tmp_path, shape,
                                                                   monkeypatch):
    sns = shape.prepare(build_sns(db_url, tmp_path))
    before = sns.everything()
    sns.apply(*sns.users)
    locked, snapshots_then = sns.everything(), sns.snapshot_rows()
    audit_then = sns.audit_count()
    monkeypatch.setattr(core, "append_events", crash)
    with pytest.raises(KeyboardInterrupt):
        shape.run(sns, "revert", *sns.users)
    assert sns.everything() == locked and sns.snapshot_rows() == snapshots_then
    assert {r["state"] for r in sns.lock_rows()} == {"active"}
    assert sns.audit_count() == audit_then

    monkeypatch.undo()
    shape.cli(sns, "revert", *sns.users)
    assert sns.everything() == before
    assert [s for _a, s, _d in events(sns, "revert")] == [str(u) for u in sns.users]


def _cli(sns: Sns, *args: str) -> list[str]:
    return [sys.executable, "-m", "privacy_lock", "--config", str(sns.config_path),
            "--database-url", sns.url, *args]


class Forked:
    """``privacy-lock ARGS`` in a forked child of the test process: the same code path as the
    command line (Click's ``main``, exit codes), without paying an interpreter's start-up for
    every one of the many runs a kill test starts. Its stderr is kept for the checks."""

    def __init__(self, args: list[str], err_path: Any) -> None:
        self.err_path = err_path
        self.returncode: int | None = None
        self.pid = os.fork()
        if self.pid == 0:  # the child: run the command, never return into pytest
            code = 1
            try:
                err = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)
                os.dup2(err, 2)
                # pytest's capture replaced sys.stdout/stderr with files of its own
                sys.stdout = open(devnull, "w", closefd=False)  # noqa: SIM115
                sys.stderr = open(err, "w", buffering=1, closefd=False)  # noqa: SIM115
                from privacy_lock.cli import cli

                try:
                    cli.main(args=args[3:], prog_name="privacy-lock")
                    code = 0
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else 1
            finally:
                with contextlib.suppress(Exception):
                    sys.stderr.flush()
                os._exit(code)

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                raise AssertionError(f"the command did not end within {timeout} s")
            time.sleep(0.005)
        assert self.returncode is not None
        return self.returncode

    def stderr(self) -> str:
        with open(self.err_path, encoding="utf-8", errors="replace") as err:
            return err.read()


def _seed() -> int:
    return int(os.environ.get("PRIVACY_LOCK_CRASH_SEED") or random.SystemRandom().randrange(10**9))


@contextlib.contextmanager
def seed_on_failure(seed: int) -> Iterator[None]:
    """Any failure names the seed that replays the same kill points."""
    try:
        yield
    except BaseException as exc:
        raise AssertionError(f"{exc}\n[kill points from seed {seed}: replay with "
                             f"PRIVACY_LOCK_CRASH_SEED={seed}]") from exc


def content_checksum(sns: Sns) -> str:
    """A digest of every row, every column, of every content table (and the accounts)."""
    meta = MetaData()
    meta.reflect(sns.engine, only=["users", "diaries", "photos"])
    digest = hashlib.sha256()
    with sns.engine.connect() as conn:
        for name in sorted(meta.tables):
            table = meta.tables[name]
            for row in conn.execute(select(table).order_by(*table.primary_key.columns)):
                digest.update(repr((name, tuple(row))).encode())
    return digest.hexdigest()


def assert_untouched_or_snapshotted(sns: Sns, before: dict[str, Any]) -> None:
    """Every item is either as it was, or owner-only with a snapshot of its lock still
    ``locked`` holding exactly what it was."""
    held = {(s["kind"], s["item_id"]): sns.original_of(s)
            for s in sns.snapshot_rows() if s["state"] == "locked"}
    for kind, rows in sns.everything().items():
        for item, (owner, vis) in rows.items():
            was = before[kind][item]
            if (kind, str(item)) in held:
                assert vis == sns.private and held[(kind, str(item))] == was[1], (kind, item)
            else:
                assert (owner, vis) == was, (kind, item, vis, was)


def _progress(sns: Sns) -> tuple[int, int]:
    """Snapshots written and snapshots resolved: grows with every committed chunk."""
    rows = sns.snapshot_rows()
    return len(rows), sum(1 for s in rows if s["state"] != "locked")


def _run_to_the_end(cmd: list[str], err_path: Any) -> None:
    done = Forked(cmd, err_path)
    assert done.wait(300) == 0, done.stderr()
    assert "Traceback" not in done.stderr()


def _cycle(sns: Sns, rng: random.Random, rounds: int, interrupt: Callable[[Forked], bool],
           before: dict[str, Any]) -> int:
    """Alternate apply and revert of the first user, interrupting each run at a seeded random
    moment (``interrupt`` returns whether it cut the run short); a run that finished switches
    to the other command. After each interruption every item is untouched or snapshotted.
    Ends with the runs that finish the last apply and revert; returns how many runs were cut
    short."""
    user = str(sns.users[0])
    commands = {"apply": _cli(sns, "apply", user, *IDENTITY, *PACE),
                "revert": _cli(sns, "revert", "--user", user, *IDENTITY, *PACE)}
    mode, cut = "apply", 0
    err_path = sns.config_path.parent / "stderr.txt"
    while cut < rounds:
        start = _progress(sns)
        proc = Forked(commands[mode], err_path)
        if rng.random() < 0.8:  # mostly mid-run: after the next commit, a few ms later
            deadline = time.monotonic() + 60
            while _progress(sns) == start and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.random() * 0.03)
        else:  # at any moment from start-up on (reflection, the plan, the first chunk)
            time.sleep(rng.random() * 0.5)
        if proc.poll() is None and interrupt(proc):
            cut += 1
        proc.wait(120)
        assert "Traceback" not in proc.stderr(), proc.stderr()
        if proc.returncode == 0:
            mode = "revert" if mode == "apply" else "apply"
        assert_untouched_or_snapshotted(sns, before)
    if mode == "apply" and _active(sns):  # cut short mid-apply: finish it first
        _run_to_the_end(commands["apply"], err_path)
    if _active(sns):
        _run_to_the_end(commands["revert"], err_path)
    return cut


def _active(sns: Sns) -> bool:
    return any(r["state"] != "reverted" for r in sns.lock_rows())


def _kill9(proc: Forked) -> bool:
    os.kill(proc.pid, signal.SIGKILL)
    return True


def test_kill_9_at_random_moments_then_a_rerun_finishes_with_nothing_lost(db_url, tmp_path):
    seed = _seed()
    sns = build_sns(db_url, tmp_path, items_per_value=12)
    checksum, before = content_checksum(sns), sns.everything()
    with seed_on_failure(seed):
        killed = _cycle(sns, random.Random(seed), KILLS, _kill9, before)
        assert killed == KILLS
        assert content_checksum(sns) == checksum
        assert {s["state"] for s in sns.snapshot_rows()} == {"restored"}
        assert {r["state"] for r in sns.lock_rows()} == {"reverted"}
        assert "events valid" in sns.run("audit", "verify").stdout


_TAG = "privacy-lock-crash-test"


def _terminator(sns: Sns, dialect: str) -> Callable[[Forked], bool]:
    """Ends the tool's database session from another one, as a DBA would."""
    def terminate(proc: Forked) -> bool:
        with sns.engine.connect() as conn:
            if dialect == "postgresql":
                ended = conn.execute(text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = :tag"), {"tag": _TAG}).scalar()
            else:
                ids = conn.execute(text(
                    "SELECT id FROM information_schema.PROCESSLIST WHERE db = DATABASE() "
                    "AND id <> CONNECTION_ID()")).scalars().all()
                ended = 0
                for session in ids:
                    with contextlib.suppress(Exception):  # it may have just left
                        conn.execute(text(f"KILL {int(session)}"))
                        ended += 1
        return bool(ended)
    return terminate


def test_connection_killed_at_random_moments_then_a_rerun_finishes(db_url, tmp_path, dialect):
    if dialect == "sqlite":
        pytest.skip("SQLite has no server session to end (kill -9 covers it)")
    seed = _seed()
    sns = build_sns(db_url, tmp_path, items_per_value=12)
    if dialect == "postgresql":  # name the tool's session so that only it is ended
        url = sns.engine.url.update_query_dict({"application_name": _TAG})
        sns.url = url.render_as_string(hide_password=False)
    checksum, before = content_checksum(sns), sns.everything()
    with seed_on_failure(seed):
        ended = _cycle(sns, random.Random(seed), CONNECTION_KILLS, _terminator(sns, dialect),
                       before)
        assert ended == CONNECTION_KILLS
        assert content_checksum(sns) == checksum
        assert {s["state"] for s in sns.snapshot_rows()} == {"restored"}
        assert "events valid" in sns.run("audit", "verify").stdout
