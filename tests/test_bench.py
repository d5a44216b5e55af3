"""The benchmark runs end to end at a tiny size on every dialect, and every contender leaves
exactly the floor's end state (the visibility of every row, every snapshot, every lock).

Only correctness is asserted here, never speed: docs/BENCHMARKS.md has the timed runs.
"""

from __future__ import annotations

import pytest

from bench.contenders import Workload
from bench.data import Dataset, Sizes, build, end_state
from bench.run import OPERATIONS, run_workload

TINY = Sizes(total_rows=600, heavy_items=150, batch_users=12, items_per_user=5, chunk_size=40,
             naive_sample=10_000)


@pytest.fixture
def dataset(db_url, tmp_path) -> Dataset:
    ds = build(db_url, tmp_path, TINY)
    yield ds
    ds.engine.dispose()


@pytest.mark.parametrize("workload", [Workload.heavy(), Workload.batch(TINY.batch_users)],
                         ids=lambda w: w.name)
def test_every_contender_ends_in_the_floors_state(dataset, workload):
    for operation in OPERATIONS:
        row = run_workload(dataset, workload, operation, with_naive=True, log=lambda _line: None)
        assert row.differences == {"api": None, "cli": None, "naive": None}, operation
        floor, api = row.results["floor"], row.results["api"]
        assert floor.items > 0
        assert api.items == row.results["cli"].items == floor.items
        # the naive tool ran in full (no sample) at this size, so its count is comparable too
        assert row.results["naive"].items == floor.items and not row.results["naive"].sampled
        assert 0 < api.max_chunk_items <= TINY.chunk_size
        assert api.transactions > 1 and api.longest_txn_ms > 0


def test_end_state_sees_a_single_changed_row(dataset):
    """The comparison is not vacuous: one row changed by hand is a difference."""
    from sqlalchemy import update

    from bench.data import KINDS, content_tables

    before = end_state(dataset)
    spec = KINDS[0]
    table = content_tables[spec.name]
    with dataset.engine.begin() as conn:
        conn.execute(update(table).where(table.c.id == 7).values({spec.visibility: "odd"}))
    difference = end_state(dataset).difference(before)
    assert difference is not None and "diary visibility differs on 1 rows" in difference


def test_repeated_runs_each_end_in_the_floors_state_and_the_fastest_counts(dataset):
    row = run_workload(dataset, Workload.heavy(), "apply", with_naive=False,
                       log=lambda _line: None, repeat=2)
    assert row.differences == {"floor": None, "api": None, "cli": None}
    for name, measured in row.results.items():
        runs = measured.extra["runs_seconds"]
        assert len(runs) == 2, name
        assert round(measured.seconds, 3) == min(runs), name
    turns = row.turn_ratios()
    assert len(turns) == 2 and all(t > 0 for t in turns)
