"""Hostile edits against the seal check's group-by-group walk of a large lock (issue #15:
``_Groups`` digests a group as soon as it holds its sealed count; ``_walk_lock`` reads each
state in short pieces and merges them in the order the rows were written).

How it could go wrong: a row given another group's time (both groups keep a plausible count
between them), two rows that swap groups (every count kept), a row's state changed by hand
between two pieces of the walk (met twice, or never), a row's state changed by hand before
the check (the walk reads it in another state's pass): each must be a problem, not a pass.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, event, select, update

from helpers import (
    heavy_sns_read_in_small_pieces,
    requests_for,
    run_engine,
    seal_check_counting_held_rows,
)
from privacy_lock import seal
from privacy_lock.pacing import Pacer
from privacy_lock.schema import snapshots

HEAVY = 240
PIECE = 40
CHUNK = 30


@pytest.fixture
def sns(db_url, tmp_path, monkeypatch):
    sns = heavy_sns_read_in_small_pieces(db_url, tmp_path, monkeypatch, HEAVY, PIECE)
    sns.apply(sns.users[0], extra=("--chunk-size", str(CHUNK), "--chunk-time", "0"))
    return sns


def _groups(sns):
    """The heavy lock's snapshot rows by group time, in the order written."""
    with sns.engine.connect() as conn:
        rows = conn.execute(select(snapshots).order_by(snapshots.c.snapshot_id)).mappings().all()
    by_at: dict = {}
    for row in rows:
        by_at.setdefault(row["snapshotted_at"], []).append(row)
    lock_id = rows[0]["lock_id"]
    return lock_id, [group for group in by_at.values() if group[0]["lock_id"] == lock_id]


def _check(sns, lock_id):
    with sns.engine.connect() as conn:
        return seal.check_seals(conn, [lock_id])


def _set(sns, snapshot_id, **values):
    with sns.engine.begin() as conn:
        conn.execute(update(snapshots).where(snapshots.c.snapshot_id == snapshot_id)
                     .values(**values))


def test_the_lock_passes_untouched(sns):
    lock_id, groups = _groups(sns)
    assert len(groups) > HEAVY // CHUNK and sum(map(len, groups)) > PIECE
    check = _check(sns, lock_id)
    assert check.ok, check.problems


def test_a_row_given_another_groups_time_is_found_in_both(sns):
    lock_id, groups = _groups(sns)
    first, last = groups[0], groups[-1]
    _set(sns, first[0]["snapshot_id"], snapshotted_at=last[0]["snapshotted_at"])
    check = _check(sns, lock_id)
    assert len(check.problems) == 2, check.problems
    assert f"{len(first)} rows then, {len(first) - 1} now" in " ".join(check.problems)
    assert f"{len(last)} rows then, {len(last) + 1} now" in " ".join(check.problems)


def test_two_rows_that_swap_groups_keep_every_count_and_are_found(sns):
    lock_id, groups = _groups(sns)
    a, b = groups[0][0], groups[-1][-1]
    _set(sns, a["snapshot_id"], snapshotted_at=b["snapshotted_at"])
    _set(sns, b["snapshot_id"], snapshotted_at=a["snapshotted_at"])
    check = _check(sns, lock_id)
    assert len(check.problems) == 2, check.problems
    assert all("no longer match" in p for p in check.problems)


def test_a_state_changed_by_hand_is_found(sns):
    """A pending row marked restored (its item stays hidden): the walk reads it in the
    restored pass, first, and its group completes all the same; the state counts do not."""
    lock_id, groups = _groups(sns)
    _set(sns, groups[2][5]["snapshot_id"], state="restored")
    check = _check(sns, lock_id)
    assert not check.ok
    assert check.problems, check.problems


