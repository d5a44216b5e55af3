"""No long read transactions (issue #15): the revert's seal check and the apply's plan read in
short pieces, each its own read transaction, so that on SQLite (where a reader keeps a writer
from committing) a site write waits for one piece, not for the whole check.

How it could go wrong: a writer that still waits for the whole check (pieces that never end
their transaction); a check that reads the rows of a lock while an apply extends it between
two pieces and then refuses the revert as tampered (a false alarm), or that lets the mix of
before and after hide real tampering (a false pass); a plan whose pieced counts differ from
one count.
"""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from sqlalchemy import Engine, delete, event, insert, select, update

from helpers import (
    heavy_sns_read_in_small_pieces,
    requests_for,
    run_engine,
    seal_check_counting_held_rows,
)
from privacy_lock import engine as tool_engine
from privacy_lock import seal
from privacy_lock.dialects import named
from privacy_lock.errors import TamperedError
from privacy_lock.pacing import Pacer
from privacy_lock.schema import snapshots
from sns import tool_session

HEAVY = 240  # visible diaries added to the first user: many pieces of the sizes set here
PIECE = 40
SNAPSHOT_ROWS = "privacy_lock_snapshots.snapshotted_at"  # in the seal check's row reads only


@pytest.fixture
def sns(db_url, tmp_path, monkeypatch):
    return heavy_sns_read_in_small_pieces(db_url, tmp_path, monkeypatch, HEAVY, PIECE)


def revert(sns, user):
    [outcome] = run_engine(sns, "revert", requests_for(user), Pacer()).outcomes
    return outcome


def test_a_site_write_gets_in_during_the_revert_preflight(sns, dialect):
    """The site writer starts while the seal check reads its first piece of the lock's
    snapshots, and waits to commit (SQLite: its EXCLUSIVE lock waits for our SHARED one). It
    must commit before the check reads its next piece, not after the check."""
    if dialect != "sqlite":
        pytest.skip("on PostgreSQL and MariaDB a reader never keeps a writer from committing")
    user = sns.users[0]
    sns.apply(user)
    [(kind, item)] = list(sns.items_of(user, "diary"))[:1]
    id_col, _owner, vis_col = sns.columns[kind]
    path = sns.url.split("///", 1)[1]
    pieces: list[str] = []
    committed_at: list[int] = []
    errors: list[BaseException] = []

    def write() -> None:
        try:
            site = sqlite3.connect(path, timeout=60, isolation_level=None)
            site.execute("BEGIN IMMEDIATE")
            site.execute(f"UPDATE diaries SET {vis_col} = ? WHERE {id_col} = ?",
                         (sns.friends, item))
            site.execute("COMMIT")  # waits for the tool's read to end
            committed_at.append(len(pieces))
            site.close()
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    def writer_waits_to_commit() -> bool:
        """A PENDING lock (a writer waiting to commit) refuses a new reader at once."""
        probe = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN")
            probe.execute("SELECT count(*) FROM sqlite_master").fetchall()
            probe.execute("COMMIT")
            return False
        except sqlite3.OperationalError:
            return True
        finally:
            probe.close()

    writer = threading.Thread(target=write, daemon=True)

    def during_the_first_piece(_conn, _cursor, statement, *_args):
        if SNAPSHOT_ROWS not in statement:
            return
        pieces.append(statement)
        if len(pieces) == 1:  # the tool holds its read lock: the writer has to wait
            writer.start()
            deadline = time.monotonic() + 30
            while not writer_waits_to_commit() and not errors:
                assert time.monotonic() < deadline, "the site writer never began to commit"
                time.sleep(0.01)

    check_ended_at: list[int] = []
    check_sealed = seal.check_sealed

    def timed_check(*args, **kwargs):
        check_sealed(*args, **kwargs)
        check_ended_at.append(len(pieces))

    event.listen(Engine, "after_cursor_execute", during_the_first_piece)
    try:
        tool_engine.seal.check_sealed = timed_check  # type: ignore[attr-defined]
        outcome = revert(sns, user)
    finally:
        tool_engine.seal.check_sealed = check_sealed  # type: ignore[attr-defined]
        event.remove(Engine, "after_cursor_execute", during_the_first_piece)
    writer.join(timeout=60)
    assert not errors, errors
    assert check_ended_at[0] >= HEAVY // PIECE  # the lock's snapshots, in pieces
    assert committed_at == [1], (
        f"the site write committed after piece {committed_at} of {check_ended_at[0]}")
    # The site's edit stands: the revert found it changed and left it (a conflict).
    assert outcome.status == "reverted"
    assert outcome.kinds["diary"].conflicts == 1
    assert sns.vis(kind, item) == sns.friends


