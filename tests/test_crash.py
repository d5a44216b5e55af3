"""A crash at any instant leaves every item untouched or changed-with-snapshot, and re-running
the same command finishes: a crash inside a chunk of each shape rolls it back whole; kill -9 at
any moment of a run."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from helpers import SHAPES, assert_locked_with_originals, events
from privacy_lock import engine as core
from sns import IDENTITY, build_sns


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


def _cli(sns, *args):
    return [sys.executable, "-m", "privacy_lock", "--config", str(sns.config_path),
            "--database-url", sns.url, *args]


def _kill_while_running(cmd, progress, rng, rounds):
    """Start ``cmd`` ``rounds`` times; each time, once it has committed more work than before,
    SIGKILL it a random few milliseconds later (inside a chunk or between two). Returns the
    progress seen after each kill."""
    seen = []
    for _ in range(rounds):
        start = progress()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while progress() == start and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.random() * 0.03)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        seen.append(progress())
    return seen


def test_kill_during_apply_and_revert_then_rerun_finishes_with_nothing_lost(db_url, tmp_path):
    sns = build_sns(db_url, tmp_path, items_per_value=30)
    user = sns.users[0]
    before = sns.everything()
    visible = {(k, str(i)): v for (k, i), v in sns.items_of(user).items() if v != sns.private}
    rng = random.Random(20261128)
    pace = ("--chunk-size", "7", "--sleep", "0.01")

    apply_cmd = _cli(sns, "apply", str(user), *IDENTITY, *pace)
    seen = _kill_while_running(apply_cmd, lambda: len(sns.snapshot_rows()), rng, rounds=3)
    assert 0 < seen[0] < len(visible), seen  # the first kill really landed mid-run
    partial = sns.items_of(user)
    for snap in sns.snapshot_rows():  # every item changed so far has its snapshot, and back
        item = next(i for k, i in partial if k == snap["kind"] and str(i) == snap["item_id"])
        assert partial[(snap["kind"], item)] == sns.private
    hidden = sum(1 for v in partial.values() if v == sns.private) - (len(partial) - len(visible))
    assert hidden == len(sns.snapshot_rows())
    done = subprocess.run(apply_cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr

    assert all(v == sns.private for v in sns.items_of(user).values())
    snaps = sns.snapshot_rows()
    assert len(sns.lock_rows()) == 1
    assert {(s["kind"], s["item_id"]): sns.original_of(s) for s in snaps} == visible
    assert len(snaps) == len(visible)  # nothing snapshotted twice

    def restored():
        return sum(1 for s in sns.snapshot_rows() if s["state"] != "locked")

    revert_cmd = _cli(sns, "revert", "--user", str(user), *IDENTITY, *pace)
    seen = _kill_while_running(revert_cmd, restored, rng, rounds=3)
    assert 0 < seen[0] < len(visible), seen
    done = subprocess.run(revert_cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sns.everything() == before
    assert {s["state"] for s in sns.snapshot_rows()} == {"restored"}
    assert sns.lock_rows()[0]["state"] == "reverted"
    verify = sns.run("audit", "verify")
    assert "events valid" in verify.stdout
