"""The live site keeps writing while apply/revert run: no edit is lost or mis-snapshotted, runs
finish, and two operators locking the same person at once produce one lock."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time

from sqlalchemy import create_engine, event, text, update
from sqlalchemy.pool import NullPool

from privacy_lock import locking
from privacy_lock.audit import Actor
from privacy_lock.pacing import Pacer
from sns import IDENTITY, build_sns, tool_session


class SiteWriter(threading.Thread):
    """Keeps setting random visible values on one user's items, one short transaction each,
    and remembers the last value it committed per item."""

    def __init__(self, sns, keys, seed):
        super().__init__(daemon=True)
        self.sns, self.keys, self.rng = sns, keys, random.Random(seed)
        self.last: dict = {}
        self.stop = threading.Event()
        self.writes = 0
        self.error: BaseException | None = None
        connect_args = {"timeout": 30} if sns.url.startswith("sqlite") else {}
        self.engine = create_engine(sns.url, poolclass=NullPool, connect_args=connect_args)

    def run(self):
        try:
            while not self.stop.is_set():
                kind, item_id = self.rng.choice(self.keys)
                value = self.rng.choice([self.sns.public, self.sns.friends])
                table = self.sns.tables[kind]
                id_col, _, vis_col = self.sns.columns[kind]
                with self.engine.begin() as conn:
                    conn.execute(update(table).where(table.c[id_col] == item_id)
                                 .values({vis_col: value}))
                self.last[(kind, item_id)] = value
                self.writes += 1
        except BaseException as exc:  # noqa: BLE001 - surfaced by the test
            self.error = exc

    def finish(self):
        self.stop.set()
        self.join(timeout=60)
        self.engine.dispose()
        assert self.error is None, self.error
        assert self.writes > 0


def widen_race_window(engine, seconds=0.02):
    """Test instrumentation: pause before each content UPDATE the tool sends, so a site edit
    would land between the tool reading a row and changing it, if the row were not locked."""
    @event.listens_for(engine, "before_cursor_execute")
    def _pause(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith(("UPDATE DIARIES", "UPDATE PHOTOS")):
            time.sleep(seconds)


def _policy_with_pause(writer, min_writes=3):
    """Chunks of 5; after each chunk wait until the site got a few writes in (interleaving)."""
    def on_chunk(user, kind, items):
        target = writer.writes + min_writes
        for _ in range(200):
            if writer.writes >= target or writer.error:
                break
            threading.Event().wait(0.002)
    return Pacer(size=5, on_chunk=on_chunk)


def assert_no_edit_lost(sns, writer, initial, final):
    """Each item hidden after the site's last edit has a snapshot of exactly that value; each
    item the site edited after it was hidden still has the site's value."""
    snaps = {(s["kind"], s["item_id"]): sns.original_of(s) for s in sns.snapshot_rows()}
    for key, value in final.items():
        last = writer.last.get(key, initial[key])
        snap = snaps.get((key[0], str(key[1])), "none")
        if value == sns.private:
            # hidden after the last edit: the snapshot must hold exactly that last value
            expected = "none" if last == sns.private else last
            assert snap == expected, (key, value, last, snap)
        else:
            # edited after it was hidden: the edit stands
            assert value == last, (key, value, last)
            assert key in writer.last


def while_the_site_holds(sns, dialect, key, changes, work):
    """Run ``work()`` in a thread while the site holds item ``key`` = (kind, id) with
    ``changes`` (column: value) written and not yet committed; commit them once the tool waits
    for that row, and return what ``work`` returned. The tool must then see the site's edit."""
    kind, item_id = key
    table = sns.tables[kind]
    id_col = sns.columns[kind][0]
    site = create_engine(sns.url, poolclass=NullPool,
                         connect_args={"timeout": 30} if dialect == "sqlite" else {})
    outcome = {}

    def run():
        try:
            outcome["result"] = work()
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            outcome["error"] = exc

    try:
        with site.connect() as conn:
            edit = conn.begin()
            conn.execute(update(table).where(table.c[id_col] == item_id).values(changes))
            tool = threading.Thread(target=run)
            tool.start()
            try:
                _wait_until_blocked(sns, dialect)
            finally:
                edit.commit()
                tool.join(timeout=60)
    finally:
        site.dispose()
    assert "error" not in outcome, outcome.get("error")
    return outcome["result"]


def _wait_until_blocked(sns, dialect, seconds=10.0):
    """Until some transaction waits for a row lock (PostgreSQL, MariaDB); SQLite, whose writer
    waits inside sqlite3 unseen, gets a fixed pause."""
    probe = {
        "postgresql": "SELECT count(*) FROM pg_locks WHERE NOT granted",
        "mysql": "SELECT count(*) FROM information_schema.innodb_trx "
                 "WHERE trx_state = 'LOCK WAIT'",
    }.get(dialect)
    if probe is None:
        time.sleep(0.5)
        return
    deadline = time.monotonic() + seconds
    with sns.engine.connect() as conn:
        while conn.execute(text(probe)).scalar_one() == 0:
            assert time.monotonic() < deadline, "the tool never waited for the site's row"
            time.sleep(0.15)  # InnoDB refreshes innodb_trx only when unread for 0.1 s
            conn.rollback()