def extend_between_pieces(sns, user, tamper: bool = False):
    """A hook: before the seal check's second piece of snapshot rows (no read lock held
    yet in that transaction), another operator applies to ``user`` again, which extends
    the lock with a new visible item; with ``tamper``, someone also edits a stored original
    by hand. Returns the list of snapshot-row reads and the new item."""
    new_item = sns.add_item("diary", user, sns.public)
    reads: list[str] = []
    busy = []

    def another_operator(_conn, _cursor, statement, *_args):
        if SNAPSHOT_ROWS not in statement or busy:
            return
        reads.append(statement)
        if len(reads) == 2:
            busy.append(True)
            [applied] = run_engine(sns, "apply", requests_for(user), Pacer()).outcomes
            assert applied.status == "extended", applied
            if tamper:
                with sns.engine.begin() as conn:
                    conn.execute(update(snapshots).where(snapshots.c.item_id == str(new_item))
                                 .values(original_text="self", original_int=9))
            busy.pop()

    return reads, new_item, another_operator


def test_an_apply_between_two_pieces_is_no_false_alarm(sns):
    user = sns.users[0]
    before = sns.items_of(user)
    sns.apply(user)
    reads, new_item, hook = extend_between_pieces(sns, user)
    event.listen(Engine, "before_cursor_execute", hook)
    try:
        outcome = revert(sns, user)
    finally:
        event.remove(Engine, "before_cursor_execute", hook)
    assert outcome.status == "reverted", outcome.error
    one_read = -(-(HEAVY + 20) // PIECE)
    assert len(reads) > one_read  # read again: the lock had moved under the first read
    before[("diary", new_item)] = sns.public
    assert sns.items_of(user) == before  # the new item too


def test_tampering_while_an_apply_runs_between_pieces_is_still_refused(sns):
    user = sns.users[0]
    sns.apply(user)
    reads, new_item, hook = extend_between_pieces(sns, user, tamper=True)
    event.listen(Engine, "before_cursor_execute", hook)
    try:
        with pytest.raises(TamperedError, match=r"refusing to revert.*no longer match"):
            revert(sns, user)
    finally:
        event.remove(Engine, "before_cursor_execute", hook)
    assert len(reads) > 2  # read again, and found it all the same
    assert sns.vis("diary", new_item) == sns.private  # nothing was changed
    assert all(s["state"] == "locked" for s in sns.snapshot_rows())


def test_locks_that_keep_moving_are_checked_in_one_read_at_last(sns, monkeypatch):
    """Another operator extends the lock between two pieces of every attempt: after
    ``READS`` attempts the part is read in one read transaction, which passes."""
    user = sns.users[0]
    before = sns.items_of(user)
    sns.apply(user)
    monkeypatch.setattr(seal, "READS", 2)
    attempts: list[int] = []  # snapshot-row reads in each attempt so far
    added = []
    busy = []

    def sizes_read(_conn, _cursor, statement, *_args):
        if (not busy and "privacy_lock_snapshots.state" not in statement
                and statement.rstrip().endswith("GROUP BY privacy_lock_snapshots.lock_id")):
            attempts.append(0)  # each attempt opens with the locks' sizes

    def second_piece(_conn, _cursor, statement, *_args):
        if busy or SNAPSHOT_ROWS not in statement or not attempts:
            return
        attempts[-1] += 1
        if attempts[-1] == 2 and len(attempts) <= seal.READS:  # not in the last, whole read
            busy.append(True)
            added.append(sns.add_item("photo", user, sns.public))
            run_engine(sns, "apply", requests_for(user), Pacer())
            busy.pop()

    event.listen(Engine, "after_cursor_execute", sizes_read)
    event.listen(Engine, "before_cursor_execute", second_piece)
    try:
        outcome = revert(sns, user)
    finally:
        event.remove(Engine, "after_cursor_execute", sizes_read)
        event.remove(Engine, "before_cursor_execute", second_piece)
    assert outcome.status == "reverted", outcome.error
    assert len(attempts) == 3 and len(added) == 2  # two in pieces, then one whole read
    before.update({("photo", item): sns.public for item in added})
    assert sns.items_of(user) == before


def test_the_plan_counted_in_pieces_matches_one_count(sns):
    """A heavy user (counted along its keys) and two small ones (counted together)."""
    heavy, *small = sns.users
    engine, cmap = tool_session(sns)
    dialect = named(engine.dialect.name)
    try:
        with engine.connect() as conn:
            kind = cmap.kinds["diary"]
            counted, alone = tool_engine.counted_owners(
                conn, dialect, kind, [cmap.owner_value(kind, str(u)) for u in sns.users])
    finally:
        engine.dispose()
    assert not alone
    for user in sns.users:
        items = sns.items_of(user, "diary")
        got = counted[cmap.owner_value(kind, str(user))]
        assert got.changed == sum(1 for v in items.values() if v != sns.private)
        assert got.already_private == sum(1 for v in items.values() if v == sns.private)
    assert sum(1 for v in sns.items_of(heavy, "diary").values()) > PIECE > len(small)


def test_the_seal_check_keeps_the_groups_not_yet_complete_not_the_lock(sns, monkeypatch):
    """A lock of many groups (one per chunk) is checked group by group: the rows held at any
    time are those of groups still missing rows, not the whole lock (a lock of 1,000,000 items
    held about 150 MB of rows before). The site made three items visible again, so the revert
    leaves each of their groups split between ``conflict`` and ``restored`` rows: the check
    merges the states in the order the rows were written, so each group completes in turn."""
    user, chunk = sns.users[0], 30
    sns.apply(user, extra=("--chunk-size", str(chunk), "--chunk-time", "0"))
    edited = sorted(sns.items_of(user, "diary"))[::100][:3]
    table, (id_col, _owner, vis_col) = sns.tables["diary"], sns.columns["diary"]
    with sns.engine.begin() as conn:
        for _kind, item in edited:
            conn.execute(update(table).where(table.c[id_col] == item)
                         .values({vis_col: sns.friends}))
    outcome = revert(sns, user)
    assert outcome.kinds["diary"].conflicts == len(edited)
    check, held = seal_check_counting_held_rows(sns, monkeypatch, outcome.lock_id)
    assert check.ok, check.problems
    assert check.checked > HEAVY // chunk and len(held) > HEAVY
    assert max(held) <= chunk + len(edited)


@pytest.mark.parametrize("tamper", ["added to a complete group", "edited", "deleted"])
def test_tampering_is_found_when_a_large_lock_is_checked_group_by_group(sns, tamper):
    """A lock larger than one read is walked in the order its rows were written, each group
    digested as soon as it holds its sealed count. A row added by hand to a group that is
    already complete (it comes last in the walk), an edited original and a deleted row are
    each found, in the group they belong to."""
    user = sns.users[0]
    sns.apply(user, extra=("--chunk-size", "30", "--chunk-time", "0"))
    with sns.engine.begin() as conn:
        first = conn.execute(
            select(snapshots).order_by(snapshots.c.snapshot_id).limit(1)).mappings().one()
        row = snapshots.c.snapshot_id == first["snapshot_id"]
        if tamper == "added to a complete group":
            conn.execute(insert(snapshots).values(
                lock_id=first["lock_id"], kind=first["kind"], item_id="999999",
                original_text=sns.public, state=first["state"],
                snapshotted_at=first["snapshotted_at"]))
        elif tamper == "edited":
            other = sns.friends if first["original_text"] != sns.friends else sns.public
            conn.execute(update(snapshots).where(row).values(original_text=other))
        else:
            conn.execute(delete(snapshots).where(row))
    with sns.engine.connect() as conn:
        check = seal.check_seals(conn, [first["lock_id"]])
    assert len(check.problems) == 1, check.problems
    assert f"written at {first['snapshotted_at']} no longer match" in check.problems[0]
    assert ("31 now" if tamper.startswith("added") else
            "29 now" if tamper == "deleted" else "30 now") in check.problems[0]
