"""Chunks sized by time (``--chunk-time``, issue #15): a run starts with small chunks and sizes
each next one from the rate it measured, never above ``--chunk-size``; ``--chunk-time 0`` keeps
every chunk at ``--chunk-size``; and on SQLite a site writer waiting for the write lock gets it
between two chunks of the tool, not after the run.

How it could be misused: a negative or non-finite time (refused before anything runs, exit 2:
test_output_safety.py covers nan and inf); a huge ``--chunk-time`` to make chunks as big as
possible (``--chunk-size`` still bounds every transaction); a slow chunk that would shrink the
next ones to nothing (never below ``MIN_TIMED_ITEMS``, never below a quarter at once).
"""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import Engine, create_engine, event, insert, update
from sqlalchemy.pool import NullPool

from helpers import events, requests_for, run_engine
from privacy_lock.cli import make_pacer
from privacy_lock.dialects import named
from privacy_lock.errors import UsageError
from privacy_lock.pacing import (
    DEFAULT_CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    MIN_TIMED_ITEMS,
    START_CHUNK_ITEMS,
    Pacer,
)
from sns import IDENTITY, build_sns

HEAVY = 420  # visible diaries added to the first user: many chunks of any size tried here


@pytest.fixture
def sns(db_url, tmp_path):
    sns = build_sns(db_url, tmp_path)
    table = sns.tables["diary"]
    with sns.engine.begin() as conn:
        conn.execute(insert(table), [{"user_id": sns.users[0], "visibility": sns.public}] * HEAVY)
    return sns


def run_chunks(pacer: Pacer, fixed: float, per_item: float, chunks: int) -> list[int]:
    """The sizes of ``chunks`` full chunks that each take ``fixed + per_item * items``."""
    sizes = []
    for _ in range(chunks):
        sizes.append(pacer.size)
        pacer._adapt(fixed + per_item * pacer.size, pacer.size)
    return sizes


def test_the_first_chunk_is_small_and_the_next_grow_to_fill_the_time():
    pacer = Pacer(size=1000, chunk_time=0.1)
    assert pacer.size == START_CHUNK_ITEMS == 100
    # 20 ms per chunk and 0.1 ms per item: 800 items take 0.1 s
    assert run_chunks(pacer, 0.02, 0.0001, 6) == [100, 200, 400, 800, 800, 800]


def test_a_slow_rate_shrinks_the_chunks_but_not_to_a_commit_per_item():
    pacer = Pacer(size=1000, chunk_time=0.1)
    assert run_chunks(pacer, 0.01, 0.001, 4) == [100, 90, 90, 90]  # 1 ms per item
    slow = Pacer(size=1000, chunk_time=0.1)  # a second per item: over the time anyway
    assert run_chunks(slow, 0.0, 1.0, 4) == [100, MIN_TIMED_ITEMS, MIN_TIMED_ITEMS,
                                             MIN_TIMED_ITEMS]
    small = Pacer(size=10, chunk_time=0.1)  # --chunk-size below the floor: it rules
    assert run_chunks(small, 0.0, 1.0, 3) == [10, 10, 10]


def test_a_fixed_cost_over_the_time_does_not_shrink_chunks_to_nothing():
    """A loaded machine: each commit alone takes 0.3 s. Smaller chunks would not wait less,
    only commit more: the items get half the time."""
    pacer = Pacer(size=1000, chunk_time=0.1)
    assert abs(run_chunks(pacer, 0.3, 0.0001, 8)[-1] - 500) <= 1


def test_never_above_the_chunk_size():
    pacer = Pacer(size=300, chunk_time=0.1)
    assert run_chunks(pacer, 0.001, 0.00001, 5) == [100, 200, 300, 300, 300]


def test_the_default_chunk_size_lets_time_size_the_chunks():
    """Without --chunk-size, a time-sized run may grow its chunks to 10,000 items (a fast
    database fills 0.1 s with more than 1,000: a bound of 1,000 only added commits), and
    fixed chunks (--chunk-time 0) stay at 1,000."""
    timed = make_pacer(None, 0.1, 0.0, None, 2.0, 5)
    assert timed.max_size == MAX_CHUNK_SIZE == 10_000 and timed.size == START_CHUNK_ITEMS
    assert run_chunks(timed, 0.002, 0.00001, 9)[-3:] == [6400, 9800, 9800]
    assert make_pacer(None, 0, 0.0, None, 2.0, 5).size == DEFAULT_CHUNK_SIZE == 1000
    assert make_pacer(300, 0.1, 0.0, None, 2.0, 5).max_size == 300
    assert make_pacer(300, 0, 0.0, None, 2.0, 5).size == 300


def test_chunks_that_say_nothing_of_the_rate_do_not_grow_the_next():
    pacer = Pacer(size=1000, chunk_time=0.1)
    pacer._adapt(0.001, 10)  # a small user alone, or the last slice of a walk
    assert pacer.size == 100
    pacer._adapt(5.0, None)  # a chunk that closes a lock: no size to measure
    assert pacer.size == 100
    fixed = Pacer(size=7, chunk_time=0)
    fixed._adapt(0.001, 7)
    fixed._adapt(9.0, 7)
    assert fixed.size == 7


