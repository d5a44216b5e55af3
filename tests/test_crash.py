"""kill -9 at any moment, then re-run the same command: the job finishes and no original is lost."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

from sns import IDENTITY, build_sns


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