@pytest.mark.parametrize("moved", ["met-twice", "never-met"])
def test_a_state_changed_by_hand_between_two_pieces_is_no_pass(sns, moved):
    """A reverted lock with three conflicts: the walk reads the conflict rows in one piece,
    the restored ones in several. No event names the lock meanwhile, so the pieces are
    trusted. Between two pieces of the restored rows someone moves by hand a conflict row
    (already read) to restored, ahead of the walk (met twice), or the last restored row (not
    yet read) to conflict, whose rows were all read (never met). Either is a problem, not a
    pass."""
    user = sns.users[0]
    table, (id_col, _owner, vis_col) = sns.tables["diary"], sns.columns["diary"]
    edited = sorted(item for _kind, item in sns.items_of(user, "diary"))[::60][:3]
    with sns.engine.begin() as conn:
        conn.execute(update(table).where(table.c[id_col].in_(edited))
                     .values({vis_col: sns.friends}))
    [outcome] = run_engine(sns, "revert", requests_for(user), Pacer()).outcomes
    assert outcome.kinds["diary"].conflicts == len(edited)
    with sns.engine.connect() as conn:
        rows = conn.execute(select(snapshots.c.snapshot_id, snapshots.c.state)
                            .where(snapshots.c.lock_id == outcome.lock_id)
                            .order_by(snapshots.c.snapshot_id)).all()
    if moved == "met-twice":
        target, state = max(i for i, s in rows if s == "conflict"), "restored"
    else:
        target, state = max(i for i, s in rows if s == "restored"), "conflict"
    assert rows[-1][0] > target - 1 and len(rows) > 2 * PIECE
    reads: list[str] = []
    done: list[bool] = []

    def between(_conn, _cursor, statement, *_args):
        if "privacy_lock_snapshots.snapshotted_at" not in statement or done:
            return
        reads.append(statement)
        if len(reads) == 3:  # each state's first piece, then restored's second
            done.append(True)
            _set(sns, target, state=state)

    event.listen(Engine, "before_cursor_execute", between)
    try:
        check = _check(sns, outcome.lock_id)
    finally:
        event.remove(Engine, "before_cursor_execute", between)
    assert done and not check.ok, check.problems
    assert any("no longer match" in problem for problem in check.problems), check.problems


@pytest.mark.parametrize("by", ["revert", "apply"])
def test_another_operators_run_between_two_pieces_is_no_false_alarm(sns, by):
    """Another operator reverts the lock (every row's state changes), or applies again after a
    site edit (the lock grows), between two pieces of a check's walk: the check reads the lock
    again and passes."""
    user = sns.users[0]
    lock_id, _groups_now = _groups(sns)
    if by == "apply":
        sns.add_item("diary", user, sns.public)
    reads: list[str] = []
    ran = []

    def between(_conn, _cursor, statement, *_args):
        if "privacy_lock_snapshots.snapshotted_at" not in statement or ran:
            return
        reads.append(statement)
        if len(reads) == 2:
            ran.append(True)
            [outcome] = run_engine(sns, by, requests_for(user),
                                   Pacer(CHUNK) if by == "revert" else Pacer()).outcomes
            assert outcome.status in ("reverted", "extended"), outcome

    event.listen(Engine, "before_cursor_execute", between)
    try:
        check = _check(sns, lock_id)
    finally:
        event.remove(Engine, "before_cursor_execute", between)
    assert ran and check.ok, check.problems


def test_conflicts_spread_over_every_group_do_not_make_the_check_hold_the_lock(sns,
                                                                              monkeypatch):
    """The site made every other item visible again before the revert: each group is split
    between ``conflict`` and ``restored`` rows. The check must still hold about one group's
    rows at a time, not every row of the state it reads first (half the lock)."""
    user = sns.users[0]
    table, (id_col, _owner, vis_col) = sns.tables["diary"], sns.columns["diary"]
    edited = sorted(item for _kind, item in sns.items_of(user, "diary"))[::2]
    with sns.engine.begin() as conn:
        conn.execute(update(table).where(table.c[id_col].in_(edited))
                     .values({vis_col: sns.friends}))
    [outcome] = run_engine(sns, "revert", requests_for(user), Pacer()).outcomes
    assert outcome.kinds["diary"].conflicts > 4 * CHUNK
    check, held = seal_check_counting_held_rows(sns, monkeypatch, outcome.lock_id)
    assert check.ok, check.problems
    assert len(held) > HEAVY and max(held) <= 2 * CHUNK, max(held)