def test_the_python_api_refuses_a_negative_chunk_time():
    with pytest.raises(UsageError, match="--chunk-time"):
        Pacer(chunk_time=-0.1)


def hide_events(sns):
    return [d["hidden"] for a, _s, d in events(sns, "hide")]


def test_a_time_sized_run_starts_small_and_stays_under_the_chunk_size(sns):
    user = sns.users[0]
    before = sns.items_of(user)
    sns.apply(user, extra=("--chunk-size", "150", "--chunk-time", "30"))
    hidden = hide_events(sns)
    visible = sum(1 for v in before.values() if v != sns.private)
    assert sum(hidden) == visible
    assert hidden[0] == START_CHUNK_ITEMS  # the first chunk, before any rate is known
    assert max(hidden) == 150  # a fast run grows to the bound, and no further
    assert all(v == sns.private for v in sns.items_of(user).values())
    snaps = sns.snapshot_rows()
    assert len(snaps) == visible
    assert {(s["kind"], s["item_id"]) for s in snaps} == {
        (k, str(i)) for (k, i), v in before.items() if v != sns.private}


def test_chunk_time_zero_keeps_every_chunk_at_the_chunk_size(sns):
    user = sns.users[0]
    sns.apply(user, extra=("--chunk-size", "40", "--chunk-time", "0"))
    hidden = hide_events(sns)
    assert set(hidden[:-2]) == {40}  # the last slice of each kind may be partial
    assert all(v == sns.private for v in sns.items_of(user).values())


def test_a_negative_chunk_time_is_a_usage_error_and_changes_nothing(sns):
    before = sns.everything()
    out = sns.run("apply", str(sns.users[0]), *IDENTITY, "--chunk-time", "-1", expect=2)
    assert "Invalid value for '--chunk-time'" in out.output
    assert "Traceback" not in out.output
    assert sns.everything() == before
    assert sns.lock_rows() == [] and sns.snapshot_rows() == []


def test_sqlite_leaves_the_lock_free_after_each_chunk_for_a_waiting_writer():
    sqlite = named("sqlite")
    # A writer that began waiting when the chunk began sleeps at most 25 ms at 0.1 s.
    assert 0.025 < sqlite.yield_after(0.1) < 0.05
    assert sqlite.yield_after(0.5) > 0.1  # then its busy handler sleeps 100 ms at a time
    assert named("postgresql").yield_after(0.1) == named("mysql").yield_after(0.1) == 0


def test_a_site_write_waiting_behind_a_chunk_goes_in_before_the_run_ends(sns):
    """A site writer starts after the tool's third chunk and has to wait for the next one (on
    SQLite for the database write lock). It must get in between two chunks of the tool: its
    write commits while the tool still has most of its chunks to run, not after the run. Each
    chunk is made to last a little longer (a pause before its content UPDATE), so that a
    waiting writer's busy handler sleeps longer than the instant between a commit and the next
    BEGIN: without a free gap after each chunk it got in after the run, or by luck."""
    user, other = sns.users[0], sns.users[1]
    [(kind, item)] = list(sns.items_of(other, "photo"))[:1]
    table = sns.tables[kind]
    id_col, _owner, vis_col = sns.columns[kind]
    connect_args = {"timeout": 60} if sns.url.startswith("sqlite") else {}
    site = create_engine(sns.url, poolclass=NullPool, connect_args=connect_args)
    committed_after: list[int] = []
    errors: list[BaseException] = []

    def write() -> None:
        try:
            with site.begin() as conn:
                conn.execute(update(table).where(table.c[id_col] == item)
                             .values({vis_col: sns.friends}))
            committed_after.append(pacer.chunks)
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    writer = threading.Thread(target=write, daemon=True)

    def on_chunk(_user, _kind, _items):
        if pacer.chunks == 3 and not writer.is_alive() and not committed_after:
            writer.start()  # the tool begins its next chunk at once: the writer waits on it

    def slower_chunks(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("UPDATE DIARIES"):
            time.sleep(0.02)

    pacer = Pacer(size=10, chunk_time=0, lock_timeout=30, on_chunk=on_chunk)
    event.listen(Engine, "before_cursor_execute", slower_chunks)
    try:
        [outcome] = run_engine(sns, "apply", requests_for(user), pacer).outcomes
        writer.join(timeout=60)
    finally:
        event.remove(Engine, "before_cursor_execute", slower_chunks)
        site.dispose()
    assert not errors, errors
    assert outcome.status == "locked"
    assert pacer.chunks > 30
    assert committed_after and committed_after[0] < 10 < pacer.chunks, (
        f"the site write went in after chunk {committed_after} of {pacer.chunks}")
    assert sns.vis(kind, item) == sns.friends
    assert all(v == sns.private for v in sns.items_of(user).values())