def test_an_edit_the_site_commits_while_a_chunk_waits_is_what_gets_snapshotted(
        db_url, dialect, tmp_path):
    sns = build_sns(db_url, tmp_path, items_per_value=10)
    user = sns.users[0]
    initial = sns.items_of(user)
    key = sorted(k for k, v in initial.items() if k[0] == "diary" and v == sns.public)[7]
    engine, cmap = tool_session(sns)

    def apply_one_user():
        with engine.connect() as conn:
            return locking.apply_lock(conn, cmap, str(user), list(cmap.kinds.values()),
                                      Actor.current("op", "T", "r"), Pacer(size=15))

    result = while_the_site_holds(sns, dialect, key, {"visibility": sns.friends},
                                  apply_one_user)
    engine.dispose()
    assert result.chunks > 1 and result.kinds["diary"].changed == 30
    snaps = {(s["kind"], s["item_id"]): sns.original_of(s) for s in sns.snapshot_rows()}
    assert snaps[(key[0], str(key[1]))] == sns.friends
    assert {k: snaps[(k[0], str(k[1]))] for k, v in initial.items() if v != sns.private} == {
        k: sns.friends if k == key else v for k, v in initial.items() if v != sns.private}
    assert set(sns.items_of(user).values()) == {sns.private}


def test_site_edits_during_apply_are_never_lost(db_url, tmp_path):
    sns = build_sns(db_url, tmp_path, items_per_value=10)
    user = sns.users[0]
    initial = sns.items_of(user)
    engine, cmap = tool_session(sns)
    widen_race_window(engine)
    writer = SiteWriter(sns, sorted(initial, key=str), seed=1)
    writer.start()
    try:
        with engine.connect() as conn:
            result = locking.apply_lock(conn, cmap, str(user), list(cmap.kinds.values()),
                                        Actor.current("op", "T", "r"),
                                        _policy_with_pause(writer))
    finally:
        writer.finish()
        engine.dispose()
    assert result.chunks > 1
    assert_no_edit_lost(sns, writer, initial, sns.items_of(user))


def test_site_edits_during_revert_are_never_undone(db_url, tmp_path):
    sns = build_sns(db_url, tmp_path, items_per_value=10)
    user = sns.users[0]
    initial = sns.items_of(user)
    sns.apply(user)
    snapped = {(s["kind"], s["item_id"]): sns.original_of(s) for s in sns.snapshot_rows()}
    engine, cmap = tool_session(sns)
    widen_race_window(engine)
    writer = SiteWriter(sns, sorted(initial, key=str), seed=2)
    with engine.connect() as conn:
        [lock_id] = [lk["lock_id"] for lk in sns.lock_rows()]
        writer.start()
        try:
            result = locking.revert_lock(conn, cmap, lock_id, Actor.current("op", "T", "r"),
                                         _policy_with_pause(writer))
        finally:
            writer.finish()
    engine.dispose()
    assert result.status == "reverted"
    final = sns.items_of(user)
    states = {(s["kind"], s["item_id"]): s["state"] for s in sns.snapshot_rows()}
    for key, value in final.items():
        skey = (key[0], str(key[1]))
        if key in writer.last:
            assert value == writer.last[key], (key, value)  # the site's edit stands
            if skey in states:
                assert states[skey] in ("restored", "conflict")
        elif skey in snapped:
            assert value == snapped[skey] and states[skey] == "restored"
        else:
            assert value == initial[key] == sns.private
    assert any(s == "conflict" for s in states.values())


def test_two_operators_locking_the_same_user_at_once_make_one_lock(db_url, tmp_path):
    sns = build_sns(db_url, tmp_path, items_per_value=15)
    user = sns.users[0]
    visible = {(k, str(i)): v for (k, i), v in sns.items_of(user).items() if v != sns.private}
    cmd = [sys.executable, "-m", "privacy_lock", "--config", str(sns.config_path),
           "--database-url", sns.url, "apply", str(user), *IDENTITY, "--chunk-size", "3"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outcomes = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outcomes
    assert len(sns.lock_rows()) == 1
    snaps = sns.snapshot_rows()
    assert {(s["kind"], s["item_id"]): sns.original_of(s) for s in snaps} == visible
    assert len(snaps) == len(visible)
    assert all(v == sns.private for v in sns.items_of(user).values())
    assert "events valid" in sns.run("audit", "verify").stdout
